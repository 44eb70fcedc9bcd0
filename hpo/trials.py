"""The trial record: what hpo writes on each Optuna trial (its user attrs), and the questions
asked of a study's trials. The one module that names those keys: the trial runner and the
engines' loops write them; status, the terminal table, export, bench and the MLflow mirror
read them. Kept apart from :mod:`hpo.progress` (what is printed) so that commands that
print nothing can ask them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpo.score import Score, score

SEED = "seed"  # the trial's training seed: the export retrains with it
SAMPLER_SEED = "sampler_seed"  # the search seed of the run that sampled it
WORKER = "worker"  # which `hpo worker` trained it
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
# seconds spent predicting the validation split for ensembles (hpo.predictions)
VAL_PROBS_SECONDS = "val_probs_seconds"

# Worth a field in each best trial of `hpo status --json`.
SUMMARY_KEYS = (VAL_MACRO_F1, EPOCHS_TRAINED, BEST_EPOCH, RETRAIN_EPOCHS, SECONDS)


def record_start(trial: optuna.Trial, *, seed: int, feed: str, precision: str) -> None:
    """What a trial is trained with, written before its first epoch."""
    for key, value in ((SEED, seed), (FEED, feed), (PRECISION, precision)):
        trial.set_user_attr(key, value)


def record_end(
    trial: optuna.Trial,
    history: Mapping[str, Sequence[float]],
    *,
    initial_epoch: int,
    seconds: float,
    val_images: int | None = None,
    note: str = "",
) -> Score | None:
    """The curves, score, epochs and time of a trial about to be told, whatever its state
    (a pruned or failed trial's epochs count against the budget too); returns the score.
    ``val_images`` (the validation split's size) sets the retraining length."""
    trial_score = score(history, val_images)
    trial.set_user_attr(HISTORY, dict(history))
    if trial_score is not None:
        trial.set_user_attr(VAL_ACC_BEST, trial_score.best)
        trial.set_user_attr(BEST_EPOCH, trial_score.best_epoch)
        trial.set_user_attr(RETRAIN_EPOCHS, trial_score.retrain_epoch)
        trial.set_user_attr(VAL_ACC_LAST, trial_score.last)
    trial.set_user_attr(EPOCHS_TRAINED, len(history.get("loss", [])) - initial_epoch)
    trial.set_user_attr(SECONDS, round(seconds, 2))
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


def best_trials(trials: Iterable[FrozenTrial], top: int = 5) -> list[FrozenTrial]:
    """The ``top`` complete trials, highest validation accuracy first (hpo maximizes)."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(complete, key=lambda t: t.value or 0.0, reverse=True)[:top]
