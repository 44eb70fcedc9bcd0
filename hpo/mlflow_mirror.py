"""MLflow as an optional mirror of hpo's studies: every trial a run, every export a model.

Optuna's database stays the source of truth; MLflow gets a copy for teams that track their
experiments there. A study is one *parent* run (run name = study name) in an experiment
named after the study; each finished trial is a nested child run with its parameters, its
per-epoch curves (epoch as step, counted from 1 like "pruned at epoch k"), final validation
accuracy and macro-F1, its state as tags and its learning-curve PNG. ``hpo export-best
--mlflow`` adds a run with the model logged through MLflow's Keras flavour.

Runs are found by tags, never by a local file, so a resumed study, another worker or
``hpo mlflow-sync`` on another machine adds to the same parent:

- parent: ``hpo.study = NAME``, ``hpo.kind = study``
- trial:  ``hpo.study``, ``hpo.kind = trial``, ``hpo.trial = N``, ``hpo.trial_key = NAME#N``,
  and ``hpo.logged = true`` written in the run's last batch, so a run cut short by a dying
  server is recognisably incomplete and the sync replaces it (the sync is idempotent).

Why MLflow's client (``MlflowClient``) and not Optuna's ``MLflowCallback``: that callback is
deprecated, runs inside ``study.optimize`` (hpo's engines use ask/tell, and the KerasTuner
engine has no Optuna callbacks at all), logs through the fluent API's process-global active
run and tracking URI, and lets a tracking error escape into the study. The client takes the
URI per instance, batches a trial into a few requests, and every call here is wrapped so a
tracking failure becomes one warning instead of a lost trial.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import trials
from hpo.bundle import (
    DESCRIPTION_FILES,
    REPORT_FILES,
    SPLIT_FILE,
    load_bundle,
    read_params,
    read_split,
)
from hpo.errors import HpoError, first_line
from hpo.onnx_runtime import OnnxModel
from hpo.progress import Reporter
from hpo.storage import redact
from hpo.study.record import read_attrs

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

    from hpo.export import ExportResult

ENV_URI = "HPO_MLFLOW_URI"
INSTALL_HINT = (
    "MLflow tracking needs the optional dependency: pip install 'hpo[mlflow]' "
    "(or pip install mlflow)"
)
CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")  # per-epoch metrics, epoch as step
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
STATE_TAG = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
# A mirror must not hold a trial up: MLflow's defaults retry 7 times with exponential
# back-off and wait 120 s per request, minutes per trial against a dead server. And the
# client prints "View run ... at URL" on stdout (after one more request) at every run end;
# hpo's stdout is for results (export-best prints the bundle path there, nothing else).
CLIENT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's per log_batch


def require_mlflow() -> None:
    """A one-line error saying how to install MLflow, instead of an ImportError later."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise HpoError(INSTALL_HINT) from None


@contextmanager
def client_settings() -> Iterator[None]:
    """Few retries, short timeouts and no printing for MLflow's client, only while hpo uses
    it (MLflow reads these variables per call; the caller's values come back after)."""
    saved = {key: os.environ.get(key) for key in CLIENT_SETTINGS}
    os.environ.update(CLIENT_SETTINGS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def trial_key(study_name: str, number: int) -> str:
    """The tag value naming one trial of one study (``hpo.trial_key``)."""
    return f"{study_name}#{number}"


def _ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _quote(value: str) -> str:
    """A string literal for MLflow's filter syntax."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_-./`` and spaces; class names may hold more."""
    return re.sub(r"[^\w\-./ ]", "_", name)


def trial_tags(study_name: str, trial: FrozenTrial, parent_id: str) -> dict[str, str]:
    """Who the run is (study, trial number, parent) and how the trial ended."""
    tags = {
        "mlflow.parentRunId": parent_id,
        "mlflow.runName": f"trial {trial.number}",
        "hpo.study": study_name,
        "hpo.kind": "trial",
        "hpo.trial": str(trial.number),
        "hpo.trial_key": trial_key(study_name, trial.number),
        "hpo.state": STATE_TAG[trial.state],
    }
    attrs = trial.user_attrs
    if trial.state == TrialState.PRUNED:
        tags["hpo.pruned_at_epoch"] = str(
            attrs.get(trials.EPOCHS_TRAINED, len(trial.intermediate_values))
        )
    if trial.state == TrialState.FAIL:
        tags["hpo.fail_reason"] = str(attrs.get(trials.FAIL_REASON, "unknown"))[:5000]
    for key in (trials.WORKER, trials.SEED, trials.SAMPLER_SEED):
        if key in attrs:
            tags[f"hpo.{key}"] = str(attrs[key])
    return tags


def trial_metrics(trial: FrozenTrial) -> list[tuple[str, float, int]]:
    """(key, value, step) of every epoch's curves (step = epoch, from 1) and the final
    numbers (step 0): validation accuracy and macro-F1, best epoch, retraining length,
    seconds, inference cost (:mod:`hpo.cost`)."""
    history = trials.history(trial)
    rows = [
        (name, float(value), epoch)
        for name in CURVES
        for epoch, value in enumerate(history.get(name) or [], start=1)
    ]
    finals = {
        "final_val_accuracy": trials.accuracy(trial),
        "val_macro_f1": trial.user_attrs.get(trials.VAL_MACRO_F1),
        "best_epoch": trial.user_attrs.get(trials.BEST_EPOCH),
        "retrain_epochs": trial.user_attrs.get(trials.RETRAIN_EPOCHS),
        "epochs_trained": trial.user_attrs.get(trials.EPOCHS_TRAINED),
        "trial_seconds": trial.user_attrs.get(trials.SECONDS),
        "latency_ms": trial.user_attrs.get(trials.LATENCY_MS),
        "params_count": trial.user_attrs.get(trials.PARAMS_COUNT),
    }
    rows += [(name, float(value), 0) for name, value in finals.items() if value is not None]
    return rows


@dataclass
class SyncResult:
    """What ``hpo mlflow-sync`` did: trial numbers logged now, already there, and failed."""

    logged: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


class MlflowMirror:
    """A :data:`hpo.study.setup.TrialObserver` that logs each told trial to MLflow.

    Never raises from ``__call__``: a tracking error becomes one warning through the
    reporter naming the trial and what was not logged, and the next trial tries again
    (connections are not cached as broken). ``seconds`` adds up the time spent logging.
    """

    def __init__(
        self,
        uri: str,
        experiment: str | None = None,
        *,
        reporter: Reporter | None = None,
        artifacts: str | Path | None = None,
    ) -> None:
        require_mlflow()
        self.uri, self.experiment = uri, experiment
        self.reporter = reporter or Reporter()
        self.artifacts = artifacts
        self.seconds = 0.0
        self._client: MlflowClient | None = None
        self._experiment_ids: dict[str, str] = {}
        self._parents: dict[str, str] = {}

    # -- the observer -------------------------------------------------------------------
    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        started = time.perf_counter()
        step = ["the study's parent run"]
        try:
            with client_settings():
                self.log_trial(study, trial, step=step)
        except Exception as exc:  # noqa: BLE001 - the mirror must never cost a trial
            from rich.markup import escape  # the reporter's lines are rich markup

            self.reporter.message(
                f"[yellow]warning:[/yellow] MLflow at {redact(self.uri)}: trial {trial.number} "
                f"not logged (stopped at {escape(step[-1])}: {escape(_reason(exc))}); Optuna "
                f"has it, `hpo mlflow-sync {escape(study.study_name)} --mlflow URI` back-fills it"
            )
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        """Mark the parent runs this process logged to as FINISHED (quietly: a dead server
        has already been reported trial by trial)."""
        try:
            with client_settings():
                for run_id in self._parents.values():
                    self.client.set_terminated(run_id, "FINISHED")
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> MlflowMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, study_name: str) -> str:
        """The id of the experiment (``--mlflow-experiment``, else the study's name),
        created on first use; a concurrent creator is not an error."""
        name = self.experiment or study_name
        if name not in self._experiment_ids:
            from mlflow.exceptions import MlflowException

            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiment_ids[name] = self.client.create_experiment(name)
                except MlflowException:  # another worker created it just now
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_ids[name] = found.experiment_id
        return self._experiment_ids[name]

    def parent_run(self, study: optuna.Study) -> str:
        """The study's parent run id, found by tag or created (with the study's record as
        tags); when two workers create one at the same moment, both keep the oldest."""
        name = study.study_name
        if name in self._parents:
            return self._parents[name]
        experiment_id = self.experiment_id(name)
        runs = self._study_runs(experiment_id, name, "study")
        if runs:
            run = runs[0]
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
        else:
            created = self.client.create_run(
                experiment_id, run_name=name, tags=self._parent_tags(study)
            )
            space = read_attrs(study.user_attrs).get("space")
            if space:
                self.client.log_text(created.info.run_id, space, "search_space.toml")
            run = self._study_runs(experiment_id, name, "study")[0]
            if run.info.run_id != created.info.run_id:
                self.client.delete_run(created.info.run_id)
        self._parents[name] = run.info.run_id
        return run.info.run_id

    def _study_runs(self, experiment_id: str, study_name: str, kind: str) -> list[Run]:
        """Every run of ``kind`` (study, trial, export) of the study, oldest first."""
        found: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`hpo.study` = {_quote(study_name)} and tags.`hpo.kind` = '{kind}'",
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
                max_results=1000,
                page_token=token,
            )
            found += page
            token = page.token
            if not token:
                return found

    def _parent_tags(self, study: optuna.Study) -> dict[str, str]:
        import mlflow

        from hpo.export import versions

        recorded = read_attrs(study.user_attrs)
        tags = {
            "hpo.study": study.study_name,
            "hpo.kind": "study",
            "hpo.engine": str(recorded["engine"]),
            "hpo.sampler": type(study.sampler).__name__,
            "hpo.pruner": type(study.pruner).__name__,
            # a two-objective study has directions, not a direction (hpo.study.objectives)
            "hpo.directions": ",".join(d.name.lower() for d in study.directions),
        }
        for key in (
            "dataset",
            "data_fingerprint",
            "split_fingerprint",
            "split_seed",
            "image_size",
            "epochs",
        ):
            if key in recorded:
                tags[f"hpo.{key}"] = str(recorded[key])
        for package, version in {**versions(), "mlflow": mlflow.__version__}.items():
            tags["version." + re.sub(r"[^\w\-./]+", "_", package).strip("_")] = version
        return tags

    def log_trial(
        self, study: optuna.Study, trial: FrozenTrial, *, step: list[str] | None = None
    ) -> str:
        """Log one finished trial as a child run of the study's parent; returns its run id.
        ``step`` receives the name of each stage as it starts, for the warning."""
        from mlflow.entities import Metric, Param, RunTag

        step = step if step is not None else []
        parent = self.parent_run(study)
        step.append("creating the trial's run")
        name = study.study_name
        run = self.client.create_run(
            self.experiment_id(name),
            start_time=_ms(trial.datetime_start),
            tags=trial_tags(name, trial, parent),
            run_name=f"trial {trial.number}",
        )
        run_id = run.info.run_id
        step.append("its learning-curve PNG")
        with tempfile.TemporaryDirectory(prefix="hpo-mlflow-") as tmp:
            from hpo.artifacts import learning_curve_file

            png = learning_curve_file(trial, study._storage, tmp, self.artifacts)
            if png is not None:
                self.client.log_artifact(run_id, str(png))
        step.append("its parameters, metrics and final state")
        stamp = _ms(trial.datetime_complete) or int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, epoch) for key, value, epoch in trial_metrics(trial)]
        params = [Param(key, str(value)) for key, value in trial.params.items()]
        # The hpo.logged tag rides on the last batch: a run without it is incomplete.
        for batch_metrics, batch_params, tags in _batches(
            metrics, params, [RunTag("hpo.logged", "true")]
        ):
            self.client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=tags)
        self.client.set_terminated(
            run_id, RUN_STATUS[trial.state], end_time=_ms(trial.datetime_complete)
        )
        return run_id

    # -- back-fill ----------------------------------------------------------------------
    def sync(self, study: optuna.Study) -> SyncResult:
        """Log every finished trial of ``study`` that has no complete run yet (replacing
        runs cut short), so running it twice logs nothing twice."""
        result = SyncResult()
        with client_settings():
            try:
                self.parent_run(study)
                runs = self._study_runs(
                    self.experiment_id(study.study_name), study.study_name, "trial"
                )
            except Exception as exc:  # noqa: BLE001 - one line, not a traceback
                raise HpoError(
                    f"cannot reach MLflow at {redact(self.uri)}: {_reason(exc)}"
                ) from None
            done = {
                int(r.data.tags["hpo.trial"])
                for r in runs
                if r.data.tags.get("hpo.logged") == "true" and r.info.status != "RUNNING"
            }
            partial: dict[int, list[str]] = {}
            for r in runs:
                number = int(r.data.tags["hpo.trial"])
                if number not in done:
                    partial.setdefault(number, []).append(r.info.run_id)
            for trial in study.get_trials(deepcopy=False, states=FINISHED):
                if trial.number in done:
                    result.present.append(trial.number)
                    continue
                step = ["the study's parent run"]
                try:
                    for run_id in partial.get(trial.number, []):
                        self.client.delete_run(run_id)
                    self.log_trial(study, trial, step=step)
                    result.logged.append(trial.number)
                except Exception as exc:  # noqa: BLE001 - reported per trial, sync goes on
                    result.failed[trial.number] = f"stopped at {step[-1]}: {_reason(exc)}"
        return result

    # -- exports ------------------------------------------------------------------------
    def log_export(
        self, study: optuna.Study, export: ExportResult, register: str | None = None
    ) -> tuple[str, str]:
        """Log an export bundle as a run under the study's parent: the model through MLflow's
        Keras flavour (signature and input example from real test images), test metrics,
        parameters, confusion matrix, model card; ``register`` names a registered model to
        add it to. Returns (run id, model URI). Errors are one-line HpoErrors naming the
        bundle, which is complete on disk whatever MLflow did."""
        try:
            with client_settings():
                return self._log_export(study, export, register)
        except HpoError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise HpoError(
                f"the bundle is in {export.bundle}, but logging it to MLflow at "
                f"{redact(self.uri)} failed: {_reason(exc)}"
            ) from None

    def _log_export(
        self, study: optuna.Study, export: ExportResult, register: str | None
    ) -> tuple[str, str]:
        import mlflow
        from mlflow.entities import Metric, Param

        bundle = load_bundle(export.bundle)
        model = bundle.model
        assert not isinstance(model, OnnxModel)  # the Keras runtime: MLflow logs model.keras
        example = _input_example(export.bundle, bundle.image_size)
        signature = mlflow.models.infer_signature(example, model.predict(example, verbose=0))
        parent = self.parent_run(study)
        name = study.study_name
        run = self.client.create_run(
            self.experiment_id(name),
            run_name=f"export trial {export.trial}",
            tags={
                "mlflow.parentRunId": parent,
                "hpo.study": name,
                "hpo.kind": "export",
                "hpo.trial": str(export.trial),
                "hpo.bundle": str(export.bundle),
            },
        )
        run_id = run.info.run_id
        m = export.metrics
        stamp = int(time.time() * 1000)
        metrics = {
            "test_accuracy": m["test_accuracy"],
            "test_macro_f1": m["test_macro_f1"],
            "trial_val_accuracy": m["trial_val_accuracy"],
            "retrain_seconds": m["retrain_seconds"],
            "test_images": m["test_images"],
            **{f"test_f1.{_metric_key(c)}": s["f1"] for c, s in m["test_per_class"].items()},
        }
        params = read_params(export.bundle)
        params.update(trial=export.trial, epochs=export.epochs, seed=m["seed"])
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        for file in (*REPORT_FILES, *DESCRIPTION_FILES):
            if (export.bundle / file).is_file():
                self.client.log_artifact(run_id, str(export.bundle / file), "bundle")
        with tempfile.TemporaryDirectory(prefix="hpo-mlflow-model-") as tmp:
            # Saved, then uploaded: mlflow.keras.log_model (3.17) writes the input example
            # before it creates the model folder and fails; an existing folder avoids that.
            # It also keeps everything on this client, off the fluent API's global run.
            folder = Path(tmp) / "model"
            folder.mkdir()
            mlflow.keras.save_model(
                model,
                str(folder),
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
                metadata={"hpo_study": name, "hpo_trial": export.trial},
            )
            self.client.log_artifacts(run_id, str(folder), "model")
        if register:
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_registered_model(register)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = self.client.create_model_version(
                register,
                source=f"{self.client.get_run(run_id).info.artifact_uri}/model",
                run_id=run_id,
                tags={"hpo.study": name, "hpo.trial": str(export.trial)},
            )
            self.reporter.message(f"MLflow: registered as '{register}' version {version.version}")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id, f"runs:/{run_id}/model"


def _input_example(bundle: Path, image_size: int, count: int = 2):  # -> np.ndarray
    """The first readable test images of the bundle's split, as the model takes them
    (float32 pixel values 0-255; the model scales)."""
    import numpy as np

    from hpo.predict import decode_file

    split = read_split(bundle)  # paths relative to its root
    images = []
    for path in split["test"]:
        pixels, _ = decode_file(Path(split["root"]) / path, image_size)
        if pixels is not None:
            images.append(pixels)
        if len(images) == count:
            break
    if not images:
        raise HpoError(f"no readable test image in {bundle / SPLIT_FILE} for the input example")
    return np.stack(images).astype("float32")


def _requirements() -> list[str]:
    """What serving the model needs, pinned to what trained it (stated, because MLflow's
    own inference loads the model in a subprocess: seconds of TensorFlow start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    import keras

    packages = ["keras", keras.backend.backend(), "numpy"]
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def _batches(
    metrics: list[Metric], params: list[Param], last_tags: list[RunTag]
) -> list[tuple[list[Metric], list[Param], list[RunTag]]]:
    """(metrics, params, tags) of each ``log_batch`` call within MLflow's limits,
    ``last_tags`` in the last."""
    most_metrics, most_params = BATCH_LIMITS["metrics"], BATCH_LIMITS["params"]
    batches: list[tuple[list[Metric], list[Param], list[RunTag]]] = []
    while metrics or params or not batches:
        batches.append((metrics[:most_metrics], params[:most_params], []))
        metrics, params = metrics[most_metrics:], params[most_params:]
    batches[-1] = (batches[-1][0], batches[-1][1], last_tags)
    return batches


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)[:300]}"


def mirror_from_options(
    uri: str | None,
    experiment: str | None,
    *,
    reporter: Reporter,
    artifacts: str | Path | None = None,
) -> MlflowMirror | None:
    """The mirror ``--mlflow``/``HPO_MLFLOW_URI`` asks for, or None without a URI."""
    if not uri:
        if experiment:
            raise HpoError("--mlflow-experiment needs --mlflow URI (or HPO_MLFLOW_URI)")
        return None
    mirror = MlflowMirror(uri, experiment, reporter=reporter, artifacts=artifacts)
    reporter.message(
        f"mirroring trials to MLflow at {redact(uri)}, experiment '{experiment or '<study name>'}'"
    )
    return mirror
