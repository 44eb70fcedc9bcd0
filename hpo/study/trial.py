"""One trial: train a configuration with :func:`hpo.training.train` and tell the study how
it ended (value or state, curves, F1, confusion matrix, seeds, learning-curve artifact)."""

from __future__ import annotations

import time
import optuna
from optuna.trial import TrialState

from hpo.errors import is_out_of_memory
from hpo.storage import heartbeat
from hpo.study.interrupt import INTERRUPTED
from hpo.study.setup import MONITOR, RunSetup, best_value


def run_trial(setup: RunSetup, trial: optuna.Trial) -> None:
    """Train one configuration and tell the study how it ended. Only a GPU out-of-memory
    error fails just this trial; anything else is a bug or a broken machine and stops the
    run after the trial is recorded as FAILED with its reason."""
    from optuna_integration import KerasPruningCallback

    from hpo.training import StopOnRequest, evaluate, train
    from hpo.trial_artifacts import attach_learning_curve

    study, data, space, reporter = setup.study, setup.data, setup.space, setup.reporter
    params = space.sample(trial)
    seed = setup.seed + trial.number
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("feed", setup.execution.feed)
    trial.set_user_attr("precision", setup.execution.precision)
    reporter.trial_started(trial.number, params, space.epochs, runs_on=setup.execution.describe())
    history: dict[str, list[float]] = {}
    started = time.monotonic()

    def finish(state: TrialState, value: float | None = None, note: str = "") -> None:
        trial.set_user_attr("history", history)
        trial.set_user_attr("epochs_trained", len(history.get("loss", [])))
        trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
        if note:
            trial.set_user_attr("fail_reason", note)
        attach_learning_curve(trial, history, state.name, setup.artifacts)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        setup.trial_told(trial._trial_id)
        reporter.trial_finished(trial.number, state.name, value, time.monotonic() - started,
                                best_value(study), note)

    train_split, val_split = data.split("train"), data.split("val")
    with heartbeat(study, trial):
        try:
            result = train(
                params, train_split, num_classes=len(data.classes), epochs=space.epochs,
                val_split=val_split, augment=bool(space.train["augment"]), seed=seed,
                history=history, execution=setup.execution,
                on_epoch=lambda epoch, logs: reporter.epoch_ended(trial.number, epoch, logs),
                callbacks=[StopOnRequest(lambda: setup.interrupt.requested),
                           KerasPruningCallback(trial, MONITOR)],
            )
            report = evaluate(result.model, val_split, data.classes)
        except optuna.TrialPruned:
            finish(TrialState.PRUNED)
            return
        except KeyboardInterrupt:
            finish(TrialState.FAIL, note=INTERRUPTED)
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the trial, then judged
            note = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if is_out_of_memory(exc):
                finish(TrialState.FAIL, note=f"GPU out of memory ({note[:300]})")
                return
            finish(TrialState.FAIL, note=note[:500])
            raise
    history_acc = history.get(MONITOR, [])
    trial.set_user_attr("best_epoch", int(max(range(len(history_acc)), key=history_acc.__getitem__)) + 1
                        if history_acc else 0)
    trial.set_user_attr("val_macro_f1", report["macro_f1"])
    trial.set_user_attr("val_confusion_matrix", report["confusion_matrix"])
    finish(TrialState.COMPLETE, report["accuracy"])


