"""Files attached to studies and trials (learning curves, confusion matrices, exports),
kept in an Optuna file-system artifact store that optuna-dashboard serves next to the trial.

The store is a folder (default ``artifacts/`` beside ``studies.db``, env ``HPO_ARTIFACTS``);
under docker-compose it is a volume shared by the workers and the dashboard.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

DEFAULT_ARTIFACTS = "artifacts"


def artifact_dir(path: str | Path | None = None) -> Path:
    """``path``, else ``$HPO_ARTIFACTS``, else ``./artifacts``; created if missing."""
    folder = Path(path or os.environ.get("HPO_ARTIFACTS") or DEFAULT_ARTIFACTS).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artifact_store(path: str | Path | None = None) -> FileSystemArtifactStore:
    return FileSystemArtifactStore(str(artifact_dir(path)))


def attach(
    target: optuna.Study | optuna.Trial | optuna.trial.FrozenTrial,
    file_path: str | Path,
    *,
    storage: optuna.storages.BaseStorage | None = None,
    path: str | Path | None = None,
) -> str:
    """Upload ``file_path`` as an artifact of a study or trial; returns the artifact id.

    A ``FrozenTrial`` needs its study's ``storage``, and must still be RUNNING: Optuna refuses
    to change a finished trial, so files made afterwards (exports) go on the study.
    """
    return upload_artifact(
        artifact_store=artifact_store(path),
        file_path=str(file_path),
        study_or_trial=target,
        storage=storage,
    )
