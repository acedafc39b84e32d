"""Bad input over raw sockets. Each test ends with `healthy()`: the broker
still accepts connections and a client connected before the bad input (the
`bystander`) still works.

Error handling (v5 4.13, 3.1.1 4.8): on a Malformed Packet or Protocol Error
the server MUST close the connection; a v5 server MAY send DISCONNECT with the
reason code first (asserted when sent); a 3.1.1 server just closes."""

import struct
import threading

import pytest

from mqtt_helpers import (
    CONNACK, PROTOCOLS, PUBACK, V5, RawConn, assert_rejected, connect_packet, publish_packet,
    s, subscribe_packet, topic, uid, vbi,
)

MALFORMED, PROTOCOL_ERROR, TOPIC_NAME_INVALID, PACKET_TOO_LARGE = 0x81, 0x82, 0x90, 0x95


def _connected(broker, protocol) -> RawConn:
    conn = RawConn(broker)
    conn.connect(protocol)
    return conn


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reserved_packet_type_0(broker, healthy, protocol):
    """Packet type 0 is reserved/forbidden → Malformed Packet (2.1.2)."""
    conn = _connected(broker, protocol)
    try:
        conn.send(b"\x00\x00")
        assert_rejected(conn, protocol, {MALFORMED})
    finally:
        conn.close()
    healthy()


def _subscribe_flags_0(protocol):
    good = subscribe_packet(protocol, 1, [(topic("f"), 1)])
    return b"\x80" + good[1:]


BAD_FLAGS = {
    # PINGREQ with reserved flags 0001 [MQTT-2.2.2-2 / 2.1.3].
    "pingreq-flags": lambda p: b"\xc1\x00",
    # SUBSCRIBE with flags 0000 instead of 0010 [MQTT-3.8.1-1].
    "subscribe-flags": _subscribe_flags_0,
    # PUBREL with flags 0000 instead of 0010 [MQTT-3.6.1-1].
    "pubrel-flags": lambda p: b"\x60\x02\x00\x01",
    # PUBLISH with QoS 3 [MQTT-3.3.1-4].
    "publish-qos3": lambda p: b"\x36" + publish_packet(p, topic("q3"), b"x", qos=1)[1:],
    # PUBLISH QoS 0 with DUP 1 [MQTT-3.3.1-2].
    "publish-qos0-dup": lambda p: b"\x38" + publish_packet(p, topic("d"), b"x")[1:],
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_fixed_header_flags(broker, healthy, protocol, case):
    """Invalid fixed-header flags → Malformed Packet (2.1.3)."""
    conn = _connected(broker, protocol)
    try:
        conn.send(BAD_FLAGS[case](protocol))
        assert_rejected(conn, protocol, {MALFORMED})
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_remaining_length_five_bytes(broker, healthy, protocol):
    """A Remaining Length of more than 4 bytes → Malformed Packet (2.2.3 / 1.5.5)."""
    conn = _connected(broker, protocol)
    try:
        conn.send(b"\x30\xff\xff\xff\xff\x01")
        assert_rejected(conn, protocol, {MALFORMED})
    finally:
        conn.close()
    healthy()


BAD_UTF8 = {
    "ill-formed": b"a/\xff\xfe",
    "surrogate": b"a/\xed\xa0\x80",
    "overlong": b"a/\xc0\xaf",
    "nul": b"a/\x00b",
}


@pytest.mark.parametrize("case", list(BAD_UTF8))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invalid_utf8_topic_in_publish(broker, healthy, protocol, case):
    """A topic name that is ill-formed UTF-8 / contains a surrogate or U+0000
    makes the packet a Malformed Packet [MQTT-1.5.3-1, -2 (3.1.1);
    MQTT-1.5.4-1, -2 (5): "it is a Malformed Packet"] → v5 DISCONNECT 0x81."""
    conn = _connected(broker, protocol)
    try:
        conn.send(publish_packet(protocol, BAD_UTF8[case], b"x", qos=1, pkid=3))
        assert_rejected(conn, protocol, {MALFORMED})
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("wild", ["+", "#", "a+b"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wildcard_in_publish_topic(clients, broker, healthy, protocol, wild):
    """A PUBLISH topic name must not contain wildcards [MQTT-3.3.2-2]: the
    connection is closed (v5: 0x90 Topic Name invalid, or 0x81/0x82) and
    nothing is routed."""
    base = topic("wild")
    watcher = clients(protocol).connect()
    watcher.subscribe(f"{base}/#", 1)
    conn = _connected(broker, protocol)
    try:
        conn.send(publish_packet(protocol, f"{base}/{wild}", b"x", qos=1, pkid=4))
        assert_rejected(conn, protocol, {TOPIC_NAME_INVALID, MALFORMED, PROTOCOL_ERROR})
    finally:
        conn.close()
    assert watcher.fence() == [], "a PUBLISH with a wildcard topic was routed"
    healthy()


def _max_packet_size(broker) -> int:
    probe = RawConn(broker)
    try:
        ack = probe.connect(V5)
    finally:
        probe.close()
    raw = ack.connack_properties().get(0x27)
    assert raw is not None, "CONNACK advertises no Maximum Packet Size"
    return struct.unpack("!I", raw)[0]


def _publish_of_total_size(protocol, t: str, total: int, qos=1) -> bytes:
    """A PUBLISH whose whole encoded size (fixed header included) is `total`."""
    fixed = len(s(t)) + (2 if qos else 0) + (1 if protocol == V5 else 0)
    payload_len = total - 2 - fixed
    while True:
        rem = fixed + payload_len
        size = 1 + len(vbi(rem)) + rem
        if size == total:
            break
        payload_len -= size - total
    pkt = publish_packet(protocol, t, b"p" * payload_len, qos=qos, pkid=9)
    assert len(pkt) == total
    return pkt, payload_len


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_packet_over_maximum_size(broker, healthy, protocol):
    """A packet larger than the server's Maximum Packet Size (from its v5
    CONNACK) → DISCONNECT 0x95 Packet too large, then close [MQTT-3.2.2-15,
    4.13]; 3.1.1: close."""
    limit = _max_packet_size(broker)
    pkt, _ = _publish_of_total_size(protocol, topic("big"), limit + 1)
    conn = _connected(broker, protocol)

    def push():
        try:
            conn.sock.sendall(pkt)
        except OSError:
            pass  # the broker may close before reading it all

    sender = threading.Thread(target=push, daemon=True)
    sender.start()
    try:
        assert_rejected(conn, protocol, {PACKET_TOO_LARGE})
    finally:
        conn.close()
        sender.join(5)
    healthy()


def test_packet_at_maximum_size_accepted_v5(broker, clients):
    """A PUBLISH of exactly the advertised Maximum Packet Size is accepted and delivered."""
    limit = _max_packet_size(broker)
    t = topic("max")
    sub = clients(V5).connect()
    sub.subscribe(t, 1)
    pkt, payload_len = _publish_of_total_size(V5, t, limit)
    conn = _connected(broker, V5)
    try:
        conn.sock.sendall(pkt)
        ack = conn.read(timeout=10)
        assert ack.type == PUBACK and ack.body[:2] == b"\x00\x09", ack
    finally:
        conn.close()
    m = sub.get(timeout=10)
    assert (m.topic, len(m.payload)) == (t, payload_len)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_second_connect(broker, healthy, protocol):
    """A second CONNECT is a Protocol Error [MQTT-3.1.0-2] → v5 DISCONNECT 0x82."""
    conn = _connected(broker, protocol)
    try:
        conn.send(connect_packet(protocol, uid()))
        assert_rejected(conn, protocol, {PROTOCOL_ERROR})
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("first", ["publish", "subscribe", "pingreq", "http"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_packet_before_connect(broker, healthy, protocol, first):
    """Anything but CONNECT as the first packet: the connection is closed
    without CONNACK [MQTT-3.1.0-1]."""
    data = {
        "publish": publish_packet(protocol, topic("early"), b"x"),
        "subscribe": subscribe_packet(protocol, 1, [(topic("early"), 0)]),
        "pingreq": b"\xc0\x00",
        "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    }[first]
    conn = RawConn(broker)
    try:
        conn.send(data)
        got = conn.read_until_closed()
        assert got == [], f"expected a plain close, got {got}"
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_connect_then_close(broker, healthy, protocol):
    """Half a CONNECT and a closed socket leave nothing behind."""
    pkt = connect_packet(protocol, uid())
    conn = RawConn(broker)
    try:
        conn.send(pkt[: len(pkt) // 2])
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connect_reserved_flag(broker, healthy, protocol):
    """CONNECT with the reserved flag bit 0 set → Malformed Packet, closed
    [MQTT-3.1.2-3]; v5 may answer CONNACK 0x81 first (4.13)."""
    pkt = bytearray(connect_packet(protocol, uid()))
    # byte 0 type, 1 remaining length, 2..7 "\0\4MQTT", 8 level, 9 flags
    pkt[9] |= 0x01
    conn = RawConn(broker)
    try:
        conn.send(bytes(pkt))
        got = conn.read_until_closed()
        if got:
            assert protocol == V5 and len(got) == 1, got
            assert got[0].type == CONNACK and got[0].reason == MALFORMED, got
    finally:
        conn.close()
    healthy()

