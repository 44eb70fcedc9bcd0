"""``hpo run`` and ``hpo worker``: one function, two meanings of ``--trials``.

``run`` adds N trials to the study (re-running resumes it); ``worker`` joins a shared study
and works until the study as a whole has N finished trials, so N workers with
``--trials 200`` finish 200 trials, not 200 each.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from hpo.cli.options import (
    DEFAULT_STORAGE,
    Artifacts,
    DataDir,
    MlflowExperiment,
    MlflowUri,
    Storage,
)
from hpo.device import MEMORY_FRACTION_ENV, limit_gpu_memory
from hpo.storage import GRACE_FACTOR, HEARTBEAT_SECONDS

DEFAULT_TRIALS = 10
RUN_HELP = "Tune a CNN on DATASET (animals10, catsdogs, demo, folder); re-running resumes."
# A child per 10 trials: its start (fork + importing the backend, about 9 CPU-seconds with
# TensorFlow) costs under a second per trial, and the ~12 MiB that TensorFlow keeps per trial
# (hpo.study.isolate) never adds up to more than ~120 MiB (bench/bench_soak.py).
TRIALS_PER_PROCESS = 10
WORKER_HELP = (
    "Join the shared study for DATASET and work until it has --trials finished "
    "trials in total (use with PostgreSQL; start one per GPU)."
)


def study_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="animals10, catsdogs, demo or folder.")],
    trials: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Trials to add (run) or the study's total (worker); default 10, or no "
            "limit with --budget-epochs.",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Start no new trial after this many seconds.")
    ] = None,
    storage: Storage = DEFAULT_STORAGE,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the dataset name).")
    ] = None,
    data_dir: DataDir = None,
    space: Annotated[
        Path | None,
        typer.Option(help="Search-space TOML (default: search_spaces/DATASET.toml)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epoch budget per trial (overrides the space).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Image side in pixels (overrides the space).")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            help="Search seed: the sampler or KerasTuner oracle, and each trial's initialization."
        ),
    ] = 0,
    split_seed: Annotated[
        int | None,
        typer.Option(
            min=0, help="Seed of the train/val/test split (default: the study's, else 0)."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Search engine: optuna or keras-tuner (default: the study's, else optuna)."
        ),
    ] = None,
    tuner: Annotated[
        str | None,
        typer.Option(
            help="KerasTuner tuner for --engine keras-tuner: hyperband, bayesian or random (default: the study's, else hyperband)."
        ),
    ] = None,
    artifacts: Artifacts = None,
    heartbeat: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="HPO_HEARTBEAT",
            help=f"Seconds between a running trial's heartbeats; after {GRACE_FACTOR} missed ones "
            "another worker fails it and retries its parameters. Env: HPO_HEARTBEAT.",
        ),
    ] = HEARTBEAT_SECONDS,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="Sampler + pruner by name, e.g. random, tpe-median (an unknown name lists them all; "
            "default: the study's recorded one, else hpo's default)."
        ),
    ] = None,
    budget_epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Start no new trial once the study has trained this many epochs in total "
            "(all runs and workers); a running trial finishes.",
        ),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="Inference budget: reject, before training, configurations whose forward pass "
            "at batch 1 on this CPU takes longer (ONNX Runtime with the onnx extra; recorded "
            "on the study).",
        ),
    ] = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            help="Budget: reject, before training, configurations with more parameters "
            "(recorded on the study).",
        ),
    ] = None,
    objectives: Annotated[
        str | None,
        typer.Option(
            help="accuracy (default), or accuracy,latency / accuracy,params: a two-objective "
            "study whose result is a Pareto front (trials are not pruned).",
        ),
    ] = None,
    mlflow: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
    gpu_memory_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=1.0,
            envvar=MEMORY_FRACTION_ENV,
            help="Share of the GPU's memory this process may use, so 2-4 workers can share one GPU "
            "(JAX and PyTorch; set before the backend loads). Env: HPO_GPU_MEMORY_FRACTION.",
        ),
    ] = None,
    trials_per_process: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="HPO_TRIALS_PER_PROCESS",
            help="Train this many trials in a child process, then start a fresh one, so memory "
            "the backend never frees goes back to the system; 0 trains in this process. "
            "Env: HPO_TRIALS_PER_PROCESS.",
        ),
    ] = TRIALS_PER_PROCESS,
) -> None:
    if gpu_memory_fraction is not None:
        limit_gpu_memory(gpu_memory_fraction)  # before anything imports the backend

    from hpo.cost import Budget
    from hpo.mlflow_mirror import mirror_from_options
    from hpo.progress import RichReporter, terminal_console
    from hpo.study import run_study

    budget = Budget(max_latency_ms, max_params)  # refuses a bad one before anything starts
    as_worker = ctx.info_name == "worker"
    worker = f"{socket.gethostname()}:{os.getpid()}" if as_worker else ""
    reporter = RichReporter(terminal_console(stderr=True))
    if trials is None and budget_epochs is None:
        trials = DEFAULT_TRIALS
    mirror = mirror_from_options(mlflow, mlflow_experiment, reporter=reporter, artifacts=artifacts)
    try:
        run_study(
            dataset,
            n_trials=trials,
            timeout=timeout,
            storage=storage,
            study_name=study,
            data_dir=data_dir,
            space=space,
            epochs=epochs,
            image_size=image_size,
            seed=seed,
            split_seed=split_seed,
            engine=engine,
            tuner=tuner,
            total=as_worker,
            worker=worker,
            reporter=reporter,
            artifacts=artifacts,
            heartbeat_seconds=heartbeat,
            budget_epochs=budget_epochs,
            strategy=strategy,
            observers=[mirror] if mirror else [],
            trials_per_process=trials_per_process,
            budget=budget,
            objectives=objectives,
        )
    finally:
        if mirror:
            mirror.close()


def register(app: typer.Typer) -> None:
    app.command("run", help=RUN_HELP)(study_command)
    app.command("worker", help=WORKER_HELP)(study_command)
