#!/usr/bin/env bash
# Builds, when missing or out of date, what turns a core wasm module into a runinfer
# component (scripts/component-tools: wit-bindgen's C and Go generators, wit-component's
# `embed` and `new`, wasmtime's WASI preview1 reactor adapter) and prints its path.
#   usage: scripts/component-tools.sh
#   then:  TOOL bindgen c|go WIT_DIR WORLD OUT_DIR | embed WIT_DIR WORLD CORE OUT | new CORE OUT
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=$root/target/tools
mkdir -p "$target"
# Language builds may run at once: one builds, the others wait.
exec 9>"$target/.lock"
flock 9
cargo build --quiet --locked --manifest-path "$root/scripts/component-tools/Cargo.toml" \
  --target-dir "$target" >&2
echo "$target/debug/component-tools"
