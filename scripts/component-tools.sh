#!/usr/bin/env bash
# Installs what turns a core wasm module into a runinfer component, when missing, into
# target/tools: wit-bindgen (C and Go bindings; crate wit-bindgen-cli) and wasm-tools
# (`component embed`, `component new`), at the versions that match the host's wasmtime 48
# / wasmparser 0.254 and the Rust SDK's wit-bindgen, and wasmtime's WASI preview1
# reactor adapter (from the crate wasmtime publishes it in). Prints the tools directory:
# bin/wit-bindgen, bin/wasm-tools, wasi_snapshot_preview1.reactor.wasm.
#   usage: scripts/component-tools.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/target/tools
mkdir -p "$tools"
# Language builds may run at once: one installs, the others wait.
exec 9>"$tools/.lock"
flock 9
# Only the C and Go generators are used: the others (C#, C++, D, MoonBit, Rust, …) are
# 40 s of a 2-core build (3 min 0 s → 2 min 20 s) and generate the same C and Go.
[ -x "$tools/bin/wit-bindgen" ] || cargo install --locked --root "$tools" --no-default-features --features c,go wit-bindgen-cli@0.63.0 >&2
[ -x "$tools/bin/wasm-tools" ] || cargo install --locked --root "$tools" --no-default-features --features component wasm-tools@1.254.2 >&2
adapter="$tools/wasi_snapshot_preview1.reactor.wasm"
if [ ! -f "$adapter" ]; then
  cargo run --quiet --release --locked --manifest-path "$root/scripts/wasi-adapter/Cargo.toml" \
    --target-dir "$tools/build" -- "$adapter.part" >&2
  mv "$adapter.part" "$adapter"
fi
echo "$tools"
