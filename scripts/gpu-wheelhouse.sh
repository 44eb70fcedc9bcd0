#!/usr/bin/env bash
# A wheelhouse of everything hpo needs on a GPU machine that has JAX and/or PyTorch (and so
# NumPy) but no TensorFlow and no package registry: CPython 3.12, manylinux x86_64 by default.
# Run it where a registry is reachable, carry the folder (at most 64 MiB) to the GPU machine,
# then run scripts/gpu-check.sh there.
#
#   scripts/gpu-wheelhouse.sh [--dry-run] [--with-numpy] [OUT]     # OUT default: wheelhouse-gpu/
#   PYTHON_VERSION=3.11 scripts/gpu-wheelhouse.sh                    # another target Python
#
# Versions come from constraints.txt (the reference environment), so the GPU machine
# runs what CI tested. Not included: tensorflow, jax, torch (the machine brings its own),
# NumPy (every JAX or PyTorch install has it; --with-numpy adds it) and optuna-dashboard
# (the dashboard runs elsewhere). --dry-run prints the requirements and the pip command only.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
ABI="cp${PYTHON_VERSION/./}"
LIMIT_MIB=64
DRY=0 NUMPY=0 OUT="$REPO/wheelhouse-gpu"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --with-numpy) NUMPY=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done

# What hpo imports (pyproject.toml's dependencies less the backends, the dashboard and
# keras-tuner, which hpo does not import); pip adds their own dependencies.
REQUIREMENTS=(keras optuna optuna-integration sqlalchemy alembic colorlog tqdm rich typer
              filelock pillow matplotlib "psycopg[binary]")
[ "$NUMPY" = 1 ] && REQUIREMENTS+=(numpy)

PIP=("$PYTHON" -m pip download --only-binary=:all: --python-version "$PYTHON_VERSION"
     --implementation cp --abi "$ABI" --abi abi3 --abi none
     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
     --platform manylinux_2_28_x86_64 --platform any
     -c "$REPO/constraints.txt" -d "$OUT")

if [ "$DRY" = 1 ]; then
  printf '%s\n' "${REQUIREMENTS[@]}"
  echo "# ${PIP[*]} ${REQUIREMENTS[*]}" >&2
  exit 0
fi

mkdir -p "$OUT"
echo "downloading wheels for CPython $PYTHON_VERSION into $OUT" >&2
"${PIP[@]}" "${REQUIREMENTS[@]}" >&2
if [ "$NUMPY" = 0 ]; then  # pulled in as a dependency; the GPU machine has its own
  rm -f "$OUT"/numpy-*.whl
fi
echo "building the hpo wheel" >&2
"$PYTHON" -m pip wheel --no-deps -q -w "$OUT" "$REPO" >&2
printf '%s\n' hpo "${REQUIREMENTS[@]}" > "$OUT/requirements.txt"

bytes=$(du -cb "$OUT"/* | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "wheelhouse: $OUT, $(ls "$OUT"/*.whl | wc -l) wheels, ${mib} MiB (limit ${LIMIT_MIB} MiB)"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
  echo "error: the wheelhouse is over ${LIMIT_MIB} MiB; the largest wheels:" >&2
  ls -S "$OUT"/*.whl | head -5 >&2
  exit 1
fi
