#!/usr/bin/env bash
# Creates (or reuses) a Python virtualenv and installs pinned packages from PyPI into
# it. Prints the venv's python path.
#   usage: scripts/python-env.sh [REQUIREMENTS [VENV_DIR]]
#   default: scripts/requirements-models.txt into target/py-models
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requirements=${1:-$root/scripts/requirements-models.txt}
venv=${2:-$root/target/py-$(basename "$requirements" .txt | sed 's/^requirements-//')}
# Packages installed without their declared dependencies (REQUIREMENTS with
# `.no-deps.txt` for `.txt`): for one that names a dependency we replace, as
# rapidocr-onnxruntime names OpenCV's GUI build where its headless build does.
no_deps=${requirements%.txt}.no-deps.txt
[ -e "$no_deps" ] || no_deps=
stamp="$venv/.installed-$(cat "$requirements" $no_deps | sha256sum | cut -c1-16)"
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
  if [ -n "$no_deps" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$no_deps" >&2
  fi
  touch "$stamp"
fi
echo "$venv/bin/python"
