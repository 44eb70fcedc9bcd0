"""The ``hpo`` command: one module per command under ``hpo/cli/``, each with ``register(app)``.

Commands import the heavy libraries inside their function bodies, so ``hpo --help`` and
``hpo status`` start in a fraction of a second.
"""

from __future__ import annotations

import importlib
import sys

import typer

from hpo.errors import HpoError

# Registry of command modules (like optuna's cli command table); order = order in --help.
COMMANDS = (
    "run",
    "status",
    "dashboard",
    "data",
    "export",
    "predict",
    "explain",
    "bench",
    "mlflow_sync",
)

app = typer.Typer(
    name="hpo",
    help="Tune Keras CNNs on image folders with Optuna studies that survive crashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMANDS:
    importlib.import_module(f"hpo.cli.{_name}").register(app)


def main() -> None:
    """Entry point: bad input becomes one ``error:`` line and exit code 2, never a traceback.

    Typer's standalone mode handles usage errors, ``--help`` and Ctrl-C (exit 130).
    """
    try:
        app()
    except HpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
