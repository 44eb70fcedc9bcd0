"""One tiny study, trained once in this process, read by every module that works on a study:
the Optuna loop, status, export, predict, explain, MLflow sync and the KerasTuner loop.

In the spirit of flax's examples/mnist smoke test: the real code paths on the built-in demo
images at 16 px, one epoch, two trials, so the fast tier (`pytest -m "not slow"`) touches
every module in seconds. The end-to-end versions through a fresh `hpo` process, at sizes a
user trains at, are the slow tests (test_study, test_export, test_mlflow, test_keras_tuner).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.study import run_study
from tests.conftest import invoke_cli, trial_artifacts

TINY = {"epochs": 1, "image_size": 16}
CLASSES = ["circles", "squares", "stripes", "triangles"]


@dataclass
class Tiny:
    cwd: Path
    study: optuna.Study
    bundle: Path
    export: str  # the export command's stderr

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.cwd / 't.db'}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """Two random-search trials of the demo in this process, then `hpo export-best`."""
    cwd = tmp_path_factory.mktemp("tiny")
    storage = f"sqlite:///{cwd / 't.db'}"
    study = run_study(
        "demo", n_trials=2, storage=storage, strategy="random", artifacts=cwd / "art", **TINY
    )
    proc = invoke_cli("export-best", "demo", "--storage", storage, "--out", "bundle", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cwd / "bundle")
    return Tiny(cwd, study, cwd / "bundle", proc.stderr)


def test_the_loop_records_each_trial_and_the_study(tiny: Tiny) -> None:
    trials = tiny.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # random search never prunes
    for trial in trials:
        curve = trial.user_attrs["history"]["val_accuracy"]
        assert trial.user_attrs["epochs_trained"] == len(curve) == 1
        assert trial.value == trial.user_attrs["val_acc_best"] == max(curve)
        assert list(trial.intermediate_values.values()) == pytest.approx(curve)
        stored = trial_artifacts(trial)
        assert set(stored) == {
            f"learning-curve-trial-{trial.number}.png",
            f"val-probs-trial-{trial.number}.npy",
        }
        meta = stored[f"learning-curve-trial-{trial.number}.png"]
        assert (tiny.cwd / "art" / meta["artifact_id"]).is_file()
    attrs = tiny.study.user_attrs
    assert (attrs["hpo:dataset"], attrs["hpo:image_size"], attrs["hpo:classes"]) == (
        "demo",
        16,
        CLASSES,
    )
    assert attrs["hpo:strategy"] == "random"


def test_status_counts_what_optuna_has(tiny: Tiny) -> None:
    listed = json.loads(invoke_cli("status", "--storage", tiny.storage, "--json").stdout)
    [entry] = listed["studies"]
    best = tiny.study.best_trial
    assert (entry["name"], entry["complete"], entry["pruned"], entry["failed"]) == ("demo", 2, 0, 0)
    assert (entry["best_value"], entry["best_trial"], entry["epochs"]) == (
        best.value,
        best.number,
        2,
    )


def test_export_writes_a_bundle_that_predict_and_explain_read(tiny: Tiny) -> None:
    metrics = json.loads((tiny.bundle / "metrics.json").read_text())
    split = json.loads((tiny.bundle / "split.json").read_text())
    assert metrics["trial"] == tiny.study.best_trial.number
    assert metrics["test_images"] == len(split["test"]) == 120  # 20% of the 600 demo images
    assert sum(map(sum, metrics["test_confusion_matrix"])) == 120
    assert json.loads((tiny.bundle / "labels.json").read_text()) == dict(
        (str(i), c) for i, c in enumerate(CLASSES)
    )
    assert "test accuracy" in tiny.export

    image = Path(split["root"]) / split["test"][0]
    [result] = json.loads(
        invoke_cli("predict", str(tiny.bundle), str(image), "--top", "2", "--json").stdout
    )
    assert len(result["top"]) == 2
    assert {t["label"] for t in result["top"]} <= set(CLASSES)
    assert result["top"][0]["probability"] >= result["top"][1]["probability"]

    out = tiny.cwd / "explained"
    proc = invoke_cli("explain", str(tiny.bundle), str(image), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    blocks = tiny.study.best_trial.params["conv_blocks"]
    rows = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  block")]
    assert rows == [f"block{b}_act" for b in range(1, blocks + 1)]
    assert (out / f"{image.stem}-feature-maps.png").stat().st_size > 0


def test_mlflow_sync_logs_every_trial_once(tiny: Tiny) -> None:
    uri = f"sqlite:///{tiny.cwd / 'mlflow.db'}"
    args = ["mlflow-sync", "demo", "--storage", tiny.storage, "--mlflow", uri]
    first = invoke_cli(*args, "--artifacts", "art", cwd=tiny.cwd)
    assert first.returncode == 0, first.stderr
    assert "logged 2 trials now (0, 1); 0 were already in MLflow" in first.stderr
    again = invoke_cli(*args, cwd=tiny.cwd)
    assert "logged 0 trials now; 2 were already in MLflow" in again.stderr


def test_keras_tuner_engine_mirrors_its_trial(tmp_path: Path) -> None:
    study = run_study(
        "demo",
        n_trials=1,
        storage=f"sqlite:///{tmp_path / 'kt.db'}",
        engine="keras-tuner",
        tuner="random",
        artifacts=tmp_path / "art",
        seed=3,
        **TINY,
    )
    [trial] = study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["tuner"] == "random"
    assert trial.value == max(trial.user_attrs["history"]["val_accuracy"])
    assert study.user_attrs["hpo:engine"] == "keras-tuner"
