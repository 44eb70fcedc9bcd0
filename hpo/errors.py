"""What can go wrong, as a small tree (like keras-tuner's ``errors.py`` and optuna's
``exceptions.py``): the difference that matters is whether the run can go on.

- :class:`HpoError`: bad input, or the run cannot go on. The CLI prints ``error: <message>``
  (one line, never a traceback unless ``--debug``) and exits 2.
- :class:`TrialFailed`: this configuration failed to train. The search records the trial as
  FAILED with the reason and goes on with the next; anything else raised while training is
  a bug or a broken machine, recorded and then re-raised.
- :class:`OutOfMemory`: the ``TrialFailed`` of a configuration too big for the device (or
  host) memory. Backends say it differently; :func:`out_of_memory_fails_trial` is the one
  place that recognises them, around the code that trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class HpoError(Exception):
    """Bad input or an impossible request; the CLI prints ``error: <message>`` and exits 2."""


class TrialFailed(Exception):
    """This trial cannot finish; record it as FAILED with ``reason`` and go on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutOfMemory(TrialFailed, MemoryError):
    """The configuration did not fit in the device's (or the host's) memory."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none: what a
    one-line error, a failed trial's reason or a warning shows of an exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU OOM looks different on each backend (TensorFlow's ResourceExhaustedError, JAX's
    XlaRuntimeError RESOURCE_EXHAUSTED, PyTorch's OutOfMemoryError, CUDA's "out of memory");
    match the words all of them use, and the host's MemoryError."""
    if isinstance(exc, MemoryError):
        return True
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


@contextmanager
def out_of_memory_fails_trial() -> Iterator[None]:
    """Turn a backend's out-of-memory error raised inside into :class:`OutOfMemory`, which
    fails only the trial; every other error passes through unchanged."""
    try:
        yield
    except TrialFailed:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(
                f"out of memory ({type(exc).__name__}: {first_line(exc)[:300]})"
            ) from exc
        raise
