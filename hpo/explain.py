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
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from hpo.bundle import load_bundle
from hpo.errors import HpoError
from hpo.predict import decode_file, top_classes

if TYPE_CHECKING:
    import keras

FIRST_CONV = "block1_conv"
# Channel maps per block row: enough to see what a block reacts to, few enough to read.
DEFAULT_CHANNELS = 8
# One grid cell of the feature maps at 80 dpi: 1.5 x 1.6 in, the picture a square inside it.
CELL_W, CELL_H, PICTURE = 120, 128, 96
TITLE_H = 48  # the grid's 0.6 in title band
NAME_W = 6  # room left of the input image for the block's name


@dataclass(frozen=True)
class Explained:
    """The files ``explain_bundle`` wrote and a line per conv block for the terminal."""

    feature_maps: Path
    filters: Path
    panels: list[str]
    prediction: str
    note: str = ""  # which model was drawn, when the bundle holds an ensemble


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

    titles = [
        f"{name} {'x'.join(str(n) for n in outputs[b][i].shape)} of {caption}"
        for i, (_, caption) in enumerate(images)
        for b, name in enumerate(blocks)
    ]
    _draw_grid(images, blocks, outputs, channels, path)
    return titles


def _draw_grid(
    images: Sequence[tuple[np.ndarray, str]],
    blocks: Sequence[str],
    outputs: Sequence[np.ndarray],
    channels: int,
    path: str | Path,
) -> None:
    """Paint every cell (the input, then the strongest channel maps) into one RGB mosaic and
    draw it with a single ``imshow`` plus text labels: one matplotlib axes per cell made an
    export's pictures cost seconds per class (layout and drawing of dozens of axes)."""
    from matplotlib import colormaps
    from PIL import Image

    viridis = colormaps["viridis"]
    rows, cols = len(images) * len(blocks), channels + 1
    mosaic = np.full((rows * CELL_H, cols * CELL_W, 3), 255, dtype=np.uint8)
    captions: list[tuple[float, float, str]] = []  # x, y (mosaic pixels), text
    names: list[tuple[float, float, str]] = []  # block names along the left edge

    def paint(row: int, col: int, rgb: np.ndarray, title: str) -> None:
        picture = Image.fromarray(rgb).resize((PICTURE, PICTURE), Image.Resampling.NEAREST)
        top = row * CELL_H + CELL_H - PICTURE - 4
        left = col * CELL_W + (CELL_W - PICTURE) // 2 + (NAME_W if col == 0 else 0)
        mosaic[top : top + PICTURE, left : left + PICTURE] = np.asarray(picture)
        if title:
            captions.append((left + PICTURE / 2, top - 4, title))

    for i, (image, caption) in enumerate(images):
        for b, name in enumerate(blocks):
            row = i * len(blocks) + b
            maps = outputs[b][i]  # (H, W, C)
            paint(row, 0, np.asarray(image, dtype="uint8"), caption if b == 0 else "")
            names.append((1, row * CELL_H + CELL_H / 2, name))
            strongest = np.argsort(maps.mean(axis=(0, 1)))[::-1][:channels]
            for col, channel in enumerate(strongest, start=1):
                scaled = Normalize()(maps[:, :, channel])  # its own scale, as imshow gives it
                paint(row, col, (viridis(scaled)[..., :3] * 255).astype(np.uint8), f"ch {channel}")

    height, width = rows * CELL_H + TITLE_H, cols * CELL_W
    fig = Figure(figsize=(width / 80, height / 80))
    ax = fig.add_axes((0.0, 0.0, 1.0, rows * CELL_H / height))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text in captions:
        ax.text(x, y, text, fontsize=8, ha="center", va="bottom")
    for x, y, text in names:  # up the left edge, as a y label runs
        ax.text(x, y, text, fontsize=8, ha="left", va="center", rotation=90)
    fig.suptitle(
        f"feature maps of {len(blocks)} conv blocks, strongest {channels} channels each",
        y=1 - TITLE_H / height / 2,
        va="center",
    )
    fig.savefig(path, dpi=80)


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
            ax.imshow(Normalize()(kernel[..., index]).filled(0.0), interpolation="nearest")
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

    prediction = _prediction(loaded.model, pixels, loaded.classes)  # the whole model's
    model, note = _explained_model(loaded.model)
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    stem = picture.stem
    maps_path, filters_path = target / f"{stem}-feature-maps.png", target / "filters.png"
    panels = feature_maps_png(
        model, [(pixels, f"{stem}: predicted {prediction}")], maps_path, channels=channels
    )
    filters_png(model, filters_path)
    return Explained(maps_path, filters_path, panels, prediction, note)


def _explained_model(model: keras.Model) -> tuple[keras.Model, str]:
    """The model whose layers are drawn: the model itself, or an ensemble's heaviest member
    (an average of CNNs has no feature maps of its own), with a line saying which."""
    from hpo.ensemble import heaviest_member, member_weights

    heaviest = heaviest_member(model)
    if heaviest is None:
        return model, ""
    index, member, weight = heaviest
    return member, (
        f"an ensemble of {len(member_weights(model))} models: drawing its heaviest member, "
        f"{member.name} (weight {weight:.3f}); the prediction is the ensemble's"
    )


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
    from hpo.head import predict_proba

    [(name, probability)] = top_classes(predict_proba(model, pixels[None])[0], classes, 1)
    return f"{name} {probability:.2f}"
