"""sed-mqtt and sed-listen --mqtt against a real mosquitto broker on 127.0.0.1.

The broker is Debian's ``mosquitto`` (bin/setup installs it), started per test on a
free port with a temp config. The bridge is driven by a real ZeroMQ PUB speaking the
wire format (:mod:`detector.io.wire`), or by a real ``sed-listen`` on a real clip.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from detector.io.mqtt import MqttConfig, discovery_config, parse_mqtt_url, slug
from detector.io.wire import encode, envelope

mqtt = pytest.importorskip("paho.mqtt.client")

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (bin/setup)")
DEADLINE_S = 20.0
STREAM = "mic:kitchen"
LABELS = ("Dog", "Baby cry, infant cry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process on 127.0.0.1:``port``; ``restart`` keeps the port."""

    def __init__(self, workdir: Path, password: tuple[str, str] | None = None) -> None:
        self.port = _free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # "user": as root, mosquitto would switch to user mosquitto, who cannot read tmp_path
        lines = [f"listener {self.port} 127.0.0.1", "persistence false",
                 f"user {getpass.getuser()}"]
        if password is None:
            lines.append("allow_anonymous true")
        else:
            assert MOSQUITTO_PASSWD is not None
            pw = workdir / "passwd"
            subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pw), *password], check=True,
                           capture_output=True, timeout=10)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


class Collector:
    """A paho client subscribed to ``#``: every message, in order, with its retain flag."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: [c.subscribe(t, qos=1) for t in topics]
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload.decode("utf-8"), bool(msg.retain)))
            self._cond.notify_all()

    def wait(self, pred: Callable[[str, str, bool], bool], after: int = 0,
             timeout: float = DEADLINE_S) -> tuple[str, str, bool]:
        """The first message from index ``after`` on that satisfies ``pred``."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[after:]:
                    if pred(*m):
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    tail = "\n".join(f"{t} {p[:120]}" for t, p, _ in self.messages[-30:])
                    raise AssertionError(f"no matching MQTT message in {timeout} s; last:\n{tail}")
                self._cond.wait(left)

    def wait_topic(self, topic: str, payload: str | None = None, after: int = 0,
                   timeout: float = DEADLINE_S) -> tuple[str, str, bool]:
        return self.wait(lambda t, p, _r: t == topic and (payload is None or p == payload),
                         after, timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    made: list[Collector] = []
    yield made
    for c in made:
        c.close()


# -- Home Assistant's discovery schema (the parts sed uses) ------------------------------

_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def check_ha_binary_sensor(topic: str, payload: dict[str, Any], prefix: str = "homeassistant") -> None:
    """Home Assistant's MQTT discovery rules for a binary_sensor, as documented
    (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery and
    .../binary_sensor.mqtt/): topic ``<prefix>/binary_sensor/[<node_id>/]<object_id>/config``
    with ids of ``[a-zA-Z0-9_-]``; required ``state_topic``; a device needs identifiers
    or connections; availability entries need a topic."""
    parts = topic.split("/")
    assert parts[0] == prefix and parts[1] == "binary_sensor" and parts[-1] == "config", topic
    assert len(parts) in (4, 5) and all(_ID.match(p) for p in parts[2:-1]), topic
    for key, kind in (("name", str), ("unique_id", str), ("state_topic", str),
                      ("availability", list), ("device", dict)):
        assert isinstance(payload.get(key), kind), f"{key}: {payload.get(key)!r}"
    for key in ("state_topic", "json_attributes_topic"):
        assert not set(payload.get(key, "")) & set("+#"), f"{key} is a wildcard"
    assert payload.get("availability_mode", "latest") in ("all", "any", "latest")
    for a in payload["availability"]:
        assert isinstance(a["topic"], str) and a["topic"]
        assert set(a) <= {"topic", "payload_available", "payload_not_available", "value_template"}
    device = payload["device"]
    assert device.get("identifiers") or device.get("connections")
    assert set(device) <= {"identifiers", "connections", "name", "manufacturer", "model",
                           "sw_version", "hw_version", "suggested_area", "via_device",
                           "configuration_url", "model_id", "serial_number"}
    assert payload.get("device_class") in (None, "sound", "smoke", "safety", "problem")
    allowed = {"name", "unique_id", "state_topic", "payload_on", "payload_off", "availability",
               "availability_mode", "device", "device_class", "json_attributes_topic", "qos",
               "origin", "expire_after", "force_update", "icon", "object_id", "value_template"}
    assert set(payload) <= allowed, set(payload) - allowed


# -- unit: URL and payload shapes -----------------------------------------------------


@pytest.mark.parametrize("url, why", [
    ("http://broker:1883", "scheme 'http'"), ("broker:1883", "scheme"),
    ("mqtt://broker:0", "port 0"), ("mqtt://broker:70000", "bad port"),
    ("mqtt://broker:abc", "bad port"), ("mqtt://:1883", "no host"),
    ("mqtt://broker/topic", "path"),
])
def test_bad_broker_url_is_one_clear_line(url: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_mqtt_url(url)
    text = str(e.value)
    assert why in text and "mqtt://HOST[:PORT]" in text and "\n" not in text


def test_broker_url_defaults_and_credentials() -> None:
    u = parse_mqtt_url("mqtts://ha%40home:s%3Acret@broker.lan")
    assert (u.scheme, u.host, u.port, u.username, u.password) == (
        "mqtts", "broker.lan", 8883, "ha@home", "s:cret")
    assert "s:cret" not in repr(u) + str(u)
    assert parse_mqtt_url("mqtt://10.0.0.2").port == 1883


def test_discovery_payload_matches_home_assistant_schema() -> None:
    cfg = MqttConfig(url=parse_mqtt_url("mqtt://h"))
    seen: set[str] = set()
    for stream in ("mic:default", "kitchen.flac", "bridge"):
        for label in ("Dog", "Baby cry, infant cry", "Smoke detector, smoke alarm"):
            topic, payload = discovery_config(cfg, stream, label)
            check_ha_binary_sensor(topic, payload)
            assert payload["unique_id"] not in seen
            seen.add(payload["unique_id"])
            assert payload["state_topic"].startswith("sed/")
    assert slug("Baby cry, infant cry") == "baby_cry_infant_cry"
    # a stream called "bridge" must not land on the bridge's own topics
    _, p = discovery_config(cfg, "bridge", "Dog")
    assert not p["state_topic"].startswith("sed/bridge/")


# -- end to end: a real PUB -> sed-mqtt -> mosquitto ----------------------------------


class FakeDaemon:
    """A real ZeroMQ PUB speaking wire schema 1 for one stream."""

    def __init__(self, session: str = "s1") -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.session = session
        self.seq = 0
        self.t = 0.0

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _send(self, kind: str, **payload: Any) -> None:
        m = envelope(kind, STREAM, self.seq, self.session, time.time(), self.t)
        m.update(payload)
        self.sock.send_multipart(encode(m))
        self.seq += 1
        self.t += 0.1

    def status(self, state: str = "running") -> None:
        self._send("status", state=state, level_dbfs=-30.0, peak_dbfs=-10.0, speed=1.0,
                   load=0.1, latency_ms={"last": 1.0, "p50": 1.0, "p99": 2.0},
                   dropped_samples=0, overruns=0, gaps=0, patches=1, open_events=0)

    def event(self, kind: str, label: str, event_id: int) -> None:
        self._send("event", event=kind, label=label, mid="/m/x", event_id=event_id, start=0.0,
                   end=None if kind != "offset" else self.t, start_wall=time.time(),
                   end_wall=None, duration=0.5, peak=0.9, mean=0.8, score=0.7,
                   **({"reason": "score"} if kind == "offset" else {}))

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _sed_mqtt(broker_url: str, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [str(REPO / "bin" / "sed-mqtt"), broker_url, "--connect", endpoint,
           "--stats-interval", "1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60.0) -> str:
    """stderr of ``proc`` up to and including the first line holding ``needle``."""
    assert proc.stderr is not None
    seen: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return "".join(seen)
    raise AssertionError(f"no {needle!r} from sed-mqtt in {timeout} s; stderr so far:\n"
                         + "".join(seen))


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def _until_heard(daemon: FakeDaemon, col: Collector, topic: str) -> None:
    """Send status until the bridge has heard the stream (ZeroMQ's slow joiner)."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        daemon.status()
        try:
            col.wait_topic(topic, "online", timeout=0.2)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the bridge never announced {topic}")


S = "sed/mic_kitchen"
BRIDGE_AVAIL = "sed/bridge/sed/availability"


def test_bridge_discovery_states_retained_and_last_will(
    broker: Broker, collectors: list[Collector]
) -> None:
    col = Collector(broker.port)
    collectors.append(col)
    daemon = FakeDaemon()
    args = ["--label", ",".join(LABELS)]  # "Dog,Baby cry, infant cry": read as --labels reads it
    proc = _sed_mqtt(broker.url, daemon.endpoint, *args)
    try:
        col.wait_topic(BRIDGE_AVAIL, "online")
        _until_heard(daemon, col, f"{S}/availability")
        # discovery for both labels, retained, at first hearing; states OFF
        configs = {}
        for label in LABELS:
            topic = f"homeassistant/binary_sensor/sed_mic_kitchen/{slug(label)}/config"
            _t, payload, _r = col.wait_topic(topic)
            configs[label] = json.loads(payload)
            check_ha_binary_sensor(topic, configs[label])
            assert configs[label]["name"] == label
            assert configs[label]["device"]["identifiers"] == ["sed_mic_kitchen"]
            col.wait_topic(configs[label]["state_topic"], "OFF")
        col.wait_topic(f"{S}/status")
        # an onset turns the sensor ON and the event JSON is published
        n = len(col.messages)
        daemon.event("onset", "Dog", 7)
        _t, ev, retained = col.wait_topic(f"{S}/event/dog", after=n)
        assert json.loads(ev)["event"] == "onset" and not retained
        col.wait_topic(f"{S}/state/dog", "ON", after=n)
        daemon.event("onset", "Cat", 8)  # not a chosen label: no sensor
        daemon.event("offset", "Dog", 7)
        col.wait_topic(f"{S}/state/dog", "OFF", after=n)
        daemon.event("onset", "Baby cry, infant cry", 9)
        col.wait_topic(f"{S}/state/baby_cry_infant_cry", "ON", after=n)
        # a late subscriber gets the retained states, discovery and availability
        late = Collector(broker.port)
        collectors.append(late)
        for topic, value in ((f"{S}/state/baby_cry_infant_cry", "ON"), (f"{S}/state/dog", "OFF"),
                             (BRIDGE_AVAIL, "online"), (f"{S}/availability", "online")):
            _t, _p, retained = late.wait_topic(topic, value)
            assert retained, topic
        late.wait_topic("homeassistant/binary_sensor/sed_mic_kitchen/dog/config")
        stats = json.loads(late.wait_topic("sed/bridge/sed/stats")[1])
        assert stats["received"] >= 4 and stats["published"] > 0 and stats["dropped"] == 0
        assert not any("cat" in t for t, _p, _r in col.messages)
        # SIGKILL: no goodbye, so the broker publishes the last will
        n = len(col.messages)
        proc.kill()
        proc.wait(timeout=10)
        col.wait_topic(BRIDGE_AVAIL, "offline", after=n)
    finally:
        _stop(proc)
        daemon.close()


def test_bridge_survives_broker_restart(broker: Broker, collectors: list[Collector]) -> None:
    daemon = FakeDaemon()
    proc = _sed_mqtt(broker.url, daemon.endpoint)  # no --label: sensors at first event
    try:
        col = Collector(broker.port)
        collectors.append(col)
        col.wait_topic(BRIDGE_AVAIL, "online")
        _until_heard(daemon, col, f"{S}/availability")
        daemon.event("onset", "Dog", 1)
        check_ha_binary_sensor(
            "homeassistant/binary_sensor/sed_mic_kitchen/dog/config",
            json.loads(col.wait_topic("homeassistant/binary_sensor/sed_mic_kitchen/dog/config")[1]))
        col.wait_topic(f"{S}/state/dog", "ON")
        col.close()
        collectors.remove(col)
        broker.stop()  # no persistence: every retained message is gone with it
        daemon.status()
        broker.start()
        after = Collector(broker.port)
        collectors.append(after)
        # the bridge reconnects and re-publishes what was retained
        after.wait_topic(BRIDGE_AVAIL, "online")
        after.wait_topic(f"{S}/state/dog", "ON")
        after.wait_topic("homeassistant/binary_sensor/sed_mic_kitchen/dog/config")
        n = len(after.messages)
        daemon.event("offset", "Dog", 1)
        after.wait_topic(f"{S}/event/dog", after=n)
        after.wait_topic(f"{S}/state/dog", "OFF", after=n)
        stats = json.loads(after.wait(
            lambda t, p, _r: t == "sed/bridge/sed/stats" and json.loads(p)["reconnects"] >= 1)[1])
        assert stats["connected"] is True
    finally:
        err = _stop(proc)
        daemon.close()
    assert proc.returncode == 0, err
    assert "connected to MQTT broker" in err and "(again)" in err


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd not installed")
def test_wrong_password_is_one_clear_line(tmp_path: Path, collectors: list[Collector]) -> None:
    b = Broker(tmp_path, password=("sed", "right-pw"))
    try:
        env = {**os.environ, "SED_MQTT_PASSWORD": "wrong-pw"}
        r = subprocess.run(
            [str(REPO / "bin" / "sed-mqtt"), f"mqtt://sed@127.0.0.1:{b.port}", "--connect",
             "tcp://127.0.0.1:1", "--log-level", "ERROR"],
            capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("sed-mqtt: error: MQTT broker mqtt://127.0.0.1:") and "refused" in lines[0]
        assert "wrong-pw" not in r.stderr
        # the right password from a file connects
        pw = tmp_path / "pw"
        pw.write_text("right-pw\n")
        col_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        col_client.username_pw_set("sed", "right-pw")
        assert col_client.connect("127.0.0.1", b.port) == 0
        col_client.disconnect()
        proc = _sed_mqtt(f"mqtt://127.0.0.1:{b.port}", "tcp://127.0.0.1:1",
                         "--username", "sed", "--password-file", str(pw))
        # wait for the connection itself: on a loaded machine start-up alone can take
        # seconds, and a SIGTERM before the handlers are set would kill it (-15)
        head = _wait_for_line(proc, "connected to MQTT broker")
        assert proc.poll() is None, head
        err = head + _stop(proc)
        assert proc.returncode == 0 and "connected to MQTT broker" in err, err
    finally:
        b.stop()


OPENSSL = shutil.which("openssl")


def _certs(d: Path, host_san: str) -> dict[str, Path]:
    """A CA and a broker certificate it signs, naming only ``host_san`` (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)  # type: ignore[list-item]

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sed test CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=broker",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text(f"subjectAltName={host_san}\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
        str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"),
        "-out", str(d / "server.crt"))
    return {"ca": d / "ca.crt", "crt": d / "server.crt", "key": d / "server.key"}


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed (bin/setup)")
def test_tls_with_cafile_and_insecure(broker: Broker, collectors: list[Collector], tmp_path: Path) -> None:
    """mqtts://: the right CA connects; a certificate naming another host is refused with
    one line unless --insecure; the bridge's messages reach a plain listener."""
    certs = _certs(tmp_path, "DNS:broker.example")
    tls_port = _free_port()
    broker.stop()
    broker.conf.write_text(broker.conf.read_text() + "\n".join([
        f"listener {tls_port} 127.0.0.1", f"cafile {certs['ca']}", f"certfile {certs['crt']}",
        f"keyfile {certs['key']}", ""]))
    broker.start()
    col = Collector(broker.port)
    collectors.append(col)
    url = f"mqtts://127.0.0.1:{tls_port}"
    r = subprocess.run([str(REPO / "bin" / "sed-mqtt"), url, "--cafile", str(certs["ca"]),
                        "--connect", "tcp://127.0.0.1:1", "--log-level", "ERROR"],
                       capture_output=True, text=True, timeout=30)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"sed-mqtt: error: TLS with MQTT broker {url} failed") and "--insecure" in lines[0]
    proc = _sed_mqtt(url, "tcp://127.0.0.1:1", "--cafile", str(certs["ca"]), "--insecure",
                     "--node-id", "tls")
    try:
        col.wait_topic("sed/bridge/tls/availability", "online")
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    col.wait_topic("sed/bridge/tls/availability", "offline")


def test_listen_mqtt_in_process_from_a_real_file(broker: Broker, collectors: list[Collector]) -> None:
    """sed-listen --mqtt on a real clip: status, availability, then offline when it ends."""
    col = Collector(broker.port)
    collectors.append(col)
    clip = REPO / "tests" / "data" / "baby_cry.flac"
    r = subprocess.run(
        [str(REPO / "bin" / "sed-listen"), str(clip), "--no-publish", "--mqtt", broker.url,
         "--mqtt-node-id", "test", "--json"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = "sed/baby_cry_flac"
    status = json.loads(col.wait(lambda t, p, _r: t == f"{s}/status"
                                 and json.loads(p)["state"] == "ended")[1])
    assert status["stream"] == "baby_cry.flac"
    col.wait_topic(f"{s}/availability", "offline")
    col.wait_topic("sed/bridge/test/availability", "offline")  # a clean close says so
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events, "the clip has events (the JSON sink shows them)"
    for e in events:  # every event reached MQTT, and every sensor ends OFF
        col.wait(lambda t, p, _r, e=e: t == f"{s}/event/{slug(e['label'])}"
                 and json.loads(p)["seq"] == e["seq"])
        col.wait_topic(f"homeassistant/binary_sensor/test_baby_cry_flac/{slug(e['label'])}/config")
    for label in {e["label"] for e in events}:
        assert [p for t, p, _r in col.messages if t == f"{s}/state/{slug(label)}"][-1] == "OFF"


def test_real_listener_over_curve_to_sed_mqtt(
    broker: Broker, collectors: list[Collector], tmp_path: Path
) -> None:
    """sed-listen (CURVE) -> sed-mqtt (its allowed key) -> mosquitto, on a real clip in real time."""
    from detector.io import security

    server_pub, server_sec = security.keygen(tmp_path / "keys", "server")
    bridge_pub, bridge_sec = security.keygen(tmp_path / "keys", "bridge")
    allow = tmp_path / "allowed"
    allow.mkdir()
    (allow / bridge_pub.name).write_bytes(bridge_pub.read_bytes())
    col = Collector(broker.port)
    collectors.append(col)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    bridge = _sed_mqtt(broker.url, endpoint, "--curve-secret-key", str(bridge_sec),
                       "--curve-server-key", str(server_pub))
    try:
        col.wait_topic(BRIDGE_AVAIL, "online")
        clip = REPO / "detector" / "data" / "demo.flac"
        listen = subprocess.Popen(
            [str(REPO / "bin" / "sed-listen"), str(clip), "--realtime", "--publish", endpoint,
             "--curve-secret-key", str(server_sec), "--curve-allow-dir", str(allow)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            col.wait_topic("sed/demo_flac/availability", "online", timeout=60)
            # (a live subscriber sees retain=False; the late one above checks the flag)
            col.wait(lambda t, p, _r: t.startswith("sed/demo_flac/state/") and p == "ON", timeout=60)
            topic = col.wait(lambda t, _p, _r: t.startswith(
                "homeassistant/binary_sensor/sed_demo_flac/"))[0]
            check_ha_binary_sensor(topic, json.loads(
                next(p for t, p, _r in col.messages if t == topic)))
            ev = json.loads(col.wait(lambda t, _p, _r: t.startswith("sed/demo_flac/event/"))[1])
            assert ev["schema"] == 1 and ev["stream"] == "demo.flac"
        finally:
            listen.send_signal(signal.SIGTERM)
            listen.communicate(timeout=30)
        col.wait_topic("sed/demo_flac/availability", "offline")  # status "ended"
    finally:
        err = _stop(bridge)
    assert bridge.returncode == 0, err


def test_send_never_blocks_and_counts_drops() -> None:
    """The in-process sink's contract: a full queue drops (counted), it never waits."""
    from detector.io.mqtt import MqttBridge

    bridge = MqttBridge(MqttConfig(url=parse_mqtt_url(f"mqtt://127.0.0.1:{_free_port()}"),
                                   queue_size=2))
    daemon_msg = envelope("event", STREAM, 0, "s", time.time(), 0.0) | {
        "event": "onset", "label": "Dog", "event_id": 1}
    t0 = time.monotonic()
    for _ in range(5):
        bridge.send(daemon_msg)
    bridge.send(envelope("scores", STREAM, 1, "s", time.time(), 0.0))  # not bridged
    assert time.monotonic() - t0 < 0.5
    assert (bridge.stats.received, bridge.stats.dropped) == (5, 3)


def test_listen_mqtt_without_a_broker_still_detects(tmp_path: Path) -> None:
    """No broker: sed-listen warns, goes on, and reports what it could not deliver."""
    clip = REPO / "tests" / "data" / "baby_cry.flac"
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REPO / "bin" / "sed-listen"), str(clip), "--no-publish", "--json",
         "--mqtt", f"mqtt://127.0.0.1:{_free_port()}"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "events still come out on the other sinks"
    assert "no answer from MQTT broker" in r.stderr
    stats = re.search(r"mqtt mqtt://\S+: received=(\d+) published=0 dropped=(\d+)", r.stderr)
    assert stats and int(stats[2]) > 0, r.stderr
    assert time.monotonic() - t0 < 60


def test_listen_rejects_bad_mqtt_url() -> None:
    r = subprocess.run([str(REPO / "bin" / "sed-listen"), "x.wav", "--mqtt", "http://h:1883"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "sed-listen: error: MQTT broker 'http://h:1883': scheme 'http'; accepted: "
        "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS), port 1-65535"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_bad_label_is_one_line_with_a_suggestion() -> None:
    """--label is read against the model's labels before any connection is made."""
    r = subprocess.run([str(REPO / "bin" / "sed-mqtt"), "mqtt://127.0.0.1:1", "--label", "Dog,Baby cyr"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        "sed-mqtt: error: --label: 'Baby cyr' (did you mean 'Baby cry, infant cry'?) is not among "
        "the model's "), lines
