#!/usr/bin/env bash
# OCR: `runinfer run ocr` vs rapidocr-onnxruntime's Python pipeline on the same
# images, side by side in one run (bench/ocr.py says how). rapidocr and its
# dependencies go into target/py-ocr.
#   usage: bench/ocr.sh [--profile release|dev] [--images N] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
if [ "${1:-}" = "--profile" ]; then profile=$2; shift 2; fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
python=$("$root/scripts/python-env.sh" "$root/tests/python/requirements-ocr.txt" "$root/target/py-ocr")
cargo build --profile "$profile" -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
"$root/plugins/ocr/setup.sh" >&2
exec "$python" "$root/bench/ocr.py" --binary "$root/target/$dir/runinfer" "$@"
