#!/usr/bin/env bash
# The iris handler in each language (Rust, Python, JavaScript, C, Go, Zig): component size,
# time to first prediction with a cold and a warm compile cache, and `run` throughput
# relative to the Rust handler on the same model and batch size. Builds the language
# plugins with their build.sh first.
#   usage: bench/languages.sh [--lines N] [--reps N] [--batch N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for p in iris-py iris-js iris-c iris-go iris-zig; do
  "$root/plugins/$p/build.sh" >&2
done
cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
exec python3 "$root/bench/languages.py" "$@"
