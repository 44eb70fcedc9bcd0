"""`hpo bench` end to end on the demo images: every default strategy, table, JSON, PNG,
and a re-run that resumes instead of training again."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo.bench import (
    DEFAULT_BENCH_STRATEGIES,
    curve,
    epochs_to_reach,
    share_interval,
    study_name,
)
from tests.conftest import invoke_cli


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 5 studies and 5 retrainings; minutes on a busy 2-core machine
def test_bench_compares_every_default_strategy_and_resumes(tmp_path: Path) -> None:
    args = [
        "bench",
        "demo",
        "--budget-epochs",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--no-overhead",
        "--out",
        "out",
    ]
    proc = invoke_cli(*args, cwd=tmp_path)
    out = tmp_path / "out"
    result = json.loads((out / "bench.json").read_text())
    assert list(result["strategies"]) == list(DEFAULT_BENCH_STRATEGIES)
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "hpo (default)" in (out / "bench.txt").read_text() and "hpo (default)" in proc.stdout
    storage = f"sqlite:///{out / 'bench.db'}"
    for strategy, row in result["strategies"].items():
        [run] = row["runs"]
        study = optuna.load_study(study_name=study_name("demo", strategy, 0), storage=storage)
        assert run["study"] == study.study_name
        assert run["epochs_used"] >= 1  # the budget, reached
        assert run["best_val"] == max(
            t.value for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE
        )
        assert 0.0 <= run["test_accuracy"] <= 1.0  # the winner, retrained and tested once
        assert row["epochs_to_reach"][strategy] is not None  # a study reaches its own best
    trials_before = {
        s: len(optuna.load_study(study_name=study_name("demo", s, 0), storage=storage).get_trials())
        for s in DEFAULT_BENCH_STRATEGIES
    }

    again = invoke_cli(*args, cwd=tmp_path)
    assert "retrain" not in again.stderr  # winners' test results are stored, not recomputed
    for strategy, count in trials_before.items():
        study = optuna.load_study(study_name=study_name("demo", strategy, 0), storage=storage)
        assert len(study.get_trials()) == count


def test_curve_counts_every_trial_epoch_and_only_complete_values(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    for value, state, epochs in ((0.6, "COMPLETE", 3), (None, "PRUNED", 1), (0.7, "COMPLETE", 3)):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                state=optuna.trial.TrialState[state],
                intermediate_values={0: 0.9} if state == "PRUNED" else {},
                user_attrs={"epochs_trained": epochs},
            )
        )
    points = curve(study.get_trials())
    assert points == [(3, 0.6), (4, 0.6), (7, 0.7)]
    assert epochs_to_reach(points, 0.65) == 7
    assert epochs_to_reach(points, 0.8) == float("inf")


def _run(*points: tuple[int, float]) -> dict:
    return {"best_val": max(v for _, v in points), "curve": list(points)}


def test_share_interval_is_a_point_when_seeds_agree_and_wide_when_they_do_not() -> None:
    fast = [_run((3, 0.80), (30, 0.80)) for _ in range(5)]
    slow = [_run((3, 0.60), (30, 0.80)) for _ in range(5)]
    assert share_interval(fast, slow, resamples=200) == [0.1, 0.1]
    assert share_interval(slow, [_run((3, 0.9))] * 5, resamples=200) == [None, None]  # never
    # One lucky seed among slow ones: the resampled seeds sometimes include it, sometimes not.
    mixed = [_run((3, 0.80))] + [_run((3, 0.60), (30, 0.80)) for _ in range(2)]
    assert share_interval(mixed, slow, resamples=200) == [0.1, 1.0]


def test_unknown_strategy_is_one_line(tmp_path: Path) -> None:
    proc = invoke_cli(
        "bench",
        "demo",
        "--budget-epochs",
        "2",
        "--strategies",
        "hpo,grid",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: unknown strategy 'grid' (valid: hpo,")
    )


def test_budget_is_required_unless_only_the_overhead_is_timed(tmp_path: Path) -> None:
    proc = invoke_cli("bench", "demo", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --budget-epochs is required (except with --overhead-only)"
    )


def test_the_synthetic_animals10_set_is_read_as_animals10(tmp_path: Path) -> None:
    """bench/synthetic_animals10.py stands in for the real download on a GPU machine: hpo
    must see its layout, its 10 classes and the real imbalance (dogs and spiders most)."""
    import subprocess
    import sys

    import numpy as np

    from hpo.data import load_dataset

    folder = tmp_path / "animals10"
    script = Path(__file__).resolve().parents[1] / "bench" / "synthetic_animals10.py"
    subprocess.run([sys.executable, str(script), str(folder), "--scale", "0.01"], check=True)
    data = load_dataset("animals10", folder, 16, cache_dir=tmp_path / "cache")
    assert (
        data.layout.startswith("Kaggle raw-img") and len(data.classes) == 10 and not data.bad_files
    )
    per_class = np.bincount(data.labels, minlength=10)
    assert per_class.sum() == 262 and data.classes[per_class.argmax()] == "dog"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_ensemble_column_stays_within_the_single_winners_epochs(tmp_path: Path) -> None:
    args = [
        *("bench", "demo", "--strategies", "hpo", "--budget-epochs", "6", "--seeds", "1"),
        *("--epochs", "2", "--image-size", "16", "--no-overhead", "--out", "out"),
        *("--ensemble", "2"),
    ]
    proc = invoke_cli(*args, cwd=tmp_path)
    assert "ensemble" in (tmp_path / "out" / "bench.txt").read_text()  # the column
    row = json.loads((tmp_path / "out" / "bench.json").read_text())["strategies"]["hpo"]
    [run] = row["runs"]
    ensemble = run["ensemble"]
    assert ensemble["search_epochs"] + ensemble["retrain_epochs"] == ensemble["total_epochs"]
    assert ensemble["total_epochs"] <= ensemble["single_total_epochs"]
    assert ensemble["single_total_epochs"] == run["epochs_used"] + run["winner"]["epochs"]
    assert len(ensemble["weights"]) == len(ensemble["members"]) >= 1
    assert sum(ensemble["weights"]) == pytest.approx(1.0)
    assert row["ensemble_test_median"] == ensemble["test_accuracy"]
    assert row["ensemble_gain_median"] == pytest.approx(
        ensemble["test_accuracy"] - run["test_accuracy"]
    )
    assert "ensemble (2) of trials" in proc.stderr
    assert "ensemble goal: gain over its own winner" in proc.stdout

    again = invoke_cli(*args, cwd=tmp_path)
    assert "retrain" not in again.stderr  # members' test probabilities are stored


def test_ensemble_summary_pairs_each_seed_with_its_own_winner() -> None:
    from hpo.bench_ensemble import ensemble_summary

    def run(single: float, ensemble: float | None, search: int = 80) -> dict:
        return {
            "test_accuracy": single,
            "epochs_used": 90,
            "winner": {"epochs": 9},
            "ensemble": None
            if ensemble is None
            else {"test_accuracy": ensemble, "search_epochs": search, "retrain_epochs": 17},
        }

    runs = [
        run(0.70, 0.72),
        run(0.75, 0.76, 72),
        run(0.71, 0.74),
        run(0.73, None),  # a study without stored predictions
    ]
    summary = ensemble_summary(runs)
    assert summary["ensemble_seeds"] == 3
    assert summary["ensemble_test_median"] == pytest.approx(0.74)
    assert summary["ensemble_gain_median"] == pytest.approx(0.02)
    low, high = summary["ensemble_gain_interval"]
    assert 0.01 - 1e-9 <= low <= 0.02 <= high <= 0.03 + 1e-9
    assert summary["epochs_single"] == [90, 9] and summary["epochs_ensemble"] == [80, 17]
