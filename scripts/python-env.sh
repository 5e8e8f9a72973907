#!/usr/bin/env bash
# Creates (or reuses) the Python virtualenv that the model scripts use and installs
# the pinned packages from PyPI. Prints the venv's python path.
#   usage: scripts/python-env.sh [VENV_DIR]   (default: target/py-models)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/target/py-models}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/scripts/requirements-models.txt" >&2
echo "$venv/bin/python"
