"""The one exception type users see: a message that fits on one line, never a traceback."""


class HpoError(Exception):
    """Bad input or an impossible request; the CLI prints ``error: <message>`` and exits 2."""
