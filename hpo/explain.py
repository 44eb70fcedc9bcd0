"""What a trained CNN looks at: feature maps of every conv block and the first layer's filters.

``hpo explain BUNDLE IMAGE`` draws them for one image; the export calls
:func:`feature_maps_png` and :func:`filters_png` to put the same pictures into a bundle for a
few test images per class. Only ``keras.*`` is used, so it works on every backend. Keras is
imported inside the functions that need it, so a mistyped path fails at once instead of
after the backend's seconds-long import.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot: no GUI backend is
ever chosen (the Agg canvas renders the PNG) and no global figure list grows in a long export.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.figure import Figure

from hpo.data import UnreadableImage, decode_image
from hpo.errors import HpoError

if TYPE_CHECKING:
    import keras

FIRST_CONV = "block1_conv"
# Channel maps per block row: enough to see what a block reacts to, few enough to read.
DEFAULT_CHANNELS = 8


@dataclass(frozen=True)
class Explained:
    """The files ``explain_bundle`` wrote and a line per conv block for the terminal."""

    feature_maps: Path
    filters: Path
    panels: list[str]
    prediction: str


def feature_maps_png(model: keras.Model, images: Sequence[tuple[np.ndarray, str]],
                     path: str | Path, *, channels: int = DEFAULT_CHANNELS) -> list[str]:
    """Write a grid with one row per (image, conv block): the input image, then the
    ``channels`` strongest channel maps of that block's activation. Returns one title per
    row, e.g. ``"block2_act 16x16x32 of cat"``.

    ``images`` are uint8 (S, S, 3) arrays at the model's input size (what
    ``hpo.data.decode_image`` returns) with a caption each, usually the class name. The
    strongest channels (highest mean activation on that image) are shown instead of the first
    ones, because many channels of a small, briefly trained CNN are nearly blank.
    """
    import keras

    if not images:
        raise HpoError("feature maps need at least one image")
    blocks = _conv_blocks(model)
    expected = tuple(model.input_shape[1:])
    for image, caption in images:
        if tuple(np.shape(image)) != expected:
            raise HpoError(f"image '{caption}' has shape {np.shape(image)}, the model takes {expected}")
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in blocks])
    batch = np.stack([np.asarray(image, dtype="float32") for image, _ in images])
    outputs = probe.predict_on_batch(batch)
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    rows = len(images) * len(blocks)
    fig = Figure(figsize=(1.5 * (channels + 1), 1.6 * rows + 0.6), layout="constrained")
    fig.suptitle(f"feature maps of {len(blocks)} conv blocks, strongest {channels} channels each")
    grid = fig.subplots(rows, channels + 1, squeeze=False)
    titles = []
    for i, (image, caption) in enumerate(images):
        for b, name in enumerate(blocks):
            axes = grid[i * len(blocks) + b]
            maps = outputs[b][i]  # (H, W, C)
            title = f"{name} {maps.shape[0]}x{maps.shape[1]}x{maps.shape[2]} of {caption}"
            titles.append(title)
            axes[0].imshow(np.asarray(image, dtype="uint8"))
            axes[0].set_title(caption if b == 0 else "", fontsize=9)
            axes[0].set_ylabel(name, fontsize=9)
            strongest = np.argsort(maps.mean(axis=(0, 1)))[::-1][:channels]
            for ax, channel in zip(axes[1:], strongest):
                ax.imshow(maps[:, :, channel], cmap="viridis")
                ax.set_title(f"ch {channel}", fontsize=8)
            for ax in axes:
                ax.set_xticks([])
                ax.set_yticks([])
                if not ax.images:
                    ax.set_axis_off()  # a block with fewer channels than columns
    fig.savefig(path, dpi=80)
    return titles


def filters_png(model: keras.Model, path: str | Path) -> int:
    """Write the first conv layer's 3x3 RGB filters as a grid of tiny images; returns how
    many. Each filter is min-max scaled on its own, because their raw weights are small
    numbers around zero that would all look grey on a common scale."""
    try:
        kernel = np.asarray(model.get_layer(FIRST_CONV).get_weights()[0])  # (kh, kw, 3, F)
    except ValueError:
        raise HpoError(f"model '{model.name}' has no layer '{FIRST_CONV}' "
                       f"(not a model built by hpo.model)") from None
    count = kernel.shape[-1]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(max(1.0 * cols, 3.5), 1.0 * rows + 0.8), layout="constrained")
    fig.suptitle(f"{FIRST_CONV}: {count} filters of "
                 f"{kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}\neach scaled to RGB",
                 fontsize=10)
    for index, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.set_axis_off()
        if index < count:
            weights = kernel[..., index]
            span = weights.max() - weights.min()
            ax.imshow((weights - weights.min()) / (span if span > 0 else 1.0),
                      interpolation="nearest")
            ax.set_title(str(index), fontsize=7)
    fig.savefig(path, dpi=100)
    return count


def explain_bundle(bundle: str | Path, image: str | Path, out: str | Path,
                   channels: int = DEFAULT_CHANNELS) -> Explained:
    """Feature maps of ``image`` and the first layer's filters for the model in ``bundle``
    (a folder with ``model.keras`` and, optionally, ``preprocessing.json`` and
    ``labels.json``), written into ``out``."""
    folder, picture = Path(bundle).expanduser(), Path(image).expanduser()
    if not (folder / "model.keras").is_file():
        raise HpoError(f"no model.keras in {bundle} (expected a bundle from `hpo export-best`)")
    if not picture.is_file():
        raise HpoError(f"no image file at {image}")
    model = load_bundle_model(folder)
    size = _image_size(folder, model)
    try:
        pixels = decode_image(picture, size)
    except OSError as exc:
        raise HpoError(f"cannot read {image}: {exc.strerror or exc}") from None
    except UnreadableImage as exc:
        raise HpoError(f"cannot read {image}: {exc}") from None

    prediction = _prediction(model, pixels, _class_names(folder))
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    stem = Path(image).stem
    maps_path, filters_path = target / f"{stem}-feature-maps.png", target / "filters.png"
    panels = feature_maps_png(model, [(pixels, f"{stem}: predicted {prediction}")], maps_path,
                              channels=channels)
    filters_png(model, filters_path)
    return Explained(maps_path, filters_path, panels, prediction)


def load_bundle_model(bundle: Path) -> keras.Model:
    """``bundle/model.keras`` in Keras' safe mode (no arbitrary code from a downloaded file)."""
    import keras

    path = bundle / "model.keras"
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad archive
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HpoError(f"cannot load {path}: {reason}") from None


def _conv_blocks(model: keras.Model) -> list[str]:
    from hpo.model import conv_block_outputs  # hpo.model imports keras

    blocks = conv_block_outputs(model)
    if not blocks:
        raise HpoError(f"model '{model.name}' has no blockN_act layers "
                       f"(not a model built by hpo.model)")
    return blocks


def _image_size(bundle: Path, model: keras.Model) -> int:
    """The bundle's recorded image size, else the model's input side."""
    preprocessing = bundle / "preprocessing.json"
    if preprocessing.is_file():
        try:
            return int(json.loads(preprocessing.read_text())["image_size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HpoError(f"{preprocessing}: no valid image_size ({exc})") from None
    side = model.input_shape[1]
    if side is None:
        raise HpoError(f"{bundle}: no preprocessing.json and the model's input size is not fixed")
    return int(side)


def _class_names(bundle: Path) -> list[str] | None:
    """Class names in output order from ``labels.json`` (a JSON list), if the bundle has it."""
    labels = bundle / "labels.json"
    if not labels.is_file():
        return None
    try:
        names = json.loads(labels.read_text())
    except ValueError as exc:
        raise HpoError(f"{labels}: not JSON ({exc})") from None
    if not isinstance(names, list):
        raise HpoError(f"{labels}: expected a JSON list of class names")
    return [str(name) for name in names]


def _prediction(model: keras.Model, pixels: np.ndarray, classes: list[str] | None) -> str:
    """``"class 0.93"``: what the model predicts, so the maps can be read against it."""
    from hpo.training import predict_proba

    probs = predict_proba(model, pixels[None])[0]
    best = int(probs.argmax())
    name = classes[best] if classes and best < len(classes) else f"class {best}"
    return f"{name} {probs[best]:.2f}"
