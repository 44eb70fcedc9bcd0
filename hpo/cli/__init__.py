"""The ``hpo`` command: one module per command under ``hpo/cli/``, each with ``register(app)``.

Commands import the heavy libraries inside their function bodies, so ``hpo --help`` and
``hpo status`` start in a fraction of a second. The settings a terminal run wants (GPU
memory growth, quiet backends and Optuna) are made here, in :func:`main`, never when the
library is imported: a notebook that imports hpo keeps its own.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from hpo.errors import HpoError, TrialFailed

# Set before any backend is imported (environment variables the caller set win): TensorFlow
# grows GPU memory on demand, JAX does not grab 75% of it up front, and TensorFlow's C++
# start-up chatter stays off the terminal.
BACKEND_ENVIRONMENT = {
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}

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

# Whether --debug was given: errors then show their traceback instead of one line.
debugging = False


@app.callback()
def options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of one line."
    ),
) -> None:
    """Runs before every command (not for ``hpo --help``, which stays instant)."""
    global debugging
    debugging = debug
    configure_process()


for _name in COMMANDS:
    importlib.import_module(f"hpo.cli.{_name}").register(app)


def configure_process() -> None:
    """What a terminal run of hpo wants of its process, made before a command runs."""
    from hpo.compile_cache import enable_compilation_cache  # imports hpo.data: not for --help

    for key, value in BACKEND_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # JAX's compiled steps on disk beside the decode cache, for this process and the trial
    # processes it forks (HPO_COMPILATION_CACHE=off turns it off).
    enable_compilation_cache()
    import optuna

    # hpo's reporter prints each trial; Optuna's INFO line per trial would say it twice.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every trial builds a new model, hence new compiled step functions; TensorFlow's logger
    # then warns about "retracing" each time, which is expected here and only noise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main() -> None:
    """Entry point: bad input becomes one ``error:`` line and exit code 2, a failed
    training (out of memory) one line and exit code 1; ``--debug`` shows the traceback.

    Typer's standalone mode handles usage errors, ``--help`` and Ctrl-C (exit 130).
    """
    try:
        app()
    except (HpoError, TrialFailed) as exc:
        if debugging:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, HpoError) else 1)
