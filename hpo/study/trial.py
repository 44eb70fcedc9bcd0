"""One trial: train a configuration with :func:`hpo.training.train` and tell the study how
it ended (value or state, curves, F1, confusion matrix, seeds, learning-curve artifact)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo import trials
from hpo.errors import TrialFailed, first_line
from hpo.score import MONITOR
from hpo.storage import heartbeat
from hpo.study.interrupt import INTERRUPTED
from hpo.study.setup import RunSetup, best_value


def run_trial(setup: RunSetup, trial: optuna.Trial) -> None:
    """The Optuna engine's trial: sample a configuration from the space and train it, with
    the study's pruner judging every epoch."""
    train_and_tell(setup, trial, setup.space.sample(trial), seed=setup.seed + trial.number)


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
) -> Finished:
    """Train ``params`` (whoever chose them) and tell the study how it ended, with the same
    reporter lines, heartbeat, Ctrl-C handling, pruning, user attrs and learning-curve
    artifact for every engine. ``epochs`` (default: the space's) is the last epoch;
    ``weights``/``initial_epoch`` continue an earlier fit whose curves ``history`` holds
    (``epochs_trained`` counts only the epochs trained here).

    Only :class:`hpo.errors.TrialFailed` (out of memory) fails just this trial; anything else
    is a bug or a broken machine and stops the run after the trial is recorded as FAILED
    with its reason."""
    from hpo.artifacts import attach_learning_curve
    from hpo.metrics import matrix_report
    from hpo.predictions import attach_probabilities
    from hpo.study.pruning import ScorePruning
    from hpo.training import ScoringEpochProbabilities, StopOnRequest, train

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
    # what an ensemble of the study's trials is selected on (hpo.ensemble)
    probabilities = ScoringEpochProbabilities(val_split, pruning.best)
    started = time.monotonic()

    def finish(state: TrialState, note: str = "") -> float | None:
        trial_score = trials.record_end(  # recorded whatever the state
            trial,
            history,
            initial_epoch=initial_epoch,
            seconds=time.monotonic() - started,
            val_images=len(val_split),
            note=note,
        )
        value = trial_score.best if trial_score and state == TrialState.COMPLETE else None
        attach_learning_curve(trial, history, state.name, setup.artifacts)
        if probabilities.probs is not None and state != TrialState.FAIL:
            attach_probabilities(trial, probabilities.probs, setup.artifacts)
            trials.record_probabilities_cost(trial, probabilities.seconds)
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
                on_epoch=lambda epoch, logs: reporter.epoch_ended(trial.number, epoch, logs),
                callbacks=[
                    StopOnRequest(lambda: setup.interrupt.requested),
                    probabilities,
                    pruning,
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
