"""Durability of `ferrymq standalone`: what the broker acknowledged survives a
crash.

The contract under test: a QoS 1 PUBACK with a success reason code is sent only
once the message is in the store at the configured durability, so a `kill -9`
(SIGKILL, no shutdown code runs) loses nothing that was acknowledged; a
persistent session (v5, Clean Start 0, Session Expiry 3600) keeps its
subscriptions and backlog, and retained messages keep their last state. When the
disk fills, publishers are first slowed (counted by
`ferrymq_mqtt_publish_throttled_total`), then refused with PUBACK 0x97 (Quota
exceeded), never told "success" for a message that was not stored, and accepted
again once retention has freed space.

Every test starts its own broker on its own temporary data dir (so these tests
are skipped when FERRYMQ_MQTT_ADDR points at an external broker), kills it with
SIGKILL by the PID it started, and restarts it on the same data dir; each start
binds new ports, read from the banner every time.

Set FERRYMQ_DURABILITY_SEED to replay the random kill moment of a failed run
(the seed is printed).
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict, namedtuple
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import TIMEOUT, V311, V5, Client, Msg, code, uid

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FERRYMQ_MQTT_ADDR")),
    reason="kills and restarts its own broker process",
)

Addr = namedtuple("Addr", "host port")

READY_TIMEOUT = 30.0
MQTT_LINE = re.compile(r"^\s*mqtt\s*:\s*(\S+):(\d+)\s*$")
METRICS_LINE = re.compile(r"^\s*metrics\s*:\s*(\S+)\s*$")
THROTTLED_LINE = re.compile(r"^ferrymq_mqtt_publish_throttled_total(?:\{[^}]*\})?\s+(\S+)")
QUOTA_EXCEEDED = 0x97
# A v5 persistent session: resumed, not replaced, and kept for an hour offline.
PERSISTENT = dict(clean=False, session_expiry=3600)


def _binary() -> str:
    explicit = os.environ.get("FERRYMQ_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ferrymq/target"))
    return str(target / "debug" / "ferrymq")


def _seq_of(m: Msg) -> tuple[str, int]:
    """(topic named in the payload, seq) of a `TOPIC:SEQ` payload; the payload's
    topic must be the one it was delivered on."""
    t, _, s = m.payload.decode().rpartition(":")
    assert t == m.topic, f"payload {m.payload!r} delivered on {m.topic!r}"
    return t, int(s)


def _receive_until(c: Client, sink, done, deadline: float) -> bool:
    """Feed every message `c` receives to `sink` until `done()` holds (True) or
    the deadline passes (False)."""
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            m = c.messages.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        sink(m)
    return True


def _drain(c: Client) -> list[Msg]:
    out = []
    while True:
        try:
            out.append(c.messages.get_nowait())
        except queue.Empty:
            return out


def _sample(xs, n=10) -> list:
    return sorted(xs)[:n]


class Ferry:
    """One data dir, and the broker processes started on it one after another.

    A context manager: on exit every client is closed and every process this
    object started is killed (by its own PID); on failure the broker's stderr
    (all runs, one file) is printed so pytest shows it; the temp dir is removed.
    """

    def __init__(self, name: str, settings: dict[str, str]):
        self.tmp = tempfile.mkdtemp(prefix=f"ferrymq-durability-{name}-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "broker.stderr.log")
        # Inherited store settings would change what is being tested.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMQ_STORE__")}
        self.env.setdefault("RUST_LOG", "info")
        self.env.update(settings)
        self.procs: list[subprocess.Popen] = []
        self.proc: subprocess.Popen | None = None
        self.mqtt: Addr | None = None
        self.metrics_url: str | None = None
        self._closers = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            for close in reversed(self._closers):
                try:
                    close()
                except Exception:
                    pass
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
            if exc_type is not None:
                print(f"--- broker stderr ({self.log_path}), last 8000 chars ---")
                print(Path(self.log_path).read_text(errors="replace")[-8000:])
            if not os.environ.get("FERRYMQ_KEEP_TEST_DIRS"):
                shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def start(self) -> Addr:
        """Start `ferrymq standalone` on the data dir; wait for `ferrymq ready`
        and return the (new) MQTT address."""
        binary = _binary()
        if not os.path.isfile(binary):
            pytest.fail(f"no ferrymq binary at {binary} (build it or set FERRYMQ_BIN)")
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {len(self.procs) + 1} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [binary, "standalone", "--data-dir", self.data_dir,
                 "--mqtt", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                 "--namesrv", "127.0.0.1:0", "--broker", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                cwd=self.tmp, env=self.env,
            )
        self.procs.append(proc)
        self.proc = proc
        lines: queue.Queue[str | None] = queue.Queue()

        def pump():
            # Keep draining stdout so the broker never blocks on a full pipe.
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, name="ferrymq-stdout", daemon=True).start()
        addr = metrics = None
        seen = []
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                line = "<timeout>"
            if line is None or line == "<timeout>":
                raise AssertionError(
                    f"broker not ready ({'exited with ' + str(proc.poll()) if line is None else 'timeout'})"
                    f"; stdout so far: {seen}")
            seen.append(line)
            if m := MQTT_LINE.match(line):
                host = m.group(1).split("://", 1)[-1].strip("[]")
                addr = Addr("127.0.0.1" if host in ("0.0.0.0", "::") else host, int(m.group(2)))
            if m := METRICS_LINE.match(line):
                metrics = m.group(1)
            if line.strip() == "ferrymq ready":
                break
        assert addr is not None and metrics is not None, f"banner without mqtt/metrics: {seen}"
        self.mqtt, self.metrics_url = addr, metrics
        return addr

    def kill9(self) -> None:
        """SIGKILL the running broker (by the PID started here) and reap it."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.kill()
        self.proc.wait(timeout=10)

    def client(self, addr: Addr, client_id=None, **kw) -> Client:
        c = Client(addr, V5, client_id, **kw)
        self._closers.append(c.close)
        return c

    def publisher(self, addr: Addr, window: int, cond=None) -> "Publisher":
        p = Publisher(addr, window, cond)
        self._closers.append(p.close)
        return p

    def throttled_total(self) -> float:
        """Sum of `ferrymq_mqtt_publish_throttled_total` over its label sets."""
        assert self.metrics_url is not None
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        return sum(float(m.group(1)) for line in text.splitlines()
                   if (m := THROTTLED_LINE.match(line)))

    def throttled_for_message(self) -> str:
        """`throttled_total()` for a failure message: never raises."""
        try:
            return str(self.throttled_total())
        except Exception as e:  # the message matters more than the figure
            return f"<metrics unreadable: {e}>"


class Publisher:
    """A v5 QoS 1 publisher keeping up to `window` messages awaiting PUBACK.

    `acks[seq]` is the PUBACK reason code of the message published with `seq`.
    paho reports acks by packet id (mid), and the ack may beat `publish()`
    returning the mid, so early acks are parked until the mapping is known.
    Several publishers may share one Condition so a test can wait on their sum.
    """

    def __init__(self, addr: Addr, window: int, cond: threading.Condition | None = None):
        self.window = window
        self.cond = cond or threading.Condition()
        self.acks: dict[int, int] = {}
        self.first_refusal_seq: int | None = None
        self.max_ok = -1  # highest seq acked with success
        self.outstanding = 0
        self.next_seq = 0  # used by pump(): every seq below it was handed to paho
        self.stopped = False
        self._mid_seq: dict[int, int] = {}
        self._early: dict[int, int] = {}
        self.connected = threading.Event()
        self.lost = threading.Event()
        self.connack: int | None = None
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="pub-" + uid(), protocol=V5,
            reconnect_on_failure=False,
        )
        self.c.max_inflight_messages_set(window)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_publish = self._on_publish
        self.c.connect(addr.host, addr.port, 60, clean_start=True)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "publisher: no CONNACK"
        assert self.connack == 0, f"publisher: CONNACK 0x{self.connack:02x}"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = code(reason_code)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.lost.set()
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            seq = self._mid_seq.pop(mid, None)
            if seq is None:
                self._early[mid] = code(reason_code)
            else:
                self._record(seq, code(reason_code))

    def _record(self, seq: int, rc: int) -> None:
        self.acks[seq] = rc
        if rc >= 0x80 and self.first_refusal_seq is None:
            self.first_refusal_seq = seq
        if rc < 0x80:
            self.max_ok = max(self.max_ok, seq)
        self.outstanding -= 1
        self.cond.notify_all()

    def publish(self, t: str, seq: int, payload: bytes, timeout: float | None = 0.5) -> bool:
        """Hand one QoS 1 message to paho once the window has room. False when
        it was not sent (window still full after `timeout`, stopped, or the
        connection is lost: check `lost`)."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.outstanding < self.window or self.stopped or self.lost.is_set(),
                timeout,
            )
            if self.stopped or self.lost.is_set() or self.outstanding >= self.window:
                return False
            self.outstanding += 1
        info = self.c.publish(t, payload, qos=1)
        with self.cond:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.outstanding -= 1
                self.cond.notify_all()
                return False
            rc = self._early.pop(info.mid, None)
            if rc is None:
                self._mid_seq[info.mid] = seq
            else:
                self._record(seq, rc)
        return True

    def pump(self, t: str) -> None:
        """Publish `t:0`, `t:1`, ... as fast as the window allows until stopped
        or disconnected (a thread body)."""
        while not (self.stopped or self.lost.is_set()):
            if self.publish(t, self.next_seq, f"{t}:{self.next_seq}".encode()):
                self.next_seq += 1

    def wait_all(self, timeout: float) -> bool:
        """Wait until nothing awaits a PUBACK (False: still some, or connection lost)."""
        with self.cond:
            self.cond.wait_for(lambda: self.outstanding == 0 or self.lost.is_set(), timeout)
            return self.outstanding == 0

    def succeeded(self) -> set[int]:
        with self.cond:
            return {s for s, rc in self.acks.items() if rc < 0x80}

    def reason_counts(self) -> Counter:
        with self.cond:
            return Counter(f"0x{rc:02x}" for rc in self.acks.values())

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def close(self) -> None:
        self.stop()
        try:
            if self.c.is_connected():
                self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _order_violations(streams: list[list[tuple[str, int]]]) -> list[str]:
    """Per-topic order within each connection's stream, duplicates aside: a
    seq lower than one already received on the same connection must itself
    have been received before (it is a redelivery, not a message overtaken)."""
    seen: dict[str, set[int]] = defaultdict(set)
    bad = []
    for n, stream in enumerate(streams, 1):
        high: dict[str, int] = {}
        for t, s in stream:
            if s < high.get(t, -1) and s not in seen[t]:
                bad.append(f"connection {n}: {t}:{s} first received after {t}:{high[t]}")
            high[t] = max(high.get(t, -1), s)
            seen[t].add(s)
    return bad


def test_kill9_during_qos1_load_sync_flush():
    """SYNC_FLUSH, three publishers (one per topic, 100 QoS 1 in flight each)
    and a persistent subscriber; the broker is SIGKILLed at a random moment
    after 1,000-3,000 acks. After a restart the resumed session must deliver
    every message whose PUBACK reported success: a PUBACK is a promise that the
    message is on disk, and a session's backlog is part of that promise.
    Duplicates are allowed (QoS 1 is at least once) and counted; per-topic order
    must hold within each connection."""
    seed = int(os.environ.get("FERRYMQ_DURABILITY_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    target = rng.randint(1000, 3000)
    print(f"seed {seed}: kill after {target} acks")
    topics = ["dur/a", "dur/b", "dur/c"]
    with Ferry("load", {"FERRYMQ_STORE__FLUSHDISKTYPE": "SYNC_FLUSH"}) as ferry:
        addr = ferry.start()
        sub_id = "dur-sub-" + uid()
        sub1 = ferry.client(addr, sub_id, **PERSISTENT).connect()
        sub1.subscribe("dur/#", 1)

        progress = threading.Condition()
        pubs = [ferry.publisher(addr, 100, progress) for _ in topics]
        threads = [threading.Thread(target=p.pump, args=(t,), daemon=True)
                   for p, t in zip(pubs, topics)]
        for th in threads:
            th.start()
        with progress:
            reached = progress.wait_for(
                lambda: sum(len(p.acks) for p in pubs) >= target
                or any(p.lost.is_set() for p in pubs),
                timeout=60,
            )
            at_target = sum(len(p.acks) for p in pubs)
        assert not any(p.lost.is_set() for p in pubs), "a publisher was disconnected before the kill"
        assert reached, f"only {at_target} of {target} acks within 60 s"
        time.sleep(rng.uniform(0, 0.05))  # the random kill moment
        ferry.kill9()

        # Acks the broker wrote before dying may still be in the sockets:
        # let paho read to EOF before taking the final account.
        for p in pubs:
            p.stop()
            assert p.lost.wait(10), "publisher did not notice the broker's death"
            p.c.loop_stop()
        for th in threads:
            th.join(10)
        acked = {t: p.succeeded() for t, p in zip(topics, pubs)}
        published = {t: p.next_seq for t, p in zip(topics, pubs)}
        print(f"acks at target {at_target}; success acks per topic "
              f"{ {t: len(s) for t, s in acked.items()} }; handed to paho {published}; "
              f"reason codes {[dict(p.reason_counts()) for p in pubs]}")
        assert sub1.disconnected.wait(10), "subscriber did not notice the broker's death"
        sub1._stop_loop()
        stream1 = [_seq_of(m) for m in _drain(sub1)]

        addr = ferry.start()
        sub2 = ferry.client(addr, sub_id, **PERSISTENT).connect()
        assert sub2.session_present, "persistent session lost across kill -9 (session_present=0)"
        stream2: list[tuple[str, int]] = []
        received: dict[str, set[int]] = defaultdict(set)
        for t, s in stream1:
            received[t].add(s)

        def sink(m):
            t, s = _seq_of(m)
            stream2.append((t, s))
            received[t].add(s)

        _receive_until(sub2, sink, lambda: all(acked[t] <= received[t] for t in topics),
                       time.monotonic() + 30)

        lost = {t: acked[t] - received[t] for t in topics}
        total = len(stream1) + len(stream2)
        distinct = sum(len(v) for v in received.values())
        print(f"received {len(stream1)} before and {len(stream2)} after the restart; "
              f"{total - distinct} duplicates")
        assert not any(lost.values()), (
            "acknowledged messages lost: "
            + ", ".join(f"{t}: {len(v)} (e.g. {_sample(v)})" for t, v in lost.items() if v))
        unknown = {t: {s for s in received[t] if s >= published[t]} for t in received}
        assert not any(unknown.values()), f"received seqs never published: {unknown}"
        bad = _order_violations([stream1, stream2])
        assert not bad, f"{len(bad)} out-of-order deliveries, e.g. {bad[:10]}"


def test_parked_session_survives_kill9():
    """A persistent session parked offline collects 10,000 acknowledged QoS 1
    messages; after kill -9 and a restart the client resumes it
    (session_present=1) and gets all of them, in publish order (redeliveries of
    earlier ones are tolerated): the backlog and the subscription that routed
    it must both have been stored before the PUBACKs."""
    n = 10_000
    with Ferry("parked", {}) as ferry:
        addr = ferry.start()
        sub_id = "park-sub-" + uid()
        sub = ferry.client(addr, sub_id, **PERSISTENT).connect()
        sub.subscribe("park/#", 1)
        sub.disconnect()

        pub = ferry.publisher(addr, 100)
        deadline = time.monotonic() + 60
        for seq in range(n):
            while not pub.publish("park/x", seq, f"park/x:{seq}".encode()):
                assert not pub.lost.is_set(), f"publisher disconnected at seq {seq}"
                assert time.monotonic() < deadline, f"window stuck at seq {seq}"
        assert pub.wait_all(max(deadline - time.monotonic(), 5)), (
            f"{pub.outstanding} PUBACKs missing")
        failed = {s: rc for s, rc in pub.acks.items() if rc >= 0x80}
        assert not failed, f"{len(failed)} publishes refused: {pub.reason_counts()}"
        assert len(pub.acks) == n

        ferry.kill9()
        addr = ferry.start()
        sub = ferry.client(addr, sub_id, **PERSISTENT).connect()
        assert sub.session_present, "parked session lost across kill -9 (session_present=0)"
        firsts: list[int] = []
        seen: set[int] = set()
        total = 0

        def sink(m):
            nonlocal total
            _, s = _seq_of(m)
            total += 1
            if s not in seen:
                seen.add(s)
                firsts.append(s)

        _receive_until(sub, sink, lambda: len(seen) >= n, time.monotonic() + 40)
        print(f"received {total} messages, {total - len(seen)} duplicates")
        missing = set(range(n)) - seen
        assert not missing, f"{len(missing)} of {n} acknowledged messages lost, e.g. {_sample(missing)}"
        wrong = next((i for i, s in enumerate(firsts) if s != i), None)
        assert wrong is None, (
            f"backlog out of order: first arrivals {firsts[max(wrong - 3, 0):wrong + 5]} "
            f"around position {wrong}")


def test_parked_backlog_larger_than_memory_queue_arrives_in_order():
    """A persistent session's in-memory queue is only a cache of its stored
    queue: with room for 50 messages, 2,000 published while the client is
    offline (no restart) still all arrive, in order, read back from the store,
    and new messages published after the reconnect come after the backlog."""
    n = 2_000
    with Ferry("overflow", {"FERRYMQ_MQTT__MAX_QUEUED_MESSAGES": "50"}) as ferry:
        addr = ferry.start()
        sub_id = "overflow-sub-" + uid()
        sub = ferry.client(addr, sub_id, **PERSISTENT).connect()
        sub.subscribe("ovf/#", 1)
        sub.disconnect()
        pub = ferry.publisher(addr, 100)
        deadline = time.monotonic() + 60
        for seq in range(n):
            while not pub.publish("ovf/x", seq, f"ovf/x:{seq}".encode()):
                assert time.monotonic() < deadline, f"window stuck at seq {seq}"
        assert pub.wait_all(30), f"{pub.outstanding} PUBACKs missing"
        sub = ferry.client(addr, sub_id, **PERSISTENT).connect()
        assert sub.session_present
        for seq in range(n, n + 100):
            while not pub.publish("ovf/x", seq, f"ovf/x:{seq}".encode()):
                assert time.monotonic() < deadline, f"window stuck at seq {seq}"
        order: list[int] = []
        seen: set[int] = set()

        def sink(m):
            _, q = _seq_of(m)
            if q not in seen:
                seen.add(q)
                order.append(q)

        _receive_until(sub, sink, lambda: len(seen) >= n + 100, time.monotonic() + 40)
        assert order == list(range(n + 100)), (
            f"out of order or missing: {len(seen)} distinct, first wrong at "
            f"{next((i for i, q in enumerate(order) if q != i), None)}")


def _retained(c: Client, expected_n: int) -> list[Msg]:
    """Messages arriving after a subscription: until `expected_n` came (at most
    10 s), then until 1 s passes without another one."""
    got: list[Msg] = []
    _receive_until(c, got.append, lambda: len(got) >= expected_n, time.monotonic() + 10)
    while True:
        try:
            got.append(c.messages.get(timeout=1.0))
        except queue.Empty:
            return got


def test_retained_survive_kill9():
    """Retained state is set, replaced and cleared (empty payload) with
    acknowledged QoS 1 publishes; after kill -9 and a restart a new subscriber
    sees exactly the last state: ret/1=v1, ret/2=v2, nothing for ret/3. Both the
    replacement and the deletion must be as durable as the first value, or a
    crash would resurrect stale or cleared retained messages."""
    expected = {"ret/1": b"v1", "ret/2": b"v2"}
    with Ferry("retained", {}) as ferry:
        addr = ferry.start()
        pub = ferry.client(addr).connect()
        for t, payload in [("ret/1", b"v1"), ("ret/2", b"v1"), ("ret/2", b"v2"),
                           ("ret/3", b"v3"), ("ret/3", b"")]:
            rc = pub.publish(t, payload, qos=1, retain=True)
            assert rc < 0x80, f"retained publish {t}={payload!r} refused: 0x{rc:02x}"

        # The same check before the crash, so a failure after it is known to
        # be about durability.
        before = ferry.client(addr).connect()
        before.subscribe("ret/#", 1)
        got = _retained(before, len(expected))
        assert {m.topic: m.payload for m in got} == expected and len(got) == len(expected), (
            f"retained state wrong even before the crash: {[(m.topic, m.payload) for m in got]}")

        ferry.kill9()
        addr = ferry.start()
        sub = ferry.client(addr).connect()
        sub.subscribe("ret/#", 1)
        got = _retained(sub, len(expected))
        pairs = [(m.topic, m.payload, m.retain) for m in got]
        assert len(got) == len(expected), f"expected {expected}, got {pairs}"
        assert {m.topic: m.payload for m in got} == expected, f"expected {expected}, got {pairs}"
        assert all(m.retain for m in got), f"retain flag missing: {pairs}"


def test_disk_limits_slow_then_refuse_then_resume():
    """A 6 MiB quota of 1 MiB CommitLog segments (soft limit 50 %, hard 75 %,
    retention every 5 s, slower than even a throttled publisher fills the
    quota) flooded with 1 KiB QoS 1 messages. The broker must
    (a) slow the publisher before refusing anything (throttle counter > 0 when
    the first refusal arrives), (b) refuse with PUBACK 0x97 once over the hard
    limit, (c) accept publishes again once retention has deleted the oldest
    segments, and (d) never report success for a message the online subscriber
    does not get: a success ack is a promise the message was stored."""
    settings = {
        "FERRYMQ_STORE__FLUSHDISKTYPE": "ASYNC_FLUSH",
        "FERRYMQ_STORE__MAPPEDFILESIZECOMMITLOG": "1048576",
        # The default maxMessageSize (4 MiB) does not fit a 1 MiB segment and
        # the store refuses such a config.
        "FERRYMQ_STORE__MAXMESSAGESIZE": "65536",
        "FERRYMQ_STORE__DISKQUOTABYTES": "6291456",
        "FERRYMQ_STORE__DISKMAXUSEDSPACERATIO": "0.5",
        "FERRYMQ_STORE__DISKHARDLIMITRATIO": "0.75",
        "FERRYMQ_STORE__CLEANRESOURCEINTERVAL": "5000",
        "FERRYMQ_STORE__FILERESERVEDTIME": "48",
    }
    with Ferry("disk", settings) as ferry:
        addr = ferry.start()
        sub = ferry.client(addr).connect()
        sub.subscribe("disk/#", 1)
        pub = ferry.publisher(addr, 50)

        def payload(seq: int) -> bytes:
            head = f"disk/x:{seq}".encode()
            return head + b"." * (1024 - len(head))

        received: set[int] = set()

        def sink(m):
            t, _, s = m.payload.rstrip(b".").decode().rpartition(":")
            assert t == m.topic == "disk/x", f"unexpected {m.topic!r} {m.payload[:32]!r}"
            received.add(int(s))

        seq = 0
        throttled_at_refusal = None
        resume_from = None  # first seq published after a refusal was seen
        resumed = None      # a seq >= resume_from acked with success
        refuse_deadline = time.monotonic() + 45
        resume_deadline = None
        while True:
            now = time.monotonic()
            if resume_from is None:
                assert now < refuse_deadline, (
                    f"no PUBACK 0x{QUOTA_EXCEEDED:02x} within 45 s ({seq} published, "
                    f"reason codes {dict(pub.reason_counts())}, throttled "
                    f"{ferry.throttled_for_message()})")
            else:
                if pub.max_ok >= resume_from:
                    resumed = pub.max_ok
                    break
                assert now < resume_deadline, (
                    f"publishes still refused 20 s after the first refusal "
                    f"(reason codes {dict(pub.reason_counts())})")
            assert not pub.lost.is_set(), (
                f"publisher disconnected at seq {seq} (reason codes {dict(pub.reason_counts())})")
            if pub.first_refusal_seq is not None and resume_from is None:
                throttled_at_refusal = ferry.throttled_total()
                resume_from = seq
                resume_deadline = time.monotonic() + 20
            if pub.publish("disk/x", seq, payload(seq), timeout=0.2):
                seq += 1
            for m in _drain(sub):
                sink(m)

        assert pub.wait_all(15), f"{pub.outstanding} PUBACKs missing after publishing stopped"
        counts = pub.reason_counts()
        print(f"published {seq}; reason codes {dict(counts)}; first refusal at seq "
              f"{pub.first_refusal_seq}; throttled_total at refusal {throttled_at_refusal}; "
              f"first success after it: seq {resumed}")
        # (a) slowed before refused.
        assert throttled_at_refusal and throttled_at_refusal > 0, (
            "publisher refused without having been throttled first "
            f"(ferrymq_mqtt_publish_throttled_total = {throttled_at_refusal})")
        # (b) the refusal is Quota exceeded, and nothing else failed.
        failures = {rc for rc in pub.acks.values() if rc >= 0x80}
        assert QUOTA_EXCEEDED in failures
        assert failures == {QUOTA_EXCEEDED}, f"unexpected failure reason codes {dict(counts)}"
        # (c) holds by the loop's exit. (d) every success reached the subscriber.
        ok = pub.succeeded()
        _receive_until(sub, sink, lambda: ok <= received, time.monotonic() + 30)
        missing = ok - received
        assert not missing, (
            f"{len(missing)} of {len(ok)} messages acked with success never delivered, "
            f"e.g. {_sample(missing)}")
        refused_delivered = {s for s, rc in pub.acks.items() if rc >= 0x80} & received
        print(f"{len(refused_delivered)} refused messages were delivered anyway")


def test_topic_config_persists_and_unknown_topics_are_refused():
    """Topics auto-created by publishes are persisted: after a restart with
    auto-create off (RocketMQ's autoCreateTopicEnable=false) the known topic
    still takes publishes and an unknown one is refused with the configured
    reason code (0x90 by default, 0x87 if asked). A topic with no RocketMQ
    name (empty first level) is refused with 0x90 even with auto-create on.
    A 3.1.1 publisher has no reason codes: its connection is closed instead
    of a PUBACK that would claim the message was stored."""
    with Ferry("topics", {}) as ferry:
        addr = ferry.start()
        pub = ferry.client(addr).connect()
        assert pub.publish("orders/paid", b"1", qos=1) < 0x80
        assert pub.publish("/leading/slash", b"1", qos=1) == 0x90

        ferry.kill9()
        ferry.env["FERRYMQ_BROKER__AUTOCREATETOPICENABLE"] = "false"
        addr = ferry.start()
        pub = ferry.client(addr).connect()
        assert pub.publish("orders/refunded", b"2", qos=1) < 0x80, "persisted topic lost"
        assert pub.publish("unknown/x", b"3", qos=1) == 0x90

        v3 = Client(addr, V311)
        ferry._closers.append(v3.close)
        v3.connect()
        v3.publish("unknown/y", b"4", qos=1, wait=False)
        assert v3.disconnected.wait(10), "3.1.1 publisher to an unknown topic was not disconnected"
        assert not v3._pubacks, f"3.1.1 publisher got a PUBACK for a refused message: {v3._pubacks}"

        ferry.kill9()
        ferry.env["FERRYMQ_BROKER__UNKNOWNTOPICREASONCODE"] = "135"
        addr = ferry.start()
        pub = ferry.client(addr).connect()
        assert pub.publish("unknown/x", b"5", qos=1) == 0x87
