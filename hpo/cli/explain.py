"""``hpo explain BUNDLE IMAGE``: feature maps of each conv block and the first layer's filters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = (
    "Draw what an exported model sees in IMAGE: a row of channel maps per conv block, "
    "and the first conv layer's filters."
)


def explain_command(
    bundle: Annotated[Path, typer.Argument(help="Export bundle folder (holds model.keras).")],
    image: Annotated[Path, typer.Argument(help="Any image file Pillow reads.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNGs.")] = Path("explain"),
    channels: Annotated[int, typer.Option(min=1, max=64, help="Channel maps per conv block.")] = 8,
) -> None:
    from hpo.explain import explain_bundle

    result = explain_bundle(bundle, image, out, channels=channels)
    if result.note:
        print(result.note)
    print(f"prediction: {result.prediction}")
    for panel in result.panels:
        print(f"  {panel}")
    print(f"wrote {result.feature_maps} and {result.filters}")


def register(app: typer.Typer) -> None:
    app.command("explain", help=HELP)(explain_command)
