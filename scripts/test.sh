#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what it needs itself; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output and tools live outside the clone so fresh CI clones reuse them.
cache="${FERRYMQ_CACHE:-$HOME/.cache/ferrymq}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo tests"
cargo test --workspace --no-fail-fast
echo "== build ferrymq"
cargo build -p ferrymq
export FERRYMQ_BIN="$CARGO_TARGET_DIR/debug/ferrymq"

echo "== smoke: ferrymq bench store --quick"
scratch="$(mktemp -d -p "${TMPDIR:-/var/tmp}" ferrymq-bench.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
"$FERRYMQ_BIN" bench store --quick --dir "$scratch" | tail -n 1

echo "== fuzz: MQTT decoder, bounded run"
export PATH="$cache/tools/bin:$PATH"
if ! cargo fuzz --help >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  cargo install -q cargo-fuzz --locked --root "$cache/tools"
fi
# libFuzzer reports every new input; keep its last lines (pipefail keeps its status).
node-a/fuzz/run.sh "${FERRYMQ_FUZZ_SECS:-20}" 2>&1 | tail -n 15

echo "== MQTT conformance and durability (paho-mqtt 2.x)"
venv="$cache/venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import paho.mqtt, rocketmq.client, sys; sys.exit(0 if paho.mqtt.__version__.startswith("2.") else 1)' 2>/dev/null; then
  python3 -m venv "$venv"
  # rocketmq 0.4.4's wheel bundles the official C++ client (librocketmq.so).
  "$venv/bin/pip" install -q 'paho-mqtt>=2,<3' pytest 'rocketmq==0.4.4'
fi
"$venv/bin/pytest" -q tests/mqtt

echo "== RocketMQ gateway (official C++ client via PyPI rocketmq 0.4.4)"
"$venv/bin/pytest" -q tests/rocketmq
