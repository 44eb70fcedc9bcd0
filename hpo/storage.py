"""Where studies live: any Optuna RDB URL, with heartbeats so no trial stays RUNNING forever.

A trial whose process died (SIGKILL, power loss, a pre-empted GPU box) stops sending
heartbeats; after the grace period the next process that opens the study marks it FAILED
and re-queues its parameters once, so a worker's death costs one trial's time, not a
hole in the study.
"""

from __future__ import annotations

import json
import random
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, first_line

# Optuna and SQLAlchemy are imported where a database is opened, not here: the CLI reads
# this module's defaults at start-up, and `hpo --help` should not pay for them.
if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.storages._heartbeat import BaseHeartbeat

DEFAULT_STORAGE = "sqlite:///studies.db"
# A running trial writes one row every HEARTBEAT_SECONDS; it is declared dead after
# GRACE_FACTOR beats in a row are missing. 20 s x 3 keeps the write load of 100 workers
# negligible, survives a database fail-over or a long GC pause, and still retries a dead
# worker's trial about a minute after it died, which is short next to a trial's training.
HEARTBEAT_SECONDS = 20
GRACE_FACTOR = 3
SCHEMA_ATTEMPTS = 5


def open_storage(
    url: str, *, heartbeat_seconds: int = HEARTBEAT_SECONDS, grace_seconds: int | None = None
) -> RDBStorage:
    """Open (creating if needed) the study database behind ``url``, failing with one line.

    ``grace_seconds`` (default ``GRACE_FACTOR`` heartbeats) is how long a trial may go
    without a heartbeat before another process fails it and queues its retry.
    """
    if "://" not in url:
        raise HpoError(f"storage must be a database URL such as {DEFAULT_STORAGE}, got {url!r}")
    if heartbeat_seconds < 1:
        raise HpoError(f"the heartbeat interval must be at least 1 second, got {heartbeat_seconds}")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Wait for a busy database instead of failing: several local workers on one file
        # queue for its write lock (bench/bench_sqlite_workers.py: 4 workers, no errors).
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    from sqlalchemy.exc import DBAPIError

    grace = grace_seconds or GRACE_FACTOR * heartbeat_seconds
    try:
        for _ in range(SCHEMA_ATTEMPTS - 1):
            try:
                return _connect(url, engine_kwargs, heartbeat_seconds, grace)
            except DBAPIError as exc:
                # Workers that open a fresh database together race to create Optuna's
                # tables; the losers see "duplicate key" (PostgreSQL) or "already exists"
                # (SQLite, MySQL). Once the winner has committed, opening again finds them.
                if not any(words in str(exc) for words in ("already exists", "duplicate key")):
                    raise
                time.sleep(0.5 + random.random())
        return _connect(url, engine_kwargs, heartbeat_seconds, grace)
    except Exception as exc:  # noqa: BLE001 - any driver error is "cannot open"
        raise HpoError(f"cannot open storage {redact(url)}: {first_line(exc)}") from None


def _connect(
    url: str, engine_kwargs: dict[str, Any], heartbeat_seconds: int, grace_seconds: int
) -> RDBStorage:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    if storage.engine.dialect.name == "sqlite":
        # WAL lets a reader (the dashboard, hpo status) never block a worker's write and
        # made 4 workers' storage traffic 1.5x faster (bench/bench_sqlite_workers.py). The
        # mode is stored in the file, so one successful PRAGMA covers every later process.
        with storage.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    return storage


def redact(url: str) -> str:
    """The URL with its password hidden (SQLAlchemy's own rendering), for logs and error
    messages; one without a password, or not a URL at all, is shown as given."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """The study's storage where it keeps heartbeats (an RDB storage opened with an
    interval, as :func:`open_storage` does), else None."""
    from optuna.storages._heartbeat import BaseHeartbeat  # optuna exports it nowhere else

    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        return storage
    return None


def beat_once(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record one heartbeat now. Call it right after ``ask``: Optuna never fails a RUNNING
    trial that has no heartbeat at all, so a process dying before its first beat would
    leave the trial RUNNING forever."""
    storage = heartbeat_storage(study)
    if storage is not None:
        storage.record_heartbeat(trial._trial_id)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Keep ``trial`` marked alive while the block runs (ask/tell loops get no heartbeat
    from Optuna; only ``study.optimize`` starts one itself)."""
    storage = heartbeat_storage(study)
    if storage is None:
        yield
        return
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                pass

    beat_once(study, trial)
    thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark trials of dead processes FAILED (and re-queue them) before asking for new ones."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage behind Optuna's cache, for the queries hpo makes in SQL (None for
    other storages, which count in Python)."""
    import optuna

    rdb = getattr(storage, "_backend", storage)
    return rdb if isinstance(rdb, optuna.storages.RDBStorage) else None


def _sql_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    rdb = _rdb(storage)
    if rdb is None:
        raise HpoError(
            f"hpo counts trials in SQL and needs a database storage, not {type(storage).__name__}"
        )
    return rdb


def trial_count(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    states: Iterable[optuna.trial.TrialState] | None = None,
    *,
    below: int | None = None,
) -> int:
    """Trials of the study in ``states`` (all if None), numbered below ``below`` if given.

    A SQL ``count(*)`` on Optuna's ``trials`` table, so the loop's slot checks cost the same
    at trial 10 and at trial 10,000; ``get_trials`` builds every trial with all its attrs,
    which grows with the study (bench/bench_soak.py). Other storages count in Python.
    """
    rdb = _rdb(storage)
    if rdb is None:
        return sum(
            (states is None or t.state in states) and (below is None or t.number < below)
            for t in storage.get_all_trials(study_id, deepcopy=False)
        )
    from sqlalchemy import text

    sql = "SELECT count(*) FROM trials WHERE study_id = :study"
    values: dict[str, int | str] = {"study": study_id}
    if states is not None:
        names = [state.name for state in states]
        sql += f" AND state IN ({', '.join(f':s{i}' for i in range(len(names)))})"
        values.update({f"s{i}": name for i, name in enumerate(names)})
    if below is not None:
        sql += " AND number < :below"
        values["below"] = below
    with rdb.engine.connect() as conn:
        return int(conn.execute(text(sql), values).scalar_one())


def user_attr_total(storage: optuna.storages.BaseStorage, study_id: int, key: str) -> int:
    """The sum of the integer user attr ``key`` over the study's trials (e.g. the epochs they
    trained), in one SQL query like :func:`trial_count`; other storages sum in Python."""
    rdb = _rdb(storage)
    if rdb is None:
        return sum(
            int(t.user_attrs.get(key, 0)) for t in storage.get_all_trials(study_id, deepcopy=False)
        )
    from sqlalchemy import text

    sql = (
        "SELECT COALESCE(SUM(CAST(a.value_json AS INTEGER)), 0) FROM trial_user_attributes a "
        "JOIN trials t ON a.trial_id = t.trial_id WHERE t.study_id = :study AND a.key = :key"
    )
    with rdb.engine.connect() as conn:
        return int(conn.execute(text(sql), {"study": study_id, "key": key}).scalar_one())


def user_attr_values(
    storage: optuna.storages.BaseStorage, study_id: int, key: str
) -> dict[int, Any]:
    """Trial number -> the user attr ``key`` of the study's trials that have it (e.g. the
    few rejected over budget), in one SQL query; other storages look in Python."""
    rdb = _rdb(storage)
    if rdb is None:
        return {
            t.number: t.user_attrs[key]
            for t in storage.get_all_trials(study_id, deepcopy=False)
            if key in t.user_attrs
        }
    from sqlalchemy import text

    sql = (
        "SELECT t.number, a.value_json FROM trial_user_attributes a "
        "JOIN trials t ON a.trial_id = t.trial_id WHERE t.study_id = :study AND a.key = :key "
        "ORDER BY t.number"
    )
    with rdb.engine.connect() as conn:
        rows = conn.execute(text(sql), {"study": study_id, "key": key})
        return {int(number): json.loads(value) for number, value in rows}


@dataclass(frozen=True)
class TrialTally:
    """A study's trials counted by state, and the latest start or completion among them."""

    counts: dict[str, int]  # every TrialState name, zeros included
    last_activity: datetime | None  # naive local time, as Optuna's FrozenTrial has it


def tally_trials(storage: optuna.storages.BaseStorage, study_id: int) -> TrialTally:
    """Counts by state and the last activity of a study in an RDB storage, in one grouped
    SQL query: ``hpo status`` then costs the same at 10 trials and at 10,000
    (bench/bench_storage_scale.py), where ``get_all_trials`` builds every trial."""
    import optuna
    from sqlalchemy import DateTime, text

    rdb = _sql_storage(storage)
    sql = text(
        "SELECT state, count(*) AS n, max(datetime_start) AS started, "
        "max(datetime_complete) AS ended FROM trials WHERE study_id = :study GROUP BY state"
    ).columns(started=DateTime, ended=DateTime)
    counts = {state.name: 0 for state in optuna.trial.TrialState}
    times = []
    with rdb.engine.connect() as conn:
        for state, n, started, ended in conn.execute(sql, {"study": study_id}):
            counts[state] = int(n)
            times += [t for t in (started, ended) if t is not None]
    # Optuna stores naive UTC and shows naive local time (optuna.storages' trial model).
    last = max(times, default=None)
    if last is not None:
        last = last.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)
    return TrialTally(counts, last)


def top_trials(
    storage: optuna.storages.BaseStorage, study_id: int, top: int
) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` complete trials of an RDB storage's study, highest value first (hpo
    maximizes) and the lower number first among equal values, as sorting all trials would
    give; one SQL query for their ids, then only those trials are loaded."""
    from sqlalchemy import text

    rdb = _sql_storage(storage)
    # Optuna keeps +-inf as a value type with a NULL value; they rank past every finite one.
    sql = text(
        "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
        "WHERE t.study_id = :study AND t.state = :complete AND v.objective = 0 "
        "ORDER BY CASE v.value_type WHEN 'INF_POS' THEN 2 WHEN 'FINITE' THEN 1 ELSE 0 END DESC, "
        "v.value DESC, t.number LIMIT :top"
    )
    with rdb.engine.connect() as conn:
        rows = conn.execute(sql, {"study": study_id, "complete": "COMPLETE", "top": top})
        ids = [row[0] for row in rows]
    return [storage.get_trial(trial_id) for trial_id in ids]
