"""Storage at study sizes of 100 and 10,000 trials: hpo's per-trial storage work, `hpo status`
and the dashboard's API, on SQLite and PostgreSQL.

    python bench/bench_storage_scale.py [--sizes 100,10000] [--storage sqlite,postgres]
        [--repeat 5] [--made 100] [--parts slots,cli,status,old,dashboard,browser]
        [--out bench/results/storage-scale.json] [--from-results JSON ...]

Each study is generated, not trained: Optuna's ``create_trial``/``add_trials`` with the params,
values, intermediate values and user attrs (history, confusion matrix) a real trial has, for
the first ``--made`` trials; beyond those, the rows Optuna wrote for them are copied in SQL
under new trial numbers (Optuna writes about 4 trials a second on a loaded 2-core machine,
so 10,000 trials through its API would take most of an hour per storage).
Per size it times (median of ``--repeat``):

- ``slot checks``: the storage work hpo's loop does per trial besides ask/tell (counting the
  finished trials for the stop rule, the claim check, the give-way check, the best value),
  on a study opened the way the loop opens it; and, for comparison, the same counts done the
  old way (``study.get_trials`` and counting in Python) on a freshly opened study;
- ``hpo status`` and ``hpo status demo``, the real CLI in a subprocess (start-up
  included); the same work in-process (without the interpreter's start); and in-process for
  comparison the way ``hpo status`` read a storage before (``get_all_study_summaries`` and
  every trial of every study, counted in Python);
- the dashboard (``hpo dashboard``'s server on 127.0.0.1, a free port): ``GET /api/studies``
  and ``GET /api/studies/<id>`` (the study page's data, every trial), over HTTP: the first
  request for the study (optuna-dashboard then loads and caches its trials) and the median
  of the later ones;
- ``browser``: the study page in a real Chromium (Playwright, ``/usr/bin/chromium``): seconds
  until its data has arrived and until the History plot has drawn its points, then for
  ``BROWSER_WATCH_S`` seconds with optuna-dashboard's Live Update on (it polls every 10 s)
  and as long again with it switched off in the sidebar, how responsive the page is: the
  longest wait for the page to run a trivial script and the share of the time it was blocked
  (waits over 0.2 s). Not in the default ``--parts``: it needs Chromium and minutes at
  10,000 trials.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

from bench.pg import POSTGRES_ADMIN, temporary_database  # noqa: E402


def make_study(url: str, n: int, made: int) -> None:
    """A study named ``demo`` of ``n`` finished trials shaped like hpo's (3 epochs each):
    ``made`` through Optuna's API, the rest copies of those (:func:`copy_trials`)."""
    import random

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hpo.storage import open_storage
    from hpo.study.record import PREFIX

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    study = optuna.create_study(storage=open_storage(url), study_name="demo", direction="maximize")
    study.set_user_attr(f"{PREFIX}dataset", "demo")
    dists = {
        "learning_rate": FloatDistribution(3e-4, 3e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "activation": CategoricalDistribution(["relu", "elu", "gelu", "swish"]),
    }
    trials = []
    for i in range(min(n, made)):
        curve = [rng.random() for _ in range(3)]
        pruned = i % 4 == 3
        trials.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
                value=None if pruned else curve[-1],
                params={
                    "learning_rate": 10 ** rng.uniform(-3.5, -1.6),
                    "dropout": rng.random() / 2,
                    "activation": rng.choice(["relu", "elu", "gelu", "swish"]),
                },
                distributions=dists,
                intermediate_values=dict(enumerate(curve)),
                user_attrs={
                    "history": {"loss": curve, "val_accuracy": curve},
                    "epochs_trained": 3,
                    "seconds": 10.0,
                    "val_macro_f1": curve[-1],
                    "val_confusion_matrix": [
                        [10, 2, 1, 0],
                        [1, 9, 2, 1],
                        [0, 1, 11, 1],
                        [2, 0, 1, 12],
                    ],
                },
            )
        )
    for start in range(0, len(trials), 1000):
        study.add_trials(trials[start : start + 1000])
    copy_trials(url, study._study_id, len(trials), n)


# Optuna's per-trial tables and the columns a copy takes over (all but the ids).
TRIAL_TABLES = {
    "trial_params": ("param_name", "param_value", "distribution_json"),
    "trial_values": ("objective", "value", "value_type"),
    "trial_intermediate_values": ("step", "intermediate_value", "intermediate_value_type"),
    "trial_user_attributes": ("key", "value_json"),
    "trial_system_attributes": ("key", "value_json"),
}


def copy_trials(url: str, study_id: int, made: int, n: int) -> None:
    """Grow the study from ``made`` trials to ``n`` by copying the rows of trials 0..made-1
    under the next numbers, in one transaction."""
    from sqlalchemy import text

    from hpo.storage import open_storage

    engine = open_storage(url).engine
    with engine.begin() as conn:
        rows = {
            table: conn.execute(
                text(
                    f"SELECT t.number, {', '.join(f'c.{col}' for col in cols)} FROM {table} c "
                    "JOIN trials t ON c.trial_id = t.trial_id WHERE t.study_id = :s"
                ),
                {"s": study_id},
            ).all()
            for table, cols in TRIAL_TABLES.items()
        }
        for offset in range(made, n, made):
            count = min(made, n - offset)
            conn.execute(
                text(
                    "INSERT INTO trials (number, study_id, state, datetime_start, "
                    "datetime_complete) SELECT number + :off, study_id, state, datetime_start, "
                    "datetime_complete FROM trials WHERE study_id = :s AND number < :k"
                ),
                {"off": offset, "s": study_id, "k": count},
            )
            ids = dict(
                conn.execute(
                    text(
                        "SELECT number, trial_id FROM trials WHERE study_id = :s AND number >= :off"
                    ),
                    {"s": study_id, "off": offset},
                ).all()
            )
            for table, cols in TRIAL_TABLES.items():
                values = [
                    {"trial_id": ids[number + offset], **dict(zip(cols, rest, strict=True))}
                    for number, *rest in rows[table]
                    if number < count
                ]
                if not values:  # e.g. no system attrs at all
                    continue
                conn.execute(
                    text(
                        f"INSERT INTO {table} (trial_id, {', '.join(cols)}) "
                        f"VALUES (:trial_id, {', '.join(f':{col}' for col in cols)})"
                    ),
                    values,
                )


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def slot_checks(url: str, repeat: int) -> tuple[float, float]:
    """hpo's per-trial checks now, and the same counts the get_trials way (fresh study each
    time, as a new worker or a resumed run sees it)."""
    import optuna
    from optuna.trial import TrialState

    from hpo.storage import open_storage, trial_count
    from hpo.study.setup import best_value
    from hpo.study.slots import FINISHED, HELD, count_finished

    rdb = open_storage(url)
    study = optuna.load_study(study_name="demo", storage=rdb)
    study.get_trials(deepcopy=False)  # the loop's study has read its trials once (sampler)

    def now() -> None:
        count_finished(study)
        trial_count(study._storage, study._study_id, (*FINISHED, TrialState.RUNNING))
        trial_count(study._storage, study._study_id, HELD, below=10**9)
        best_value(study)

    def old() -> None:
        fresh = optuna.load_study(study_name="demo", storage=rdb)
        trials = fresh.get_trials(deepcopy=False)
        sum(t.state in FINISHED for t in trials)
        sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials)
        sum(t.state in HELD for t in trials)
        best_value(fresh)

    return median_seconds(now, repeat), median_seconds(old, repeat)


def cli_seconds(url: str, repeat: int, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run() -> None:
        subprocess.run(
            [sys.executable, "-m", "hpo", "status", "--storage", url, *args],
            env=env,
            check=True,
            capture_output=True,
        )

    return median_seconds(run, repeat)


def status_in_process_seconds(url: str, repeat: int) -> float:
    """What ``hpo status`` and ``hpo status demo --json`` do after start-up, in this process:
    the CLI's own time is mostly the interpreter's start on a loaded machine."""
    from hpo import status

    def run() -> None:
        status.list_studies(url)
        status.study_details(status.open_study(url, "demo"))

    run()  # imports and Optuna's first schema check are the CLI's start-up, not timed here
    return median_seconds(run, repeat)


def status_by_loading_seconds(url: str, repeat: int) -> float:
    """What ``hpo status`` did before it counted in SQL: Optuna's study summaries (which
    load every trial) and then every trial of every study again, counted in Python."""
    import optuna

    from hpo.storage import open_storage

    def run() -> None:
        storage = open_storage(url)
        for summary in optuna.get_all_study_summaries(storage):
            trials = storage.get_all_trials(summary._study_id, deepcopy=False)
            sorted(
                (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
                key=lambda t: t.value,
            )
            sum(int(t.user_attrs.get("epochs_trained") or 0) for t in trials)

    return median_seconds(run, repeat)


@contextmanager
def _serving(url: str) -> Iterator[str]:
    """``hpo dashboard``'s server on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    from hpo.dashboard import make_dashboard

    with tempfile.TemporaryDirectory() as artifacts:
        server = make_dashboard(url, port=0, artifacts=artifacts)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()


def _first_study_id(base: str) -> int:
    return json.loads(urllib.request.urlopen(f"{base}/api/studies").read())["study_summaries"][0][
        "study_id"
    ]


def dashboard_seconds(url: str, repeat: int) -> dict[str, float]:
    """optuna-dashboard's API: the study list, the study page's first load (trials read and
    cached), a reload (every trial serialized again) and the page's poll, which asks only
    for trials after those it has (``?after=N``, what its bundle.js sends every few s)."""

    def get(path: str) -> bytes:
        return urllib.request.urlopen(f"{api}{path}", timeout=900).read()

    with _serving(url) as base:
        api = f"{base}/api/studies"
        study_id = _first_study_id(base)
        times = {"dash_studies_s": median_seconds(lambda: get(""), repeat)}
        started = time.perf_counter()
        n = len(json.loads(get(f"/{study_id}"))["trials"])
        times["dash_study_first_s"] = time.perf_counter() - started
        times["dash_study_s"] = median_seconds(lambda: get(f"/{study_id}"), repeat)
        times["dash_study_poll_s"] = median_seconds(lambda: get(f"/{study_id}?after={n}"), repeat)
    return times


BROWSER_WATCH_S = 40
CHROMIUM = "/usr/bin/chromium"


def _blocked(page: Any, seconds: float) -> tuple[float, float]:
    """(longest wait in s, share of ``seconds`` blocked) for a trivial script on ``page``."""
    waits = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        page.evaluate("1")
        waits.append(time.perf_counter() - started)
        time.sleep(0.5)
    return max(waits), sum(w for w in waits if w > 0.2) / seconds


def browser_seconds(url: str) -> dict[str, float]:
    """The study page in Chromium: data in, History drawn, then blocked time with Live Update
    on and off (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    with _serving(url) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            study_page = f"{base}/dashboard/studies/{_first_study_id(base)}"
            started = time.perf_counter()
            with page.expect_response(lambda r: "after=0" in r.url, timeout=900_000) as data:
                page.goto(study_page, timeout=900_000)
            data.value.finished()
            times = {"browser_data_s": time.perf_counter() - started}
            points = page.locator(".js-plotly-plot .scatterlayer .points path").first
            points.wait_for(state="attached", timeout=900_000)
            times["browser_drawn_s"] = time.perf_counter() - started
            times["browser_live_max_wait_s"], times["browser_live_blocked"] = _blocked(
                page, BROWSER_WATCH_S
            )
            page.get_by_title("Live Update").click(timeout=900_000)
            time.sleep(10)  # a poll already under way still lands
            times["browser_still_max_wait_s"], times["browser_still_blocked"] = _blocked(
                page, BROWSER_WATCH_S
            )
        finally:
            browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--storage", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--made", type=int, default=100, help="trials made through Optuna's API per study"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "storage-scale.json"
    )
    parser.add_argument("--admin-url", default=POSTGRES_ADMIN)
    parser.add_argument(
        "--parts",
        default="slots,cli,status,old,dashboard",
        help="what to time, comma-separated: slots (slot checks), cli (hpo status in a "
        "subprocess), status (its work in-process), old (status by loading every trial), "
        "dashboard (its API), browser (the study page in Chromium; not by default)",
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only print (and write to --out) the rows of earlier runs' JSON together",
    )
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    rows = []
    if args.from_results:
        rows = [
            {**row, "from": str(path)}
            for path in args.from_results
            for row in json.loads(path.read_text())["rows"]
        ]
    for storage in [] if args.from_results else args.storage.split(","):
        for size in map(int, args.sizes.split(",")):
            with ExitStack() as stack:
                if storage == "sqlite":
                    tmp = stack.enter_context(tempfile.TemporaryDirectory())
                    url = f"sqlite:///{tmp}/scale.db"
                else:
                    url = stack.enter_context(temporary_database(args.admin_url, "hpo_scale"))
                started = time.perf_counter()
                make_study(url, size, args.made)
                made = time.perf_counter() - started
                row: dict[str, Any] = {
                    "storage": storage,
                    "trials": size,
                    "made_by_optuna": min(size, args.made),
                    "load_1min": os.getloadavg()[0],
                    "generate_s": made,
                }
                parts = args.parts.split(",")
                if "slots" in parts:
                    row["slot_checks_s"], row["slot_checks_get_trials_s"] = slot_checks(
                        url, args.repeat
                    )
                if "cli" in parts:
                    row["status_s"] = cli_seconds(url, args.repeat)
                    row["status_json_s"] = cli_seconds(url, args.repeat, "--json")
                    row["status_study_s"] = cli_seconds(url, args.repeat, "demo")
                if "status" in parts:
                    row["status_in_process_s"] = status_in_process_seconds(url, args.repeat)
                if "old" in parts:
                    row["status_by_loading_s"] = status_by_loading_seconds(url, args.repeat)
                if "dashboard" in parts:
                    row.update(dashboard_seconds(url, args.repeat))
                if "browser" in parts:
                    row.update(browser_seconds(url))
                rows.append(row)
                print(json.dumps(row), flush=True)

    table = Table(title=f"storage at scale (median of {args.repeat})", title_justify="left")
    for column in (
        "storage",
        "trials",
        "slot checks ms/trial",
        "same via get_trials ms",
        "hpo status s",
        "hpo status --json s",
        "hpo status demo s",
        "status + status demo in-process s",
        "status by loading every trial s",
        "/api/studies s",
        "/api/studies/<id> first / reload / poll s",
        "browser: data / History drawn s",
        "longest wait, blocked: Live Update on / off",
    ):
        table.add_column(column, justify="right")

    def cell(r: dict[str, Any], *keys: str, scale: float = 1.0, digits: int = 2) -> str:
        return " / ".join(f"{scale * r[key]:.{digits}f}" if key in r else "-" for key in keys)

    for r in rows:
        table.add_row(
            r["storage"],
            str(r["trials"]),
            cell(r, "slot_checks_s", scale=1e3, digits=1),
            cell(r, "slot_checks_get_trials_s", scale=1e3, digits=0),
            cell(r, "status_s"),
            cell(r, "status_json_s"),
            cell(r, "status_study_s"),
            cell(r, "status_in_process_s"),
            cell(r, "status_by_loading_s"),
            cell(r, "dash_studies_s"),
            cell(r, "dash_study_first_s", "dash_study_s", "dash_study_poll_s"),
            cell(r, "browser_data_s", "browser_drawn_s", digits=1),
            " / ".join(
                f"{r[f'browser_{k}_max_wait_s']:.1f} s, {100 * r[f'browser_{k}_blocked']:.0f}%"
                for k in ("live", "still")
                if f"browser_{k}_blocked" in r
            )
            or "-",
        )
    Console(width=200).print(table)
    from importlib.metadata import version

    import optuna

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "python": platform.python_version(),
                "optuna": optuna.__version__,
                "optuna_dashboard": version("optuna-dashboard"),
                "cpu_count": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
