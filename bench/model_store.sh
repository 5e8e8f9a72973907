#!/usr/bin/env bash
# Start-up of plugins whose models are in S3 (moto's S3 server on loopback) against
# the same models as files of the plugin: PP-OCR's classifier and detector, MiniLM
# (bench/model_store.py). Installs what it needs: moto and boto3 (target/py-clients),
# the models (scripts/fetch-models.sh).
#   usage: bench/model_store.sh [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=$("$root/scripts/python-env.sh" "$root/tests/python/requirements.txt" "$root/target/py-clients")
"$root/scripts/fetch-models.sh" ppocr minilm >/dev/null
cargo build --release -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
exec "$python" "$root/bench/model_store.py" "$root/target/release/runinfer" "$@"
