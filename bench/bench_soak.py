"""Soak: does one long-running worker stay flat in memory, time per trial and storage work?

    python bench/bench_soak.py [--trials 500] [--storage sqlite,postgres] [--epochs 1]
        [--image-size 16] [--label NAME] [--out bench/results/soak-NAME.json]
        [--admin-url postgresql+psycopg:///postgres?host=/var/run/postgresql] [--extra K=V ...]

For each storage a fresh process runs ``run_study("demo", n_trials=N)`` (what ``hpo run demo``
runs) on a fresh database, with a reporter that, at the end of every trial, reads from /proc:
the resident memory of the worker and of any child process it has (VmRSS, summed), its open
file descriptors and threads; plus the trial's wall time (end to end, storage and plotting
included), the CPU seconds (user + system, all threads, from getrusage) of the process that
trained it, from its trial_started to its trial_finished, and before it since the previous
trial's end (for a child's first trial: the child's start) (load on a shared machine stretches
wall time far more than CPU time), and the seconds its main thread spent in storage since
the previous trial. RSS is also split into the worker parent's and the trial child's, with the
trial's place in its child's life (1 = the child's first trial), so that memory can be compared
at the same point of a child's life. Storage
seconds are every RDBStorage method call, and every SQL statement issued outside one (hpo's
own counting queries), on the main thread; the heartbeat thread's writes are off the critical
path and not counted. Each call is attributed to Optuna's sampler/pruner when one of those is
on the stack, else to hpo's loop ("hpo storage s"), which is what hpo can keep flat.

Per-trial samples are written as JSON lines while the soak runs (``<out>.<storage>.jsonl``),
so a soak cut short still has its data; the table compares the trial-10 and last-trial RSS
and the median of trials 10-59 against the median of the last 50 for the times (a soak cut
short below 110 trials compares two equal, disjoint windows: from trial 10, and the last).
Noise is judged inside the early window, where nothing should have grown: half its
interquartile range over its median, and how far the medians of its two halves differ.
``--extra key=value`` passes more keyword arguments to ``run_study`` (e.g. ``isolate=0``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

from bench.pg import POSTGRES_ADMIN, temporary_database  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def tree_rss_mib(pid: int | None = None) -> float:
    """Resident MiB of ``pid`` (default: this process) and all its descendants."""
    todo, total = [pid or os.getpid()], 0
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
            todo += _children(p)
        except OSError:
            pass
    return total / 2**20


def own_rss_mib(pid: int) -> float:
    """Resident MiB of ``pid`` alone."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all its threads (0 at a fork)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def threads_and_fds(*pids: int) -> tuple[int, int]:
    """Threads and open file descriptors of ``pids`` together."""
    threads = fds = 0
    for pid in set(pids):
        status = Path(f"/proc/{pid}/status").read_text()
        threads += int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
        )
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return threads, fds


class StorageClock:
    """Seconds the main thread spends in storage, split into hpo's and the sampler's/pruner's."""

    OPTUNA_PARTS = (
        f"optuna{os.sep}samplers",
        f"optuna{os.sep}pruners",
        f"optuna_integration{os.sep}",
    )

    def __init__(self) -> None:
        # Shared memory: with --extra trials_per_process=N the trials run in forked children.
        self.seconds = {
            who: multiprocessing.Value("d", 0.0, lock=False) for who in ("hpo", "optuna")
        }
        self._depth = threading.local()

    def _who(self) -> str:
        frame = sys._getframe(2)
        while frame is not None:
            if any(part in frame.f_code.co_filename for part in self.OPTUNA_PARTS):
                return "optuna"
            frame = frame.f_back
        return "hpo"

    def enter(self) -> float | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        return time.perf_counter() if depth == 0 else None

    def leave(self, started: float | None) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._depth.n -= 1
        if started is not None:
            who = self._who()
            self.seconds[who].value += time.perf_counter() - started

    def install(self) -> None:
        """Time every RDBStorage method, and SQL run outside them (counting queries)."""
        import functools

        import sqlalchemy
        from optuna.storages import RDBStorage

        clock = self

        def timing(method: Any) -> Any:
            @functools.wraps(method)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = clock.enter()
                try:
                    return method(*args, **kwargs)
                finally:
                    clock.leave(started)

            return wrapper

        for attr, value in list(vars(RDBStorage).items()):
            if (
                callable(value)
                and not isinstance(value, (staticmethod, classmethod, type))
                and not attr.startswith("__")
                and attr != "record_heartbeat"
            ):
                setattr(RDBStorage, attr, timing(value))

        @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
        def before(conn: Any, *_: Any) -> None:
            conn.info.setdefault("hpo_soak", []).append(clock.enter())

        @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "after_cursor_execute")
        def after(conn: Any, *_: Any) -> None:
            stack = conn.info.get("hpo_soak")
            if stack:
                clock.leave(stack.pop())


def soak_worker(url: str, args: argparse.Namespace, jsonl: Path, extra: dict[str, Any]) -> None:
    """One worker: run_study with a reporter that samples /proc at every trial's end."""
    import gc

    from hpo.progress import Reporter
    from hpo.study import run_study

    clock = StorageClock()
    clock.install()
    out = jsonl.open("a", buffering=1)
    root = os.getpid()
    # Shared with forked children: the last trial's end, storage seconds then, the peak RSS.
    shared = {
        key: multiprocessing.Value("d", 0.0, lock=False)
        for key in ("last", "hpo", "optuna", "peak")
    }
    shared["last"].value = time.perf_counter()
    stop = threading.Event()

    def sample() -> None:  # the peak between two trial ends, every 0.5 s (parent and child)
        while not stop.wait(0.5):
            shared["peak"].value = max(shared["peak"].value, tree_rss_mib(root))

    def seconds(who: str) -> float:
        return clock.seconds[who].value - shared[who].value

    # Per process (a forked child starts with a copy): whose counters these are, the CPU
    # seconds at the running trial's start, and how many trials this process has finished.
    # cpu_end: at the last trial's end in this process (0 at a fork: a child's first trial
    # then shows the child's start, importing the backend, as CPU before the trial).
    life = {"pid": os.getpid(), "cpu_start": 0.0, "cpu_end": 0.0, "finished": 0}

    def own_life() -> dict[str, Any]:
        if life["pid"] != os.getpid():
            life.update(pid=os.getpid(), cpu_start=0.0, cpu_end=0.0, finished=0)
        return life

    class SoakReporter(Reporter):
        def trial_started(self, number: int, params: Any, *args: Any, **kwargs: Any) -> None:
            own_life().update(cpu_start=cpu_seconds(), params=dict(params))

        def trial_finished(
            self,
            number: int,
            state: str,
            value: float | None,
            seconds_: float,
            best: float | None,
            note: str = "",
        ) -> None:
            now = time.perf_counter()
            threads, fds = threads_and_fds(root, os.getpid())
            rss = tree_rss_mib(root)
            mine = own_life()
            mine["finished"] += 1
            parent_rss = own_rss_mib(root)
            row = {
                "trial": number,
                "state": state,
                "wall_s": now - shared["last"].value,
                "train_s": seconds_,
                "cpu_s": cpu_seconds() - mine["cpu_start"],
                "cpu_before_s": mine["cpu_start"] - mine["cpu_end"],
                "rss_mib": rss,
                "rss_parent_mib": parent_rss,
                "rss_child_mib": rss - parent_rss,
                "trial_in_process": mine["finished"],
                "peak_rss_mib": max(shared["peak"].value, rss),
                "hpo_storage_s": seconds("hpo"),
                "optuna_storage_s": seconds("optuna"),
                "threads": threads,
                "fds": fds,
                "gc_objects": len(gc.get_objects()),
                "load_1min": os.getloadavg()[0],
                "pid": os.getpid(),
                # what the sampler chose: a strategy that converges on bigger models makes
                # trials slower without anything growing (compare with --extra strategy=random)
                "params": mine.get("params", {}),
            }
            mine["cpu_end"] = cpu_seconds()
            out.write(json.dumps(row) + "\n")
            shared["last"].value, shared["peak"].value = now, 0.0
            for who in ("hpo", "optuna"):
                shared[who].value = clock.seconds[who].value

        def message(self, text: str) -> None:
            print(text, flush=True)

    threading.Thread(target=sample, daemon=True, name="soak-sampler").start()
    with tempfile.TemporaryDirectory(prefix="hpo-soak-art-") as artifacts:
        run_study(
            "demo",
            n_trials=args.trials,
            storage=url,
            epochs=args.epochs,
            image_size=args.image_size,
            seed=args.seed,
            artifacts=artifacts,
            reporter=SoakReporter(),
            **extra,
        )
    stop.set()


# Parameters that change what a trial computes (and so its time), as in the demo's space.
COST_PARAMS = ("batch_size", "conv_blocks", "activation", "filters", "block", "dense_units")


def adjusted_trend(rows: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """How much ``key`` (a time) changed from the first trial to the last with the trials'
    configuration held fixed: least squares of log(time) on the trial number and one
    indicator per value of each parameter in ``COST_PARAMS`` (a sampler that drifts towards
    bigger models, or one draw of random search, would otherwise read as growth). Returns
    the relative change over the soak and its standard error; None without parameters.
    Trials from trial 10 on, a child's first trial left out (it pays the child's start)."""
    import numpy as np

    use = [r for r in rows if r["trial"] >= 10 and r.get("params") and r["trial_in_process"] > 1]
    if len(use) < 30:
        return None
    span = max(r["trial"] for r in use) - min(r["trial"] for r in use) or 1
    columns = [np.ones(len(use)), np.array([r["trial"] / span for r in use], dtype=float)]
    for name in COST_PARAMS:
        values = sorted({str(r["params"].get(name)) for r in use})
        for value in values[1:]:  # the first value is the baseline
            columns.append(np.array([str(r["params"].get(name)) == value for r in use], float))
    x = np.stack(columns, axis=1)
    y = np.log([max(r[key], 1e-9) for r in use])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    dof = max(len(use) - np.linalg.matrix_rank(x), 1)
    cov = float(residual @ residual) / dof * np.linalg.pinv(x.T @ x)
    slope, err = float(coef[1]), float(np.sqrt(cov[1, 1]))
    return float(np.expm1(slope)), err


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trial 10 vs the last trial (RSS, threads, fds) and trials 10-59 vs the last 50 (times),
    or two equal disjoint windows in a soak cut short."""
    width = 50 if len(rows) >= 110 else max((len(rows) - 10) // 2, 2)
    first = [r for r in rows if 10 <= r["trial"] < 10 + width]
    last = rows[-width:]
    at10 = next(r for r in rows if r["trial"] >= 10)
    # The goal counts trials from 1: RSS after the 10th trial against after the last.
    # With N trials per child both are a child's N-th trial when N divides 10 and the total.
    tenth = next(r for r in rows if r["trial"] >= 9)

    def med(part: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in part)

    def spread(part: list[dict[str, Any]], key: str) -> float:
        """Half the interquartile range over the median: how noisy the key is."""
        q = statistics.quantiles([r[key] for r in part], n=4)
        return (q[2] - q[0]) / 2 / max(statistics.median(r[key] for r in part), 1e-9)

    def halves(part: list[dict[str, Any]], key: str) -> float:
        """How far the medians of the window's two halves differ: the ratio that noise
        alone gives where nothing grows."""
        half = len(part) // 2
        return abs(med(part[half:], key) / max(med(part[:half], key), 1e-9) - 1)

    summary = {
        "trials": len(rows),
        "last_trial": rows[-1]["trial"],
        "rss_at_10": at10["rss_mib"],
        "rss_last": rows[-1]["rss_mib"],
        "peak_rss": max(r["peak_rss_mib"] for r in rows),
        "threads_at_10": at10["threads"],
        "threads_last": rows[-1]["threads"],
        "fds_at_10": at10["fds"],
        "fds_last": rows[-1]["fds"],
        "threads_max": max(r["threads"] for r in rows),
        "fds_max": max(r["fds"] for r in rows),
        "early_window": f"{first[0]['trial']}-{first[-1]['trial']}",
        "last_window": f"{last[0]['trial']}-{last[-1]['trial']}",
    }
    summary["rss_growth"] = summary["rss_last"] / summary["rss_at_10"] - 1
    summary["rss_after_10th"] = tenth["rss_mib"]
    summary["rss_growth_from_10th"] = rows[-1]["rss_mib"] / tenth["rss_mib"] - 1
    summary["rss_mib_per_trial"] = (rows[-1]["rss_mib"] - tenth["rss_mib"]) / max(
        rows[-1]["trial"] - tenth["trial"], 1
    )
    # The same point of a child's life: its first trial (the child's RSS then is the
    # backend's fixed cost plus one trial), the first such trial from trial 10 on against
    # the last; and the worker parent, which outlives every child. A run without children
    # (trials_per_process=0, one process) has none.
    firsts = [r for r in rows if r.get("trial_in_process") == 1 and r["trial"] >= 10]
    if firsts:
        summary["child_first_trials"] = f"{firsts[0]['trial']}/{firsts[-1]['trial']}"
        for key in ("rss_mib", "rss_child_mib"):
            start, end = firsts[0][key], firsts[-1][key]
            summary[f"{key}_child_first_at_10"], summary[f"{key}_child_first_last"] = start, end
            summary[f"{key}_child_first_growth"] = end / start - 1
        # Within a child: the rise from its first to its last trial (the backend's
        # per-trial memory), over the children that ran more than one trial.
        children: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            children.setdefault(r["pid"], []).append(r)
        lives = [c for c in children.values() if len(c) > 1 and c[0]["trial_in_process"] == 1]
        if lives:
            summary["child_rise"] = statistics.median(
                c[-1]["rss_mib"] / c[0]["rss_mib"] - 1 for c in lives
            )
            summary["child_mib_per_trial"] = statistics.median(
                (c[-1]["rss_child_mib"] - c[0]["rss_child_mib"]) / (len(c) - 1) for c in lives
            )
        if "cpu_before_s" in rows[-1]:  # a child's start, and the work between two trials
            summary["child_start_cpu_s"] = statistics.median(
                r["cpu_before_s"] for r in rows if r["trial_in_process"] == 1
            )
            summary["between_trials_cpu_s"] = statistics.median(
                r["cpu_before_s"] for r in rows if r["trial_in_process"] > 1
            )
        for key in ("threads", "fds"):  # the backend's thread pools grow within a child
            summary[f"{key}_child_first"] = f"{firsts[0][key]}/{firsts[-1][key]}"
        summary["rss_parent_at_10"] = at10["rss_parent_mib"]
        summary["rss_parent_last"] = rows[-1]["rss_parent_mib"]
        summary["rss_parent_growth"] = rows[-1]["rss_parent_mib"] / at10["rss_parent_mib"] - 1
    for key in ("wall_s", "train_s", "cpu_s", "hpo_storage_s", "optuna_storage_s"):
        if key not in rows[-1]:  # samples from before the key was recorded
            continue
        summary[f"{key}_early"], summary[f"{key}_last"] = med(first, key), med(last, key)
        summary[f"{key}_ratio"] = med(last, key) / max(med(first, key), 1e-9)
        summary[f"{key}_noise"] = spread(first, key)
        summary[f"{key}_halves"] = halves(first, key)
    for key in ("train_s", "cpu_s"):
        trend = adjusted_trend(rows, key)
        if trend is not None:
            summary[f"{key}_adjusted_change"], summary[f"{key}_adjusted_se"] = trend
    return summary


def run_case(storage: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    jsonl = base.with_name(f"{base.stem}.{storage}.jsonl")
    jsonl.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpo-soak-") as tmp:
        if storage == "sqlite":
            context: Any = None
            url = f"sqlite:///{tmp}/soak.db"
        else:
            context = temporary_database(args.admin_url, prefix="hpo_soak")
            url = context.__enter__()
        try:
            started = time.perf_counter()
            # A fresh interpreter per storage: nothing the other soak loaded is resident here.
            code = subprocess.run(
                [sys.executable, __file__, "--worker", url, "--jsonl", str(jsonl), *sys.argv[1:]],
                check=False,
            ).returncode
            wall = time.perf_counter() - started
        finally:
            if context is not None:
                context.__exit__(None, None, None)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {
        "storage": storage,
        "exit_code": code,
        "wall_s": round(wall, 1),
        **summarize(rows),
        "samples": str(jsonl),
    }


def table(results: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    def ratio(r: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2) -> str:
        if f"{key}_ratio" not in r:
            return "-"
        return (
            f"{scale * r[f'{key}_early']:.{digits}f} / {scale * r[f'{key}_last']:.{digits}f}"
            f" (x{r[f'{key}_ratio']:.2f})"
        )

    def growth(r: dict[str, Any], start: str, end: str, key: str) -> str:
        if key not in r:
            return "-"
        return f"{r[start]:.0f} / {r[end]:.0f} ({r[key]:+.1%})"

    t = Table(title=title, title_justify="left")
    for column in (
        "storage",
        "trials",
        "RSS after trial 10 / last MiB",
        "MiB/trial",
        "rise within a child",
        "RSS at a child's 1st trial, first/last MiB",
        "parent RSS @10 / last MiB",
        "wall s early / last",
        "CPU s early / last",
        "hpo storage ms early / last",
        "optuna storage ms early / last",
        "threads 10/last",
        "fds 10/last",
    ):
        t.add_column(column, justify="right")
    for r in results:
        t.add_row(
            r["storage"],
            str(r["trials"]),
            growth(r, "rss_after_10th", "rss_last", "rss_growth_from_10th"),
            f"{r['rss_mib_per_trial']:.2f}",
            f"{r['child_rise']:+.1%}" if "child_rise" in r else "-",
            growth(
                r,
                "rss_mib_child_first_at_10",
                "rss_mib_child_first_last",
                "rss_mib_child_first_growth",
            ),
            growth(r, "rss_parent_at_10", "rss_parent_last", "rss_parent_growth"),
            ratio(r, "wall_s"),
            ratio(r, "cpu_s"),
            ratio(r, "hpo_storage_s", 1e3, 1),
            ratio(r, "optuna_storage_s", 1e3, 1),
            f"{r['threads_at_10']}/{r['threads_last']}",
            f"{r['fds_at_10']}/{r['fds_last']}",
        )
    return t


def parse_extra(items: list[str]) -> dict[str, Any]:
    extra = {}
    for item in items:
        key, value = item.split("=", 1)
        extra[key] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--storage", default="sqlite,postgres")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="key=value keyword argument for run_study (repeatable)",
    )
    parser.add_argument(
        "--admin-url",
        default=POSTGRES_ADMIN,
        help="a PostgreSQL URL whose user may create databases",
    )
    parser.add_argument(
        "--from-samples",
        type=Path,
        nargs="+",
        metavar="JSONL",
        help="only summarize the samples of earlier (or cut-short) soaks",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        soak_worker(args.worker, args, args.jsonl, parse_extra(args.extra))
        return

    from rich.console import Console

    from hpo.data import load_dataset

    out = args.out or REPO / "bench" / "results" / f"soak-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_samples:
        results = [
            {
                # <out stem>.<storage>.jsonl, as run_case names them
                "storage": path.name.rsplit(".", 2)[-2],
                **summarize([json.loads(line) for line in path.read_text().splitlines()]),
                "samples": str(path),
            }
            for path in args.from_samples
        ]
        title = f"soak '{args.label}' (from samples, {os.cpu_count()} CPU cores)"
    else:
        load_dataset("demo", image_size=args.image_size)  # build the cache outside the soak
        results = [run_case(s, args, out) for s in args.storage.split(",")]
        title = (
            f"soak '{args.label}': demo, {args.trials} trials, "
            f"{args.epochs} epoch(s), {args.image_size}px, one worker, "
            f"{os.cpu_count()} CPU cores"
        )
    console = Console(width=200)
    console.print(table(results, title))
    for r in results:
        console.print(
            f"{r['storage']}: windows {r['early_window']} / {r['last_window']}; noise in the "
            f"early window (half IQR / median; medians of its halves differ by): wall "
            f"{r['wall_s_noise']:.0%}; {r['wall_s_halves']:.0%}, CPU {r['cpu_s_noise']:.0%}; "
            f"{r['cpu_s_halves']:.0%}, hpo storage {r['hpo_storage_s_noise']:.0%}; "
            f"{r['hpo_storage_s_halves']:.0%}; "
            + (
                f"CPU s per trial with the configuration held fixed: "
                f"{r['cpu_s_adjusted_change']:+.1%} from first to last (SE "
                f"{r['cpu_s_adjusted_se']:.1%}), trial time {r['train_s_adjusted_change']:+.1%} "
                f"(SE {r['train_s_adjusted_se']:.1%}); "
                if "cpu_s_adjusted_change" in r
                else ""
            )
            + f"peak RSS {r['peak_rss']:.0f} MiB"
            + (
                f"; within a child: RSS {r['child_rise']:+.1%} first to last trial, "
                f"{r['child_mib_per_trial']:.1f} MiB/trial; a child's start "
                f"{r.get('child_start_cpu_s', float('nan')):.1f} CPU s"
                if "child_rise" in r
                else "; no child processes (trials_per_process=0)"
            )
        )
    import keras
    import optuna

    out.write_text(
        json.dumps(
            {
                "args": {
                    k: str(v)
                    for k, v in vars(args).items()
                    if k not in ("admin_url", "worker", "jsonl")
                },
                "python": platform.python_version(),
                "optuna": optuna.__version__,
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
                "load_average_at_end": os.getloadavg(),
                "results": results,
            },
            indent=1,
        )
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
