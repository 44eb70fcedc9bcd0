"""MLflow as a mirror of studies and exports, against a real tracking server on 127.0.0.1
(bench/mlflow_server.py) and a local sqlite: tracking URI: runs, metrics per epoch, states,
learning-curve PNGs, a server dying mid-study, the sync, and an exported model that MLflow
loads and that predicts what the bundle predicts on real test images."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest

from bench.mlflow_server import MlflowServer
from hpo.mlflow_mirror import MlflowMirror
from hpo.progress import Reporter
from hpo.study import run_study
from tests.conftest import REPO, invoke_cli, run_cli, small_space

TINY = {"epochs": 2, "image_size": 16}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    srv.stop()


class Messages(Reporter):
    """A reporter that keeps the lines a user would see."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def _children(runs: list[dict], parent: dict) -> dict[int, dict]:
    children = [
        r
        for r in runs
        if r["tags"].get("mlflow.parentRunId") == parent["info"]["run_id"]
        and r["tags"].get("hpo.kind") == "trial"
    ]
    by_number = {int(r["tags"]["hpo.trial"]): r for r in children}
    assert len(by_number) == len(children), "a trial logged twice"
    return by_number


def _parent(runs: list[dict], study: str) -> dict:
    parents = [r for r in runs if r["tags"].get("hpo.kind") == "study"]
    assert len(parents) == 1, parents
    assert parents[0]["info"]["run_name"] == study and parents[0]["tags"]["hpo.study"] == study
    return parents[0]


@pytest.mark.slow
def test_cli_run_logs_parent_and_a_nested_run_per_trial_and_resumes_under_it(
    server: MlflowServer, tmp_path: Path
) -> None:
    # random search never prunes, so every trial is a complete run with 2 steps
    common = [
        "--epochs",
        "2",
        "--image-size",
        "16",
        "--storage",
        "sqlite:///s.db",
        "--artifacts",
        "art",
        "--mlflow",
        server.url,
        "--strategy",
        "random",
    ]
    proc = invoke_cli("run", "demo", "--trials", "3", *common, cwd=tmp_path)
    assert "View run" not in proc.stdout + proc.stderr and "warning" not in proc.stderr
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 's.db'}")

    runs = server.runs("demo")
    parent = _parent(runs, "demo")
    assert parent["tags"]["hpo.dataset"] == "demo"
    assert parent["tags"]["hpo.data_fingerprint"] == study.user_attrs["hpo:data_fingerprint"]
    assert parent["tags"]["hpo.split_fingerprint"] == study.user_attrs["hpo:split_fingerprint"]
    assert parent["tags"]["hpo.sampler"] == "RandomSampler" and "version.keras" in parent["tags"]
    assert parent["tags"]["version.backend_tensorflow"] and parent["tags"]["version.hpo"]
    children = _children(runs, parent)
    assert sorted(children) == [0, 1, 2]
    for trial in study.trials:
        run = children[trial.number]
        assert run["info"]["status"] == "FINISHED" and run["tags"]["hpo.state"] == "complete"
        assert run["tags"]["hpo.logged"] == "true"
        history = trial.user_attrs["history"]
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            steps = server.history(run["info"]["run_id"], metric)
            assert [m["step"] for m in sorted(steps, key=lambda m: m["step"])] == [1, 2], metric
            assert [m["value"] for m in sorted(steps, key=lambda m: m["step"])] == pytest.approx(
                history[metric]
            )
        latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert latest["final_val_accuracy"] == pytest.approx(trial.value)
        assert latest["val_macro_f1"] == pytest.approx(trial.user_attrs["val_macro_f1"])
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params == {k: str(v) for k, v in trial.params.items()}
        assert server.artifacts(run["info"]["run_id"]) == [
            f"learning-curve-trial-{trial.number}.png"
        ]

    # A resumed study (a fresh process, no local state) adds its trial under the same parent.
    run_cli("run", "demo", "--trials", "1", *common, cwd=tmp_path)
    runs = server.runs("demo")
    assert sorted(_children(runs, _parent(runs, "demo"))) == [0, 1, 2, 3]


@pytest.mark.slow
def test_local_sqlite_uri_records_pruned_and_failed_trials_and_sync_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial pruned at epoch 1 and a failed trial (sync back-fills it) on sqlite:."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a sqlite: tracking store keeps artifacts in ./mlruns

    storage, uri = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    strict = tmp_path / "strict.toml"
    strict.write_text(
        (REPO / "search_spaces/demo.toml")
        .read_text()
        .replace("startup_trials = 3", "startup_trials = 1")
        .replace("warmup_epochs = 1", "warmup_epochs = 0")
    )
    baseline = optuna.create_study(study_name="strict", storage=storage, direction="maximize")
    baseline.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0}))
    with MlflowMirror(uri, "hpo-tests", artifacts=tmp_path / "art") as mirror:
        study = run_study(
            "demo",
            n_trials=1,
            storage=storage,
            study_name="strict",
            space=strict,
            strategy="tpe-median",  # the space's [pruner] table, made strict above
            artifacts=tmp_path / "art",
            observers=[mirror],
            **TINY,
        )
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params={},
            distributions={},
            user_attrs={"fail_reason": "GPU out of memory (test)", "history": {}},
        )
    )

    first = invoke_cli(
        "mlflow-sync",
        "strict",
        "--storage",
        storage,
        "--mlflow",
        uri,
        "--mlflow-experiment",
        "hpo-tests",
        "--artifacts",
        "art",
        cwd=tmp_path,
    )
    assert "logged 2 trials now (0, 2); 1 were already in MLflow" in first.stderr
    again = invoke_cli(
        "mlflow-sync",
        "strict",
        "--storage",
        storage,
        "--mlflow",
        uri,
        "--mlflow-experiment",
        "hpo-tests",
        cwd=tmp_path,
    )
    assert "logged 0 trials now; 3 were already in MLflow" in again.stderr

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hpo-tests")
    runs = {
        r.data.tags.get("hpo.trial"): r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("hpo.kind") == "trial"
    }
    assert sorted(runs) == ["0", "1", "2"]
    pruned, failed = runs["1"], runs["2"]
    assert (
        pruned.data.tags["hpo.state"] == "pruned" and pruned.data.tags["hpo.pruned_at_epoch"] == "1"
    )
    assert pruned.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(pruned.info.run_id, "val_accuracy")] == [1]
    assert [a.path for a in client.list_artifacts(pruned.info.run_id)] == [
        "learning-curve-trial-1.png"
    ]
    assert failed.info.status == "FAILED" and failed.data.tags["hpo.state"] == "failed"
    assert failed.data.tags["hpo.fail_reason"] == "GPU out of memory (test)"
    assert client.list_artifacts(failed.info.run_id) == []  # no epoch, no curve
    assert runs["0"].data.tags["hpo.state"] == "complete"  # the baseline, back-filled
    assert (tmp_path / "mlruns").is_dir()


def test_a_two_objective_study_is_mirrored_with_both_directions_and_its_costs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a sqlite: tracking store keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    messages = Messages()
    with MlflowMirror(uri, "hpo-pareto", artifacts=tmp_path / "art", reporter=messages) as mirror:
        study = run_study(
            "demo",
            n_trials=2,
            storage=f"sqlite:///{tmp_path / 's.db'}",
            objectives="accuracy,latency",
            space=small_space(tmp_path, "demo"),
            artifacts=tmp_path / "art",
            observers=[mirror],
            **TINY,
        )
    assert not [line for line in messages.lines if "not logged" in line], messages.lines
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hpo-pareto")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("hpo.kind") == "study"]
    assert parent.data.tags["hpo.directions"] == "maximize,minimize"
    trial_runs = {
        r.data.tags["hpo.trial"]: r for r in runs if r.data.tags.get("hpo.kind") == "trial"
    }
    assert sorted(trial_runs) == ["0", "1"]
    for trial in study.trials:
        metrics = trial_runs[str(trial.number)].data.metrics
        assert metrics["latency_ms"] == pytest.approx(trial.values[1])
        assert metrics["params_count"] == trial.user_attrs["params_count"]


@pytest.mark.slow
def test_server_killed_mid_study_loses_no_trial_and_sync_back_fills(
    server: MlflowServer, tmp_path: Path
) -> None:
    """The server dies after trial 0 is logged and is back before trial 2 ends: trial 1 gets
    one warning, trial 2 logs again, the sync adds trial 1 and then nothing."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    messages = Messages()

    def chaos(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number == 0:
            server.stop()
        if trial.number == 1:
            server.start()

    mirror = MlflowMirror(server.url, "killed", reporter=messages, artifacts=tmp_path / "art")
    study = run_study(
        "demo",
        n_trials=3,
        storage=storage,
        study_name="killed",
        seed=1,
        strategy="random",
        artifacts=tmp_path / "art",
        reporter=messages,
        observers=[mirror, chaos],
        **TINY,
    )
    mirror.close()
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # Optuna lost nothing
    warnings = [line for line in messages.lines if "warning" in line]
    assert len(warnings) == 1 and "trial 1 not logged" in warnings[0], messages.lines
    assert "hpo mlflow-sync killed" in warnings[0]
    assert sorted(_children(server.runs("killed"), _parent(server.runs("killed"), "killed"))) == [
        0,
        2,
    ]

    sync = invoke_cli(
        "mlflow-sync",
        "killed",
        "--storage",
        storage,
        "--mlflow",
        server.url,
        "--mlflow-experiment",
        "killed",
        "--artifacts",
        "art",
        cwd=tmp_path,
    )
    assert "logged 1 trials now (1); 2 were already in MLflow" in sync.stderr
    runs = server.runs("killed")
    children = _children(runs, _parent(runs, "killed"))
    assert sorted(children) == [0, 1, 2]
    assert [m["step"] for m in server.history(children[1]["info"]["run_id"], "val_accuracy")] == [
        1,
        2,
    ]
    assert server.artifacts(children[1]["info"]["run_id"]) == ["learning-curve-trial-1.png"]
    again = invoke_cli(
        "mlflow-sync",
        "killed",
        "--storage",
        storage,
        "--mlflow",
        server.url,
        "--mlflow-experiment",
        "killed",
        cwd=tmp_path,
    )
    assert "logged 0 trials now" in again.stderr and len(server.runs("killed")) == 4


@pytest.mark.slow
def test_export_logs_a_model_mlflow_loads_and_that_predicts_like_the_bundle(
    server: MlflowServer, tmp_path: Path, animals10_dir: Path
) -> None:
    import mlflow

    from hpo.bundle import load_bundle
    from hpo.predict import decode_file

    common = ["--data-dir", str(animals10_dir), "--storage", "sqlite:///t.db"]
    invoke_cli(
        "run",
        "animals10",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--space",
        str(small_space(tmp_path, "animals10")),
        *common,
        cwd=tmp_path,
    )
    proc = invoke_cli(
        "export-best",
        "animals10",
        *common,
        "--mlflow",
        server.url,
        "--register",
        "animals10-cnn",
        cwd=tmp_path,
    )
    bundle = Path(proc.stdout.strip())  # stdout stays the bundle path only
    assert bundle == tmp_path / "exports" / "animals10"

    runs = server.runs("animals10")
    export = [r for r in runs if r["tags"].get("hpo.kind") == "export"]
    assert len(export) == 1
    assert export[0]["tags"]["mlflow.parentRunId"] == _parent(runs, "animals10")["info"]["run_id"]
    metrics = json.loads((bundle / "metrics.json").read_text())
    logged = {m["key"]: m["value"] for m in export[0]["data"]["metrics"]}
    assert logged["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert logged["test_macro_f1"] == pytest.approx(metrics["test_macro_f1"])
    assert logged["test_f1.dog"] == pytest.approx(metrics["test_per_class"]["dog"]["f1"])
    files = server.api("artifacts/list", run_id=export[0]["info"]["run_id"], path="bundle")["files"]
    assert {"bundle/confusion_matrix.png", "bundle/model_card.md", "bundle/metrics.json"} <= {
        f["path"] for f in files
    }

    versions = server.api("model-versions/search", filter="name='animals10-cnn'")["model_versions"]
    assert [v["version"] for v in versions] == ["1"]
    with mlflow_uri(server.url):
        model = mlflow.pyfunc.load_model("models:/animals10-cnn/1")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 16, 16, 3)
    assert model.metadata.saved_input_example_info is not None

    reference = load_bundle(bundle)
    split = json.loads((bundle / "split.json").read_text())
    test_files = [Path(split["root"]) / f for f in split["test"]]
    images = np.stack([decode_file(f, 16)[0] for f in test_files]).astype("float32")
    served = np.asarray(model.predict(images))
    expected = reference.model.predict(images, verbose=0)
    assert served.shape == expected.shape == (len(test_files), 10)
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(served, expected, atol=1e-5)


class mlflow_uri:
    """MLflow's fluent API reads a process-wide tracking URI; set it only for a block."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.uri)

    def __exit__(self, *exc: object) -> None:
        import mlflow

        mlflow.set_tracking_uri(None)


def test_mlflow_options_without_the_extra_or_a_uri_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How Python reports a package that is not installed: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    for args in (
        ["run", "demo", "--mlflow", "http://127.0.0.1:9"],
        ["export-best", "demo", "--mlflow", "http://127.0.0.1:9"],
        ["mlflow-sync", "demo", "--mlflow", "http://127.0.0.1:9"],
    ):
        proc = invoke_cli(
            *args, cwd=tmp_path, env={"HPO_STORAGE": "sqlite:///none.db"}, check=False
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: MLflow tracking needs the optional dependency: pip install 'hpo[mlflow]' "
            "(or pip install mlflow)"
        ), args
    monkeypatch.delitem(sys.modules, "mlflow")
    proc = invoke_cli("export-best", "demo", "--register", "x", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: --register needs --mlflow URI (or HPO_MLFLOW_URI)"
    )
