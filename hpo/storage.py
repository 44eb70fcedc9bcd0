"""Where studies live: any Optuna RDB URL, with heartbeats so no trial stays RUNNING forever.

A trial whose process died (SIGKILL, power loss, a pre-empted GPU box) stops sending
heartbeats; after the grace period the next process that opens the study marks it FAILED
and re-queues its parameters once, so a worker's death costs one trial's time, not a
hole in the study.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from hpo.errors import HpoError

DEFAULT_STORAGE = "sqlite:///studies.db"
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 60


def open_storage(url: str, *, heartbeat_seconds: int = HEARTBEAT_SECONDS,
                 grace_seconds: int = GRACE_SECONDS) -> RDBStorage:
    """Open (creating if needed) the study database behind ``url``, failing with one line."""
    if "://" not in url:
        raise HpoError(f"storage must be a database URL such as {DEFAULT_STORAGE}, got {url!r}")
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Wait for a busy database instead of failing; hpo writes little and rarely.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_seconds,
                grace_period=grace_seconds,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except Exception as exc:  # noqa: BLE001 - any driver error is "cannot open"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HpoError(f"cannot open storage {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Keep ``trial`` marked alive while the block runs (ask/tell loops get no heartbeat
    from Optuna; only ``study.optimize`` starts one itself)."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                pass

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark trials of dead processes FAILED (and re-queue them) before asking for new ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
