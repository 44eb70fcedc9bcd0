"""``hpo bench DATASET``: strategies against each other at one epoch budget, over search
seeds (``hpo/bench.py`` does the work; this module is options and screen output)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpo.cli.options import DataDir
from hpo.errors import HpoError

HELP = (
    "Run every --strategies strategy once per search seed at the same epoch budget on the "
    "same data and split; print a table, write bench.json, bench.txt and bench.png. "
    "Re-running the same command resumes."
)


def bench_command(
    dataset: Annotated[str, typer.Argument(help="animals10, catsdogs, demo or folder.")],
    budget_epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Epochs each study may train in total (required, except with --overhead-only).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Search seeds per strategy (0..N-1).")] = 5,
    image_size: Annotated[
        int | None, typer.Option(min=16, help="Image side in pixels (overrides the space).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epoch budget per trial (overrides the space).")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategies: Optuna's by name and KerasTuner's as kt-hyperband, "
            "kt-bayesian, kt-random (default: hpo, random, tpe-median, tpe-hyperband, kt-hyperband)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default bench/results/bench-DATASET).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Storage of the bench studies (default sqlite:///OUT/bench.db)."),
    ] = None,
    data_dir: DataDir = None,
    space: Annotated[
        Path | None,
        typer.Option(help="Search-space TOML (default: search_spaces/DATASET.toml)."),
    ] = None,
    split_seed: Annotated[
        int, typer.Option(min=0, help="Seed of the one split every study shares.")
    ] = 0,
    overhead: Annotated[
        bool, typer.Option(help="Also time hpo's trial against a bare model.fit.")
    ] = True,
    ensemble: Annotated[
        str | None,
        typer.Option(
            metavar="K|auto",
            help="Also export each study as an ensemble (hpo export-best --ensemble), searching "
            "a shorter prefix of the study so that search plus retraining epochs equal the "
            "single winner's; adds its test accuracy as a column.",
        ),
    ] = None,
    overhead_only: Annotated[
        bool,
        typer.Option(
            "--overhead-only",
            help="Only time hpo's trial against a bare model.fit (no studies; "
            "writes overhead.json).",
        ),
    ] = False,
) -> None:
    from rich.console import Console

    from hpo.bench import (
        DEFAULT_BENCH_STRATEGIES,
        BenchReporter,
        BenchSpec,
        check_strategies,
        overhead_line,
        report,
        run_bench,
        run_overhead,
    )
    from hpo.ensemble import EnsembleRequest
    from hpo.progress import terminal_console
    from hpo.space import load_space

    request = None if ensemble is None else EnsembleRequest.parse(ensemble)
    if budget_epochs is None and not overhead_only:
        raise HpoError("--budget-epochs is required (except with --overhead-only)")
    names = check_strategies(
        [s.strip() for s in strategies.split(",")] if strategies else DEFAULT_BENCH_STRATEGIES
    )
    loaded = load_space(dataset, space).with_overrides(epochs=epochs, image_size=image_size)
    folder = (out or Path("bench/results") / f"bench-{dataset}").absolute()
    folder.mkdir(parents=True, exist_ok=True)
    spec = BenchSpec(
        dataset=dataset,
        budget_epochs=budget_epochs or 0,
        seeds=seeds,
        image_size=loaded.image_size,
        epochs=loaded.epochs,
        strategies=names,
        storage=storage or f"sqlite:///{folder / 'bench.db'}",
        data_dir=None if data_dir is None else str(data_dir),
        space=None if space is None else str(space),
        split_seed=split_seed,
        overhead=overhead,
        ensemble=None if request is None else request.describe(),
    )
    console = terminal_console(stderr=True)
    if overhead_only:
        measured = run_overhead(spec, folder, BenchReporter(console))
        Console(highlight=False, width=160).print(overhead_line(measured["overhead"]))
        print(f"wrote {folder / 'overhead.json'}")
        return
    result = run_bench(spec, folder, BenchReporter(console))
    out_console = Console(highlight=False, width=160)
    for renderable in report(result):
        out_console.print(renderable)
    out_console.print(
        f"wrote {folder / 'bench.json'}, {folder / 'bench.txt'}, {folder / 'bench.png'}"
    )


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench_command)
