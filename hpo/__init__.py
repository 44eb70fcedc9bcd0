"""hpo: hyperparameter optimization for convolutional image classifiers.

The CLI (``hpo ...``) is a thin layer over this library, so a notebook can do the same::

    import hpo
    study = hpo.run_study("demo", n_trials=5)
    result = hpo.export_best("demo")
    predictions = hpo.predict_files(hpo.load_bundle(result.bundle), ["photo.jpg"], top=3)

Heavy modules (Keras, Optuna) are imported only when a function that needs them is used.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Backend-neutral GPU memory settings: set before any backend is imported, so that
# TensorFlow grows GPU memory on demand and JAX does not grab 75% of it up front.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "HpoError": "hpo.errors",
    "load_dataset": "hpo.data",
    "load_space": "hpo.space",
    "build_model": "hpo.model",
    "train": "hpo.training",
    "run_study": "hpo.study",
    "export_best": "hpo.export",
    "load_bundle": "hpo.bundle",
    "predict_files": "hpo.predict",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
