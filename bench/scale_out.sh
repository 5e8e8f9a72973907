#!/usr/bin/env bash
# Spark and Ray, the usual way (onnxruntime in each Python worker) against runinfer
# (one shared server per machine), side by side in one run, on iris and PP-OCR's
# direction classifier (bench/scale_out.py). Installs what it needs: pyspark, ray and
# onnxruntime from PyPI (target/py-scale), Java 17 (scripts/java.sh), the PP-OCR
# model (scripts/fetch-models.sh), the onnxruntime library. Writes
# target/bench/scale_out.md.
#   usage: bench/scale_out.sh [--reps N] [--iris-rows N] [--ocr-rows N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/java.sh"
python=$("$root/scripts/python-env.sh" "$root/tests/python/requirements-scale.txt" "$root/target/py-scale")
models=$("$root/scripts/fetch-models.sh" ppocr)
lib=$("$root/scripts/install-onnxruntime.sh")
cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
plugins="$root/target/bench-scale/plugins"
rm -rf "$plugins"
mkdir -p "$plugins/iris" "$plugins/ppocr-cls/models"
cp -r "$root/plugins/iris/plugin.toml" "$root/plugins/iris/iris.wasm" "$root/plugins/iris/models" "$plugins/iris/"
cp "$root/plugins/onnx-tensor/onnx-tensor.wasm" "$plugins/ppocr-cls/"
cp "$models/ppocr_cls.onnx" "$plugins/ppocr-cls/models/"
cat > "$plugins/ppocr-cls/plugin.toml" <<'TOML'
name = "ppocr-cls"
component = "onnx-tensor.wasm"
[models]
model = { path = "models/ppocr_cls.onnx", backend = "onnxruntime", input_shapes = { x = [-1, 3, 48, 192] } }
[batching]
max_batch_size = 32
TOML
exec "$python" "$root/bench/scale_out.py" "$root/target/release/runinfer" "$plugins" "$lib" "$@"
