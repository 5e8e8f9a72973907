#!/usr/bin/env bash
# Builds iris-c.wasm: wit-bindgen's C bindings + clang/lld/wasi-libc from Debian -> a
# wasm32-wasi core module -> a component with wasmtime's WASI preview1 adapter (both
# steps by scripts/component-tools, the libraries of `wit-bindgen` and `wasm-tools`).
# Installs what is missing: the Debian packages with apt-get.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/iris-c"
mkdir -p "$out"

llvm=16
# Debian puts wasi-libc where its clang finds it for --target=wasm32-wasi.
libc=/usr/lib/wasm32-wasi/libc.a
builtins=/usr/lib/llvm-$llvm/lib/clang/$llvm/lib/wasi/libclang_rt.builtins-wasm32.a
if ! command -v clang-$llvm >/dev/null || ! command -v wasm-ld-$llvm >/dev/null \
   || [ ! -f "$libc" ] || [ ! -f "$builtins" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y --no-install-recommends \
    clang-$llvm lld-$llvm wasi-libc libclang-rt-$llvm-dev-wasm32 >&2
fi
tool=$("$root/scripts/component-tools.sh")

"$tool" bindgen c "$root/wit" handler "$out/bindings"
clang-$llvm --target=wasm32-wasi -O2 -mexec-model=reactor \
  -Wall -Werror -I "$out/bindings" \
  "$here/iris.c" "$out/bindings/handler.c" "$out/bindings/handler_component_type.o" \
  -o "$out/iris-c.core.wasm"
"$tool" new "$out/iris-c.core.wasm" "$here/iris-c.wasm"
mkdir -p "$here/models"
cp "$root/plugins/iris/models/iris.onnx" "$here/models/iris.onnx"
