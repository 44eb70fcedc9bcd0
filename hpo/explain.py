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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from hpo.bundle import load_bundle
from hpo.errors import HpoError
from hpo.predict import decode_file, top_classes

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


def feature_maps_png(
    model: keras.Model,
    images: Sequence[tuple[np.ndarray, str]],
    path: str | Path,
    *,
    channels: int = DEFAULT_CHANNELS,
) -> list[str]:
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
            raise HpoError(
                f"image '{caption}' has shape {np.shape(image)}, the model takes {expected}"
            )
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in blocks])
    batch = np.stack([np.asarray(image, dtype="float32") for image, _ in images])
    outputs = probe.predict_on_batch(batch)
    outputs = [
        np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])
    ]

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
            for ax, channel in zip(axes[1:], strongest, strict=False):
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
        raise HpoError(
            f"model '{model.name}' has no layer '{FIRST_CONV}' (not a model built by hpo.model)"
        ) from None
    count = kernel.shape[-1]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(max(1.0 * cols, 3.5), 1.0 * rows + 0.8), layout="constrained")
    fig.suptitle(
        f"{FIRST_CONV}: {count} filters of "
        f"{kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}\neach scaled to RGB",
        fontsize=10,
    )
    for index, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.set_axis_off()
        if index < count:
            weights = kernel[..., index]
            span = weights.max() - weights.min()
            ax.imshow(
                (weights - weights.min()) / (span if span > 0 else 1.0), interpolation="nearest"
            )
            ax.set_title(str(index), fontsize=7)
    fig.savefig(path, dpi=100)
    return count


def explain_bundle(
    bundle: str | Path, image: str | Path, out: str | Path, channels: int = DEFAULT_CHANNELS
) -> Explained:
    """Feature maps of ``image`` and the first layer's filters for the model of an
    ``hpo export-best`` bundle, written into ``out``."""
    picture = Path(image).expanduser()
    if not picture.is_file():
        raise HpoError(f"no image file at {image}")
    loaded = load_bundle(bundle)  # the same loader, preprocessing and labels as hpo predict
    pixels, error = decode_file(picture, loaded.image_size)
    if pixels is None:
        raise HpoError(f"cannot read {image}: {error}")

    prediction = _prediction(loaded.model, pixels, loaded.classes)
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    stem = picture.stem
    maps_path, filters_path = target / f"{stem}-feature-maps.png", target / "filters.png"
    panels = feature_maps_png(
        loaded.model, [(pixels, f"{stem}: predicted {prediction}")], maps_path, channels=channels
    )
    filters_png(loaded.model, filters_path)
    return Explained(maps_path, filters_path, panels, prediction)


def _conv_blocks(model: keras.Model) -> list[str]:
    from hpo.model import conv_block_outputs  # hpo.model imports keras

    blocks = conv_block_outputs(model)
    if not blocks:
        raise HpoError(
            f"model '{model.name}' has no blockN_act layers (not a model built by hpo.model)"
        )
    return blocks


def _prediction(model: keras.Model, pixels: np.ndarray, classes: Sequence[str]) -> str:
    """``"class 0.93"``: what the model predicts, so the maps can be read against it."""
    from hpo.training import predict_proba

    [(name, probability)] = top_classes(predict_proba(model, pixels[None])[0], classes, 1)
    return f"{name} {probability:.2f}"
