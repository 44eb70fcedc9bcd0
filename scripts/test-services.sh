#!/usr/bin/env bash
# Installs and starts what the test suite talks to for real (Debian/Ubuntu, as root):
# PostgreSQL 15 (a local superuser role for the current OS user, reached over the Unix
# socket with peer authentication: no password anywhere), Chromium for the dashboard
# browser test, and docker-compose to validate the compose file.
set -euo pipefail

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi

version=$(ls /etc/postgresql | sort -n | tail -1)
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
for _ in $(seq 30); do pg_isready -q && break; sleep 1; done
pg_isready

me=$(id -un)
su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='$me'\"" | grep -q 1 \
    || su postgres -c "createuser --superuser $me"
# The tests create (and drop) a fresh database per test through this admin URL.
echo "PostgreSQL $version ready: postgresql+psycopg:///postgres?host=/var/run/postgresql"
