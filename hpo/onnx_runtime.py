"""ONNX: the bundle's portable format, and ONNX Runtime, the runtime a deployment of it uses.

The file is written by Keras' own ``Model.export(format="onnx")``, which converts the
traced forward pass with the backend's converter (:data:`CONVERTERS`: ``tf2onnx`` on
TensorFlow, ``jax2onnx`` on JAX). ``tf2onnx`` and ``onnxruntime`` are hpo's optional ``onnx``
extra (about 60 MB); every entry point here says in one line how to install what is
missing. ``onnxruntime`` is imported lazily.
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

# Float32 kernels differ between TensorFlow and ONNX Runtime only by rounding; measured on
# catsdogs bundles the largest probability difference is 4.2e-7, so 1e-4 flags a broken
# conversion, never rounding.
TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'hpo[onnx]'"
RUNTIME = "onnxruntime"
# The converter Keras' ONNX export calls on each backend (keras/src/export/onnx.py); hpo's
# onnx extra brings TensorFlow's, the default backend's.
CONVERTERS = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}


def converter() -> str:
    """The package Keras' ONNX export uses on this process's backend."""
    from hpo.device import backend_name

    return CONVERTERS.get(backend_name(), "tf2onnx")


def missing(writing: bool = True) -> list[str]:
    """The packages not installed that running ONNX files (and, ``writing``, making them on
    this process's Keras backend) needs."""
    needed = ["onnxruntime"]
    if writing:
        needed.append(converter())
    return [name for name in needed if importlib.util.find_spec(name) is None]


def available() -> bool:
    """Whether ONNX files can be written and run here."""
    return not missing()


def require(why: str, writing: bool = True) -> None:
    """A one-line error naming what needs ONNX and how to install it, unless it is installed."""
    absent = missing(writing)
    if absent:
        raise HpoError(
            f"{why} needs {' and '.join(absent)}: pip install {' '.join(absent)} "
            f"({INSTALL_HINT} brings what the TensorFlow backend needs)"
        )


def export(model: keras.Model, path: Path) -> None:
    """Write ``model``'s inference graph (batch size left free) to ``path``."""
    require("writing model.onnx")
    if not model._called:  # Keras exports only a model that has run once
        size = model.input_shape[1:]
        model(np.zeros((1, *size), "float32"))
    import keras

    if keras.backend.backend() == "tensorflow":
        _convert_erfc()
    with warnings.catch_warnings():  # tf2onnx's NumPy 2 and protobuf deprecation notices
        warnings.simplefilter("ignore")
        model.export(str(path), format="onnx", verbose=False)


def _convert_erfc() -> None:
    """Teach tf2onnx TensorFlow's ``Erfc``, once. Keras' exact GELU on TensorFlow computes
    ``erfc``, which tf2onnx 1.17 has no handler for: it then writes an ``Erfc`` node that no
    ONNX runtime knows (ONNX Runtime: "No Op registered for Erfc"). ONNX has ``Erf``, and
    erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    if any("Erfc" in ops for ops in tf_op.get_opsets().get("", [])):
        return

    def erfc(ctx: Any, node: Any, **kwargs: Any) -> None:
        node.type = "Erf"
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        one = ctx.make_const(utils.make_name("erfc_one"), np.array(1, dtype=dtype))
        ctx.insert_new_node_on_output(
            "Sub",
            node.output[0],
            name=utils.make_name(node.name),
            inputs=[one.output[0], node.output[0]],
        )

    tf_op.register_handler(erfc, 9, ["Erfc"], "", {})


class OnnxModel:
    """An ONNX file in an ONNX Runtime session, answering like the Keras calls hpo makes
    (``predict_on_batch``, ``output_shape``), so :func:`hpo.head.predict_proba` runs
    either."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require(f"running {path.name}", writing=False)
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


def check_matches(
    onnx_file: Path, images: np.ndarray, expected: np.ndarray, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Refuse an ONNX file whose predictions on ``images`` (real test images) differ from
    the Keras model's, ``expected`` (its probabilities on them): every image must get the
    same class and every probability must be within ``tolerance``. Returns what was
    compared, for the bundle's metrics."""
    from hpo.head import predict_proba

    got = predict_proba(OnnxModel(onnx_file), images)
    same = int((expected.argmax(axis=1) == got.argmax(axis=1)).sum())
    worst = float(np.abs(expected - got).max()) if len(images) else 0.0
    if same != len(images) or worst > tolerance:
        raise HpoError(
            f"{onnx_file.name} does not match the Keras model on the test images: "
            f"{len(images) - same} of {len(images)} get another class, largest probability "
            f"difference {worst:.2g} (tolerance {tolerance:g})"
        )
    return {
        "images": len(images),
        "same_class": same,
        "max_abs_diff": worst,
        "tolerance": tolerance,
    }
