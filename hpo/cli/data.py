"""``hpo data inspect``: see what hpo will train on (and what it skips) before any GPU time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from hpo.data import Dataset

# Longer lists are cut in the terminal; the report file and the cache index hold all of them.
SHOW_AT_MOST = 20


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``hpo`` app."""
    data_app = typer.Typer(
        help="Inspect image datasets: layout, classes, splits, bad files.", no_args_is_help=True
    )
    data_app.command("inspect")(inspect)
    app.add_typer(data_app, name="data")


def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder (or 'demo' for the generated set).")],
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help="animals10, catsdogs, demo or folder; detected when omitted."
        ),
    ] = None,
    image_size: Annotated[
        int, typer.Option("--image-size", help="Decode size in pixels (the cache is per size).")
    ] = 64,
) -> None:
    """Detect the layout, decode into the cache, and show classes, splits and problem files."""
    from hpo.data import inspect_dataset
    from hpo.progress import terminal_console

    ds = inspect_dataset(path, dataset, image_size, progress=True)
    render(ds, terminal_console(soft_wrap=True))  # paths stay whole, for copy and paste


def _listing(console: Console, title: str, lines: list[str], style: str) -> None:
    from rich.markup import escape

    console.print(f"[{style}]{title}: {len(lines)}[/]")
    for line in lines[:SHOW_AT_MOST]:
        console.print(f"  {escape(line)}", highlight=False)
    if len(lines) > SHOW_AT_MOST:
        console.print(f"  ... and {len(lines) - SHOW_AT_MOST} more")


def render(ds: Dataset, console: Console) -> None:
    """Print an inspected dataset: layout, per-split class counts, and every kind of problem."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{ds.name}[/]: {escape(ds.layout)}")
    console.print(f"root: {escape(str(ds.root))}", highlight=False)
    cache = "cache hit, nothing decoded" if ds.cache_hit else "cache built"
    console.print(
        f"{len(ds.images)} images at {ds.image_size} px, {len(ds.classes)} classes "
        f"({cache}: {escape(str(ds.cache_path))})",
        highlight=False,
    )

    counts = ds.counts()
    splits = list(counts)
    table = Table(title=f"images per split (seed {ds.seed})")
    table.add_column("class")
    for split in [*splits, "total"]:
        table.add_column(split, justify="right")
    for cls in ds.classes:
        row = [counts[s][cls] for s in splits]
        table.add_row(escape(cls), *map(str, row), str(sum(row)))
    totals = [sum(counts[s].values()) for s in splits]
    table.add_row("[bold]total[/]", *map(str, totals), str(sum(totals)))
    console.print(table)

    for warning in ds.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    _listing(
        console,
        "unreadable files (skipped)",
        [f"{b.path}: {b.reason}" for b in ds.bad_files],
        "red" if ds.bad_files else "green",
    )
    _listing(console, "ignored OS files", ds.ignored_files, "dim")
    _listing(
        console,
        "groups of byte-identical files",
        [" = ".join(g) for g in ds.duplicates],
        "yellow" if ds.duplicates else "green",
    )
    if ds.excluded_files:
        _listing(
            console,
            "left out of val/test (copies of earlier-split images)",
            ds.excluded_files,
            "yellow",
        )
    console.print(f"report: {escape(str(ds.report_path))}", highlight=False)
