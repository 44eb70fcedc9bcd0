"""Options shared by several commands, each with its environment-variable fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpo.storage import DEFAULT_STORAGE

__all__ = ["Artifacts", "DEFAULT_STORAGE", "DataDir", "MlflowExperiment", "MlflowUri", "Storage"]

Storage = Annotated[
    str,
    typer.Option(
        "--storage",
        envvar="HPO_STORAGE",
        help="Optuna storage URL (sqlite:///..., postgresql+psycopg://...). Env: HPO_STORAGE.",
    ),
]

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="HPO_DATA_DIR",
        help="Image folder of the dataset (not needed for 'demo'). Env: HPO_DATA_DIR.",
    ),
]

Artifacts = Annotated[
    Path | None,
    typer.Option(
        "--artifacts",
        envvar="HPO_ARTIFACTS",
        help="Folder of the artifact store (trial and export plots; default ./artifacts). Env: HPO_ARTIFACTS.",
    ),
]

MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        envvar="HPO_MLFLOW_URI",
        help="Also log to this MLflow tracking URI (http://host:port, sqlite:///mlflow.db); "
        "needs hpo's mlflow extra. Env: HPO_MLFLOW_URI.",
    ),
]

MlflowExperiment = Annotated[
    str | None,
    typer.Option(
        "--mlflow-experiment",
        help="MLflow experiment of the study's runs (default: the study name).",
    ),
]
