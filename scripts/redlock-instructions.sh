#!/usr/bin/env bash
# Client-side instructions per uncontended Redlock lock+release cycle over 3 private local
# masters, dlock against rslock 0.10, counted by callgrind (see scripts/bench-instructions.sh for
# the method: per cycle = (I(1500) - I(500)) / 1000, the median of 3 runs each).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server is needed: scripts/services.sh up" >&2; exit 2; }
cargo build --release -q -p dlock-bench --example redlock_cycles
bin=target/release/examples/redlock_cycles
pids=() hosts=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
for _ in 1 2 3; do
  # The next port nothing listens on.
  while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!) hosts+=("127.0.0.1:$port")
  port=$((port + 1))
done
for h in "${hosts[@]}"; do
  until redis-cli -p "${h#*:}" ping >/dev/null 2>&1; do sleep 0.05; done
done
export DLOCK_REDLOCK_HOSTS
DLOCK_REDLOCK_HOSTS=$(IFS=,; echo "${hosts[*]}")
. scripts/lib/callgrind-cycles.sh
rslock=$(per_cycle rslock)
dlock=$(per_cycle dlock)
echo "| subject | instructions per cycle (client) |"
echo "|---|---:|"
echo "| rslock 0.10 | $rslock |"
echo "| dlock redlock | $dlock |"
awk -v d="$dlock" -v r="$rslock" 'BEGIN { printf "dlock / rslock: %.2f\n", d / r }'
