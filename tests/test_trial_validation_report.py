"""A trial's validation macro-F1 and confusion matrix, counted during fit (hpo/validation_pass.py),
describe the model after its last epoch on every validation image."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo.metrics import matrix_report
from hpo.study import run_study

pytestmark = pytest.mark.slow


def test_trial_records_the_last_epochs_validation_report(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 't.db'}"
    study = run_study(
        "demo",
        n_trials=1,
        storage=storage,
        epochs=2,
        image_size=16,
        strategy="random",
        artifacts=tmp_path / "artifacts",
    )
    [trial] = study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    matrix = trial.user_attrs["val_confusion_matrix"]
    assert len(matrix) == 4 and sum(map(sum, matrix)) == 120  # demo: 4 classes, 120 val images
    report = matrix_report(matrix, ["a", "b", "c", "d"])
    assert report["accuracy"] == pytest.approx(trial.user_attrs["val_acc_last"], abs=1e-6)
    assert trial.user_attrs["val_macro_f1"] == pytest.approx(report["macro_f1"])
