"""Sinks for wire messages: a ZeroMQ PUB socket and JSON lines on a text stream.

A sink has ``send(message: dict)`` and ``close()``, and may say which topics it takes
(``wants(topic)``; a sink without it takes everything). The PUB socket never blocks the
detector: a slow or dead subscriber only loses its own messages once the
high-water mark fills (ZeroMQ PUB semantics). It is an XPUB socket, so it knows what its
subscribers asked for: ``scores.<stream>`` messages (one per hop and stream) are only
built for a stream someone subscribed to (docs/benchmarks.md, issue 21).

Binding beyond loopback logs a warning unless CURVE is on
(:class:`detector.io.security.CurveServerConfig`): then traffic is encrypted and only
subscribers whose public key is allowed can connect.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, TextIO
from urllib.parse import urlsplit

import zmq

from detector.io.endpoint import check_endpoint
from detector.io.wire import encode

_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_LAST = int(zmq.NOBLOCK)

if TYPE_CHECKING:
    from detector.io.security import CurveServerConfig

__all__ = ["JsonLinesSink", "ListSink", "Sink", "ZmqPublisher", "is_loopback_endpoint", "sink_wants"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def sink_wants(sink: Sink, topic: str) -> bool:
    """Whether ``sink`` takes messages on ``topic`` (a sink without ``wants`` takes all)."""
    wants = getattr(sink, "wants", None)
    return True if wants is None else bool(wants(topic))


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``inproc://``, ``ipc://`` and ``tcp://`` on a loopback address."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("inproc", "ipc"):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a hostname


class ZmqPublisher:
    """PUB socket bound to ``endpoint``; multipart ``[topic, JSON]`` per message.

    ``hwm`` (messages) bounds what is queued per subscriber; beyond it that
    subscriber's messages are dropped and :meth:`send` never blocks. ``curve``
    turns on encryption and authentication (with a ZAP thread of its own). Without
    ``context`` the socket gets a context of its own, terminated by :meth:`close`, which
    therefore waits up to ``linger_ms`` to deliver what is queued (give a shared
    ``context`` for ``inproc://`` endpoints).
    """

    def __init__(
        self,
        endpoint: str,
        hwm: int = 10000,
        linger_ms: int = 1000,
        context: zmq.Context | None = None,
        curve: CurveServerConfig | None = None,
    ) -> None:
        check_endpoint(endpoint, "publish endpoint", bind=True)
        if not is_loopback_endpoint(endpoint) and curve is None:
            log.warning(
                "publishing on %s: reachable beyond this machine, unencrypted and "
                "unauthenticated; bind to tcp://127.0.0.1, or turn on CURVE with "
                "--curve-secret-key and --curve-allow-dir (docs/security.md)",
                endpoint,
            )
        self.endpoint = endpoint
        # A context of its own (unless one is given for inproc://): closing then waits at
        # most linger_ms for queued messages, so the final offsets go out on exit.
        self._own_ctx = context is None or curve is not None
        self._ctx: zmq.Context[Any] = zmq.Context() if context is None or self._own_ctx else context
        # XPUB: a PUB socket that also hands us its subscribers' (un)subscriptions.
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._auth: Any = None  # zmq.auth.thread.ThreadAuthenticator when CURVE is on
        if curve is not None:
            from detector.io.security import start_server

            self._auth = start_server(self._sock, self._ctx, curve)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._stop_auth()
            raise OSError(f"cannot bind ZeroMQ PUB socket to {endpoint}: {e}") from e
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0
        self.dropped = 0
        self._subscriptions: set[bytes] = set()  # topic prefixes someone subscribed to
        self.subscription_version = 0  # changes whenever that set does

    def poll_subscriptions(self) -> int:
        """Take the (un)subscriptions that arrived; return :attr:`subscription_version`.

        Without ``XPUB_VERBOSE`` ZeroMQ passes the first subscription to a prefix and the
        last unsubscription from it, so a set of prefixes is exact.
        """
        sock = self._sock
        while not sock.closed and int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            msg = sock.recv(zmq.NOBLOCK)
            if msg[:1] == b"\x01":
                self._subscriptions.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._subscriptions.discard(msg[1:])
            else:
                continue
            self.subscription_version += 1
        return self.subscription_version

    def wants(self, topic: str) -> bool:
        """Whether any subscriber's prefix matches ``topic`` (as of the last poll)."""
        t = topic.encode("utf-8")
        return any(t.startswith(prefix) for prefix in self._subscriptions)

    def send(self, message: dict[str, Any]) -> None:
        topic, body = encode(message)
        try:
            # send_multipart, without its per-call flag arithmetic on enums (~5 us a message)
            self._sock.send(topic, _MORE)
            self._sock.send(body, _LAST)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    @property
    def encrypted(self) -> bool:
        return self._auth is not None

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx:
            self._ctx.term()

    def close(self) -> None:
        if self._sock.closed:
            return
        self._sock.close()  # linger flushes what is queued
        self._stop_auth()


class JsonLinesSink:
    """One JSON object per line on ``stream`` (stdout by default), for ``--json | jq``.

    ``kinds`` selects message types (events only by default). A closed pipe (the
    reader exited) stops output without raising; ``broken`` tells.
    """

    def __init__(self, stream: TextIO | None = None, kinds: Iterable[str] = ("event",)) -> None:
        self.stream = stream or sys.stdout
        self.kinds = frozenset(kinds)
        self.broken = False

    def wants(self, topic: str) -> bool:
        return topic.split(".", 1)[0] in self.kinds

    def send(self, message: dict[str, Any]) -> None:
        if self.broken or message["type"] not in self.kinds:
            return
        try:
            self.stream.write(json.dumps(message, separators=(",", ":")) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            log.warning("stdout closed by its reader; JSON output stopped")

    def close(self) -> None:
        if self.broken:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True


class ListSink:
    """Collects messages in memory (offline ``detect_file``)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def close(self) -> None:
        pass
