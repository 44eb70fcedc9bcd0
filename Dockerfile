# hpo worker / dashboard image: Python 3.11 + `pip install -e .` of this repo.
#
# Base: Debian bookworm-slim, whose python3 is 3.11. With a real Docker engine the
# base is pulled as usual; for local podman without registry access
# scripts/compose_up_podman.sh builds a debootstrap'd bookworm minbase rootfs and
# tags it docker.io/library/debian:bookworm-slim (the official image is made the
# same way), so this file is the same for both.
#
# Build args:
#   TF_PACKAGE        "tensorflow" (CPU, default) or "tensorflow[and-cuda]" for the
#                     GPU image (pulls CUDA/cuDNN wheels; see docker-compose.gpu.yml).
#   PIP_INSTALL_OPTS  extra pip options for every install below; empty by default.
#                     The podman script sets "--no-index --find-links /wheels" and
#                     mounts a wheelhouse downloaded on the host at /wheels, because
#                     the sandbox it was written in intercepts HTTPS with a CA that
#                     containers don't trust (plain-HTTP apt works).
FROM debian:bookworm-slim
ARG PIP_INSTALL_OPTS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && pip install $PIP_INSTALL_OPTS --upgrade pip setuptools wheel

WORKDIR /app

# Dependencies first, in their own layer: install the project against a stub
# package so that editing hpo/ does not re-download tensorflow.
ARG TF_PACKAGE=tensorflow
COPY pyproject.toml ./
COPY constraints.txt /tmp/constraints.txt
RUN mkdir hpo && touch hpo/__init__.py \
 && pip install $PIP_INSTALL_OPTS -c /tmp/constraints.txt "$TF_PACKAGE" -e ".[mlflow]" \
 && rm -rf hpo

# The project itself (editable, so /app/hpo is the code that runs).
COPY hpo/ hpo/
COPY search_spaces/ search_spaces/
COPY docker/mlflow/serve.sh docker/mlflow/serve.sh
RUN pip install $PIP_INSTALL_OPTS --no-deps -e . && hpo --help > /dev/null

# Unprivileged user; the folders below are the mount points of the compose
# file's named volumes (a new named volume takes over their owner).
RUN useradd --create-home --uid 10001 hpo \
 && mkdir -p /data /var/lib/hpo/cache /var/lib/hpo/artifacts /var/lib/hpo/exports \
    /var/lib/mlflow/artifacts \
 && chown -R hpo:hpo /var/lib/hpo /var/lib/mlflow
ENV HPO_CACHE_DIR=/var/lib/hpo/cache \
    HPO_ARTIFACTS=/var/lib/hpo/artifacts \
    HPO_EXPORTS=/var/lib/hpo/exports \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg
USER hpo

# tini as PID 1: forwards SIGTERM from `compose stop/down` to hpo (a Python PID 1
# would ignore it and be killed only after the grace period) and reaps children.
ENTRYPOINT ["tini", "--"]
CMD ["hpo", "--help"]
