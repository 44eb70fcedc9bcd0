"""Compile once per shape: JAX's persistent compilation cache shared by processes, results
that do not depend on it, fewer step shapes, and the timeline made from a study's storage."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest

from bench.bench_compile_cache import run_case
from hpo.compile_cache import (
    JAX_DIR_ENV,
    JAX_ENABLE_ENV,
    JAX_MAX_BYTES_ENV,
    JAX_MIN_SECONDS_ENV,
    SETTING_ENV,
    enable_compilation_cache,
)
from hpo.data import Split
from hpo.feed import Batches, DeviceBatches
from hpo.timing import EpochTimes
from tests.conftest import REPO, cli_env

TINY = argparse.Namespace(images=90, image_size=16, batch_size=16, epochs=3)
STUDY = ("run", "demo", "--trials", "3", "--epochs", "2", "--image-size", "16")


def test_the_cli_environment_points_jax_beside_the_decode_cache(tmp_path: Path) -> None:
    env = {"HPO_CACHE_DIR": str(tmp_path)}
    assert enable_compilation_cache(env) == tmp_path / "xla"
    assert env[JAX_DIR_ENV] == str(tmp_path / "xla") and env[JAX_MIN_SECONDS_ENV] == "0"
    assert int(env[JAX_MAX_BYTES_ENV]) > 0  # bounded: evicted and written under a lock
    mine = {"HPO_CACHE_DIR": str(tmp_path), JAX_DIR_ENV: "/elsewhere"}
    assert enable_compilation_cache(mine) == Path("/elsewhere")  # the user's folder wins
    moved = {SETTING_ENV: str(tmp_path / "x")}
    assert enable_compilation_cache(moved) == tmp_path / "x" and moved[JAX_DIR_ENV].endswith("x")
    off = {SETTING_ENV: "off", JAX_DIR_ENV: "/elsewhere"}
    assert enable_compilation_cache(off) is None and off[JAX_ENABLE_ENV] == "false"


def test_compile_seconds_are_the_first_epochs_excess() -> None:
    compiling, training, validating = EpochTimes([5.0, 1.0, 1.2, 0.9], [2.0, 0.2, 0.2, 0.2]).split()
    assert compiling == pytest.approx(4.0) and validating == pytest.approx(0.8)
    assert compiling + training + validating == pytest.approx(8.1)  # all of the epochs
    assert EpochTimes([3.0], [0.5]).split() == (None, 2.5, 0.5)  # nothing to compare with


@pytest.mark.parametrize("kind", [Batches, DeviceBatches])
def test_full_batches_top_up_the_last_batch_with_the_epochs_first_rows(kind: type) -> None:
    images = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None, None], (10, 2, 2, 3))
    split = Split(images, np.arange(10) % 2, np.arange(10))  # pixel value = row number
    batches = kind(split, 4, binary=False, shuffle=True, seed=3, full_batches=True)
    partial = Batches(split, 4, binary=False, shuffle=True, seed=3)
    for _ in range(2):  # two epochs, each its own shuffle
        rows = [np.asarray(batches[i][0])[:, 0, 0, 0].tolist() for i in range(len(batches))]
        plain = [np.asarray(partial[i][0])[:, 0, 0, 0].tolist() for i in range(len(partial))]
        assert len(batches) == len(partial) == 3 and [len(r) for r in rows] == [4, 4, 4]
        assert rows[:2] == plain[:2]  # every batch but the last is the same
        extra = list((Counter(rows[2]) - Counter(plain[2])).elements())
        assert len(extra) == 2 and set(extra) <= set(plain[0])  # the epoch's first rows again
        batches.on_epoch_end()
        partial.on_epoch_end()


def _env(**extra: str) -> dict[str, str]:
    """A JAX subprocess's environment with no compilation cache setting but ``extra``."""
    env = cli_env(KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    for key in (JAX_DIR_ENV, JAX_ENABLE_ENV, SETTING_ENV):
        if key not in extra:
            env.pop(key, None)
    return env


@pytest.mark.slow
def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    """Two fresh processes train the same configuration on one cache folder: the first
    writes its compiled steps, the second finds every one (no new entry) and compiles in
    less time; both learn exactly the same."""
    folder = tmp_path / "xla"
    first = run_case("cold", folder, TINY)
    assert first["cache_entries"] > 0
    second = run_case("warm", folder, TINY)
    assert second["cache_entries"] == first["cache_entries"]  # all hits, nothing recompiled
    assert second["compile_s"] < first["compile_s"]
    assert second["history"] == first["history"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 3-trial JAX study run three times from fresh processes, its trials in a
    forked trial process (hpo's default): cache off, a cold cache, the cache it filled."""
    tmp = tmp_path_factory.mktemp("compile-cache")
    folders = {"off": "off", "cold": str(tmp / "xla"), "warm": str(tmp / "xla")}
    dbs = {}
    for name, setting in folders.items():
        dbs[name] = tmp / f"{name}.db"
        proc = subprocess.run(
            [sys.executable, "-m", "hpo", *STUDY, "--storage", f"sqlite:///{dbs[name]}"],
            cwd=tmp,
            env=_env(**{SETTING_ENV: setting}),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        if name == "off":
            assert not (tmp / "xla").exists()
        if name == "cold":  # the trial process, not the parent, compiled: the env reached it
            assert any((tmp / "xla").glob("*-cache"))
    return dbs


def _outcomes(db: Path) -> list[tuple[int, str, dict[str, object], float | None]]:
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{db}")
    return [(t.number, t.state.name, t.params, t.value) for t in study.trials]


@pytest.mark.slow
def test_a_studys_results_do_not_depend_on_the_cache(studies: dict[str, Path]) -> None:
    off = _outcomes(studies["off"])
    assert len(off) == 3
    assert _outcomes(studies["cold"]) == off
    assert _outcomes(studies["warm"]) == off


@pytest.mark.slow
def test_the_timeline_of_a_study_says_where_its_time_went(
    studies: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "timeline.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "timeline.py"),
            f"sqlite:///{studies['warm']}",
            "demo",
            "--out",
            str(out),
            "--decode-seconds",
            "1.5",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    timeline = json.loads(out.read_text())
    assert proc.stdout.startswith("3 trials (") and timeline["summary"] in proc.stdout
    rows = timeline["trials"]
    assert [r["number"] for r in rows] == [0, 1, 2] and rows[0]["start"] == 0.0
    for row in rows:
        assert row["state"] in ("COMPLETE", "PRUNED") and row["epochs"] >= 1
        assert row["process"] and row["worker"] == row["process"]  # `hpo run`: no worker name
        assert row["end"] >= row["start"] and row["wall"] > 0 and row["other"] >= 0
        assert row["train"] > 0 and row["validate"] > 0
        assert (row["compile"] is None) == (row["epochs"] < 2)
    (worker,) = timeline["workers"].values()
    assert worker["trials"] == 3 and worker["idle"] >= 0
    totals = timeline["totals"]
    assert totals["decode"] == 1.5 and totals["trials"] == 3
    assert totals["epochs"] == sum(r["epochs"] for r in rows)
    assert set(totals) >= {"compile", "train", "validate", "other", "idle", "wall"}
