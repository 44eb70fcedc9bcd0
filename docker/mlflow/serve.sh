#!/bin/sh
# The compose file's `mlflow` service (profile "mlflow"): MLflow's tracking server with its
# backend store in the stack's PostgreSQL and its artifacts in /var/lib/mlflow/artifacts.
#
# MLflow gets a database of its own ($MLFLOW_DB, created here on first start) next to the
# study database: Optuna and MLflow both keep their schema version in a table named
# alembic_version, so they cannot share one database.
set -eu
: "${MLFLOW_DB:=mlflow}"
: "${MLFLOW_DB_HOST:=db}"
: "${MLFLOW_PORT:=5000}"

python - <<'PY'
import os

import psycopg
from psycopg import sql

with psycopg.connect(host=os.environ.get("MLFLOW_DB_HOST", "db"), user=os.environ["POSTGRES_USER"],
                     password=os.environ["POSTGRES_PASSWORD"], dbname=os.environ["POSTGRES_DB"],
                     autocommit=True) as conn:
    name = os.environ.get("MLFLOW_DB", "mlflow")
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"mlflow: created database {name}")
PY

# Host header check (MLflow's DNS-rebinding guard): the workers call it "mlflow", browsers
# on the host 127.0.0.1/localhost at the published port.
exec mlflow server --host 0.0.0.0 --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" \
    --backend-store-uri "postgresql+psycopg://$POSTGRES_USER:$POSTGRES_PASSWORD@$MLFLOW_DB_HOST:5432/$MLFLOW_DB" \
    --artifacts-destination "${MLFLOW_ARTIFACTS:-/var/lib/mlflow/artifacts}" \
    --allowed-hosts "mlflow:$MLFLOW_PORT,mlflow,localhost:*,127.0.0.1:*,localhost,127.0.0.1"
