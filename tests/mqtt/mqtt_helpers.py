"""Helpers of the MQTT conformance suite: a thin, synchronous wrapper around a
paho-mqtt 2.x client, and raw-socket packet builders/readers for the
bad-input tests. Every wait is bounded by TIMEOUT."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 5.0
# A bounded window in which something must NOT happen, when no fence is possible.
QUIET = 0.7


PROTOCOLS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def topic(name: str) -> str:
    """A topic no other test uses."""
    return f"ferrymq-test/{name}/{uid()}"


def props(packet_type, **values) -> Properties:
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def code(rc) -> int:
    """A paho ReasonCode (or int) as an int."""
    if rc is None:
        return 0
    if isinstance(rc, ReasonCode):
        return rc.value
    return int(rc)


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: Properties | None

    def prop(self, name, default=None):
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


class Client:
    """paho client with blocking helpers. No automatic reconnects: a lost
    connection stays lost, so a test sees exactly what the broker did."""

    def __init__(
        self,
        broker,
        protocol,
        client_id=None,
        *,
        clean=True,
        session_expiry=None,
        keepalive=60,
        manual_ack=False,
        connect_props: dict | None = None,
    ):
        self.broker = broker
        self.protocol = protocol
        self.client_id = uid() if client_id is None else client_id
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connect_props = connect_props or {}
        kw = {}
        if protocol == V311:
            kw["clean_session"] = clean
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
            **kw,
        )
        self.messages: queue.Queue[Msg] = queue.Queue()
        self._cond = threading.Condition()
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int] = {}
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_reason: int | None = None
        self.session_present: bool | None = None
        self.connack_props: Properties | None = None
        self.disconnect_reason: int | None = None
        self.disconnect_from_server: bool | None = None
        self.running = False
        self._fence_topic: str | None = None
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish

    # -- callbacks (paho thread) -------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_reason = code(reason_code)
        self.session_present = bool(flags.session_present)
        self.connack_props = properties
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = code(reason_code)
        self.disconnect_from_server = flags.is_disconnect_packet_from_server
        self.disconnected.set()

    def _on_message(self, client, userdata, m):
        self.messages.put(
            Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup), m.mid,
                getattr(m, "properties", None))
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = [code(r) for r in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks[mid] = [code(r) for r in reason_codes]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self._pubacks[mid] = code(reason_code)
            self._cond.notify_all()

    def _wait_mid(self, store, mid, what):
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in store, timeout=TIMEOUT)
            assert ok, f"{self.client_id}: no {what} for mid {mid} within {TIMEOUT} s"
            return store.pop(mid)

    # -- connection ----------------------------------------------------------
    def connect(self, *, clean=None, session_expiry=None, expect=0):
        """Connect, start paho's network thread and wait for CONNACK; asserts
        its reason code is `expect` (None: don't check)."""
        if clean is not None:
            self.clean = clean
        if session_expiry is not None:
            self.session_expiry = session_expiry
        self.connected.clear()
        self.disconnected.clear()
        if self.protocol == V5:
            p = Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                p.SessionExpiryInterval = self.session_expiry
            for k, v in self.connect_props.items():
                setattr(p, k, v)
            self.c.connect(
                self.broker.host, self.broker.port, self.keepalive,
                clean_start=self.clean, properties=p,
            )
        else:
            # paho fixes CleanSession per object; allow connect(clean=...).
            self.c._clean_session = self.clean
            self.c.connect(self.broker.host, self.broker.port, self.keepalive)
        self.c.loop_start()
        self.running = True
        assert self.connected.wait(TIMEOUT), f"{self.client_id}: no CONNACK"
        if expect is not None:
            assert self.connack_reason == expect, (
                f"CONNACK reason 0x{self.connack_reason:02x}, expected 0x{expect:02x}"
            )
        return self

    def _stop_loop(self):
        if self.running:
            self.c.loop_stop()
            self.running = False

    def drop(self):
        """Cut the TCP connection without DISCONNECT (network loss): the socket
        is shut down under paho, whose thread then sees the connection lost
        (shutdown, not close, so no fd is closed under the running thread)."""
        sock = self.c.socket()
        assert sock is not None, "not connected"
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        assert self.disconnected.wait(TIMEOUT), f"{self.client_id}: paho did not notice the drop"
        self._stop_loop()

    def disconnect(self, reason: int | None = None, properties: Properties | None = None):
        """Clean DISCONNECT (v5: with `reason`), then wait until paho closed."""
        rc = None
        if reason is not None:
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
        self.c.disconnect(reasoncode=rc, properties=properties)
        assert self.disconnected.wait(TIMEOUT), f"{self.client_id}: disconnect did not finish"
        self._stop_loop()

    def close(self):
        try:
            if self.c.is_connected():
                self.c.disconnect()
        except Exception:
            pass
        self._stop_loop()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- operations ---------------------------------------------------------
    def subscribe(self, filt, qos=0, *, no_local=False, rap=False, rh=0, sub_id=None,
                  check=True):
        """SUBSCRIBE one filter or a list of (filter, qos) and wait for SUBACK;
        returns its reason codes (v3.1.1: the granted QoS / 0x80 bytes)."""
        properties = None
        if self.protocol == V5:
            if sub_id is not None:
                properties = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id)
            if isinstance(filt, list):
                arg = [(f, SubscribeOptions(qos=q, noLocal=no_local, retainAsPublished=rap,
                                            retainHandling=rh)) for f, q in filt]
                rc, mid = self.c.subscribe(arg, properties=properties)
            else:
                opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap,
                                        retainHandling=rh)
                rc, mid = self.c.subscribe(filt, options=opts, properties=properties)
        else:
            if isinstance(filt, list):
                rc, mid = self.c.subscribe(filt)
            else:
                rc, mid = self.c.subscribe(filt, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe: {rc}"
        codes = self._wait_mid(self._subacks, mid, "SUBACK")
        if check:
            n = len(filt) if isinstance(filt, list) else 1
            assert len(codes) == n and all(c < 0x80 for c in codes), f"SUBACK {codes}"
        return codes

    def allow_invalid_filters(self):
        """paho refuses invalid filters client-side; let them through so the
        broker's answer can be tested."""
        self.c._filter_wildcard_len_check = lambda sub: mqtt.MQTT_ERR_SUCCESS

    def unsubscribe(self, filters):
        rc, mid = self.c.unsubscribe(filters)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe: {rc}"
        return self._wait_mid(self._unsubacks, mid, "UNSUBACK")

    def publish(self, t, payload=b"", qos=0, retain=False, properties=None, wait=True):
        """PUBLISH; for QoS > 0 waits for the flow to complete and returns the
        v5 PUBACK/PUBREC reason code (0 otherwise)."""
        info = self.c.publish(t, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish: {info.rc}"
        if not wait:
            return info
        if qos == 0:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), "QoS 0 publish not written"
            return 0
        return self._wait_mid(self._pubacks, info.mid, "PUBACK/PUBCOMP")

    def get(self, timeout=TIMEOUT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout} s") from None

    def get_n(self, n, timeout=TIMEOUT) -> list[Msg]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: {len(out)} of {n} messages within {timeout} s: "
                    f"{[(m.topic, m.payload) for m in out]}"
                ) from None
        return out

    def assert_quiet(self, window=QUIET):
        """Nothing arrives within `window` (only where no fence is possible)."""
        try:
            m = self.messages.get(timeout=window)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m.topic!r} {m.payload!r}")

    def fence(self) -> list[Msg]:
        """Publish a marker to ourselves and return every message received
        before it. The broker queues a session's deliveries in order, so a
        message routed before the marker cannot arrive after it."""
        if self._fence_topic is None:
            self._fence_topic = topic("fence")
            # QoS 0: the marker needs no acknowledgement, so a DISCONNECT right
            # after the fence cannot overtake a PUBACK for it (paho sends acks from
            # its network thread) and leave it in a persistent session.
            self.subscribe(self._fence_topic, 0)
        marker = uid().encode()
        self.publish(self._fence_topic, marker, qos=1)
        before = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"{self.client_id}: fence not received") from None
            if m.topic == self._fence_topic and m.payload == marker:
                return before
            before.append(m)


def assert_broker_healthy(broker, bystander: Client, protocol):
    """The broker still accepts connections, and a client connected before the
    bad input still works (round trip through its own subscription)."""
    assert bystander.connected.is_set() and not bystander.disconnected.is_set(), (
        "bystander was disconnected"
    )
    assert bystander.fence() == [], "bystander received stray messages"
    fresh = Client(broker, protocol)
    try:
        fresh.connect()
        t = topic("healthy")
        fresh.subscribe(t, 1)
        fresh.publish(t, b"ok", qos=1)
        assert fresh.get().payload == b"ok"
    finally:
        fresh.close()


# ---------------------------------------------------------------------------
# Raw sockets
# ---------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)


def vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(v) -> bytes:
    if isinstance(v, str):
        v = v.encode()
    return struct.pack("!H", len(v)) + v


def prop_block(*encoded: bytes) -> bytes:
    body = b"".join(encoded)
    return vbi(len(body)) + body


def p_u32(ident, v):
    return bytes([ident]) + struct.pack("!I", v)


def p_u16(ident, v):
    return bytes([ident]) + struct.pack("!H", v)


def p_str(ident, v):
    return bytes([ident]) + s(v)


def frame(byte1: int, body: bytes) -> bytes:
    return bytes([byte1]) + vbi(len(body)) + body


def connect_packet(protocol, client_id="", *, clean=True, keepalive=60, will=None,
                   properties=b"", level=None, name="MQTT"):
    """will = (topic, payload, qos, retain, will_properties_bytes)."""
    v5 = protocol == V5
    flags = 0x02 if clean else 0
    payload = s(client_id)
    if will is not None:
        wt, wp, wq, wr, wprops = will
        flags |= 0x04 | (wq << 3) | (0x20 if wr else 0)
        if v5:
            payload += prop_block(wprops)
        payload += s(wt) + s(wp)
    lvl = level if level is not None else (5 if v5 else 4)
    body = s(name) + bytes([lvl, flags]) + struct.pack("!H", keepalive)
    if v5:
        body += prop_block(properties)
    return frame(0x10, body + payload)


def publish_packet(protocol, topic_bytes, payload=b"", *, qos=0, pkid=1, retain=False,
                   dup=False, properties=b""):
    if isinstance(topic_bytes, str):
        topic_bytes = topic_bytes.encode()
    byte1 = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = s(topic_bytes)
    if qos:
        body += struct.pack("!H", pkid)
    if protocol == V5:
        body += prop_block(properties)
    return frame(byte1, body + payload)


def subscribe_packet(protocol, pkid, filters):
    """filters = [(filter, options_byte)]."""
    body = struct.pack("!H", pkid)
    if protocol == V5:
        body += prop_block()
    for f, o in filters:
        body += s(f) + bytes([o])
    return frame(0x82, body)


def ack_packet(protocol, ptype, pkid):
    flags = 0x02 if ptype == PUBREL else 0
    return frame((ptype << 4) | flags, struct.pack("!H", pkid))


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes

    @property
    def reason(self) -> int:
        """Reason code of a v5 DISCONNECT/AUTH (0 when omitted), or the
        CONNACK return/reason code."""
        if self.type == CONNACK:
            return self.body[1]
        return self.body[0] if self.body else 0

    def connack_properties(self) -> dict[int, bytes]:
        """v5 CONNACK properties as {identifier: raw value bytes} (the few
        the tests need; fixed-size ones only, strings kept raw)."""
        sizes = {0x11: 4, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1,
                 0x2A: 1, 0x13: 2}
        body = self.body[2:]
        n, i = 0, 0
        shift = 0
        while True:
            b = body[i]
            n |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        block, out, j = body[i:i + n], {}, 0
        while j < len(block):
            ident = block[j]
            j += 1
            if ident in sizes:
                out[ident] = block[j:j + sizes[ident]]
                j += sizes[ident]
            elif ident == 0x26:  # user property: two strings
                for _ in range(2):
                    ln = struct.unpack("!H", block[j:j + 2])[0]
                    j += 2 + ln
            else:  # UTF-8 string / binary data
                ln = struct.unpack("!H", block[j:j + 2])[0]
                out[ident] = block[j + 2:j + 2 + ln]
                j += 2 + ln
        return out


class Closed(Exception):
    pass


class RawConn:
    """A hand-driven MQTT connection over a plain socket."""

    def __init__(self, broker, timeout=TIMEOUT):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read(self, timeout=TIMEOUT) -> Packet:
        """Next packet; raises Closed on EOF/reset, TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, shift, i = 0, 0, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + n:
                    byte1 = self.buf[0]
                    body = self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return Packet(byte1 >> 4, byte1 & 0x0F, body)
            self._fill(deadline)

    def expect(self, ptype, timeout=TIMEOUT) -> Packet:
        p = self.read(timeout)
        assert p.type == ptype, f"expected packet type {ptype}, got {p}"
        return p

    def connect(self, protocol, client_id=None, **kw) -> Packet:
        self.send(connect_packet(protocol, client_id if client_id is not None else uid(), **kw))
        ack = self.expect(CONNACK)
        assert ack.reason == 0, f"CONNACK refused: {ack}"
        return ack

    def read_until_closed(self, timeout=TIMEOUT) -> list[Packet]:
        """Every packet until the broker closes the connection; fails if it
        stays open longer than `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.read(max(deadline - time.monotonic(), 0.001)))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"connection still open after {timeout} s (received {got})") from None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def assert_rejected(conn: RawConn, protocol, allowed_reasons, timeout=TIMEOUT):
    """The broker closes the connection; v5 may send one DISCONNECT first, and
    then its reason must be one of `allowed_reasons`; v3.1.1 sends nothing."""
    got = conn.read_until_closed(timeout)
    if protocol == V5:
        assert len(got) <= 1, f"expected at most a DISCONNECT before close, got {got}"
        if got:
            assert got[0].type == DISCONNECT, f"expected DISCONNECT, got {got[0]}"
            assert got[0].reason in allowed_reasons, (
                f"DISCONNECT reason 0x{got[0].reason:02x}, expected one of "
                f"{[hex(r) for r in allowed_reasons]}"
            )
        return got[0].reason if got else None
    assert got == [], f"v3.1.1: expected a plain close, got {got}"
    return None
