"""Decode once: every image is decoded and resized once per (file list, image size).

A cache entry is a folder ``<cache_dir>/<key>/`` holding ``images.npy`` (N,S,S,3 uint8, read
memory-mapped), ``labels.npy``, ``index.json`` and ``bad_files.txt``. Entries appear with one
``os.replace`` of a finished temp folder, under a per-key file lock, so workers that start
together build it once and nobody ever reads a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpo.data.images import UnreadableImage, decode_image
from hpo.files import build_once

if TYPE_CHECKING:
    from hpo.data.layouts import Source

# Bump when decoding or the entry format changes, so old entries are never reused.
FORMAT_VERSION = 1
_COPY_CHUNK = 1024  # rows copied at a time when dropping unreadable images


@dataclass
class BadFile:
    """A candidate file that could not be decoded, and why (shown to users and in the report)."""

    path: str
    reason: str


@dataclass
class CacheEntry:
    """What one cache entry holds, opened for reading."""

    path: Path
    images: np.ndarray  # memory-mapped (N,S,S,3) uint8, readable images only
    labels: np.ndarray  # int64 (N,)
    files: list[str]  # relpath per image
    sha256: list[str]  # hash of each image file's bytes
    provided: list[str | None]  # split given by the dataset's folders, per image
    bad_files: list[BadFile]
    hit: bool  # True when this call decoded nothing


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``HPO_CACHE_DIR`` if set, else ``~/.cache/hpo``: decoded pixels are worth keeping."""
    return Path(environ.get("HPO_CACHE_DIR") or "~/.cache/hpo").expanduser()


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:  # vanished since listing: the build reports it as unreadable
        return -1, -1
    return st.st_size, st.st_mtime_ns


def cache_key(source: Source, image_size: int) -> str:
    """Entry name from relpaths, sizes and mtimes (cheap: no file is read), labels, splits."""
    digest = hashlib.sha256(
        json.dumps([FORMAT_VERSION, image_size, source.name, source.classes]).encode()
    )
    for rel, label, split in zip(source.files, source.labels, source.provided, strict=True):
        digest.update(json.dumps([rel, *_stat(source.root / rel), label, split]).encode() + b"\n")
    return f"{source.name}-{image_size}px-{digest.hexdigest()[:20]}"


def load_or_build(
    source: Source,
    image_size: int,
    cache_dir: Path,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> CacheEntry:
    """Open the cache entry for ``source`` at ``image_size``, decoding the images if needed."""
    path = cache_dir / cache_key(source, image_size)
    built = build_once(path, lambda tmp: _build(tmp, source, image_size, workers, progress))
    return _open(path, hit=not built)


def _build(tmp: Path, source: Source, image_size: int, workers: int | None, progress: bool) -> None:
    n = len(source.files)
    shape = (image_size, image_size, 3)
    decoded = np.lib.format.open_memmap(tmp / "decoded.npy", "w+", np.uint8, (n, *shape))

    def work(i: int) -> tuple[str | None, str | None]:
        """(sha256, None) when decoded into row i, else (sha256 or None, reason)."""
        try:
            data = (source.root / source.files[i]).read_bytes()
        except OSError as exc:
            return None, f"cannot read: {exc.strerror or exc}"
        sha = hashlib.sha256(data).hexdigest()
        try:
            decoded[i] = decode_image(data, image_size)
        except UnreadableImage as exc:
            return sha, exc.reason
        return sha, None

    # Threads suffice: hashlib and Pillow's decoders and resize release the GIL.
    with (
        ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool,
        _progress_bar(progress, n, f"decoding {source.name} at {image_size}px") as advance,
    ):
        results = []
        for result in pool.map(work, range(n)):
            results.append(result)
            advance()
    good = [i for i, (_, reason) in enumerate(results) if reason is None]
    decoded.flush()
    if len(good) == n:
        del decoded
        os.replace(tmp / "decoded.npy", tmp / "images.npy")
    else:
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (len(good), *shape))
        for start in range(0, len(good), _COPY_CHUNK):
            images[start : start + _COPY_CHUNK] = decoded[good[start : start + _COPY_CHUNK]]
        images.flush()
        del images, decoded
        (tmp / "decoded.npy").unlink()

    np.save(tmp / "labels.npy", np.asarray([source.labels[i] for i in good], dtype=np.int64))
    bad = [
        BadFile(source.files[i], reason)
        for i, (_, reason) in enumerate(results)
        if reason is not None
    ]
    index = {
        "format": FORMAT_VERSION,
        "name": source.name,
        "layout": source.layout,
        "root": str(source.root),
        "image_size": image_size,
        "classes": source.classes,
        "files": [
            {
                "path": source.files[i],
                "label": source.labels[i],
                "sha256": results[i][0],
                "split": source.provided[i],
            }
            for i in good
        ],
        "bad_files": [{"path": b.path, "reason": b.reason} for b in bad],
        "ignored": source.ignored,
    }
    (tmp / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    report = "".join(f"{source.root / b.path}\t{b.reason}\n" for b in bad)
    (tmp / "bad_files.txt").write_text(report, encoding="utf-8", errors="surrogateescape")


def _open(path: Path, hit: bool) -> CacheEntry:
    index = json.loads((path / "index.json").read_text(encoding="utf-8"))
    files = index["files"]
    return CacheEntry(
        path=path,
        images=np.load(path / "images.npy", mmap_mode="r"),
        labels=np.load(path / "labels.npy"),
        files=[f["path"] for f in files],
        sha256=[f["sha256"] for f in files],
        provided=[f["split"] for f in files],
        bad_files=[BadFile(**b) for b in index["bad_files"]],
        hit=hit,
    )


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback: a rich bar on stderr when enabled, else a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
