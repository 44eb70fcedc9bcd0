"""`hpo run` end to end: real images, real SQLite, the real CLI (`hpo.cli.main` in this process;
a subprocess where a signal or a fresh process is the point)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from hpo.errors import is_out_of_memory
from hpo.study import run_study
from tests.conftest import (
    REPO,
    interrupt_once_running,
    invoke_cli,
    small_space,
)


def trials_in(db: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{db}").get_trials()


@pytest.fixture(scope="module")
def animals_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's Animals-10 command, run once for the tests below, on the shipped space
    with widths and depths shrunk (``small_space``): its full widths cost ~10 s a trial."""
    cwd = tmp_path_factory.mktemp("animals")
    proc = invoke_cli(
        "run",
        "animals10",
        "--data-dir",
        str(REPO.parent / "shared/data/animals10-sample/raw-img"),
        "--trials",
        "3",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--space",
        str(small_space(cwd, "animals10")),
        "--storage",
        "sqlite:///t.db",
        cwd=cwd,
    )
    return cwd, proc


@pytest.mark.slow
def test_animals10_sample_finishes_three_trials(animals_run) -> None:
    cwd, proc = animals_run
    trials = trials_in(cwd / "t.db", "animals10")
    study = optuna.load_study(study_name="animals10", storage=f"sqlite:///{cwd / 't.db'}")
    assert len(trials) == 3
    for trial in trials:
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert trial.user_attrs["epochs_trained"] >= 1
        curve = trial.user_attrs["history"]["val_accuracy"]
        assert len(curve) == trial.user_attrs["epochs_trained"]
        # the score, also of a pruned trial (its last best-so-far step): the best epoch
        assert trial.value == max(curve)
        # a validation accuracy is a share of the study's validation images classified right
        val = study.user_attrs["hpo:split_sizes"]["val"]
        assert all(round(v * val) == pytest.approx(v * val, abs=1e-4) for v in curve)
        assert trial.intermediate_values  # what the pruner and the dashboard plot read
    attrs = study.user_attrs
    assert attrs["hpo:dataset"] == "animals10" and attrs["hpo:image_size"] == 32
    assert attrs["hpo:classes"][:2] == ["dog", "horse"] and len(attrs["hpo:classes"]) == 10
    assert sum(attrs["hpo:split_sizes"].values()) == 320
    assert "trial   0" in proc.stderr and "3 trials done" in proc.stderr


@pytest.mark.slow
def test_rerun_resumes_from_the_cache(animals_run) -> None:
    cwd, _ = animals_run
    proc = invoke_cli(
        "run",
        "animals10",
        "--data-dir",
        str(REPO.parent / "shared/data/animals10-sample"),
        "--trials",
        "1",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--storage",
        "sqlite:///t.db",
        cwd=cwd,
    )
    assert "cache hit, no image decoding" in proc.stderr
    assert "3 finished trials so far" in proc.stderr
    assert [t.number for t in trials_in(cwd / "t.db", "animals10")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused(animals_run) -> None:
    cwd, _ = animals_run
    proc = invoke_cli(
        "run",
        "animals10",
        "--data-dir",
        str(REPO.parent / "shared/data/animals10-sample"),
        "--trials",
        "1",
        "--epochs",
        "2",
        "--image-size",
        "48",
        "--storage",
        "sqlite:///t.db",
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: study 'animals10' was made with a different image size")
    assert "Traceback" not in proc.stderr


def test_pruning_stops_a_losing_trial(tmp_path: Path) -> None:
    """A finished trial at 1.0 from the first epoch on (added with create_trial) sets the
    median; a new trial, not perfect after its first epoch, is pruned right there."""
    space = tmp_path / "space.toml"
    space.write_text(
        (REPO / "search_spaces/demo.toml")
        .read_text()
        .replace("startup_trials = 3", "startup_trials = 1")
        .replace("warmup_epochs = 1", "warmup_epochs = 0")
    )
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="demo", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0}))
    run_study(
        "demo",
        n_trials=1,
        storage=storage,
        space=space,
        epochs=2,
        image_size=16,
        strategy="tpe-median",
        artifacts=tmp_path / "art",
    )
    baseline, trial = trials_in(tmp_path / "p.db", "demo")
    assert baseline.state == optuna.trial.TrialState.COMPLETE
    assert trial.state == optuna.trial.TrialState.PRUNED, trial.user_attrs
    assert trial.user_attrs["epochs_trained"] == 1  # stopped after its first epoch of 2
    # Optuna keeps the last reported step as a pruned trial's value: its best epoch
    assert trial.value == max(trial.user_attrs["history"]["val_accuracy"])


@pytest.mark.slow
def test_ctrl_c_records_the_trial_and_the_next_run_resumes(tmp_path: Path) -> None:
    args = ["run", "demo", "--trials", "1", "--epochs", "6", "--image-size", "16"]
    args += ["--storage", "sqlite:///c.db"]
    returncode, stderr = interrupt_once_running(args, tmp_path, tmp_path / "c.db")
    assert returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    [trial] = trials_in(tmp_path / "c.db", "demo")
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "Ctrl-C" in trial.user_attrs["fail_reason"]

    invoke_cli(*args, cwd=tmp_path)  # any process resumes: this one, with no backend import
    trials = trials_in(tmp_path / "c.db", "demo")
    assert [t.number for t in trials] == [0, 1]
    assert trials[1].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "mnist"], "error: unknown dataset 'mnist'"),
        (["run", "animals10", "--data-dir", "/nonexistent/raw-img"], "error: "),
        (["run", "demo", "--storage", "studies.db"], "error: storage must be a database URL"),
        (["run", "demo", "--space", "/nonexistent.toml"], "error: search space file not found"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = invoke_cli(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "text, oom",
    [
        (
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.",
            True,
        ),  # TF/XLA
        ("CUDA out of memory. Tried to allocate 2.00 GiB", True),  # PyTorch
        (
            "XlaRuntimeError: RESOURCE_EXHAUSTED: Failed to allocate request for 4.00GiB",
            True,
        ),  # JAX
        ("Incompatible shapes: [32,10] vs. [32,1]", False),
    ],
)
def test_out_of_memory_errors_are_recognised_on_every_backend(text: str, oom: bool) -> None:
    assert is_out_of_memory(RuntimeError(text)) is oom
