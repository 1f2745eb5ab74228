# shellcheck shell=bash
# Shared by the benchmark scripts: start the simulator and a daemon pointed at it, in a scratch
# directory that is removed on exit. Source it after `cd` to the repository root.
BIN=target/release/pointsd
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_sim [sim flags...]: sets SIM (API base URL) and ADMIN (fault switches).
# shellcheck disable=SC2120 # flags are optional
start_sim() {
  $BIN sim --customers 1000 "$@" > "$WORK/sim.out" 2>/dev/null & PIDS+=($!)
  for _ in $(seq 100); do grep -q "sim admin" "$WORK/sim.out" 2>/dev/null && break; sleep 0.05; done
  SIM=$(awk '/sim listening/ {print $4}' "$WORK/sim.out")
  # shellcheck disable=SC2034 # used by the scripts that source this
  ADMIN=$(awk '/sim admin/ {print $4}' "$WORK/sim.out")
}

# start_daemon "SYNC LINES": a daemon on a free port talking to $SIM, with extra [sync] keys;
# sets URL, TOKEN and DPID, and waits until its cache holds the simulator's customers.
start_daemon() {
  local p; p=$(port); TOKEN=bench-token-0123456789abcdef
  cat > "$WORK/pointsd.toml" <<TOML
[agent]
store_id = "bench"
[api]
listen = "127.0.0.1:$p"
[[api.tokens]]
name = "bench"
token = "$TOKEN"
[upstream]
kind = "smaregi"
[upstream.smaregi]
contract_id = "sim-contract"
client_id = "sim-client"
client_secret = "sim-secret"
id_base = "$SIM"
api_base = "$SIM"
[sync]
online_budget_ms = 0
$1
[log]
level = "warn"
TOML
  chmod 600 "$WORK/pointsd.toml"
  $BIN run --config "$WORK/pointsd.toml" --data-dir "$WORK/data" 2>"$WORK/daemon.err" & DPID=$!; PIDS+=("$DPID")
  URL=http://127.0.0.1:$p
  for _ in $(seq 200); do
    curl -sf -H "Authorization: Bearer $TOKEN" "$URL/v1/status" 2>/dev/null | grep -q '"customers":1000' && break
    sleep 0.1
  done
}
