"""CONNECT / CONNACK, sessions, client identifiers, takeover, authentication."""

import time

import pytest

from mqtt_helpers import (
    AUTH, CONNACK, PINGRESP, PROTOCOLS, V5, V311, PacketTypes, RawConn,
    assert_rejected, connect_packet, frame, p_str, prop_block, props, topic, uid,
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connect_connack(clients, protocol):
    """A fresh clean connection is accepted with session present 0 [MQTT-3.2.2-2 (3.1.1),
    MQTT-3.2.2-2 (5)]."""
    c = clients(protocol).connect()
    assert c.connack_reason == 0
    assert c.session_present is False
    if protocol == V5:
        p = c.connack_props
        # What the broker advertises must be usable by the client.
        assert getattr(p, "ReceiveMaximum", 65535) > 0
        assert getattr(p, "MaximumPacketSize", 1 << 28) > 0
        assert getattr(p, "RetainAvailable", 1) == 1
        assert not hasattr(p, "AssignedClientIdentifier")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connack_bytes_and_ping(broker, protocol):
    """CONNACK has the exact wire layout; PINGREQ gets PINGRESP (3.2, 3.12, 3.13)."""
    conn = RawConn(broker)
    try:
        ack = conn.connect(protocol)
        if protocol == V311:
            assert ack.flags == 0 and ack.body == b"\x00\x00"
        else:
            assert ack.flags == 0 and ack.body[:2] == b"\x00\x00"
        conn.send(b"\xc0\x00")
        p = conn.read()
        assert (p.type, p.flags, p.body) == (PINGRESP, 0, b"")
    finally:
        conn.close()


def test_clean_session_v311(clients):
    """3.1.1 CleanSession: 0 resumes the session (present 1, subscriptions kept);
    1 discards it (present 0) and ends it at disconnect [MQTT-3.1.2-4..6, MQTT-3.2.2-1..3]."""
    cid, t = uid(), topic("clean-v311")
    a = clients(V311, cid, clean=False).connect()
    assert a.session_present is False
    a.subscribe(t, 1)
    a.disconnect()

    b = clients(V311, cid, clean=False).connect()
    assert b.session_present is True
    b.publish(t, b"kept", qos=1)
    assert b.get().payload == b"kept", "subscription did not survive in the session"
    b.disconnect()

    c = clients(V311, cid, clean=True).connect()
    assert c.session_present is False
    c.publish(t, b"gone", qos=1)
    assert c.fence() == [], "clean session kept the old subscription"
    c.disconnect()

    d = clients(V311, cid, clean=False).connect()
    assert d.session_present is False, "a clean session outlived its connection"


def test_clean_start_and_session_expiry_v5(clients):
    """v5 Clean Start + Session Expiry Interval [MQTT-3.1.2-4..6, MQTT-3.1.2-23, MQTT-3.2.2-2/3]."""
    cid, t = uid(), topic("expiry-v5")
    # Expiry absent (0): the session ends with the connection.
    a = clients(V5, cid, clean=False).connect()
    assert a.session_present is False
    a.subscribe(t, 1)
    a.disconnect()
    b = clients(V5, cid, clean=False, session_expiry=60).connect()
    assert b.session_present is False, "session with expiry 0 outlived its connection"

    # Expiry 60: it survives a disconnect, with its subscriptions.
    b.subscribe(t, 1)
    b.disconnect()
    c = clients(V5, cid, clean=False, session_expiry=60).connect()
    assert c.session_present is True
    c.publish(t, b"kept", qos=1)
    assert c.get().payload == b"kept"
    c.disconnect()

    # Clean Start 1 discards it.
    d = clients(V5, cid, clean=True, session_expiry=60).connect()
    assert d.session_present is False
    d.publish(t, b"gone", qos=1)
    assert d.fence() == [], "clean start kept the old subscription"
    d.disconnect()


def test_session_expires_after_interval_v5(clients):
    """A session is kept for its expiry interval after disconnect, then discarded
    [MQTT-3.1.2-23]."""
    cid = uid()
    clients(V5, cid, clean=True, session_expiry=2).connect().disconnect()
    time.sleep(0.5)
    b = clients(V5, cid, clean=False, session_expiry=2).connect()
    assert b.session_present is True, "session gone before its expiry interval"
    b.disconnect()
    t0 = time.monotonic()
    time.sleep(3.0)
    c = clients(V5, cid, clean=False, session_expiry=2).connect()
    assert c.session_present is False, (
        f"session still present {time.monotonic() - t0:.1f} s after disconnect (expiry 2 s)"
    )


def test_disconnect_updates_session_expiry_v5(clients):
    """DISCONNECT may set Session Expiry Interval; 0 ends the session at once (3.14.2.2.2)."""
    cid = uid()
    a = clients(V5, cid, clean=True, session_expiry=60).connect()
    a.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    b = clients(V5, cid, clean=False, session_expiry=60).connect()
    assert b.session_present is False


def test_assigned_client_identifier_v5(clients):
    """Empty client id in v5: the server assigns one and returns it in CONNACK
    [MQTT-3.1.3-7, MQTT-3.2.2-16]."""
    a = clients(V5, "").connect()
    assigned = getattr(a.connack_props, "AssignedClientIdentifier", None)
    assert assigned, "no Assigned Client Identifier in CONNACK"
    b = clients(V5, "").connect()
    assert b.connack_props.AssignedClientIdentifier != assigned, "assigned ids not unique"
    # The assigned id is a working session.
    t = topic("assigned")
    a.subscribe(t, 1)
    a.publish(t, b"x", qos=1)
    assert a.get().payload == b"x"


def test_empty_client_id_clean_session_v311_accepted(clients):
    """3.1.1: zero-length client id with CleanSession 1 is accepted [MQTT-3.1.3-6]."""
    c = clients(V311, "", clean=True).connect()
    assert c.connack_reason == 0


def test_empty_client_id_persistent_v311_rejected(broker):
    """3.1.1: zero-length client id with CleanSession 0 → CONNACK return code 2,
    then close [MQTT-3.1.3-8]."""
    conn = RawConn(broker)
    try:
        conn.send(connect_packet(V311, "", clean=False))
        ack = conn.expect(CONNACK)
        assert ack.body == b"\x00\x02", f"CONNACK {ack.body.hex()}, expected 0002"
        assert conn.read_until_closed() == []
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_id_takeover(clients, protocol):
    """A second connection with the same client id takes over: the old one is
    closed (v5: DISCONNECT 0x8E) [MQTT-3.1.4-3]; the new one keeps working."""
    cid, t = uid(), topic("takeover")
    old = clients(protocol, cid).connect()
    old.subscribe(t, 1)
    new = clients(protocol, cid).connect()
    assert old.disconnected.wait(5), "old connection not closed on takeover"
    if protocol == V5:
        assert old.disconnect_from_server, "old v5 client got no DISCONNECT packet"
        assert old.disconnect_reason == 0x8E, f"reason 0x{old.disconnect_reason:02x}"
    new.subscribe(t, 1)
    new.publish(t, b"after", qos=1)
    assert new.get().payload == b"after"
    assert not new.disconnected.is_set(), "new connection was kicked"
    assert old.messages.empty()


def test_connect_with_authentication_method_v5(clients):
    """CONNECT with an Authentication Method the server does not support →
    CONNACK 0x8C Bad authentication method (3.1.2.11.9, 4.12)."""
    c = clients(V5, connect_props={"AuthenticationMethod": "SCRAM-SHA-1"})
    c.connect(expect=None)
    assert c.connack_reason == 0x8C, f"CONNACK reason 0x{c.connack_reason:02x}"
    assert c.disconnected.wait(5), "connection not closed after refused CONNACK"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_auth_packet_without_auth_method_rejected(broker, healthy, protocol):
    """AUTH from a client whose CONNECT had no Authentication Method is a
    Protocol Error (3.15: "It is a Protocol Error for the Client or Server to
    send an AUTH packet if the CONNECT packet did not contain the same
    Authentication Method") → closed; v5 DISCONNECT 0x82 if one is sent (0x8C
    Bad authentication method is also accepted: table 2.4 lists it for
    DISCONNECT, though table 3.14.2.1 does not); v3.1.1: packet type 15 is
    reserved → close (2.2.1, 4.8)."""
    conn = RawConn(broker)
    try:
        conn.connect(protocol)
        body = b"\x19" + prop_block(p_str(0x15, "SCRAM-SHA-1"))
        conn.send(frame(AUTH << 4, body))
        assert_rejected(conn, protocol, {0x82, 0x8C})
    finally:
        conn.close()
    healthy()


@pytest.mark.parametrize("level", [3, 6])
def test_unsupported_protocol_level(broker, level):
    """Unsupported protocol level → CONNACK return code 1 (3.1.1 layout, which a
    v5 server may also send), then close [MQTT-3.1.2-2 (3.1.1)] / 3.1.2.2 (5)."""
    conn = RawConn(broker)
    try:
        conn.send(connect_packet(V311, uid(), level=level))
        ack = conn.expect(CONNACK)
        assert ack.body == b"\x00\x01", f"CONNACK {ack.body.hex()}, expected 0001"
        assert conn.read_until_closed() == []
    finally:
        conn.close()
    # Broker still serves.
    ok = RawConn(broker)
    try:
        ok.connect(V311)
    finally:
        ok.close()
