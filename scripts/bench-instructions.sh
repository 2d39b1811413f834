#!/usr/bin/env bash
# Client-side instructions per uncontended Redis lock+release cycle, dlock against the raw fenced
# floor (the same two scripts' shape), counted by callgrind (repeatable within a few percent on a noisy
# machine, unlike wall-clock time). Per-cycle = (I(1500) - I(500)) / 1000, start-up cancelled
# out; the median of 3 runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up >/dev/null
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 2; }
cargo build --release -q -p dlock-bench --example redis_cycles
bin=target/release/examples/redis_cycles
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
per_cycle() {
  local runs=()
  for _ in 1 2 3; do
    local a b
    a=$(count "$1" 500); b=$(count "$1" 1500)
    runs+=($(( (b - a) / 1000 )))
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}
floor=$(per_cycle floor)
dlock=$(per_cycle dlock)
echo "| subject | instructions per cycle (client) |"
echo "|---|---:|"
echo "| fenced floor (Lua SET NX PX + INCR; Lua compare-and-delete) | $floor |"
echo "| dlock redis | $dlock |"
awk -v d="$dlock" -v f="$floor" 'BEGIN { printf "dlock / floor: %.2f\n", d / f }'
