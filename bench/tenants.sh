#!/usr/bin/env bash
# Fair sharing of the cores between tenants: a light tenant (iris at a fixed rate)
# alone and next to a heavy tenant that saturates every core with many instances,
# with the host's fair scheduler and without it (bench/tenants.py says how).
# Prints a Markdown table (also written to target/bench/tenants.md).
#   usage: bench/tenants.sh [--profile release|dev] [--seconds S] [--rate R] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
if [ "${1:-}" = "--profile" ]; then profile=$2; shift 2; fi
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
# The test build compiles the hostile handler (tests/plugins) the heavy tenant runs.
cargo build --profile "$profile" -p runinfer-cli --manifest-path "$root/Cargo.toml" >&2
cargo test --profile "$profile" --no-run --manifest-path "$root/Cargo.toml" >&2
exec python3 "$root/bench/tenants.py" --binary "$root/target/$dir/runinfer" "$@"
