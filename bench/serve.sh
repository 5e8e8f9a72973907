#!/usr/bin/env bash
# The serving benchmark: `runinfer serve` under wrk (Debian's `wrk` package, installed
# here if missing), on a model that does nothing and on iris, at concurrency 1, 8 and
# 64, with dynamic batching on and off. Prints Markdown tables (also written to
# target/bench/serve.md).
#   usage: bench/serve.sh [--seconds S] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y wrk >&2
fi
cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
exec python3 "$root/bench/serve_bench.py" "$@"
