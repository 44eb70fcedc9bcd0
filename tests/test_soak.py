"""A worker's resident memory does not grow with the number of trials it has trained."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution

from bench.bench_soak import tree_rss_mib
from hpo.errors import HpoError
from hpo.progress import Reporter
from hpo.storage import open_storage
from hpo.study import run_study
from hpo.study.isolate import load_and_freeze_backend
from tests.conftest import cli_env

# TensorFlow keeps ~12-17 MiB per trial at 16 px in-process (hpo.study.isolate); a leak of
# hpo's own (the parent, which outlives every child) shows up as growth between children.
MAX_MIB_PER_TRIAL = 2.0
# Inside one child the backend's ~15 MiB per trial is expected; twice that is a new leak.
MAX_MIB_PER_TRIAL_IN_CHILD = 30.0


class RssLog(Reporter):
    """Writes the worker's RSS (parent and child together) at every trial's end to a file:
    the trials run in child processes, so a list in memory would stay in each child."""

    def __init__(self, path: Path, root: int) -> None:
        self.path, self.root = path, root

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        seconds: float,
        best: float | None,
        note: str = "",
        **_: Any,
    ) -> None:
        with self.path.open("a") as out:
            out.write(
                json.dumps({"trial": number, "rss": tree_rss_mib(self.root), "pid": os.getpid()})
                + "\n"
            )


# A fresh process, as `hpo run` is: the trials are forked from one that never loaded Keras.
SOAK = """
import os, sys
from pathlib import Path
from hpo.study import run_study
from tests.test_soak import RssLog
tmp = Path(sys.argv[1])
print(os.getpid(), flush=True)
run_study("demo", n_trials=30, storage=f"sqlite:///{tmp / 's.db'}", epochs=1, image_size=16,
          artifacts=tmp / "art", trials_per_process=10, reporter=RssLog(tmp / "rss.jsonl", os.getpid()))
"""


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 30 trials and 3 backend start-ups: ~4 min idle, 15+ on a busy box
def test_thirty_trials_leave_resident_memory_flat(tmp_path: Path) -> None:
    log = tmp_path / "rss.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", SOAK, str(tmp_path)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=2300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    worker = int(proc.stdout.split()[0])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["trial"] for r in rows] == list(range(30))
    assert len({r["pid"] for r in rows}) == 3 and worker not in {r["pid"] for r in rows}
    # The same moment of each child's life (its 10th trial), 20 trials apart.
    growth = (rows[29]["rss"] - rows[9]["rss"]) / 20
    assert growth <= MAX_MIB_PER_TRIAL, [round(r["rss"]) for r in rows]
    for start in (0, 10, 20):  # from each child's 2nd trial (backend loaded) to its 10th
        in_child = (rows[start + 9]["rss"] - rows[start + 1]["rss"]) / 8
        assert in_child <= MAX_MIB_PER_TRIAL_IN_CHILD, [round(r["rss"]) for r in rows]


def test_a_trial_child_freezes_the_studys_trials_with_the_backend(tmp_path: Path) -> None:
    """Optuna keeps every trial of the study in memory; frozen with the backend, they do not
    make each trial's full collection walk more objects as the study grows."""
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=rdb, study_name="s", direction="maximize")
    x = FloatDistribution(0.0, 1.0)
    study.add_trials(
        [optuna.trial.create_trial(value=0.5, params={"x": 0.5}, distributions={"x": x})] * 200
    )
    child = optuna.load_study(study_name="s", storage=rdb)  # nothing read yet, as in a child
    load_and_freeze_backend(child)
    cached = child.get_trials(deepcopy=False)  # what every ask reads
    assert len(cached) == 200
    walked = {id(obj) for obj in gc.get_objects()}
    assert not [t for t in cached if id(t) in walked]


def test_child_processes_are_refused_once_keras_is_loaded(tmp_path: Path) -> None:
    import keras  # noqa: F401 - what a notebook that already trained a model has done

    with pytest.raises(HpoError, match="has not imported Keras"):
        run_study(
            "demo",
            n_trials=1,
            storage=f"sqlite:///{tmp_path / 'k.db'}",
            epochs=1,
            image_size=16,
            trials_per_process=1,
        )
