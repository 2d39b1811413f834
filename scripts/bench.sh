#!/usr/bin/env bash
# The benchmark: dlock against the raw protocol floor of each backend (and rslock), one process,
# interleaved rounds. Starts the servers first. Extra arguments go to the bench:
#   bash scripts/bench.sh                 everything
#   bash scripts/bench.sh --quick redis   fewer rounds, one scenario (redis, contended, mysql,
#                                         postgres, etcd, zookeeper, redlock, four-lockers,
#                                         watchdog, primitives)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
cargo run --release -p dlock-bench -- "$@"
