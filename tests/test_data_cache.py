"""The decode cache: decode once, survive bad files and concurrent workers, never half-written."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pytest

from hpo.data import load_dataset
from hpo.files import build_once
from tests.data_samples import link_images, noisy_jpeg, write_faulty_class

S = 32


def _entry_state(entry: Path) -> dict[str, int]:
    """mtime of every file the build wrote (split records are rewritten on each load)."""
    return {
        p.name: p.stat().st_mtime_ns for p in entry.iterdir() if not p.name.startswith("split-")
    }


def test_second_load_is_a_cache_hit_that_decodes_nothing(
    animals10_dir: Path, tmp_path: Path
) -> None:
    first = load_dataset("animals10", animals10_dir, S, cache_dir=tmp_path)
    assert not first.cache_hit
    assert first.cache_path.parent == tmp_path
    assert {"images.npy", "labels.npy", "index.json", "bad_files.txt", "split-0.json"} <= {
        p.name for p in first.cache_path.iterdir()
    }
    before = _entry_state(first.cache_path)

    second = load_dataset("animals10", animals10_dir, S, cache_dir=tmp_path)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert _entry_state(second.cache_path) == before  # nothing rewritten
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [first.cache_path.name]
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(second.images, first.images)
    assert (second.fingerprint, second.split_fingerprint) == (
        first.fingerprint,
        first.split_fingerprint,
    )


def test_cache_dir_defaults_to_hpo_cache_dir(
    animals10_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = load_dataset("animals10", animals10_dir, S)
    assert ds.cache_path.parent == tmp_path / "env-cache"


def test_changed_file_or_size_gets_a_new_entry(animals10_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for cls in ("cane", "gatto"):
        shutil.copytree(animals10_dir / cls, data / cls)
    first = load_dataset("folder", data, S, cache_dir=tmp_path / "cache")
    target = next((data / "cane").iterdir())
    target.write_bytes(noisy_jpeg(7))
    changed = load_dataset("folder", data, S, cache_dir=tmp_path / "cache")
    assert not changed.cache_hit and changed.cache_path != first.cache_path
    assert changed.fingerprint != first.fingerprint
    bigger = load_dataset("folder", data, 40, cache_dir=tmp_path / "cache")
    assert not bigger.cache_hit and bigger.images.shape[1:] == (40, 40, 3)


def test_faulty_files_are_decoded_or_reported_never_raised(
    catsdogs_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "my photos"
    expected = write_faulty_class(data / "odd")
    link_images(sorted((catsdogs_dir / "train" / "cats").glob("*.jpg"))[:8], data / "cat")
    ds = load_dataset("folder", data, S, cache_dir=tmp_path / "cache")

    assert ds.classes == ["cat", "odd"]
    assert {f.split("/", 1)[1] for f in ds.files if f.startswith("odd/")} == expected["good"]
    assert {b.path for b in ds.bad_files} == {f"odd/{n}" for n in expected["bad"]}
    assert all(b.reason for b in ds.bad_files)
    assert set(ds.ignored_files) == {f"odd/{n}" for n in expected["ignored"]}
    assert ds.images.shape == (8 + len(expected["good"]), S, S, 3)

    report = ds.report_path.read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("\t")[0] for line in report) == sorted(
        str(data / "odd" / n) for n in expected["bad"]
    )
    index = json.loads((ds.cache_path / "index.json").read_text(encoding="utf-8"))
    assert len(index["files"]) == len(ds.files) and len(index["bad_files"]) == 4
    sha = {f["path"]: f["sha256"] for f in index["files"]}
    unicode_name = "odd/ünïcode 猫 photo.jpeg"
    assert sha[unicode_name] == hashlib.sha256((data / unicode_name).read_bytes()).hexdigest()


def test_only_unreadable_files_is_an_error_pointing_at_the_report(tmp_path: Path) -> None:
    from hpo.errors import HpoError

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "x.jpg").write_bytes(b"")
    with pytest.raises(HpoError, match="bad_files.txt"):
        load_dataset("folder", tmp_path / "data", S, cache_dir=tmp_path / "cache")


def test_failed_build_leaves_nothing_and_next_call_builds(tmp_path: Path) -> None:
    target = tmp_path / "entry"

    def crash(tmp: Path) -> None:
        (tmp / "images.npy").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(target, crash)
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == ["entry.lock"]
    assert build_once(target, lambda tmp: (tmp / "done").write_text("ok"))
    assert not build_once(target, lambda tmp: (tmp / "done").write_text("again"))
    assert (target / "done").read_text() == "ok"


def _load_in_worker(data_dir: str, cache_dir: str, barrier: Barrier, results: Queue) -> None:
    barrier.wait()  # start together, so both race for the same new entry
    ds = load_dataset("animals10", data_dir, S, cache_dir=cache_dir, workers=1)
    results.put(
        (
            ds.cache_hit,
            str(ds.cache_path),
            hashlib.sha256(np.ascontiguousarray(ds.images)).hexdigest(),
            ds.labels.tolist(),
            ds.split_fingerprint,
        )
    )


def test_two_processes_build_a_new_entry_once(animals10_dir: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=_load_in_worker, args=(str(animals10_dir), str(tmp_path), barrier, results)
        )
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(hit for hit, *_ in got) == [False, True]  # exactly one decoded
    assert got[0][1:] == got[1][1:]  # same entry, identical arrays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over
    assert os.path.isdir(got[0][1])
