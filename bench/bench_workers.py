"""Trials per hour with 1 vs 2 workers on one PostgreSQL study, and what the storage costs.

    python bench/bench_workers.py [--trials 8] [--epochs 2] [--image-size 32]
        [--admin-url postgresql+psycopg:///postgres?host=/var/run/postgresql]

For each worker count, a fresh database and N ``run_study(total=True)`` processes (what
``hpo worker demo`` runs) share ``--trials``. Each process times every call into Optuna's
RDBStorage (ask, tell, set_user_attr, report, the slot checks; the heartbeat thread's writes
are counted apart, since they do not hold up training) and the bench reads each trial's
training seconds from the study. Trials per hour is measured from the first trial's start to
the last trial's end, so the TensorFlow import (a fixed ~10 s per process) is left out.
Writes bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

from bench.pg import POSTGRES_ADMIN, temporary_database  # noqa: E402

BACKGROUND = ("record_heartbeat",)  # written by the heartbeat thread, off the critical path


def timed_worker(url: str, total: int, epochs: int, image_size: int, name: str, out: str) -> None:
    """One worker process: hpo's run_study with every RDBStorage method timed."""
    import functools
    import threading

    from optuna.storages import RDBStorage

    from hpo.study import run_study

    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def timing(method: Any) -> Any:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                with lock:
                    seconds[method.__name__] += time.perf_counter() - started
                    calls[method.__name__] += 1

        return wrapper

    for attr, value in list(vars(RDBStorage).items()):
        if callable(value) and (not attr.startswith("_") or attr == "_get_trials"):
            setattr(RDBStorage, attr, timing(value))
    run_study(
        "demo",
        n_trials=total,
        total=True,
        storage=url,
        epochs=epochs,
        image_size=image_size,
        worker=name,
    )
    Path(out).write_text(json.dumps({"seconds": seconds, "calls": calls}))


def run_case(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import optuna

    with temporary_database(args.admin_url, prefix="hpo_bench") as url:
        ctx = multiprocessing.get_context("spawn")
        outs = [tmp / f"{workers}-{i}.json" for i in range(workers)]
        started = time.perf_counter()
        procs = [
            ctx.Process(
                target=timed_worker,
                args=(url, args.trials, args.epochs, args.image_size, f"bench-{i}", str(o)),
            )
            for i, o in enumerate(outs)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - started
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        trials = optuna.load_study(study_name="demo", storage=url).get_trials()

    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == args.trials, [t.state.name for t in trials]
    span = (
        max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    ).total_seconds()
    timings = [json.loads(o.read_text()) for o in outs]
    critical = sum(s for t in timings for m, s in t["seconds"].items() if m not in BACKGROUND)
    background = sum(t["seconds"].get(m, 0.0) for t in timings for m in BACKGROUND)
    by_method: dict[str, float] = defaultdict(float)
    for t in timings:
        for method, s in t["seconds"].items():
            by_method[method] += s
    top = sorted(by_method.items(), key=lambda kv: -kv[1])[:6]
    return {
        "workers": workers,
        "trials": len(finished),
        "pruned": sum(t.state.name == "PRUNED" for t in finished),
        "failed": sum(t.state.name == "FAIL" for t in trials),
        "wall_s": round(wall, 1),
        "span_s": round(span, 1),
        "trials_per_hour": round(3600 * len(finished) / span, 1),
        "train_s_per_trial": round(
            sum(t.user_attrs["seconds"] for t in finished) / len(finished), 2
        ),
        "storage_s_per_trial": round(critical / len(finished), 3),
        "heartbeat_s_per_trial": round(background / len(finished), 3),
        "storage_top": {m: round(s / len(finished), 4) for m, s in top},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--admin-url",
        default=POSTGRES_ADMIN,
        help="a PostgreSQL URL whose user may create databases",
    )
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from hpo.data import load_dataset

    load_dataset("demo", image_size=args.image_size)  # build the cache outside the timing
    with tempfile.TemporaryDirectory(prefix="hpo-bench-workers-") as tmp:
        rows = [run_case(n, args, Path(tmp)) for n in (1, 2)]

    cores = os.cpu_count() or 1
    table = Table(
        title=f"demo, {args.trials} trials, {args.epochs} epochs, {args.image_size}px, "
        f"PostgreSQL, {cores} CPU cores",
        title_justify="left",
    )
    for column in (
        "workers",
        "trials/hour",
        "train s/trial",
        "storage s/trial",
        "storage share",
        "heartbeat s/trial",
        "pruned",
        "wall s",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        share = row["storage_s_per_trial"] / (row["storage_s_per_trial"] + row["train_s_per_trial"])
        table.add_row(
            str(row["workers"]),
            f"{row['trials_per_hour']:.0f}",
            f"{row['train_s_per_trial']:.1f}",
            f"{row['storage_s_per_trial']:.3f}",
            f"{share:.1%}",
            f"{row['heartbeat_s_per_trial']:.3f}",
            str(row["pruned"]),
            f"{row['wall_s']:.0f}",
        )
    console = Console(width=140)
    console.print(table)
    for row in rows:
        console.print(
            f"{row['workers']} worker(s), storage seconds per trial by method: "
            + ", ".join(f"{m} {s:.3f}" for m, s in row["storage_top"].items())
        )
    speedup = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    console.print(
        f"2 workers / 1 worker: {speedup:.2f}x trials per hour (on {cores} cores the "
        f"ceiling is about 1x: one TensorFlow process already uses every core)"
    )

    out = REPO / "bench" / "results" / "workers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"admin_url": "(redacted)"},
                "cpu_count": cores,
                "python": platform.python_version(),
                "rows": rows,
            },
            indent=1,
        )
    )
    console.print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
