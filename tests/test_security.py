"""Security: loopback by default, CURVE (an allowed and a refused subscriber), JSON only,
ONNX only at runtime, and the local-only, validated control socket."""

from __future__ import annotations

import ast
import json
import logging
import os
import time
from pathlib import Path

import pytest
import zmq

from detector.config import ListenConfig
from detector.io import security
from detector.io.control import ControlServer, parse_request, request
from detector.io.publisher import ZmqPublisher
from detector.io.wire import decode

REPO = Path(__file__).resolve().parent.parent
MESSAGE = {"schema": 1, "type": "status", "stream": "s", "seq": 0, "session": "x",
           "wall_time": 0.0, "stream_time": 0.0, "state": "running"}


def test_default_endpoint_is_loopback() -> None:
    assert ListenConfig().endpoint.startswith("tcp://127.0.0.1:")


def test_binding_beyond_loopback_warns_without_curve(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="detector.io.publisher"):
        pub = ZmqPublisher("tcp://0.0.0.0:*")
        pub.close()
    assert "reachable beyond this machine" in caplog.text and "--curve-secret-key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detector.io.publisher"):
        ZmqPublisher("tcp://127.0.0.1:*").close()
    assert caplog.text == ""


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    server_pub, server_sec = security.keygen(tmp_path / "keys", "server")
    good_pub, good_sec = security.keygen(tmp_path / "keys", "monitor")
    _, bad_sec = security.keygen(tmp_path / "keys", "stranger")
    allow = tmp_path / "allowed"
    allow.mkdir()
    (allow / good_pub.name).write_bytes(good_pub.read_bytes())
    assert oct(server_sec.stat().st_mode & 0o777) == "0o600"
    return {"server_pub": server_pub, "server_sec": server_sec, "good": good_sec, "bad": bad_sec,
            "allow": allow}


def _subscriber(ctx: zmq.Context, endpoint: str, secret: Path | None, server_pub: Path) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if secret is not None:
        security.configure_client(sock, secret, server_pub)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def test_curve_allows_the_listed_subscriber_and_refuses_others(
    keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    curve = security.CurveServerConfig(keys["server_sec"], keys["allow"])
    with caplog.at_level(logging.WARNING, logger="detector.io.publisher"):
        pub = ZmqPublisher("tcp://0.0.0.0:*", curve=curve)
    assert "reachable beyond" not in caplog.text  # CURVE on: no warning
    assert pub.encrypted
    port = pub.bound.rsplit(":", 1)[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    try:
        good = _subscriber(ctx, endpoint, keys["good"], keys["server_pub"])
        stranger = _subscriber(ctx, endpoint, keys["bad"], keys["server_pub"])
        plain = _subscriber(ctx, endpoint, None, keys["server_pub"])
        got: dict[str, int] = {"good": 0, "stranger": 0, "plain": 0}
        deadline = time.time() + 3.0
        while time.time() < deadline and got["good"] < 20:
            pub.send(dict(MESSAGE, seq=got["good"]))
            for name, sock in (("good", good), ("stranger", stranger), ("plain", plain)):
                while sock.poll(0):
                    _, msg = decode(sock.recv_multipart())
                    assert msg["type"] == "status"
                    got[name] += 1
            time.sleep(0.02)
        assert got["good"] >= 20
        assert got["stranger"] == 0 and got["plain"] == 0
    finally:
        ctx.destroy(linger=0)
        pub.close()


def test_curve_config_errors_say_what_is_wrong(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds only a public key"):
        security.CurveServerConfig(keys["server_pub"], keys["allow"])
    with pytest.raises(ValueError, match="not a directory"):
        security.CurveServerConfig(keys["server_sec"], tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no subscriber could connect"):
        security.CurveServerConfig(keys["server_sec"], empty)
    with pytest.raises(ValueError, match="no such file"):
        security.CurveServerConfig(tmp_path / "missing.key_secret", keys["allow"])


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert security.main(["keygen", str(tmp_path / "k"), "--name", "edge"]) == 0
    assert (tmp_path / "k" / "edge.key").is_file() and (tmp_path / "k" / "edge.key_secret").is_file()
    assert "edge.key_secret" in capsys.readouterr().out


def test_cli_refuses_half_a_curve_setup(toy_model: Path, toy_scene: Path, keys: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli import listen as cli_listen

    rc = cli_listen.main([str(toy_scene), "--model", str(toy_model),
                          "--curve-secret-key", str(keys["server_sec"])])
    assert rc == 2
    assert "needs both --curve-secret-key FILE and --curve-allow-dir DIR" in capsys.readouterr().err


# ---------------------------------------------------------------------------- wire and models


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_never_unpickles_and_never_imports_torch() -> None:
    for path in sorted((REPO / "detector").rglob("*.py")):
        used = _imports(path)
        assert not used & {"pickle", "dill", "cloudpickle", "joblib", "torch", "marshal", "shelve"}, path
        text = path.read_text()
        assert "allow_pickle=True" not in text, path


def test_training_loads_checkpoints_weights_only() -> None:
    calls = []
    for path in sorted((REPO / "training").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.name}:{node.lineno}", ok))
    assert calls, "no torch.load calls found"
    assert all(ok for _, ok in calls), [c for c, ok in calls if not ok]


def test_wire_refuses_anything_but_json() -> None:
    import pickle

    from detector.io.wire import WireError

    with pytest.raises(WireError):
        decode([b"status.s", pickle.dumps(MESSAGE)])
    with pytest.raises(ValueError):  # NaN is not JSON
        from detector.io.wire import encode

        encode(dict(MESSAGE, wall_time=float("nan")))


# ---------------------------------------------------------------------------- control socket


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5599", "tcp://10.1.2.3:5599", "tcp://*:5599"])
def test_control_socket_is_local_only(endpoint: str) -> None:
    with pytest.raises(ValueError, match="local only"):
        ControlServer(endpoint, lambda req: None)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"cmd": "format_disk"}', "unknown command 'format_disk'"),
        (b'{"cmd": "pause", "force": true}', "unknown argument(s) ['force']"),
        (b'{"cmd": "thresholds", "label": "Dog"}', "missing argument(s) ['on', 'off']"),
        (b'{"cmd": "thresholds", "label": "Dog", "on": "high", "off": 0.1}', "expected a finite number"),
        (b'{"cmd": "thresholds", "label": "Dog", "on": true, "off": 0.1}', "expected a finite number"),
        (b'{"cmd": "pause", "stream": ""}', "expected a string"),
        (b'{"cmd": "pause", "stream": 7}', "expected a string"),
    ],
)
def test_control_requests_are_validated(raw: bytes, says: str) -> None:
    from detector.io.control import ControlError

    with pytest.raises(ControlError) as e:
        parse_request([raw])
    assert says in str(e.value)


def test_control_round_trip_refuses_bad_and_survives_oversize(tmp_path: Path) -> None:
    seen: list[dict[str, object]] = []

    def handler(req: dict[str, object]) -> object:
        seen.append(req)
        return {"echo": req["cmd"]}

    endpoint = f"ipc://{tmp_path}/control"
    server = ControlServer(endpoint, handler)
    assert oct(os.stat(tmp_path / "control").st_mode & 0o777) == "0o600"
    import threading

    stop = threading.Event()
    t = threading.Thread(target=lambda: [server.poll(20) for _ in iter(stop.is_set, True)], daemon=True)
    t.start()
    try:
        assert request(endpoint, "ping") == {"ok": True, "result": {"echo": "ping"}}
        bad = request(endpoint, "thresholds", label="Dog", on=2, off="x")
        assert bad["ok"] is False and "finite number" in bad["error"]
        # An oversize request is dropped by ZeroMQ (MAXMSGSIZE); the server keeps answering.
        with pytest.raises(TimeoutError):
            request(endpoint, "pause", timeout_s=0.5, stream="x" * 10000)
        assert request(endpoint, "ping")["ok"] is True
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert [r["cmd"] for r in seen] == ["ping", "ping"]
    assert json.dumps(seen)  # handler only ever saw validated, JSON-ready requests


def test_sed_listen_with_curve_end_to_end(keys: dict[str, Path], toy_model: Path, toy_scene: Path) -> None:
    """``sed-listen --curve-*`` on all interfaces: no warning, the allowed subscriber gets events."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = zmq.Context()
    sub = _subscriber(ctx, f"tcp://127.0.0.1:{port}", keys["good"], keys["server_pub"])
    r = subprocess.run(
        [sys.executable, "-m", "detector.cli.listen", str(toy_scene), "--model", str(toy_model),
         "--publish", f"tcp://0.0.0.0:{port}", "--curve-secret-key", str(keys["server_sec"]),
         "--curve-allow-dir", str(keys["allow"]), "--realtime", "--log-level", "INFO"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, timeout=60,
    )
    got = []
    while sub.poll(200):
        got.append(decode(sub.recv_multipart())[1])
    ctx.destroy(linger=0)
    assert r.returncode == 0, r.stderr
    assert "reachable beyond" not in r.stderr and "(CURVE)" in r.stderr
    assert [m["label"] for m in got if m.get("event") == "onset"] == ["Sine wave", "White noise", "Beep, bleep"]


def test_control_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from detector.io import control

    endpoint = f"ipc://{tmp_path}/c"
    server = ControlServer(endpoint, lambda req: {k: v for k, v in req.items() if k != "cmd"})
    stop = threading.Event()
    t = threading.Thread(target=lambda: [server.poll(20) for _ in iter(stop.is_set, True)], daemon=True)
    t.start()
    try:
        assert control.main(["--endpoint", endpoint, "thresholds", "label=Dog", "on=0.6", "off=0.4"]) == 0
        assert json.loads(capsys.readouterr().out)["result"] == {"label": "Dog", "on": 0.6, "off": 0.4}
        assert control.main(["--endpoint", endpoint, "pause", "stream=", ]) == 1
        assert "expected a string" in capsys.readouterr().out
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert control.main(["--endpoint", f"ipc://{tmp_path}/none", "--timeout", "0.3", "ping"]) == 2
    assert "no reply" in capsys.readouterr().err


def test_security_section_of_the_config(keys: dict[str, Path], toy_model: Path, toy_scene: Path,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli import listen as cli_listen
    from detector.config import load_config

    cfg = tmp_path / "sed.toml"
    cfg.write_text(f'[security]\ncurve_secret_key = "{keys["server_sec"]}"\ncurve_allow_dir = "{keys["allow"]}"\n')
    sec = load_config(cfg).security
    assert sec.curve_secret_key == str(keys["server_sec"]) and sec.curve_allow_dir == str(keys["allow"])
    cfg.write_text(f'[security]\ncurve_secret_key = "{keys["server_sec"]}"\n')
    rc = cli_listen.main([str(toy_scene), "--model", str(toy_model), "--config", str(cfg)])
    assert rc == 2 and "needs both" in capsys.readouterr().err
    cfg.write_text("[security]\ncurve_public = 1\n")
    with pytest.raises(ValueError, match=r"\[security\] unknown key\(s\) \['curve_public'\]"):
        load_config(cfg)
