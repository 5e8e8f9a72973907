#!/usr/bin/env bash
# Builds iris-zig.wasm: Zig (the compiler from the `ziglang` wheel on PyPI, into
# target/zig) on wit-bindgen's C bindings -> a wasm32-wasi reactor module -> a component
# with wasmtime's WASI preview1 adapter (bindings and component by
# scripts/component-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/iris-zig"
mkdir -p "$out"
python=$("$root/scripts/python-env.sh" "$here/requirements.txt" "$root/target/zig")
zig=("$python" -m ziglang)
tool=$("$root/scripts/component-tools.sh")

"$tool" bindgen c "$root/wit" handler "$out/bindings"
# Zig's caches stay in target/ (its global cache defaults to ~/.cache).
export ZIG_GLOBAL_CACHE_DIR="$out/zig-cache" ZIG_LOCAL_CACHE_DIR="$out/zig-cache"
"${zig[@]}" build-exe "$here/iris.zig" "$out/bindings/handler.c" "$out/bindings/handler_component_type.o" \
  -target wasm32-wasi -mexec-model=reactor -fno-entry -lc -O ReleaseSmall \
  -I "$out/bindings" -femit-bin="$out/iris-zig.core.wasm" >&2
"$tool" new "$out/iris-zig.core.wasm" "$here/iris-zig.wasm"
mkdir -p "$here/models"
cp "$root/plugins/iris/models/iris.onnx" "$here/models/iris.onnx"
