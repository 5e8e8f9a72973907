#!/usr/bin/env bash
# Creates (or reuses) a Python virtualenv and installs pinned packages from PyPI into
# it. Prints the venv's python path.
#   usage: scripts/python-env.sh [REQUIREMENTS [VENV_DIR]]
#   default: scripts/requirements-models.txt into target/py-models
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requirements=${1:-$root/scripts/requirements-models.txt}
venv=${2:-$root/target/py-$(basename "$requirements" .txt | sed 's/^requirements-//')}
stamp="$venv/.installed-$(sha256sum "$requirements" | cut -c1-16)"
# Tests running at once may ask for the same venv: one creates it, the others wait.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
# Reinstall only when the requirements changed: a test run stays offline once set up.
if [ ! -e "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
