"""Prometheus metrics: ``sed-listen --metrics 127.0.0.1:9108`` serves ``/metrics``.

:class:`MetricsServer` is a sink: it reads the daemon's own wire messages (``status``
for the per-stream counters, event onsets for events by label) and keeps the last
values; a scrape renders them. The hop-latency histogram is fed per scored hop by the
pipeline (:meth:`MetricsServer.observe_latency`). Nothing here blocks the audio path:
``send`` updates a few numbers under a lock, and the HTTP server runs on threads of
its own (prometheus_client's WSGI server).

Binding beyond loopback logs a warning, as for the event socket: ``/metrics`` has no
authentication. Each metric and its labels are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

try:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import start_http_server
    from prometheus_client.registry import Collector
except ImportError as e:  # a checkout updated without re-running bin/setup
    raise ImportError(
        "sed-listen --metrics needs prometheus_client: .venv/bin/pip install 'prometheus_client>=0.17' "
        "(or run bin/setup)"
    ) from e

__all__ = ["DEFAULT_METRICS_ADDRESS", "LATENCY_BUCKETS", "MetricsServer", "parse_metrics_address"]

log = logging.getLogger(__name__)

DEFAULT_METRICS_ADDRESS = "127.0.0.1:9108"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Hop latency histogram buckets (seconds): from audio read to its events published."""
STATES = ("starting", "running", "reconnecting", "paused", "ended", "error")

# status field -> (metric name without _total, help); all cumulative.
_COUNTERS = {
    "patches": ("sed_patches", "Patches scored."),
    "dropped_samples": ("sed_dropped_samples", "Input samples lost (source and pipeline overruns)."),
    "overruns": ("sed_overruns", "Overruns: times audio was dropped because processing fell behind."),
    "gaps": ("sed_gaps", "Input gaps: times the device or network stream was lost."),
    "gap_seconds": ("sed_gap_seconds", "Seconds of audio missing in gaps (never filled)."),
    "reconnects": ("sed_reconnects", "Times the input came back after a gap."),
    "nonfinite_samples": ("sed_nonfinite_samples", "NaN, Inf or out-of-range input samples replaced by 0."),
    "clips": ("sed_clips_written", "Event clips written (sed-listen --clips)."),
    "clip_errors": ("sed_clip_errors", "Event clips or sidecars that failed to write (e.g. a full disk)."),
    "clips_dropped": ("sed_clips_dropped", "Event clips dropped because the clip writer fell behind."),
}
_GAUGES = {
    "load": ("sed_realtime_factor",
             "Processing seconds per second of audio over the last status interval (< 1 keeps up)."),
    "speed": ("sed_speed", "Seconds of audio processed per wall-clock second over the last status interval."),
    "open_events": ("sed_open_events", "Events open now."),
    "level_dbfs": ("sed_level_dbfs", "RMS input level over the last status interval (dBFS, floor -120)."),
}


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (host 127.0.0.1) -> ``(host, port)``.

    The host must resolve; the port must be 1..65535. Errors say what was received.
    """
    accepted = "accepted: HOST:PORT or PORT with a port from 1 to 65535 (e.g. 127.0.0.1:9108)"
    raw = text.strip()
    m = re.fullmatch(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]*)|(?P<only>\d+)", raw)
    if m is None:
        raise ValueError(f"metrics address {text!r}; {accepted}")
    host = m["v6"] or m["host"] or ("127.0.0.1" if m["only"] else "")
    port_text = m["only"] or m["port"]
    if not host:
        raise ValueError(
            f"metrics address {text!r} has no host; {accepted} (0.0.0.0:PORT serves every interface)"
        )
    if not port_text.isdigit():
        raise ValueError(f"metrics address {text!r}: port {port_text!r} is not a number; {accepted}")
    if not 1 <= int(port_text) <= 65535:
        raise ValueError(f"metrics address {text!r}: port {int(port_text)} is out of range; {accepted}")
    try:
        socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"metrics address {text!r}: cannot resolve host {host!r} ({e})") from e
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an interface address


@dataclass
class _Stream:
    status: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # onsets by label


class _Collector(Collector):
    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        streams = self.server.snapshot()
        for key, (name, doc) in _COUNTERS.items():
            fam = CounterMetricFamily(name, doc, labels=["stream"])
            for sid, s in streams.items():
                if key in s.status:
                    fam.add_metric([sid], float(s.status[key]))
            yield fam
        events = CounterMetricFamily("sed_events", "Events (onsets) by label.", labels=["stream", "label"])
        for sid, s in streams.items():
            for label, n in sorted(s.events.items()):
                events.add_metric([sid, label], float(n))
        yield events
        for key, (name, doc) in _GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=["stream"])
            for sid, s in streams.items():
                if key in s.status:
                    gauge.add_metric([sid], float(s.status[key]))
            yield gauge
        state = GaugeMetricFamily("sed_stream_state", "1 for the stream's current state, 0 for the others.",
                                  labels=["stream", "state"])
        seen = GaugeMetricFamily("sed_last_status_timestamp_seconds",
                                 "Unix time of the stream's last status message.", labels=["stream"])
        for sid, s in streams.items():
            now = s.status.get("state")
            for name in STATES:
                state.add_metric([sid, name], 1.0 if name == now else 0.0)
            if "wall_time" in s.status:
                seen.add_metric([sid], float(s.status["wall_time"]))
        yield state
        yield seen


class MetricsServer:
    """Serve ``/metrics`` on ``address`` (``HOST:PORT``); a sink for the daemon's messages.

    Raises ``ValueError`` for a bad address and ``OSError`` (one line naming the
    address) when the port cannot be bound.
    """

    def __init__(self, address: str = DEFAULT_METRICS_ADDRESS) -> None:
        self.host, self.port = parse_metrics_address(address)
        if not _is_loopback(self.host):
            log.warning(
                "serving metrics on %s:%d: reachable beyond this machine, unauthenticated; "
                "bind to 127.0.0.1 (the default) or let only the Prometheus server reach it",
                self.host, self.port,
            )
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self._latency = Histogram(
            "sed_hop_latency_seconds",
            "Per hop: from reading the audio that completes a patch to publishing its events.",
            ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        try:
            self._httpd, self._thread = start_http_server(self.port, self.host, self.registry)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {address}: {e.strerror or e}") from e
        self.bound = (self.host, int(self._httpd.server_port))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound[1]}/metrics"

    def snapshot(self) -> dict[str, _Stream]:
        with self._lock:
            return {sid: _Stream(dict(s.status), dict(s.events)) for sid, s in self._streams.items()}

    def wants(self, topic: str) -> bool:
        return topic.startswith(("status.", "event."))

    def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind not in ("status", "event"):
            return
        with self._lock:
            s = self._streams.setdefault(message["stream"], _Stream())
            if kind == "status":
                s.status = message
            elif message.get("event") == "onset":
                s.events[message["label"]] = s.events.get(message["label"], 0) + 1

    def observe_latency(self, stream: str, seconds: float) -> None:
        self._latency.labels(stream).observe(seconds)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)
