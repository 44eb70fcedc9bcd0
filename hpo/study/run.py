"""``run_study``: the one entry point of a search, shared by ``hpo run``, ``hpo worker``
and notebooks; and ``load_study`` for the commands that read a finished one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

from hpo.cost import Budget
from hpo.errors import HpoError
from hpo.progress import Reporter
from hpo.storage import DEFAULT_STORAGE, HEARTBEAT_SECONDS, open_storage, redact
from hpo.study import isolate, optuna_loop
from hpo.study.setup import TrialObserver, announce_backend, prepare_run
from hpo.study.slots import count_finished, epochs_used


def run_study(
    dataset: str,
    *,
    n_trials: int | None = 10,
    timeout: float | None = None,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    data_dir: str | Path | None = None,
    space: str | Path | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    split_seed: int | None = None,
    engine: str | None = None,
    tuner: str | None = None,
    total: bool = False,
    worker: str = "",
    reporter: Reporter | None = None,
    artifacts: str | Path | None = None,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    budget_epochs: int | None = None,
    strategy: str | None = None,
    observers: Sequence[TrialObserver] = (),
    trials_per_process: int = 0,
    budget: Budget | None = None,
    objectives: str | None = None,
) -> optuna.Study:
    """Tune a CNN on ``dataset``; re-running with the same arguments resumes the study
    (and one without ``space``/``epochs``/``image_size``/``engine``/``tuner`` takes them
    from the study's record).

    ``engine`` is "optuna" (default) or "keras-tuner" with ``tuner`` "hyperband" (default),
    "bayesian" or "random". ``seed`` seeds the search (sampler or oracle, and each trial's
    initialization); ``split_seed`` (default: the study's, else 0) the train/val/test split,
    kept apart so that searches with different seeds share one split and stay comparable.

    ``n_trials`` counts the trials this call adds, or with ``total=True`` the study's
    finished (complete or pruned) trials across all workers; ``worker`` names this process
    in the log and on its trials (user attr ``worker``). ``timeout`` (seconds) stops
    starting new trials; the running one finishes. ``artifacts`` is the folder of the
    artifact store that receives each trial's learning curves (default ``$HPO_ARTIFACTS``
    or ``./artifacts``). ``heartbeat_seconds`` is how often a running trial says it is
    alive (see :mod:`hpo.storage`). ``budget_epochs`` stops starting trials once the
    study has trained that many epochs in total (``n_trials=None``: the budget alone stops).
    ``strategy`` names the sampler + pruner (:mod:`hpo.study.strategies`; None: the study's
    recorded one, else hpo's default; the Optuna engine's only). ``observers`` are called
    with (study, trial) after every trial is told (e.g. :class:`hpo.mlflow_mirror.MlflowMirror`).
    ``trials_per_process`` > 0 trains that many trials per child process
    (:mod:`hpo.study.isolate`, Optuna engine), so memory the backend never frees goes back
    with each child; 0 trains in this process (a notebook's reporter sees every event).
    ``budget`` (:class:`hpo.cost.Budget`, Optuna engine) rejects configurations whose
    inference latency or parameter count is over it before they train; a resumed study
    keeps its recorded budget. ``objectives`` "accuracy,latency" (or "accuracy,params";
    Optuna engine) makes a two-objective study (:mod:`hpo.study.objectives`); None: the
    study's recorded ones, else accuracy alone.
    """
    if trials_per_process < 0:
        raise HpoError(
            f"trials per process must be 0 (no child processes) or more, got {trials_per_process}"
        )
    setup = prepare_run(
        dataset,
        storage=storage,
        study_name=study_name,
        data_dir=data_dir,
        space=space,
        epochs=epochs,
        image_size=image_size,
        seed=seed,
        split_seed=split_seed,
        engine=engine,
        tuner=tuner,
        total=total,
        worker=worker,
        reporter=reporter,
        artifacts=artifacts,
        heartbeat_seconds=heartbeat_seconds,
        strategy=strategy,
        budget=budget,
        objectives=objectives,
    )
    setup.observers.extend(observers)
    study, reporter = setup.study, setup.reporter
    done = count_finished(study)
    if total:
        reporter.message(
            f"worker {worker} joined study '{study.study_name}' in {setup.storage}: "
            f"{done}{'' if n_trials is None else f' of {n_trials}'} finished "
            f"trials so far, {epochs_used(study)} epochs trained"
            f"{f' of a {budget_epochs}-epoch budget' if budget_epochs else ''}; "
            f"heartbeat every {heartbeat_seconds}s"
        )
    else:
        reporter.message(
            f"study '{study.study_name}' ({setup.strategy}) in {setup.storage}: "
            f"{done} finished trials so far, {epochs_used(study)} epochs trained"
            + (f" of a {budget_epochs}-epoch budget" if budget_epochs else "")
        )
    if setup.engine == "keras-tuner":  # KerasTuner keeps its tuner in this process
        from hpo.study import keras_tuner_loop  # imports KerasTuner only when it is used

        announce_backend(reporter, setup.execution)
        keras_tuner_loop.optimize(
            setup, n_trials=n_trials, timeout=timeout, budget_epochs=budget_epochs
        )
    elif trials_per_process:
        isolate.optimize_in_children(
            setup,
            n_trials=n_trials,
            timeout=timeout,
            total=total,
            done=done,
            per_process=trials_per_process,
            budget_epochs=budget_epochs,
        )
    else:
        announce_backend(reporter, setup.execution)
        optuna_loop.optimize(
            setup,
            n_trials=n_trials,
            timeout=timeout,
            total=total,
            done=done,
            budget_epochs=budget_epochs,
        )
    return study


def load_study(storage: str, study_name: str) -> optuna.Study:
    """An existing study, or a one-line error naming the studies that do exist."""
    rdb = open_storage(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(rdb))
        raise HpoError(
            f"no study '{study_name}' in {redact(storage)} "
            f"(studies there: {', '.join(names) or 'none'})"
        ) from None
