"""What happens when several workers share one SQLite file (the question behind hpo's
SQLite policy in the README's "Scaling out").

    python bench/bench_sqlite_workers.py [--workers 4] [--trials 200] [--real-trials 8]

Two parts, each on a fresh file:

* storage stress: WORKERS processes run hpo's own claim loop (``claim_trial``, heartbeats,
  the user attrs and per-epoch reports a real trial writes) with 20 ms of "training", so
  the database sees far more concurrent writes than real trials produce; once with SQLite's
  rollback journal (the storage hpo opened before it switched SQLite files to WAL) and
  once through ``hpo.storage.open_storage`` (WAL);
* real workers: WORKERS ``hpo worker demo`` processes (1 epoch, 16 px) until REAL_TRIALS.

Each row says whether the total was exact, how many storage errors the workers hit and
whether ``PRAGMA integrity_check`` passes. Writes bench/results/sqlite_workers.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

EPOCHS = 5  # reports per stress trial, like a 5-epoch trial's pruning callback


def open_db(url: str, journal: str) -> optuna.storages.RDBStorage:
    """hpo's storage ("wal"), or the same settings without the switch to WAL ("delete")."""
    import optuna

    from hpo.storage import open_storage

    if journal == "wal":
        return open_storage(url, heartbeat_seconds=1)
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}},
        heartbeat_interval=1,
        grace_period=3,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(1),
    )


def stress_worker(url: str, journal: str, target: int, errors: multiprocessing.Queue[str]) -> None:
    """One process of the stress part: hpo's loop with a 20 ms objective."""
    import warnings

    import optuna

    from hpo.storage import fail_stale_trials, heartbeat
    from hpo.study.slots import FINISHED, claim_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    study = optuna.load_study(study_name="stress", storage=open_db(url, journal))
    while True:
        try:
            fail_stale_trials(study)
            if sum(t.state in FINISHED for t in study.get_trials(deepcopy=False)) >= target:
                return
            trial = claim_trial(study, target)
            if trial is None:
                time.sleep(0.05)
                continue
            x = trial.suggest_float("x", 0, 1)
            trial.set_user_attr("worker", os.getpid())
            with heartbeat(study, trial):
                for epoch in range(EPOCHS):
                    time.sleep(0.004)
                    trial.report(x * epoch, epoch)
            trial.set_user_attr("history", {"val_accuracy": [x] * EPOCHS})
            study.tell(trial, x)
        except Exception as exc:  # noqa: BLE001 - counted: the point of the benchmark
            errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            time.sleep(0.1)


def check_file(db: Path, study_name: str) -> dict:
    """Exact total, duplicates, stuck trials and SQLite's own integrity check."""
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute(
            "SELECT t.number, t.state FROM trials t JOIN studies s "
            "ON s.study_id = t.study_id WHERE s.study_name = ?",
            (study_name,),
        ).fetchall()
    states = [state for _, state in rows]
    return {
        "finished": sum(s in ("COMPLETE", "PRUNED") for s in states),
        "failed": states.count("FAIL"),
        "stuck": sum(s in ("RUNNING", "WAITING") for s in states),
        "duplicate_numbers": len(rows) - len({n for n, _ in rows}),
        "integrity": integrity,
    }


def stress(tmp: Path, workers: int, target: int, journal: str) -> dict:
    import optuna

    db = tmp / f"stress-{journal}.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="stress", storage=open_db(url, journal), direction="maximize")
    with sqlite3.connect(db) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    ctx = multiprocessing.get_context("spawn")
    errors: multiprocessing.Queue[str] = ctx.Queue()
    started = time.perf_counter()
    procs = [
        ctx.Process(target=stress_worker, args=(url, journal, target, errors))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    seconds = time.perf_counter() - started
    seen: list[str] = []
    while not errors.empty():
        seen.append(errors.get())
    return {
        "case": f"stress, {mode} journal",
        "workers": workers,
        "target": target,
        "seconds": round(seconds, 1),
        "trials_per_s": round(target / seconds, 1),
        "errors": len(seen),
        "error_kinds": sorted(set(seen))[:5],
        "exit_codes": [p.exitcode for p in procs],
        **check_file(db, "stress"),
    }


def real(tmp: Path, workers: int, target: int) -> dict:
    db = tmp / "real.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HPO_CACHE_DIR": str(tmp / "cache")}
    args = [
        sys.executable,
        "-m",
        "hpo",
        "worker",
        "demo",
        "--storage",
        f"sqlite:///{db}",
        "--trials",
        str(target),
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--heartbeat",
        "2",
    ]
    from hpo.data import load_dataset

    load_dataset("demo", image_size=16, cache_dir=tmp / "cache")  # time the workers, not the decode
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    logs = [proc.communicate()[1] for proc in procs]
    seconds = time.perf_counter() - started
    failures = [
        line[:160]
        for log in logs
        for line in log.splitlines()
        if line.startswith(("error:", "Traceback")) or "database is locked" in line
    ]
    return {
        "case": "real hpo workers (demo, 1 epoch, 16 px)",
        "workers": workers,
        "target": target,
        "seconds": round(seconds, 1),
        "trials_per_s": round(target / seconds, 2),
        "errors": len(failures),
        "error_kinds": sorted(set(failures))[:5],
        "exit_codes": [p.returncode for p in procs],
        **check_file(db, "demo"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=200, help="stress trials per journal mode")
    parser.add_argument("--real-trials", type=int, default=8, help="0 skips the real workers")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-sqlite-") as tmp:
        for journal in ("delete", "wal"):
            rows.append(stress(Path(tmp), args.workers, args.trials, journal))
        if args.real_trials:
            rows.append(real(Path(tmp), args.workers, args.real_trials))

    table = Table(
        title=f"{args.workers} workers on one SQLite file ({os.cpu_count()} cores)",
        title_justify="left",
    )
    for column in (
        "case",
        "target",
        "finished",
        "failed",
        "stuck",
        "dup numbers",
        "errors",
        "integrity",
        "seconds",
        "trials/s",
    ):
        table.add_column(column, justify="left" if column in ("case", "integrity") else "right")
    for row in rows:
        table.add_row(
            row["case"],
            str(row["target"]),
            str(row["finished"]),
            str(row["failed"]),
            str(row["stuck"]),
            str(row["duplicate_numbers"]),
            str(row["errors"]),
            row["integrity"],
            str(row["seconds"]),
            str(row["trials_per_s"]),
        )
    console = Console(width=160)
    console.print(table)
    for row in rows:
        for kind in row["error_kinds"]:
            console.print(f"  {row['case']}: {kind}")

    out = REPO / "bench" / "results" / "sqlite_workers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"cpu_count": os.cpu_count(), "python": platform.python_version(), "rows": rows},
            indent=1,
        )
    )
    console.print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
