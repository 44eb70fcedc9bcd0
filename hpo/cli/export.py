"""``hpo export-best STUDY``: retrain the winning trial on train+val, test it once, write a
model bundle (``hpo/export.py`` does the work; this module is options and screen output)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpo.cli.options import (
    DEFAULT_STORAGE,
    Artifacts,
    DataDir,
    MlflowExperiment,
    MlflowUri,
    Storage,
)

if TYPE_CHECKING:
    from hpo.mlflow_mirror import MlflowMirror
    from hpo.progress import Reporter

HELP = (
    "Retrain the best complete trial of STUDY (or --trial N) on train+val, evaluate it "
    "once on the test split and write a model bundle (default exports/STUDY)."
)


def export_best_command(
    study: Annotated[
        str, typer.Argument(help="Study name (as given to hpo run --study; default the dataset).")
    ],
    trial: Annotated[
        int | None, typer.Option(min=0, help="Export this trial number instead of the best one.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Bundle folder (default: $HPO_EXPORTS/STUDY or exports/STUDY)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing bundle folder.")
    ] = False,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Also test flip-averaged predictions (image and mirror); reported apart in metrics.json.",
        ),
    ] = False,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="Export the most accurate complete trial whose measured latency is within "
            "this (how a study of --objectives accuracy,latency is given its choice).",
        ),
    ] = None,
    ensemble: Annotated[
        str | None,
        typer.Option(
            metavar="K|auto",
            help="Ship a weighted average of up to K trials chosen on validation (greedy "
            "selection with replacement; auto: until validation accuracy stops rising), each "
            "retrained on train+val, as one model.",
        ),
    ] = None,
    storage: Storage = DEFAULT_STORAGE,
    data_dir: DataDir = None,
    artifacts: Artifacts = None,
    mlflow: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
    register: Annotated[
        str | None,
        typer.Option(
            help="Register the logged model under this name in MLflow's model registry (needs --mlflow)."
        ),
    ] = None,
) -> None:
    from hpo.ensemble import EnsembleRequest
    from hpo.export import export_best
    from hpo.progress import EpochBar, terminal_console

    request = None if ensemble is None else EnsembleRequest.parse(ensemble)
    console = terminal_console(stderr=True)
    reporter = EpochBar(console)
    mirror = _mirror(mlflow, mlflow_experiment, register, reporter)  # refuses before training
    result = export_best(
        study,
        storage=storage,
        trial=trial,
        data_dir=data_dir,
        out=out,
        force=force,
        artifacts=artifacts,
        reporter=reporter,
        tta=tta,
        max_latency_ms=max_latency_ms,
        ensemble=request,
    )
    m = result.metrics
    for member in m.get("ensemble", {}).get("members", []):
        console.print(
            f"member trial {member['trial']} (weight {member['weight']:.3f}): test accuracy "
            f"{member['test_accuracy']:.4f} alone"
        )
    console.print(
        f"{'ensemble, heaviest member ' if 'ensemble' in m else ''}trial {result.trial}: test accuracy {m['test_accuracy']:.4f}, macro-F1 "
        f"{m['test_macro_f1']:.4f} on {m['test_images']} test images "
        f"(validation accuracy in the search {m['trial_val_accuracy']:.4f}); "
        f"{result.seconds:.0f}s"
    )
    if "tta" in m:
        console.print(
            f"with flip averaging (--tta): test accuracy {m['tta']['test_accuracy']:.4f}, "
            f"macro-F1 {m['tta']['test_macro_f1']:.4f}"
        )
    if mirror:
        from hpo.study import load_study

        with mirror:
            run_id, model_uri = mirror.log_export(load_study(storage, study), result, register)
        console.print(f"MLflow: run {run_id}, model {model_uri}")
    print(result.bundle)  # stdout: the one thing a script needs


def _mirror(
    uri: str | None, experiment: str | None, register: str | None, reporter: Reporter
) -> MlflowMirror | None:
    """The MLflow mirror asked for, checked before the slow retraining starts."""
    from hpo.errors import HpoError
    from hpo.mlflow_mirror import mirror_from_options

    if register and not uri:
        raise HpoError("--register needs --mlflow URI (or HPO_MLFLOW_URI)")
    return mirror_from_options(uri, experiment, reporter=reporter)


def register(app: typer.Typer) -> None:
    app.command("export-best", help=HELP)(export_best_command)
