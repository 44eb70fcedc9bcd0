"""Ship the winner of a study: retrain its configuration on train+val, test it once on the
test split (which the search never read), and write a self-describing model bundle.

The retraining uses :func:`hpo.training.train`, the function every trial used, on the same
cached pixels, with the trial's seed, for the trial's retraining length (:mod:`hpo.score`:
the latest epoch within one standard error of its best validation accuracy): with
validation folded into training there is nothing left to early-stop on, so the trial's
curve is the best estimate of how long to train.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import __version__, plots
from hpo.artifacts import attach
from hpo.bundle import (
    CONFUSION_MATRIX_FILE,
    FEATURE_MAP_DIR,
    FILTERS_FILE,
    LEARNING_CURVE_FILE,
    MODEL_CARD_FILE,
    REPORT_FILES,
    save_model,
    write_description,
)
from hpo.data import Dataset, load_dataset
from hpo.device import backend_name, backend_version, load_backend
from hpo.errors import HpoError
from hpo.files import publish, temporary_sibling
from hpo.head import describe_head
from hpo.progress import Reporter
from hpo.space import SearchSpace
from hpo.storage import DEFAULT_STORAGE, redact
from hpo.study import load_study
from hpo.study.objectives import is_multi, pareto_front
from hpo.study.record import export_key, recorded_space, study_record
from hpo.trials import (
    LATENCY_MS,
    LATENCY_RUNTIME,
    SEED,
    VAL_MACRO_F1,
    accuracy,
    best_trials,
    retrain_epochs,
    state_counts,
)

if TYPE_CHECKING:
    import keras

    from hpo.ensemble import EnsembleRequest, Selection
    from hpo.execution import Execution
    from hpo.training import EpochHook, TrainResult

DEFAULT_EXPORTS = "exports"
FEATURE_MAP_IMAGES = 2  # test images per class drawn through every conv block
TTA_METHOD = "mean of the probabilities of each image and its horizontal mirror"


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and what it scored on the test split."""

    bundle: Path
    trial: int
    epochs: int
    metrics: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Retrained:
    """A configuration retrained on train+val and tested once: the model shipped (no
    augmentation layers), its training run, its test report and, if asked, the test report
    of its flip-averaged predictions."""

    model: keras.Model
    result: TrainResult
    report: dict[str, Any]
    tta_report: dict[str, Any] | None
    test_probs: np.ndarray  # what ``report`` was made of, sorted test rows


def export_best(
    study_name: str,
    *,
    storage: str = DEFAULT_STORAGE,
    trial: int | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    artifacts: str | Path | None = None,
    reporter: Reporter | None = None,
    tta: bool = False,
    max_latency_ms: float | None = None,
    ensemble: EnsembleRequest | None = None,
) -> ExportResult:
    """Retrain the best COMPLETE trial of ``study_name`` (or trial number ``trial``) on
    train+val, evaluate it once on test and write the bundle to ``out`` (default
    ``$HPO_EXPORTS/<study>``, ``exports/<study>``); the export is recorded on the study.
    ``tta``: also test flip-averaged predictions, reported apart from the plain numbers.
    ``max_latency_ms``: the most accurate complete trial whose recorded latency is within
    it (how a study of two objectives is given its one choice).
    ``ensemble``: ship instead the weighted average of members selected on the trials'
    stored validation probabilities (:mod:`hpo.ensemble`), each retrained like a winner;
    a study without stored probabilities ships its single winner, with a notice."""
    started = time.monotonic()
    reporter = reporter or Reporter()
    study = load_study(storage, study_name)
    if ensemble is not None and (trial is not None or max_latency_ms is not None):
        raise HpoError("--ensemble selects its own members; leave out --trial and --max-latency-ms")
    if ensemble is not None and is_multi(study):
        raise HpoError(
            f"study '{study_name}' has two objectives; --ensemble selects on one (validation "
            "accuracy): export one trial with --trial N or --max-latency-ms L"
        )
    chosen = choose_trial(study, trial, max_latency_ms)
    # a study hpo did not make is refused before anything is written
    recorded_space(study_name, study_record(study))
    candidates = None if ensemble is None else ensemble_candidates(study, ensemble, artifacts)
    if candidates == []:
        reporter.message(
            f"study '{study_name}' has no stored validation predictions in this artifact "
            "store (made before hpo kept them, or kept elsewhere); exporting its single best "
            "trial"
        )
    target = bundle_path(study_name, out)
    staging = _staging_folder(target, force)  # fails before any training if not writable
    try:
        data = study_data(study, data_dir, reporter)
        if candidates and ensemble is not None:
            shipped = retrain_ensemble(
                study, candidates, ensemble, data, reporter=reporter, tta=tta
            )
        else:
            shipped = Shipped.single(
                retrain_trial(study, chosen, data=data, reporter=reporter, tta=tta)
            )
        metrics = _metrics(study_name, shipped, data)
        command = _reproduce_command(study_name, shipped, storage, data, target)
        _write_bundle(staging, shipped, data, metrics, command)
        publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _record(study, shipped.lead.trial, target, metrics, artifacts)
    return ExportResult(
        bundle=target,
        trial=shipped.lead.trial.number,
        epochs=metrics["epochs"],
        metrics=metrics,
        seconds=time.monotonic() - started,
    )


def _metrics(study_name: str, shipped: Shipped, data: Dataset) -> dict[str, Any]:
    """``metrics.json``: the headline test numbers are the shipped model's (the ensemble's,
    for an ensemble), with its size and measured inference time on this machine."""
    lead, report = shipped.lead, shipped.report
    metrics: dict[str, Any] = {
        "study": study_name,
        "trial": lead.trial.number,
        "trial_val_accuracy": accuracy(lead.trial),
        "trial_val_macro_f1": lead.trial.user_attrs.get(VAL_MACRO_F1),
        "epochs": sum(member.epochs for member in shipped.members),
        "schedule_epochs": lead.schedule_epochs,
        "seed": lead.seed,
        "train_images": len(data.split("train", "val")),
        "test_images": int(len(data.split("test"))),
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
        "test_per_class": report["per_class"],
        "test_confusion_matrix": report["confusion_matrix"],
        "classes": list(data.classes),
        "retrain_seconds": round(sum(member.result.seconds for member in shipped.members), 2),
        "precision": lead.precision,
        "parameters": shipped.model.count_params(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if shipped.selection is not None:
        metrics["ensemble"] = ensemble_metrics(shipped)
    if shipped.tta_report is not None:  # apart from the headline: a different predictor
        metrics["tta"] = {
            "method": TTA_METHOD,
            "test_accuracy": shipped.tta_report["accuracy"],
            "test_macro_f1": shipped.tta_report["macro_f1"],
            "test_confusion_matrix": shipped.tta_report["confusion_matrix"],
        }
    return metrics


@dataclass(frozen=True)
class Shipped:
    """What a bundle ships: one retrained trial, or the weighted average of several
    (``selection`` and ``weights`` set); ``lead`` is the one the bundle is named after and
    explained by (the single trial, or the ensemble's heaviest member)."""

    model: keras.Model
    members: list[RetrainedTrial]
    weights: list[float]
    report: dict[str, Any]
    tta_report: dict[str, Any] | None
    test_probs: np.ndarray  # what ``report`` was made of, sorted test rows
    selection: Selection | None = None
    candidates: list[FrozenTrial] | None = None  # what the selection's indices refer to
    request: EnsembleRequest | None = None

    @classmethod
    def single(cls, done: RetrainedTrial) -> Shipped:
        retrained = done.retrained
        return cls(
            done.model, [done], [1.0], done.report, retrained.tta_report, retrained.test_probs
        )

    @property
    def lead(self) -> RetrainedTrial:
        from hpo.ensemble import heaviest

        return self.members[heaviest(self.weights)]


def ensemble_candidates(
    study: optuna.Study, request: EnsembleRequest, artifacts: str | Path | None = None
) -> list[tuple[FrozenTrial, np.ndarray]]:
    """The COMPLETE trials with stored validation probabilities, best first, with them;
    [] for a study made before hpo stored them. A fixed size larger than their number is
    a one-line error (with replacement it could be filled, but by repeats only)."""
    from hpo.predictions import stored_probabilities

    found = []
    trials = study.get_trials(deepcopy=False)
    for trial in best_trials(trials, top=len(trials)):
        probs = stored_probabilities(trial, study._storage, artifacts)
        if probs is not None:
            found.append((trial, probs))
    if found and request.size is not None and request.size > len(found):
        raise HpoError(
            f"--ensemble {request.size} is more than the {len(found)} complete trials of study "
            f"'{study.study_name}' with stored validation predictions"
        )
    return found


def retrain_ensemble(
    study: optuna.Study,
    candidates: Sequence[tuple[FrozenTrial, np.ndarray]],
    request: EnsembleRequest,
    data: Dataset,
    *,
    reporter: Reporter | None = None,
    tta: bool = False,
) -> Shipped:
    """Select members on the validation split (:func:`hpo.ensemble.select`), retrain each
    like a winner (its own epochs and seed), combine them into one model and test it."""
    from hpo.ensemble import combine, select
    from hpo.predictions import validation_rows

    reporter = reporter or Reporter()
    val = data.split("val")
    labels = data.labels[validation_rows(val)]
    shapes = {probs.shape for _, probs in candidates}
    if shapes != {(len(labels), len(data.classes))}:
        raise HpoError(
            f"stored validation predictions of study '{study.study_name}' have shape "
            f"{sorted(shapes)[0]}, its validation split {(len(labels), len(data.classes))}"
        )
    selection = select([probs for _, probs in candidates], labels, request.size)
    trials = [candidates[i][0] for i in selection.members]
    reporter.message(
        "ensemble selected on validation: "
        + ", ".join(f"trial {t.number} x{n}" for t, n in zip(trials, selection.counts, strict=True))
        + f" (validation accuracy by step: {', '.join(f'{a:.3f}' for a in selection.step_accuracy)})"
    )
    members = [retrain_trial(study, t, data=data, reporter=reporter) for t in trials]
    model = combine([m.model for m in members], selection.weights)
    return Shipped(
        model,
        members,
        selection.weights,
        *_tested(model, data, tta),
        selection,
        [trial for trial, _ in candidates],
        request,
    )


def ensemble_metrics(shipped: Shipped) -> dict[str, Any]:
    """``metrics.json``'s ``ensemble``: how it was selected, and each member's own test
    numbers beside the ensemble's headline ones."""
    assert shipped.selection is not None and shipped.candidates is not None
    assert shipped.request is not None
    return {
        "method": "greedy forward selection with replacement on validation accuracy "
        "(Caruana et al. 2004); weights are selection counts over steps",
        "size": shipped.request.describe(),
        "candidates": len(shipped.candidates),
        "steps": [
            {"trial": shipped.candidates[pick].number, "val_accuracy": accuracy}
            for pick, accuracy in zip(
                shipped.selection.picks, shipped.selection.step_accuracy, strict=True
            )
        ],
        "val_accuracy": shipped.selection.step_accuracy[-1],
        "members": [
            {
                "trial": member.trial.number,
                "weight": weight,
                "count": count,
                "trial_val_accuracy": accuracy(member.trial),
                "epochs": member.epochs,
                "seed": member.seed,
                "parameters": member.model.count_params(),
                "test_accuracy": member.report["accuracy"],
                "test_macro_f1": member.report["macro_f1"],
                "params": member.params,
            }
            for member, weight, count in zip(
                shipped.members, shipped.weights, shipped.selection.counts, strict=True
            )
        ],
    }


@dataclass(frozen=True)
class RetrainedTrial:
    """A study's trial retrained and tested by :func:`retrain_trial`, with what it took."""

    trial: FrozenTrial
    data: Dataset
    params: dict[str, Any]
    epochs: int
    schedule_epochs: int
    seed: int
    precision: str  # the compute dtype the retraining ran in (the study's)
    retrained: Retrained

    @property
    def model(self) -> keras.Model:
        return self.retrained.model

    @property
    def result(self) -> TrainResult:
        return self.retrained.result

    @property
    def report(self) -> dict[str, Any]:
        return self.retrained.report


def study_data(
    study: optuna.Study, data_dir: str | Path | None = None, reporter: Reporter | None = None
) -> Dataset:
    """The study's images and split, as its trials saw them (refused if they changed)."""
    reporter = reporter or Reporter()
    recorded = study_record(study)
    space = recorded_space(study.study_name, recorded)
    data = load_dataset(
        recorded["dataset"],
        data_dir,
        int(recorded["image_size"]),
        int(recorded["split_seed"]),
        val_fraction=space.split["val_fraction"],
        test_fraction=space.split["test_fraction"],
        progress=reporter.progress_bars,
    )
    _check_same_data(study, data)
    return data


def retrain_trial(
    study: optuna.Study,
    chosen: FrozenTrial,
    *,
    data_dir: str | Path | None = None,
    data: Dataset | None = None,
    reporter: Reporter | None = None,
    tta: bool = False,
    seed: int | None = None,
) -> RetrainedTrial:
    """Retrain ``chosen`` from scratch on train+val with the study's recorded data (``data``
    when already loaded by :func:`study_data`), space, precision, the trial's seed (or
    ``seed``: a seed ensemble's other members) and retraining length, then evaluate it once
    on the test split. The export ships this model; ``hpo bench`` reports this test accuracy
    for each strategy's winner."""
    reporter = reporter or Reporter()
    recorded = study_record(study)
    space = recorded_space(study.study_name, recorded)
    # Keras (and its backend) only now: a refused request answers in a fraction of a second
    reporter.message(f"backend: {load_backend()}")
    from hpo.execution import feed_bytes, plan_execution

    data = study_data(study, data_dir, reporter) if data is None else data
    params = trial_config(space, chosen)
    epochs = retrain_epochs(chosen, default=space.epochs)
    if seed is None:
        seed = int(chosen.user_attrs.get(SEED, recorded["split_seed"]))
    train_val = data.split("train", "val")
    if not len(data.split("test")):
        raise HpoError(f"study '{study.study_name}' has an empty test split; nothing to test on")

    reporter.message(
        f"retraining trial {chosen.number} on train+val ({len(train_val)} images) "
        f"for {_epochs(epochs)} (its latest epoch within one standard error of its best "
        f"validation accuracy), seed {seed}"
    )
    # the precision the study's trials trained in (studies older than the key: float32)
    execution = plan_execution(
        {**space.train, "precision": recorded["precision"]}, feed_bytes(train_val)
    )
    reporter.trial_started(chosen.number, params, epochs, runs_on=execution.describe())
    retrained = retrain_and_test(
        params,
        data,
        epochs=epochs,
        seed=seed,
        augment=bool(space.train["augment"]),
        schedule_epochs=space.epochs,
        tta=tta,
        execution=execution,
        on_epoch=lambda epoch, logs: reporter.epoch_ended(chosen.number, epoch, logs),
    )
    reporter.trial_finished(chosen.number, "COMPLETE", None, retrained.result.seconds, None)
    return RetrainedTrial(
        trial=chosen,
        data=data,
        params=params,
        epochs=epochs,
        schedule_epochs=space.epochs,
        seed=seed,
        precision=execution.precision,
        retrained=retrained,
    )


def retrain_and_test(
    params: Mapping[str, Any],
    data: Dataset,
    *,
    epochs: int,
    seed: int,
    augment: bool,
    schedule_epochs: int | None = None,
    tta: bool = False,
    on_epoch: EpochHook | None = None,
    execution: Execution | None = None,
) -> Retrained:
    """Train ``params`` on train+val with :func:`hpo.training.train` for ``epochs`` (of a
    learning-rate schedule ``schedule_epochs`` long), drop the augmentation layers and test
    the result once on the test split: the model shipped is the model tested. Benchmarks
    call this too, so the numbers they report are what an export would score."""
    from hpo.training import train

    result = train(
        params,
        data.split("train", "val"),
        num_classes=len(data.classes),
        epochs=epochs,
        augment=augment,
        seed=seed,
        on_epoch=on_epoch,
        schedule_epochs=schedule_epochs,
        execution=execution,
    )
    model = _without_augmentation(result.model, params, len(data.classes), data.image_size)
    return Retrained(model, result, *_tested(model, data, tta))


def _tested(
    model: keras.Model, data: Dataset, tta: bool
) -> tuple[dict[str, Any], dict[str, Any] | None, np.ndarray]:
    """The shipped model's test report, its flip-averaged one if ``tta``, and the test
    probabilities the report was made of (the ONNX check and the bench reuse them)."""
    from hpo.training import evaluate, split_probabilities, split_report

    test = data.split("test")
    probs = split_probabilities(model, test)
    tta_report = evaluate(model, test, data.classes, tta=True) if tta else None
    return split_report(probs, test, data.classes), tta_report, probs


def choose_trial(
    study: optuna.Study, number: int | None, max_latency_ms: float | None = None
) -> FrozenTrial:
    """Trial ``number`` if it completed, else the best COMPLETE trial (within
    ``max_latency_ms`` if given); one-line errors. A study of two objectives has no single
    best: it needs ``number`` or ``max_latency_ms``."""
    trials = study.get_trials(deepcopy=False)
    if number is not None and max_latency_ms is not None:
        raise HpoError("choose the trial with --trial or with --max-latency-ms, not both")
    if max_latency_ms is not None:
        return _best_within(study, trials, max_latency_ms)
    if number is None and is_multi(study):
        front = ", ".join(
            f"#{t.number} {t.values[0]:.3f} at {t.values[1]:.3g}" for t in pareto_front(study)
        )
        raise HpoError(
            f"study '{study.study_name}' has two objectives, so no single best trial: choose "
            f"with --max-latency-ms L (its most accurate trial within L) or --trial N "
            f"(Pareto front: {front or 'empty'})"
        )
    if number is None:
        best = best_trials(trials, top=1)
        if not best:
            states = ", ".join(
                f"{n} {state.lower()}" for state, n in state_counts(trials).items() if n
            )
            raise HpoError(
                f"study '{study.study_name}' has no complete trial to export "
                f"({states or 'no trials'})"
            )
        return best[0]
    found = [t for t in trials if t.number == number]
    if not found:
        raise HpoError(
            f"study '{study.study_name}' has no trial {number} (trials 0 to {len(trials) - 1})"
            if trials
            else f"study '{study.study_name}' has no trials"
        )
    if found[0].state != TrialState.COMPLETE:
        raise HpoError(
            f"trial {number} of study '{study.study_name}' is "
            f"{found[0].state.name}, not COMPLETE; only complete trials can be exported"
        )
    return found[0]


def _best_within(
    study: optuna.Study, trials: list[FrozenTrial], max_latency_ms: float
) -> FrozenTrial:
    from hpo.cost import Budget

    Budget(max_latency_ms=max_latency_ms)  # refuses zero and negative limits, in its words
    timed = [t for t in best_trials(trials, top=len(trials)) if LATENCY_MS in t.user_attrs]
    runtimes = Counter(str(t.user_attrs.get(LATENCY_RUNTIME)) for t in timed)
    if len(runtimes) > 1:  # e.g. resumed after installing the onnx extra: 5-10x apart
        counts = ", ".join(
            f"{name}: {n} trial{'s' * (n != 1)}" for name, n in runtimes.most_common()
        )
        raise HpoError(
            f"the latencies of study '{study.study_name}' were measured on different runtimes "
            f"({counts}), which do not compare; choose with --trial N"
        )
    within = [t for t in timed if t.user_attrs[LATENCY_MS] <= max_latency_ms]
    if within:
        return within[0]
    fastest = min(timed, key=lambda t: t.user_attrs[LATENCY_MS], default=None)
    raise HpoError(
        f"no complete trial of study '{study.study_name}' runs within {max_latency_ms:g} ms"
        + (
            f" (the fastest, #{fastest.number}, takes {fastest.user_attrs[LATENCY_MS]:.3g} ms)"
            if fastest
            else " (none has a recorded latency)"
        )
    )


def bundle_path(study_name: str, out: str | Path | None = None) -> Path:
    """``out``, else ``$HPO_EXPORTS/<study>``, else ``exports/<study>``."""
    if out is not None:
        return Path(out).expanduser().absolute()
    return (
        Path(os.environ.get("HPO_EXPORTS") or DEFAULT_EXPORTS).expanduser() / study_name
    ).absolute()


def trial_config(space: SearchSpace, trial: FrozenTrial) -> dict[str, Any]:
    """The full configuration a trial trained with: its sampled values plus the space's fixed
    ones (Optuna stores only what was sampled)."""
    missing = [
        name for name, p in space.params.items() if p.kind != "fixed" and name not in trial.params
    ]
    if missing:
        raise HpoError(
            f"trial {trial.number} has no value for {', '.join(missing)}; "
            "it was not made from the study's recorded search space"
        )
    return {
        name: p.value if p.kind == "fixed" else trial.params[name]
        for name, p in space.params.items()
    }


def _check_same_data(study: optuna.Study, data: Dataset) -> None:
    """Values measured on other files are not the study's; refuse rather than mislabel."""
    recorded = study_record(study)
    for key, now, what in (
        ("data_fingerprint", data.fingerprint, "data"),
        ("split_fingerprint", data.split_fingerprint, "split"),
    ):
        if recorded[key] != now:
            raise HpoError(
                f"the {what} in {data.root} no longer matches study "
                f"'{study.study_name}' ({what} fingerprint {recorded[key][:12]} there, "
                f"{now[:12]} now); use the images the study was tuned on"
            )


def _without_augmentation(
    model: keras.Model, params: Mapping[str, Any], num_classes: int, image_size: int
) -> keras.Model:
    """The trained network minus its augmentation layer, so a bundle holds built-in Keras
    layers only (loads with ``safe_mode=True``, needs no hpo) and its SavedModel's ``serve``,
    which ``model.export`` traces without ``training=False``, cannot augment: with Keras'
    random layers, served predictions once came out randomly flipped, rotated and zoomed."""
    from hpo.model import build_model

    clean = build_model(params, num_classes, image_size, augment=False)
    for layer in clean.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return clean


def _staging_folder(target: Path, force: bool) -> Path:
    """A fresh hidden folder next to ``target``; the bundle is published into place at the
    end, so an interrupted export never leaves half a bundle where users look for one."""
    if target.exists() and not force:
        raise HpoError(f"{target} already exists; pass --force to replace it or --out DIR")
    if target.exists() and not target.is_dir():
        raise HpoError(f"{target} exists and is not a folder")
    try:
        return temporary_sibling(target)
    except OSError as exc:
        raise HpoError(
            f"cannot write the bundle to {target.parent}: {exc.strerror or type(exc).__name__}"
        ) from None


def _write_bundle(
    folder: Path, shipped: Shipped, data: Dataset, metrics: dict[str, Any], command: str
) -> None:
    lead = shipped.lead
    onnx_file = save_model(folder, shipped.model)
    _check_onnx(onnx_file, shipped, data, metrics)
    write_description(folder, data, lead.params, metrics)
    if shipped.selection is None:
        title = f"{data.name}: trial {metrics['trial']} retrained on train+val"
    else:
        title = f"{data.name}: ensemble's heaviest member, trial {metrics['trial']}"
    plots.learning_curve(
        lead.result.history,
        folder / LEARNING_CURVE_FILE,
        f"{title} ({_epochs(lead.epochs)}, no validation split)",
    )
    plots.confusion_matrix(
        metrics["test_confusion_matrix"],
        data.classes,
        folder / CONFUSION_MATRIX_FILE,
        f"{data.name}: test split, accuracy {metrics['test_accuracy']:.3f}, "
        f"macro-F1 {metrics['test_macro_f1']:.3f}",
    )
    _write_explanations(folder, lead.model, data)  # an ensemble: its heaviest member
    (folder / MODEL_CARD_FILE).write_text(
        _model_card(data, lead, metrics, command), encoding="utf-8"
    )


def _check_onnx(
    onnx_file: Path | None, shipped: Shipped, data: Dataset, metrics: dict[str, Any]
) -> None:
    """Check ``model.onnx`` against the Keras model's test probabilities (those of its test
    report; refused when they disagree) and time both runtimes; both go into ``metrics``
    and the model card."""
    from hpo.cost import deployment_latencies
    from hpo.onnx_runtime import check_matches

    if onnx_file is not None:
        test = data.split("test")
        images = test.images[np.sort(test.rows)]
        metrics["onnx_check"] = check_matches(onnx_file, images, shipped.test_probs)
    metrics["latency_ms_per_image"] = deployment_latencies(
        shipped.model, onnx_file, data.image_size
    )


def _write_explanations(folder: Path, model: keras.Model, data: Dataset) -> None:
    """What the shipped CNN looks at: each conv block's feature maps for the first test
    images of every class (one PNG per class), and the first layer's filters."""
    from hpo.explain import feature_maps_png, filters_png

    (folder / FEATURE_MAP_DIR).mkdir()
    test_rows = data.splits["test"]
    for label, name in enumerate(data.classes):
        rows = test_rows[data.labels[test_rows] == label][:FEATURE_MAP_IMAGES]
        if len(rows):
            images = [(np.asarray(data.images[row]), Path(data.files[row]).name) for row in rows]
            feature_maps_png(model, images, folder / FEATURE_MAP_DIR / f"{name}.png")
    filters_png(model, folder / FILTERS_FILE)


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _reproduce_command(
    study_name: str,
    shipped: Shipped,
    storage: str,
    data: Dataset,
    target: Path,
) -> str:
    parts = ["hpo", "export-best", study_name]
    if shipped.request is not None:
        parts += ["--ensemble", shipped.request.describe()]
    else:
        parts += ["--trial", str(shipped.lead.trial.number)]
    parts += ["--storage", redact(storage)]
    if data.name != "demo":  # the demo set is regenerated, identically, in the cache
        parts += ["--data-dir", str(data.root)]
    return " ".join([*parts, "--out", str(target)])


def versions() -> dict[str, str]:
    """Versions of what produced the model, for the model card and bug reports; read from the
    installed packages, so a worker that has not loaded Keras (it forks its trials) can ask."""
    from importlib import metadata

    return {
        "python": platform.python_version(),
        "hpo": __version__,
        "keras": metadata.version("keras"),
        f"backend ({backend_name()})": backend_version(),
        "optuna": optuna.__version__,
        "numpy": np.__version__,
    }


def _model_card(
    data: Dataset, lead: RetrainedTrial, metrics: Mapping[str, Any], command: str
) -> str:
    from hpo.model import block_widths

    params, weights = lead.params, lead.model.count_params()
    ensemble = metrics.get("ensemble")

    tta = metrics.get("tta")
    tta_line = (
        ""
        if tta is None
        else f"\n- with test-time flip averaging (`--tta`: {tta['method']}; twice the compute, "
        f"so reported apart): accuracy {tta['test_accuracy']:.4f}, macro-F1 "
        f"{tta['test_macro_f1']:.4f}"
    )
    units = int(params.get("dense_units", 0))
    sizes = {split: len(rows) for split, rows in data.splits.items()}
    per_class = "\n".join(
        f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
        for name, s in metrics["test_per_class"].items()
    )
    val_acc = metrics["trial_val_accuracy"]
    what = f"trial {metrics['trial']}"
    ensemble_section = ""
    if ensemble is not None:
        what = f"an ensemble of {len(ensemble['members'])} trials"
        rows = "\n".join(
            f"| {m['trial']} | {m['weight']:.3f} | {m['epochs']} | {m['seed']} | "
            f"{m['parameters']:,} | {m['trial_val_accuracy']:.4f} | {m['test_accuracy']:.4f} |"
            for m in ensemble["members"]
        )
        ensemble_section = f"""
## Ensemble

The model's output is the weighted average of the class probabilities of its members, each
retrained on train+val like a single winner (its own epochs and seed). Members were chosen by
{ensemble["method"]}, from {ensemble["candidates"]} complete trials (`--ensemble {ensemble["size"]}`);
validation accuracy after each step: {", ".join(f"{s['val_accuracy']:.4f}" for s in ensemble["steps"])}.
The sections below describe its heaviest member, trial {metrics["trial"]}; `hpo explain` draws it.

| trial | weight | epochs | seed | weights | val accuracy (search) | test accuracy alone |
|---|---|---|---|---|---|---|
{rows}
| **ensemble** | 1 | {metrics["epochs"]} | | {metrics["parameters"]:,} | {ensemble["val_accuracy"]:.4f} (selection) | **{metrics["test_accuracy"]:.4f}** |
"""
    return f"""# {data.name} classifier (study '{metrics["study"]}', {what})

A Keras CNN found by an hpo search and retrained on train+val. Input: RGB images resized to
{data.image_size}x{data.image_size}, pixel values 0-255 (scaling is inside the model; see
`preprocessing.json`). Classes (`labels.json`): {", ".join(data.classes)}.

## Data

- dataset: `{data.name}` ({data.layout}), {len(data.files)} readable images in `{data.root}`
- data fingerprint: `{data.fingerprint}`
- split fingerprint: `{data.split_fingerprint}` (seed {data.seed}; file lists in `split.json`)
- split sizes: train {sizes["train"]}, val {sizes["val"]}, test {sizes["test"]}
- retrained on train+val ({metrics["train_images"]} images); the test split was used once,
  for the numbers below, and never during the search

## Model

- family: `{params.get("block", "plain")}` blocks, widths {block_widths(params)}, each followed
  by 2x2 max pooling; global average pooling, {f"a dense layer of {units} units" if units else "no dense layer"},
  dropout {params["dropout"]}, {describe_head(len(data.classes))}; {weights:,} weights
- augmentation was used in training only; the exported model has none
- the exported model: {metrics["parameters"]:,} weights; its measured inference cost is
  under "Inference cost" below
{ensemble_section}
## Training

- learning rate {params["learning_rate"]:.3g}, schedule `{params.get("lr_schedule", "constant")}`
  (its length: the trial's {metrics["schedule_epochs"]} epochs), optimizer `{params["optimizer"]}`,
  label smoothing {params.get("label_smoothing", 0.0)}
- parameters (`params.json`): {", ".join(f"{k}={v}" for k, v in params.items())}
- epochs: {lead.epochs}, the latest epoch within one standard error of the trial's best
  validation accuracy (with no validation split left there is nothing to early-stop on)
- seed: {lead.seed} (the trial's); split seed {data.seed}
- precision: {metrics["precision"]} during training (the study's); the bundled model computes
  in float32
- trial's validation accuracy during the search: {"-" if val_acc is None else f"{val_acc:.4f}"}

## Test results ({metrics["test_images"]} images)

- accuracy: {metrics["test_accuracy"]:.4f}
- macro-F1: {metrics["test_macro_f1"]:.4f}{tta_line}

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

Confusion matrix: `confusion_matrix.png` (rows: true class). Training curves: `learning_curve.png`.

{_cost_section(metrics)}

## Software

{chr(10).join(f"- {name}: {version}" for name, version in versions().items())}

## Reproduce

```
{command}
```
"""


def _cost_section(metrics: Mapping[str, Any]) -> str:
    """The model card's measured latency per image, per runtime and batch size, and how
    the ONNX file was checked."""
    from hpo.onnx_runtime import converter

    latencies = metrics["latency_ms_per_image"]
    batches = list(next(iter(latencies.values())))
    rows = "\n".join(
        f"| {runtime} | " + " | ".join(f"{per[b]:.3g}" for b in batches) + " |"
        for runtime, per in latencies.items()
    )
    check = metrics.get("onnx_check")
    onnx_line = (
        "`model.onnx` was not written (hpo's onnx extra is not installed)"
        if check is None
        else f"`model.onnx` (Keras' ONNX export, {converter()}) gives the same class as `model.keras` on "
        f"all {check['images']} test images, probabilities within {check['max_abs_diff']:.2g} "
        f"(tolerance {check['tolerance']:g})"
    )
    return f"""## Inference cost (the exporting machine: {platform.machine()}, {os.cpu_count()} CPUs)

Milliseconds per image, median of timed runs after a warm-up; `keras` is the compiled
`predict_on_batch` ({backend_name()}'s own threads), `onnxruntime` ONNX Runtime's CPU provider on one
thread (the thread setting of the search's latency budget).

| runtime | {" | ".join(f"batch {b}" for b in batches)} |
|---|{"---|" * len(batches)}
{rows}

{onnx_line}."""


def _record(
    study: optuna.Study,
    trial: FrozenTrial,
    bundle: Path,
    metrics: Mapping[str, Any],
    artifacts: str | Path | None,
) -> None:
    """Note the export on the study and upload its report files as study artifacts.

    Optuna refuses to change a finished trial (attributes and artifacts alike), so both go
    on the study, keyed and named by trial number.
    """
    files = [
        *REPORT_FILES,
        *(f"{FEATURE_MAP_DIR}/{p.name}" for p in sorted((bundle / FEATURE_MAP_DIR).glob("*.png"))),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ids = {}
        for name in files:
            named = Path(tmp) / f"export-trial{trial.number}-{name.replace('/', '-')}"
            shutil.copyfile(bundle / name, named)
            ids[name] = attach(study, named, path=artifacts)
    study.set_user_attr(
        export_key(trial.number),
        {
            "trial": trial.number,
            "bundle": str(bundle),
            "exported_at": metrics["exported_at"],
            "test_accuracy": metrics["test_accuracy"],
            "test_macro_f1": metrics["test_macro_f1"],
            "epochs": metrics["epochs"],
            **(
                {"members": [m["trial"] for m in metrics["ensemble"]["members"]]}
                if "ensemble" in metrics
                else {}
            ),
            "artifacts": ids,
        },
    )
