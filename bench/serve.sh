#!/usr/bin/env bash
# The serving benchmark, side by side in one run: `runinfer serve` over HTTP (wrk,
# Debian's `wrk` package, installed here if missing) and gRPC (bench/src/grpc_load.rs),
# and MLServer 1.7.1 with its scikit-learn runtime on the same MLP (installed from
# PyPI into target/py-mlserver), on a model that does nothing and on iris, at
# concurrency 1, 8 and 64; then runinfer with dynamic batching on, eager and off.
# Prints Markdown tables (also written to target/bench/serve.md).
#   usage: bench/serve.sh [--seconds S] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y wrk >&2
fi
cargo build --release -p runinfer-cli -p runinfer-bench --manifest-path "$root/Cargo.toml" >&2
mlserver=$("$root/scripts/python-env.sh" "$root/bench/requirements-mlserver.txt" "$root/target/py-mlserver")
exec python3 "$root/bench/serve_bench.py" --mlserver-python "$mlserver" "$@"
