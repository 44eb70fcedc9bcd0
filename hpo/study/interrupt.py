"""Ctrl-C and SIGTERM as a flag that training checks at batch boundaries."""

from __future__ import annotations

import signal
import threading
from typing import Any

INTERRUPTED = "interrupted by the user (Ctrl-C)"


class GracefulInterrupt:
    """First Ctrl-C (or SIGTERM, as `docker stop` sends): stop at the next batch, record the
    trial as FAILED, leave cleanly. A second one interrupts at once. Only the main thread
    can own signals; elsewhere (e.g. a notebook's worker thread) this is a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt
