"""Which backend and accelerator the trials run on, said in one line.

A search that silently falls back to the CPU wastes a week; the first thing ``hpo run``
prints after the data is this line. It is the only module that asks a backend library
directly, and only to list devices.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
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
    """Import Keras and its backend and return e.g. ``"tensorflow 2.21.0 on CPU"``.

    The backend's own start-up log goes to ``$TMPDIR/hpo-backend.log`` instead of the
    terminal; the line returned says what matters in it (backend, version, devices).
    """
    log = os.path.join(tempfile.gettempdir(), "hpo-backend.log")
    with _native_stderr_to(log):
        import keras

        backend = keras.backend.backend()
        version, gpus = _devices(backend)
    where = f"on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(gpus)})" if gpus else "on CPU"
    return f"keras {keras.__version__}, backend {backend} {version} {where}"


def _devices(backend: str) -> tuple[str, list[str]]:
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__, [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return jax.__version__, [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return torch.__version__, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return "", []
