#!/usr/bin/env bash
# Sentence embeddings: `runinfer run text-embed` vs the Python reference pipeline
# (tokenizers + onnxruntime) vs Beam RunInference with the same Python processing,
# side by side in one run (bench/text_embed.py says how). apache-beam, onnxruntime and
# tokenizers go into target/py-beam.
#   usage: bench/text_embed.sh [--profile release|dev] [--texts N] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
if [ "${1:-}" = "--profile" ]; then profile=$2; shift 2; fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
python=$("$root/scripts/python-env.sh" "$root/tests/python/requirements-beam.txt" "$root/target/py-beam")
cargo build --profile "$profile" -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
"$root/plugins/text-embed/setup.sh" >&2
exec "$python" "$root/bench/text_embed.py" --binary "$root/target/$dir/runinfer" "$@"
