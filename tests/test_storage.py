"""Opening storages: SQLite and PostgreSQL for real, and one-line errors for bad URLs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpo.errors import HpoError
from hpo.storage import (
    fail_stale_trials,
    heartbeat,
    open_storage,
    redact,
    trial_count,
    user_attr_total,
)


def test_sqlite_and_postgres_open(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="x")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="x", storage=storage_url).trials) == 2


@pytest.mark.parametrize(
    "url, message",
    [
        ("studies.db", "storage must be a database URL"),
        ("postgresql+psycopg://hpo:s3cret@127.0.0.1:1/hpo", "cannot open storage"),
        ("nosuchdb://x", "cannot open storage"),
    ],
)
def test_bad_storage_urls_give_one_line(url: str, message: str) -> None:
    with pytest.raises(HpoError) as err:
        open_storage(url)
    assert message in str(err.value)
    assert "s3cret" not in str(err.value)
    assert "\n" not in str(err.value)


def test_redact_hides_only_the_password() -> None:
    assert (
        redact("postgresql+psycopg://hpo:pw@db:5432/hpo")
        == "postgresql+psycopg://hpo:***@db:5432/hpo"
    )
    assert redact("sqlite:///studies.db") == "sqlite:///studies.db"


def test_a_dead_trial_is_failed_and_requeued(tmp_path: Path) -> None:
    """A trial whose process stopped beating is failed after the grace period and its
    parameters are queued again, so another run retries it."""
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = open_storage(url, heartbeat_seconds=1, grace_seconds=1)
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    with heartbeat(study, trial):
        pass  # one beat, then the "process" dies without telling the study
    import time

    time.sleep(2.5)
    fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.get_trials()[1].params == trial.params


def test_workers_opening_a_fresh_database_together_all_get_in(postgres_url: str) -> None:
    """Optuna's table creation races between processes on a new database (plain RDBStorage
    fails here every time with 4 openers); hpo retries until the winner's tables exist."""
    import threading

    errors: list[Exception] = []

    def opener() -> None:
        try:
            open_storage(postgres_url)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_sqlite_files_are_switched_to_wal(tmp_path: Path) -> None:
    """Several local workers share a SQLite file best in WAL mode (readers never block writers)."""
    import sqlite3

    open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_trial_count_matches_the_trials_in_every_state(storage_url: str) -> None:
    """The loop's slot checks count in SQL; they must agree with the trials themselves,
    on both databases and on a study opened the way the loop opens it (Optuna's cache)."""
    from optuna.trial import TrialState

    study = optuna.create_study(storage=open_storage(storage_url), study_name="c")
    other = optuna.create_study(storage=open_storage(storage_url), study_name="other")
    other.optimize(lambda t: 1.0, n_trials=3)  # another study's trials are not counted
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE):
        trial = study.ask()
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # RUNNING
    study.enqueue_trial({})  # WAITING
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    assert trial_count(study._storage, study._study_id) == 6
    assert trial_count(study._storage, study._study_id, finished) == 3
    assert trial_count(study._storage, study._study_id, (TrialState.RUNNING,)) == 1
    assert trial_count(study._storage, study._study_id, (TrialState.WAITING,)) == 1
    assert trial_count(study._storage, study._study_id, finished, below=2) == 2
    in_memory = optuna.create_study()
    in_memory.optimize(lambda t: 1.0, n_trials=2)
    assert trial_count(in_memory._storage, in_memory._study_id, finished, below=1) == 1


def test_user_attr_total_sums_an_integer_attr(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="e")
    other = optuna.create_study(storage=open_storage(storage_url), study_name="other")
    other.optimize(lambda t: t.set_user_attr("epochs_trained", 100) or 1.0, n_trials=1)
    for epochs in (3, 1, 0):
        study.optimize(
            lambda t, epochs=epochs: t.set_user_attr("epochs_trained", epochs) or 1.0,
            n_trials=1,
        )
    study.optimize(lambda t: 1.0, n_trials=1)  # a trial without the attr counts 0
    assert user_attr_total(study._storage, study._study_id, "epochs_trained") == 4
    assert user_attr_total(study._storage, study._study_id, "missing") == 0


def test_tally_and_top_trials_agree_with_the_trials_themselves(storage_url: str) -> None:
    """`hpo status` counts, dates and ranks in SQL; it must show what loading every trial
    shows, ties ranked by the lower number and infinities past every finite value."""
    from optuna.trial import TrialState

    from hpo.storage import tally_trials, top_trials

    study = optuna.create_study(
        storage=open_storage(storage_url), study_name="t", direction="maximize"
    )
    other = optuna.create_study(storage=open_storage(storage_url), study_name="other")
    other.optimize(lambda t: 9.0, n_trials=2)  # another study's trials are not counted
    assert tally_trials(study._storage, study._study_id).last_activity is None
    assert top_trials(study._storage, study._study_id, 3) == []
    values = [0.5, 0.75, None, 0.75, 0.25, None, 0.75, float("inf")]
    for i, value in enumerate(values):
        trial = study.ask()
        if value is None:
            study.tell(trial, state=TrialState.PRUNED if i == 2 else TrialState.FAIL)
        else:
            study.tell(trial, value)
    study.ask()  # RUNNING
    study.enqueue_trial({})  # WAITING
    trials = study.get_trials(deepcopy=False)
    tally = tally_trials(study._storage, study._study_id)
    assert tally.counts == {
        "RUNNING": 1,
        "COMPLETE": 6,
        "PRUNED": 1,
        "FAIL": 1,
        "WAITING": 1,
    }
    assert tally.last_activity == max(
        t for trial in trials for t in (trial.datetime_start, trial.datetime_complete) if t
    )
    top = top_trials(study._storage, study._study_id, 4)
    assert [t.number for t in top] == [7, 1, 3, 6]
    assert top[1] == trials[1]  # the whole trial: params, user attrs, values
