"""Which backend and accelerator the trials run on, said in one line.

A search that silently falls back to the CPU wastes a week; the first thing ``hpo run``
prints after the data is this line. It asks Keras, never a backend library, so it reads
the same on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from importlib import metadata
from typing import Iterator


@contextlib.contextmanager
def _native_stderr_to(path: str) -> Iterator[None]:
    """Send what C++ libraries write to fd 2 (TensorFlow's start-up chatter) to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def load_backend() -> str:
    """Import Keras and its backend and return e.g.
    ``"keras 3.15.1, backend tensorflow 2.21.0 on CPU"``.

    The backend's own start-up log goes to ``$TMPDIR/hpo-backend.log`` instead of the
    terminal; the line returned says what matters in it (backend, version, devices).
    """
    log = os.path.join(tempfile.gettempdir(), "hpo-backend.log")
    with _native_stderr_to(log):
        import keras

        gpus = _accelerators()
    where = f"on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(gpus)})" if gpus else "on CPU"
    return f"keras {keras.__version__}, backend {keras.backend.backend()} {backend_version()} {where}"


def _accelerators() -> list[str]:
    """Non-CPU devices, asked through Keras. Asking for "gpu" alone raises on a CPU-only
    JAX, and the torch backend has no distribution API: there the device of a fresh tensor
    ("cpu" or "cuda:0") tells where Keras puts its work."""
    import keras

    try:
        devices = keras.distribution.list_devices()
    except (AttributeError, NotImplementedError):
        devices = [str(getattr(keras.ops.zeros(1), "device", "cpu"))]
    return [d for d in devices if not d.lower().startswith("cpu")]


def backend_version() -> str:
    """The installed version of the backend package Keras runs on (no import of it)."""
    import keras

    try:
        return metadata.version(keras.backend.backend())
    except metadata.PackageNotFoundError:
        return "unknown"
