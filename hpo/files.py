"""Files and folders that appear whole or not at all: the decode cache's entries, the demo
images, a split file, an export bundle. Each is written under a hidden temporary name next
to its final place and renamed into place when complete, so a reader (another worker, a
user, ``hpo predict``) never sees half of one, and a crash leaves only a hidden leftover.

One permission rule for all of them: the process's umask decides, as for any ``mkdir`` or
``open`` (``mkdtemp``'s private 0700 would hide a shared cache from the other users of a
machine, and a bundle from the server that serves it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def temporary_sibling(target: Path) -> Path:
    """A new empty hidden folder next to ``target`` (parents created), to build it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def publish(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` folder to ``target``; an existing ``target`` is
    replaced only once the new one is whole (moved aside first, then deleted)."""
    old = None
    if target.exists():
        old = temporary_sibling(target)
        target.rename(old / target.name)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_once(target: Path, build: Callable[[Path], None]) -> bool:
    """Create folder ``target`` with ``build(tmp)`` exactly once across threads and processes.

    Returns True when this call built it. ``target`` exists only when complete, because it
    appears by an atomic rename of the finished temporary folder.
    """
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.exists():
            return False
        # Holding the lock, any temporary folder for this target is left over from a crash.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = temporary_sibling(target)
        try:
            build(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so concurrent readers see old or new, never
    half."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    os.replace(tmp, path)
