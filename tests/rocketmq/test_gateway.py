"""The RocketMQ gateway against the official C++ client (PyPI rocketmq 0.4.4,
librocketmq.so) and, for the cross-protocol cases, paho-mqtt 2.x.

Every test starts its own ``ferrymq standalone`` (see conftest.py). Waits poll
with deadlines; no sleep stands in for a condition."""

from __future__ import annotations

import socket
import struct
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from rocketmq.client import Message, Producer, PullConsumer, PushConsumer, RecvMessage
from rocketmq.ffi import _CConsumeStatus

from conftest import Broker, uid, wait_for


def producer(b: Broker, group: str | None = None) -> Producer:
    p = Producer(group or uid("PG"))
    p.set_namesrv_addr(b.namesrv)
    p.start()
    return p


def message(topic: str, body: str, tags: str | None = None, keys: str | None = None, **props) -> Message:
    m = Message(topic)
    m.set_body(body)
    if tags:
        m.set_tags(tags)
    if keys:
        m.set_keys(keys)
    for k, v in props.items():
        m.set_property(k, v)
    return m


class Sink:
    """Collects what a push consumer's callback sees (it runs on client threads)."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        self.lock = threading.Lock()
        self.got: list[dict] = []
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.attempts: dict[str, int] = {}

    def __call__(self, msg):
        body = msg.body.decode()
        with self.lock:
            n = self.attempts.get(body, 0)
            self.attempts[body] = n + 1
            self.got.append({
                "topic": msg.topic, "tags": msg.tags.decode() if msg.tags else "",
                "body": body, "queue_id": msg.queue_id, "queue_offset": msg.queue_offset,
                "reconsume": msg.reconsume_times, "id": msg.id,
                "mqtt_topic": (msg.get_property("MQTT_TOPIC") or b"").decode(),
                "region": (msg.get_property("region") or b"").decode(),
                "at": time.monotonic(),
            })
        if self.always_fail or n < self.fail_first:
            raise RuntimeError("consumer asks for a retry")

    def bodies(self) -> list[str]:
        with self.lock:
            return [g["body"] for g in self.got]


def push_consumer(b: Broker, group: str, topic: str, sink: Sink, expression: str = "*",
                  orderly: bool = False) -> PushConsumer:
    c = PushConsumer(group, orderly=orderly)
    c.set_namesrv_addr(b.namesrv)
    c.subscribe(topic, sink, expression)
    # rocketmq 0.4.4's wrapper re-raises the callback's exception inside a
    # `finally`, so ctypes returns 0 (CONSUME_SUCCESS) and a failed message is
    # never retried. Register a callback that returns the status itself.
    c._unregister_callback()

    def raw(consumer, msg):
        try:
            sink(RecvMessage(msg))
        except Exception:
            return _CConsumeStatus.RECONSUME_LATER.value
        return _CConsumeStatus.CONSUME_SUCCESS.value

    c._register_callback(raw)
    c.start()
    return c


def test_send_sync_then_push_consume_with_tag_filter(broker):
    """A group created after the sends reads the backlog (queues start at 0,
    as the Java broker answers QUERY_CONSUMER_OFFSET), and the server filters
    by tag: only `paid` arrives."""
    topic = uid("orders")
    p = producer(broker)
    sent = {}
    for i in range(20):
        tag = "paid" if i % 2 == 0 else "refunded"
        r = p.send_sync(message(topic, f"m{i}", tags=tag, keys=f"k{i}"))
        assert int(r.status) == 0, r
        sent[f"m{i}"] = tag
    sink = Sink()
    c = push_consumer(broker, uid("CG"), topic, sink, "paid")
    try:
        want = {b for b, t in sent.items() if t == "paid"}
        wait_for(lambda: want <= set(sink.bodies()), 30, "the paid messages")
        time.sleep(0.5)  # a short quiet period: anything wrongly delivered shows up
        assert set(sink.bodies()) == want
        assert all(g["tags"] == "paid" for g in sink.got)
    finally:
        c.shutdown()
        p.shutdown()


def test_oneway_orderly_and_batch_sends_are_stored(broker):
    topic = uid("mixed")
    p = producer(broker)
    try:
        p.send_oneway(message(topic, "oneway-0"))
        for i in range(6):
            r = p.send_orderly(message(topic, f"ordered-{i}"), 42)
            assert int(r.status) == 0
        batch = [message(topic, f"batch-{i}") for i in range(5)]
        r = p.send_batch(batch)
        assert int(r.status) == 0
        sink = Sink()
        c = push_consumer(broker, uid("CG"), topic, sink)
        want = {"oneway-0"} | {f"ordered-{i}" for i in range(6)} | {f"batch-{i}" for i in range(5)}
        wait_for(lambda: want <= set(sink.bodies()), 30, "every message")
        ordered = [g for g in sink.got if g["body"].startswith("ordered-")]
        assert len({g["queue_id"] for g in ordered}) == 1, "one sharding key, one queue"
        offsets = [g["queue_offset"] for g in sorted(ordered, key=lambda g: g["body"])]
        assert offsets == sorted(offsets), "queue order is send order"
        c.shutdown()
    finally:
        p.shutdown()


def test_pull_consumer_reads_every_queue(broker):
    topic = uid("pulled")
    p = producer(broker)
    for i in range(12):
        p.send_sync(message(topic, f"p{i}", tags="t"))
    p.shutdown()
    c = PullConsumer(uid("PULL"))
    c.set_namesrv_addr(broker.namesrv)
    c.start()
    try:
        # A pull does not wait: messages become visible once the store's
        # dispatcher has indexed them (as in RocketMQ), so pull until all are there.
        got: list[str] = []
        want = {f"p{i}" for i in range(12)}
        wait_for(lambda: got.extend(m.body.decode() for m in c.pull(topic, "t")) or want <= set(got),
                 20, "every message pulled")
        assert sorted(got) == sorted(want), "a message was pulled twice"
    finally:
        c.shutdown()


def test_mqtt_publish_reaches_rocketmq_consumer(broker):
    """A device publishes on `sensors/temp/room1`: a RocketMQ consumer of topic
    `sensors`, tag `temp`, gets it with the full topic in MQTT_TOPIC and the
    MQTT 5 user property as a message property."""
    first = uid("sensors")
    sink = Sink()
    # The topic exists once a device published to it; create it first so the
    # consumer's route lookup succeeds at once.
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(*broker.mqtt)
    pub.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("region", "eu")]
    info = pub.publish(f"{first}/temp/room1", b"21.5", qos=1, properties=props)
    info.wait_for_publish(10)
    c = push_consumer(broker, uid("CG"), first, sink, "temp")
    try:
        wait_for(lambda: sink.bodies() == ["21.5"], 30, "the device's reading")
        g = sink.got[0]
        assert g["tags"] == "temp"
        assert g["mqtt_topic"] == f"{first}/temp/room1"
        assert g["region"] == "eu"
    finally:
        c.shutdown()
        pub.loop_stop()
        pub.disconnect()


def test_rocketmq_send_reaches_mqtt_subscribers(broker):
    """Sent with tag `fire` on topic T: an MQTT subscriber of `T/fire` gets it;
    with MQTT_TOPIC set, subscribers of that topic get it; RocketMQ properties
    arrive as MQTT 5 user properties."""
    t = uid("alerts")
    got: list[tuple[str, bytes, dict]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: got.append(
        (m.topic, m.payload, dict(getattr(m.properties, "UserProperty", []) or [])))
    sub.connect(*broker.mqtt)
    sub.loop_start()
    sub.subscribe([(f"{t}/fire", 1), (f"{t}/fire/#", 1)])
    assert subscribed.wait(10)
    p = producer(broker)
    try:
        p.send_sync(message(t, "smoke", tags="fire", region="eu"))
        p.send_sync(message(t, "floor", tags="fire", MQTT_TOPIC=f"{t}/fire/floor2"))
        # The C++ client zlib-compresses bodies from 4 KiB: devices get them inflated.
        big = "".join(chr(65 + i % 26) for i in range(10_000))
        p.send_sync(message(t, big, tags="fire", MQTT_TOPIC=f"{t}/fire/big"))
        wait_for(lambda: len(got) >= 3, 20, "all three messages over MQTT")
        by_topic = {g[0]: g for g in got}
        assert by_topic[f"{t}/fire/big"][1] == big.encode()
        assert by_topic[f"{t}/fire"][1] == b"smoke"
        assert by_topic[f"{t}/fire"][2].get("region") == "eu"
        assert by_topic[f"{t}/fire/floor2"][1] == b"floor"
    finally:
        p.shutdown()
        sub.loop_stop()
        sub.disconnect()


def test_retry_redelivers_through_the_retry_topic(broker):
    """A callback that fails once gets the message again (reconsume 1) via
    %RETRY%<group> after the first retry delay level."""
    topic = uid("retry")
    p = producer(broker)
    p.send_sync(message(topic, "again"))
    sink = Sink(fail_first=1)
    c = push_consumer(broker, uid("CG"), topic, sink)
    try:
        wait_for(lambda: len(sink.got) >= 2, 30, "the redelivery")
        assert [g["reconsume"] for g in sink.got[:2]] == [0, 1]
        assert sink.got[1]["body"] == "again"
    finally:
        c.shutdown()
        p.shutdown()


def test_dead_letter_after_max_reconsume_times():
    """A message that always fails is retried with growing delays (delay level
    3 + times consumed before; this broker's levels grow from 1 s to 3 s so the test
    stays short) and goes to %DLQ%<group> after 16 retries, then is not
    redelivered."""
    b = Broker({"FERRYMQ_GATEWAY__MESSAGEDELAYLEVEL":
                "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 2s 2s 2s 2s 3s 3s"})
    b.start()
    try:
        topic = uid("dlq")
        group = uid("CG")
        p = producer(b)
        p.send_sync(message(topic, "poison"))
        sink = Sink(always_fail=True)
        c = push_consumer(b, group, topic, sink)
        try:
            wait_for(lambda: len(sink.got) >= 17, 90, "17 delivery attempts", interval=0.2)
        finally:
            c.shutdown()
        assert [g["reconsume"] for g in sink.got[:17]] == list(range(17))
        at = [g["at"] for g in sink.got[:17]]
        gaps = [y - x for x, y in zip(at, at[1:])]
        # Retry k waits level 3 + (k - 1): retries 1-9 use levels 3-11 (1 s),
        # retries 15-16 levels 17-18 (3 s).
        early, late = gaps[:9], gaps[14:]
        assert max(early) < 1.9, f"retries 1-9 waited {early}"
        assert min(late) >= 2.7, f"retries 15-16 waited {late} (levels 17-18 are 3 s)"
        dl = PullConsumer(uid("PULL"))
        dl.set_namesrv_addr(b.namesrv)
        dl.start()
        try:
            msgs = []
            wait_for(lambda: msgs.extend(m.body.decode() for m in dl.pull(f"%DLQ%{group}")) or msgs,
                     20, "the dead letter")
            assert msgs == ["poison"]
        finally:
            dl.shutdown()
            p.shutdown()
    finally:
        b.close()


def test_delay_level_holds_the_message(broker):
    """DELAY level 3 (1 s in this broker): the message is not delivered before
    its delay, and is delivered after it."""
    topic = uid("delayed")
    p = producer(broker)
    sink = Sink()
    # Create the topic and let the consumer settle before the delayed send.
    p.send_sync(message(topic, "now"))
    c = push_consumer(broker, uid("CG"), topic, sink)
    try:
        wait_for(lambda: "now" in sink.bodies(), 30, "the immediate message")
        m = message(topic, "later")
        m.set_delay_time_level(3)
        sent_at = time.monotonic()
        p.send_sync(m)
        wait_for(lambda: "later" in sink.bodies(), 20, "the delayed message")
        later = next(g for g in sink.got if g["body"] == "later")
        assert later["at"] - sent_at >= 0.9, "delivered before its delay"
    finally:
        c.shutdown()
        p.shutdown()


def test_orderly_consumer_locks_queues_and_reads_in_order(broker):
    topic = uid("orderly")
    p = producer(broker)
    for i in range(30):
        p.send_orderly(message(topic, f"{i}"), i % 3)
    sink = Sink()
    c = push_consumer(broker, uid("CG"), topic, sink, orderly=True)
    try:
        wait_for(lambda: len(set(sink.bodies())) >= 30, 40, "every message")
        per_key = {}
        for g in sink.got:
            per_key.setdefault(int(g["body"]) % 3, []).append(int(g["body"]))
        for k, seq in per_key.items():
            assert seq == sorted(seq), f"key {k} out of order: {seq}"
    finally:
        c.shutdown()
        p.shutdown()


def test_consumer_group_resumes_after_restart(broker):
    """Offsets committed by a group survive a broker restart: the group's next
    consumer starts where the last one stopped, not at the beginning."""
    topic = uid("resume")
    group = uid("CG")
    p = producer(broker)
    for i in range(5):
        p.send_sync(message(topic, f"old{i}"))
    sink = Sink()
    c = push_consumer(broker, group, topic, sink)
    wait_for(lambda: len(set(sink.bodies())) >= 5, 30, "the first five")
    c.shutdown()  # persists the group's offsets
    p.shutdown()
    broker.stop()
    broker.start()
    p = producer(broker)
    for i in range(5):
        p.send_sync(message(topic, f"new{i}"))
    sink2 = Sink()
    c2 = push_consumer(broker, group, topic, sink2)
    try:
        wait_for(lambda: {f"new{i}" for i in range(5)} <= set(sink2.bodies()), 30, "the new five")
        time.sleep(0.5)
        again = [b for b in sink2.bodies() if b.startswith("old")]
        assert not again, f"restarted group re-read consumed messages: {again}"
    finally:
        c2.shutdown()
        p.shutdown()


def test_malformed_frames_close_only_that_connection(broker):
    """Garbage and oversize frames get the connection closed; the gateway keeps
    serving real clients."""
    host, port = broker.addr["broker"].rsplit(":", 1)
    for junk in [b"\x00\x00\x00\x02xx", struct.pack(">ii", 64, 60) + b"{not json" + b" " * 51,
                 struct.pack(">i", 0x7FFFFFF0)]:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(junk)
        s.settimeout(5)
        try:
            assert s.recv(1024) == b"", "expected the gateway to close the connection"
        except ConnectionResetError:
            pass
        s.close()
    p = producer(broker)
    try:
        assert int(p.send_sync(message(uid("still"), "ok")).status) == 0
    finally:
        p.shutdown()


def test_two_consumers_of_one_group_share_the_queues(broker):
    """Clustering: two push consumers of one group split the topic's queues
    (the gateway tells them when the group changes); each message is consumed
    once by one of them."""
    topic = uid("shared")
    group = uid("CG")
    p = producer(broker)
    p.send_sync(message(topic, "creates-the-topic"))
    a, b = Sink(), Sink()
    ca = PushConsumer(group)
    ca.set_namesrv_addr(broker.namesrv)
    ca.set_instance_name("a")
    cb = PushConsumer(group)
    cb.set_namesrv_addr(broker.namesrv)
    cb.set_instance_name("b")
    for c, s in ((ca, a), (cb, b)):
        c.subscribe(topic, s)
        c.start()
    try:
        # Warm-ups until both consumers got one: then both own queues (the
        # rebalance after the second joined is done) and the counted run starts.
        n = 0
        deadline = time.monotonic() + 30
        while not (any(x.startswith("w") for x in a.bodies()) and any(x.startswith("w") for x in b.bodies())):
            assert time.monotonic() < deadline, "the group never split its queues"
            p.send_sync(message(topic, f"w{n}"))
            n += 1
            time.sleep(0.05)
        for i in range(80):
            p.send_sync(message(topic, f"s{i}"))
        want = {f"s{i}" for i in range(80)}
        wait_for(lambda: want <= set(a.bodies()) | set(b.bodies()), 30, "every message")
        got_a = set(a.bodies()) & want
        got_b = set(b.bodies()) & want
        assert got_a and got_b, f"one consumer got nothing: {len(got_a)} / {len(got_b)}"
        assert not got_a & got_b, f"consumed twice: {sorted(got_a & got_b)[:5]}"
    finally:
        ca.shutdown()
        cb.shutdown()
        p.shutdown()


def test_broadcasting_consumers_each_get_everything(broker):
    from rocketmq.client import MessageModel  # noqa: PLC0415 (only this test needs it)

    topic = uid("bcast")
    group = uid("CG")
    p = producer(broker)
    p.send_sync(message(topic, "creates-the-topic"))
    sinks = [Sink(), Sink()]
    cs = []
    for i, s in enumerate(sinks):
        c = PushConsumer(group, message_model=MessageModel.BROADCASTING)
        c.set_namesrv_addr(broker.namesrv)
        c.set_instance_name(f"b{i}")
        c.subscribe(topic, s)
        c.start()
        cs.append(c)
    try:
        # Warm-ups until every consumer got one: each has its start offset.
        n = 0
        deadline = time.monotonic() + 30
        while not all(any(x.startswith("w") for x in s.bodies()) for s in sinks):
            assert time.monotonic() < deadline, "a broadcasting consumer never started"
            p.send_sync(message(topic, f"w{n}"))
            n += 1
            time.sleep(0.05)
        for i in range(20):
            p.send_sync(message(topic, f"b{i}"))
        want = {f"b{i}" for i in range(20)}
        for s in sinks:
            wait_for(lambda s=s: want <= set(s.bodies()), 30, "every message on every consumer")
    finally:
        for c in cs:
            c.shutdown()
        p.shutdown()


def test_tag_expression_with_alternatives(broker):
    topic = uid("tags")
    p = producer(broker)
    for i, tag in enumerate(["TagA", "TagB", "TagC", "TagA", "TagB", "TagC"]):
        p.send_sync(message(topic, f"{tag}-{i}", tags=tag))
    sink = Sink()
    c = push_consumer(broker, uid("CG"), topic, sink, "TagA || TagB")
    try:
        wait_for(lambda: len(sink.got) >= 4, 30, "the TagA and TagB messages")
        time.sleep(0.5)
        assert sorted(sink.bodies()) == ["TagA-0", "TagA-3", "TagB-1", "TagB-4"]
    finally:
        c.shutdown()
        p.shutdown()


def test_orderly_per_key_over_ten_thousand_messages(broker):
    """10,000 messages sent orderly over 8 sharding keys, consumed by an
    orderly consumer: every key's messages arrive in send order."""
    topic = uid("order10k")
    p = producer(broker)
    n, keys = 10_000, 8
    for i in range(n):
        r = p.send_orderly(message(topic, f"{i % keys}:{i}"), i % keys)
        assert int(r.status) == 0
    sink = Sink()
    c = push_consumer(broker, uid("CG"), topic, sink, orderly=True)
    try:
        wait_for(lambda: len(set(sink.bodies())) >= n, 120, "all 10,000 messages", interval=0.2)
        per_key: dict[int, list[int]] = {}
        for b in sink.bodies():
            k, i = b.split(":")
            per_key.setdefault(int(k), []).append(int(i))
        for k, seq in per_key.items():
            first = []
            seen = set()
            for i in seq:
                if i not in seen:
                    seen.add(i)
                    first.append(i)
            assert first == sorted(first), f"key {k}: out of order"
    finally:
        c.shutdown()
        p.shutdown()


def test_default_delay_level_3_waits_ten_seconds():
    """With RocketMQ's default levels, level 3 is 10 s: the message arrives no
    earlier than 10 s after it was sent."""
    b = Broker({"FERRYMQ_GATEWAY__MESSAGEDELAYLEVEL": "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"})
    try:
        b.start()
        topic = uid("delay10")
        p = producer(b)
        sink = Sink()
        p.send_sync(message(topic, "now"))
        c = push_consumer(b, uid("CG"), topic, sink)
        wait_for(lambda: "now" in sink.bodies(), 30, "the immediate message")
        m = message(topic, "in-ten")
        m.set_delay_time_level(3)
        sent = time.monotonic()
        p.send_sync(m)
        wait_for(lambda: "in-ten" in sink.bodies(), 30, "the delayed message")
        at = next(g["at"] for g in sink.got if g["body"] == "in-ten")
        assert at - sent >= 9.9, f"arrived after {at - sent:.1f} s"
        c.shutdown()
        p.shutdown()
    finally:
        b.close()
