"""PUBLISH / SUBSCRIBE behaviour: QoS flows, offline queues, retained
messages, subscription options, shared subscriptions, $SYS, v5 properties."""

import time

import pytest

from mqtt_helpers import (
    PROTOCOLS, PUBCOMP, PUBREC, TIMEOUT, V5, PacketTypes, RawConn, SubscribeOptions,
    ack_packet, assert_rejected, p_u16, props, publish_packet, topic, uid,
)


# ---------------------------------------------------------------------------
# QoS
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_qos_end_to_end(clients, protocol, pub_qos, sub_qos):
    """Delivered once, at min(published QoS, granted QoS) [MQTT-3.8.4-6 (3.1.1),
    MQTT-3.8.4-8 (5)], payload intact, RETAIN 0."""
    t = topic("qos")
    sub = clients(protocol).connect()
    codes = sub.subscribe(t, sub_qos)
    assert codes == [sub_qos], f"granted {codes}"
    pub = clients(protocol).connect()
    payload = bytes(range(256)) * 4
    pub.publish(t, payload, qos=pub_qos)
    m = sub.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (t, payload, min(pub_qos, sub_qos), False)
    assert sub.fence() == [], "message delivered more than once"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_resubscribe_replaces_subscription(clients, protocol):
    """SUBSCRIBE to a filter the session already has replaces it (new QoS), it
    does not add a second one [MQTT-3.8.4-3]."""
    t = topic("resub")
    c = clients(protocol).connect()
    c.subscribe(t, 0)
    c.subscribe(t, 2)
    c.publish(t, b"once", qos=2)
    got = c.fence()
    assert [(m.payload, m.qos) for m in got] == [(b"once", 2)]


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_offline_queue_delivered_on_reconnect(clients, protocol, qos):
    """Messages for a persistent session published while it is offline are
    delivered, in order, when it resumes [MQTT-3.1.2-5 (3.1.1), 3.1.2.4 / 4.1 (5)]."""
    cid, t = uid(), topic("offline")
    kw = {"clean": False, "session_expiry": 300 if protocol == V5 else None}
    a = clients(protocol, cid, **kw).connect()
    a.subscribe(t, 2)
    a.disconnect()

    pub = clients(protocol).connect()
    payloads = [f"m{i}".encode() for i in range(5)]
    for p in payloads:
        pub.publish(t, p, qos=qos)

    b = clients(protocol, cid, **kw).connect()
    assert b.session_present is True
    got = b.get_n(len(payloads))
    assert [m.payload for m in got] == payloads
    assert all(m.qos == qos and m.topic == t for m in got)
    assert b.fence() == []
    b.disconnect()
    # Delivered (and acknowledged) messages are not delivered again.
    c = clients(protocol, cid, **kw).connect()
    assert c.session_present is True
    assert c.fence() == [], "acknowledged messages redelivered"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unacked_publish_resent_with_dup_on_reconnect(clients, protocol):
    """An unacknowledged QoS 1 PUBLISH is resent with DUP 1 when the session
    resumes [MQTT-4.4.0-1]."""
    cid, t = uid(), topic("resend")
    kw = {"clean": False, "session_expiry": 300 if protocol == V5 else None}
    a = clients(protocol, cid, manual_ack=True, **kw).connect()
    a.subscribe(t, 1)
    pub = clients(protocol).connect()
    pub.publish(t, b"once", qos=1)
    first = a.get()
    assert (first.payload, first.dup) == (b"once", False)
    a.drop()  # no PUBACK

    b = clients(protocol, cid, **kw).connect()
    assert b.session_present is True
    again = b.get()
    assert again.payload == b"once"
    assert again.dup is True, "resent PUBLISH without DUP"
    assert b.fence() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_qos2_duplicate_publish_delivered_once(clients, broker, protocol):
    """A QoS 2 PUBLISH resent (DUP) before PUBREL is not delivered twice
    [MQTT-4.3.3-9 (3.1.1) / MQTT-4.3.3-10 (5)]."""
    t = topic("qos2dup")
    sub = clients(protocol).connect()
    sub.subscribe(t, 2)
    conn = RawConn(broker)
    try:
        conn.connect(protocol)
        pkt = publish_packet(protocol, t, b"exactly-once", qos=2, pkid=7)
        conn.send(pkt)
        assert conn.expect(PUBREC).body[:2] == b"\x00\x07"
        dup = bytearray(publish_packet(protocol, t, b"exactly-once", qos=2, pkid=7, dup=True))
        conn.send(bytes(dup))
        assert conn.expect(PUBREC).body[:2] == b"\x00\x07"
        conn.send(ack_packet(protocol, 6, 7))  # PUBREL
        assert conn.expect(PUBCOMP).body[:2] == b"\x00\x07"
    finally:
        conn.close()
    assert sub.get().payload == b"exactly-once"
    assert sub.fence() == [], "QoS 2 message delivered twice"


# ---------------------------------------------------------------------------
# Retained messages
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_set_replace_clear(clients, protocol):
    """Retained message is stored, replaced by the next one, cleared by an
    empty retained payload [MQTT-3.3.1-5..7, -10, -11 (3.1.1)]."""
    t = topic("retained")
    pub = clients(protocol).connect()
    pub.publish(t, b"v1", qos=1, retain=True)
    s1 = clients(protocol).connect()
    s1.subscribe(t, 1)
    m = s1.get()
    assert (m.payload, m.retain) == (b"v1", True)

    pub.publish(t, b"v2", qos=1, retain=True)
    live = s1.get()
    assert live.payload == b"v2"
    s2 = clients(protocol).connect()
    s2.subscribe(t, 1)
    m = s2.get()
    assert (m.payload, m.retain) == (b"v2", True)
    assert s2.fence() == [], "more than one retained message for a topic"

    # Clearing: existing subscribers receive the empty message as normal.
    pub.publish(t, b"", qos=1, retain=True)
    cleared = s1.get()
    assert cleared.payload == b"" and cleared.topic == t
    s3 = clients(protocol).connect()
    s3.subscribe(t, 1)
    assert s3.fence() == [], "retained message not cleared by an empty payload"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_matches_wildcards(clients, protocol):
    """A new wildcard subscription receives every matching retained message."""
    base = topic("retained-wild")
    pub = clients(protocol).connect()
    for leaf in ("a", "b/c"):
        pub.publish(f"{base}/{leaf}", leaf.encode(), qos=1, retain=True)
    pub.publish(f"{base}/nope", b"not retained", qos=1)
    s = clients(protocol).connect()
    s.subscribe(f"{base}/#", 1)
    got = s.fence()
    assert sorted((m.topic, m.payload, m.retain) for m in got) == [
        (f"{base}/a", b"a", True), (f"{base}/b/c", b"b/c", True)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_live_delivery_clears_retain_flag(clients, protocol):
    """A retained PUBLISH forwarded to an existing subscription carries RETAIN 0
    [MQTT-3.3.1-9 (3.1.1)]; in v5 that is Retain As Published 0 [MQTT-3.3.1-12]."""
    t = topic("retain-live")
    s = clients(protocol).connect()
    s.subscribe(t, 1)
    pub = clients(protocol).connect()
    pub.publish(t, b"x", qos=1, retain=True)
    m = s.get()
    assert (m.payload, m.retain) == (b"x", False)
    pub.publish(t, b"", qos=1, retain=True)


def test_retain_as_published_v5(clients):
    """Retain As Published 1 keeps the publisher's RETAIN flag on live delivery
    [MQTT-3.3.1-13]."""
    t = topic("rap")
    rap = clients(V5).connect()
    rap.subscribe(t, 1, rap=True)
    plain = clients(V5).connect()
    plain.subscribe(t, 1, rap=False)
    pub = clients(V5).connect()
    pub.publish(t, b"r", qos=1, retain=True)
    pub.publish(t, b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.get_n(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.get_n(2)] == [(b"r", False), (b"n", False)]
    pub.publish(t, b"", qos=1, retain=True)


def test_retain_handling_v5(clients):
    """Retain Handling 0: retained sent on every subscribe; 1: only when the
    subscription is new; 2: never [MQTT-3.3.1-9..11]."""
    t = topic("rh")
    pub = clients(V5).connect()
    pub.publish(t, b"kept", qos=1, retain=True)

    c = clients(V5).connect()
    c.subscribe(t, 1, rh=0)
    assert [m.payload for m in c.fence()] == [b"kept"]
    c.subscribe(t, 1, rh=0)
    assert [m.payload for m in c.fence()] == [b"kept"], "RH 0: not resent on re-subscribe"

    d = clients(V5).connect()
    d.subscribe(t, 1, rh=1)
    assert [m.payload for m in d.fence()] == [b"kept"], "RH 1: not sent for a new subscription"
    d.subscribe(t, 1, rh=1)
    assert d.fence() == [], "RH 1: sent again for an existing subscription"

    e = clients(V5).connect()
    e.subscribe(t, 1, rh=2)
    assert e.fence() == [], "RH 2: retained message sent"
    pub.publish(t, b"", qos=1, retain=True)


# ---------------------------------------------------------------------------
# Subscription options and identifiers (v5)
# ---------------------------------------------------------------------------

def test_no_local_v5(clients):
    """No Local 1: the client does not receive its own publications
    [MQTT-3.8.3-3]; others still do."""
    t = topic("nolocal")
    a = clients(V5).connect()
    a.subscribe(t, 1, no_local=True)
    b = clients(V5).connect()
    b.subscribe(t, 1)
    a.publish(t, b"from-a", qos=1)
    assert b.get().payload == b"from-a"
    assert a.fence() == [], "No Local subscriber received its own message"
    b.publish(t, b"from-b", qos=1)
    assert a.get().payload == b"from-b"


def test_no_local_on_shared_subscription_is_protocol_error_v5(clients):
    """No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4]."""
    c = clients(V5).connect()
    c.c.subscribe(f"$share/g/{topic('nl')}", options=SubscribeOptions(qos=1, noLocal=True))
    assert c.disconnected.wait(TIMEOUT), "connection not closed"
    if c.disconnect_from_server:
        assert c.disconnect_reason == 0x82, f"reason 0x{c.disconnect_reason:02x}"


def test_subscription_identifiers_v5(clients):
    """Subscription Identifiers of every matching subscription are sent in the
    PUBLISH [MQTT-3.8.2-?, 3.3.4: MQTT-3.3.4-3..5]; none when the subscription
    had none."""
    base = topic("subid")
    c = clients(V5).connect()
    c.subscribe(f"{base}/+", 1, sub_id=7)
    c.subscribe(f"{base}/#", 1, sub_id=268435455)
    c.subscribe(f"{base}/x/none", 1)
    pub = clients(V5).connect()
    pub.publish(f"{base}/a", b"both", qos=1)
    # One copy with both ids, or one copy per subscription, are both allowed.
    got = c.fence()
    ids = sorted(i for m in got for i in (m.prop("SubscriptionIdentifier") or []))
    assert {m.payload for m in got} == {b"both"}
    assert ids == [7, 268435455], f"subscription identifiers {ids}"

    pub.publish(f"{base}/x/none", b"one", qos=1)
    got = c.fence()
    ids = sorted(i for m in got for i in (m.prop("SubscriptionIdentifier") or []))
    assert ids == [268435455]


# ---------------------------------------------------------------------------
# Shared subscriptions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_subscription_round_robin(clients, protocol):
    """$share/{group}/{filter}: each message goes to exactly one member, spread
    round robin (4.8.2); a plain subscriber still gets every message."""
    t = topic("shared")
    group = f"$share/g{uid()}/{t}"
    m1 = clients(protocol).connect()
    m2 = clients(protocol).connect()
    m1.subscribe(group, 1)
    m2.subscribe(group, 1)
    plain = clients(protocol).connect()
    plain.subscribe(t, 1)
    pub = clients(protocol).connect()
    n = 10
    for i in range(n):
        pub.publish(t, str(i).encode(), qos=1)
    assert len(plain.get_n(n)) == n
    # Round robin over two connected members: half each (a member that gets
    # fewer fails get_n with the count it did get).
    got1 = [m.payload for m in m1.get_n(n // 2)]
    got2 = [m.payload for m in m2.get_n(n // 2)]
    assert m1.fence() == [] and m2.fence() == [], "uneven split or duplicate delivery"
    assert sorted(got1 + got2, key=int) == [str(i).encode() for i in range(n)], (
        f"member 1 {got1}, member 2 {got2}")


# ---------------------------------------------------------------------------
# UNSUBSCRIBE, invalid filters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unsubscribe(clients, protocol):
    """UNSUBACK for every UNSUBSCRIBE; v5 reason codes 0x00 / 0x11 No subscription
    existed (3.11.3); no delivery afterwards [MQTT-3.10.4-2]."""
    t, other = topic("unsub"), topic("unsub-never")
    c = clients(protocol).connect()
    c.subscribe(t, 1)
    codes = c.unsubscribe([t, other])
    if protocol == V5:
        assert codes == [0x00, 0x11], f"UNSUBACK {[hex(x) for x in codes]}"
    else:
        assert codes == []
    c.publish(t, b"after", qos=1)
    assert c.fence() == [], "delivered after UNSUBSCRIBE"
    if protocol == V5:
        assert c.unsubscribe(t) == [0x11], "second UNSUBSCRIBE of the same filter"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscribe_invalid_filters(clients, protocol):
    """Invalid filters get SUBACK 0x8F Topic Filter invalid (v5) / 0x80 Failure
    (3.1.1) per filter, valid ones in the same SUBSCRIBE are granted
    [MQTT-4.7.1-2/3, MQTT-3.8.4-?]."""
    c = clients(protocol).connect()
    c.allow_invalid_filters()
    base = topic("badfilter")
    bad = 0x8F if protocol == V5 else 0x80
    filters = [(f"{base}/ok", 1), (f"{base}/#/b", 1), (f"{base}/a+", 1), (f"{base}/#a", 0),
               ("$share/g+/x", 0)]
    codes = c.subscribe(filters, check=False)
    assert codes == [1, bad, bad, bad, bad], f"SUBACK {[hex(x) for x in codes]}"
    assert not c.disconnected.is_set()
    c.publish(f"{base}/ok", b"still-works", qos=1)
    assert c.get().payload == b"still-works"


# ---------------------------------------------------------------------------
# $SYS
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sys_topics(clients, protocol):
    """$SYS/ topics exist; `#` and `+/...` do not match topics starting with `$`
    [MQTT-4.7.2-1]."""
    wild = clients(protocol).connect()
    wild.subscribe([("#", 0), ("+/broker/#", 0), ("+/+/+", 0)])
    leaked = [m.topic for m in wild.fence() if m.topic.startswith("$")]
    assert leaked == [], f"wildcard matched $ topics (retained): {leaked[:5]}"

    sys = clients(protocol).connect()
    sys.subscribe("$SYS/#", 0)
    first = sys.get()
    assert first.topic.startswith("$SYS/"), first.topic
    # Wait for a live (not retained) $SYS update, then check the wildcard
    # subscriber got none of it. The update interval may be long: up to 15 s.
    deadline = time.monotonic() + 15
    while True:
        m = sys.get(timeout=max(deadline - time.monotonic(), 0.01))
        if not m.retain:
            break
    leaked = [m.topic for m in wild.fence() if m.topic.startswith("$")]
    assert leaked == [], f"wildcard matched live $SYS topics: {leaked[:5]}"


# ---------------------------------------------------------------------------
# v5 message properties
# ---------------------------------------------------------------------------

def test_message_expiry_v5(clients):
    """Message Expiry Interval: a message that expires while queued for an
    offline session is not delivered; one delivered later carries the remaining
    interval [MQTT-3.3.2-5, MQTT-3.3.2-6]; the same holds for retained messages."""
    cid, t, rt = uid(), topic("expiry"), topic("expiry-retained")
    a = clients(V5, cid, clean=False, session_expiry=300).connect()
    a.subscribe(t, 1)
    a.disconnect()
    pub = clients(V5).connect()
    pub.publish(t, b"short", qos=1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(t, b"long", qos=1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=10))
    pub.publish(t, b"forever", qos=1)
    pub.publish(rt, b"r-short", qos=1, retain=True,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(f"{rt}/long", b"r-long", qos=1, retain=True,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=10))
    t0 = time.monotonic()
    time.sleep(2.2)

    b = clients(V5, cid, clean=False, session_expiry=300).connect()
    assert b.session_present is True
    got = b.fence()
    assert [m.payload for m in got] == [b"long", b"forever"], "expired message delivered"
    waited = time.monotonic() - t0
    left = got[0].prop("MessageExpiryInterval")
    assert left is not None and 10 - waited - 1.5 <= left <= 10 - 2, (
        f"expiry interval {left} after {waited:.1f} s of 10 s")
    assert got[1].prop("MessageExpiryInterval") is None

    s = clients(V5).connect()
    s.subscribe(f"{rt}/#", 1)
    s.subscribe(rt, 1)
    got = s.fence()
    assert [m.payload for m in got] == [b"r-long"], "expired retained message delivered"
    left = got[0].prop("MessageExpiryInterval")
    assert left is not None and left <= 8, f"retained expiry interval {left} not decremented"
    pub.publish(f"{rt}/long", b"", qos=1, retain=True)


def test_publish_properties_forwarded_v5(clients):
    """User Properties (order kept, duplicates allowed), Content Type, Payload
    Format Indicator, Response Topic and Correlation Data reach the subscriber
    unchanged [MQTT-3.3.2-4, -15, -16, -17, -18, -20]."""
    t = topic("props")
    s = clients(V5).connect()
    s.subscribe(t, 1)
    pub = clients(V5).connect()
    user = [("k", "v1"), ("k", "v2"), ("émoji", "✓"), ("a", "")]
    p = props(PacketTypes.PUBLISH, ContentType="application/json; charset=utf-8",
              PayloadFormatIndicator=1, ResponseTopic=f"{t}/reply",
              CorrelationData=b"\x00\x01corr\xff")
    p.UserProperty = user
    pub.publish(t, '{"x": "ü"}'.encode(), qos=1, properties=p)
    m = s.get()
    assert m.payload == '{"x": "ü"}'.encode()
    assert m.prop("UserProperty") == user
    assert m.prop("ContentType") == "application/json; charset=utf-8"
    assert m.prop("PayloadFormatIndicator") == 1
    assert m.prop("ResponseTopic") == f"{t}/reply"
    assert m.prop("CorrelationData") == b"\x00\x01corr\xff"
    assert m.prop("TopicAlias") is None


def test_topic_alias_from_client_v5(clients):
    """A client may set a Topic Alias and then publish with an empty topic name;
    the alias can be remapped (3.3.2.3.4)."""
    t1, t2 = topic("alias1"), topic("alias2")
    s = clients(V5).connect()
    s.subscribe(t1, 1)
    s.subscribe(t2, 1)
    pub = clients(V5).connect()
    assert getattr(pub.connack_props, "TopicAliasMaximum", 0) >= 1, "server allows no aliases"
    alias = props(PacketTypes.PUBLISH, TopicAlias=1)
    pub.publish(t1, b"set", qos=1, properties=alias)
    pub.publish("", b"use", qos=1, properties=alias)
    pub.publish(t2, b"remap", qos=1, properties=alias)
    pub.publish("", b"use2", qos=0, properties=alias)
    got = [(m.topic, m.payload) for m in s.get_n(4)]
    assert got == [(t1, b"set"), (t1, b"use"), (t2, b"remap"), (t2, b"use2")]
    assert not pub.disconnected.is_set()


@pytest.mark.parametrize("case", ["above_maximum", "unmapped"])
def test_topic_alias_invalid_v5(clients, case):
    """Topic Alias above the server's Topic Alias Maximum → DISCONNECT 0x94
    [MQTT-3.3.2-9]; an empty topic with an alias that has no mapping → Protocol
    Error 0x82 (3.3.2.3.4)."""
    pub = clients(V5).connect()
    maximum = getattr(pub.connack_props, "TopicAliasMaximum", 0)
    if case == "above_maximum":
        pub.publish(topic("alias"), b"x", qos=1, wait=False,
                    properties=props(PacketTypes.PUBLISH, TopicAlias=maximum + 1))
        allowed = {0x94}
    else:
        pub.publish("", b"x", qos=1, wait=False,
                    properties=props(PacketTypes.PUBLISH, TopicAlias=1))
        allowed = {0x82}
    assert pub.disconnected.wait(TIMEOUT), "connection not closed"
    assert pub.disconnect_from_server, "no DISCONNECT packet from the server"
    assert pub.disconnect_reason in allowed, f"reason 0x{pub.disconnect_reason:02x}"


def test_topic_alias_zero_v5(broker):
    """Topic Alias 0 is not permitted [MQTT-3.3.2-8] (paho refuses to send it,
    so raw socket): the connection is closed, v5 DISCONNECT 0x94 Topic Alias
    invalid (0x82 Protocol Error also accepted)."""
    conn = RawConn(broker)
    try:
        conn.connect(V5)
        conn.send(publish_packet(V5, topic("alias0"), b"x", qos=1, pkid=2,
                                 properties=p_u16(0x23, 0)))
        assert_rejected(conn, V5, {0x94, 0x82})
    finally:
        conn.close()


def test_receive_maximum_respected_v5(clients):
    """The server never has more unacknowledged QoS 1 PUBLISH packets towards a
    client than the client's Receive Maximum [MQTT-3.3.4-9]."""
    t = topic("recvmax")
    s = clients(V5, manual_ack=True, connect_props={"ReceiveMaximum": 2}).connect()
    s.subscribe(t, 1)
    pub = clients(V5).connect()
    n = 6
    for i in range(n):
        pub.publish(t, str(i).encode(), qos=1)
    unacked = s.get_n(2)
    s.assert_quiet(0.5)
    seen = list(unacked)
    while len(seen) < n:
        oldest = unacked.pop(0)
        s.c.ack(oldest.mid, 1)
        nxt = s.get()
        unacked.append(nxt)
        seen.append(nxt)
        s.assert_quiet(0.25)
    assert [m.payload for m in seen] == [str(i).encode() for i in range(n)]
    for m in unacked:
        s.c.ack(m.mid, 1)


def test_client_maximum_packet_size_respected_v5(clients):
    """The server does not send a PUBLISH larger than the client's Maximum Packet
    Size; it discards it [MQTT-3.1.2-24, MQTT-3.1.2-25]."""
    t = topic("maxpkt")
    s = clients(V5, connect_props={"MaximumPacketSize": 256}).connect()
    s.subscribe(t, 1)
    pub = clients(V5).connect()
    pub.publish(t, b"x" * 1000, qos=1)
    pub.publish(t, b"small", qos=1)
    got = s.fence()
    assert [m.payload for m in got] == [b"small"]
    assert not s.disconnected.is_set()
