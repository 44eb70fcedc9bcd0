"""Each layout people download is recognised, with English class names and the right splits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpo.data import DATASETS, Dataset, detect, inspect_dataset, load_dataset
from hpo.errors import HpoError
from tests.conftest import REPO
from tests.data_samples import link_images

S = 32
ENGLISH = [
    "dog",
    "horse",
    "elephant",
    "butterfly",
    "chicken",
    "cat",
    "cow",
    "sheep",
    "spider",
    "squirrel",
]


def _pets(catsdogs_dir: Path, split: str, animal: str, n: int) -> list[Path]:
    return sorted((catsdogs_dir / split / f"{animal}s").glob("*.jpg"))[:n]


def _total(ds: Dataset) -> int:
    return sum(len(idx) for idx in ds.splits.values())


def test_registry_names() -> None:
    assert set(DATASETS) == {"animals10", "catsdogs", "demo", "folder"}


def test_data_layer_imports_without_any_deep_learning_framework() -> None:
    # GPU workers may run JAX or PyTorch with no TensorFlow installed, and `hpo data` should
    # not pay for a framework it does not use. (What the import costs is no unit test's
    # business: timing asserts fail on a loaded machine.)
    code = (
        "import sys; import hpo.data; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'torch', 'jax', 'optuna', 'rich'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("up", [0, 1])
def test_animals10_from_raw_img_or_its_parent(animals10_dir: Path, up: int) -> None:
    path = animals10_dir.parents[up - 1] if up else animals10_dir
    assert detect(path) == ("animals10", "Kaggle raw-img/<Italian class>")
    ds = load_dataset("animals10", path, S)
    assert ds.classes == ENGLISH
    assert ds.root == animals10_dir
    assert len(ds.images) == _total(ds) == 320 and not ds.bad_files and not ds.warnings
    assert all(n == 32 for n in (sum(ds.counts()[s][c] for s in ds.splits) for c in ds.classes))


def test_animals10_missing_classes_warn_and_english_names_work(
    animals10_dir: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw-img"
    link_images(sorted((animals10_dir / "cane").iterdir())[:6], raw / "cane")
    link_images(sorted((animals10_dir / "gatto").iterdir())[:6], raw / "cat")  # English
    link_images(sorted((animals10_dir / "ragno").iterdir())[:6], raw / "ragno")
    ds = load_dataset("animals10", tmp_path, S)
    assert ds.classes == ["dog", "cat", "spider"]
    assert len(ds.warnings) == 1 and "7 of 10" in ds.warnings[0] and "horse" in ds.warnings[0]


def test_animals10_with_one_class_is_an_error(animals10_dir: Path, tmp_path: Path) -> None:
    link_images(sorted((animals10_dir / "cane").iterdir())[:3], tmp_path / "raw-img" / "cane")
    with pytest.raises(HpoError, match="Animals-10"):
        load_dataset("animals10", tmp_path, S)


def test_catsdogs_chollet_shared_split(catsdogs_dir: Path) -> None:
    assert detect(catsdogs_dir) == ("catsdogs", "Chollet train/val/test")
    ds = load_dataset("catsdogs", catsdogs_dir, S)
    assert ds.classes == ["cat", "dog"]
    on_disk = {
        split: sum(1 for _ in (catsdogs_dir / folder).rglob("*.jpg"))
        for split, folder in [("train", "train"), ("val", "validation"), ("test", "test")]
    }
    assert on_disk == {"train": 1997, "val": 995, "test": 1000}
    lost = {s: 0 for s in on_disk}
    for name in [b.path for b in ds.bad_files] + ds.excluded_files:
        lost[{"train": "train", "validation": "val", "test": "test"}[name.split("/")[0]]] += 1
    counts = {split: sum(c.values()) for split, c in ds.counts().items()}
    assert counts == {s: on_disk[s] - lost[s] for s in on_disk}
    assert not ds.bad_files  # the BMP, GIF, CMYK and grayscale files all decode
    assert ds.images.shape == (3992 - len(ds.bad_files), S, S, 3)


@pytest.mark.parametrize("doubled", [True, False])
def test_catsdogs_kaggle_training_set_test_set(
    catsdogs_dir: Path, tmp_path: Path, doubled: bool
) -> None:
    for split, kaggle, n in [("train", "training_set", 20), ("test", "test_set", 6)]:
        base = tmp_path / kaggle / kaggle if doubled else tmp_path / kaggle
        for animal in ("cat", "dog"):
            link_images(_pets(catsdogs_dir, split, animal, n), base / f"{animal}s")
    assert detect(tmp_path) == ("catsdogs", "Kaggle training_set/test_set")
    ds = load_dataset("catsdogs", tmp_path, S)
    counts = ds.counts()
    assert counts["test"] == {"cat": 6, "dog": 6}  # provided test kept
    assert counts["val"] == {"cat": 3, "dog": 3}  # 15% carved from train
    assert counts["train"] == {"cat": 17, "dog": 17}
    assert all(ds.files[i].startswith("test_set/") for i in ds.splits["test"])


def test_catsdogs_petimages_itself_or_parent(catsdogs_dir: Path, tmp_path: Path) -> None:
    pets = tmp_path / "kagglecatsanddogs" / "PetImages"
    link_images(_pets(catsdogs_dir, "train", "cat", 10), pets / "Cat")
    link_images(_pets(catsdogs_dir, "train", "dog", 10), pets / "Dog")
    (pets / "Cat" / "666.jpg").write_bytes(b"")  # as in Microsoft's download
    (pets / "Dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    for path in (pets, pets.parent):
        assert detect(path) == ("catsdogs", "Microsoft PetImages (no split)")
        ds = load_dataset("catsdogs", path, S)
        assert ds.root == pets and ds.classes == ["cat", "dog"]
        assert [b.path for b in ds.bad_files] == ["Cat/666.jpg"]
        assert ds.ignored_files == ["Dog/Thumbs.db"]
        assert _total(ds) == 20 and all(len(idx) > 0 for idx in ds.splits.values())


def test_folder_with_and_without_split_folders(catsdogs_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    link_images(_pets(catsdogs_dir, "train", "cat", 10), plain / "kitten")
    link_images(_pets(catsdogs_dir, "train", "dog", 10), plain / "puppy")
    assert detect(plain) == ("folder", "class folders")
    ds = inspect_dataset(plain, image_size=S)
    assert (ds.name, ds.classes, _total(ds)) == ("folder", ["kitten", "puppy"], 20)

    split = tmp_path / "split"
    for animal, cls in [("cat", "kitten"), ("dog", "puppy")]:
        files = _pets(catsdogs_dir, "test", animal, 17)
        for sub, part in [("train", files[:10]), ("val", files[10:13]), ("test", files[13:])]:
            link_images(part, split / sub / cls)
    assert detect(split) == ("folder", "class folders in train/val/test")
    counts = load_dataset("folder", split, S).counts()
    assert [counts[s]["kitten"] for s in ("train", "val", "test")] == [10, 3, 4]


def test_demo_is_generated_once_and_learnable_sized() -> None:
    ds = load_dataset("demo", image_size=S)
    assert ds.classes == ["circles", "squares", "stripes", "triangles"]
    assert len(ds.images) == 600 and not ds.bad_files
    again = load_dataset("demo", "/ignored/for/demo", image_size=S)
    assert again.cache_hit and again.fingerprint == ds.fingerprint


@pytest.mark.parametrize(
    "name, data_dir, match",
    [
        ("catsdogs", "/no/such/folder", "/no/such/folder does not exist"),
        ("catsdogs", None, "needs a data folder"),
        ("imagenet", "/tmp", "known datasets: animals10, catsdogs, demo, folder"),
    ],
)
def test_bad_names_and_paths_are_one_line_errors(
    name: str, data_dir: str | None, match: str
) -> None:
    with pytest.raises(HpoError, match=match):
        load_dataset(name, data_dir, S)


def test_unrecognised_layout_names_path_and_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "just-one-folder").mkdir()
    with pytest.raises(HpoError, match=f"{tmp_path}.*Chollet"):
        load_dataset("catsdogs", tmp_path, S)
    with pytest.raises(HpoError, match=f"{tmp_path}: no known dataset layout"):
        detect(tmp_path)
