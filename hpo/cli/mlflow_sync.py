"""``hpo mlflow-sync STUDY --mlflow URI``: log the finished trials MLflow is missing (the
server was down, or the study ran without ``--mlflow``); ``hpo/mlflow_mirror.py`` does it."""

from __future__ import annotations

from typing import Annotated

import typer

from hpo.cli.options import DEFAULT_STORAGE, Artifacts, MlflowExperiment, MlflowUri, Storage

HELP = (
    "Back-fill MLflow with the finished trials of STUDY that have no complete run there "
    "(safe to repeat: trials already logged are left alone)."
)


def mlflow_sync_command(
    study: Annotated[str, typer.Argument(help="Study name.")],
    mlflow: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
    storage: Storage = DEFAULT_STORAGE,
    artifacts: Artifacts = None,
) -> None:
    from hpo.errors import HpoError
    from hpo.mlflow_mirror import MlflowMirror, require_mlflow
    from hpo.progress import Reporter, terminal_console
    from hpo.study import load_study

    require_mlflow()
    if not mlflow:
        raise HpoError("mlflow-sync needs --mlflow URI (or HPO_MLFLOW_URI)")
    console = terminal_console(stderr=True)
    loaded = load_study(storage, study)
    with MlflowMirror(
        mlflow, mlflow_experiment, reporter=Reporter(), artifacts=artifacts
    ) as mirror:
        result = mirror.sync(loaded)
    console.print(
        f"study '{study}': logged {len(result.logged)} trials now"
        f"{_numbers(result.logged)}; {len(result.present)} were already in MLflow"
    )
    if result.failed:
        details = "; ".join(f"trial {n}: {why}" for n, why in sorted(result.failed.items()))
        raise HpoError(f"{len(result.failed)} trials not logged ({details}); run it again")


def _numbers(numbers: list[int]) -> str:
    return f" ({', '.join(map(str, numbers))})" if numbers else ""


def register(app: typer.Typer) -> None:
    app.command("mlflow-sync", help=HELP)(mlflow_sync_command)
