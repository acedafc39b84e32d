#!/usr/bin/env bash
# Bounded fuzz run of the MQTT decoder: node-a/fuzz/run.sh [seconds] (default 30).
# Needs cargo-fuzz and a nightly toolchain; without them it says so and exits 0,
# so it can sit in scripts that also run on machines without them.
# New inputs go to corpus/work (git-ignored); the seeds in corpus/decode stay as
# they are. Crashes land in artifacts/decode/.
set -euo pipefail
cd "$(dirname "$0")/.."   # node-a: cargo fuzz finds ./fuzz
secs="${1:-30}"

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: skipped, cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped, no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi

mkdir -p fuzz/corpus/work
exec cargo +nightly fuzz run decode fuzz/corpus/work fuzz/corpus/decode -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10
