#!/usr/bin/env bash
# Builds iris-js.wasm with componentize-js (from npm, pinned in package.json and
# package-lock.json; preview2-shim is listed because componentize-js imports it
# without declaring it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ] || [ package.json -nt node_modules ]; then
  npm install --no-audit --no-fund --loglevel=error >&2
  touch node_modules
fi
mkdir -p models
cp "$root/plugins/iris/models/iris.onnx" models/iris.onnx
# No wasi:http: the host links only what the handler world and WASI CLI need.
# (`jco componentize` does the same, but jco 1.35's WIT reader sees no files on
# Node 20, so the componentize-js CLI is called directly.)
cd "$root"
plugins/iris-js/node_modules/.bin/componentize-js plugins/iris-js/app.js \
  --wit wit --world-name handler --disable http fetch-event \
  -o plugins/iris-js/iris-js.wasm >&2
