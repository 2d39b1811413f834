#!/usr/bin/env bash
# The whole test suite: starts the servers, then formatting, lints, every test (all backends).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo nextest run --workspace --all-features --no-fail-fast
# The bench is not run here, only built (above, as a workspace member), so it cannot rot.
cargo test --workspace --all-features --doc
RUSTDOCFLAGS='-D warnings' cargo doc --workspace --all-features --no-deps --quiet
