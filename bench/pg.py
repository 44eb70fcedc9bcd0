"""A throw-away PostgreSQL database, for the tests' `postgres_url` fixture and the benchmarks.

No pytest import here, so bench/ scripts can use it from a checkout.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

POSTGRES_ADMIN = os.environ.get(
    "HPO_TEST_POSTGRES", "postgresql+psycopg:///postgres?host=/var/run/postgresql"
)


@contextmanager
def temporary_database(admin_url: str = POSTGRES_ADMIN, prefix: str = "hpo_t") -> Iterator[str]:
    """Create a fresh database next to ``admin_url``'s, yield its URL, drop it afterwards
    (``WITH (FORCE)``: a killed worker may still hold a connection)."""
    import sqlalchemy

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield admin_url.replace("/postgres?", f"/{name}?")
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
