#!/usr/bin/env bash
# The whole test suite: starts the servers, then formatting, lints, every test (all backends).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo nextest run --workspace --all-features --no-fail-fast
cargo test --workspace --all-features --doc
