"""Splits are fixed, stratified, recorded, and never leak identical images into test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hpo.data import Dataset, load_dataset
from hpo.data.splits import make_splits
from hpo.errors import HpoError
from tests.data_samples import link_images, noisy_jpeg

S = 32


def _by_sha(ds: Dataset) -> dict[str, set[str]]:
    index = json.loads((ds.cache_path / "index.json").read_text(encoding="utf-8"))
    sha = [f["sha256"] for f in index["files"]]
    return {split: {sha[i] for i in idx} for split, idx in ds.splits.items()}


def test_stratified_disjoint_complete_and_recorded(animals10_dir: Path) -> None:
    ds = load_dataset("animals10", animals10_dir, S, seed=3)
    counts = ds.counts()
    assert all(
        counts["val"][c] == 5 and counts["test"][c] == 5 and counts["train"][c] == 22
        for c in ds.classes
    )  # 15% of 32 per class
    joined = np.concatenate(list(ds.splits.values()))
    assert len(joined) == len(set(joined.tolist())) == len(ds.images)
    assert all(
        np.array_equal(idx, np.sort(idx)) and idx.dtype == np.int64 for idx in ds.splits.values()
    )
    test = ds.split("test")
    assert len(test) == 50 and test.images.shape[1:] == (S, S, 3)
    assert np.array_equal(test.rows, ds.splits["test"])
    train_val = ds.split("train", "val")
    assert np.array_equal(
        train_val.rows, np.sort(np.concatenate([ds.splits["train"], ds.splits["val"]]))
    )
    with pytest.raises(HpoError, match="unknown split 'valid'"):
        ds.split("valid")

    record = json.loads((ds.cache_path / "split-3.json").read_text(encoding="utf-8"))
    assert {s: record[s] for s in ("train", "val", "test")} == {
        s: [ds.files[i] for i in idx] for s, idx in ds.splits.items()
    }
    assert record["split_fingerprint"] == ds.split_fingerprint


def test_seed_fixes_the_split_and_fingerprints_follow(animals10_dir: Path) -> None:
    a = load_dataset("animals10", animals10_dir, S, seed=0)
    b = load_dataset("animals10", animals10_dir, S, seed=0)
    c = load_dataset("animals10", animals10_dir, S, seed=1)
    assert all(np.array_equal(a.splits[s], b.splits[s]) for s in a.splits)
    assert a.split_fingerprint == b.split_fingerprint != c.split_fingerprint
    assert not np.array_equal(a.splits["test"], c.splits["test"])
    assert a.fingerprint == c.fingerprint  # same images, other split


def test_split_depends_on_content_not_names_or_listing_order(
    animals10_dir: Path, tmp_path: Path
) -> None:
    original = tmp_path / "a"
    renamed = tmp_path / "b"
    for cls in ("cane", "gatto", "ragno"):
        files = sorted((animals10_dir / cls).iterdir())
        link_images(files, original / cls)
        (renamed / cls).mkdir(parents=True)
        for k, src in enumerate(reversed(files)):  # other names, other order
            (renamed / cls / f"{k:02d}-{src.name[::-1]}").symlink_to(src)
    first = load_dataset("folder", original, S)
    second = load_dataset("folder", renamed, S)
    assert first.split_fingerprint == second.split_fingerprint
    assert first.fingerprint == second.fingerprint

    rng = np.random.default_rng(0)
    sha = [f"{k:064x}" for k in range(60)]
    labels = [k % 3 for k in range(60)]
    perm = rng.permutation(60)
    kwargs = dict(seed=5, val_fraction=0.2, test_fraction=0.2)
    split, _ = make_splits(sha, labels, [None] * 60, **kwargs)
    shuffled, _ = make_splits(
        [sha[p] for p in perm], [labels[p] for p in perm], [None] * 60, **kwargs
    )
    assert all({sha[i] for i in split[s]} == {sha[perm[i]] for i in shuffled[s]} for s in split)


def test_duplicates_are_grouped_and_kept_out_of_test(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for k in range(20):
            (data / cls / f"{k}.jpg").write_bytes(noisy_jpeg(seed=100 * (cls == "b") + k))
        for k in range(4):  # 4 images with 3 copies each
            for copy in range(2):
                shutil.copy(data / cls / f"{k}.jpg", data / cls / f"{k}-copy{copy}.jpg")
    for seed in range(5):
        ds = load_dataset("folder", data, S, seed=seed, test_fraction=0.3)
        assert len(ds.duplicates) == 8 and all(len(g) == 3 for g in ds.duplicates)
        dup_files = {f for group in ds.duplicates for f in group}
        assert not dup_files & {ds.files[i] for i in ds.splits["test"]}
        shas = _by_sha(ds)
        assert not (
            shas["train"] & shas["val"]
            or shas["train"] & shas["test"]
            or shas["val"] & shas["test"]
        )
        assert sum(ds.counts()["test"].values()) == 2 * round(28 * 0.3)


def test_provided_test_split_loses_copies_of_training_images(
    catsdogs_dir: Path, tmp_path: Path
) -> None:
    cats = sorted((catsdogs_dir / "train" / "cats").glob("*.jpg"))
    dogs = sorted((catsdogs_dir / "train" / "dogs").glob("*.jpg"))
    link_images(cats[:12], tmp_path / "train" / "cats")
    link_images(dogs[:12], tmp_path / "train" / "dogs")
    link_images(cats[12:16] + cats[:2], tmp_path / "test" / "cats")  # 2 leaked training cats
    link_images(dogs[12:16], tmp_path / "test" / "dogs")
    ds = load_dataset("catsdogs", tmp_path, S)
    assert ds.layout == "Chollet train/test"
    assert sorted(ds.excluded_files) == sorted(f"test/cats/{p.name}" for p in cats[:2])
    assert ds.counts()["test"] == {"cat": 4, "dog": 4}
    assert any("left out" in w for w in ds.warnings)
    shas = _by_sha(ds)
    assert not shas["test"] & (shas["train"] | shas["val"])


def test_real_duplicate_across_chollet_train_and_validation(catsdogs_dir: Path) -> None:
    ds = load_dataset("catsdogs", catsdogs_dir, S)
    assert ["train/dogs/dog.980.jpg", "validation/dogs/dog.1273.jpg"] in ds.duplicates
    assert "validation/dogs/dog.1273.jpg" in ds.excluded_files


@pytest.mark.parametrize("val, test", [(0.6, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_impossible_fractions_are_errors(animals10_dir: Path, val: float, test: float) -> None:
    with pytest.raises(HpoError, match="fraction"):
        load_dataset("animals10", animals10_dir, S, val_fraction=val, test_fraction=test)
