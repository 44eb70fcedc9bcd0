"""optuna-dashboard on hpo's storage and artifact store, for ``hpo dashboard``.

The dashboard shows every study, each trial's parameters, its per-epoch validation
accuracy (the intermediate values the pruner reads) and the trial's artifacts, among them
the learning-curve PNG that :mod:`hpo.artifacts` uploads. It binds 127.0.0.1 unless
told otherwise, because it can delete studies and has no login.
"""

from __future__ import annotations

from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import HpoError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """A page load fires many API and image requests at once; one thread each keeps a slow
    query (a large study on PostgreSQL) from stalling the rest."""

    daemon_threads = True
    request_queue_size = 64  # wsgiref's 5 drops connections when a page loads


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: the dashboard polls its API every few seconds, which
    would bury real errors (those are still printed)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def make_dashboard(
    storage: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    artifacts: str | Path | None = None,
) -> WSGIServer:
    """A bound, not yet serving, dashboard server; call ``serve_forever()`` on it.

    ``port=0`` takes a free port (``server.server_port`` says which).
    """
    from optuna.storages._cached_storage import _CachedStorage
    from optuna_dashboard import wsgi

    from hpo.artifacts import artifact_store  # Optuna only now: `hpo --help` stays fast
    from hpo.storage import open_storage

    # optuna-dashboard uses the storage it is given as it is. A bare RDBStorage makes it read
    # every trial of a study from the database again every 10 s while a page is open, and
    # twice more per parameter-importance request: 4-5 s each at 10,000 trials here. Optuna's
    # own cache (what `optuna.load_study` wraps an RDBStorage in) reads a finished trial once,
    # which is safe because the database refuses changes to a finished trial; running ones
    # are read again every time (bench/bench_storage_scale.py --parts dashboard,browser).
    app = wsgi(_CachedStorage(open_storage(storage)), artifact_store=artifact_store(artifacts))
    try:
        return make_server(
            host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise HpoError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (use --port for another port)"
        ) from None


def dashboard_url(host: str, port: int) -> str:
    """The address to open in a browser; a wildcard bind is reached through localhost."""
    shown = "localhost" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}/dashboard/"
