"""Datasets as decoded, cached, split uint8 arrays: the data layer of hpo.

Only numpy, Pillow, filelock and rich are used here, so the data layer imports fast and works
with any Keras backend (or none)::

    ds = load_dataset("catsdogs", "~/data/cats_and_dogs_small", image_size=64)
    train = ds.split("train")               # a view: images[train.rows], labels[train.rows]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpo.data.cache import BadFile, default_cache_dir, load_or_build
from hpo.data.demo import ensure_demo_images
from hpo.data.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, UnreadableImage, decode_image
from hpo.data.layouts import DATASETS, SPLITS, check_name, detect, resolve
from hpo.data.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    check_fractions,
    group_by_sha,
    make_splits,
)
from hpo.errors import HpoError
from hpo.files import write_text_atomic

__all__ = [
    "DATASETS",
    "BadFile",
    "Dataset",
    "Split",
    "UnreadableImage",
    "decode_image",
    "detect",
    "inspect_dataset",
    "load_dataset",
]


@dataclass(frozen=True)
class Split:
    """Some rows of a (memory-mapped) image array, without copying them: the decode cache
    is shared by every trial and worker through the page cache, never loaded whole."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int (N,)
    rows: np.ndarray  # indices into images/labels

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


@dataclass
class Dataset:
    """A dataset decoded at one image size, with its fixed split and everything found wrong."""

    name: str
    layout: str
    root: Path
    classes: list[str]
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    files: list[str] = field(repr=False)
    splits: dict[str, np.ndarray] = field(repr=False)
    image_size: int
    seed: int
    fingerprint: str
    split_fingerprint: str
    cache_path: Path
    cache_hit: bool
    bad_files: list[BadFile] = field(repr=False)
    ignored_files: list[str] = field(repr=False)
    duplicates: list[list[str]] = field(repr=False)
    report_path: Path
    warnings: list[str]
    excluded_files: list[str] = field(default_factory=list, repr=False)  # in no split

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split, zeros included, for tables and sanity checks."""
        return {
            split: {cls: int((self.labels[idx] == k).sum()) for k, cls in enumerate(self.classes)}
            for split, idx in self.splits.items()
        }

    def split(self, *names: str) -> Split:
        """The rows of one or more splits (``"train"``, ``"val"``, ``"test"``) as a view on
        the memory-mapped cache: nothing is copied until a batch is read."""
        unknown = [name for name in names if name not in self.splits]
        if unknown or not names:
            raise HpoError(
                f"unknown split {unknown[0] if unknown else ''!r}; "
                f"expected one of {', '.join(SPLITS)}"
            )
        rows = np.sort(np.concatenate([self.splits[name] for name in names]))
        return Split(self.images, self.labels, rows)


def _check_options(image_size: int, seed: int, val_fraction: float, test_fraction: float) -> None:
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise HpoError(
            f"image size {image_size} px is out of range ({MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE})"
        )
    if seed < 0:
        raise HpoError(f"seed must be 0 or more, got {seed}")
    check_fractions(val_fraction, test_fraction)


def _sha256_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int = 64,
    seed: int = 0,
    *,
    cache_dir: str | Path | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    progress: bool = False,
    workers: int | None = None,
) -> Dataset:
    """Load a dataset as uint8 arrays, decoding only on the first call for these files and size.

    ``workers`` (default: all cores) is the number of decode threads for a cache build.
    """
    check_name(name)
    _check_options(image_size, seed, val_fraction, test_fraction)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == "demo":  # generated (once) into the cache, then listed like any folder
        data_dir = ensure_demo_images(cache)
    source = resolve(name, data_dir)
    entry = load_or_build(source, image_size, cache, workers=workers, progress=progress)
    report_path = entry.path / "bad_files.txt"
    if not entry.files:
        raise HpoError(
            f"{source.root}: none of the {len(entry.bad_files)} files is a readable "
            f"image; see {report_path}"
        )

    splits, excluded = make_splits(
        entry.sha256,
        entry.labels,
        entry.provided,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    by_sha = group_by_sha(entry.sha256)
    duplicates = sorted(
        [entry.files[i] for i in members] for members in by_sha.values() if len(members) > 1
    )

    warnings = list(source.warnings)
    mixed = sum(len({int(entry.labels[i]) for i in members}) > 1 for members in by_sha.values())
    if mixed:
        warnings.append(f"identical files filed under different classes: {mixed} group(s)")
    if excluded:
        warnings.append(
            f"left out of val/test because identical bytes are in an earlier "
            f"split: {len(excluded)} file(s)"
        )

    fingerprint = _sha256_json(
        {
            "classes": source.classes,
            "images": sorted(
                [sha, int(label)] for sha, label in zip(entry.sha256, entry.labels, strict=True)
            ),
        }
    )
    split_fingerprint = _sha256_json(
        {split: sorted(entry.sha256[i] for i in idx) for split, idx in splits.items()}
    )
    excluded_files = [entry.files[i] for i in excluded]
    _record_split(
        entry.path,
        seed,
        val_fraction,
        test_fraction,
        split_fingerprint,
        {split: [entry.files[i] for i in idx] for split, idx in splits.items()},
        excluded_files,
    )

    return Dataset(
        name=name,
        layout=source.layout,
        root=source.root,
        classes=source.classes,
        images=entry.images,
        labels=entry.labels,
        files=entry.files,
        splits=splits,
        image_size=image_size,
        seed=seed,
        fingerprint=fingerprint,
        split_fingerprint=split_fingerprint,
        cache_path=entry.path,
        cache_hit=entry.hit,
        bad_files=entry.bad_files,
        ignored_files=source.ignored,
        duplicates=duplicates,
        report_path=report_path,
        warnings=warnings,
        excluded_files=excluded_files,
    )


def _record_split(
    entry: Path,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    split_fingerprint: str,
    members: dict[str, list[str]],
    excluded: list[str],
) -> None:
    """Write ``split-<seed>.json`` into the cache entry, the record of who trained on what."""
    suffix = (
        ""
        if (val_fraction, test_fraction) == (DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION)
        else f"-val{val_fraction:g}-test{test_fraction:g}"
    )
    record = {
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_fingerprint": split_fingerprint,
        **members,
        "excluded": excluded,
    }
    write_text_atomic(entry / f"split-{seed}{suffix}.json", json.dumps(record, indent=1))


def inspect_dataset(
    path: str | Path, dataset: str | None = None, image_size: int = 64, *, progress: bool = False
) -> Dataset:
    """Load a folder for ``hpo data inspect``, detecting its layout unless ``dataset`` is given.

    ``path`` "demo" (when no such folder exists) inspects the generated demo set.
    """
    if dataset is None:
        dataset = "demo" if str(path) == "demo" and not Path(path).exists() else detect(path)[0]
    return load_dataset(dataset, path, image_size, progress=progress)
