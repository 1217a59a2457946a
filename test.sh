#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, every Rust test, and the end-to-end tests
# that drive real `sluice` / `sluice-mock` processes with the official Python SDKs.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build (binaries for the end-to-end tests)"
cargo build --workspace --locked
step "cargo test"
cargo test --workspace --locked
step "bounded fuzz run (cargo-fuzz, 5 s per target; the seed-corpus smoke run is part of cargo test)"
if cargo +nightly fuzz --version > /dev/null 2>&1; then
  FUZZ_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" fuzz/run.sh 5
else
  echo "cargo-fuzz or nightly not installed: only tests/fuzz_smoke.rs ran (see fuzz/README.md)"
fi
step "benchmark harness smoke run (~3 s; the real benchmark is 'cargo run --release -p sluice-bench')"
"$CARGO_TARGET_DIR/debug/sluice-bench" --smoke --bin-dir "$CARGO_TARGET_DIR/debug" > /dev/null
"$CARGO_TARGET_DIR/debug/sink-bench" --smoke > /dev/null
"$CARGO_TARGET_DIR/debug/sink-bench" --smoke --generate 5000 > /dev/null
step "end-to-end tests (Python SDKs against real processes)"
SLUICE_BIN="$CARGO_TARGET_DIR/debug/sluice" SLUICE_MOCK_BIN="$CARGO_TARGET_DIR/debug/sluice-mock" \
  tests/e2e/run.sh
