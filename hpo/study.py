"""The tuning loop: an Optuna study whose trials train :func:`hpo.training.train`.

The loop uses ask/tell instead of ``study.optimize`` because it must decide things that
``optimize`` hides: how a Ctrl-C is recorded, which errors fail one trial and which stop
the run, and when the study's *total* has been reached across many workers.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo import __version__
from hpo.data import Dataset, load_dataset
from hpo.data.layouts import check_name
from hpo.device import load_backend
from hpo.errors import HpoError
from hpo.progress import Reporter
from hpo.space import SearchSpace, load_space
from hpo.storage import (DEFAULT_STORAGE, HEARTBEAT_SECONDS, beat_once, fail_stale_trials,
                         heartbeat, open_storage, redact)

MONITOR = "val_accuracy"  # the objective, the pruner's input and the dashboard's curve
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States that hold one of a study's --trials slots: finished, training, or queued (a retry).
HELD = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
INTERRUPTED = "interrupted by the user (Ctrl-C)"
SURPLUS = "surplus: another worker took the study's last slot"
WAIT_SECONDS = 2.0  # how often a worker with no free slot looks again

optuna.logging.set_verbosity(optuna.logging.WARNING)


class GracefulInterrupt:
    """First Ctrl-C (or SIGTERM, as `docker stop` sends): stop at the next batch, record the
    trial as FAILED, leave cleanly. A second one interrupts at once. Only the main thread
    can own signals; elsewhere (e.g. a notebook's worker thread) this is a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@dataclass(frozen=True)
class StudyRecord:
    """What a study was made for. Stored as study user attrs; a later run must match it,
    because values measured on other data or another space are not comparable."""

    dataset: str
    data_fingerprint: str
    split_seed: int
    split_fingerprint: str
    image_size: int
    epochs: int
    space_hash: str

    @classmethod
    def of(cls, dataset: Dataset, space: SearchSpace) -> StudyRecord:
        return cls(dataset.name, dataset.fingerprint, dataset.seed, dataset.split_fingerprint,
                   space.image_size, space.epochs, space.content_hash)

    def attrs(self) -> dict[str, Any]:
        return {f"hpo:{key}": value for key, value in self.__dict__.items()}


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
    study = optuna.create_study(storage=rdb, study_name=study_name, direction="maximize",
                                sampler=sampler, pruner=_make_pruner(space),
                                load_if_exists=True)
    return study


def load_study(storage: str, study_name: str) -> optuna.Study:
    """An existing study, or a one-line error naming the studies that do exist."""
    rdb = open_storage(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(rdb))
        raise HpoError(f"no study '{study_name}' in {redact(storage)} "
                       f"(studies there: {', '.join(names) or 'none'})") from None


def run_study(dataset: str, *, n_trials: int | None = 10, timeout: float | None = None,
              storage: str = DEFAULT_STORAGE, study_name: str | None = None,
              data_dir: str | Path | None = None, space: str | Path | None = None,
              epochs: int | None = None, image_size: int | None = None, seed: int = 0,
              total: bool = False, worker: str = "", reporter: Reporter | None = None,
              artifacts: str | Path | None = None,
              heartbeat_seconds: int = HEARTBEAT_SECONDS) -> optuna.Study:
    """Tune a CNN on ``dataset``; re-running with the same arguments resumes the study.

    ``n_trials`` counts the trials this call adds, or with ``total=True`` the study's
    finished (complete or pruned) trials across all workers; ``worker`` names this process
    in the log and on its trials (user attr ``worker``). ``timeout`` (seconds) stops
    starting new trials; the running one finishes. ``artifacts`` is the folder of the
    artifact store that receives each trial's learning curves (default ``$HPO_ARTIFACTS``
    or ``./artifacts``). ``heartbeat_seconds`` is how often a running trial says it is
    alive (see :mod:`hpo.storage`).
    """
    reporter = reporter or Reporter()
    check_name(dataset)  # before the space lookup, so a typo is reported as such
    search_space = load_space(dataset, space).with_overrides(epochs=epochs, image_size=image_size)
    data = load_dataset(dataset, data_dir, search_space.image_size, seed,
                        val_fraction=search_space.split["val_fraction"],
                        test_fraction=search_space.split["test_fraction"],
                        progress=reporter.progress_bars)
    _report_data(reporter, data)

    name = study_name or dataset
    # A resumed or parallel run must not replay the first run's random start-up samples,
    # so the sampler seed mixes in the trials already there and the worker's name.
    rdb = open_storage(storage, heartbeat_seconds=heartbeat_seconds)
    sampler_seed = _derive_seed(seed, _count_trials(rdb, name), worker)
    study = create_or_load_study(rdb, name, sampler_seed=sampler_seed, space=search_space)
    _check_or_record(study, StudyRecord.of(data, search_space), data, search_space)
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    if total:
        reporter.message(f"worker {worker} joined study '{name}' in {redact(storage)}: "
                         f"{done} of {n_trials} finished trials so far; "
                         f"heartbeat every {heartbeat_seconds}s")
    else:
        reporter.message(f"study '{name}' in {redact(storage)}: {done} finished trials so far")

    # Load the backend now (not inside the first trial) and say where trials will run.
    reporter.message(f"backend: {load_backend()}")

    started, added = time.monotonic(), 0
    trial: optuna.Trial | None = None
    target = None if n_trials is None else (n_trials if total else done + n_trials)
    reason = "stopped"
    waiting = False
    interrupt = GracefulInterrupt()
    try:
        with interrupt:
            while True:
                interrupt.check()
                fail_stale_trials(study)  # also while waiting: a dead worker's slot comes back here
                reason = _stop_reason(study, target, n_trials, added, total, started, timeout)
                if reason:
                    break
                trial = _claim_trial(study, target if total else None)
                if trial is None:
                    if not waiting:
                        reporter.message("every remaining slot is held by a running trial; waiting "
                                         "for them to finish (or to be retried if their worker died)")
                    waiting = True
                    time.sleep(WAIT_SECONDS)
                    continue
                waiting = False
                retry_of = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
                if retry_of is not None:
                    reporter.message(f"trial {trial.number} retries trial {retry_of}, whose worker "
                                     f"stopped sending heartbeats")
                trial.set_user_attr("sampler_seed", sampler_seed)
                if worker:
                    trial.set_user_attr("worker", worker)
                try:
                    _run_trial(study, trial, data, search_space, seed, reporter, interrupt, artifacts)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # Another worker saw no heartbeat for the grace period, failed this trial
                    # and queued its retry; the study already counts that, so drop ours.
                    reporter.trial_finished(trial.number, "FAIL", None, 0.0, _best_value(study),
                                            "declared dead by another worker; retried there")
                    continue
                added += 1
    except KeyboardInterrupt:
        if trial is not None and _is_running(study, trial):  # stopped between ask and training
            trial.set_user_attr("fail_reason", INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
        reason = "interrupted: the running trial was recorded as FAILED; run the same command to resume"
        reporter.study_finished(study, reason)
        raise
    reporter.study_finished(study, reason)
    return study


def _run_trial(study: optuna.Study, trial: optuna.Trial, data: Dataset, space: SearchSpace,
               seed: int, reporter: Reporter, interrupt: GracefulInterrupt,
               artifacts: str | Path | None = None) -> None:
    """Train one configuration and tell the study how it ended. Only a GPU out-of-memory
    error fails just this trial; anything else is a bug or a broken machine and stops the
    run after the trial is recorded as FAILED with its reason."""
    from optuna_integration import KerasPruningCallback

    from hpo.training import StopOnRequest, evaluate, train
    from hpo.trial_artifacts import attach_learning_curve

    params = space.sample(trial)
    trial.set_user_attr("seed", seed + trial.number)
    reporter.trial_started(trial.number, params, space.epochs)
    history: dict[str, list[float]] = {}
    started = time.monotonic()

    def finish(state: TrialState, value: float | None = None, note: str = "") -> None:
        trial.set_user_attr("history", history)
        trial.set_user_attr("epochs_trained", len(history.get("loss", [])))
        trial.set_user_attr("seconds", round(time.monotonic() - started, 2))
        if note:
            trial.set_user_attr("fail_reason", note)
        attach_learning_curve(trial, history, state.name, artifacts)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        reporter.trial_finished(trial.number, state.name, value, time.monotonic() - started,
                                _best_value(study), note)

    train_split, val_split = data.split("train"), data.split("val")
    with heartbeat(study, trial):
        try:
            result = train(
                params, train_split, num_classes=len(data.classes), epochs=space.epochs,
                val_split=val_split, augment=bool(space.train["augment"]),
                seed=seed + trial.number, history=history,
                on_epoch=lambda epoch, logs: reporter.epoch_ended(trial.number, epoch, logs),
                callbacks=[StopOnRequest(lambda: interrupt.requested),
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
            if _is_out_of_memory(exc):
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


def _is_out_of_memory(exc: BaseException) -> bool:
    """GPU OOM looks different on each backend; match the words all of them use."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("resource_exhausted", "resourceexhausted",
                                         "out of memory", "outofmemory", " oom "))


def _stop_reason(study: optuna.Study, target: int | None, n_trials: int | None, added: int,
                 total: bool, started: float, timeout: float | None) -> str:
    if timeout is not None and time.monotonic() - started >= timeout:
        return f"timeout of {timeout:g}s reached"
    if target is None:
        return ""
    if total:
        finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        return f"study reached its total of {target} finished trials" if finished >= target else ""
    return f"{n_trials} trials done" if added >= (n_trials or 0) else ""


def _claim_trial(study: optuna.Study, target: int | None) -> optuna.Trial | None:
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
        trials = study.get_trials(deepcopy=False)
        in_hand = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials)
        if in_hand >= target:
            return None  # a WAITING trial beyond that is left for a later, larger --trials
    with warnings.catch_warnings():  # heartbeats are ours (hpo.storage.heartbeat)
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    beat_once(study, trial)
    if target is not None and _gives_way(study, trial, target):
        trial.set_user_attr("fail_reason", SURPLUS)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def _gives_way(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """True when ``target`` lower-numbered trials already hold the study's slots."""
    return sum(t.state in HELD and t.number < trial.number
               for t in study.get_trials(deepcopy=False)) >= target


def _is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def _count_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _derive_seed(seed: int, existing: int, worker: str) -> int:
    digest = hashlib.sha256(f"{seed}:{existing}:{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _make_pruner(space: SearchSpace | None) -> optuna.pruners.BasePruner:
    if space is None:
        return optuna.pruners.MedianPruner()
    config = space.pruner
    if config["kind"] == "none":
        return optuna.pruners.NopPruner()
    if config["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=int(config["startup_trials"]),
                                       n_warmup_steps=int(config["warmup_epochs"]))


MARKER = "hpo:data_fingerprint"  # present once a study's record is complete


def _check_or_record(study: optuna.Study, record: StudyRecord, data: Dataset,
                     space: SearchSpace) -> None:
    """Refuse to mix data or spaces inside one study; record them on first use.

    Workers that start together may all find no record. Each attr is its own write, so the
    marker key goes last (a reader that sees it sees the whole record), and a writer checks
    the record again afterwards, which refuses a worker whose different settings were
    overwritten by another's (writes interleaved within milliseconds can still slip past:
    Optuna's storage API offers no compare-and-set on study attrs)."""
    stored = study.user_attrs
    wanted = record.attrs()
    if MARKER not in stored:
        for key, value in wanted.items():
            if key != MARKER:
                study.set_user_attr(key, value)
        study.set_user_attr("hpo:classes", list(data.classes))
        study.set_user_attr("hpo:split_sizes", {k: int(len(v)) for k, v in data.splits.items()})
        study.set_user_attr("hpo:space", space.source)
        study.set_user_attr("hpo:hpo_version", __version__)
        study.set_user_attr(MARKER, wanted[MARKER])
        stored = study.user_attrs
    labels = {"hpo:dataset": "dataset", "hpo:data_fingerprint": "data (fingerprint)",
              "hpo:split_seed": "split seed (--seed)", "hpo:split_fingerprint": "split",
              "hpo:image_size": "image size (--image-size)", "hpo:epochs": "epochs (--epochs)",
              "hpo:space_hash": "search space (file content)"}
    for key, value in wanted.items():
        if stored.get(key) != value:
            raise HpoError(
                f"study '{study.study_name}' was made with a different {labels[key]}: "
                f"{_short(stored.get(key))} there, {_short(value)} now; "
                f"use --study NEW_NAME to start a separate study")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:12] if len(text) == 64 or len(text) == 16 else text


def _report_data(reporter: Reporter, data: Dataset) -> None:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    how = "cache hit, no image decoding" if data.cache_hit else "decoded into the cache"
    reporter.message(f"data: {data.name}, {data.layout}, {len(data.classes)} classes, {sizes}; "
                     f"{data.image_size}px, {how} ({data.cache_path})")
    for warning in data.warnings:
        reporter.message(f"[yellow]warning:[/yellow] {warning}")
    if data.bad_files:
        reporter.message(f"skipped {len(data.bad_files)} unreadable files "
                         f"(listed in {data.report_path})")
