"""Classify image files with an exported bundle, preprocessing them exactly like training did
(:func:`hpo.data.decode_image` at the bundle's image size; scaling is inside the model)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpo.bundle import Bundle
from hpo.data import UnreadableImage, decode_image
from hpo.data.layouts import is_junk  # the data layer's notion of OS junk

# Extensions picked up when walking a folder; files named on the command line are always tried.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Prediction:
    """The top classes of one input, or why it could not be classified."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "top": [{"label": k, "probability": p} for k, p in self.top]}


def collect_inputs(paths: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """(path, error) per input: named files as given, folders walked for image files (OS
    junk skipped), missing paths as errors; sorted within each folder for stable output."""
    found: list[tuple[str, str | None]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
                found += [
                    (str(Path(dirpath) / name), None)
                    for name in sorted(filenames)
                    if not is_junk(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES
                ]
        elif path.is_file():
            found.append((str(path), None))
        else:
            found.append((str(path), "no such file or folder"))
    return found


def predict_files(
    bundle: Bundle,
    paths: Sequence[str | Path],
    top: int = 1,
    batch_size: int = 64,
    tta: bool = False,
) -> list[Prediction]:
    """Top-``top`` (label, probability) per image, in input order; bad inputs carry an error.
    ``tta``: probabilities averaged with those of the mirrored image."""
    from hpo.head import predict_proba

    inputs = collect_inputs(paths)
    results = [Prediction(path, error=error) for path, error in inputs]
    todo = [r for r in results if r.error is None]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda r: decode_file(r.path, bundle.image_size), todo))
    good = []
    for result, (pixels, error) in zip(todo, decoded, strict=True):
        result.error = error
        if pixels is not None:
            good.append((result, pixels))
    if good:
        probs = predict_proba(
            bundle.model, np.stack([pixels for _, pixels in good]), batch_size, tta
        )
        for (result, _), row in zip(good, probs, strict=True):
            result.top = top_classes(row, bundle.classes, top)
    return results


def top_classes(probs: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable (label, probability) pairs of one image, best first."""
    best = np.argsort(-probs, kind="stable")[: max(1, min(k, len(classes)))]
    return [(classes[i], float(probs[i])) for i in best]


def decode_file(path: str | Path, image_size: int) -> tuple[np.ndarray | None, str | None]:
    """(pixels, None) as training saw them, or (None, why the file cannot be used)."""
    try:
        return decode_image(path, image_size), None
    except UnreadableImage as exc:
        return None, exc.reason
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or type(exc).__name__}"
