"""Deployment budgets and ONNX end to end: the real CLI on real images and real SQLite.

Latencies come from :func:`hpo.cost.measure_cost`, whose cache the in-process CLI shares
with the test, so a budget set between two measured configurations splits the space the
same way in the run as in the test."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo.cost import Budget, measure_cost
from hpo.errors import HpoError
from hpo.progress import Reporter
from hpo.space import load_space
from tests.conftest import invoke_cli, small_space
from tests.viz_helpers import SCREENSHOTS

pytestmark = pytest.mark.slow

# Pinned so the space has 8 architectures with clearly different costs.
PINS = {
    "block": '"plain"',
    "activation": '"relu"',
    "growth": "2.0",
    "filters": "{ choices = [4, 32] }",
    "epochs": "2",
    "image_size": "16",
}


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1]


class Messages(Reporter):
    """A reporter that keeps the lines a user would see, and why the run stopped."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def study_finished(self, study: optuna.Study, reason: str) -> None:
        self.lines.append(reason)


@dataclass
class Constrained:
    cwd: Path
    space: Path
    limit: float
    latencies: dict[tuple[int, int, int], float]  # (blocks, filters, dense) -> ms

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return invoke_cli(*args, "--storage", "sqlite:///c.db", cwd=self.cwd, check=check, env=env)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="catsdogs", storage=f"sqlite:///{self.cwd / 'c.db'}")


@pytest.fixture(scope="module")
def constrained(tmp_path_factory: pytest.TempPathFactory, catsdogs_dir: Path) -> Constrained:
    cwd = tmp_path_factory.mktemp("budget")
    space_file = small_space(cwd, "catsdogs", **PINS)
    space = load_space("catsdogs", space_file)
    latencies = {
        (blocks, filters, dense): measure_cost(
            {
                "block": "plain",
                "activation": "relu",
                "growth": 2.0,
                "conv_blocks": blocks,
                "filters": filters,
                "dense_units": dense,
            },
            2,
            space.image_size,
        ).latency_ms
        for blocks, filters, dense in itertools.product((2, 3), (4, 32), (0, 16))
    }
    ordered = sorted(latencies.values())
    limit = round((ordered[3] + ordered[4]) / 2, 6)  # half the architectures are over it
    assert ordered[3] < limit < ordered[4]
    c = Constrained(cwd, space_file, limit, latencies)
    c.run(
        "run",
        "catsdogs",
        "--data-dir",
        str(catsdogs_dir),
        "--space",
        str(space_file),
        "--trials",
        "6",
        "--strategy",
        "random",
        "--max-latency-ms",
        str(limit),
    )
    return c


def test_over_budget_trials_are_rejected_before_training(constrained: Constrained) -> None:
    trials = constrained.study().get_trials()
    assert len(trials) == 6
    over = [t for t in trials if t.user_attrs.get("over_budget")]
    assert over and len(over) < 6  # the seed's six draws fall on both sides of the budget
    for t in trials:
        p = t.params
        latency = constrained.latencies[(p["conv_blocks"], p["filters"], p["dense_units"])]
        assert t.user_attrs["latency_ms"] == latency  # the same (cached) measurement
        assert t.user_attrs["params_count"] > 0 and t.user_attrs["saved_bytes"] > 0
        assert t.user_attrs["latency_runtime"] == "onnxruntime"
        # what TPE reads: a positive constraint is a violation
        assert t.constraints["latency_ms"] == pytest.approx(latency / constrained.limit - 1)
        if latency > constrained.limit:
            assert t.state == optuna.trial.TrialState.PRUNED
            assert t.user_attrs["epochs_trained"] == 0 and not t.intermediate_values
            assert "history" not in t.user_attrs
            assert f"> {constrained.limit:g} ms" in t.user_attrs["budget_violation"]
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.user_attrs["epochs_trained"] == 2
    study = constrained.study()
    assert study.user_attrs["hpo:max_latency_ms"] == constrained.limit
    assert study.user_attrs["hpo:latency_runtime"] == "onnxruntime"

    shown = constrained.run("status", "catsdogs").stdout
    assert f"{len(over)} over budget, never trained" in shown
    assert f"over budget, rejected before training (0 epochs): #{over[0].number} latency" in shown
    assert f"max latency ms: {constrained.limit:g}" in shown
    listed = constrained.run("status", env={"COLUMNS": "80"}).stdout.splitlines()
    assert listed[-1] == f"pruned over budget, never trained: catsdogs {len(over)}"
    as_json = json.loads(constrained.run("status", "catsdogs", "--json").stdout)
    assert as_json["study"]["over_budget"] == len(over)
    assert set(as_json["over_budget"]) == {str(t.number) for t in over}


def test_a_resumed_study_keeps_its_budget_and_refuses_another(constrained: Constrained) -> None:
    other = _error_line(
        constrained.run("run", "catsdogs", "--trials", "1", "--max-latency-ms", "999", check=False)
    )
    assert "latency budget (--max-latency-ms)" in other
    assert (
        f"{constrained.limit:g} there, 999.0 now" in other or f"{constrained.limit} there" in other
    )
    assert len(constrained.study().get_trials()) == 6  # refused before any trial


def test_export_ships_onnx_matching_keras_and_predict_runs_it(
    constrained: Constrained, catsdogs_dir: Path
) -> None:
    out = constrained.cwd / "bundle"
    constrained.run("export-best", "catsdogs", "--data-dir", str(catsdogs_dir), "--out", str(out))
    assert (out / "model.onnx").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["onnx_check"]
    assert check["images"] == check["same_class"] == metrics["test_images"] == 1000
    assert check["max_abs_diff"] <= check["tolerance"]
    latencies = metrics["latency_ms_per_image"]
    assert set(latencies) == {"keras", "onnxruntime"}
    assert all(set(per) == {"1", "32"} and min(per.values()) > 0 for per in latencies.values())
    card = (out / "model_card.md").read_text()
    assert "| onnxruntime |" in card and "| batch 1 | batch 32 |" in card

    images = sorted((catsdogs_dir / "test" / "cats").iterdir())[:20]
    args = ["predict", str(out), *map(str, images), "--json", "--top", "2"]
    keras_out = json.loads(invoke_cli(*args).stdout)
    onnx_out = json.loads(invoke_cli(*args, "--runtime", "onnx").stdout)
    for k, o in zip(keras_out, onnx_out, strict=True):
        assert k["top"][0]["label"] == o["top"][0]["label"]
        np.testing.assert_allclose(
            [t["probability"] for t in k["top"]], [t["probability"] for t in o["top"]], atol=1e-4
        )
    unknown = _error_line(invoke_cli(*args, "--runtime", "tflite", check=False))
    assert unknown == "error: unknown runtime 'tflite' (valid: keras, onnx)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-latency-ms", "0"], "error: --max-latency-ms must be a positive number, got 0"),
        (["--max-latency-ms", "-3"], "error: --max-latency-ms must be a positive number, got -3"),
        (["--max-params", "0"], "error: --max-params must be a positive number, got 0"),
        (
            ["--engine", "keras-tuner", "--max-params", "1000"],
            "error: --max-latency-ms and --max-params apply to --engine optuna",
        ),
        (
            ["--objectives", "accuracy,speed"],
            "error: unknown objective 'speed' (valid: accuracy, latency, params)",
        ),
        (
            ["--objectives", "latency,accuracy"],
            "error: --objectives must be accuracy, or accuracy and one cost",
        ),
        (
            ["--objectives", "accuracy,latency", "--engine", "keras-tuner"],
            "error: --objectives with a cost applies to --engine optuna",
        ),
    ],
)
def test_bad_budgets_and_objectives_are_one_line_errors(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    proc = invoke_cli(
        "run",
        "demo",
        "--trials",
        "1",
        *flags,
        "--storage",
        "sqlite:///b.db",
        cwd=tmp_path,
        check=False,
    )
    assert _error_line(proc).startswith(message)


def test_a_budget_no_configuration_meets_is_refused_before_training(
    tmp_path: Path, catsdogs_dir: Path
) -> None:
    space = small_space(tmp_path, "catsdogs", **PINS)
    proc = invoke_cli(
        "run",
        "catsdogs",
        "--data-dir",
        str(catsdogs_dir),
        "--space",
        str(space),
        "--max-latency-ms",
        "0.000001",
        "--storage",
        "sqlite:///u.db",
        cwd=tmp_path,
        check=False,
    )
    line = _error_line(proc)
    assert "no configuration of the space meets the budget (latency <= 1e-06 ms)" in line
    assert "the cheapest (block=plain, conv_blocks=2, filters=4" in line and " ms with " in line
    assert not optuna.get_all_study_names(f"sqlite:///{tmp_path / 'u.db'}")  # no study made


def test_a_run_stops_when_configurations_keep_falling_over_budget(
    constrained: Constrained, catsdogs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only --budget-epochs to stop it, a run whose every draw is over budget (a
    slower worker) would loop forever; it stops after MAX_REJECTED_IN_A_ROW rejections in a
    row, set to 1 here so the fixture's first rejection stops it (same seed, same draws)."""
    import hpo.study.optuna_loop
    from hpo.study import run_study

    monkeypatch.setattr(hpo.study.optuna_loop, "MAX_REJECTED_IN_A_ROW", 1)
    messages = Messages()
    study = run_study(
        "catsdogs",
        n_trials=None,
        budget_epochs=1000,
        storage=f"sqlite:///{constrained.cwd / 'guard.db'}",
        data_dir=catsdogs_dir,
        space=constrained.space,
        strategy="random",
        budget=Budget(max_latency_ms=constrained.limit),
        reporter=messages,
    )
    *trained, last = study.trials
    assert last.user_attrs["over_budget"] == 1
    assert not any(t.user_attrs.get("over_budget") for t in trained)
    assert (
        f"the last 1 configurations were all over the budget (latency <= {constrained.limit:g}"
        " ms) on this machine; loosen it" in "\n".join(messages.lines)
    )


def test_budget_checks_itself() -> None:
    with pytest.raises(HpoError, match="--max-params must be a positive number"):
        Budget(max_params=-1)
    budget = Budget(max_latency_ms=2.0, max_params=1000)
    assert budget.describe() == "latency <= 2 ms and parameters <= 1,000"


# --- two objectives ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_objectives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pareto")
    invoke_cli(
        "run",
        "demo",
        "--objectives",
        "accuracy,latency",
        "--trials",
        "4",
        "--epochs",
        "2",
        "--image-size",
        "16",
        "--space",
        str(small_space(cwd, "demo")),
        "--storage",
        "sqlite:///m.db",
        cwd=cwd,
    )
    return cwd


def test_two_objectives_tell_accuracy_and_latency_and_never_prune(two_objectives: Path) -> None:
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{two_objectives / 'm.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "latency_ms"]
    assert study.user_attrs["hpo:objectives"] == "accuracy,latency"
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for t in trials:
        assert t.values[0] == t.user_attrs["val_acc_best"]
        assert t.values[1] == t.user_attrs["latency_ms"]
        assert not t.intermediate_values and t.user_attrs["epochs_trained"] == 2  # no pruning

    shown = invoke_cli("status", "demo", "--storage", "sqlite:///m.db", cwd=two_objectives)
    assert "Pareto front of study 'demo'" in shown.stdout
    assert "objectives: accuracy,latency" in shown.stdout
    front = json.loads(
        invoke_cli(
            "status", "demo", "--json", "--storage", "sqlite:///m.db", cwd=two_objectives
        ).stdout
    )["pareto_front"]
    assert {f["number"] for f in front} == {t.number for t in study.best_trials}


def test_the_dashboard_draws_a_two_objective_studys_front(
    two_objectives: Path, tmp_path: Path
) -> None:
    """The API serves both objectives under their names, and the study's page in a real
    browser draws the Pareto-front plot with every trial on it."""
    import urllib.request

    from tests.viz_helpers import browser_page, dashboard

    with (
        dashboard(two_objectives, "--storage", "sqlite:///m.db") as (port, _),
        browser_page(tmp_path / "chromium-profile") as page,
    ):
        base = f"http://127.0.0.1:{port}"
        (summary,) = json.loads(urllib.request.urlopen(f"{base}/api/studies").read())[
            "study_summaries"
        ]
        assert summary["directions"] == ["maximize", "minimize"]
        detail = json.loads(
            urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}").read()
        )
        assert len(detail["trials"]) == 4 and detail["best_trials"]  # best_trials: the front
        assert detail["objective_names"] == ["val_accuracy", "latency_ms"]  # the axis labels

        page.goto(f"{base}/dashboard/studies/{summary['study_id']}")
        plot = page.locator("#graph-pareto-front")
        plot.locator(".scatterlayer .point").first.wait_for()
        assert plot.locator(".scatterlayer .point").count() == 4
        selects = page.get_by_role("combobox").all_text_contents()
        assert selects[:2] == ["val_accuracy", "latency_ms"]  # the plot's "Objective X/Y"
        page.screenshot(path=tmp_path / "5-pareto-front.png")
    assert (tmp_path / "5-pareto-front.png").stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "5-pareto-front.png", SCREENSHOTS)


def test_the_dashboard_shows_why_a_trial_was_rejected(
    constrained: Constrained, tmp_path: Path
) -> None:
    from tests.viz_helpers import browser_page, dashboard

    study = constrained.study()
    rejected = next(t for t in study.trials if t.user_attrs.get("over_budget"))
    with (
        dashboard(constrained.cwd, "--storage", "sqlite:///c.db") as (port, _),
        browser_page(tmp_path / "chromium-profile") as page,
    ):
        page.goto(
            f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}/trials"
            f"?numbers={rejected.number}"
        )
        page.get_by_text("User Attributes").wait_for()
        assert page.get_by_text(f"Trial {rejected.number}", exact=True).count() >= 1
        assert page.get_by_text("Pruned", exact=True).count() >= 1
        violation = rejected.user_attrs["budget_violation"]
        page.get_by_text(f"budget_violation {violation}").wait_for()
        page.get_by_text("epochs_trained 0", exact=True).wait_for()


def test_export_of_two_objectives_needs_a_choice(two_objectives: Path) -> None:
    args = ["export-best", "demo", "--storage", "sqlite:///m.db", "--out", "b"]
    refused = _error_line(invoke_cli(*args, cwd=two_objectives, check=False))
    assert "has two objectives, so no single best trial: choose with --max-latency-ms" in refused
    assert "(Pareto front: #" in refused
    too_tight = _error_line(
        invoke_cli(*args, "--max-latency-ms", "0.000001", cwd=two_objectives, check=False)
    )
    assert "runs within 1e-06 ms (the fastest, #" in too_tight
    both = _error_line(
        invoke_cli(*args, "--trial", "0", "--max-latency-ms", "1", cwd=two_objectives, check=False)
    )
    assert both == "error: choose the trial with --trial or with --max-latency-ms, not both"
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{two_objectives / 'm.db'}")
    most_accurate = max(study.best_trials, key=lambda t: (t.values[0], -t.number))
    invoke_cli(*args, "--max-latency-ms", "1000", cwd=two_objectives)
    metrics = json.loads((two_objectives / "b" / "metrics.json").read_text())
    assert metrics["trial"] == most_accurate.number
    assert metrics["trial_val_accuracy"] == most_accurate.values[0]


def test_a_resumed_study_refuses_other_objectives(two_objectives: Path) -> None:
    proc = invoke_cli(
        "run",
        "demo",
        "--trials",
        "1",
        "--objectives",
        "accuracy",
        "--storage",
        "sqlite:///m.db",
        cwd=two_objectives,
        check=False,
    )
    assert (
        "different objectives (--objectives): accuracy,latency there, accuracy now"
        in _error_line(proc)
    )


# --- a cost that cannot be measured ----------------------------------------------------------


def test_a_cost_that_cannot_be_measured_stops_only_studies_that_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter's bug is injected (no real configuration of the space makes one): a
    study that only ranks by accuracy warns and trains without the cost; a two-objective
    study, which cannot tell its trials without it, fails the trial and stops."""
    import hpo.cost
    from hpo.study import run_study

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("converter bug\nsecond line")

    monkeypatch.setattr(hpo.cost, "measure_cost", broken)
    space = small_space(tmp_path, "demo")
    common = dict(n_trials=2, epochs=1, image_size=16, space=space)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    messages = Messages()
    study = run_study("demo", storage=storage, study_name="plain", reporter=messages, **common)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        reason = "measuring its inference cost: RuntimeError: converter bug"
        assert t.user_attrs["cost_error"] == reason and "latency_ms" not in t.user_attrs
        assert f"trial {t.number}: {reason}; it trains without one" in "\n".join(messages.lines)

    with pytest.raises(RuntimeError, match="converter bug"):
        run_study(
            "demo", storage=storage, study_name="pareto", objectives="accuracy,latency", **common
        )
    (failed,) = optuna.load_study(study_name="pareto", storage=storage).trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.user_attrs["fail_reason"].endswith("RuntimeError: converter bug")


def test_export_refuses_to_compare_latencies_from_different_runtimes(tmp_path: Path) -> None:
    """A study resumed after installing the onnx extra holds latencies of two runtimes."""
    study = optuna.create_study(
        study_name="mixed", storage=f"sqlite:///{tmp_path / 'x.db'}", direction="maximize"
    )
    for value, runtime in ((0.8, "onnxruntime"), (0.7, "keras-compiled")):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, user_attrs={"latency_ms": 0.5, "latency_runtime": runtime}
            )
        )
    refused = _error_line(
        invoke_cli(
            "export-best",
            "mixed",
            "--storage",
            "sqlite:///x.db",
            "--max-latency-ms",
            "1",
            cwd=tmp_path,
            check=False,
        )
    )
    assert refused == (
        "error: the latencies of study 'mixed' were measured on different runtimes "
        "(onnxruntime: 1 trial, keras-compiled: 1 trial), which do not compare; "
        "choose with --trial N"
    )
