"""Shared fixtures: real data from ../shared/data, and a private cache/storage per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from bench.pg import POSTGRES_ADMIN, temporary_database

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
ANIMALS10 = SHARED_DATA / "animals10-sample" / "raw-img"
CATSDOGS = SHARED_DATA / "cats_and_dogs_small"


def pytest_configure(config: pytest.Config) -> None:
    # Tests must be quick and deterministic on a 2-core CPU machine.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # One decode cache for the whole session (module fixtures too), never ~/.cache/hpo.
    # pytest-xdist's workers (`-n 2`) inherit the controller's folders, so the images are
    # decoded once for all of them (the cache builds an entry once across processes).
    import tempfile

    if "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ["HPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="hpo-test-cache-")
        # Learning curves of in-process runs go to a temporary store, never ./artifacts.
        os.environ["HPO_ARTIFACTS"] = tempfile.mkdtemp(prefix="hpo-test-artifacts-")
    for name in ("HPO_STORAGE", "HPO_DATA_DIR"):
        os.environ.pop(name, None)


# The longest test files (seconds of work each, measured with `--durations=0`), handed to the
# xdist workers first: `--dist loadfile` deals files out in collection order, and a long file
# dealt last leaves the other workers idle while it runs.
LONGEST_FIRST = (
    "test_mlflow.py",
    "test_workers.py",
    "test_soak.py",
    "test_bench.py",
    "test_families_cli.py",
    "test_export.py",
    "test_keras_tuner.py",
    "test_execution.py",
    "test_study.py",
    "test_smoke.py",  # the fast tier's longest
    "test_families.py",
    "test_dashboard_browser.py",
    "test_viz.py",
    "test_backends.py",
    "test_model_training.py",
    "test_storage.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within kept


@pytest.fixture(scope="session", autouse=True)
def _keras_loaded_and_frozen() -> None:
    """Each in-process trial's ``clear_session`` runs a full collection; with the backend
    frozen out of the collector, as in `hpo run`'s trial processes, it no longer walks the
    ~450k objects importing it left (~0.3 s of a tiny trial's ~3 s)."""
    from hpo.study.isolate import load_and_freeze_backend

    load_and_freeze_backend()


@pytest.fixture(scope="session")
def animals10_dir() -> Path:
    assert ANIMALS10.is_dir(), f"shared data missing: {ANIMALS10}"
    return ANIMALS10


@pytest.fixture(scope="session")
def catsdogs_dir() -> Path:
    assert CATSDOGS.is_dir(), f"shared data missing: {CATSDOGS}"
    return CATSDOGS


# Widths and depths a 2-core CI box trains in seconds at 16 px; every other key of the shipped
# space (families, schedules, optimizers) is kept, so a test still walks the user's code path.
SMALL = {
    "conv_blocks": "{ low = 2, high = 3 }",
    "filters": "{ choices = [4, 8] }",
    "dense_units": "{ choices = [0, 16] }",
    "batch_size": "{ choices = [64] }",
}


def trial_artifacts(trial: optuna.trial.FrozenTrial) -> dict[str, dict]:
    """A trial's artifacts' metadata by file name: its learning curve and, once it has
    finished an epoch, its validation probabilities (``val-probs-trial-N.npy``)."""
    metas = (json.loads(v) for k, v in trial.system_attrs.items() if k.startswith("artifacts:"))
    return {meta["filename"]: meta for meta in metas}


def small_space(folder: Path, dataset: str, **pins: str) -> Path:
    """The shipped ``search_spaces/<dataset>.toml`` with models shrunk to test size (``SMALL``)
    and ``pins`` (key -> TOML value, e.g. ``block='"residual"'``) replacing its lines."""
    values = {**SMALL, **pins}
    lines = []
    for line in (REPO / "search_spaces" / f"{dataset}.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {values[key]}" if key in values and "=" in line else line)
    path = folder / f"{dataset}-small.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a real `hpo` subprocess: this one, with this checkout importable."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``hpo`` CLI in a subprocess, the way a user does."""

    proc = subprocess.run(
        [sys.executable, "-m", "hpo", *args],
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"hpo {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


# What `invoke_cli` adds to the environment: trials train in this process. `hpo run` forks a
# child per 10 trials by default and refuses to fork once Keras is loaded, as it is in a test
# worker; a child (and its backend's ~7 s import) per run is what the tests of isolation
# themselves pay for, through `run_cli`.
IN_PROCESS = {"HPO_TRIALS_PER_PROCESS": "0"}


def invoke_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real entry point, ``hpo.cli.main``, in this process under typer's CliRunner
    (its own stdout, stderr and environment); same arguments and result as :func:`run_cli`.

    An interpreter start costs seconds (and the backend's import), so this is the default;
    trials train here (``IN_PROCESS``), since ``hpo run`` refuses to fork trial children
    from a process that loaded Keras."""
    from typer.testing import CliRunner

    from hpo.cli import main

    before, argv = os.getcwd(), sys.argv
    with CliRunner().isolation(env={**IN_PROCESS, **(env or {})}) as (out, err, _):
        sys.argv = ["hpo", *args]
        try:
            os.chdir(cwd or before)
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            os.chdir(before)
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    if check and code != 0:
        raise AssertionError(
            f"hpo {' '.join(args)} exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    return subprocess.CompletedProcess(["hpo", *args], code, stdout, stderr)


def interrupt_once_running(args: list[str], cwd: Path, db: Path) -> tuple[int, str]:
    """Start the real ``hpo`` CLI, send Ctrl-C (SIGINT) once a trial is RUNNING in the SQLite
    file ``db``, and return its exit code and stderr."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with sqlite3.connect(db) as conn:
                running = conn.execute(
                    "SELECT count(*) FROM trials WHERE state='RUNNING'"
                ).fetchone()[0]
        except sqlite3.OperationalError:
            continue  # tables not created yet
        if running:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test (started by `make services`; never skipped)."""
    import sqlalchemy

    try:
        with temporary_database() as url:
            yield url
    except sqlalchemy.exc.OperationalError as exc:
        raise AssertionError(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN}: run `make services` "
            f"({str(exc).splitlines()[0]})"
        ) from None


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind hpo supports, one test run per kind (optuna/testing's
    storage fixtures): the test id names the backend that failed."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'storage.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two studies in one database (v.db, artifacts in art/), shared by the viz and browser
    tests: 'demo' (2 trials) and 'demo-pruned', whose one trial is pruned after its first
    epoch because a recorded trial reached 1.0 at every epoch.

    Built once per test run, whichever xdist worker asks first (``hpo.files.build_once``:
    the others wait on its lock, then read it): the tests that use it only read it."""
    from hpo.files import build_once

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # this run's
    build_once(shared / "searched", _search_demo_and_demo_pruned)
    return shared / "searched"


def _search_demo_and_demo_pruned(cwd: Path) -> None:
    common = ["--epochs", "2", "--image-size", "16", "--storage", "sqlite:///v.db"]
    common += ["--artifacts", "art"]
    invoke_cli("run", "demo", "--trials", "2", *common, cwd=cwd)

    strict = cwd / "strict.toml"
    strict.write_text(
        (REPO / "search_spaces/demo.toml")
        .read_text()
        .replace("startup_trials = 3", "startup_trials = 1")
        .replace("warmup_epochs = 1", "warmup_epochs = 0")
    )
    baseline = optuna.create_study(
        study_name="demo-pruned", storage=f"sqlite:///{cwd / 'v.db'}", direction="maximize"
    )
    baseline.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0}))
    # tpe-median: the strategy that reads the space's [pruner] table, made strict above
    invoke_cli(
        "run",
        "demo",
        "--study",
        "demo-pruned",
        "--space",
        str(strict),
        "--trials",
        "1",
        "--strategy",
        "tpe-median",
        *common,
        cwd=cwd,
    )
