"""``hpo predict BUNDLE PATH...``: classify images with an exported model, one line each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hpo.errors import HpoError


def predict_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by hpo export-best.")],
    paths: Annotated[
        list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")
    ],
    top: Annotated[int, typer.Option("--top", min=1, help="Show the K most likely classes.")] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout instead of lines.")
    ] = False,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Average each image's probabilities with its mirror image's (test-time flip averaging; twice the compute).",
        ),
    ] = False,
    runtime: Annotated[
        str,
        typer.Option(
            help="keras (model.keras) or onnx (model.onnx on ONNX Runtime; needs hpo's onnx extra).",
        ),
    ] = "keras",
) -> None:
    """Print the top classes per image; unreadable inputs get an error line and the command
    fails only when no image at all could be classified."""
    import sys

    from hpo.bundle import load_bundle
    from hpo.predict import predict_files

    results = predict_files(load_bundle(bundle, runtime), paths, top=top, tta=tta)
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    for result in results:
        if result.error is not None:
            print(f"{result.path}\terror: {result.error}", file=sys.stderr)
        elif not as_json:
            print(f"{result.path}\t" + "  ".join(f"{label} {p:.3f}" for label, p in result.top))
    if not any(r.error is None for r in results):
        raise HpoError(
            f"none of the {len(results)} inputs could be classified"
            if results
            else "no image files found in the given folders"
        )


def register(app: typer.Typer) -> None:
    app.command("predict", help="Classify image files and folders with an exported bundle.")(
        predict_command
    )
