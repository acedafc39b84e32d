"""Fixtures of the MQTT conformance suite (paho-mqtt 2.x against ferrymq).

Which broker the suite talks to, first match wins:

1. ``FERRYMQ_MQTT_ADDR=host:port``: an already running broker (nothing is
   started or stopped).
2. ``FERRYMQ_BIN``: ``$FERRYMQ_BIN standalone --data-dir DIR --mqtt 127.0.0.1:0
   --metrics 127.0.0.1:0 --namesrv 127.0.0.1:0 --broker 127.0.0.1:0`` (no fallback: a binary named on purpose is used).
3. ``$CARGO_TARGET_DIR/debug/ferrymq`` (``CARGO_TARGET_DIR`` defaults to
   ``~/.cache/ferrymq/target``) run the same way, if its ``standalone --help``
   knows ``--mqtt``.
4. The ``node-a`` example ``serve`` (``$CARGO_TARGET_DIR/debug/examples/serve
   127.0.0.1:0``), built with cargo first if it is missing.

A started ``ferrymq standalone`` gets ``FERRYMQ_MQTT__SYS_INTERVAL_SECS=1``
unless the variable is set already. A started broker must print a line ``mqtt : HOST:PORT`` and then
``ferrymq ready`` on stdout within 30 s; it is stopped with SIGTERM (SIGKILL
after 5 s) when the session ends. Its stderr goes to a log file whose path is
shown in the pytest header and in failures.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from mqtt_helpers import Client, assert_broker_healthy

Broker = namedtuple("Broker", "host port")

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
MQTT_LINE = re.compile(r"^\s*mqtt\s*:\s*(\S+):(\d+)\s*$")

_broker_info: dict[str, str] = {}


def _target_dir() -> Path:
    return Path(
        os.environ.get("CARGO_TARGET_DIR")
        or Path.home() / ".cache" / "ferrymq" / "target"
    )


def _knows_mqtt_flag(binary: Path) -> bool:
    try:
        out = subprocess.run(
            [str(binary), "standalone", "--help"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--mqtt" in out.stdout


def _broker_command(data_dir: str) -> list[str]:
    standalone = [
        "standalone",
        "--data-dir",
        data_dir,
        "--mqtt",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--namesrv",
        "127.0.0.1:0",
        "--broker",
        "127.0.0.1:0",
    ]
    explicit = os.environ.get("FERRYMQ_BIN")
    if explicit:
        return [explicit, *standalone]
    default = _target_dir() / "debug" / "ferrymq"
    if default.is_file() and _knows_mqtt_flag(default):
        return [str(default), *standalone]
    serve = _target_dir() / "debug" / "examples" / "serve"
    if not serve.is_file():
        env = dict(os.environ, CARGO_TARGET_DIR=str(_target_dir()))
        build = subprocess.run(
            ["cargo", "build", "-q", "-p", "node-a", "--example", "serve"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if build.returncode != 0 or not serve.is_file():
            pytest.exit(
                "no broker: FERRYMQ_BIN/FERRYMQ_MQTT_ADDR unset, "
                f"{default} lacks --mqtt, and building the serve example "
                f"failed:\n{build.stderr[-4000:]}",
                returncode=3,
            )
    return [str(serve), "127.0.0.1:0"]


def _parse_addr(host: str, port: str) -> Broker:
    # Tolerate "mqtt://host" and "[::1]" forms.
    host = host.split("://", 1)[-1].strip("[]")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return Broker(host, int(port))


def pytest_report_header(config):
    addr = os.environ.get("FERRYMQ_MQTT_ADDR")
    if addr:
        return f"ferrymq: external broker at {addr}"
    return "ferrymq: broker started by the session fixture"


@pytest.fixture(scope="session")
def broker(request):
    """(host, port) of a running broker, started for the session if needed."""
    external = os.environ.get("FERRYMQ_MQTT_ADDR")
    if external:
        host, _, port = external.rpartition(":")
        yield _parse_addr(host, port)
        return

    data_dir = tempfile.mkdtemp(prefix="ferrymq-mqtt-test-")
    cmd = _broker_command(data_dir)
    log_path = Path(data_dir) / "broker.stderr.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=data_dir,
        env=_broker_env(),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        # Keeps draining stdout for the whole session so the broker never
        # blocks on a full pipe.
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, name="ferrymq-stdout", daemon=True).start()

    addr = None
    seen = []
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"broker not ready within {READY_TIMEOUT:.0f} s")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"broker exited early (code {proc.wait()})")
            seen.append(line)
            m = MQTT_LINE.match(line)
            if m and addr is None:
                addr = _parse_addr(m.group(1), m.group(2))
            if line.strip() == "ferrymq ready":
                if addr is None:
                    raise RuntimeError("`ferrymq ready` without an `mqtt : HOST:PORT` line")
                break
    except RuntimeError as e:
        _stop(proc)
        log.close()
        stderr = log_path.read_text(errors="replace")[-4000:]
        pytest.exit(
            f"{e}\ncommand: {' '.join(cmd)}\nstdout:\n" + "\n".join(seen)
            + f"\nstderr ({log_path}):\n{stderr}",
            returncode=3,
        )

    _broker_info.update(cmd=" ".join(cmd), log=str(log_path))
    try:
        yield addr
    finally:
        _stop(proc)
        log.close()
        # Keep the data dir (and the broker log in it) only when something failed.
        if request.session.testsfailed == 0:
            shutil.rmtree(data_dir, ignore_errors=True)


def _broker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    # $SYS every second (default 10 s) keeps test_sys_topics short; the serve
    # example has it built in and ignores the variable.
    env.setdefault("FERRYMQ_MQTT__SYS_INTERVAL_SECS", "1")
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def clients(broker):
    """Factory of paho clients (see `mqtt_helpers.Client`); all are closed
    when the test ends."""
    made: list[Client] = []

    def make(protocol, client_id=None, **kw) -> Client:
        c = Client(broker, protocol, client_id, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def bystander(broker, protocol):
    """A client connected before a bad-input test; afterwards the test checks
    that it (and a fresh client) still work."""
    c = Client(broker, protocol)
    c.connect()
    yield c
    c.close()


@pytest.fixture
def healthy(broker, bystander, protocol):
    """Call at the end of a bad-input test: the broker is up and the
    bystander is unaffected."""

    def check():
        assert_broker_healthy(broker, bystander, protocol)

    return check


def pytest_runtest_makereport(item, call):
    # Point at the broker log when a test fails.
    if call.when == "call" and call.excinfo is not None and _broker_info.get("log"):
        item.add_report_section("call", "ferrymq", f"broker: {_broker_info['cmd']}\nlog: {_broker_info['log']}")
