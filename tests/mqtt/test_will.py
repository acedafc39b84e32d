"""Will messages and keep alive."""

import time

import pytest

from mqtt_helpers import (
    CONNACK, DISCONNECT, PROTOCOLS, TIMEOUT, V5, PacketTypes, RawConn, connect_packet,
    props, topic, uid,
)


def _victim(clients, protocol, wt, payload=b"gone", *, qos=1, retain=False, will_props=None,
            **kw):
    v = clients(protocol, kw.pop("client_id", None), **kw)
    v.c.will_set(wt, payload, qos=qos, retain=retain, properties=will_props)
    return v


def _watcher(clients, protocol, wt):
    w = clients(protocol).connect()
    w.subscribe(wt, 1)
    return w


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_on_network_loss(clients, protocol):
    """Connection closed without DISCONNECT → the will is published
    [MQTT-3.1.2-8 (3.1.1), MQTT-3.1.2-8 (5)]."""
    wt = topic("will-loss")
    w = _watcher(clients, protocol, wt)
    v = _victim(clients, protocol, wt, b"lost").connect()
    v.drop()
    m = w.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (wt, b"lost", 1, False)
    assert w.fence() == [], "will published more than once"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_retained(clients, protocol):
    """A will with Will Retain 1 is published as a retained message [MQTT-3.1.2-17]."""
    wt = topic("will-retain")
    w = _watcher(clients, protocol, wt)
    v = _victim(clients, protocol, wt, b"retained-will", retain=True).connect()
    v.drop()
    assert w.get().payload == b"retained-will"
    late = clients(protocol).connect()
    late.subscribe(wt, 1)
    m = late.get()
    assert (m.payload, m.retain) == (b"retained-will", True)
    late.publish(wt, b"", qos=1, retain=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_will_on_normal_disconnect(clients, protocol):
    """DISCONNECT (v5: reason 0x00) deletes the will without publishing it
    [MQTT-3.1.2-10 (3.1.1), MQTT-3.1.2-10 / 3.14.4 (5)]."""
    wt = topic("will-normal")
    w = _watcher(clients, protocol, wt)
    v = _victim(clients, protocol, wt, b"must-not").connect()
    v.disconnect(reason=0 if protocol == V5 else None)
    w.assert_quiet(1.0)


def test_will_on_disconnect_with_will_message_v5(clients):
    """DISCONNECT with reason 0x04 publishes the will (3.14.2.1), with its
    properties [MQTT-3.1.3-10: user properties forwarded]."""
    wt = topic("will-0x04")
    w = _watcher(clients, V5, wt)
    wp = props(PacketTypes.WILLMESSAGE, ContentType="text/plain", ResponseTopic=f"{wt}/r")
    wp.UserProperty = [("why", "0x04")]
    v = _victim(clients, V5, wt, b"asked-for", will_props=wp).connect()
    v.disconnect(reason=0x04)
    m = w.get()
    assert m.payload == b"asked-for"
    assert m.prop("ContentType") == "text/plain"
    assert m.prop("ResponseTopic") == f"{wt}/r"
    assert m.prop("UserProperty") == [("why", "0x04")]


def test_will_delay_interval_v5(clients):
    """Will Delay Interval: the will is published that long after the loss
    (3.1.3.2.2), not at once."""
    wt = topic("will-delay")
    w = _watcher(clients, V5, wt)
    v = _victim(clients, V5, wt, b"late", will_props=props(PacketTypes.WILLMESSAGE,
                                                            WillDelayInterval=2),
                clean=True, session_expiry=60).connect()
    t0 = time.monotonic()
    v.drop()
    m = w.get(timeout=6)
    elapsed = time.monotonic() - t0
    assert m.payload == b"late"
    assert 1.5 <= elapsed <= 4.0, f"will published after {elapsed:.2f} s (delay 2 s)"


def test_will_delay_cancelled_by_reconnect_v5(clients):
    """Reconnecting to the session within the Will Delay Interval cancels the
    will [MQTT-3.1.3-9]."""
    wt, cid = topic("will-cancel"), uid()
    w = _watcher(clients, V5, wt)
    v = _victim(clients, V5, wt, b"cancelled", client_id=cid,
                will_props=props(PacketTypes.WILLMESSAGE, WillDelayInterval=1),
                clean=True, session_expiry=60).connect()
    v.drop()
    back = clients(V5, cid, clean=False, session_expiry=60).connect()
    assert back.session_present is True
    w.assert_quiet(2.0)


def test_will_delay_not_published_on_takeover_v5(clients):
    """A session taken over (Clean Start 0) within the Will Delay Interval: the
    old connection is closed with 0x8E, and because a new connection to the
    session was made before the delay passed the will MUST NOT be published
    [MQTT-3.1.3-9, MQTT-3.1.4-3]."""
    wt, cid = topic("will-takeover"), uid()
    w = _watcher(clients, V5, wt)
    old = _victim(clients, V5, wt, b"taken-over", client_id=cid,
                  will_props=props(PacketTypes.WILLMESSAGE, WillDelayInterval=1),
                  clean=True, session_expiry=60).connect()
    new = clients(V5, cid, clean=False, session_expiry=60).connect()
    assert new.session_present is True
    assert old.disconnected.wait(TIMEOUT)
    assert old.disconnect_reason == 0x8E
    w.assert_quiet(2.0)


@pytest.mark.parametrize("expiry", [0, 1])
def test_will_published_when_session_ends_before_will_delay_v5(clients, expiry):
    """The will is published when the Will Delay Interval passes or the session
    ends, whichever happens first (3.1.3.2.2, 3.1.2.5): session expiry 0/1 s
    with a 30 s will delay → will after ~0/1 s."""
    wt = topic("will-session-end")
    w = _watcher(clients, V5, wt)
    v = _victim(clients, V5, wt, b"session-ended",
                will_props=props(PacketTypes.WILLMESSAGE, WillDelayInterval=30),
                clean=True, session_expiry=expiry).connect()
    t0 = time.monotonic()
    v.drop()
    m = w.get(timeout=expiry + 4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"session-ended"
    assert elapsed <= expiry + 1.5, f"will after {elapsed:.2f} s, session expiry {expiry} s"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keep_alive_timeout(clients, broker, protocol):
    """No packet within 1.5 × Keep Alive → the server closes the connection
    [MQTT-3.1.2-24 (3.1.1), MQTT-3.1.2-22 (5)] (v5 may first send DISCONNECT
    0x8D) and publishes the will."""
    wt = topic("keepalive")
    w = _watcher(clients, protocol, wt)
    conn = RawConn(broker)
    try:
        conn.send(connect_packet(protocol, uid(), keepalive=1,
                                 will=(wt, b"timed-out", 1, False, b"")))
        assert conn.expect(CONNACK).reason == 0
        t0 = time.monotonic()
        got = conn.read_until_closed(timeout=4.0)
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    assert 1.2 <= elapsed <= 2.5, f"closed after {elapsed:.2f} s (keep alive 1 s → 1.5 s)"
    if protocol == V5:
        assert len(got) <= 1 and all(p.type == DISCONNECT and p.reason == 0x8D for p in got), got
    else:
        assert got == []
    assert w.get().payload == b"timed-out"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keep_alive_reset_by_pingreq(broker, protocol):
    """PINGREQs within the keep alive keep the connection open (3.1.2.10)."""
    conn = RawConn(broker)
    try:
        conn.connect(protocol, keepalive=1)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            conn.send(b"\xc0\x00")
            assert conn.read(timeout=1.0).type == 13, "no PINGRESP"
            time.sleep(0.5)  # the test is about time: stay under 1.5 s of silence
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_on_protocol_error(clients, broker, protocol):
    """The server closing the connection because of a malformed packet publishes
    the will (3.1.2.5 (3.1.1): "the Server closes the Network Connection because
    of a protocol error"; 3.1.2.5 (5): any close without DISCONNECT 0x00)."""
    wt = topic("will-error")
    w = _watcher(clients, protocol, wt)
    conn = RawConn(broker)
    try:
        conn.send(connect_packet(protocol, uid(), will=(wt, b"broken", 1, False, b"")))
        assert conn.expect(CONNACK).reason == 0
        conn.send(b"\x00\x00")
        conn.read_until_closed()
    finally:
        conn.close()
    assert w.get().payload == b"broken"
