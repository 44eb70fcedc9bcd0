"""``hpo dashboard``: optuna-dashboard on the same storage and artifact store as the workers."""

from __future__ import annotations

from typing import Annotated

import typer

from hpo.cli.options import DEFAULT_STORAGE, Artifacts, Storage
from hpo.dashboard import DEFAULT_HOST, DEFAULT_PORT

HELP = (
    "Serve optuna-dashboard for --storage: studies, trials, per-epoch curves and each "
    "trial's learning-curve image."
)


def dashboard_command(
    storage: Storage = DEFAULT_STORAGE,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")
    ] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network (no login!).")
    ] = DEFAULT_HOST,
    artifacts: Artifacts = None,
) -> None:
    from hpo.artifacts import artifact_dir
    from hpo.dashboard import dashboard_url, make_dashboard
    from hpo.storage import redact

    server = make_dashboard(storage, host, port, artifacts)
    print(
        f"optuna-dashboard for {redact(storage)} (artifacts in {artifact_dir(artifacts)}) "
        f"listening on {host}:{server.server_port}",
        flush=True,
    )
    print(f"open {dashboard_url(host, server.server_port)}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.command("dashboard", help=HELP)(dashboard_command)
