"""Sinks for wire messages: a ZeroMQ PUB socket and JSON lines on a text stream.

A sink has ``send(message: dict)`` and ``close()``. The PUB socket never blocks the
detector: a slow or dead subscriber only loses its own messages once the
high-water mark fills (ZeroMQ PUB semantics).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

import zmq

from detector.wire import encode

__all__ = ["JsonLinesSink", "ListSink", "Sink", "ZmqPublisher", "is_loopback_endpoint"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


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
    """PUB socket bound to ``endpoint``; multipart ``[topic, JSON]`` per message."""

    def __init__(
        self,
        endpoint: str,
        hwm: int = 10000,
        linger_ms: int = 1000,
        context: zmq.Context | None = None,
    ) -> None:
        if "://" not in endpoint:
            raise ValueError(
                f"ZeroMQ endpoint {endpoint!r}; expected e.g. tcp://127.0.0.1:5557 or ipc:///tmp/sed"
            )
        if not is_loopback_endpoint(endpoint):
            log.warning(
                "publishing on %s: reachable beyond this machine, unencrypted and "
                "unauthenticated; bind to tcp://127.0.0.1 unless you mean it",
                endpoint,
            )
        self.endpoint = endpoint
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise OSError(f"cannot bind ZeroMQ PUB socket to {endpoint}: {e}") from e
        self.bound = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sent = 0
        self.dropped = 0

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.send_multipart(encode(message), flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._sock.close()  # linger flushes what is queued


class JsonLinesSink:
    """One JSON object per line on ``stream`` (stdout by default), for ``--json | jq``.

    ``kinds`` selects message types (events only by default). A closed pipe (the
    reader exited) stops output without raising; ``broken`` tells.
    """

    def __init__(self, stream: TextIO | None = None, kinds: Iterable[str] = ("event",)) -> None:
        self.stream = stream or sys.stdout
        self.kinds = frozenset(kinds)
        self.broken = False

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
