#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what it needs itself; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output lives outside the clone so fresh CI clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrymq/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace --no-fail-fast
echo "== smoke: ferrymq bench store --quick"
"$CARGO_TARGET_DIR/debug/ferrymq" bench store --quick --dir "$(mktemp -d -p "${TMPDIR:-/var/tmp}")" | tail -n 1
