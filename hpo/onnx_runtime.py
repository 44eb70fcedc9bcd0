"""ONNX: the bundle's portable format, and ONNX Runtime, the runtime a deployment of it uses.

The file is written by Keras' own ``Model.export(format="onnx")``, which on the TensorFlow
(and JAX) backend converts the traced forward pass with ``tf2onnx``. Both ``tf2onnx`` and
``onnxruntime`` are hpo's optional ``onnx`` extra (about 60 MB); every entry point here says
in one line how to install them when they are missing. ``onnxruntime`` is imported lazily.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.errors import HpoError

if TYPE_CHECKING:
    import keras

INSTALL_HINT = "pip install 'hpo[onnx]' (onnxruntime and tf2onnx)"
RUNTIME = "onnxruntime"


def available() -> bool:
    """Whether ONNX files can be written and run here."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tf2onnx"))


def require(why: str) -> None:
    """A one-line error naming what needs ONNX and how to install it, unless it is installed."""
    if not available():
        raise HpoError(f"{why} needs hpo's onnx extra: {INSTALL_HINT}")


def export(model: keras.Model, path: Path) -> None:
    """Write ``model``'s inference graph (batch size left free) to ``path``."""
    require("writing model.onnx")
    if not model._called:  # Keras exports only a model that has run once
        size = model.input_shape[1:]
        model(np.zeros((1, *size), "float32"))
    with warnings.catch_warnings():  # tf2onnx's NumPy 2 and protobuf deprecation notices
        warnings.simplefilter("ignore")
        model.export(str(path), format="onnx", verbose=False)


class OnnxModel:
    """An ONNX file in an ONNX Runtime session, answering like the Keras calls hpo makes
    (``predict_on_batch``, ``output_shape``), so :func:`hpo.training.predict_proba` runs
    either."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require(f"running {path.name}")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        output = self.session.get_outputs()[0]
        self.output_shape: tuple[Any, ...] = (None, *output.shape[1:])

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.session.run(None, {self.input_name: np.asarray(images, "float32")})[0]
        )
