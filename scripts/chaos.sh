#!/usr/bin/env bash
# The chaos suite: holder processes write through a fenced register while faults hit the lock
# service (private servers on free ports, stopped by pid). ~5 minutes. Arguments go to the
# binary: `--quick`, backend names (redis, mysql, postgres, zookeeper, etcd), fault names,
# `--report FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up >/dev/null   # installs the server packages the suite starts privately
cargo run --release -q -p dlock-chaos -- "$@"
