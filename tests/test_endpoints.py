"""Every endpoint and port a user gives is checked by one function (issue 22 #8):
libzmq wraps tcp://127.0.0.1:99999 to port 34463 without a word; sed refuses it in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detector.io.endpoint import check_endpoint, check_host_port
from detector.io.publisher import ZmqPublisher

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.parametrize("ep", [
    "tcp://127.0.0.1:5557", "tcp://localhost:1", "tcp://[::1]:65535", "tcp://*:5557",
    "tcp://eth0:5557", "ipc:///tmp/sed", "inproc://sed",
])
def test_good_endpoints(ep: str) -> None:
    assert check_endpoint(ep) == ep


@pytest.mark.parametrize("ep, says", [
    ("tcp://127.0.0.1:99999", "port 99999 is out of range"),
    ("tcp://127.0.0.1:65536", "port 65536 is out of range"),
    ("tcp://127.0.0.1:0", "port 0 is out of range"),
    ("tcp://127.0.0.1:-1", "port '-1' is not a number"),
    ("tcp://127.0.0.1:http", "port 'http' is not a number"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://:5557", "no host"),
    ("tcp://[::1]5557", "[ADDRESS]:PORT"),
    ("udp://127.0.0.1:5557", "scheme 'udp'"),
    ("127.0.0.1:5557", "no scheme"),
    ("ipc://", "nothing after ipc://"),
    ("tcp://127.0.0.1:*", "port '*' is not a number"),  # any port: only when binding
])
def test_bad_endpoints_one_line(ep: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        check_endpoint(ep, "--connect")
    msg = str(e.value)
    assert msg.startswith(f"--connect {ep!r}: ") and says in msg and "1-65535" in msg
    assert "\n" not in msg


def test_any_port_when_binding() -> None:
    assert check_endpoint("tcp://127.0.0.1:*", bind=True)
    assert check_endpoint("tcp://127.0.0.1:0", bind=True)
    pub = ZmqPublisher("tcp://127.0.0.1:*")  # a real bind to a free port
    try:
        assert 1 <= int(pub.bound.rsplit(":", 1)[1]) <= 65535
    finally:
        pub.close()


def test_publisher_refuses_a_wrapped_port() -> None:
    """Without the check libzmq binds 99999 & 0xffff = 34463."""
    with pytest.raises(ValueError, match="port 99999 is out of range"):
        ZmqPublisher("tcp://127.0.0.1:99999")


def test_host_port() -> None:
    assert check_host_port("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert check_host_port("[::1]:9108") == ("::1", 9108)
    for bad, says in (("127.0.0.1:99999", "out of range"), ("127.0.0.1", "no port"),
                      (":9108", "no host"), ("127.0.0.1:*", "not a number")):
        with pytest.raises(ValueError, match=says):
            check_host_port(bad, "--metrics")


BAD = "tcp://127.0.0.1:99999"
COMMANDS = [
    ("sed-listen", ["detector.cli.listen", "x.wav", "--publish", BAD], "--publish"),
    ("sed-listen", ["detector.cli.listen", "x.wav", "--no-publish", "--control", BAD], "--control"),
    ("sed-hub", ["detector.io.hub", "--connect", BAD], "--connect"),
    ("sed-hub", ["detector.io.hub", "--connect", "tcp://127.0.0.1:5557", "--publish", BAD], "--publish"),
    ("sed-hub", ["detector.io.hub", "--listen", BAD], "--listen"),
    ("sed-monitor", ["detector.monitor.app", "--connect", BAD], "--connect"),
    ("sed-monitor", ["detector.monitor.app", "--control", BAD], "--control"),
    ("sed-mqtt", ["detector.cli.mqtt", "mqtt://127.0.0.1:1", "--connect", BAD], "--connect"),
    ("sed-control", ["detector.io.control", "--endpoint", BAD, "status"], "--endpoint"),
    ("sed-mqtt", ["detector.cli.mqtt", "mqtt://127.0.0.1:99999"], "bad port"),
]


@pytest.mark.parametrize("prog, argv, what", COMMANDS, ids=[f"{c[0]} {c[2]}" for c in COMMANDS])
def test_each_command_refuses_a_bad_endpoint(prog: str, argv: list[str], what: str) -> None:
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60,
                       env=ENV, cwd=REPO, stdin=subprocess.DEVNULL)
    assert r.returncode == (1 if prog == "sed-monitor" else 2), (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{prog}: error: ") and what in lines[0] and "99999" in lines[0]
