"""MQTT with Home Assistant discovery: sed's events and states on a broker.

:class:`MqttBridge` is a sink (``send(message)``, ``close()``) that turns wire
messages (``docs/wire.md``) into MQTT topics (``docs/mqtt.md``)::

    sed/<stream>/event/<label>   onset/update/offset JSON           (not retained)
    sed/<stream>/state/<label>   ON / OFF                           (retained)
    sed/<stream>/status          the stream's latest status JSON    (retained)
    sed/<stream>/availability    online / offline                   (retained)
    sed/bridge/<node>/availability  online / offline, the last will (retained)
    sed/bridge/<node>/stats      the bridge's counters              (retained)
    homeassistant/binary_sensor/<node>_<stream>/<label>/config      (retained)

``send`` never blocks: messages go into a bounded queue that a worker thread
drains; a full queue drops (counted in ``stats``). The worker owns every
publish, so a state re-published after a reconnect always follows whatever paho
had queued before it. paho's own network thread (``loop_start``) reconnects with
a growing delay; on each connection the worker re-publishes availability,
discovery, states and statuses (all retained). Used by ``sed-mqtt`` (a bridge
from the ZeroMQ stream) and ``sed-listen --mqtt`` (in-process).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from detector import __version__

__all__ = [
    "BridgeStats",
    "BrokerRefused",
    "MqttBridge",
    "MqttConfig",
    "MqttUrl",
    "discovery_config",
    "parse_mqtt_url",
    "slug",
]

log = logging.getLogger(__name__)

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
RESERVED_STREAM_SLUGS = frozenset({"bridge"})
#: Stream states in which the detector is listening (others make its sensors unavailable).
LIVE_STATES = frozenset({"starting", "running", "paused"})
_STOP = object()


@dataclass(frozen=True)
class MqttUrl:
    """A broker address: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS)."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:  # never shows the password
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Parse and validate a broker URL; a bad one raises ``ValueError`` with one clear line."""
    accepted = "accepted: mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS), port 1-65535"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or "://" not in url:
        raise ValueError(f"MQTT broker {url!r}: scheme {parts.scheme or '(none)'!r}; {accepted}")
    try:
        port = parts.port
    except ValueError as e:  # non-numeric or out of 0-65535
        raise ValueError(f"MQTT broker {url!r}: bad port ({e}); {accepted}") from e
    if not parts.hostname:
        raise ValueError(f"MQTT broker {url!r}: no host; {accepted}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"MQTT broker {url!r}: port {port}; {accepted}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"MQTT broker {url!r}: unexpected path or query; {accepted}")
    return MqttUrl(
        parts.scheme, parts.hostname, port or SCHEMES[parts.scheme],
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password is not None else None,
    )


def slug(text: str) -> str:
    """A topic and Home Assistant id segment: lower case ``[a-z0-9_]``, e.g.
    ``"Baby cry, infant cry"`` -> ``baby_cry_infant_cry``, ``mic:default`` -> ``mic_default``."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or "x" + text.encode("utf-8").hex()[:16]


@dataclass(frozen=True)
class MqttConfig:
    """How the bridge connects and what it publishes. Times in seconds."""

    url: MqttUrl
    prefix: str = "sed"
    discovery_prefix: str = "homeassistant"
    node_id: str = "sed"
    """Names this bridge: its availability topic and the Home Assistant ids."""
    labels: tuple[str, ...] = ()
    """The labels that get a sensor (display names). Empty: every label, each as its
    first event arrives (the wire does not list a stream's labels)."""
    qos: int = 1
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False
    """TLS without the host name check (a self-signed broker certificate)."""
    client_id: str = ""
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    queue_size: int = 1000
    """Messages waiting for the worker; beyond it ``send`` drops (counted)."""
    stale_after_s: float = 10.0
    """A stream without a status for this long is marked offline (status is ~1/s)."""
    stats_interval_s: float = 60.0
    device_class: str = "sound"

    def __post_init__(self) -> None:
        for name in ("prefix", "discovery_prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
                raise ValueError(f"--{name.replace('_', '-')} {value!r}; expected a topic prefix "
                                 "without +, # or a leading/trailing /")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.node_id):
            raise ValueError(f"--node-id {self.node_id!r}; accepted: letters, digits, _ and -")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"--qos {self.qos}; accepted: 0, 1 or 2")
        if self.queue_size < 1 or not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f"queue_size={self.queue_size}, reconnect {self.reconnect_min_s}-"
                f"{self.reconnect_max_s} s; need queue_size >= 1 and 0 < min <= max")
        for name in ("cafile", "certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"--{name} {path}: no such file")
        if (self.cafile or self.certfile or self.insecure) and not self.url.tls:
            raise ValueError(f"--cafile/--certfile/--insecure need TLS; got {self.url}, use mqtts://")
        if self.keyfile and not self.certfile:
            raise ValueError("--keyfile needs --certfile (the client certificate it belongs to)")

    @property
    def bridge_topic(self) -> str:
        return f"{self.prefix}/bridge/{self.node_id}"


def stream_slug(stream: str) -> str:
    s = slug(stream)
    return f"{s}_stream" if s in RESERVED_STREAM_SLUGS else s


def discovery_config(cfg: MqttConfig, stream: str, label: str) -> tuple[str, dict[str, Any]]:
    """(topic, payload) of the Home Assistant MQTT discovery message for one label's
    binary sensor on one stream. One device per stream; the sensor is available while
    both the bridge and the stream are online."""
    s, lab = stream_slug(stream), slug(label)
    base = f"{cfg.prefix}/{s}"
    node = f"{cfg.node_id}_{s}"
    payload = {
        "name": label,
        "unique_id": f"{node}_{lab}",
        "state_topic": f"{base}/state/{lab}",
        "payload_on": ON,
        "payload_off": OFF,
        "json_attributes_topic": f"{base}/event/{lab}",
        "availability": [
            {"topic": f"{cfg.bridge_topic}/availability",
             "payload_available": ONLINE, "payload_not_available": OFFLINE},
            {"topic": f"{base}/availability",
             "payload_available": ONLINE, "payload_not_available": OFFLINE},
        ],
        "availability_mode": "all",
        "device_class": cfg.device_class,
        "qos": cfg.qos,
        "device": {
            "identifiers": [node],
            "name": f"sed {stream}",
            "manufacturer": "sed",
            "model": "sound event detector",
            "sw_version": __version__,
        },
        "origin": {"name": "sed", "sw_version": __version__},
    }
    return f"{cfg.discovery_prefix}/binary_sensor/{node}/{lab}/config", payload


@dataclass
class BridgeStats:
    """Cumulative counters, logged and published on ``<prefix>/bridge/<node>/stats``."""

    received: int = 0
    """Wire messages handed to :meth:`MqttBridge.send`."""
    published: int = 0
    """Messages the broker accepted (PUBACK for QoS >= 1)."""
    dropped: int = 0
    """Messages lost: queue full, broker not connected, or paho's queue full."""
    ignored: int = 0
    """Messages of no interest: scores, labels not in ``labels``, bad messages."""
    connects: int = 0
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "published": self.published, "dropped": self.dropped,
            "ignored": self.ignored, "reconnects": max(0, self.connects - 1),
            "connected": self.connected,
        }


@dataclass
class _Stream:
    id: str
    session: str
    labels: dict[str, set[int]] = field(default_factory=dict)
    """Label -> ids of its open events (ON while any is open)."""
    status: dict[str, Any] | None = None
    online: bool = True
    last_seen: float = 0.0


class BrokerRefused(ConnectionError):
    """The broker answered the connection with a refusal (bad credentials, not authorised)."""


class MqttBridge:
    """Wire messages in, MQTT out; see the module docstring. Start with :meth:`start`."""

    def __init__(self, config: MqttConfig, clock: Any = time.monotonic) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise ImportError("MQTT needs paho-mqtt: pip install 'paho-mqtt>=2'") from e
        self.config = config
        self.stats = BridgeStats()
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._streams: dict[str, _Stream] = {}
        self._resync = threading.Event()
        self._first_connack = threading.Event()
        self._refusal = ""
        self._closing = False
        self._lock = threading.Lock()  # guards stats shared with paho's thread
        self._worker: threading.Thread | None = None
        self._next_stats = clock() + config.stats_interval_s
        url = config.url
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"sed-{config.node_id}",
        )
        if url.username is not None:
            self._client.username_pw_set(url.username, url.password)
        if url.tls:
            self._client.tls_set(
                ca_certs=str(config.cafile) if config.cafile else None,
                certfile=str(config.certfile) if config.certfile else None,
                keyfile=str(config.keyfile) if config.keyfile else None,
            )
            self._client.tls_insecure_set(config.insecure)
        self._client.will_set(self._avail_topic, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        self._client.max_queued_messages_set(config.queue_size)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    @property
    def _avail_topic(self) -> str:
        return f"{self.config.bridge_topic}/availability"

    # -- lifecycle -------------------------------------------------------------------

    def start(self, wait_s: float = 5.0) -> MqttBridge:
        """Connect (first here, then again in paho's thread) and start the worker; wait up to ``wait_s`` for the
        broker's first answer. A refusal raises :class:`BrokerRefused`; no answer only
        logs a warning (paho keeps retrying)."""
        url = self.config.url
        reached = True
        try:
            self._client.connect(url.host, url.port, self.config.keepalive_s)
        except ssl.SSLError as e:  # a certificate problem does not go away by retrying
            raise BrokerRefused(
                f"TLS with MQTT broker {url} failed ({getattr(e, 'verify_message', None) or e.reason or e}); give the broker's CA with "
                "--cafile, or --insecure when the certificate names another host"
            ) from e
        except OSError as e:
            log.warning("no answer from MQTT broker %s (%s); retrying in the background", url, e)
            self._client.connect_async(url.host, url.port, self.config.keepalive_s)
            reached = False
        self._client.loop_start()
        if reached and not self._first_connack.wait(wait_s):
            log.warning("no answer from MQTT broker %s after %.0f s; retrying in the background",
                        url, wait_s)
        elif self._refusal:
            self._client.loop_stop()
            raise BrokerRefused(self._refusal)
        self._worker = threading.Thread(target=self._run, name="sed-mqtt", daemon=True)
        self._worker.start()
        return self

    def wants(self, topic: str) -> bool:
        return topic.startswith(("status.", "event."))  # scores are not bridged

    def send(self, message: dict[str, Any]) -> None:
        """Queue one wire message; never blocks (a full queue drops it, counted)."""
        if message.get("type") not in ("event", "status"):
            return  # scores: not bridged (in-process sinks get every message)
        with self._lock:
            self.stats.received += 1
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1

    def close(self, drain_s: float = 2.0) -> None:
        """Publish what is queued (up to ``drain_s``), mark the bridge offline, disconnect."""
        if self._worker is not None:
            deadline = time.monotonic() + drain_s
            while not self._queue.empty() and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()) + 0.1)
            except queue.Full:
                log.warning("MQTT queue still full after %.1f s; closing", drain_s)
            self._worker.join(timeout=drain_s + 1.0)
            self._worker = None
        if self.stats.connected:
            info = self._client.publish(self._avail_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=drain_s)
            except (RuntimeError, ValueError) as e:
                log.debug("offline not confirmed: %s", e)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self.log_stats()

    def count_ignored(self) -> None:
        """Count a message the caller could not decode."""
        with self._lock:
            self.stats.ignored += 1

    def log_stats(self) -> None:
        with self._lock:
            s = self.stats.as_dict()
        log.info("mqtt %s: %s", self.config.url, " ".join(f"{k}={v}" for k, v in s.items()))

    # -- paho's thread ---------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._refusal = (
                f"MQTT broker {self.config.url} refused the connection ({reason}); "
                "check the user name and password (and the broker's ACL)"
            )
            if self._first_connack.is_set():  # the first refusal is raised by start()
                log.error("%s; retrying", self._refusal)
            self._first_connack.set()
            return
        with self._lock:
            self.stats.connects += 1
            self.stats.connected = True
            n = self.stats.connects
        log.info("connected to MQTT broker %s%s", self.config.url, " (again)" if n > 1 else "")
        client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
        self._resync.set()  # the worker re-publishes, after what paho had queued
        self._first_connack.set()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            was = self.stats.connected
            self.stats.connected = False
        if was and not self._closing:
            log.warning("lost MQTT broker %s (%s); reconnecting", self.config.url, reason)

    def _on_publish(self, _client: Any, _userdata: Any, _mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            self.stats.published += 1

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if msg.payload == b"online":  # Home Assistant (re)started: announce the sensors again
            log.info("Home Assistant is online; re-publishing discovery")
            self._resync.set()

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._resync.is_set():
                self._resync.clear()
                self._republish()
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is _STOP:
                return
            if message is not None:
                try:
                    self._handle(message)
                except (KeyError, TypeError, ValueError) as e:
                    with self._lock:
                        self.stats.ignored += 1
                    log.warning("ignoring bad message: %s", e)
            self._housekeeping()

    def _publish(self, topic: str, payload: str | dict[str, Any], retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        if not self.stats.connected:
            if not retain:  # retained topics are re-published on reconnect
                with self._lock:
                    self.stats.dropped += 1
            return
        info = self._client.publish(topic, payload, qos=self.config.qos, retain=retain)
        if info.rc not in (0, 4):  # 4 = MQTT_ERR_NO_CONN: queued by paho, sent on reconnect
            with self._lock:
                self.stats.dropped += 1

    def _stream(self, message: dict[str, Any]) -> _Stream:
        sid, session = str(message["stream"]), str(message["session"])
        st = self._streams.get(sid)
        if st is None:
            st = self._streams[sid] = _Stream(sid, session, last_seen=self._clock())
            log.info("new stream %s: announcing %d sensor(s)", sid, len(self.config.labels))
            self._publish(f"{self.config.prefix}/{stream_slug(sid)}/availability", ONLINE, True)
            for label in self.config.labels:
                self._add_label(st, label)
        elif st.session != session:  # the daemon restarted: its open events ended unseen
            log.info("stream %s: new session %s; clearing open events", sid, session)
            st.session = session
            self._all_off(st)
        st.last_seen = self._clock()
        return st

    def _add_label(self, st: _Stream, label: str) -> None:
        st.labels[label] = set()
        topic, payload = discovery_config(self.config, st.id, label)
        self._publish(topic, payload, retain=True)
        self._publish(self._state_topic(st, label), OFF, retain=True)

    def _state_topic(self, st: _Stream, label: str) -> str:
        return f"{self.config.prefix}/{stream_slug(st.id)}/state/{slug(label)}"

    def _set_online(self, st: _Stream, online: bool) -> None:
        if st.online != online:
            st.online = online
            self._publish(f"{self.config.prefix}/{stream_slug(st.id)}/availability",
                          ONLINE if online else OFFLINE, retain=True)

    def _all_off(self, st: _Stream) -> None:
        for label, open_ids in st.labels.items():
            if open_ids:
                open_ids.clear()
                self._publish(self._state_topic(st, label), OFF, retain=True)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "event":
            label = str(message["label"])
            if self.config.labels and label not in self.config.labels:
                with self._lock:
                    self.stats.ignored += 1
                return
            st = self._stream(message)
            if label not in st.labels:
                self._add_label(st, label)
            self._set_online(st, True)
            base = f"{self.config.prefix}/{stream_slug(st.id)}"
            self._publish(f"{base}/event/{slug(label)}", message)
            open_ids = st.labels[label]
            was_on = bool(open_ids)
            if message["event"] == "offset":
                open_ids.discard(int(message["event_id"]))
            else:
                open_ids.add(int(message["event_id"]))
            if bool(open_ids) != was_on:
                self._publish(self._state_topic(st, label), ON if open_ids else OFF, retain=True)
        elif kind == "status":
            st = self._stream(message)
            st.status = message
            self._publish(f"{self.config.prefix}/{stream_slug(st.id)}/status", message, retain=True)
            state = str(message["state"])
            if state in ("ended", "error"):
                self._all_off(st)
            self._set_online(st, state in LIVE_STATES)

    def _housekeeping(self) -> None:
        now = self._clock()
        for st in self._streams.values():
            if st.online and now - st.last_seen > self.config.stale_after_s:
                log.warning("stream %s silent for %.0f s: offline", st.id, now - st.last_seen)
                self._all_off(st)
                self._set_online(st, False)
        if now >= self._next_stats:
            self._next_stats = now + self.config.stats_interval_s
            self.log_stats()
            with self._lock:
                s = self.stats.as_dict()
            self._publish(f"{self.config.bridge_topic}/stats", s, retain=True)

    def _republish(self) -> None:
        """After a (re)connection or Home Assistant's restart: every retained topic again."""
        self._publish(self._avail_topic, ONLINE, retain=True)
        for st in self._streams.values():
            base = f"{self.config.prefix}/{stream_slug(st.id)}"
            self._publish(f"{base}/availability", ONLINE if st.online else OFFLINE, retain=True)
            if st.status is not None:
                self._publish(f"{base}/status", st.status, retain=True)
            for label, open_ids in st.labels.items():
                topic, payload = discovery_config(self.config, st.id, label)
                self._publish(topic, payload, retain=True)
                self._publish(self._state_topic(st, label), ON if open_ids else OFF, retain=True)
