"""Many `hpo worker` processes on one PostgreSQL study: an exact total, crash-safe trials,
one decode-cache build. Real PostgreSQL, real processes, real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.storage import fail_stale_trials, open_storage
from hpo.study.slots import FINISHED, SURPLUS, claim_trial, gives_way
from tests.conftest import cli_env

TINY = ["--epochs", "1", "--image-size", "16"]  # 3 workers must fit on 2 CPU cores


def start_worker(
    url: str,
    trials: int,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """One real `hpo worker demo` process (wide console: log lines are never wrapped)."""
    args = [
        sys.executable,
        "-m",
        "hpo",
        "worker",
        "demo",
        "--storage",
        url,
        "--trials",
        str(trials),
        *TINY,
        *extra,
    ]
    return subprocess.Popen(
        args,
        env=cli_env(COLUMNS="300", **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 240) -> list[str]:
    """Wait for every worker; return their stderr (the log)."""
    logs = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        logs.append(err)
    return logs


def assert_exact_total(trials: list[optuna.trial.FrozenTrial], total: int) -> None:
    assert sum(t.state in FINISHED for t in trials) == total, [t.state.name for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)


def demo_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="demo", storage=url).get_trials()


@pytest.mark.slow
def test_three_workers_share_one_total_and_one_cache_build(
    postgres_url: str, tmp_path: Path
) -> None:
    """--trials 9 with 3 workers is 9 trials, not 27; the workers sample different params;
    the decode cache (fresh here) is built by one of them and read by the others."""
    procs = [
        start_worker(postgres_url, 9, env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
        for _ in range(3)
    ]
    logs = finish(procs)

    trials = demo_trials(postgres_url)
    assert_exact_total(trials, 9)
    assert all(t.state in FINISHED or t.user_attrs.get("fail_reason") == SURPLUS for t in trials)
    finished = [t for t in trials if t.state in FINISHED]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 9  # no repeats
    assert len({t.params["learning_rate"] for t in finished}) == 9
    assert len({t.user_attrs["worker"] for t in finished}) >= 2
    assert len({t.user_attrs["sampler_seed"] for t in finished}) >= 2

    text = "".join(logs)
    assert text.count("decoded into the cache") == 1, text
    assert text.count("cache hit, no image decoding") == 2
    for log, proc in zip(logs, procs, strict=True):
        assert "joined study 'demo' in postgresql+psycopg:///hpo_t_" in log
        assert f":{proc.pid} joined" in log
        assert "study reached its total of 9 finished trials" in log


@pytest.mark.slow
def test_a_killed_worker_trial_is_retried_and_the_total_still_reached(postgres_url: str) -> None:
    """SIGKILL one worker mid-trial: after the grace period (3 heartbeats of 2 s) another
    worker fails that trial, runs its parameters again and the study still ends at 9."""
    procs = [start_worker(postgres_url, 9, "--epochs", "2", "--heartbeat", "2") for _ in range(3)]
    by_pid = {proc.pid: proc for proc in procs}
    worker = None
    deadline = time.monotonic() + 180
    while worker is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            running = demo_trials(postgres_url)
        except KeyError:
            continue  # the study is not created yet
        for trial in running:
            if trial.state == TrialState.RUNNING and trial.intermediate_values:  # mid-training
                worker = trial.user_attrs["worker"]
                break
    assert worker is not None, "no trial reached its first epoch"
    killed = by_pid[int(worker.rsplit(":", 1)[1])]
    os.kill(killed.pid, signal.SIGKILL)
    logs = finish(procs)
    assert killed.returncode == -signal.SIGKILL

    # Exactly one trial was retried: the one the worker was training when it died (the one
    # seen mid-training, or the next it started if that one ended between the look and the kill).
    trials = demo_trials(postgres_url)
    assert_exact_total(trials, 9)
    [retry] = [t for t in trials if "failed_trial" in t.system_attrs]
    dead = trials[retry.system_attrs["failed_trial"]]
    assert dead.state == TrialState.FAIL and dead.user_attrs["worker"] == worker
    assert retry.state in FINISHED and retry.params == dead.params
    assert retry.user_attrs["worker"] != worker
    assert sum(f"retries trial {dead.number}" in log for log in logs) == 1


def test_the_later_of_two_trials_racing_for_the_last_slot_gives_way(postgres_url: str) -> None:
    """Two workers that both saw one free slot and both asked: exactly one trains, whichever
    checks first."""
    target = 3
    first = optuna.create_study(storage=open_storage(postgres_url), study_name="race")
    for _ in range(target - 1):
        first.tell(first.ask(), 0.5)
    second = optuna.load_study(storage=open_storage(postgres_url), study_name="race")
    low, high = first.ask(), second.ask()
    assert gives_way(second, high, target) and not gives_way(first, low, target)
    assert claim_trial(second, target) is None  # a third asker sees no free slot at all


def test_a_queued_retry_is_taken_even_when_it_fills_the_last_slot(postgres_url: str) -> None:
    """A dead worker's re-queued trial counts as a slot, and must still be picked up."""
    study = optuna.create_study(
        storage=open_storage(postgres_url, heartbeat_seconds=1, grace_seconds=1), study_name="retry"
    )
    study.tell(study.ask(), 0.5)
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    fail_stale_trials(study)  # dead -> FAIL, its params queued as WAITING
    trial = claim_trial(study, 2)
    assert trial is not None and trial.params == dead.params


@pytest.mark.slow
def test_many_racing_claimers_finish_exactly_the_total(postgres_url: str) -> None:
    """Eight claimers with their own connections and no training time between asks: the
    race for the last slots happens for real, and the total is still exact."""
    optuna.create_study(storage=open_storage(postgres_url), study_name="stress")
    target = 40

    def claimer() -> None:
        study = optuna.load_study(storage=open_storage(postgres_url), study_name="stress")
        while sum(t.state in FINISHED for t in study.get_trials(deepcopy=False)) < target:
            trial = claim_trial(study, target)
            if trial is not None:
                study.tell(trial, trial.suggest_float("x", 0, 1))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    trials = optuna.load_study(storage=postgres_url, study_name="stress").get_trials()
    assert_exact_total(trials, target)
    assert all(t.user_attrs["fail_reason"] == SURPLUS for t in trials if t.state == TrialState.FAIL)
