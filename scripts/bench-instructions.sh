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
. scripts/lib/callgrind-cycles.sh
floor=$(per_cycle floor)
dlock=$(per_cycle dlock)
echo "| subject | instructions per cycle (client) |"
echo "|---|---:|"
echo "| fenced floor (Lua SET NX PX + INCR; Lua compare-and-delete) | $floor |"
echo "| dlock redis | $dlock |"
awk -v d="$dlock" -v f="$floor" 'BEGIN { printf "dlock / floor: %.2f\n", d / f }'
