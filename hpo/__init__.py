"""hpo: hyperparameter optimization for convolutional image classifiers.

The CLI (``hpo ...``) is a thin layer over this library, so a notebook can do the same::

    import hpo
    study = hpo.run_study("demo", n_trials=5)
    result = hpo.export_best("demo")
    predictions = hpo.predict_files(hpo.load_bundle(result.bundle), ["photo.jpg"], top=3)

Heavy modules (Keras, Optuna) are imported only when a function that needs them is used,
and importing hpo changes nothing in the caller's process (environment, log levels,
Pillow's limits): the settings a terminal run wants are made by the CLI's ``main``.
"""

from __future__ import annotations

import importlib
from typing import Any

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
