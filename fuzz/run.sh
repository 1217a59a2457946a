#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each). Not part of the default
# test run: needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#   fuzz/run.sh [seconds-per-target] [target ...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/sluice-fuzz-target}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # Seed the stream targets with the real transcripts' bodies when the corpus is empty.
  echo "==> $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1 \
    | grep -E "^(#[0-9]+.*(DONE|pulse)|==|SUMMARY|Done)" | tail -3
done
