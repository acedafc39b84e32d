#!/usr/bin/env bash
# Side-by-side MQTT benchmark: ferrymq standalone vs Mosquitto vs rumqttd, on this
# machine, with the same load generator (`ferrymq bench mqtt`) against each.
#
#   scripts/bench-mqtt.sh [--quick] [--perf] [--brokers "ferrymq mosquitto rumqttd"]
#                         [--out DIR] [--no-build] [--connections N]
#
# Every scenario starts each broker fresh, runs the generator against it (bounded
# by `timeout`), records the generator's SUMMARY line in DIR/results.jsonl, and
# stops the broker by PID. The last part prints a Markdown table with the ratios
# ferrymq/mosquitto and ferrymq/rumqttd and the issue's targets (PASS/FAIL).
# --perf adds one unrecorded run of ferrymq under `perf record -g` per profiled
# scenario (DIR/perf-*.txt hold the top symbols).
#
# Installs what is missing: mosquitto (apt-get) and rumqttd (cargo install into
# ~/.cache/ferrymq/tools).
set -euo pipefail

QUICK=0
PERF=0
BUILD=1
BROKERS="ferrymq mosquitto rumqttd"
OUT=""
CONNS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --perf) PERF=1 ;;
    --no-build) BUILD=0 ;;
    --brokers) BROKERS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --connections) CONNS="$2"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${FERRYMQ_TOOLS:-$HOME/.cache/ferrymq/tools}
BIN=$ROOT/target/release/ferrymq
WORK=${OUT:-$(mktemp -d /tmp/ferrymq-bench-mqtt.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
log() { printf '[bench-mqtt %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- file descriptors -------------------------------------------------------
# Each idle connection costs one descriptor in the broker and one in the
# generator. Raise the hard limit if we may (root with CAP_SYS_RESOURCE), then the
# soft limit to the hard one; brokers started below inherit it.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [[ -z "$CONNS" ]]; then
  if [[ $QUICK == 1 ]]; then CONNS=2000; else CONNS=50000; fi
fi
if [[ "$NOFILE" != unlimited ]] && (( CONNS > NOFILE - 1000 )); then
  log "RLIMIT_NOFILE is $NOFILE (hard limit, cannot be raised here): idle connections capped at $((NOFILE - 1000)) instead of $CONNS"
  CONNS=$((NOFILE - 1000))
fi

# --- tools -------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release)
fi
[[ -x "$BIN" ]] || { echo "missing $BIN (run without --no-build)" >&2; exit 1; }

MOSQUITTO=$(command -v mosquitto || true)
[[ -z "$MOSQUITTO" && -x /usr/sbin/mosquitto ]] && MOSQUITTO=/usr/sbin/mosquitto
if [[ " $BROKERS " == *" mosquitto "* && -z "$MOSQUITTO" ]]; then
  log "installing mosquitto (apt-get)"
  # The package's service is not wanted: this script runs its own instances.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) >&2
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
RUMQTTD=$TOOLS/bin/rumqttd
if [[ " $BROKERS " == *" rumqttd "* && ! -x "$RUMQTTD" ]]; then
  log "installing rumqttd into $TOOLS (cargo install)"
  # --locked pins metrics 0.22.1, which newer rustc rejects (E0521); fall back
  # to the newest semver-compatible dependencies.
  cargo install rumqttd --locked --root "$TOOLS" >&2 || cargo install rumqttd --root "$TOOLS" >&2
fi
PERF_BIN=$(command -v perf || true)
if [[ $PERF == 1 && -z "$PERF_BIN" ]]; then
  log "installing linux-perf (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf) >&2 || true
  PERF_BIN=$(command -v perf || true)
  [[ -n "$PERF_BIN" ]] || { log "perf unavailable: --perf ignored"; PERF=0; }
fi

# --- broker lifecycle --------------------------------------------------------
STARTED_PIDS=()
BROKER_PID=""
BROKER_PORT=""

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 pid=$2
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

start_broker() { # name tag -> BROKER_PID, BROKER_PORT
  local name=$1 tag=$2 dir=$WORK/$1-$2
  rm -rf "$dir"; mkdir -p "$dir"
  case "$name" in
    ferrymq)
      # Limits raised to match the other brokers' settings below: no connection
      # rate limit, 100k queued messages per session, no in-flight window cap.
      # MQTT messages do not go to the store yet; small segments keep its
      # preallocation out of the RSS figures.
      cat > "$dir/ferrymq.toml" <<EOF
[store]
mappedFileSizeCommitLog = 67108864
[mqtt]
max_connections = 1000000
max_connection_rate = 1000000
max_queued_messages = 100000
max_inflight = 65535
EOF
      "$BIN" standalone --config "$dir/ferrymq.toml" --mqtt 127.0.0.1:0 --metrics 127.0.0.1:0 --namesrv 127.0.0.1:0 --broker 127.0.0.1:0 \
        --data-dir "$dir/data" > "$dir/stdout.log" 2> "$dir/stderr.log" &
      BROKER_PID=$!
      STARTED_PIDS+=("$BROKER_PID")
      for _ in $(seq 1 300); do
        grep -q '^ferrymq ready' "$dir/stdout.log" 2>/dev/null && break
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
      done
      grep -q '^ferrymq ready' "$dir/stdout.log" || { cat "$dir/stderr.log" >&2; return 1; }
      BROKER_PORT=$(sed -n 's/^  mqtt: *[^ ]*:\([0-9]*\)$/\1/p' "$dir/stdout.log" | head -1)
      ;;
    mosquitto)
      BROKER_PORT=$(free_port)
      cat > "$dir/mosquitto.conf" <<EOF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 100000
max_inflight_messages 0
max_connections -1
persistence false
set_tcp_nodelay true
connection_messages false
log_dest stderr
log_type error
log_type warning
EOF
      "$MOSQUITTO" -c "$dir/mosquitto.conf" > "$dir/stdout.log" 2> "$dir/stderr.log" &
      BROKER_PID=$!
      STARTED_PIDS+=("$BROKER_PID")
      wait_port "$BROKER_PORT" "$BROKER_PID" || { cat "$dir/stderr.log" >&2; return 1; }
      ;;
    rumqttd)
      BROKER_PORT=$(free_port)
      # One v4 server; no connection throttling (next_connection_delay_ms), room
      # for every connection, large in-flight window and payloads.
      cat > "$dir/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 1000010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$BROKER_PORT"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 1000
    dynamic_filters = true
EOF
      "$RUMQTTD" -q -c "$dir/rumqttd.toml" > "$dir/stdout.log" 2> "$dir/stderr.log" &
      BROKER_PID=$!
      STARTED_PIDS+=("$BROKER_PID")
      wait_port "$BROKER_PORT" "$BROKER_PID" || { cat "$dir/stderr.log" "$dir/stdout.log" >&2; return 1; }
      ;;
    *) echo "unknown broker $name" >&2; return 1 ;;
  esac
  # Let the broker finish starting (and the probe connection go away).
  sleep 0.5
}

# --- scenarios ---------------------------------------------------------------
if [[ $QUICK == 1 ]]; then
  N=20000; REPEAT=1; FANOUT_SUBS=100; FANOUT_MSGS=500; FANIN_PUBS=100; LAT_SECS=3; HOLD=1; RUN_TIMEOUT=120
else
  N=100000; REPEAT=3; FANOUT_SUBS=1000; FANOUT_MSGS=1000; FANIN_PUBS=1000; LAT_SECS=10; HOLD=3; RUN_TIMEOUT=240
fi
# name | repeats | generator arguments
SCENARIOS=(
  "qos0|$REPEAT|--topics distinct --publishers 10 --subscribers 10 --qos 0 --messages $N"
  "qos1|$REPEAT|--topics distinct --publishers 10 --subscribers 10 --qos 1 --messages $N"
  "fanout|1|--topics fanout --publishers 1 --subscribers $FANOUT_SUBS --qos 1 --messages $FANOUT_MSGS"
  "fanin|1|--topics fanin --publishers $FANIN_PUBS --subscribers 1 --qos 1 --messages $N"
  "shared|1|--topics shared --publishers 1 --subscribers 5 --qos 1 --messages $N"
  "latency|1|--topics distinct --publishers 10 --subscribers 10 --qos 1 --rate 20000 --duration $LAT_SECS"
  "conn|1|--conn-mode --connections $CONNS --hold $HOLD --max-time 200"
)

run_one() { # broker scenario run args...
  local broker=$1 scen=$2 run=$3; shift 3
  local logf=$WORK/$broker-$scen-$run.log
  local rc=0
  timeout -k 5 "$RUN_TIMEOUT" "$BIN" bench mqtt --host 127.0.0.1 --port "$BROKER_PORT" \
    --broker-pid "$BROKER_PID" --label "$broker" "$@" > "$logf" 2>&1 || rc=$?
  local alive=true
  kill -0 "$BROKER_PID" 2>/dev/null || alive=false
  local summary
  summary=$(grep '^SUMMARY ' "$logf" | tail -1 | sed 's/^SUMMARY //' || true)
  if [[ -n "$summary" ]]; then
    jq -c --arg b "$broker" --arg s "$scen" --argjson r "$run" --argjson alive "$alive" \
      '. + {broker: $b, scenario: $s, run: $r, broker_alive: $alive}' <<< "$summary" >> "$RESULTS"
    grep -E '^  (published|delivered|throughput|latency|connected|broker RSS|failed)' "$logf" | sed "s/^/    /" >&2 || true
  else
    local err
    err=$(tail -3 "$logf" | tr '\n' ' ' | cut -c1-300)
    jq -cn --arg b "$broker" --arg s "$scen" --argjson r "$run" --arg e "exit $rc: $err" --argjson alive "$alive" \
      '{broker: $b, scenario: $s, run: $r, error: $e, broker_alive: $alive}' >> "$RESULTS"
    log "  FAILED: exit $rc: $err"
  fi
}

# One extra, unrecorded run of ferrymq under `perf record -g` (perf slows the
# broker, so profiled runs never count in the results).
profile_one() { # scenario args...
  local scen=$1; shift
  [[ $PERF == 1 ]] || return 0
  kill -0 "$BROKER_PID" 2>/dev/null || return 0
  log "$scen [ferrymq] profiling run under perf record -g"
  "$PERF_BIN" record -g -o "$WORK/perf-$scen.data" -p "$BROKER_PID" > "$WORK/perf-$scen.log" 2>&1 &
  local perf_pid=$!
  sleep 0.5
  timeout -k 5 "$RUN_TIMEOUT" "$BIN" bench mqtt --host 127.0.0.1 --port "$BROKER_PORT" \
    --broker-pid "$BROKER_PID" --label "ferrymq-perf" "$@" > "$WORK/ferrymq-$scen-perf.log" 2>&1 || true
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  "$PERF_BIN" report -i "$WORK/perf-$scen.data" --stdio --no-children -F overhead,dso,sym \
    --percent-limit 0.5 -g none 2>/dev/null | grep -v '^$' | cut -c1-180 | head -70 > "$WORK/perf-$scen.txt" || true
  "$PERF_BIN" report -i "$WORK/perf-$scen.data" --stdio --children --sort dso,sym \
    --percent-limit 3 -g none 2>/dev/null | grep -v '^$' | cut -c1-180 | head -70 > "$WORK/perf-$scen-children.txt" || true
  "$PERF_BIN" report -i "$WORK/perf-$scen.data" --stdio --no-children --dsos ferrymq --sort sym \
    --percent-limit 0.3 -g none 2>/dev/null | grep -v '^$' | cut -c1-180 | head -50 > "$WORK/perf-$scen-ferrymq.txt" || true
  log "  perf profile: $WORK/perf-$scen.txt (self), perf-$scen-children.txt (inclusive), perf-$scen-ferrymq.txt (broker code only)"
}

T0=$(date +%s)
log "work dir $WORK; brokers: $BROKERS; quick=$QUICK; idle connections $CONNS (RLIMIT_NOFILE $NOFILE)"
for entry in "${SCENARIOS[@]}"; do
  IFS='|' read -r scen reps args <<< "$entry"
  for broker in $BROKERS; do
    if ! start_broker "$broker" "$scen"; then
      jq -cn --arg b "$broker" --arg s "$scen" '{broker: $b, scenario: $s, run: 1, error: "broker did not start"}' >> "$RESULTS"
      continue
    fi
    for run in $(seq 1 "$reps"); do
      log "$scen [$broker] run $run/$reps (pid $BROKER_PID, port $BROKER_PORT)"
      # shellcheck disable=SC2086
      run_one "$broker" "$scen" "$run" $args
    done
    if [[ $broker == ferrymq ]]; then
      case "$scen" in
        # shellcheck disable=SC2086
        qos0|qos1|latency|fanout) profile_one "$scen" $args ;;
        conn) profile_one "$scen" --conn-mode --connections "$(( CONNS / 2 ))" --hold 1 --client-prefix perfconn --source-base 101 ;;
      esac
    fi
    stop_pid "$BROKER_PID"
  done
done
log "all runs done in $(( $(date +%s) - T0 )) s"

# --- report --------------------------------------------------------------------
python3 - "$RESULTS" "$QUICK" > "$WORK/table.md" <<'PY'
import json, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
quick = sys.argv[2] == "1"
runs = defaultdict(list)
for r in rows:
    runs[(r["scenario"], r["broker"])].append(r)

def pick(scen, broker):
    """The run with the median delivered rate (or the only run)."""
    ok = [r for r in runs.get((scen, broker), []) if "error" not in r]
    if not ok:
        return None
    key = "connects_s" if scen == "conn" else "delivered_msgs_s"
    ok.sort(key=lambda r: r.get(key) or 0)
    return ok[len(ok) // 2]

def get(scen, broker, field):
    r = pick(scen, broker)
    return None if r is None else r.get(field)

def fmt(v, unit=""):
    if v is None:
        return "fail"
    if isinstance(v, float) and v >= 1000:
        v = round(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return f"{int(v):,}{unit}"
    return f"{v:g}{unit}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"

def spread(scen, broker, field):
    vals = sorted(r.get(field) or 0 for r in runs.get((scen, broker), []) if "error" not in r)
    if len(vals) < 2:
        return ""
    return f" ({fmt(vals[0])}–{fmt(vals[-1])})"

brokers = ["ferrymq", "mosquitto", "rumqttd"]
print("| scenario | metric | ferrymq | mosquitto | rumqttd | ferrymq/mosquitto | ferrymq/rumqttd |")
print("|---|---|---|---|---|---|---|")
SC = [
    ("qos0", "QoS 0, 10→10 distinct, 1 KiB"),
    ("qos1", "QoS 1, 10→10 distinct, 1 KiB"),
    ("fanout", "fan-out 1→N subs, QoS 1"),
    ("fanin", "fan-in N pubs→1, QoS 1"),
    ("shared", "shared 1→5 members, QoS 1"),
    ("latency", "QoS 1 at 20k msgs/s, 10→10"),
    ("conn", "idle connections"),
]
METRICS = {
    "pubsub": [
        ("delivered msgs/s", "delivered_msgs_s", ""),
        ("p50 ms", "latency_p50_ms", ""),
        ("p99 ms", "latency_p99_ms", ""),
        ("lost / dup", None, ""),
        ("broker CPU s", "broker_cpu_s", ""),
        ("broker CPU s / 100k published", "broker_cpu_s_per_100k", ""),
    ],
    "latency": [
        ("p50 ms", "latency_p50_ms", ""),
        ("p99 ms", "latency_p99_ms", ""),
        ("p99.9 ms", "latency_p999_ms", ""),
        ("lost / dup", None, ""),
        ("broker CPU s / 100k published", "broker_cpu_s_per_100k", ""),
    ],
    "conn": [
        ("connected", "connected", ""),
        ("connects/s", "connects_s", ""),
        ("RSS KiB / connection", "rss_per_conn_kib", ""),
        ("broker CPU s while connecting", "broker_cpu_s", ""),
    ],
}
for scen, title in SC:
    kind = "conn" if scen == "conn" else "latency" if scen == "latency" else "pubsub"
    first = True
    for label, field, unit in METRICS[kind]:
        cells = []
        vals = []
        for b in brokers:
            if field is None:
                r = pick(scen, b)
                cells.append("fail" if r is None else f"{r['lost']:,} / {r['duplicates']:,}")
                vals.append(None)
            else:
                v = get(scen, b, field)
                extra = spread(scen, b, field) if field == "delivered_msgs_s" else ""
                cells.append(fmt(v, unit) + extra)
                vals.append(v)
        if scen != "conn" and first:
            sub = pick(scen, "ferrymq") or {}
            if scen in ("fanout", "fanin"):
                title = f"{title} ({sub.get('publishers', '?')}→{sub.get('subscribers', '?')}, {sub.get('sent', 0):,} msgs)"
        if scen == "conn" and first:
            title = f"{title} ({fmt(get('conn', 'ferrymq', 'connections'))} requested)"
        print(f"| {title if first else ''} | {label} | {cells[0]} | {cells[1]} | {cells[2]} | "
              f"{ratio(vals[0], vals[1])} | {ratio(vals[0], vals[2])} |")
        first = False

def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")

def cmp(a, b, f):
    return None if a is None or b is None else f(a, b)

print()
print("| target | ferrymq | reference | result |")
print("|---|---|---|---|")
for q in ("qos0", "qos1"):
    f, m, r = (get(q, b, "delivered_msgs_s") for b in brokers)
    print(f"| {q.upper()} delivered msgs/s ≥ 1.5× Mosquitto | {fmt(f)} | 1.5 × {fmt(m)} = {fmt(None if m is None else 1.5 * m)} | {verdict(cmp(f, m, lambda a, b: a >= 1.5 * b))} |")
    print(f"| {q.upper()} delivered msgs/s ≥ rumqttd | {fmt(f)} | {fmt(r)} | {verdict(cmp(f, r, lambda a, b: a >= b))} |")
f, m = get("latency", "ferrymq", "latency_p99_ms"), get("latency", "mosquitto", "latency_p99_ms")
print(f"| p99 at 20k msgs/s QoS 1 ≤ Mosquitto | {fmt(f, ' ms')} | {fmt(m, ' ms')} | {verdict(cmp(f, m, lambda a, b: a <= b))} |")
f, m = get("qos1", "ferrymq", "broker_cpu_s_per_100k"), get("qos1", "mosquitto", "broker_cpu_s_per_100k")
print(f"| broker CPU s per 100k QoS 1 msgs ≤ Mosquitto | {fmt(f, ' s')} | {fmt(m, ' s')} | {verdict(cmp(f, m, lambda a, b: a <= b))} |")
f = get("conn", "ferrymq", "rss_per_conn_kib")
print(f"| RSS per idle connection ≤ 4 KiB | {fmt(f, ' KiB')} | 4 KiB | {verdict(None if f is None else f <= 4.0)} |")
f, m = get("conn", "ferrymq", "connects_s"), get("conn", "mosquitto", "connects_s")
print(f"| connect rate ≥ Mosquitto | {fmt(f, '/s')} | {fmt(m, '/s')} | {verdict(cmp(f, m, lambda a, b: a >= b))} |")
errs = [r for r in rows if "error" in r or r.get("lost") or r.get("duplicates") or r.get("errors") or r.get("failed") or r.get("broker_alive") is False]
if errs:
    print()
    print("Runs with errors, losses, duplicates, failed connects or a dead broker:")
    for r in errs:
        keys = ("error", "lost", "duplicates", "errors", "first_error", "failed", "failures", "broker_alive")
        print(f"- {r['scenario']} [{r['broker']}] run {r.get('run')}: " + ", ".join(f"{k}={r[k]}" for k in keys if r.get(k) not in (None, 0, {}, True)))
if quick:
    print()
    print("(--quick: smoke-test sizes; do not quote these figures)")
PY
cat "$WORK/table.md"
echo
echo "results: $RESULTS"
