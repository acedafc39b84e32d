#!/usr/bin/env bash
# MQTT durability benchmark (issue 4): ferrymq standalone with ASYNC_FLUSH and with
# SYNC_FLUSH beside Mosquitto with `persistence true`, on this machine, with the
# same load generator (`ferrymq bench mqtt`), QoS 1, 1 KiB, 10 → 10 distinct topics.
#
#   scripts/bench-durable.sh [--quick] [--no-build] [--out DIR] [--repeat N]
#                            [--messages N] [--no-wait]
#
# Every run starts its broker fresh on a free loopback port with a fresh data dir,
# runs the generator against it (bounded by `timeout`), records the generator's
# SUMMARY line (plus, for ferrymq, the store counters scraped from /metrics and the
# broker log's ERROR/WARN count) in DIR/results.jsonl, and stops the broker by PID.
# Before the first measured run (and again whenever one shows up) it waits until no
# `cargo`/`rustc` process has run for 20 s, so concurrent builds do not skew the
# figures; a run during which one was seen (sampled every 0.5 s) is discarded and
# run again, at most twice (--no-wait skips all this). The report is Markdown
# tables with the ratios to RocketMQ 4.5's published figures (4C8G, 1 KiB, 16
# threads: ~22,000 TPS with ASYNC_FLUSH, ~2,600 TPS with SYNC_FLUSH), PASS/FAIL,
# ack latency at those fixed rates and in RocketMQ's 16-synchronous-sender shape;
# the last line is `SUMMARY {json}`. Installs mosquitto (apt-get) when missing.
set -euo pipefail

QUICK=0
BUILD=1
WAIT=1
OUT=""
REPEAT=""
N=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-wait) WAIT=0 ;;
    --out) OUT="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --messages) N="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/ferrymq
WORK=${OUT:-$(mktemp -d /tmp/ferrymq-bench-durable.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
log() { printf '[bench-durable %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ $QUICK == 1 ]]; then
  N=${N:-20000}; REPEAT=${REPEAT:-1}; RATE_SECS=2; RUN_TIMEOUT=120
else
  N=${N:-200000}; REPEAT=${REPEAT:-3}; RATE_SECS=10; RUN_TIMEOUT=300
fi
QUIET_SECS=20

# --- tools -------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  log "cargo build --release -p ferrymq"
  (cd "$ROOT" && cargo build --release -p ferrymq)
fi
[[ -x "$BIN" ]] || { echo "missing $BIN (run without --no-build)" >&2; exit 1; }
command -v jq > /dev/null || { echo "jq is required" >&2; exit 1; }
command -v curl > /dev/null || { echo "curl is required" >&2; exit 1; }

MOSQUITTO=$(command -v mosquitto || true)
[[ -z "$MOSQUITTO" && -x /usr/sbin/mosquitto ]] && MOSQUITTO=/usr/sbin/mosquitto
if [[ -z "$MOSQUITTO" ]]; then
  log "installing mosquitto (apt-get)"
  # The package's service is not wanted: this script runs its own instances.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) >&2
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
MOSQUITTO_VERSION=$("$MOSQUITTO" -h 2>&1 | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p' | head -1 || true)

# --- quiet machine -------------------------------------------------------------
# Waits until no cargo/rustc process has been seen for $QUIET_SECS seconds.
building() { pgrep -x cargo > /dev/null || pgrep rustc > /dev/null; }
wait_quiet() {
  [[ $WAIT == 1 ]] || return 0
  local quiet=0 waited=0 seen=0
  while (( quiet < QUIET_SECS )); do
    if building; then
      quiet=0; seen=1
    else
      quiet=$((quiet + 1))
    fi
    sleep 1
    waited=$((waited + 1))
  done
  if [[ $seen == 1 ]]; then
    log "waited ${waited} s for cargo/rustc to finish (then ${QUIET_SECS} s without any)"
  else
    log "waited ${waited} s: no cargo/rustc process ran"
  fi
}

# --- broker lifecycle --------------------------------------------------------
STARTED_PIDS=()
BROKER_PID=""
BROKER_PORT=""
BROKER_DIR=""
METRICS_URL=""

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  [[ -n "${WATCH_PID:-}" ]] && kill "$WATCH_PID" 2>/dev/null
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

start_broker() { # mode run -> BROKER_PID, BROKER_PORT, BROKER_DIR, METRICS_URL
  local mode=$1 run=$2 dir=$WORK/$1-$2
  rm -rf "$dir"; mkdir -p "$dir"
  BROKER_DIR=$dir
  METRICS_URL=""
  case "$mode" in
    ferrymq-async|ferrymq-sync)
      local flush=ASYNC_FLUSH
      [[ $mode == ferrymq-sync ]] && flush=SYNC_FLUSH
      # The MQTT limits of scripts/bench-mqtt.sh (no connection rate limit, 100k
      # queued messages per session, no in-flight cap); the store keeps its
      # defaults (1 GiB CommitLog segments) except the flush type.
      cat > "$dir/ferrymq.toml" <<EOF
[mqtt]
max_connections = 1000000
max_connection_rate = 1000000
max_queued_messages = 100000
max_inflight = 65535
EOF
      FERRYMQ_STORE__FLUSHDISKTYPE=$flush "$BIN" standalone --config "$dir/ferrymq.toml" \
        --mqtt 127.0.0.1:0 --metrics 127.0.0.1:0 --namesrv 127.0.0.1:0 --broker 127.0.0.1:0 \
        --data-dir "$dir/data" \
        > "$dir/stdout.log" 2> "$dir/stderr.log" &
      BROKER_PID=$!
      STARTED_PIDS+=("$BROKER_PID")
      for _ in $(seq 1 600); do
        grep -q '^ferrymq ready' "$dir/stdout.log" 2>/dev/null && break
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
      done
      grep -q '^ferrymq ready' "$dir/stdout.log" || { cat "$dir/stderr.log" >&2; return 1; }
      BROKER_PORT=$(sed -n 's/^  mqtt: *[^ ]*:\([0-9]*\)$/\1/p' "$dir/stdout.log" | head -1)
      METRICS_URL=$(sed -n 's/^  metrics: *\(http[^ ]*\)$/\1/p' "$dir/stdout.log" | head -1)
      grep -q "flush type: *$( [[ $flush == SYNC_FLUSH ]] && echo Sync || echo Async)Flush" "$dir/stdout.log" \
        || { log "ferrymq did not report flush type $flush:"; cat "$dir/stdout.log" >&2; return 1; }
      ;;
    mosquitto)
      BROKER_PORT=$(free_port)
      mkdir -p "$dir/data"
      # scripts/bench-mqtt.sh's settings, with persistence on. Mosquitto keeps
      # its database in memory and writes it to persistence_location at the
      # autosave interval (default 1800 s) and at shutdown: a PUBACK is no disk
      # promise. `user`: started as root it would switch to the user mosquitto,
      # which may not write into this directory.
      cat > "$dir/mosquitto.conf" <<EOF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 100000
max_inflight_messages 0
max_connections -1
persistence true
persistence_location $dir/data/
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
    *) echo "unknown broker mode $mode" >&2; return 1 ;;
  esac
  # Let the broker finish starting (and the probe connection go away).
  sleep 0.5
}

# Prometheus counters of the running ferrymq as one JSON object.
scrape_metrics() {
  [[ -n "$METRICS_URL" ]] || { echo '{}'; return 0; }
  curl -s --max-time 5 "$METRICS_URL" | awk '
    function val(name) { return (name in m) ? m[name] : 0 }
    !/^#/ && NF == 2 { m[$1] = $2 }
    END {
      printf "{\"store_put_messages\":%d,\"store_put_bytes\":%d,\"store_flushes\":%d,\"store_flush_secs\":%.6f,\"store_flush_timeouts\":%d,\"publishes_refused\":%d,\"publishes_denied\":%d,\"publish_throttled\":%d,\"messages_dropped\":%d,\"connections_refused\":%d}\n",
        val("ferrymq_store_put_messages_total"), val("ferrymq_store_put_bytes_total"),
        val("ferrymq_store_flush_latency_seconds_count"), val("ferrymq_store_flush_latency_seconds_sum"),
        val("ferrymq_store_flush_timeouts_total"), val("ferrymq_mqtt_publishes_refused_total"),
        val("ferrymq_mqtt_publishes_denied_total"), val("ferrymq_mqtt_publish_throttled_total"),
        val("ferrymq_mqtt_messages_dropped_total"), val("ferrymq_mqtt_connections_refused_total")
    }' || echo '{}'
}

# --- runs ----------------------------------------------------------------------
MODES="ferrymq-async ferrymq-sync mosquitto"
GEN_ARGS=(--qos 1 --payload 1024 --topics distinct)
# name | repeats | generator arguments. `max`: as fast as possible, 10 → 10 (the
# issue's comparison). `rate<R>`: a fixed R msgs/s, RocketMQ's published TPS, so
# the ack latency is not just the in-flight window divided by the throughput.
# `rmq16`: RocketMQ's benchmark shape, 16 synchronous senders (one publish in
# flight each, so a SYNC_FLUSH group commit holds at most 16 messages).
SCENARIOS=(
  "max|$REPEAT|--publishers 10 --subscribers 10 --messages $N"
  "rate2600|1|--publishers 10 --subscribers 10 --rate 2600 --duration $RATE_SECS"
  "rate22000|1|--publishers 10 --subscribers 10 --rate 22000 --duration $RATE_SECS"
  "rmq16|1|--publishers 16 --subscribers 16 --inflight 1 --messages $((N / 2))"
)

# Samples for cargo/rustc every 0.5 s while a run lasts (sets BUILD_SEEN).
WATCH_PID=""
BUILD_SEEN=false
watch_builds_start() {
  rm -f "$WORK/.build-seen"
  if [[ $WAIT == 1 ]]; then
    ( while :; do if building; then touch "$WORK/.build-seen"; fi; sleep 0.5; done ) &
    WATCH_PID=$!
  fi
}
watch_builds_stop() {
  if [[ -n "$WATCH_PID" ]]; then
    kill "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
  fi
  BUILD_SEEN=false
  if [[ -e "$WORK/.build-seen" ]]; then BUILD_SEEN=true; fi
  rm -f "$WORK/.build-seen"
}

run_one() { # mode scenario run args... -> BUILD_SEEN
  local mode=$1 scen=$2 run=$3; shift 3
  local logf=$WORK/$mode-$scen-$run.log rc=0
  watch_builds_start
  timeout -k 5 "$RUN_TIMEOUT" "$BIN" bench mqtt --host 127.0.0.1 --port "$BROKER_PORT" \
    --broker-pid "$BROKER_PID" --label "$mode" "${GEN_ARGS[@]}" "$@" > "$logf" 2>&1 || rc=$?
  watch_builds_stop
  local alive=true
  kill -0 "$BROKER_PID" 2>/dev/null || alive=false
  local metrics
  metrics=$(scrape_metrics)
  stop_pid "$BROKER_PID"
  # What the broker left on disk after a clean shutdown, and what it logged.
  local disk_bytes errlines warnlines
  # Allocated bytes, not apparent size (ferrymq's 1 GiB segment is sparse).
  disk_bytes=$(du -s --block-size=1 "$BROKER_DIR/data" 2>/dev/null | cut -f1 || echo 0)
  # ferrymq logs `<time> ERROR <target>: ...`, Mosquitto `<time>: Error: ...`.
  errlines=$(grep -cE ' ERROR |Error: ' "$BROKER_DIR/stderr.log" || true)
  # (Mosquitto's warning about running as root comes from `user root` above.)
  warnlines=$(grep -E ' WARN |Warning: ' "$BROKER_DIR/stderr.log" | grep -vc 'should not be run as root' || true)
  local extra
  extra=$(jq -cn --arg m "$mode" --arg s "$scen" --argjson r "$run" --argjson alive "$alive" \
    --argjson bs "$BUILD_SEEN" --argjson disk "${disk_bytes:-0}" \
    --argjson el "${errlines:-0}" --argjson wl "${warnlines:-0}" --argjson met "$metrics" \
    '{broker_mode: $m, scenario: $s, run: $r, broker_alive: $alive, build_seen: $bs,
      data_dir_bytes_after_stop: $disk, broker_log_errors: $el, broker_log_warnings: $wl} + $met')
  local summary
  summary=$(grep '^SUMMARY ' "$logf" | tail -1 | sed 's/^SUMMARY //' || true)
  if [[ -n "$summary" ]]; then
    jq -c --argjson x "$extra" '. + $x' <<< "$summary" >> "$RESULTS"
    grep -E '^  (published|acked|ack latency|delivered|throughput|latency|broker CPU|errors)' "$logf" | sed "s/^/    /" >&2 || true
  else
    local err
    err=$(tail -3 "$logf" | tr '\n' ' ' | cut -c1-300)
    jq -cn --arg e "exit $rc: $err" --argjson x "$extra" '{error: $e} + $x' >> "$RESULTS"
    log "  FAILED: exit $rc: $err"
  fi
  jq -r '"    store: \(.store_put_messages // 0) puts, \(.store_flushes // 0) flushes; refused \(.publishes_refused // 0), throttled \(.publish_throttled // 0), dropped \(.messages_dropped // 0); data dir \(.data_dir_bytes_after_stop) B after stop; broker log \(.broker_log_errors) ERROR, \(.broker_log_warnings) WARN lines"' <<< "$extra" >&2
  if [[ "$errlines" != 0 || "$warnlines" != 0 ]]; then
    grep -E ' (ERROR|WARN) |Error: |Warning: ' "$BROKER_DIR/stderr.log" | grep -v 'should not be run as root' | head -5 | cut -c1-300 | sed 's/^/    log: /' >&2 || true
  fi
  # The data dirs hold hundreds of MB per ferrymq run: keep only the logs.
  rm -rf "$BROKER_DIR/data"
}

T0=$(date +%s)
log "work dir $WORK; modes: $MODES; $N messages per max run, $REPEAT run(s) each; quick=$QUICK"
log "generator: ferrymq bench mqtt ${GEN_ARGS[*]} --broker-pid PID + per scenario: $(printf '%s; ' "${SCENARIOS[@]}")"
wait_quiet
for entry in "${SCENARIOS[@]}"; do
  IFS='|' read -r scen reps args <<< "$entry"
  # Runs of one scenario alternate between the brokers, so drift hits all alike.
  for run in $(seq 1 "$reps"); do
    for mode in $MODES; do
      for attempt in 1 2 3; do
        if building; then wait_quiet; fi
        if ! start_broker "$mode" "$scen-$run"; then
          jq -cn --arg m "$mode" --arg s "$scen" --argjson r "$run" \
            '{broker_mode: $m, scenario: $s, run: $r, error: "broker did not start"}' >> "$RESULTS"
          stop_pid "$BROKER_PID"
          break
        fi
        log "$scen [$mode] run $run/$reps (pid $BROKER_PID, port $BROKER_PORT)"
        # shellcheck disable=SC2086
        run_one "$mode" "$scen" "$run" $args
        if [[ $BUILD_SEEN == true && $attempt -lt 3 ]]; then
          log "  a cargo/rustc process ran during this run: discarded (log kept as *.discarded-$attempt), running it again"
          sed -i '$ d' "$RESULTS"
          mv "$WORK/$mode-$scen-$run.log" "$WORK/$mode-$scen-$run.log.discarded-$attempt"
          wait_quiet
          continue
        fi
        break
      done
    done
  done
done
log "all runs done in $(( $(date +%s) - T0 )) s"

# --- report --------------------------------------------------------------------
DISCARDED=$(find "$WORK" -maxdepth 1 -name '*.log.discarded-*' | wc -l)
python3 - "$RESULTS" "$QUICK" "$N" "$REPEAT" "${MOSQUITTO_VERSION:-?}" "$WORK/summary.json" "$RATE_SECS" "$DISCARDED" > "$WORK/table.md" <<'PY'
import json, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
quick = sys.argv[2] == "1"
n, repeat, mosq_version, summary_path = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rate_secs, discarded = sys.argv[7], int(sys.argv[8])
runs = defaultdict(list)
for r in rows:
    runs[(r.get("scenario"), r["broker_mode"])].append(r)

# RocketMQ 4.5 published figures (4C8G, 1 KiB, 16 threads), as quoted in issue 4.
REF = {"ferrymq-async": ("ASYNC_FLUSH", 22000), "ferrymq-sync": ("SYNC_FLUSH", 2600)}
MODES = [
    ("ferrymq-async", "ferrymq, ASYNC_FLUSH"),
    ("ferrymq-sync", "ferrymq, SYNC_FLUSH"),
    ("mosquitto", f"Mosquitto {mosq_version}, persistence true"),
]

def pick(scen, mode):
    """The run with the median acknowledged publish rate (or the only run)."""
    ok = [r for r in runs.get((scen, mode), []) if "error" not in r]
    if not ok:
        return None
    ok.sort(key=lambda r: r.get("acked_msgs_s") or 0)
    return ok[len(ok) // 2]

def fmt(v):
    if v is None:
        return "fail"
    if isinstance(v, float) and v >= 1000:
        v = round(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return f"{int(v):,}"
    return f"{v:g}"

def spread(scen, mode, field):
    vals = sorted(r.get(field) or 0 for r in runs.get((scen, mode), []) if "error" not in r)
    if len(vals) < 2:
        return ""
    return f" ({fmt(vals[0])}–{fmt(vals[-1])})"

def clean(r):
    """No loss, duplicates, refusals, connection errors, broker errors or death."""
    return ("error" not in r and not r.get("lost") and not r.get("duplicates") and not r.get("errors")
            and not r.get("drain_timed_out") and r.get("acked") == r.get("sent")
            and not r.get("publishes_refused") and not r.get("broker_log_errors")
            and r.get("broker_alive") is not False)

def all_clean(mode):
    rs = [r for (s, m), v in runs.items() if m == mode for r in v]
    return bool(rs) and all(clean(r) for r in rs)

mosq = pick("max", "mosquitto")
print("| broker / mode | acked publish msgs/s | delivered msgs/s | ack p50 ms | ack p99 ms | e2e p99 ms | broker CPU s / 100k msgs | lost / dup | RocketMQ 4.5 (4C8G) TPS | ratio | result | vs Mosquitto |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
summary = {"messages": n, "runs": repeat}
verdicts = []
for mode, title in MODES:
    r = pick("max", mode)
    key = mode.replace("-", "_")
    if r is None:
        ref = fmt(REF[mode][1]) if mode in REF else "-"
        print(f"| {title} | fail | fail | fail | fail | fail | fail | fail | {ref} | - | {'FAIL' if mode in REF else 'n/a'} | - |")
        summary[key] = None
        if mode in REF:
            verdicts.append(False)
        continue
    rate = r.get("acked_msgs_s") or 0
    if mode in REF:
        ref_name, ref = REF[mode]
        ok = rate >= ref and all_clean(mode)
        verdicts.append(ok)
        ref_cell, ratio, res = f"{ref:,} ({ref_name})", f"{rate / ref:.2f}", "PASS" if ok else "FAIL"
    else:
        ref_cell, ratio, res = "-", "-", "n/a (no disk promise)"
    vs = "-" if mode == "mosquitto" or not mosq or not mosq.get("acked_msgs_s") else f"{rate / mosq['acked_msgs_s']:.2f}"
    print(f"| {title} | {fmt(rate)}{spread('max', mode, 'acked_msgs_s')} | {fmt(r.get('delivered_msgs_s'))} | "
          f"{fmt(r.get('ack_p50_ms'))} | {fmt(r.get('ack_p99_ms'))} | {fmt(r.get('latency_p99_ms'))} | "
          f"{fmt(r.get('broker_cpu_s_per_100k'))} | {r.get('lost', 0):,} / {r.get('duplicates', 0):,} | "
          f"{ref_cell} | {ratio} | {res} | {vs} |")
    summary[key] = {k: r.get(k) for k in ("acked_msgs_s", "publish_msgs_s", "delivered_msgs_s", "ack_p50_ms",
                                           "ack_p99_ms", "ack_p999_ms", "latency_p99_ms", "broker_cpu_s_per_100k",
                                           "lost", "duplicates", "store_flushes")}

print()
print(f"QoS 1, 1 KiB payload, 10 publishers → 10 subscribers on distinct topics, {n:,} messages per run, "
      f"{repeat} run(s) per broker/mode, each on a freshly started broker with an empty data dir; the run with "
      "the median acked rate is shown (range in brackets). PASS needs the rate and no loss, duplicate, refusal "
      "or broker log error in any run of that mode.")
print("Acked publish msgs/s = PUBACKs received / time from the common start to the last PUBACK (RocketMQ's TPS "
      "also counts acknowledged sends). ack = publish written by the client → its PUBACK (at full speed about "
      "the 10 × 100 in-flight window divided by the rate); e2e = payload handed to the client library → "
      "delivered to the subscriber (includes the client's 1,024-deep request queue).")
for mode, _ in MODES:
    r = pick("max", mode)
    if r is None or not mode.startswith("ferrymq"):
        continue
    fl = r.get("store_flushes") or 0
    puts = r.get("store_put_messages") or 0
    per = f", {puts / fl:.1f} messages per flush" if fl else ""
    mean = f" (mean flush {1000 * (r.get('store_flush_secs') or 0) / fl:.3f} ms)" if fl else ""
    print(f"- {mode}: {puts:,} messages stored, {fl:,} CommitLog flushes{per}{mean}; "
          f"refused {r.get('publishes_refused', 0)}, throttled {r.get('publish_throttled', 0)}, "
          f"dropped {r.get('messages_dropped', 0)}; {r.get('data_dir_bytes_after_stop', 0):,} B allocated in the data dir after stop.")
if mosq:
    print(f"- mosquitto: `persistence true` writes its in-memory database to mosquitto.db every autosave_interval "
          f"(default 1800 s) and at shutdown, so its PUBACK is not a disk promise. The bench clients use clean "
          f"sessions, so it has little of theirs to save: {mosq.get('data_dir_bytes_after_stop', 0):,} B allocated "
          "in its data dir after a clean stop.")

# Fixed-rate runs: ack latency at RocketMQ's published rates.
rates = sorted({int(s[4:]) for (s, _) in runs if s and s.startswith("rate")})
if rates:
    print()
    print(f"Ack latency at a fixed rate ({rate_secs} s, same clients; ms):")
    print()
    head = " | ".join(f"{r:,} msgs/s: ack p50 / p99 / p99.9 | e2e p99" for r in rates)
    print(f"| broker / mode | {head} |")
    print("|---|" + "---|---|" * len(rates))
    for mode, title in MODES:
        cells = []
        for rt in rates:
            r = pick(f"rate{rt}", mode)
            if r is None:
                cells += ["fail", "fail"]
            else:
                cells += [f"{fmt(r.get('ack_p50_ms'))} / {fmt(r.get('ack_p99_ms'))} / {fmt(r.get('ack_p999_ms'))}",
                          fmt(r.get("latency_p99_ms"))]
            summary.setdefault(mode.replace("-", "_") + "_at_rate", {})[str(rt)] = None if r is None else {
                k: r.get(k) for k in ("acked_msgs_s", "ack_p50_ms", "ack_p99_ms", "ack_p999_ms", "latency_p99_ms")}
        print(f"| {title} | " + " | ".join(cells) + " |")

# RocketMQ's client shape.
if any(s == "rmq16" for (s, _) in runs):
    print()
    sub = next((r for (s, _), v in runs.items() if s == "rmq16" for r in v if "error" not in r), {})
    print(f"RocketMQ's benchmark shape: 16 publishers → 16 subscribers, one publish in flight per publisher "
          f"(`--inflight 1`, like 16 threads of synchronous sends), {sub.get('sent', 0):,} messages, 1 run:")
    print()
    print("| broker / mode | acked publish msgs/s | ack p50 ms | ack p99 ms | ack p99.9 ms | broker CPU s / 100k msgs | lost / dup | RocketMQ 4.5 (4C8G) TPS | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, title in MODES:
        r = pick("rmq16", mode)
        ref = REF.get(mode)
        if r is None:
            print(f"| {title} | fail | fail | fail | fail | fail | fail | {fmt(ref[1]) if ref else '-'} | - |")
            continue
        rate = r.get("acked_msgs_s") or 0
        print(f"| {title} | {fmt(rate)} | {fmt(r.get('ack_p50_ms'))} | {fmt(r.get('ack_p99_ms'))} | "
              f"{fmt(r.get('ack_p999_ms'))} | {fmt(r.get('broker_cpu_s_per_100k'))} | "
              f"{r.get('lost', 0):,} / {r.get('duplicates', 0):,} | "
              f"{f'{ref[1]:,} ({ref[0]})' if ref else '-'} | {f'{rate / ref[1]:.2f}' if ref else '-'} |")
        summary[mode.replace("-", "_") + "_rmq16"] = {k: r.get(k) for k in (
            "acked_msgs_s", "ack_p50_ms", "ack_p99_ms", "ack_p999_ms", "broker_cpu_s_per_100k", "store_flushes")}

bad = [r for r in rows if not clean(r) or r.get("build_seen") or r.get("broker_log_warnings")]
if bad:
    print()
    print("Runs with errors, losses, duplicates, refusals, broker log errors/warnings, a build running alongside, or a dead broker:")
    keys = ("error", "sent", "acked", "lost", "duplicates", "errors", "first_error", "drain_timed_out", "publishes_refused",
            "messages_dropped", "broker_log_errors", "broker_log_warnings", "build_seen", "broker_alive")
    for r in bad:
        print(f"- {r.get('scenario')} [{r['broker_mode']}] run {r.get('run')}: " + ", ".join(
            f"{k}={r[k]}" for k in keys if k in r and r[k] not in (None, 0, False, {}) and not (k == "broker_alive" and r[k] is True)))
if discarded:
    print()
    print(f"{discarded} run(s) were discarded and repeated because a cargo/rustc process ran during them "
          "(their logs: *.log.discarded-*).")
summary["discarded_runs"] = discarded
if quick:
    print()
    print("(--quick: smoke-test sizes; do not quote these figures)")
summary["pass"] = bool(verdicts) and all(verdicts)
summary["results"] = sys.argv[1]
with open(summary_path, "w") as f:
    f.write(json.dumps(summary, separators=(",", ":")))
PY
cat "$WORK/table.md"
echo
echo "results: $RESULTS"
echo "SUMMARY $(cat "$WORK/summary.json")"
