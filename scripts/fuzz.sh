#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each): the transaction request
# validator, the config parser, and the Smaregi response parsers. Needs the nightly toolchain
# and cargo-fuzz (installed here if missing). A crash leaves its input in
# fuzz/artifacts/<target>/: add it as a regression test before fixing.
# Usage: scripts/fuzz.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is not installed; cargo fuzz needs it" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd fuzz
for t in txn_request config smaregi_responses; do
  mkdir -p "$WORK/$t"
  echo "fuzz: $t for ${SECS}s"
  # New inputs go to a scratch corpus; the committed seeds are only read.
  cargo +nightly fuzz run "$t" "$WORK/$t" "seeds/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 |
    grep -E "^(#|stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" | tail -4
done
echo "fuzz: no crashes"
