#!/usr/bin/env bash
# RUSTC_WRAPPER for bench/fuzz.sh: adds SanitizerCoverage (libFuzzer's feedback),
# overflow checks and debug assertions to the crates named in RUNINFER_FUZZ_CRATES;
# every other crate is compiled as usual.
rustc="$1"
shift
crate=""
prev=""
for arg in "$@"; do
  [ "$prev" = "--crate-name" ] && crate="$arg"
  prev="$arg"
done
for fuzzed in ${RUNINFER_FUZZ_CRATES:-}; do
  if [ "$crate" = "$fuzzed" ]; then
    exec "$rustc" "$@" \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      --cfg fuzzing -Coverflow-checks=on -Cdebug-assertions=on
  fi
done
exec "$rustc" "$@"
