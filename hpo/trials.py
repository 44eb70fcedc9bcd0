"""The trial record: what hpo writes on each Optuna trial (its user attrs), and the questions
asked of a study's trials. The one module that names those keys: the trial runner and the
engines' loops write them; status, the terminal table, export, bench and the MLflow mirror
read them. Kept apart from :mod:`hpo.progress` (what is printed) so that commands that
print nothing can ask them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from hpo.score import Score, score
from hpo.timing import EpochTimes

if TYPE_CHECKING:
    from hpo.cost import Cost

SEED = "seed"  # the trial's training seed: the export retrains with it
SAMPLER_SEED = "sampler_seed"  # the search seed of the run that sampled it
WORKER = "worker"  # which `hpo worker` trained it
PROCESS = "process"  # host:pid of the process that trained it (a worker's trial child)
FEED = "feed"  # how batches reached the device (hpo.execution)
PRECISION = "precision"  # float32 or mixed_bfloat16 (hpo.execution)
HISTORY = "history"  # Keras' per-epoch curves, inherited epochs included
EPOCHS_TRAINED = "epochs_trained"  # epochs trained by this trial itself: the budget's unit
SECONDS = "seconds"  # wall time from the first epoch's start to being told
VAL_ACC_BEST = "val_acc_best"  # the score (hpo.score): best epoch's validation accuracy
BEST_EPOCH = "best_epoch"  # 1-based
RETRAIN_EPOCHS = "retrain_epochs"  # the epochs the export retrains for (hpo.score)
VAL_ACC_LAST = "val_acc_last"
VAL_MACRO_F1 = "val_macro_f1"  # at the last epoch's validation pass
VAL_CONFUSION = "val_confusion_matrix"
FAIL_REASON = "fail_reason"  # a FAILED trial's one-line reason
EPOCH_SECONDS = "epoch_seconds"  # wall seconds of each epoch trained here (hpo.timing)
VAL_SECONDS = "val_seconds"  # of each epoch's validation pass
COMPILE_SECONDS = "compile_seconds"  # the first epoch's excess over the median later one
# The inference cost (hpo.cost), measured before the first epoch.
LATENCY_MS = "latency_ms"  # median forward pass at batch 1 on the run's CPU
LATENCY_SPREAD_MS = "latency_spread_ms"  # interquartile range of the timed passes
LATENCY_RUNTIME = "latency_runtime"  # onnxruntime or keras-compiled
PARAMS_COUNT = "params_count"
SAVED_BYTES = "saved_bytes"  # model.keras as the bundle writes it
COST_SECONDS = "cost_seconds"  # what measuring it took (0: cached)
COST_ERROR = "cost_error"  # why it could not be measured (the trial trained without it)
OVER_BUDGET = "over_budget"  # 1 on a trial rejected before training; PRUNED, 0 epochs
BUDGET_VIOLATION = "budget_violation"  # why, e.g. "latency 3.1 ms > 2 ms"
# seconds spent reading the validation probabilities kept for ensembles (hpo.predictions)
VAL_PROBS_SECONDS = "val_probs_seconds"

# Worth a field in each best trial of `hpo status --json`.
SUMMARY_KEYS = (
    VAL_MACRO_F1,
    EPOCHS_TRAINED,
    BEST_EPOCH,
    RETRAIN_EPOCHS,
    SECONDS,
    LATENCY_MS,
    PARAMS_COUNT,
    SAVED_BYTES,
)


def record_start(trial: optuna.Trial, *, seed: int, feed: str, precision: str) -> None:
    """What a trial is trained with, and by which process, written before its first epoch."""
    process = f"{socket.gethostname()}:{os.getpid()}"
    for key, value in ((SEED, seed), (FEED, feed), (PRECISION, precision), (PROCESS, process)):
        trial.set_user_attr(key, value)


def record_cost(trial: optuna.Trial, cost: Cost) -> None:
    """The configuration's inference cost, written before its first epoch."""
    for key, value in (
        (LATENCY_MS, cost.latency_ms),
        (LATENCY_SPREAD_MS, cost.spread_ms),
        (LATENCY_RUNTIME, cost.runtime),
        (PARAMS_COUNT, cost.params),
        (SAVED_BYTES, cost.saved_bytes),
        (COST_SECONDS, cost.seconds),
    ):
        trial.set_user_attr(key, value)


def record_over_budget(trial: optuna.Trial, violation: str) -> None:
    """A configuration rejected before training: no epoch trained, and why."""
    trial.set_user_attr(OVER_BUDGET, 1)
    trial.set_user_attr(BUDGET_VIOLATION, violation)
    trial.set_user_attr(EPOCHS_TRAINED, 0)


def record_end(
    trial: optuna.Trial,
    history: Mapping[str, Sequence[float]],
    *,
    initial_epoch: int,
    seconds: float,
    val_images: int | None = None,
    note: str = "",
    times: EpochTimes | None = None,
) -> Score | None:
    """The curves, score, epochs and time of a trial about to be told, whatever its state
    (a pruned or failed trial's epochs count against the budget too); returns the score.
    ``val_images`` (the validation split's size) sets the retraining length; ``times``
    (its epochs' wall seconds) what a timeline of the study needs."""
    trial_score = score(history, val_images)
    trial.set_user_attr(HISTORY, dict(history))
    if trial_score is not None:
        trial.set_user_attr(VAL_ACC_BEST, trial_score.best)
        trial.set_user_attr(BEST_EPOCH, trial_score.best_epoch)
        trial.set_user_attr(RETRAIN_EPOCHS, trial_score.retrain_epoch)
        trial.set_user_attr(VAL_ACC_LAST, trial_score.last)
    trial.set_user_attr(EPOCHS_TRAINED, len(history.get("loss", [])) - initial_epoch)
    trial.set_user_attr(SECONDS, round(seconds, 2))
    if times is not None and times.epoch:
        trial.set_user_attr(EPOCH_SECONDS, times.epoch)
        trial.set_user_attr(VAL_SECONDS, times.validation)
        compiling = times.split()[0]
        if compiling is not None:
            trial.set_user_attr(COMPILE_SECONDS, round(compiling, 3))
    if note:
        trial.set_user_attr(FAIL_REASON, note)
    return trial_score


def record_validation(trial: optuna.Trial, report: Mapping[str, Any]) -> None:
    """A complete trial's macro-F1 and confusion matrix (hpo.metrics.matrix_report)."""
    trial.set_user_attr(VAL_MACRO_F1, report["macro_f1"])
    trial.set_user_attr(VAL_CONFUSION, report["confusion_matrix"])


def record_probabilities_cost(trial: optuna.Trial, seconds: float) -> None:
    """What storing the trial's validation probabilities cost it, so the cost is on record."""
    trial.set_user_attr(VAL_PROBS_SECONDS, round(seconds, 3))


def history(trial: FrozenTrial) -> dict[str, list[float]]:
    """The trial's per-epoch curves ({} before its first epoch)."""
    return dict(trial.user_attrs.get(HISTORY) or {})


def epochs_trained(trial: FrozenTrial) -> int:
    """Epochs this trial trained itself (0 if it never recorded them)."""
    return int(trial.user_attrs.get(EPOCHS_TRAINED) or 0)


def retrain_epochs(trial: FrozenTrial, default: int) -> int:
    """The epochs to retrain ``trial`` for: the latest epoch within one standard error of
    its best (records older than that rule: its best epoch; older still: the epochs it ran;
    none: ``default``)."""
    for key in (RETRAIN_EPOCHS, BEST_EPOCH, EPOCHS_TRAINED):
        value = int(trial.user_attrs.get(key) or 0)
        if value > 0:
            return value
    return default


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), zeros included."""
    counts = {state.name: 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def accuracy(trial: FrozenTrial) -> float | None:
    """A trial's score: its value, or its first value in a study of two objectives."""
    return trial.values[0] if trial.values else None


def best_trials(trials: Iterable[FrozenTrial], top: int = 5) -> list[FrozenTrial]:
    """The ``top`` complete trials, highest validation accuracy first (hpo maximizes)."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(complete, key=lambda t: accuracy(t) or 0.0, reverse=True)[:top]
