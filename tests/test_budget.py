"""`--budget-epochs`: a study stops starting trials once it has trained that many epochs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo.study.slots import epochs_used
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_budget_stops_new_trials_and_a_rerun_adds_none(tmp_path: Path) -> None:
    args = ["run", "demo", "--budget-epochs", "5", "--epochs", "2", "--image-size", "16",
            "--storage", "sqlite:///b.db"]
    proc = run_cli(*args, cwd=tmp_path)
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'b.db'}")
    trials = study.get_trials()
    used = epochs_used(study)
    assert used == sum(t.user_attrs["epochs_trained"] for t in trials)
    # the last trial started below the budget and was allowed to finish
    assert used - trials[-1].user_attrs["epochs_trained"] < 5 <= used
    assert f"epoch budget of 5 reached; {used} epochs trained in study 'demo'" in proc.stderr

    again = run_cli(*args, cwd=tmp_path)
    assert len(study.get_trials()) == len(trials)
    assert "epoch budget of 5 reached" in again.stderr

    status = json.loads(run_cli("status", "--storage", "sqlite:///b.db", "--json", cwd=tmp_path).stdout)
    assert status["studies"][0]["epochs"] == used
    assert f"epochs trained: {used}" in run_cli("status", "demo", "--storage", "sqlite:///b.db",
                                                cwd=tmp_path).stdout
