#!/usr/bin/env python3
"""RocketMQ client load for scripts/bench-gateway.sh: the official C++ client
(PyPI ``rocketmq==0.4.4``, whose wheel bundles ``librocketmq.so``) against any
RocketMQ name server: ferrymq's gateway or a reference broker.

    bench_gateway_client.py --namesrv HOST:PORT [--threads 16] [--size 1024]
                            [--messages N] [--duration S] [--topic T]
                            [--producers per-thread|shared|K] [--consume-timeout S]
                            [--label NAME]

Phases:
  1. warm-up: start the producer(s), send one message (this creates the topic
     on a broker that creates topics on first use; retried for up to 30 s while
     the route is not there yet), then wait 1 s.
  2. sync send: --threads Python threads call ``send_sync`` with --size byte
     bodies until --messages sends were made or --duration seconds passed
     (whichever comes first; 0 means no bound). Every call is timed
     (time.perf_counter around the call): msgs/s = successful sends / wall time
     of the phase; p50/p99/p99.9/max over the successful sends. ctypes releases
     the GIL during the foreign call, so the threads' sends overlap. With
     ``--producers per-thread`` (default) each thread has its own producer
     (own instance name, so its own client factory and connection); ``shared``
     makes them share one, K shares K producers round-robin. Sharing works but
     the bundled C++ client then fails some sends on its own: its transport-table
     lock gives up under contention ("GetTransport of:... get timed_mutex
     timeout" in its log, reported as "No route info of this topic").
  3. push consume: a push consumer in a new group subscribes to the topic and
     reads the backlog; msgs/s = distinct phase-2 messages received / time from
     ``start()`` to the last of them (also reported from the first message on).
     Bounded by --consume-timeout. With --lat-threads K, a phase 2b between 2
     and 3 repeats phase 2 with K threads and --lat-messages sends on another
     topic (fields t<K>_*), not consumed.

Each body starts with a 12-digit sequence number, so losses and duplicates are
counted. The result is one line ``RESULT {json}`` on stdout; progress goes to
stderr. The C++ client writes its own log under $HOME/logs/rocketmq-cpp.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
import uuid


def log(msg: str) -> None:
    print(f"[client {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def probe_namesrv(addr: str) -> dict:
    """Asks the name server for a route with a GET_ROUTEINFO frame shaped as the
    C++ client writes it (JSON header without serializeTypeCurrentRPC, string
    extFields, trailing newline), then with serializeTypeCurrentRPC added, and
    tells which got an answer: a server that needs the field drops the first."""
    import socket
    import struct

    host, port = addr.rsplit(":", 1)
    cpp = (b'{"code":105,"extFields":{"AccessKey":"","OnsChannel":"ALIYUN","Signature":"","topic":"TBW102"},'
           b'"flag":0,"language":"CPP","opaque":1,"remark":"","version":63}\n')
    java = cpp.replace(b',"version":63}', b',"serializeTypeCurrentRPC":"JSON","version":63}')
    out = {}
    for name, h in (("cpp_header", cpp), ("with_serializeTypeCurrentRPC", java)):
        try:
            with socket.create_connection((host, int(port)), timeout=3) as s:
                s.settimeout(3)
                s.sendall(struct.pack(">II", 4 + len(h), len(h)) + h)
                d = s.recv(65536)
                out[name] = "answered" if d else "connection closed without an answer"
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namesrv", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--messages", type=int, default=100000, help="sends in phase 2 (0: no bound)")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds of phase 2 (0: no bound)")
    ap.add_argument("--topic", default="")
    ap.add_argument("--producers", default="per-thread",
                    help="shared (one producer), per-thread, or a number of producers the threads share round-robin")
    ap.add_argument("--consume-timeout", type=float, default=120.0)
    ap.add_argument("--consumer-threads", type=int, default=0, help="push consumer threads (0: client default)")
    ap.add_argument("--no-consume", action="store_true")
    ap.add_argument("--lat-threads", type=int, default=0,
                    help="after phase 2, a second send phase with this many threads on another topic (0: none)")
    ap.add_argument("--lat-messages", type=int, default=20000, help="sends in that phase")
    ap.add_argument("--warmup-timeout", type=float, default=30.0, help="seconds to retry the first send")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if args.messages <= 0 and args.duration <= 0:
        ap.error("--messages or --duration must bound phase 2")
    if args.size < 16:
        ap.error("--size must be at least 16")

    from rocketmq.client import Message, Producer, PushConsumer
    from rocketmq.ffi import dll

    run_id = uuid.uuid4().hex[:8]
    topic = args.topic or f"BenchGw_{run_id}"
    result: dict = {
        "label": args.label, "namesrv": args.namesrv, "topic": topic, "threads": args.threads,
        "size": args.size, "producers": args.producers, "messages_requested": args.messages,
        "duration_requested_s": args.duration,
    }

    # --- producers ------------------------------------------------------------------
    if args.producers == "shared":
        n_prod = 1
    elif args.producers == "per-thread":
        n_prod = args.threads
    elif args.producers.isdigit() and 1 <= int(args.producers) <= args.threads:
        n_prod = int(args.producers)
    else:
        ap.error("--producers must be shared, per-thread or a number from 1 to --threads")
    producers = []
    for i in range(n_prod):
        p = Producer(f"PG_bench_{run_id}")
        if n_prod > 1:
            dll.SetProducerInstanceName(p._handle, f"bench_{run_id}_{i}".encode())
        p.set_namesrv_addr(args.namesrv)
        p.start()
        producers.append(p)

    # --- phase 1: warm-up -------------------------------------------------------------
    pad = b"x" * (args.size - 12)
    t0 = time.monotonic()
    warm_err = None
    while True:
        m = Message(topic)
        m.set_body(b"warmup000000" + pad)
        try:
            r = producers[0].send_sync(m)
            warm_err = None
            break
        except Exception as e:  # route not there yet, topic being created
            warm_err = f"{type(e).__name__}: {str(e)[:300]}"
            if time.monotonic() - t0 > args.warmup_timeout:
                break
            time.sleep(0.5)
    if warm_err:
        result["error"] = f"warm-up send failed for {args.warmup_timeout:g} s: {warm_err}"
        result["probe"] = probe_namesrv(args.namesrv)
        print("RESULT " + json.dumps(result), flush=True)
        sys.stdout.flush()
        os._exit(1)
    result["warmup_s"] = round(time.monotonic() - t0, 3)
    log(f"{args.label}: topic {topic} ready after {result['warmup_s']} s (first send: {r.status.name})")
    # Every other producer fetches the route now, not during the measured phase.
    for p in producers[1:]:
        m = Message(topic)
        m.set_body(b"warmup000000" + pad)
        p.send_sync(m)
    warm_count = len(producers)
    time.sleep(1.0)

    # --- phase 2: sync sends ------------------------------------------------------------
    def send_phase(to_topic: str, nthreads: int, messages: int, duration: float, key: str) -> tuple[int, int]:
        """nthreads threads of send_sync until `messages` sends or `duration` s; the
        figures go to result under `key`_*. Returns (successful sends, sequence
        numbers handed out)."""
        seq = itertools.count()
        limit = messages if messages > 0 else None
        lats: list[list[float]] = [[] for _ in range(nthreads)]
        errors: list[int] = [0] * nthreads
        err_lats: list[float] = []
        not_ok: list[int] = [0] * nthreads
        first_error: list[str] = []
        start_evt = threading.Event()
        stop_at = [0.0]

        def sender(k: int) -> None:
            p = producers[k % len(producers)]
            mine = lats[k]
            clock = time.perf_counter
            start_evt.wait()
            end = stop_at[0]
            while True:
                i = next(seq)
                if limit is not None and i >= limit:
                    return
                if duration > 0 and clock() >= end:
                    return
                m = Message(to_topic)
                m.set_body(b"%012d" % i + pad)
                t = clock()
                try:
                    r = p.send_sync(m)
                except Exception as e:
                    errors[k] += 1
                    err_lats.append(clock() - t)
                    if not first_error:
                        first_error.append(f"{type(e).__name__}: {str(e)[:300]}")
                    continue
                mine.append(clock() - t)
                if r.status != 0:
                    not_ok[k] += 1

        threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(nthreads)]
        for t in threads:
            t.start()
        cpu0 = time.process_time()
        t_send0 = time.perf_counter()
        stop_at[0] = t_send0 + duration if duration > 0 else 0.0
        start_evt.set()
        for t in threads:
            t.join()
        send_wall = time.perf_counter() - t_send0
        send_cpu = time.process_time() - cpu0
        all_lats = sorted(itertools.chain.from_iterable(lats))
        ok = len(all_lats)
        f = {
            "threads": nthreads,
            "sent_ok": ok,
            "send_errors": sum(errors),
            "send_status_not_ok": sum(not_ok),
            "first_send_error": first_error[0] if first_error else None,
            "send_error_max_ms": ms(max(err_lats)) if err_lats else None,
            "send_wall_s": round(send_wall, 3),
            "send_msgs_s": round(ok / send_wall, 1) if send_wall > 0 else None,
            "send_mib_s": round(ok * args.size / send_wall / 1048576, 2) if send_wall > 0 else None,
            "send_p50_ms": ms(pct(all_lats, 50)),
            "send_p90_ms": ms(pct(all_lats, 90)),
            "send_p99_ms": ms(pct(all_lats, 99)),
            "send_p999_ms": ms(pct(all_lats, 99.9)),
            "send_max_ms": ms(all_lats[-1] if all_lats else None),
            "send_mean_ms": ms(sum(all_lats) / ok if ok else None),
            "client_cpu_s_send": round(send_cpu, 2),
        }
        if key == "main":
            result.update(f)
        else:
            result.update({f"{key}_{k}": v for k, v in f.items()})
        log(f"{args.label}: {nthreads} threads sent {ok:,} ok ({sum(errors)} errors, {sum(not_ok)} not SEND_OK) in "
            f"{send_wall:.2f} s = {f['send_msgs_s']} msgs/s; p50 {f['send_p50_ms']} ms, p99 {f['send_p99_ms']} ms, "
            f"max {f['send_max_ms']} ms; client CPU {send_cpu:.1f} s")
        return ok, next(seq)

    ok, expected_hi = send_phase(topic, args.threads, args.messages, args.duration, "main")

    # --- phase 2b (optional): fewer threads, another topic ---------------------------------
    if args.lat_threads > 0:
        lat_topic = topic + "_lat"
        m = Message(lat_topic)
        m.set_body(b"warmup000000" + pad)
        for _ in range(60):
            try:
                producers[0].send_sync(m)
                break
            except Exception:
                time.sleep(0.5)
        for p in producers[1:args.lat_threads]:
            m = Message(lat_topic)
            m.set_body(b"warmup000000" + pad)
            p.send_sync(m)
        time.sleep(0.5)
        send_phase(lat_topic, args.lat_threads, args.lat_messages, args.duration, f"t{args.lat_threads}")

    # --- phase 3: push consume ------------------------------------------------------------
    if not args.no_consume and ok > 0:
        seen: set[bytes] = set()
        total = itertools.count()
        warm_seen = [0]
        first_last = [0.0, 0.0]
        lock = threading.Lock()
        target = ok  # distinct phase-2 messages to wait for

        def on_message(msg) -> None:
            b = msg.body[:12]
            now = time.perf_counter()
            next(total)
            if b == b"warmup000000":
                warm_seen[0] += 1
                return
            with lock:
                if b not in seen:
                    seen.add(b)
                    if not first_last[0]:
                        first_last[0] = now
                    first_last[1] = now
            # Returning normally is CONSUME_SUCCESS (0.4.4's wrapper mishandles the rest).

        c = PushConsumer(f"CG_bench_{run_id}")
        c.set_namesrv_addr(args.namesrv)
        if args.consumer_threads > 0:
            dll.SetPushConsumerThreadCount(c._handle, args.consumer_threads)
        c.subscribe(topic, on_message)
        cpu0 = time.process_time()
        t_c0 = time.perf_counter()
        c.start()
        deadline = t_c0 + args.consume_timeout
        last_report = t_c0
        while True:
            with lock:
                n = len(seen)
            now = time.perf_counter()
            if n >= target or now >= deadline:
                break
            if now - last_report >= 5:
                log(f"{args.label}: consumed {n:,}/{target:,} after {now - t_c0:.1f} s")
                last_report = now
            time.sleep(0.01)
        time.sleep(0.2)  # late duplicates
        cons_cpu = time.process_time() - cpu0
        with lock:
            n = len(seen)
            first_t, last_t = first_last
        delivered = next(total)
        timed_out = n < target
        span = (last_t - t_c0) if last_t else None
        span_first = (last_t - first_t) if last_t and last_t > first_t else None
        bad = sum(1 for s in seen if not s.isdigit() or int(s) >= expected_hi)
        result.update({
            "consumed_distinct": n,
            "consume_expected": target,
            "consume_delivered_total": delivered,
            "consume_duplicates": max(0, delivered - n - warm_seen[0]),
            "consume_warmup_seen": warm_seen[0],
            "consume_warmup_sent": warm_count,
            "consume_unknown_bodies": bad,
            "consume_timed_out": timed_out,
            "consume_first_msg_s": round(first_t - t_c0, 3) if first_t else None,
            "consume_wall_s": round(span, 3) if span else None,
            "consume_msgs_s": round(n / span, 1) if span else None,
            "consume_msgs_s_from_first": round(n / span_first, 1) if span_first else None,
            "client_cpu_s_consume": round(cons_cpu, 2),
        })
        log(f"{args.label}: consumed {n:,}/{target:,} distinct ({delivered:,} deliveries) in "
            f"{result['consume_wall_s']} s from start() = {result['consume_msgs_s']} msgs/s "
            f"(first message after {result['consume_first_msg_s']} s){'; TIMED OUT' if timed_out else ''}")
        if n < target and ok - n > 0:
            result["consume_lost"] = target - n

    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The C++ client's shutdown can block for seconds (or hang on a dead broker);
    # the figures are out, so leave without it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
