"""One trial: train a configuration with :func:`hpo.training.train` and tell the study how
it ended (value or state, curves, F1, confusion matrix, seeds, learning-curve artifact)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from hpo import trials
from hpo.errors import TrialFailed, first_line
from hpo.score import MONITOR
from hpo.storage import heartbeat
from hpo.study import objectives
from hpo.study.interrupt import INTERRUPTED
from hpo.study.setup import RunSetup, best_value
from hpo.timing import EpochTimes

if TYPE_CHECKING:
    from hpo.cost import Cost


def run_trial(setup: RunSetup, trial: optuna.Trial) -> bool:
    """The Optuna engine's trial: sample a configuration from the space, measure its
    inference cost, and train it with the study's pruner judging every epoch, unless it is
    over the study's budget: then it is told PRUNED with no epoch trained, its excess set as
    Optuna constraints, from which TPE learns to sample elsewhere. Returns whether it was
    rejected so."""
    params = setup.space.sample(trial)
    cost = measure_and_record(setup, trial, params)
    if setup.budget.active:
        assert cost is not None  # a budget cannot go on without it (measure_and_record)
        for name, excess in setup.budget.excess(cost).items():
            trial.set_constraint(name, excess)
        violation = setup.budget.violation(cost)
        if violation:
            reject(setup, trial, violation)
            return True
    train_and_tell(setup, trial, params, seed=setup.seed + trial.number, cost=cost)
    return False


def measure_and_record(setup: RunSetup, trial: optuna.Trial, params: dict[str, Any]) -> Cost | None:
    """The configuration's inference cost (:mod:`hpo.cost`, cached), on the trial.

    When it cannot be measured (a converter's bug, say), a study whose budget or objectives
    use it cannot go on: the trial is told FAILED with the reason and the error stops the
    run. Any other study only loses the number: a warning, and the trial trains."""
    from hpo.cost import measure_cost

    try:
        cost = measure_cost(params, len(setup.data.classes), setup.space.image_size)
    except Exception as exc:  # noqa: BLE001 - re-raised where the study needs the cost
        reason = f"measuring its inference cost: {type(exc).__name__}: {first_line(exc)}"
        if setup.budget.active or len(setup.objectives) > 1:
            trial.set_user_attr(trials.FAIL_REASON, reason[:500])
            setup.study.tell(trial, state=TrialState.FAIL)
            setup.trial_told(trial._trial_id)  # observers (MLflow) see it, as any told trial
            raise
        trial.set_user_attr(trials.COST_ERROR, reason[:500])
        setup.reporter.message(
            f"[yellow]warning:[/yellow] trial {trial.number}: {reason}; it trains without one"
        )
        return None
    trials.record_cost(trial, cost)
    return cost


def reject(setup: RunSetup, trial: optuna.Trial, violation: str) -> None:
    """Tell an over-budget trial PRUNED before its first epoch: not a failure of the study,
    and it holds no slot of a pruner's comparison (it reported no epoch)."""
    note = f"over budget: {violation}"
    setup.reporter.trial_started(trial.number, trial.params, 0)
    trials.record_over_budget(trial, violation)
    setup.study.tell(trial, state=TrialState.PRUNED)
    setup.trial_told(trial._trial_id)
    setup.reporter.trial_finished(trial.number, "PRUNED", None, 0.0, best_value(setup.study), note)


@dataclass
class Finished:
    """How a trial ended; ``model`` is the trained model of a COMPLETE trial."""

    state: TrialState
    value: float | None = None
    model: Any = None


def train_and_tell(
    setup: RunSetup,
    trial: optuna.Trial,
    params: dict[str, Any],
    *,
    seed: int,
    epochs: int | None = None,
    initial_epoch: int = 0,
    weights: str | None = None,
    history: dict[str, list[float]] | None = None,
    cost: Cost | None = None,
) -> Finished:
    """Train ``params`` (whoever chose them) and tell the study how it ended, with the same
    reporter lines, heartbeat, Ctrl-C handling, pruning, user attrs and learning-curve
    artifact for every engine. ``epochs`` (default: the space's) is the last epoch;
    ``weights``/``initial_epoch`` continue an earlier fit whose curves ``history`` holds
    (``epochs_trained`` counts only the epochs trained here). ``cost`` is the
    configuration's, told as the second objective of a two-objective study, which is
    never pruned (:mod:`hpo.study.objectives`).

    Only :class:`hpo.errors.TrialFailed` (out of memory) fails just this trial; anything else
    is a bug or a broken machine and stops the run after the trial is recorded as FAILED
    with its reason."""
    from hpo.artifacts import attach_learning_curve
    from hpo.metrics import matrix_report
    from hpo.predictions import attach_probabilities
    from hpo.study.pruning import ScorePruning
    from hpo.training import StopOnRequest, train
    from hpo.validation_pass import ScoringEpochProbabilities

    study, data, space, reporter = setup.study, setup.data, setup.space, setup.reporter
    epochs = space.epochs if epochs is None else epochs
    trials.record_start(
        trial, seed=seed, feed=setup.execution.feed, precision=setup.execution.precision
    )
    reporter.trial_started(trial.number, params, epochs, runs_on=setup.execution.describe())
    history = {} if history is None else history
    pruning = ScorePruning(trial)
    if history.get(MONITOR):  # a continued fit: its best so far includes the inherited epochs
        pruning.best = max(history[MONITOR])
    train_split, val_split = data.split("train"), data.split("val")
    times = EpochTimes()
    multi = len(setup.objectives) > 1
    # what an ensemble of the study's trials is selected on (hpo.ensemble)
    probabilities = ScoringEpochProbabilities(pruning.best)
    started = time.monotonic()

    def finish(state: TrialState, note: str = "") -> float | None:
        trial_score = trials.record_end(  # recorded whatever the state
            trial,
            history,
            initial_epoch=initial_epoch,
            seconds=time.monotonic() - started,
            val_images=len(val_split),
            note=note,
            times=times,
        )
        value = trial_score.best if trial_score and state == TrialState.COMPLETE else None
        attach_learning_curve(trial, history, state.name, setup.artifacts)
        if probabilities.probs is not None and state != TrialState.FAIL:
            attach_probabilities(trial, probabilities.probs, setup.artifacts)
            trials.record_probabilities_cost(trial, probabilities.seconds)
        if multi and value is not None:
            assert cost is not None  # run_trial measures it before training
            study.tell(trial, objectives.values(setup.objectives, value, cost), state=state)
        else:
            study.tell(trial, value, state=state)
        setup.trial_told(trial._trial_id)
        reporter.trial_finished(
            trial.number, state.name, value, time.monotonic() - started, best_value(study), note
        )
        return value

    with heartbeat(study, trial):
        try:
            result = train(
                params,
                train_split,
                num_classes=len(data.classes),
                epochs=epochs,
                val_split=val_split,
                augment=bool(space.train["augment"]),
                seed=seed,
                history=history,
                initial_epoch=initial_epoch,
                weights=weights,
                execution=setup.execution,
                times=times,
                on_epoch=lambda epoch, logs: reporter.epoch_ended(trial.number, epoch, logs),
                scoring_probabilities=probabilities,  # runs before the callbacks (the pruner)
                callbacks=[
                    StopOnRequest(lambda: setup.interrupt.requested),
                    *([] if multi else [pruning]),
                ],
            )
            # the last epoch's validation pass, counted during fit (no second pass)
            assert result.val_confusion is not None  # a trial always has a val split
            report = matrix_report(result.val_confusion, data.classes)
        except optuna.TrialPruned:
            finish(TrialState.PRUNED)
            return Finished(TrialState.PRUNED)
        except KeyboardInterrupt:
            finish(TrialState.FAIL, note=INTERRUPTED)
            raise
        except TrialFailed as exc:  # this configuration only (out of memory): go on
            finish(TrialState.FAIL, note=exc.reason[:500])
            return Finished(TrialState.FAIL)
        except Exception as exc:  # a bug or a broken machine: recorded, then the run stops
            finish(TrialState.FAIL, note=f"{type(exc).__name__}: {first_line(exc)}"[:500])
            raise
    trials.record_validation(trial, report)
    return Finished(TrialState.COMPLETE, finish(TrialState.COMPLETE), result.model)
