"""How workers share one study's ``--trials`` total and ``--budget-epochs``: slots, claims
and the stop rule."""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

from hpo.storage import beat_once, trial_count, user_attr_total
from hpo.trials import EPOCHS_TRAINED, FAIL_REASON

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States that hold one of a study's --trials slots: finished, training, or queued (a retry).
HELD = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus: another worker took the study's last slot"


def count_finished(study: optuna.Study) -> int:
    """Complete and pruned trials: what ``--trials`` counts."""
    return trial_count(study._storage, study._study_id, FINISHED)


def study_epochs(storage: optuna.storages.BaseStorage, study_id: int) -> int:
    """Epochs trained by the study's trials in any state (each trial records
    ``epochs_trained`` when it is told; a running trial counts once it finishes), summed in
    SQL so the stop rule costs the same at trial 10 and 10,000."""
    return user_attr_total(storage, study_id, EPOCHS_TRAINED)


def epochs_used(study: optuna.Study) -> int:
    """Epochs trained in ``study`` so far, by every worker and run: what ``--budget-epochs``
    counts, so that searches are compared at equal compute, not equal trial counts."""
    return study_epochs(study._storage, study._study_id)


def stop_reason(
    study: optuna.Study,
    target: int | None,
    n_trials: int | None,
    added: int,
    total: bool,
    started: float,
    timeout: float | None,
    budget_epochs: int | None = None,
) -> str:
    """Why the loop should start no new trial, or "" to go on."""
    if timeout is not None and time.monotonic() - started >= timeout:
        return f"timeout of {timeout:g}s reached"
    if budget_epochs is not None and epochs_used(study) >= budget_epochs:
        return f"epoch budget of {budget_epochs} reached"
    if target is None:
        return ""
    if total:
        return (
            f"study reached its total of {target} finished trials"
            if count_finished(study) >= target
            else ""
        )
    return f"{n_trials} trials done" if added >= (n_trials or 0) else ""


def claim_trial(study: optuna.Study, target: int | None) -> optuna.Trial | None:
    """The next trial to train, or None while every one of the study's ``target`` slots is
    held by others (``target`` None: no limit).

    Queued retries are popped before new trials are made. Two workers can pass the first
    check for the last slot at once; then the higher trial number gives way, recorded as a
    FAILED surplus trial before anything is sampled. That rule never lets more than
    ``target`` trials train: Optuna creates trials under a lock on the study row, so when
    ``ask`` returns trial k every trial numbered below k is visible, and a trial that goes
    on to finish is WAITING, RUNNING or finished at every moment before. If k gives way
    because a lower trial later fails, the slot reopens and the loop asks again.
    """
    if target is not None:
        if trial_count(study._storage, study._study_id, (*FINISHED, TrialState.RUNNING)) >= target:
            return None  # a WAITING trial beyond that is left for a later, larger --trials
    with warnings.catch_warnings():  # heartbeats are ours (hpo.storage.heartbeat)
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    beat_once(study, trial)
    if target is not None and gives_way(study, trial, target):
        trial.set_user_attr(FAIL_REASON, SURPLUS)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def gives_way(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """True when ``target`` lower-numbered trials already hold the study's slots."""
    return trial_count(study._storage, study._study_id, HELD, below=trial.number) >= target


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether ``trial`` is still RUNNING in the storage (not told, not failed by another)."""
    return study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING
