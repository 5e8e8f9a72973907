#!/usr/bin/env bash
# Creates (or reuses) a Python virtualenv and installs pinned packages from PyPI into
# it. Prints the venv's python path.
#   usage: scripts/python-env.sh [REQUIREMENTS [VENV_DIR]]
#   default: scripts/requirements-models.txt into target/py-models
#
# The packages go in with uv (itself pip-installed, pinned, into target/py-uv): the
# tests' eight venvs hold 3.4 GB, much of it the same wheels (numpy, onnxruntime…),
# which uv downloads in parallel, unpacks once into its cache and links into each
# venv, without compiling every module to bytecode up front (Python does that for
# the modules a test imports). From empty caches, 2 cores: 58 s against pip's 280 s
# (bench/RESULTS.md, "Fresh clone"). A requirements file with the line
# `# python-env: compile-bytecode` is compiled at install (in parallel): Ray's many
# worker processes would each compile the same modules at once.
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

# One venv holds uv; tests starting at once wait for the first to make it.
uv_requirements=$root/scripts/requirements-uv.txt
uv_venv=$root/target/py-uv
uv_stamp="$uv_venv/.installed-$(sha256sum < "$uv_requirements" | cut -c1-16)"
mkdir -p "$root/target"
exec 8>"$uv_venv.lock"
flock 8
if [ ! -e "$uv_stamp" ]; then
  rm -rf "$uv_venv"
  python3 -m venv "$uv_venv" >&2
  "$uv_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$uv_requirements" >&2
  touch "$uv_stamp"
fi
exec 8>&-
uv=$uv_venv/bin/uv
# The system's python3, never one uv would download.
export UV_PYTHON_DOWNLOADS=never

# Tests running at once may ask for the same venv: one creates it, the others wait.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ]; then
  "$uv" venv --quiet --python python3 "$venv" >&2
fi
# Reinstall only when the requirements changed: a test run stays offline once set up.
if [ ! -e "$stamp" ]; then
  compile=()
  if grep -qx '# python-env: compile-bytecode' "$requirements"; then
    compile=(--compile-bytecode)
  fi
  "$uv" pip install --quiet --python "$venv/bin/python" "${compile[@]}" -r "$requirements" >&2
  if [ -n "$no_deps" ]; then
    "$uv" pip install --quiet --python "$venv/bin/python" --no-deps -r "$no_deps" >&2
  fi
  touch "$stamp"
fi
echo "$venv/bin/python"
