"""The one exception type users see: a message that fits on one line, never a traceback."""


class HpoError(Exception):
    """Bad input or an impossible request; the CLI prints ``error: <message>`` and exits 2."""


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU OOM looks different on each backend; match the words all of them use."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in (
            "resource_exhausted",
            "resourceexhausted",
            "out of memory",
            "outofmemory",
            " oom ",
        )
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none: what a
    one-line error, a failed trial's reason or a warning shows of an exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
