"""A real MLflow tracking server for the tests and ``bench_mlflow.py``: ``mlflow server`` on
127.0.0.1 at a free port, SQLite backend store and artifact root in a temporary folder; it
can be killed and started again on the same port and store (the 'server died mid-study'
tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

START_SECONDS = 300  # a cold start takes ~50 s on the shared 2-core CI machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` in its own process group (it forks uvicorn workers)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(self.folder / "server.log", "ab") as log:  # the server keeps its own copy
            self.proc = subprocess.Popen(
                [
                    str(mlflow),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{self.folder / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self.folder / "artifacts"),
                ],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        try:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
                try:
                    if requests.get(f"{self.url}/health", timeout=5).ok:
                        return
                except requests.RequestException:  # not listening yet, or still starting
                    pass
                time.sleep(0.5)
            raise AssertionError(f"mlflow server not up after {START_SECONDS}s")
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def stop(self) -> None:
        """Kill the whole server (SIGKILL: a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def api(self, endpoint: str, method: str = "GET", **body: Any) -> dict:
        """One call of the REST API (``/api/2.0/mlflow/...``), as any MLflow client makes it."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        response = (
            requests.post(url, json=body, timeout=30)
            if method == "POST"
            else requests.get(url, params=body, timeout=30)
        )
        assert response.ok, f"{endpoint}: {response.status_code} {response.text[:500]}"
        return response.json()

    def runs(self, experiment: str) -> list[dict]:
        """Every run of ``experiment`` (by name) with its tags as a dict under ``tags``."""
        experiment_id = self.api("experiments/get-by-name", experiment_name=experiment)[
            "experiment"
        ]["experiment_id"]
        runs = self.api(
            "runs/search", "POST", experiment_ids=[experiment_id], max_results=1000
        ).get("runs", [])
        for run in runs:
            run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        return runs

    def history(self, run_id: str, metric: str) -> list[dict]:
        return self.api("metrics/get-history", run_id=run_id, metric_key=metric)["metrics"]

    def artifacts(self, run_id: str) -> list[str]:
        return [f["path"] for f in self.api("artifacts/list", run_id=run_id).get("files", [])]
