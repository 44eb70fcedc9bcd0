"""Files attached to studies and trials (learning curves, confusion matrices, exports),
kept in an Optuna file-system artifact store that optuna-dashboard serves next to the trial.

optuna-dashboard already plots the per-epoch validation accuracy (the intermediate values
the pruner reads), but not the training curves or the loss, which are what tell
over-fitting from under-fitting. So every finished trial uploads one two-panel picture
(loss, accuracy; train and validation) into the artifact store, and the dashboard shows it
on the trial's page.


The store is a folder (default ``artifacts/`` beside ``studies.db``, env ``HPO_ARTIFACTS``);
under docker-compose it is a volume shared by the workers and the dashboard.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

DEFAULT_ARTIFACTS = "artifacts"
CURVE_FILENAME = "learning-curve-trial-{number}.png"


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


def attach_learning_curve(
    trial: optuna.Trial,
    history: Mapping[str, Sequence[float]],
    state: str,
    artifacts: str | Path | None = None,
) -> str | None:
    """Draw ``history`` and upload it as an artifact of ``trial``; returns the artifact id,
    or None for a trial that failed before its first epoch (nothing to draw).

    Call it *before* ``study.tell``: Optuna records the artifact on the trial, and a
    finished trial can no longer be changed.
    """
    if not history.get("loss"):
        return None
    with tempfile.TemporaryDirectory(prefix="hpo-curve-") as tmp:
        path = Path(tmp) / CURVE_FILENAME.format(number=trial.number)
        from hpo.plots import learning_curve

        learning_curve(history, path, f"trial {trial.number} ({state.lower()})")
        return attach(trial, path, path=artifacts)


def learning_curve_file(
    trial: optuna.trial.FrozenTrial,
    storage: optuna.storages.BaseStorage,
    folder: str | Path,
    artifacts: str | Path | None = None,
) -> Path | None:
    """Copy the learning-curve PNG that :func:`attach_learning_curve` stored for ``trial``
    into ``folder``; None when the trial has none (failed before its first epoch) or the
    file is not in this artifact store (another machine's store)."""
    name = CURVE_FILENAME.format(number=trial.number)
    data = read_trial_artifact(trial, storage, name, artifacts)
    if data is None:
        return None
    path = Path(folder) / name
    path.write_bytes(data)
    return path


def read_trial_artifact(
    trial: optuna.trial.FrozenTrial,
    storage: optuna.storages.BaseStorage,
    filename: str,
    artifacts: str | Path | None = None,
) -> bytes | None:
    """The bytes of ``trial``'s artifact ``filename``; None when the trial has none or the
    file is not in this artifact store (another machine's store)."""
    from optuna.artifacts import get_all_artifact_meta
    from optuna.artifacts.exceptions import ArtifactNotFound

    for meta in get_all_artifact_meta(trial, storage=storage):
        if meta.filename == filename:
            try:
                with artifact_store(artifacts).open_reader(meta.artifact_id) as reader:
                    return reader.read()
            except ArtifactNotFound:
                return None
    return None
