"""Fixtures of the RocketMQ gateway suite: the official C++ client (PyPI
``rocketmq==0.4.4``, whose wheel bundles ``librocketmq.so``) and paho-mqtt
against ``ferrymq standalone``.

The binary is ``$FERRYMQ_BIN`` or ``$CARGO_TARGET_DIR/debug/ferrymq``
(``CARGO_TARGET_DIR`` defaults to ``~/.cache/ferrymq/target``). Every listener
gets port 0; the banner tells the ports. Gateway settings that make retries
testable in seconds (every delay level 1 s) are set per broker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

READY_TIMEOUT = 30.0
LINE = re.compile(r"^\s*(mqtt|namesrv|broker|metrics)\s*:\s*(\S+)\s*$")
FAST_DELAYS = " ".join(["1s"] * 18)


def binary() -> str:
    explicit = os.environ.get("FERRYMQ_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache/ferrymq/target")
    return str(target / "debug" / "ferrymq")


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class Broker:
    """``ferrymq standalone`` on one data dir; started, stopped and killed by
    the PID started here. Its stderr goes to ``broker.log`` in the temp dir,
    printed when a test fails."""

    def __init__(self, env: dict[str, str] | None = None):
        self.tmp = tempfile.mkdtemp(prefix="ferrymq-rocketmq-test-")
        self.log_path = os.path.join(self.tmp, "broker.log")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMQ_")}
        self.env.setdefault("RUST_LOG", "info")
        self.env.setdefault("RUST_BACKTRACE", "0")
        self.env["FERRYMQ_GATEWAY__MESSAGEDELAYLEVEL"] = FAST_DELAYS
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.addr: dict[str, str] = {}
        # Restarts keep the NameServer port, as an operator's would: the C++
        # client keeps one name-server address per process.
        self.namesrv_listen = "127.0.0.1:0"

    def start(self) -> "Broker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary(), "standalone", "--data-dir", os.path.join(self.tmp, "data"),
             "--mqtt", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
             "--namesrv", self.namesrv_listen, "--broker", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
        )
        log.close()
        self.addr = {}
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if m := LINE.match(line):
                self.addr[m.group(1)] = m.group(2)
            if line == "ferrymq ready":
                break
            if time.monotonic() > deadline:
                break
        assert {"mqtt", "namesrv", "broker"} <= set(self.addr), (
            f"broker did not get ready: {self.addr}\n{self.log()}")
        self.namesrv_listen = self.namesrv
        return self

    @property
    def namesrv(self) -> str:
        host, port = self.addr["namesrv"].rsplit(":", 1)
        return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]") else self.addr["namesrv"]

    @property
    def mqtt(self) -> tuple[str, int]:
        return "127.0.0.1", int(self.addr["mqtt"].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def close(self) -> None:
        self.kill9()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def broker(request):
    b = Broker().start()
    yield b
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"--- broker log ---\n{b.log()}")
    b.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    """Poll `cond` until true or the deadline; assert with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    assert cond(), f"timed out after {timeout} s waiting for {what}"
