"""The KerasTuner engine: KerasTuner's oracles (Hyperband, Bayesian optimization, random
search) choose the configurations; hpo trains them and records each one in the Optuna study.

The tuner subclasses KerasTuner's ``BaseTuner`` (the search loop and the oracle's saved
state), not its Keras ``Tuner``: hpo replaces exactly what ``Tuner`` adds (building and
fitting the model), and so also skips what that costs here, a ``tensorboard`` import per
trial on the TensorFlow backend and a deep copy of the callbacks.

Each KerasTuner trial becomes one Optuna trial the moment it starts: created RUNNING with
the values the oracle chose and the space's Optuna distributions
(:meth:`hpo.space.Param.distribution`), then trained and told by
:func:`hpo.study.trial.train_and_tell`, the code path of the Optuna engine's trials (same
reporter lines, heartbeat, Ctrl-C, per-epoch intermediate values, user attrs,
learning-curve artifact, observers); the study's pruner is a ``NopPruner``, since the oracle
decides how long a configuration trains. Creating the trial with ``create_trial`` keeps the
oracle's exact values (``study.ask`` would let Optuna's sampler choose them, and an enqueued
trial could be taken by another process); creating it RUNNING rather than ``add_trial``-ing
it when done shows it in ``hpo status`` and the dashboard while it trains, gives it
heartbeats, and lets the Optuna engine's trial code record it.

The oracle's state lives in ``<artifacts>/keras-tuner/<study>/`` (the artifact store's
folder, which docker-compose already shares between runs), so running the same command
again resumes the KerasTuner search as well as the study.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner
import optuna
from filelock import FileLock, Timeout
from keras_tuner.engine.base_tuner import BaseTuner
from optuna.trial import TrialState

from hpo import trials
from hpo.artifacts import artifact_dir
from hpo.errors import HpoError
from hpo.score import MONITOR
from hpo.study.interrupt import INTERRUPTED
from hpo.study.optuna_loop import RESUME_HINT
from hpo.study.setup import RunSetup
from hpo.study.slots import is_running, stop_reason
from hpo.study.trial import measure_and_record, train_and_tell

FOLDER = "keras-tuner"
CHECKPOINT = "checkpoint.weights.h5"  # a COMPLETE trial's weights, for Hyperband promotions
TRIAL_ID_ATTR = "keras_tuner_trial_id"
DEAD_RUN = "its run ended without recording it (killed or crashed); KerasTuner retries it"


def tuner_dir(artifacts: str | Path | None, study_name: str) -> Path:
    """Where the KerasTuner state of ``study_name`` lives, inside the artifact store's folder."""
    return artifact_dir(artifacts) / FOLDER / re.sub(r"[^\w.-]", "_", study_name)


class _StopSearch(Exception):
    """Raised between trials to end ``BaseTuner.search`` for one of hpo's stop rules."""


class HpoTuner(BaseTuner):
    """A KerasTuner tuner whose trials are hpo trials mirrored into the Optuna study."""

    def __init__(
        self,
        setup: RunSetup,
        oracle: keras_tuner.Oracle,
        directory: Path,
        should_stop: Callable[[], str],
    ) -> None:
        self.setup, self.should_stop = setup, should_stop
        self.current: optuna.Trial | None = None  # the Optuna trial in training
        self.added = 0
        with contextlib.redirect_stdout(io.StringIO()):  # "Reloading Tuner from ..."
            super().__init__(
                oracle=oracle, directory=str(directory.parent), project_name=directory.name
            )
        self.oracle.verbose = 0  # hpo's reporter prints the trials

    def pre_create_trial(self) -> None:
        self.setup.interrupt.check()
        reason = self.should_stop()
        if reason:
            raise _StopSearch(reason)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        setup, space = self.setup, self.setup.space
        values = trial.hyperparameters.values
        params = {name: values.get(name, param.value) for name, param in space.params.items()}
        parent = values.get("tuner/trial_id")
        initial_epoch = int(values.get("tuner/initial_epoch", 0)) if parent else 0
        mirror = self.current = self.mirror(trial.trial_id, params, parent)
        # the same cost record as Optuna's trials; never fatal (no budget with this engine)
        measure_and_record(setup, mirror, params)
        try:
            finished = train_and_tell(
                setup,
                mirror,
                params,
                seed=setup.seed + mirror.number,
                epochs=int(values.get("tuner/epochs", space.epochs)),
                initial_epoch=initial_epoch,
                weights=str(self.checkpoint(parent)) if parent else None,
                history=self.inherited_history(parent, initial_epoch) if parent else None,
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded as FAILED by train_and_tell; stop the search
            raise keras_tuner.errors.FatalError(str(exc)) from exc
        finally:
            self.added += 1
        if finished.state != TrialState.COMPLETE or finished.value is None:  # out of memory
            raise keras_tuner.errors.FailedTrialError(
                f"trial {mirror.number} failed; see its fail_reason"
            )
        finished.model.save_weights(str(self.checkpoint(trial.trial_id)))
        return {MONITOR: float(finished.value)}

    def mirror(self, kt_trial_id: str, params: dict[str, Any], parent: str | None) -> optuna.Trial:
        """A RUNNING Optuna trial holding the oracle's values with their distributions."""
        study, space = self.setup.study, self.setup.space
        distributions = {name: p.domain for name, p in space.params.items() if p.domain is not None}
        attrs: dict[str, Any] = {
            TRIAL_ID_ATTR: kt_trial_id,
            "tuner": self.setup.tuner,
            trials.SAMPLER_SEED: oracle_seed(self.setup.seed),
        }
        if parent:
            attrs["continues_trial"] = self.mirrored(parent).number
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={name: params[name] for name in distributions},
            distributions=distributions,
            user_attrs=attrs,
        )
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        return optuna.Trial(study, trial_id)

    def mirrored(self, kt_trial_id: str) -> optuna.trial.FrozenTrial:
        """The COMPLETE Optuna trial that recorded KerasTuner trial ``kt_trial_id``."""
        for trial in reversed(
            self.setup.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ):
            if trial.user_attrs.get(TRIAL_ID_ATTR) == kt_trial_id:
                return trial
        raise HpoError(
            f"KerasTuner trial {kt_trial_id} is not in study '{self.setup.study.study_name}'"
        )

    def inherited_history(self, parent: str, initial_epoch: int) -> dict[str, list[float]]:
        """The curves of the epochs a promoted trial continues from, so its history, learning
        curve and best epoch describe the whole fit (its intermediate values and
        ``epochs_trained`` count only the epochs it trained itself)."""
        history = trials.history(self.mirrored(parent))
        return {key: list(values[:initial_epoch]) for key, values in history.items()}

    def checkpoint(self, kt_trial_id: str) -> Path:
        return Path(self.get_trial_dir(kt_trial_id)) / CHECKPOINT


def oracle_seed(seed: int) -> int:
    """The oracle's seed for search seed ``seed``: KerasTuner reads 0 as "no seed" and would
    draw a random one, so shift by one."""
    return seed % 2**31 + 1


def make_oracle(setup: RunSetup) -> keras_tuner.Oracle:
    """The oracle ``--tuner`` names, over the space's parameters, seeded by ``--seed``."""
    space, settings = setup.space, setup.space.keras_tuner
    hp = keras_tuner.HyperParameters()
    for param in space.params.values():
        param.declare(hp)
    common = {
        "objective": keras_tuner.Objective(MONITOR, direction="max"),
        "seed": oracle_seed(setup.seed),
        "hyperparameters": hp,
        "allow_new_entries": False,
        "tune_new_entries": False,
        # hpo stops the run itself on anything but a GPU out-of-memory trial
        "max_consecutive_failed_trials": 10**9,
    }
    if setup.tuner == "hyperband":
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=space.epochs,
            factor=int(settings["factor"]),
            hyperband_iterations=int(settings["hyperband_iterations"]),
            **common,
        )
    if setup.tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=None, num_initial_points=int(settings["initial_points"]), **common
        )
    return keras_tuner.oracles.RandomSearchOracle(max_trials=None, **common)


def optimize(
    setup: RunSetup,
    *,
    n_trials: int | None,
    timeout: float | None,
    budget_epochs: int | None = None,
) -> None:
    """Run the KerasTuner search until ``n_trials`` are added, ``timeout`` passes, the
    study has trained ``budget_epochs`` epochs (checked between trials, like the Optuna
    engine), the user interrupts or the oracle has nothing left to try (a finished
    Hyperband; with a budget and no ``hyperband_iterations`` in the space, Hyperband sweeps
    its brackets until the budget stops it)."""
    study, reporter, interrupt = setup.study, setup.reporter, setup.interrupt
    folder = tuner_dir(setup.artifacts, study.study_name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{folder}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise HpoError(
            f"another run is using the KerasTuner search in {folder}; "
            "the keras-tuner engine runs one process per study"
        ) from None
    started = time.monotonic()
    tuner: HpoTuner | None = None
    try:
        fail_dead_mirrors(study)
        tuner = HpoTuner(
            setup,
            make_oracle(setup),
            folder,
            lambda: stop_reason(
                study,
                None if n_trials is None else n_trials,
                n_trials,
                tuner.added if tuner else 0,
                False,
                started,
                timeout,
                budget_epochs,
            ),
        )
        check_same_study(tuner, setup)
        tuner.save()  # KerasTuner reloads only once its tuner file exists: now, not after a trial
        if setup.tuner == "hyperband":
            set_sweeps(tuner.oracle, setup, budget_epochs)
        reporter.message(
            f"KerasTuner {setup.tuner} search in {folder} "
            f"({len(tuner.oracle.trials)} KerasTuner trials so far)"
        )
        reason = f"KerasTuner's {setup.tuner} search is complete"
        with interrupt:
            try:
                tuner.search()
            except _StopSearch as stop:
                reason = str(stop)
            except keras_tuner.errors.FatalError as exc:
                raise (exc.__cause__ or exc) from None
    except KeyboardInterrupt:
        current = tuner.current if tuner else None
        if current is not None and is_running(study, current):  # stopped before training
            current.set_user_attr(trials.FAIL_REASON, INTERRUPTED)
            study.tell(current, state=TrialState.FAIL)
        reporter.study_finished(study, RESUME_HINT)
        raise
    finally:
        lock.release()
    reporter.study_finished(study, reason)


def set_sweeps(oracle: Any, setup: RunSetup, budget_epochs: int | None) -> None:
    """How many times Hyperband sweeps its brackets in this run: the space's
    ``hyperband_iterations`` if it gives one, else without end when a budget is to stop the
    search, else 1. Set after the oracle reloads, which restores the count of the run that
    started the search; never below the sweep already under way (Hyperband stops only when
    the count is reached exactly)."""
    if "keras_tuner.hyperband_iterations" in setup.space.given:
        wanted: float = int(setup.space.keras_tuner["hyperband_iterations"])
    else:
        wanted = float("inf") if budget_epochs is not None else 1
    oracle.hyperband_iterations = max(wanted, oracle._current_iteration + 1)


def fail_dead_mirrors(study: optuna.Study) -> None:
    """RUNNING trials left by a killed run (the lock says none is alive) become FAILED;
    KerasTuner retries their configurations when its oracle reloads."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, trials.FAIL_REASON, DEAD_RUN)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def check_same_study(tuner: HpoTuner, setup: RunSetup) -> None:
    """Refuse a KerasTuner folder whose finished trials this study never recorded: it was
    made for a same-named study in another storage, and resuming it would mix the two."""
    mirrored = {
        t.user_attrs.get(TRIAL_ID_ATTR)
        for t in setup.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    foreign = [
        trial_id
        for trial_id, trial in tuner.oracle.trials.items()
        if trial.status == "COMPLETED" and trial_id not in mirrored
    ]
    if foreign:
        raise HpoError(
            f"the KerasTuner search in {tuner.project_dir} has trials that study "
            f"'{setup.study.study_name}' in {setup.storage} does not; it belongs to "
            "another storage: pass another --artifacts folder or --study name"
        )
