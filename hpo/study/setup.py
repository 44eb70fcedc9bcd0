"""What every search engine needs before its first trial, prepared once per run.

An engine's loop receives a :class:`RunSetup`: the validated space, the loaded data, the
open study with its record checked, the reporter and the Ctrl-C flag. Whatever differs
between engines (how configurations are chosen, when to stop) stays in the engine.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna

from hpo.cost import Budget, cached_cost, cheapest_points, check_reachable
from hpo.data import Dataset, load_dataset
from hpo.data.layouts import check_name
from hpo.device import load_backend
from hpo.errors import HpoError
from hpo.execution import HOST_FLOAT32, Execution, feed_bytes, plan_execution
from hpo.progress import Reporter
from hpo.space import SearchSpace, load_space
from hpo.storage import HEARTBEAT_SECONDS, open_storage, redact, top_trials, trial_count
from hpo.study.interrupt import GracefulInterrupt
from hpo.study.objectives import DEFAULT as DEFAULT_OBJECTIVES
from hpo.study.objectives import directions, is_multi, metric_names, parse_objectives
from hpo.study.record import (
    StudyRecord,
    check_or_record,
    check_settings,
    choose_strategy,
    latency_runtime_of,
    read_record,
    record_strategy,
    recorded_budget,
    recorded_space,
)
from hpo.study.strategies import (
    DEFAULT_STRATEGY,
    STARTS_AT_DEFAULT,
    check_strategy,
    make_strategy,
    queue_default_point,
)

# Called with (study, finished trial) after every trial is told, whatever engine ran it:
# the place for mirrors of the study (experiment trackers) that must never cost a trial.
TrialObserver = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
T = TypeVar("T")


@dataclass
class RunSetup:
    """One run's shared state: what a loop needs to train and record trials."""

    study: optuna.Study
    data: Dataset
    space: SearchSpace
    storage: str
    seed: int
    sampler_seed: int
    reporter: Reporter
    strategy: str = DEFAULT_STRATEGY
    artifacts: str | Path | None = None
    worker: str = ""
    engine: str = "optuna"
    tuner: str = ""  # the KerasTuner tuner of the keras-tuner engine
    interrupt: GracefulInterrupt = field(default_factory=GracefulInterrupt)
    observers: list[TrialObserver] = field(default_factory=list)
    execution: Execution = HOST_FLOAT32  # feed and precision of this run's trials
    budget: Budget = field(default_factory=Budget)  # what a configuration may cost to run
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # hpo.study.objectives

    def trial_told(self, trial_id: int) -> None:
        """Hand the trial with storage id ``trial_id``, as the storage now holds it, to every
        observer (one read of that trial, not of the whole study)."""
        if self.observers:
            frozen = self.study._storage.get_trial(trial_id)
            for observer in self.observers:
                observer(self.study, frozen)


def prepare_run(
    dataset: str,
    *,
    storage: str,
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
    strategy: str | None = None,
    budget: Budget | None = None,
    objectives: str | None = None,
) -> RunSetup:
    """Open the study, settle its settings, load the data and check (or write) its record.

    A resumed study takes its space, epochs, image size, split seed, engine, tuner,
    strategy, budget and objectives from its record unless they are passed; everything that needs no
    pixels is checked before any image is decoded, so a mismatch is refused at once instead
    of after decoding at the wrong size. A new study's budget that no configuration of the
    space can meet is refused before the study is created."""
    from hpo.study.engines import resolve_engine

    reporter = reporter or Reporter()
    check_name(dataset)  # before the space lookup, so a typo is reported as such
    name = study_name or dataset
    rdb = open_storage(storage, heartbeat_seconds=heartbeat_seconds)
    recorded = read_record(rdb, name)
    engine, tuner = resolve_engine(engine, tuner, recorded, workers=total)
    if engine == "optuna":
        if strategy is not None:
            check_strategy(strategy)
        chosen = choose_strategy(rdb, name, strategy, DEFAULT_STRATEGY)
    elif strategy is not None:
        raise HpoError(
            "--strategy applies to --engine optuna; the keras-tuner engine's search "
            "is chosen with --tuner"
        )
    else:
        chosen = f"keras-tuner {tuner}"
    if recorded and space is None:
        search_space = recorded_space(name, recorded, epochs=epochs, image_size=image_size)
    else:
        search_space = load_space(dataset, space).with_overrides(
            epochs=epochs if epochs is not None or not recorded else int(recorded["epochs"]),
            image_size=(
                image_size
                if image_size is not None or not recorded
                else int(recorded["image_size"])
            ),
        )
    if split_seed is None:
        split_seed = int(recorded.get("split_seed", 0))
    budget = recorded_budget(recorded, budget or Budget())
    if budget.active and engine != "optuna":
        raise HpoError(
            "--max-latency-ms and --max-params apply to --engine optuna (its sampler learns "
            "from rejected configurations); the keras-tuner engine has no budget"
        )
    chosen_objectives = parse_objectives(objectives or recorded.get("objectives", "accuracy"))
    if len(chosen_objectives) > 1 and engine != "optuna":
        raise HpoError(
            "--objectives with a cost applies to --engine optuna; the keras-tuner engine "
            "optimises validation accuracy alone"
        )
    if tuner:
        search_space.check_keras_tuner(tuner)
    check_settings(
        name,
        recorded,
        {
            "dataset": dataset,
            "split_seed": split_seed,
            "image_size": search_space.image_size,
            "epochs": search_space.epochs,
            "space_hash": search_space.content_hash,
            "engine": engine,
            "tuner": tuner,
            "max_latency_ms": budget.max_latency_ms,
            "max_params": budget.max_params,
            "objectives": ",".join(chosen_objectives),  # before the runtime it implies
            "latency_runtime": latency_runtime_of(budget, chosen_objectives),
        },
    )

    data = load_dataset(
        dataset,
        data_dir,
        search_space.image_size,
        split_seed,
        val_fraction=search_space.split["val_fraction"],
        test_fraction=search_space.split["test_fraction"],
        progress=reporter.progress_bars,
    )
    report_data(reporter, data)
    if budget.active:  # also on resume: another worker's CPU may be slower
        classes = len(data.classes)
        measured = all(  # then no model to build: no child loading the backend
            cached_cost(point, classes, search_space.image_size)
            for point in cheapest_points(search_space)
        )
        args = (budget, search_space, classes)
        cheapest = check_reachable(*args) if measured else in_child(check_reachable, *args)
        reporter.message(
            f"budget: {budget.describe()} ({cheapest.runtime}, batch 1, this CPU); the space's "
            f"cheapest configuration: {cheapest.latency_ms:.3g} ms, {cheapest.params:,} "
            "parameters; configurations over budget are rejected before training"
        )

    # A resumed or parallel run must not replay the first run's random start-up samples,
    # so the sampler seed mixes in the trials already there and the worker's name.
    existing = count_trials(rdb, name)
    sampler_seed = derive_seed(seed, existing, worker)
    if engine == "optuna":
        study = create_or_load_study(
            rdb,
            name,
            sampler_seed=sampler_seed,
            space=search_space,
            strategy=chosen,
            objectives=chosen_objectives,
        )
    else:  # KerasTuner chooses; trials report to a pruner that never prunes
        study = optuna.create_study(
            storage=rdb,
            study_name=name,
            direction="maximize",
            pruner=optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
    execution = plan_execution(search_space.train, feed_bytes(data.split("train", "val")))
    check_or_record(
        study,
        StudyRecord.of(
            data, search_space, engine, tuner, execution.precision, budget, chosen_objectives
        ),
        data,
        search_space,
    )
    if engine == "optuna":
        record_strategy(study, chosen)
        if existing == 0 and chosen in STARTS_AT_DEFAULT:
            reporter.message(f"strategy {chosen}: the first trial is the space's default point")
    return RunSetup(
        study=study,
        data=data,
        space=search_space,
        storage=redact(storage),
        seed=seed,
        sampler_seed=sampler_seed,
        reporter=reporter,
        strategy=chosen,
        artifacts=artifacts,
        worker=worker,
        engine=engine,
        tuner=tuner,
        execution=execution,
        budget=budget,
        objectives=chosen_objectives,
    )


def in_child(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a forked child when this process has not imported Keras, so
    it never does (:mod:`hpo.study.isolate` forks trial processes from it later, and a
    backend's threads do not survive a fork); in this process otherwise. Exceptions
    (an :class:`HpoError` among them) are raised here."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    if "keras" in sys.modules:
        return function(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_with_backend, function, *args).result()


def _with_backend(function: Callable[..., T], *args: Any) -> T:
    load_backend()  # the backend's start-up chatter goes to its log, not the terminal
    return function(*args)


def announce_backend(reporter: Reporter, execution: Execution | None = None) -> None:
    """Load the backend now (not inside the first trial) and say where trials will run."""
    reporter.message(f"backend: {load_backend()}")
    if execution is not None:
        reporter.message(
            f"trials: {execution.describe()} ({execution.why}), "
            f"{execution.steps_per_execution} steps per execution"
        )


def create_or_load_study(
    rdb: optuna.storages.RDBStorage,
    study_name: str,
    *,
    sampler_seed: int = 0,
    space: SearchSpace,
    strategy: str = DEFAULT_STRATEGY,
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES,
) -> optuna.Study:
    """Open ``study_name`` (creating it) with the seeded sampler and the pruner of
    ``strategy`` (:mod:`hpo.study.strategies`; none with two objectives, see
    :mod:`hpo.study.objectives`). The one worker whose call creates the study queues the
    strategy's first point, so racing workers never queue it twice."""
    sampler, pruner = make_strategy(strategy, space, sampler_seed, len(objectives))
    try:
        study = optuna.create_study(
            storage=rdb,
            study_name=study_name,
            directions=directions(objectives),
            sampler=sampler,
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(storage=rdb, study_name=study_name, sampler=sampler, pruner=pruner)
    if len(objectives) > 1:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names(objectives))  # the dashboard's axis labels
    queue_default_point(study, strategy, space)
    return study


def count_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Trials of ``study_name`` in any state (0 for a study that does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return trial_count(storage, study_id)


def derive_seed(seed: int, existing: int, worker: str) -> int:
    """A sampler seed that differs per resume and per worker but is reproducible."""
    digest = hashlib.sha256(f"{seed}:{existing}:{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def best_value(study: optuna.Study) -> float | None:
    """The study's best (validation accuracy) so far, or None before its first complete
    trial; in a two-objective study, the best accuracy of any trial."""
    if is_multi(study):  # one ranked query, not every trial after every trial
        top = top_trials(study._storage, study._study_id, 1)
        return top[0].values[0] if top else None
    try:
        return study.best_value
    except ValueError:
        return None


def report_data(reporter: Reporter, data: Dataset) -> None:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    how = "cache hit, no image decoding" if data.cache_hit else "decoded into the cache"
    reporter.message(
        f"data: {data.name}, {data.layout}, {len(data.classes)} classes, {sizes}; "
        f"{data.image_size}px, {how} ({data.cache_path})"
    )
    for warning in data.warnings:
        reporter.message(f"[yellow]warning:[/yellow] {warning}")
    if data.bad_files:
        reporter.message(
            f"skipped {len(data.bad_files)} unreadable files (listed in {data.report_path})"
        )
