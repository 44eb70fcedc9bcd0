"""A generated, learnable image set, so ``hpo`` can be tried with no download.

Four classes of shapes with random colours, positions and sizes on noisy backgrounds: easy
enough for a small CNN to beat chance within a few epochs at 32 px, hard enough that
hyperparameters matter. Written once as PNG files, then treated like any folder dataset.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hpo.files import build_once

DEMO_CLASSES = ("circles", "squares", "stripes", "triangles")
DEMO_PER_CLASS = 150
DEMO_SIZE = 64
DEMO_SEED = 1234  # fixed: the demo images are the same on every machine


def ensure_demo_images(cache_dir: Path) -> Path:
    """Return ``<cache_dir>/demo-src``, generating it first if absent (once, atomically)."""
    target = cache_dir / "demo-src"
    build_once(target, _write_demo)
    return target


def _write_demo(folder: Path) -> None:
    rng = np.random.default_rng(DEMO_SEED)
    for name in DEMO_CLASSES:
        (folder / name).mkdir()
        for i in range(DEMO_PER_CLASS):
            _draw(name, rng).save(folder / name / f"{name}-{i:03d}.png")


def _contrasting_colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A dark background and a bright foreground of random hues: the silhouette is what counts."""
    bg = rng.integers(0, 110, size=3)
    fg = rng.integers(150, 256, size=3)
    return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


def _draw(name: str, rng: np.random.Generator) -> Image.Image:
    s = DEMO_SIZE
    bg, fg = _contrasting_colors(rng)
    img = Image.new("RGB", (s, s), bg)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(s // 5, s // 3 + 1))  # shape "radius"
    cx, cy = (int(v) for v in rng.integers(r, s - r, size=2))
    angle = float(rng.uniform(0, 2 * math.pi))
    if name == "circles":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "squares":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif name == "triangles":
        points = [
            (
                cx + r * math.cos(angle + k * 2 * math.pi / 3),
                cy + r * math.sin(angle + k * 2 * math.pi / 3),
            )
            for k in range(3)
        ]
        draw.polygon(points, fill=fg)
    else:  # stripes: parallel bands across the whole image at a random angle
        period = float(rng.uniform(8, 16))
        y, x = np.mgrid[0:s, 0:s]
        bands = ((x * math.cos(angle) + y * math.sin(angle)) % period) < period / 2
        pixels = np.asarray(img).copy()
        pixels[bands] = fg
        img = Image.fromarray(pixels)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, size=(s, s, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
