#!/usr/bin/env bash
# Soak: `runinfer serve` (release build) for 10 minutes at a fixed request rate,
# mixing iris, a refreshed iris, text-stats and onnx-tensor, with a hostile plugin
# looping into its 200 ms time limit once a second and a model refresh every 30 s;
# RSS, open file descriptors, errors and p50/p99 sampled every 10 s
# (bench/soak.py). Writes target/bench/soak.md.
#
#   bench/soak.sh [--seconds 600] [--rate 200]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q
root=target/soak/plugins
rm -rf target/soak
mkdir -p "$root" target/bench
copy() { # plugin-dir component destination
  mkdir -p "$root/$3/models"
  cp "plugins/$1/$2" "$root/$3/"
  if [ -d "plugins/$1/models" ]; then cp plugins/"$1"/models/* "$root/$3/models/"; fi
}
for p in iris text-stats onnx-tensor; do
  copy "$p" "$p.wasm" "$p"
  cp "plugins/$p/plugin.toml" "$root/$p/"
done
copy iris iris.wasm iris-refresh
rm "$root/iris-refresh/models/"*
cp plugins/iris/models/iris.onnx "$root/iris-refresh/models/iris-0001.onnx"
cat > "$root/iris-refresh/plugin.toml" <<'TOML'
name = "iris-refresh"
component = "iris.wasm"
[models]
iris = "models/iris-*.onnx"
[args]
labels = "setosa,versicolor,virginica"
TOML
mkdir -p "$root/hostile"
cp tests/plugins/hostile/hostile.wasm "$root/hostile/"
cat > "$root/hostile/plugin.toml" <<'TOML'
name = "hostile"
component = "hostile.wasm"
[limits]
timeout_ms = 200
instances = 1
TOML

python3 bench/soak.py target/release/runinfer "$root" --out target/bench/soak.md "$@"
