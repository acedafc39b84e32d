"""`ferrymq standalone` as an operator sees it: the Prometheus endpoint counts
what devices do, and SIGTERM sends MQTT 5 clients DISCONNECT 0x8B and exits 0."""

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

REPO = Path(__file__).resolve().parents[2]


def _binary() -> str:
    explicit = os.environ.get("FERRYMQ_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ferrymq/target"))
    return str(target / "debug" / "ferrymq")


@pytest.fixture
def standalone():
    if os.environ.get("FERRYMQ_MQTT_ADDR"):
        pytest.skip("needs its own broker process")
    data = tempfile.mkdtemp(prefix="ferrymq-standalone-test-")
    proc = subprocess.Popen(
        [_binary(), "standalone", "--data-dir", data, "--mqtt", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
         "--namesrv", "127.0.0.1:0", "--broker", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    info = {}
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode().rstrip()
        if m := re.match(r"^\s*mqtt\s*:\s*(\S+):(\d+)\s*$", line):
            info["mqtt"] = ("127.0.0.1", int(m.group(2)))
        if m := re.match(r"^\s*metrics\s*:\s*(\S+)\s*$", line):
            info["metrics"] = m.group(1)
        if line == "ferrymq ready" or time.monotonic() > deadline:
            break
    assert "mqtt" in info and "metrics" in info, info
    yield proc, info
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _client(port, cid, version=mqtt.MQTTv5):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(5)
    return c


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _value(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return 0.0


def test_metrics_endpoint_counts_connections_and_messages(standalone):
    proc, info = standalone
    port = info["mqtt"][1]
    sub = _client(port, "m-sub")
    got = threading.Event()
    sub.on_message = lambda *a: got.set()
    sub.subscribe("m/t", qos=1)
    pub = _client(port, "m-pub")
    deadline = time.monotonic() + 5
    while not got.is_set() and time.monotonic() < deadline:
        pub.publish("m/t", b"x" * 100, qos=1).wait_for_publish(5)
        got.wait(0.2)
    assert got.is_set()
    text = _metrics(info["metrics"])
    assert _value(text, "ferrymq_mqtt_connections") >= 2
    assert _value(text, "ferrymq_mqtt_messages_received_total", '{qos="1"}') >= 1
    assert _value(text, "ferrymq_mqtt_messages_sent_total", '{qos="1"}') >= 1
    assert _value(text, "ferrymq_mqtt_bytes_received_total") >= 100
    assert _value(text, "ferrymq_mqtt_subscriptions") >= 1
    assert _value(text, "ferrymq_mqtt_sessions") >= 2
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


def test_sigterm_sends_disconnect_0x8b_and_exits_cleanly(standalone):
    proc, info = standalone
    port = info["mqtt"][1]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="shutdown-watcher", protocol=mqtt.MQTTv5)
    connected = threading.Event()
    reasons = []
    done = threading.Event()
    c.on_connect = lambda *a: connected.set()

    def on_disconnect(client, userdata, flags, rc, properties=None):
        reasons.append(rc.value if hasattr(rc, "value") else rc)
        done.set()

    c.on_disconnect = on_disconnect
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(5)
    proc.send_signal(signal.SIGTERM)
    assert done.wait(10), "no disconnect after SIGTERM"
    c.loop_stop()
    assert reasons[0] == 0x8B, reasons
    assert proc.wait(timeout=15) == 0
