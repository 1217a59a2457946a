#!/usr/bin/env bash
# Runs the end-to-end suite against built sluice and sluice-mock binaries.
#
#   CARGO_TARGET_DIR=/var/tmp/sluice-target tests/e2e/run.sh [pytest args...]
#
# SLUICE_BIN / SLUICE_MOCK_BIN override the binaries; by default they are taken from
# ${CARGO_TARGET_DIR:-$REPO/target}/debug. The venv lives at $REPO/.venv and its packages
# are reinstalled only when requirements.txt changes.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQS="$REPO/tests/e2e/requirements.txt"
VENV="$REPO/.venv"
STAMP="$VENV/.e2e-requirements.sha256"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export SLUICE_BIN="${SLUICE_BIN:-$TARGET_DIR/debug/sluice}"
export SLUICE_MOCK_BIN="${SLUICE_MOCK_BIN:-$TARGET_DIR/debug/sluice-mock}"

missing=0
for bin in "$SLUICE_BIN" "$SLUICE_MOCK_BIN"; do
    if [[ ! -x "$bin" ]]; then
        echo "run.sh: binary not found or not executable: $bin" >&2
        missing=1
    fi
done
if (( missing )); then
    echo "run.sh: build first (cargo build --workspace) or set SLUICE_BIN and SLUICE_MOCK_BIN" >&2
    exit 2
fi

# The dashboard tests drive Debian's chromium (never a browser Playwright downloads).
if ! command -v chromium >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$STAMP"
fi

cd "$REPO"
set +e
"$VENV/bin/python" -m pytest tests/e2e -q "$@"
code=$?
set -e
exit "$code"
