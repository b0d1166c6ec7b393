"""The monitor's ZeroMQ SUB loop: connection tracking, seq accounting and coalescing.

:class:`Subscriber` runs in a thread (a Textual thread worker in the app). It
connects a SUB socket to ``sed-listen``'s PUB endpoint, decodes every message with
:func:`detector.io.wire.decode`, counts seq gaps and restarts (:class:`SeqTracker`)
and keeps only the latest ``scores`` message per stream (:class:`Coalescer`).
At most once per ``post_interval_s`` it hands a :class:`~detector.monitor.state.Batch`
to ``deliver`` — so 8 streams at 50 scores/s cost the UI ``1 / post_interval_s``
updates a second, not 400.

ZeroMQ reconnects a SUB socket by itself when the publisher restarts; a socket
monitor turns its handshake/disconnect events into :class:`ConnState`, and a
heartbeat notices a publisher that vanished without closing TCP. A failed
handshake (a CURVE key the publisher does not allow, CURVE on one side only, the
wrong server key) is :attr:`ConnState.REFUSED` until a handshake succeeds.

With ``curve_secret_key``/``curve_server_key`` the SUB socket is a CURVE client
(:func:`detector.io.security.configure_client`). With ``control`` every successful
handshake is followed by a ``snapshot`` request to ``sed-listen``'s control
socket, whose open events enter the batch like live ones but bypass the
:class:`SeqTracker`: they repeat the stream's last sent seq (``docs/wire.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from detector.io.control import request
from detector.io.endpoint import check_endpoint
from detector.io.publisher import is_loopback_endpoint
from detector.io.security import PUBLIC_SUFFIX, configure_client, load_keypair, load_public
from detector.io.wire import DEFAULT_ENDPOINT, WireError, decode

from .link import Batch, Connection, ConnState, SeqTracker

__all__ = ["Coalescer", "Subscriber", "SubscriberConfig"]

log = logging.getLogger(__name__)

_MS_PER_S = 1000.0
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | _HANDSHAKE_FAILED
)


def handshake_failure(event: int, value: int) -> str:
    """One line saying why a handshake failed, from a socket monitor event and its value."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"handshake refused (ZAP status {value}): is this monitor's public key in "
            "sed-listen's --curve-allow-dir?"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "handshake failed: CURVE on one side only (check --curve-* on both)"
        return f"handshake failed: protocol error {value:#x}"
    return "handshake failed: wrong --curve-server-key, or CURVE on one side only?"


@dataclass(frozen=True)
class SubscriberConfig:
    """How the subscriber connects, batches and decides a publisher is gone.

    ``status`` messages arrive about once a second (``docs/wire.md``), so a
    publisher silent for ``stale_after_s`` has missed several.
    """

    endpoint: str = DEFAULT_ENDPOINT
    topics: tuple[str, ...] = ("event.", "scores.", "status.")
    post_interval_s: float = 0.1
    """Shortest time between two batches posted to the UI (bounds the UI update rate)."""
    poll_interval_s: float = 0.05
    """Longest blocking wait; bounds how late the loop sees ``stop``."""
    stale_after_s: float = 3.0
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    reconnect_interval_s: float = 0.2
    reconnect_interval_max_s: float = 2.0
    max_batch_messages: int = 2000
    """Event/status messages held for one batch; beyond it the oldest are dropped."""
    receive_hwm: int = 10_000
    """ZeroMQ receive high-water mark (messages queued before ZeroMQ drops)."""
    curve_secret_key: Path | None = None
    """This monitor's CURVE key pair (a ``.key_secret`` file); needs ``curve_server_key``."""
    curve_server_key: Path | None = None
    """``sed-listen``'s public CURVE key (its ``.key`` file)."""
    control: str | None = None
    """``sed-listen``'s control endpoint (local only): ask it for the open events on
    every connection. ``None``: wait for the events' periodic updates."""
    snapshot_timeout_s: float = 0.5
    """Longest wait for the snapshot reply (the loop receives nothing meanwhile)."""

    def __post_init__(self) -> None:
        for name in ("post_interval_s", "poll_interval_s", "stale_after_s", "snapshot_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}; must be > 0 seconds")
        if self.max_batch_messages < 1:
            raise ValueError(f"max_batch_messages={self.max_batch_messages}; must be >= 1")
        self._check_curve()
        check_endpoint(self.endpoint, "--connect")
        if self.control is not None:
            check_endpoint(self.control, "--control")
        if self.control is not None and not is_loopback_endpoint(self.control):
            raise ValueError(
                f"--control {self.control!r}: the control socket is local only; accepted: "
                "tcp://127.0.0.1:PORT, tcp://localhost:PORT, ipc://PATH or inproc://NAME"
            )

    def _check_curve(self) -> None:
        """Both key files or neither; each must load (the loaders' messages name the file)."""
        secret, server = self.curve_secret_key, self.curve_server_key
        if (secret is None) != (server is None):
            raise ValueError(
                "CURVE needs both --curve-secret-key FILE (this monitor's .key_secret) and "
                f"--curve-server-key FILE (sed-listen's public {PUBLIC_SUFFIX}); got only "
                f"{'--curve-secret-key' if server is None else '--curve-server-key'}"
            )
        if secret is None or server is None:
            return
        try:
            load_keypair(secret)
        except ValueError as e:
            raise ValueError(f"--curve-secret-key: {e}") from e
        try:
            load_public(server)
        except ValueError as e:
            raise ValueError(
                f"--curve-server-key: {e}; expected sed-listen's public {PUBLIC_SUFFIX} file"
            ) from e


class Coalescer:
    """Collects messages between two posts; keeps only the latest scores per stream."""

    def __init__(self, max_messages: int) -> None:
        self._ordered: deque[dict[str, Any]] = deque()
        self._scores: dict[str, dict[str, Any]] = {}
        self._max = max_messages
        self.coalesced = 0
        self.dropped = 0

    def add(self, message: dict[str, Any]) -> None:
        """Queue one decoded message."""
        if message["type"] == "scores":
            if message["stream"] in self._scores:
                self.coalesced += 1
            self._scores[message["stream"]] = message
            return
        self._ordered.append(message)
        if len(self._ordered) > self._max:
            self._ordered.popleft()
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._ordered) + len(self._scores)

    def drain(self) -> tuple[tuple[dict[str, Any], ...], int, int]:
        """(messages, coalesced, dropped) since the last drain; events/status first."""
        out = (*self._ordered, *self._scores.values())
        counts = (self.coalesced, self.dropped)
        self._ordered.clear()
        self._scores.clear()
        self.coalesced = self.dropped = 0
        return out, *counts


class Subscriber:
    """The SUB loop; call :meth:`run` in a thread and set ``stop`` to end it.

    ``deliver`` is called from that thread with each :class:`Batch`; in the app it
    is ``App.post_message``-based, which is thread-safe.
    """

    def __init__(
        self,
        config: SubscriberConfig,
        deliver: Callable[[Batch], object],
        context: zmq.Context[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self._context = context or zmq.Context.instance()
        self._clock = clock
        self.tracker = SeqTracker()
        self._coalescer = Coalescer(config.max_batch_messages)
        self._connection = Connection(ConnState.WAITING, config.endpoint, since=clock())
        self._invalid = 0
        self._last_error = ""
        self._last_message = -1.0
        self._snapshot: str | None = None
        self.batches_posted = 0
        self.messages_received = 0
        self.snapshots = 0
        """Snapshots received (one per connection with ``config.control``)."""
        self.snapshot_events = 0
        """Open events received in snapshots."""

    @property
    def connection(self) -> Connection:
        """The current connection state."""
        return self._connection

    def _set_state(self, state: ConnState, detail: str = "", connected: bool = False) -> None:
        c = self._connection
        if state == c.state and detail == c.detail and not connected:
            return
        since = self._clock() if state != c.state else c.since
        self._connection = Connection(
            state, c.endpoint, since, c.connects + (1 if connected else 0), detail
        )
        log.info("connection %s: %s %s", c.endpoint, state.value, detail)

    def _socket(self) -> zmq.Socket[Any]:
        cfg = self.config
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, cfg.receive_hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, round(cfg.reconnect_interval_s * _MS_PER_S))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, round(cfg.reconnect_interval_max_s * _MS_PER_S))
        sock.setsockopt(zmq.HEARTBEAT_IVL, round(cfg.heartbeat_interval_s * _MS_PER_S))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(cfg.heartbeat_timeout_s * _MS_PER_S))
        if cfg.curve_secret_key is not None and cfg.curve_server_key is not None:
            configure_client(sock, cfg.curve_secret_key, cfg.curve_server_key)
        for topic in cfg.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        return sock

    def run(self, stop: threading.Event) -> None:
        """Receive until ``stop`` is set; posts a final ``STOPPED`` batch."""
        cfg = self.config
        sock = self._socket()
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        try:
            sock.connect(cfg.endpoint)
        except zmq.ZMQError as e:
            monitor.close(linger=0)
            sock.close(linger=0)
            raise ValueError(
                f"cannot connect to {cfg.endpoint!r}: {e}; accepted: tcp://HOST:PORT, ipc://PATH"
            ) from e
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        next_post = self._clock()
        posted_connection: Connection | None = None
        try:
            while not stop.is_set():
                wait_s = max(0.0, min(cfg.poll_interval_s, next_post - self._clock()))
                if len(self._coalescer) == 0 and posted_connection == self._connection:
                    wait_s = cfg.poll_interval_s
                ready = dict(poller.poll(round(wait_s * _MS_PER_S)))
                if monitor in ready:
                    self._drain_monitor(monitor)
                if sock in ready:
                    self._drain_socket(sock)
                now = self._clock()
                if (
                    self._connection.state == ConnState.RECEIVING
                    and now - self._last_message > cfg.stale_after_s
                ):
                    self._set_state(ConnState.STALE, f"silent for {cfg.stale_after_s:g} s")
                due = now >= next_post
                pending = len(self._coalescer) or self._snapshot is not None
                if due and (pending or posted_connection != self._connection):
                    self._post()
                    posted_connection = self._connection
                    next_post = now + cfg.post_interval_s
        finally:
            poller.unregister(monitor)
            poller.unregister(sock)
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            self._set_state(ConnState.STOPPED)
            self._post()

    def _post(self) -> None:
        messages, coalesced, dropped = self._coalescer.drain()
        batch = Batch(
            messages=messages,
            seq=self.tracker.snapshot(),
            connection=self._connection,
            coalesced=coalesced,
            invalid=self._invalid,
            dropped_events=dropped,
            last_error=self._last_error,
            snapshot=self._snapshot,
        )
        self._invalid = 0
        self._last_error = ""
        self._snapshot = None
        self.batches_posted += 1
        self._deliver(batch)

    def _drain_socket(self, sock: zmq.Socket[Any]) -> None:
        """Read everything queued (bounded by the receive HWM)."""
        for _ in range(self.config.receive_hwm):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = self._clock()
            try:
                _, message = decode(frames)
                self.tracker.observe(message, now)
            except (WireError, KeyError, TypeError, ValueError) as e:
                self._invalid += 1
                self._last_error = str(e)
                log.warning("dropping bad message: %s", e)
                continue
            self.messages_received += 1
            self._last_message = now
            self._coalescer.add(message)
            if self._connection.state != ConnState.RECEIVING:
                self._set_state(ConnState.RECEIVING)

    def _drain_monitor(self, monitor: zmq.Socket[Any]) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = int(event["event"])
            refused = self._connection.state == ConnState.REFUSED
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._set_state(ConnState.CONNECTED, "publisher connected", connected=True)
                if self.config.control is not None:
                    self._request_snapshot(self.config.control)
            elif kind & _HANDSHAKE_FAILED:
                reason = handshake_failure(kind, int(event["value"]))
                if not refused:
                    log.warning("%s: %s", self.config.endpoint, reason)
                self._set_state(ConnState.REFUSED, reason)
            elif refused:
                continue  # reconnect attempts after a refusal: keep saying why
            elif kind == zmq.EVENT_DISCONNECTED:
                self._set_state(ConnState.DISCONNECTED, "publisher went away; reconnecting")
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                if self._connection.state not in (ConnState.WAITING, ConnState.DISCONNECTED):
                    self._set_state(ConnState.WAITING)

    def _request_snapshot(self, endpoint: str) -> None:
        """Ask the control socket for the open events; queue them like live event messages.

        They skip the :class:`SeqTracker`: each repeats its stream's last sent seq and is
        not a new message, so counting it would make the live messages still in flight
        look like a seq reset. A failure is logged and reported in the next batch.
        """
        try:
            reply = request(
                endpoint, "snapshot", self.config.snapshot_timeout_s, context=self._context
            )
            if not reply.get("ok"):
                raise ValueError(f"refused: {reply.get('error')}")
            events = reply["result"]["events"]
            if not isinstance(events, list):
                raise TypeError(f"events is a {type(events).__name__}; expected a list")
        except (TimeoutError, zmq.ZMQError, ValueError, KeyError, TypeError) as e:
            self._snapshot = f"no snapshot from {endpoint}: {e}"
            log.warning("%s", self._snapshot)
            return
        for message in events:
            if not isinstance(message, dict) or message.get("type") != "event" or not {
                "stream", "session", "event_id"
            } <= message.keys():
                self._invalid += 1
                self._last_error = f"snapshot: not an event message: {str(message)[:80]}"
                log.warning("dropping bad snapshot entry: %.200s", message)
                continue
            self._coalescer.add(message)
            self.snapshot_events += 1
        self.snapshots += 1
        self._snapshot = ""
        log.info("snapshot from %s: %d open event(s)", endpoint, len(events))
