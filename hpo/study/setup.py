"""What every search engine needs before its first trial, prepared once per run.

An engine's loop receives a :class:`RunSetup`: the validated space, the loaded data, the
open study with its record checked, the reporter and the Ctrl-C flag. Whatever differs
between engines (how configurations are chosen, when to stop) stays in the engine.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna

from hpo.data import Dataset, load_dataset
from hpo.data.layouts import check_name
from hpo.device import load_backend
from hpo.progress import Reporter
from hpo.space import SearchSpace, load_space
from hpo.storage import HEARTBEAT_SECONDS, open_storage, redact, trial_count
from hpo.study.interrupt import GracefulInterrupt
from hpo.study.record import StudyRecord, check_or_record

MONITOR = "val_accuracy"  # the objective, the pruner's input and the dashboard's curve

# Called with (study, finished trial) after every trial is told, whatever engine ran it:
# the place for mirrors of the study (experiment trackers) that must never cost a trial.
TrialObserver = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


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
    artifacts: str | Path | None = None
    worker: str = ""
    interrupt: GracefulInterrupt = field(default_factory=GracefulInterrupt)
    observers: list[TrialObserver] = field(default_factory=list)

    def trial_told(self, trial_id: int) -> None:
        """Hand the trial with storage id ``trial_id``, as the storage now holds it, to every
        observer (one read of that trial, not of the whole study)."""
        if self.observers:
            frozen = self.study._storage.get_trial(trial_id)
            for observer in self.observers:
                observer(self.study, frozen)


def prepare_run(dataset: str, *, storage: str, study_name: str | None = None,
                data_dir: str | Path | None = None, space: str | Path | None = None,
                epochs: int | None = None, image_size: int | None = None, seed: int = 0,
                worker: str = "", reporter: Reporter | None = None,
                artifacts: str | Path | None = None,
                heartbeat_seconds: int = HEARTBEAT_SECONDS) -> RunSetup:
    """Validate the space, load the data, open the study and check (or write) its record."""
    reporter = reporter or Reporter()
    check_name(dataset)  # before the space lookup, so a typo is reported as such
    search_space = load_space(dataset, space).with_overrides(epochs=epochs, image_size=image_size)
    data = load_dataset(dataset, data_dir, search_space.image_size, seed,
                        val_fraction=search_space.split["val_fraction"],
                        test_fraction=search_space.split["test_fraction"],
                        progress=reporter.progress_bars)
    report_data(reporter, data)

    name = study_name or dataset
    # A resumed or parallel run must not replay the first run's random start-up samples,
    # so the sampler seed mixes in the trials already there and the worker's name.
    rdb = open_storage(storage, heartbeat_seconds=heartbeat_seconds)
    sampler_seed = derive_seed(seed, count_trials(rdb, name), worker)
    study = create_or_load_study(rdb, name, sampler_seed=sampler_seed, space=search_space)
    check_or_record(study, StudyRecord.of(data, search_space), data, search_space)
    return RunSetup(study=study, data=data, space=search_space, storage=redact(storage),
                    seed=seed, sampler_seed=sampler_seed, reporter=reporter,
                    artifacts=artifacts, worker=worker)


def announce_backend(reporter: Reporter) -> None:
    """Load the backend now (not inside the first trial) and say where trials will run."""
    reporter.message(f"backend: {load_backend()}")


def create_or_load_study(rdb: optuna.storages.RDBStorage, study_name: str, *,
                         sampler_seed: int = 0, space: SearchSpace | None = None) -> optuna.Study:
    """Open ``study_name`` (creating it) with a seeded TPE sampler and the space's pruner.

    TPE's constant liar treats other workers' running trials as bad results, so parallel
    workers spread out instead of sampling next to each other."""
    startup = int(space.sampler["startup_trials"]) if space else 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup,
                                             constant_liar=True)
    return optuna.create_study(storage=rdb, study_name=study_name, direction="maximize",
                               sampler=sampler, pruner=make_pruner(space), load_if_exists=True)


def make_pruner(space: SearchSpace | None) -> optuna.pruners.BasePruner:
    """The pruner the space's ``[pruner]`` table asks for."""
    if space is None:
        return optuna.pruners.MedianPruner()
    config = space.pruner
    if config["kind"] == "none":
        return optuna.pruners.NopPruner()
    if config["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=int(config["startup_trials"]),
                                       n_warmup_steps=int(config["warmup_epochs"]))


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
    """The study's best value so far, or None before its first complete trial."""
    try:
        return study.best_value
    except ValueError:
        return None


def report_data(reporter: Reporter, data: Dataset) -> None:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    how = "cache hit, no image decoding" if data.cache_hit else "decoded into the cache"
    reporter.message(f"data: {data.name}, {data.layout}, {len(data.classes)} classes, {sizes}; "
                     f"{data.image_size}px, {how} ({data.cache_path})")
    for warning in data.warnings:
        reporter.message(f"[yellow]warning:[/yellow] {warning}")
    if data.bad_files:
        reporter.message(f"skipped {len(data.bad_files)} unreadable files "
                         f"(listed in {data.report_path})")
