#!/usr/bin/env bash
# Throughput benchmark of pointsd against baselines measured in the same run, on this machine:
#   - balance look-ups/s and p99 (wrk, 32 connections) vs a minimal axum server (fixed JSON)
#   - acknowledged earns/s (each committed with fsync before the answer) vs raw SQLite
#     inserts, one row per transaction, WAL + synchronous=FULL, on the same disk
# Needs wrk (Debian: apt-get install wrk). Usage: scripts/bench.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin pointsd --example baseline_http --example baseline_sqlite
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck disable=SC2119 # no extra simulator flags
start_sim
start_daemon "max_requests_per_second = 10000"

BP=$(port)
target/release/examples/baseline_http "127.0.0.1:$BP" >/dev/null & PIDS+=($!)
sleep 0.5

cat > "$WORK/lookup.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/customers/" .. (n % 1000 + 1))
end
LUA
cat > "$WORK/earn.lua" <<'LUA'
local n = 0
local tid = tostring(math.random(1, 1e9))
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"txn_id":"w%s-%d","customer_id":"%d","kind":"earn","points":1}', tid, n, n % 1000 + 1)
  return wrk.format("POST", "/v1/transactions", nil, body)
end
LUA

wrk_run() { wrk -t2 -c32 -d"${DUR}s" --latency "$@" 2>&1; }
rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '$1=="99%" {print $2}'; }

B=$(wrk_run -s "$WORK/lookup.lua" "http://127.0.0.1:$BP")
L=$(wrk_run -s "$WORK/lookup.lua" -H "Authorization: Bearer $TOKEN" "$URL")
SQL=$(target/release/examples/baseline_sqlite "$WORK" 5000)
E=$(wrk_run -s "$WORK/earn.lua" -H "Authorization: Bearer $TOKEN" "$URL")
non2xx() { awk '/Non-2xx/ {print $5}'; }

B_RPS=$(echo "$B" | rps); L_RPS=$(echo "$L" | rps); E_RPS=$(echo "$E" | rps)
echo "pointsd benchmark ($(nproc) cores, ${DUR}s per run, wrk -t2 -c32)"
printf "%-38s %12s %10s\n" "measure" "req/s" "p99"
printf "%-38s %12s %10s\n" "baseline: minimal axum, fixed JSON" "$B_RPS" "$(echo "$B" | p99)"
printf "%-38s %12s %10s\n" "pointsd balance look-up (SQLite)" "$L_RPS" "$(echo "$L" | p99)"
printf "%-38s %12s %10s\n" "baseline: SQLite 1 row/txn, WAL+FULL" "$SQL" "-"
printf "%-38s %12s %10s\n" "pointsd acknowledged earns" "$E_RPS" "$(echo "$E" | p99)"
python3 - "$B_RPS" "$L_RPS" "$SQL" "$E_RPS" <<'PY'
import sys
b, l, s, e = map(float, sys.argv[1:])
print(f"look-ups: {l/b:.2f}x the minimal HTTP server; earns: {e/s:.2f}x raw one-row-per-transaction SQLite")
PY
echo "$E" | grep -q "Non-2xx" && echo "warning: some earn requests were not 2xx: $(echo "$E" | non2xx)"
curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/status" | python3 -c 'import json,sys; q=json.load(sys.stdin)["queue"]; print("queue after run:", q)'
