#!/usr/bin/env bash
# Puts what plugins/ocr needs beside it (not committed): PP-OCR's detector, direction
# classifier and recogniser from the rapidocr-onnxruntime 1.4.4 wheel on PyPI
# (scripts/fetch-models.sh ppocr) in models/, the recogniser's character list (it
# ships inside the model) in dict/, and onnxruntime's library
# (scripts/install-onnxruntime.sh). The component itself is built by `cargo build`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
models=$("$root/scripts/fetch-models.sh" ppocr)
"$root/scripts/install-onnxruntime.sh" >/dev/null
mkdir -p "$here/models" "$here/dict"
for model in det cls rec; do
  cp "$models/ppocr_$model.onnx" "$here/models/ppocr_$model.onnx"
done
cp "$models/ppocr_keys.txt" "$here/dict/ppocr_keys.txt"
echo "$here"
