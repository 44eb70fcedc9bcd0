"""`--budget-epochs`, `--strategy` and the score: one small real study on the demo images."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo.study.slots import epochs_used
from tests.conftest import invoke_cli

pytestmark = pytest.mark.slow


def test_budget_stops_new_trials_and_a_rerun_adds_none(tmp_path: Path) -> None:
    args = [
        "run",
        "demo",
        "--budget-epochs",
        "5",
        "--epochs",
        "2",
        "--image-size",
        "16",
        "--storage",
        "sqlite:///b.db",
    ]
    proc = invoke_cli(*args, cwd=tmp_path)
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'b.db'}")
    trials = study.get_trials()
    used = epochs_used(study)
    assert used == sum(t.user_attrs["epochs_trained"] for t in trials)
    # the last trial started below the budget and was allowed to finish
    assert used - trials[-1].user_attrs["epochs_trained"] < 5 <= used
    assert f"epoch budget of 5 reached; {used} epochs trained in study 'demo'" in proc.stderr

    # the score: best validation accuracy over the epochs, fed to the pruner as best-so-far
    for trial in trials:
        curve = trial.user_attrs["history"]["val_accuracy"]
        assert trial.user_attrs["val_acc_best"] == max(curve)
        assert trial.user_attrs["val_acc_last"] == curve[-1]
        assert curve[trial.user_attrs["best_epoch"] - 1] == max(curve)
        steps = [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]
        assert steps == [max(curve[: i + 1]) for i in range(len(steps))]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == max(curve)
    assert study.user_attrs["hpo:strategy"] == "hpo"

    again = invoke_cli(*args, cwd=tmp_path)
    assert len(study.get_trials()) == len(trials)
    assert "epoch budget of 5 reached" in again.stderr

    status = json.loads(
        invoke_cli("status", "--storage", "sqlite:///b.db", "--json", cwd=tmp_path).stdout
    )
    assert status["studies"][0]["epochs"] == used
    assert (
        f"epochs trained: {used}"
        in invoke_cli("status", "demo", "--storage", "sqlite:///b.db", cwd=tmp_path).stdout
    )

    other = invoke_cli(*args, "--strategy", "random", cwd=tmp_path, check=False)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1] == (
        "error: study 'demo' was made with strategy 'hpo', not 'random'; "
        "use --study NEW_NAME to start a separate study"
    )
