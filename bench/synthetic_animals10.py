"""Write an Animals-10-shaped image folder: the real dataset's layout (``raw-img/<Italian
class>/``), its 10 classes and its per-class counts (26,179 JPEGs at ``--scale 1``), in
photo-like sizes. For timing a whole study where the real download cannot be had (a GPU
machine without internet); the images are generated, so accuracies on it mean nothing.

    python bench/synthetic_animals10.py OUT [--scale 1.0] [--seed 0]

Each class is a blob of its own shape family and tint at a random place, size and
brightness on a noisy background of random hue: learnable, not trivial at 64-128 px.
Written by all cores (one process each); about 26k files take seconds on 16 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpo.data.layouts import ANIMALS10  # noqa: E402

# The Kaggle download's per-class image counts (raw-img/, 26,179 in all), in the order of
# hpo's own list of the dataset's folders.
COUNTS = dict(
    zip(ANIMALS10, (4863, 2623, 1446, 2112, 3098, 1668, 1866, 1820, 4821, 1862), strict=True)
)

SLICE = 250


def draw(label: int, rng: np.random.Generator) -> Image.Image:
    """One image of class ``label``: size 180-320 x 150-300 px like the photos."""
    w, h = int(rng.integers(180, 321)), int(rng.integers(150, 301))
    background = rng.integers(0, 256, 3)
    image = background + rng.normal(0, 35, (h, w, 3))
    y, x = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    r = rng.uniform(0.15, 0.35) * min(w, h)
    dx, dy = (x - cx) / r, (y - cy) / r
    # Ten shape families: p-norm balls (round ... square ... star-like) and stretched ones.
    p = (0.5, 1.0, 2.0, 4.0, 0.7, 1.5, 3.0, 6.0, 1.2, 2.5)[label]
    stretch = 1.0 + 0.6 * (label % 2)
    inside = (np.abs(dx) ** p + np.abs(dy * stretch) ** p) < 1.0
    tint = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])
    image[inside] = tint * rng.uniform(0.6, 1.2) + rng.normal(0, 25, (int(inside.sum()), 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_slice(job: tuple[Path, str, int, int, int, int]) -> int:
    """Images ``start``..``stop`` of one class (seeded by class and start: same files on
    every machine, whatever the number of cores)."""
    folder, name, label, start, stop, seed = job
    rng = np.random.default_rng([seed, label, start])
    (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        draw(label, rng).save(folder / name / f"{name}_{i:05d}.jpeg", quality=90)
    return stop - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="dataset folder to write (raw-img/ goes inside)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the real counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out} exists and is not empty")
    root = args.out / "raw-img"
    # Slices of SLICE images, so all cores work, not one per class.
    jobs = []
    for label, (name, count) in enumerate(COUNTS.items()):
        n = max(1, round(count * args.scale))
        jobs += [
            (root, name, label, start, min(n, start + SLICE), args.seed)
            for start in range(0, n, SLICE)
        ]
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        total = sum(pool.map(write_slice, jobs))
    print(f"wrote {total} images in 10 classes to {root} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
