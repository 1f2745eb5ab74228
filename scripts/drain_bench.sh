#!/usr/bin/env bash
# Drain benchmark: queue N earns while the upstream is down, bring it back with a fixed rate
# limit of R requests/s (the simulator answers 429 beyond it), and measure how fast the outbox
# drains, as a ratio of R (goal >= 0.95), plus the daemon's peak RSS during the drain.
# Usage: scripts/drain_bench.sh [N=100000] [R=500]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}; R=${2:-500}
cargo build --release --quiet --bin pointsd --example load_earns
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
start_sim --rate-limit "$R"
start_daemon "probe_interval_s = 1
max_requests_per_second = $R
concurrency = 8"
status() { curl -sf -H "Authorization: Bearer $TOKEN" "$URL/v1/status"; }

curl -sf -X PUT -H 'Content-Type: application/json' -d '{"refuse":true}' "$ADMIN/_sim/faults" >/dev/null
for _ in $(seq 100); do status | grep -q '"online":false' && break; sleep 0.1; done
T0=$(date +%s.%N)
ACK=$(target/release/examples/load_earns "$URL" "$TOKEN" "$N" 32 1000)
T1=$(date +%s.%N)
echo "queued $ACK of $N earns offline in $(python3 -c "print(round($T1-$T0,1))") s"

curl -sf -X PUT -H 'Content-Type: application/json' -d '{"refuse":false}' "$ADMIN/_sim/faults" >/dev/null
START=$(date +%s.%N); PEAK=0
while :; do
  RSS=$(awk '/VmRSS/ {print $2}' /proc/$DPID/status); [ "$RSS" -gt "$PEAK" ] && PEAK=$RSS
  S=$(status)
  LEFT=$(echo "$S" | python3 -c 'import json,sys; q=json.load(sys.stdin)["queue"]; print(q["pending"]+q["sending"]+q["ambiguous"])')
  [ "$LEFT" -eq 0 ] && break
  sleep 0.5
done
END=$(date +%s.%N)
echo "$S" | python3 -c 'import json,sys; print("final queue:", json.load(sys.stdin)["queue"])'
ADDS=$(curl -sf "$ADMIN/_sim/adds" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
python3 - "$ACK" "$START" "$END" "$R" "$PEAK" "$ADDS" <<'PY'
import sys
n, s, e, r, peak, adds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
secs = e - s
print(f"drained {n} transactions in {secs:.1f} s = {n/secs:.0f}/s against a limit of {r:.0f}/s: ratio {n/secs/r:.3f}")
print(f"upstream applied {adds} adds (duplicates: {adds - n}); daemon peak RSS during the drain: {peak/1024:.1f} MiB")
PY
