#!/usr/bin/env bash
# Installs the onnxruntime shared library that the onnxruntime PyPI wheel ships into
# target/onnxruntime/ (where runinfer looks for it), for models with
# backend = "onnxruntime". Only pip is needed: the wheel is downloaded, not installed.
# Prints the library's path.
#   usage: scripts/install-onnxruntime.sh [DEST_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=1.32.0
dest=${1:-$root/target/onnxruntime}
lib="$dest/libonnxruntime.so"
mkdir -p "$dest"
# One install at a time (tests run in parallel); files are replaced by rename, never
# rewritten in place, since a running process may have the library mapped.
exec 9>"$dest/.lock"
flock 9
if [ -e "$dest/.installed-$version" ] && [ -e "$lib" ]; then
  echo "$lib"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest "$work" "onnxruntime==$version" >&2
wheel=$(ls "$work"/onnxruntime-"$version"-*.whl)
python3 - "$wheel" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit(f"{wheel} holds no onnxruntime/capi/libonnxruntime.so*")
    for name in names:
        target = f"{dest}/{name.rsplit('/', 1)[1]}"
        with z.open(name) as src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(target + ".part", target)
PY
real=$(cd "$dest" && ls libonnxruntime.so.* | grep -v '\.part$' | head -1)
ln -sfn "$real" "$lib.link" && mv -T "$lib.link" "$lib"
touch "$dest/.installed-$version"
echo "$lib"
