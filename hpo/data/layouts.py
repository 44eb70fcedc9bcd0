"""The one place that knows how each dataset is laid out on disk.

A layout turns a user's folder into a ``Source``: which files are candidate images, their
class, and the split the dataset itself provides (if any). Nothing here decodes images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpo.errors import HpoError

SPLITS = ("train", "val", "test")

# Kaggle Animals-10 folder names (Italian) -> English label, in the dataset's own order.
ANIMALS10 = {
    "cane": "dog",
    "cavallo": "horse",
    "elefante": "elephant",
    "farfalla": "butterfly",
    "gallina": "chicken",
    "gatto": "cat",
    "mucca": "cow",
    "pecora": "sheep",
    "ragno": "spider",
    "scoiattolo": "squirrel",
}
_ANIMALS10_ALIASES = {**ANIMALS10, **{english: english for english in ANIMALS10.values()}}
_PETS = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

# Files the OS or a file manager drops into folders; they are counted, never decoded.
_OS_JUNK = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"}
_JUNK_DIRS = {"__macosx"}


# (folder, class name, the split the dataset's folders put it in, if any)
ClassDir = tuple[Path, str, str | None]


@dataclass
class Source:
    """The candidate files of a dataset, sorted by relpath so that listing order never matters."""

    name: str
    layout: str
    root: Path
    classes: list[str]
    files: list[str]  # relpaths (POSIX) of candidate images
    labels: list[int]  # index into classes, per file
    provided: list[str | None]  # split the dataset's folders put the file in, if any
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    """A recognised layout, before any file is listed: class folders and their splits."""

    layout: str
    root: Path
    class_dirs: list[ClassDir]
    class_order: list[str] | None = None  # None: sorted class names
    warnings: list[str] = field(default_factory=list)


def is_junk(name: str) -> bool:
    """Hidden files and what operating systems leave in folders (Thumbs.db, __MACOSX, ...):
    never an image of the dataset, nor one ``hpo predict`` is asked about."""
    return name.startswith(".") or name.lower() in _OS_JUNK or name.lower() in _JUNK_DIRS


def _subdirs(path: Path) -> dict[str, Path]:
    """Visible sub-folders by name, sorted, so detection never depends on listing order."""
    return {p.name: p for p in sorted(path.iterdir()) if p.is_dir() and not is_junk(p.name)}


def _scan(class_dir: Path, root: Path) -> tuple[list[str], list[str]]:
    """Every regular file below a class folder: (candidates, ignored OS junk) as relpaths."""
    files: list[str] = []
    ignored: list[str] = []
    # followlinks=False: symlinked class folders and files work, symlink loops cannot.
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames.sort()
        here = Path(dirpath)
        in_junk_dir = any(is_junk(part) for part in here.relative_to(class_dir).parts)
        for name in sorted(filenames):
            path = here / name
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            (ignored if in_junk_dir or is_junk(name) else files).append(rel)
    return files, ignored


def _nested(path: Path, name: str) -> Path | None:
    """``path/name/name`` when a Kaggle zip doubled the folder, else ``path/name``, else None."""
    for candidate in (path / name / name, path / name):
        if candidate.is_dir():
            return candidate
    return None


def _pets(path: Path | None, split: str | None) -> list[ClassDir]:
    """Cat and dog folders (any of cat/cats/Cat/dogs/...) in ``path``; [] unless both exist."""
    if path is None:
        return []
    found = [(p, _PETS[n.lower()], split) for n, p in _subdirs(path).items() if n.lower() in _PETS]
    return found if {cls for _, cls, _ in found} == {"cat", "dog"} else []


def _find_catsdogs(root: Path) -> _Plan | None:
    """Chollet's train/validation/test, Kaggle's training_set/test_set, or Microsoft PetImages."""
    order = ["cat", "dog"]
    if _pets(_nested(root, "train"), "train"):
        dirs = [
            d
            for name in ("train", "validation", "val", "test")
            for d in _pets(_nested(root, name), _SPLIT_ALIASES[name])
        ]
        present = sorted({split for _, _, split in dirs if split}, key=SPLITS.index)
        return _Plan(f"Chollet {'/'.join(present)}", root, dirs, order)
    train = _pets(_nested(root, "training_set"), "train")
    if train:
        return _Plan(
            "Kaggle training_set/test_set",
            root,
            train + _pets(_nested(root, "test_set"), "test"),
            order,
        )
    for candidate in (_nested(root, "PetImages"), root):
        dirs = _pets(candidate, None)
        if dirs:
            return _Plan("Microsoft PetImages (no split)", dirs[0][0].parent, dirs, order)
    return None


def _find_animals10(root: Path) -> _Plan | None:
    """Kaggle ``raw-img/<Italian class>/`` (English folder names too); missing classes warn."""
    root = root / "raw-img" if (root / "raw-img").is_dir() else root
    dirs: list[ClassDir] = []
    warnings = []
    for name, path in _subdirs(root).items():
        english = _ANIMALS10_ALIASES.get(name.lower())
        if english is None:
            warnings.append(f"ignored folder {name!r}: not an Animals-10 class")
        else:
            dirs.append((path, english, None))
    found = {cls for _, cls, _ in dirs}
    if len(found) < 2:
        return None
    order = [english for english in ANIMALS10.values() if english in found]
    missing = [english for english in ANIMALS10.values() if english not in found]
    if missing:
        warnings.append(
            f"{len(missing)} of 10 Animals-10 classes missing ({', '.join(missing)}); "
            f"using the {len(order)} present"
        )
    italian = any(p.name.lower() in ANIMALS10 for p, _, _ in dirs)
    layout = "Kaggle raw-img/<Italian class>" if italian else "Animals-10, English class folders"
    return _Plan(layout, root, dirs, order, warnings)


def _find_folder(root: Path) -> _Plan | None:
    """Class sub-folders, optionally inside train/, val(idation)/ and test/ folders."""
    subdirs = _subdirs(root)
    split_dirs = {name: path for name, path in subdirs.items() if name.lower() in _SPLIT_ALIASES}
    if not split_dirs:
        flat: list[ClassDir] = [(path, name, None) for name, path in subdirs.items()]
        return _Plan("class folders", root, flat) if len(flat) >= 2 else None
    dirs: list[ClassDir] = [
        (path, cls, _SPLIT_ALIASES[name.lower()])
        for name, split_dir in split_dirs.items()
        for cls, path in _subdirs(split_dir).items()
    ]
    if not any(split == "train" for _, _, split in dirs):
        return None
    warnings = [
        f"ignored folder {name!r}: not train/val/test" for name in subdirs if name not in split_dirs
    ]
    present = sorted({split for _, _, split in dirs if split}, key=SPLITS.index)
    return _Plan(f"class folders in {'/'.join(present)}", root, dirs, warnings=warnings)


def _find_demo(root: Path) -> _Plan | None:
    plan = _find_folder(root)
    return plan and dataclasses.replace(plan, layout="generated shapes (demo)")


@dataclass(frozen=True)
class _Kind:
    find: Callable[[Path], _Plan | None]
    expected: str


# Registry: dataset name -> how to find its layout and what to tell a user when it is absent.
DATASETS: dict[str, _Kind] = {
    "animals10": _Kind(
        _find_animals10,
        "Kaggle Animals-10 raw-img/<class>/ with at least 2 of "
        "the class folders cane, cavallo, ... (or dog, horse, ...)",
    ),
    "catsdogs": _Kind(
        _find_catsdogs,
        "train|validation|test/{cats,dogs} (Chollet), "
        "training_set/training_set/{cats,dogs} + test_set/test_set/{cats,dogs} "
        "(Kaggle) or PetImages/{Cat,Dog} (Microsoft)",
    ),
    "demo": _Kind(_find_demo, "generated demo images"),
    "folder": _Kind(
        _find_folder,
        "at least 2 class sub-folders (<dir>/<class>/<image>), "
        "optionally inside train/, val/ and test/",
    ),
}


def check_name(name: str) -> None:
    """Reject an unknown dataset name with the list of known ones."""
    if name not in DATASETS:
        raise HpoError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def _existing_dir(path: str | Path | None, name: str | None) -> Path:
    """The resolved folder, or an error naming it and (for a known dataset) its layout."""
    if path is None:
        raise HpoError(f"dataset {name!r} needs a data folder (--data-dir or HPO_DATA_DIR)")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        what = "is not a folder" if resolved.exists() else "does not exist"
        expected = f"; expected {DATASETS[name].expected}" if name else ""
        raise HpoError(f"data folder {resolved} {what}{expected}")
    return resolved


def detect(path: str | Path) -> tuple[str, str]:
    """Guess (dataset name, layout description) of a folder, for ``hpo data inspect``.

    Animals-10 is only claimed when Italian folder names or raw-img/ show it; English animal
    folders are simply a ``folder`` dataset (with the same class names).
    """
    root = _existing_dir(path, None)
    plan = _find_catsdogs(root)
    if plan:
        return "catsdogs", plan.layout
    plan = _find_animals10(root)
    if plan and plan.layout.startswith("Kaggle"):
        return "animals10", plan.layout
    plan = _find_folder(root)
    if plan:
        return "folder", plan.layout
    known = "; ".join(
        f"{name}: {kind.expected}" for name, kind in DATASETS.items() if name != "demo"
    )
    raise HpoError(f"{root}: no known dataset layout ({known})")


def resolve(name: str, data_dir: str | Path | None) -> Source:
    """List a dataset's candidate files, labels and provided splits (no decoding; the demo
    images must exist: :func:`hpo.data.demo.ensure_demo_images`)."""
    check_name(name)
    root = _existing_dir(data_dir, name)
    plan = DATASETS[name].find(root)
    if plan is None:
        raise HpoError(f"{root}: no {name} layout found; expected {DATASETS[name].expected}")
    return _collect(name, plan)


def _collect(name: str, plan: _Plan) -> Source:
    entries: list[tuple[str, str, str | None]] = []
    ignored: list[str] = []
    for class_dir, cls, split in plan.class_dirs:
        files, junk = _scan(class_dir, plan.root)
        entries += [(rel, cls, split) for rel in files]
        ignored += junk
    order = plan.class_order or sorted({cls for _, cls, _ in plan.class_dirs})
    present = {cls for _, cls, _ in entries}
    classes = [cls for cls in order if cls in present]
    warnings = list(plan.warnings)
    if len(classes) < len(order):
        empty = ", ".join(cls for cls in order if cls not in present)
        warnings.append(f"class folders without files were left out: {empty}")
    if len(classes) < 2:
        raise HpoError(
            f"{plan.root}: need at least 2 classes with image files, found "
            f"{len(classes)}; expected {DATASETS[name].expected}"
        )
    entries.sort()
    index = {cls: i for i, cls in enumerate(classes)}
    return Source(
        name=name,
        layout=plan.layout,
        root=plan.root,
        classes=classes,
        files=[rel for rel, _, _ in entries],
        labels=[index[c] for _, c, _ in entries],
        provided=[split for _, _, split in entries],
        ignored=sorted(ignored),
        warnings=warnings,
    )
