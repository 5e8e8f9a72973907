#!/usr/bin/env bash
# Builds iris-py.wasm with componentize-py (from PyPI, into target/py-componentize).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=$("$root/scripts/python-env.sh" "$root/plugins/requirements-py.txt" "$root/target/py-componentize")
mkdir -p "$here/models"
cp "$root/plugins/iris/models/iris.onnx" "$here/models/iris.onnx"
cd "$here"
"$(dirname "$python")/componentize-py" -d "$root/wit" -w handler componentize app -o iris-py.wasm >&2
