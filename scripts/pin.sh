#!/usr/bin/env bash
# Regenerates constraints.txt: the exact versions that `make install` (so the README's
# commands and CI) and the Docker image install. Run it after changing a dependency in
# pyproject.toml and commit the result with that change (`make pins` does the same).
#
# It resolves hpo with every extra in a throwaway venv, on the Python it is run with
# (PYTHON, default python3; the reference is 3.11 on linux x86_64), and freezes that.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
"$tmp/venv/bin/pip" install -q ".[test,mlflow,lint,docs]"
{
    echo "# Exact versions of hpo's dependencies, test and lint tools (pip constraints: pins only,"
    echo "# never adds a package). Used by \`make install\` (so \`make demo\`, \`make test\` and CI),"
    echo "# the Docker image and scripts/gpu-wheelhouse.sh, so all of them run what CI tested."
    echo "# Resolved on $("$tmp/venv/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.system().lower(), platform.machine())')."
    echo "# Regenerate with \`make pins\` (scripts/pin.sh) after changing pyproject.toml."
    "$tmp/venv/bin/pip" freeze --all --exclude-editable | grep -viE '^(hpo|pip|setuptools|wheel)( @|==)'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
