#!/usr/bin/env bash
# Builds iris-zig.wasm: Zig (the compiler from the `ziglang` wheel on PyPI, into
# target/zig) on wit-bindgen's C bindings -> a wasm32-wasi reactor module ->
# `wasm-tools component new` with wasmtime's WASI preview1 adapter (the tools from
# scripts/component-tools.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/iris-zig"
mkdir -p "$out"
python=$("$root/scripts/python-env.sh" "$here/requirements.txt" "$root/target/zig")
zig=("$python" -m ziglang)
tools=$("$root/scripts/component-tools.sh")

"$tools/bin/wit-bindgen" c "$root/wit" --world handler --out-dir "$out/bindings" >&2
# Zig's caches stay in target/ (its global cache defaults to ~/.cache).
export ZIG_GLOBAL_CACHE_DIR="$out/zig-cache" ZIG_LOCAL_CACHE_DIR="$out/zig-cache"
"${zig[@]}" build-exe "$here/iris.zig" "$out/bindings/handler.c" "$out/bindings/handler_component_type.o" \
  -target wasm32-wasi -mexec-model=reactor -fno-entry -lc -O ReleaseSmall \
  -I "$out/bindings" -femit-bin="$out/iris-zig.core.wasm" >&2
"$tools/bin/wasm-tools" component new "$out/iris-zig.core.wasm" \
  --adapt "wasi_snapshot_preview1=$tools/wasi_snapshot_preview1.reactor.wasm" -o "$here/iris-zig.wasm"
mkdir -p "$here/models"
cp "$root/plugins/iris/models/iris.onnx" "$here/models/iris.onnx"
