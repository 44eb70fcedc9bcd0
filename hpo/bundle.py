"""The bundle format: the files ``hpo export-best`` writes and ``hpo predict``, ``hpo
explain`` and the MLflow mirror read. Its file names and the description files
(labels, params, metrics, split, preprocessing) are written and read here and nowhere else,
so a reader can never disagree with the writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, first_line
from hpo.head import describe_head

if TYPE_CHECKING:
    import keras

    from hpo.data import Dataset
    from hpo.onnx_runtime import OnnxModel

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"  # with hpo's onnx extra (hpo.onnx_runtime)
RUNTIMES = ("keras", "onnx")  # what `hpo predict --runtime` runs a bundle on
LABELS_FILE = "labels.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"
PREPROCESSING_FILE = "preprocessing.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
LEARNING_CURVE_FILE = "learning_curve.png"
FILTERS_FILE = "filters.png"
MODEL_CARD_FILE = "model_card.md"
FEATURE_MAP_DIR = "feature_maps"
# The report files, also uploaded as Optuna artifacts so the dashboard shows what was
# shipped (plus every feature_maps/<class>.png).
REPORT_FILES = (
    METRICS_FILE,
    CONFUSION_MATRIX_FILE,
    LEARNING_CURVE_FILE,
    FILTERS_FILE,
    MODEL_CARD_FILE,
)
# What a model registry wants beside the model: how to feed it and read its output.
DESCRIPTION_FILES = (LABELS_FILE, PREPROCESSING_FILE, PARAMS_FILE)


@dataclass
class Bundle:
    """A loaded export: the Keras model, its class names and its input size."""

    path: Path
    model: keras.Model | OnnxModel  # either answers predict_on_batch
    classes: list[str]
    image_size: int


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def save_model(folder: Path, model: keras.Model) -> Path | None:
    """``model.keras``, on TensorFlow the SavedModel that TF Serving loads, and with hpo's
    onnx extra ``model.onnx``; returns the ONNX file's path (None without the extra)."""
    import keras

    from hpo import onnx_runtime

    model.save(folder / MODEL_FILE)
    if keras.backend.backend() == "tensorflow":
        model.export(str(folder / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    if not onnx_runtime.available():
        return None
    onnx_runtime.export(model, folder / ONNX_FILE)
    return folder / ONNX_FILE


def write_description(
    folder: Path, data: Dataset, params: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """labels, params, metrics, the split's file lists and how to feed the model."""
    write_json(folder / LABELS_FILE, {str(i): name for i, name in enumerate(data.classes)})
    write_json(folder / PARAMS_FILE, dict(params))
    write_json(folder / METRICS_FILE, dict(metrics))
    write_json(
        folder / SPLIT_FILE,
        {
            "dataset": data.name,
            "root": str(data.root),
            "layout": data.layout,
            "seed": data.seed,
            "data_fingerprint": data.fingerprint,
            "split_fingerprint": data.split_fingerprint,
            "retrained_on": ["train", "val"],
            "tested_on": "test",
            **{split: [data.files[i] for i in rows] for split, rows in data.splits.items()},
            "excluded": data.excluded_files,
        },
    )
    write_json(
        folder / PREPROCESSING_FILE,
        {
            "image_size": data.image_size,
            "input_shape": [data.image_size, data.image_size, 3],
            "color_mode": "RGB",
            "input_values": "0-255 pixel values (float32 or uint8)",
            "decode": "hpo.data.decode_image: EXIF rotation applied, alpha composited on white, "
            "grayscale/CMYK/16-bit converted to RGB, first frame of animations",
            "resize": "Pillow LANCZOS to image_size x image_size, aspect ratio not kept "
            "(JPEGs are first decoded at reduced scale)",
            "scaling": "inside the model (Rescaling 1/255); do not scale before feeding",
            "training_precision": metrics["precision"],
            "model_precision": "float32 (the bundled model is rebuilt in float32 for inference)",
            "output": describe_head(len(data.classes)),
        },
    )


def read_params(folder: Path) -> dict[str, Any]:
    """The configuration the bundled model was trained with."""
    return dict(json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8")))


def read_split(folder: Path) -> dict[str, Any]:
    """The dataset root and the file lists (relative to it) of each split."""
    return dict(json.loads((folder / SPLIT_FILE).read_text(encoding="utf-8")))


def load_bundle(path: str | Path, runtime: str = "keras") -> Bundle:
    """Read the labels, the preprocessing and the model (safe mode: a bundle can never run
    code on load); ``runtime`` "onnx" runs ``model.onnx`` on ONNX Runtime instead."""
    if runtime not in RUNTIMES:
        raise HpoError(f"unknown runtime '{runtime}' (valid: {', '.join(RUNTIMES)})")
    folder = Path(path).expanduser()
    files = {name: folder / name for name in (MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE)}
    missing = [name for name, file in files.items() if not file.is_file()]
    if missing:
        what = "does not exist" if not folder.exists() else f"has no {', '.join(missing)}"
        raise HpoError(f"{folder} {what}; expected a bundle written by `hpo export-best`")
    try:
        labels = json.loads(files[LABELS_FILE].read_text(encoding="utf-8"))
        classes = [labels[str(i)] for i in range(len(labels))]
        image_size = int(
            json.loads(files[PREPROCESSING_FILE].read_text(encoding="utf-8"))["image_size"]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise HpoError(f"{folder}: broken {LABELS_FILE} or {PREPROCESSING_FILE} ({exc})") from None

    if runtime == "onnx":
        from hpo.onnx_runtime import OnnxModel

        if not (folder / ONNX_FILE).is_file():
            raise HpoError(
                f"{folder} has no {ONNX_FILE} (it was exported without hpo's onnx extra); "
                "re-export it with the extra installed, or use --runtime keras"
            )
        return Bundle(folder, OnnxModel(folder / ONNX_FILE), classes, image_size)

    from hpo.device import load_backend

    load_backend()  # imports Keras with the backend's start-up chatter kept off the terminal
    import keras

    try:
        model = keras.saving.load_model(files[MODEL_FILE], safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any loader error means an unusable file
        raise HpoError(f"{files[MODEL_FILE]}: cannot load the model ({first_line(exc)})") from None
    return Bundle(folder, model, classes, image_size)
