#!/usr/bin/env bash
# The same Beam pipeline (local runner) with RunInference(RuninferModelHandler) and with
# Beam's own RunInference(OnnxModelHandlerNumpy) on the iris model: examples/s and the
# ratio. apache-beam and onnxruntime go into target/py-beam (scripts/python-env.sh).
#   usage: bench/beam.sh [--examples N] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$("$root/scripts/python-env.sh" "$root/tests/python/requirements-beam.txt" "$root/target/py-beam")
cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
exec "$python" "$root/bench/beam_compare.py" "$@"
