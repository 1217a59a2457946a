#!/usr/bin/env bash
# Deterministic regression guard: instructions per request inside the gateway, counted by
# valgrind's callgrind (instruction counts do not depend on machine load).
#
#   bench/callgrind.sh            compare with bench/callgrind-baseline.txt; fail on > 5 % growth
#   bench/callgrind.sh --update   measure and write the baseline
#
# Per-request cost = (Ir after N2 requests - Ir after N1 requests) / (N2 - N1), so start-up
# and shutdown cancel out. The gateway runs on one core (one tokio worker) for repeatability.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BASELINE=bench/callgrind-baseline.txt
N1=200
N2=1200
TOLERANCE=5

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
cargo build --release -p sluice -p sluice-mock -p sluice-bench >&2
BIN="$TARGET/release"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# The upstream, natively (not under valgrind).
"$BIN/sluice-mock" --listen 127.0.0.1:0 --threads 1 > "$tmp/mock.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$tmp/mock.out" 2>/dev/null && break; sleep 0.05; done
MOCK="$(sed -n 's/^sluice-mock listening on //p' "$tmp/mock.out")"

scenario_a() {
  cat <<YAML
store: {url: "sqlite://$tmp/sluice-\$N.db"}
providers:
  - {name: upstream, kind: openai_compatible, base_url: "$MOCK/v1", api_key: sk-bench}
models:
  - {name: bench, deployments: [{provider: upstream, model: bench}]}
YAML
}

scenario_d() {
  cat <<YAML
server: {master_key: sk-bench-master}
store: {url: "sqlite://$tmp/sluice-d-\$N.db"}
providers:
  - {name: upstream, kind: openai_compatible, base_url: "$MOCK/v1", api_key: sk-bench}
models:
  - name: bench
    price: {input: 1, output: 2}
    deployments: [{provider: upstream, model: bench}]
YAML
}

# Scenario (d) needs a virtual key with limits and a budget (created through the admin API).
key_for() {
  [ "$1" = d ] || return 0
  local url=$2 auth="authorization: Bearer sk-bench-master"
  curl -sf -H "$auth" -H 'content-type: application/json' -d '{"name":"bench"}' "$url/admin/teams" >/dev/null
  curl -sf -H "$auth" -H 'content-type: application/json' \
    -d '{"team":"bench","models":["bench"],"rpm":100000000,"tpm":1000000000000,"max_concurrency":100000,"budget_usd":1000000,"budget_period":"monthly"}' \
    "$url/admin/keys" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p'
}

# Instructions executed by the gateway while serving N requests (plus start-up/shutdown).
instructions() {
  local scenario=$1 n=$2
  N=$n scenario_"$scenario" | sed "s/\\\$N/$n/" > "$tmp/$scenario-$n.yaml"
  SLUICE_LOG=error taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$scenario.$n" \
    "$BIN/sluice" serve --config "$tmp/$scenario-$n.yaml" --listen 127.0.0.1:0 > "$tmp/gw.out" 2>"$tmp/vg.err" &
  local pid=$!
  for _ in $(seq 2400); do grep -q listening "$tmp/gw.out" 2>/dev/null && break; sleep 0.05; done
  local url; url="$(sed -n 's/^sluice listening on //p' "$tmp/gw.out")"
  [ -n "$url" ] || { echo "gateway did not start under valgrind" >&2; cat "$tmp/vg.err" >&2; exit 1; }
  local key; key="$(key_for "$scenario" "$url")"
  SLUICE_BENCH_KEY="$key" "$BIN/sluice-bench" --drive "$n" "$url/v1/chat/completions" >&2
  kill -TERM "$pid"; wait "$pid" || true
  sed -n 's/^totals: *//p;s/^summary: *//p' "$tmp/cg.$scenario.$n" | head -1 | awk '{print $1}'
}

status=0
declare -A measured
SCENARIOS="${SCENARIOS:-a d}"
for s in $SCENARIOS; do
  i1=$(instructions "$s" $N1)
  i2=$(instructions "$s" $N2)
  per=$(( (i2 - i1) / (N2 - N1) ))
  measured[$s]=$per
  base=$(awk -v s="$s" '$1==s {print $2}' "$BASELINE" 2>/dev/null || true)
  if [ -n "$base" ]; then
    limit=$(( base + base * TOLERANCE / 100 ))
    change=$(awk -v p="$per" -v b="$base" 'BEGIN {printf "%+.1f", (p-b)*100/b}')
    if [ "$per" -gt "$limit" ]; then
      echo "scenario ($s): $per instructions/request, baseline $base ($change %): REGRESSION over ${TOLERANCE} %"
      status=1
    else
      echo "scenario ($s): $per instructions/request, baseline $base ($change %): ok"
    fi
  else
    echo "scenario ($s): $per instructions/request (no baseline)"
  fi
done

if [ "${1:-}" = "--update" ]; then
  { echo "# scenario instructions-per-request (bench/callgrind.sh --update)"
    for s in "${!measured[@]}"; do echo "$s ${measured[$s]}"; done; } > "$BASELINE"
  echo "wrote $BASELINE"
  exit 0
fi
exit $status
