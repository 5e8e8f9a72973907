#!/usr/bin/env bash
# Coverage-guided fuzzing of what the host reads from outside, on the pinned stable
# toolchain: libFuzzer (the libfuzzer-sys crate) with LLVM's SanitizerCoverage, which
# stable rustc enables with -C flags. Only the host library and the targets are
# instrumented (a RUSTC_WRAPPER adds the flags for those crates), with overflow checks
# and debug assertions on, so an unchecked size is a crash, not a silent wrap.
#
#   bench/fuzz.sh [--seconds 60] [--jobs 1] [TARGET ...]
#
# Targets: manifest, jsonl_decode, oip_request, tensor_ops (default: all). Each runs
# from fuzz/corpus/TARGET (the committed seeds; new inputs go to target/fuzz/corpus).
# A crash leaves its input in target/fuzz/artifacts/TARGET and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(manifest jsonl_decode oip_request tensor_ops)

export CARGO_TARGET_DIR="$PWD/target/fuzz"
export RUNINFER_FUZZ_CRATES="runinfer ${targets[*]}"
export RUSTC_WRAPPER="$PWD/bench/fuzz-rustc.sh"
# The guests are not needed to fuzz the host's parsers.
export RUNINFER_SKIP_GUEST_BUILD=1
cargo build --release --manifest-path fuzz/Cargo.toml --bins

for target in "${targets[@]}"; do
  corpus="target/fuzz/corpus/$target"
  artifacts="target/fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  rm -f "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-*
  echo "== $target: ${seconds}s"
  parallel=()
  # With -jobs, libFuzzer writes each job's log to fuzz-N.log in the current folder.
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  (cd target/fuzz && "$CARGO_TARGET_DIR/release/$target" "$PWD/corpus/$target" "$OLDPWD/fuzz/corpus/$target" \
    -max_total_time="$seconds" "${parallel[@]}" -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix="$PWD/artifacts/$target/" -print_final_stats=1 2>&1) |
    grep -E "^(#[0-9]+ +DONE|stat::|==[0-9]+==|SUMMARY|.*panicked|Done )" || true
  if compgen -G "$artifacts/*-*" >/dev/null; then
    echo "$target: crash inputs in $artifacts" >&2
    exit 1
  fi
done
