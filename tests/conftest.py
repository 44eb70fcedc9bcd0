"""Shared fixtures: real data from ../shared/data, and a private cache/storage per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
ANIMALS10 = SHARED_DATA / "animals10-sample" / "raw-img"
CATSDOGS = SHARED_DATA / "cats_and_dogs_small"


def pytest_configure(config: pytest.Config) -> None:
    # Tests must be quick and deterministic on a 2-core CPU machine.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test session shares one decode cache, never the user's ~/.cache/hpo."""
    cache = tmp_path_factory.getbasetemp() / "hpo-cache"
    monkeypatch.setenv("HPO_CACHE_DIR", str(cache))
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def animals10_dir() -> Path:
    assert ANIMALS10.is_dir(), f"shared data missing: {ANIMALS10}"
    return ANIMALS10


@pytest.fixture(scope="session")
def catsdogs_dir() -> Path:
    assert CATSDOGS.is_dir(), f"shared data missing: {CATSDOGS}"
    return CATSDOGS


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, check: bool = True) -> "subprocess.CompletedProcess[str]":
    """Run the real ``hpo`` CLI in a subprocess, the way a user does."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpo {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
