"""Network audio (RTSP, RTMP, HTTP/Icecast, SRT, UDP): an ffmpeg subprocess, with reconnection.

``NetSource("rtsp://cam.local/stream", 16000)`` runs::

    ffmpeg -nostdin -hide_banner -nostats -loglevel info [timeouts] -i URL \\
           -vn -sn -dn -ac 1 -ar 16000 -f f32le -

and a reader thread moves its stdout into a ring buffer, as the microphone's
PortAudio callback does. A stream that stops (ffmpeg exits, or reads nothing for
``timeout_s``) is *lost*: ``state = "reconnecting"``, one gap is counted, and ffmpeg
is restarted with exponential backoff (1 s doubling to 30 s, +-20 % jitter) until the
source is closed. The gap is measured from the last audio before the loss to the
first after it (``gap_seconds``) and never filled, exactly as for the microphone, so
the pipeline closes open events (``reason: "gap"``) and advances ``stream_time``.

A URL ffmpeg reports a duration for (a file on a web server) ends like a file when
ffmpeg reaches its end; a live stream (no duration) is reconnected instead.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import numpy as np

from detector.sources.base import Source, SourceError, SourceState
from detector.sources.ring import RingBuffer

__all__ = ["NET_SCHEMES", "NetSource", "is_url", "redact_url"]

log = logging.getLogger(__name__)

NET_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp")
"""URL schemes read with ffmpeg. ``tcp://`` is left out: it is how ZeroMQ endpoints
(``--publish tcp://127.0.0.1:5557``) are written, and raw container bytes over plain
TCP are rare (``ffmpeg -i tcp://... -f s16le - | sed-listen -`` still works).
``icecast://`` is ffmpeg's protocol for *sending* to a server; listeners use the
mount's ``http://`` URL."""

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HOSTLESS_SCHEMES = ("udp",)
"""``udp://:1234`` / ``udp://@:1234`` listens on a local port: no host needed."""

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2
"""Each wait is multiplied by a uniform factor in ``1 +- BACKOFF_JITTER``, so many
sources that lost one server do not all retry at the same instant."""
TIMEOUT_S = 10.0
"""ffmpeg's network timeout, and how long a running stream may deliver nothing."""
WARN_EVERY_S = 60.0
"""A failure reason that repeats is logged at WARNING at most this often (DEBUG otherwise)."""
_READ_BYTES = 1 << 13
_STDERR_LINES = 20
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def is_url(spec: str) -> bool:
    """``True`` for anything shaped ``scheme://...`` (a network source, known or not)."""
    return bool(_URL_RE.match(spec.strip()))


def _netloc(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


def redact_url(url: str) -> str:
    """The URL without user, password and query (they often hold credentials): the stream id."""
    try:
        parts = urlsplit(url.strip())
        netloc = _netloc(parts)
    except ValueError:
        return url.strip().split("@")[-1].split("?")[0]
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))


def validate_url(url: str) -> SplitResult:
    """Check scheme, host and port; raise :class:`SourceError` with one clear line."""
    text = url.strip()
    shown = redact_url(text)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:  # urllib: "Port out of range 0-65535", "Port could not be cast ..."
        raise SourceError(f"{shown}: bad port in the URL ({e}); accepted: a number 1..65535") from e
    scheme = parts.scheme.lower()
    if scheme not in NET_SCHEMES:
        hint = ""
        if scheme == "tcp":
            hint = (" (tcp:// is a ZeroMQ endpoint here, e.g. --publish; for raw audio over TCP "
                    "use 'ffmpeg -i tcp://... -f s16le -ar 16000 -ac 1 - | sed-listen -')")
        elif scheme == "icecast":
            hint = " (icecast:// is for sending to a server; listen with the mount's http:// URL)"
        raise SourceError(
            f"{shown}: URL scheme {scheme + '://'!r} not supported{hint}; accepted: "
            + ", ".join(f"{s}://" for s in NET_SCHEMES)
        )
    if port is not None and not 1 <= port <= 65535:
        raise SourceError(f"{shown}: port {port} in the URL; accepted: 1..65535")
    if not parts.hostname and scheme not in _HOSTLESS_SCHEMES:
        raise SourceError(f"{shown}: no host in the URL; expected e.g. {scheme}://HOST[:PORT]/PATH")
    if parts.hostname and not re.fullmatch(r"[A-Za-z0-9._:\-%]+", parts.hostname):
        raise SourceError(f"{shown}: host {parts.hostname!r} is not a host name or IP address")
    if scheme == "srt" and port is None:
        raise SourceError(f"{shown}: srt:// needs a port, e.g. srt://HOST:9000")
    return parts


def _timeout_args(scheme: str, timeout_s: float) -> list[str]:
    us = str(round(timeout_s * 1e6))
    if scheme in ("rtsp", "rtsps"):
        # TCP-interleaved RTP: no UDP ports to open through firewalls/NAT, no packet loss.
        return ["-rtsp_transport", "tcp", "-timeout", us]
    return ["-rw_timeout", us]


@dataclass
class _Segment:
    """Audio of one ffmpeg run: a ring, when its first and last samples arrived."""

    ring: RingBuffer
    first_at: float | None = None  # monotonic time of its first audio
    last_at: float | None = None  # monotonic time of its last audio
    done: bool = False  # ffmpeg has exited; nothing more will be written
    lost_at: float | None = None  # monotonic time of the last audio before a loss, if one precedes
    retries: int = 0  # failed attempts since that loss (or since the start)
    carry: bytes = b""
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_LINES))


class NetSource(Source):
    """Live audio from a network URL, decoded by ffmpeg to float32 mono at ``sample_rate``.

    Counters as for the microphone: ``gaps`` (streams lost after audio had flowed),
    ``gap_seconds`` (wall-clock seconds between the last audio before a loss and the
    first after it), ``reconnects`` (reconnections that delivered audio again),
    ``overruns``/``dropped_samples`` (ring buffer full: the pipeline fell behind) and
    ``nonfinite_samples``. ``connect_failures`` counts ffmpeg runs that ended without
    any audio (unreachable, refused, not found).

    Args:
        url: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``http://``, ``https://``,
            ``srt://`` or ``udp://`` URL (see :data:`NET_SCHEMES`).
        sample_rate: output rate in Hz (ffmpeg resamples to it).
        ring_seconds: audio held between the reader thread and :meth:`read`.
        timeout_s: network timeout; also how long a running stream may be silent on the
            wire before it counts as lost.
        backoff_start_s, backoff_max_s: first and largest wait between reconnection attempts.
        ffmpeg: the ffmpeg executable (name on ``PATH`` or a path).
    """

    is_live = True

    def __init__(
        self,
        url: str,
        sample_rate: int,
        ring_seconds: float = 10.0,
        stream_id: str | None = None,
        timeout_s: float = TIMEOUT_S,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        parts = validate_url(url)
        super().__init__(stream_id or redact_url(url), sample_rate)
        if not 0 < backoff_start_s <= backoff_max_s or timeout_s <= 0 or ring_seconds <= 0:
            raise ValueError(
                f"backoff_start_s={backoff_start_s!r}, backoff_max_s={backoff_max_s!r}, "
                f"timeout_s={timeout_s!r}, ring_seconds={ring_seconds!r}: need "
                "0 < backoff_start_s <= backoff_max_s and positive timeout/ring"
            )
        exe = shutil.which(ffmpeg)
        if exe is None:
            raise SourceError(
                f"{self.stream_id}: network sources need ffmpeg, which is not installed "
                f"({ffmpeg!r} not found on PATH); install it with 'apt-get install ffmpeg'"
            )
        self.url = url.strip()
        self.scheme = parts.scheme.lower()
        self.timeout_s = float(timeout_s)
        self.backoff_start_s = float(backoff_start_s)
        self.backoff_max_s = float(backoff_max_s)
        self.reconnects = 0
        self.connect_failures = 0
        self.attempts = 0
        self._exe = exe
        self._ring_samples = max(1, round(ring_seconds * self.sample_rate))
        self._segments: deque[_Segment] = deque()
        self._seg_lock = threading.Lock()
        self._closed = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False  # a finite input reached its end
        self._link: SourceState = "starting"  # the supervisor's view; read() publishes it as ``state``
        self._link_message: str | None = None
        self._dropped_before = 0
        self._overruns_before = 0
        self._last_warn: dict[str, float] = {}
        self._rng = random.Random()

    # -- the ffmpeg child ------------------------------------------------------------

    def command(self) -> list[str]:
        """The ffmpeg command line (the URL as given, credentials included)."""
        return [
            self._exe, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
            *_timeout_args(self.scheme, self.timeout_s), "-i", self.url,
            "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(self.sample_rate), "-f", "f32le", "-",
        ]

    def start(self) -> None:
        """Start the supervisor thread (connects in the background; never raises for the network)."""
        if self._thread is not None:
            return
        log.info("%s: reading with ffmpeg; decoding to %g kHz mono", self.stream_id, self.sample_rate / 1000)
        self._thread = threading.Thread(target=self._supervise, name=f"{self.stream_id}-ffmpeg", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        delay = self.backoff_start_s
        lost_at: float | None = None
        retries = 0
        while not self._closed.is_set():
            self.attempts += 1
            seg = _Segment(RingBuffer(self._ring_samples), lost_at=lost_at, retries=retries)
            with self._seg_lock:
                self._segments.append(seg)
            rc, finite, stalled = self._run_once(seg)
            if self._closed.is_set():
                return
            got_audio = seg.first_at is not None
            if got_audio:
                delay, retries = self.backoff_start_s, 0
            retries += 1
            if finite and rc == 0 and got_audio and not stalled:
                self._finished = True
                self._link_message = "end of input"
                log.info("%s: end of input", self.stream_id)
                return
            reason = self._reason(seg, rc, stalled)
            if got_audio:
                self.gaps += 1
                lost_at = seg.last_at
            else:
                self.connect_failures += 1
            wait = delay * self._rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
            verb = "lost" if got_audio else "cannot be read"
            self._link = "reconnecting"
            self._link_message = (
                f"stream {verb} ({reason}); retry {retries} in {wait:.1f} s"
            )
            self._warn(reason, self._link_message)
            if self._closed.wait(wait):
                return
            delay = min(2 * delay, self.backoff_max_s)

    def _warn(self, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(reason, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._last_warn[reason] = now
            log.warning("%s: %s", self.stream_id, text)
        else:
            log.debug("%s: %s", self.stream_id, text)

    @staticmethod
    def _reason(seg: _Segment, rc: int | None, stalled: bool) -> str:
        if stalled:
            return "no data from the server"
        lines = [ln for ln in seg.stderr if ln.strip()]
        last = lines[-1] if lines else ""
        if rc == 0:
            return "the server closed the connection"
        if last:
            return last.strip()
        return f"ffmpeg exited with status {rc}"

    def _run_once(self, seg: _Segment) -> tuple[int | None, bool, bool]:
        """Run ffmpeg once into ``seg``; return (exit status, finite input?, stalled?)."""
        try:
            proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0,
            )
        except OSError as e:
            seg.stderr.append(f"cannot run ffmpeg: {e}")
            seg.done = True
            return None, False, False
        with self._proc_lock:
            self._proc = proc
        finite = threading.Event()
        err = threading.Thread(target=self._stderr, args=(proc, seg, finite), daemon=True)
        err.start()
        stalled = threading.Event()
        watchdog = threading.Thread(target=self._watchdog, args=(proc, seg, stalled), daemon=True)
        watchdog.start()
        assert proc.stdout is not None
        try:
            while True:
                data = proc.stdout.read(_READ_BYTES)
                if not data:
                    break
                self._put(seg, data)
        except (OSError, ValueError) as e:
            seg.stderr.append(f"reading ffmpeg's output failed: {e}")
        rc = proc.wait()
        err.join(timeout=1.0)
        seg.done = True
        with self._proc_lock:
            self._proc = None
        return rc, finite.is_set(), stalled.is_set()

    def _put(self, seg: _Segment, data: bytes) -> None:
        data = seg.carry + data
        usable = len(data) - len(data) % 4
        seg.carry = data[usable:]
        if not usable:
            return
        now = time.monotonic()
        if seg.first_at is None:
            seg.first_at = now
            if seg.lost_at is not None:
                self.reconnects += 1
            self._link = "running"
            self._link_message = (
                f"reconnected after {seg.retries} attempt(s)" if seg.lost_at is not None else None
            )
            if seg.lost_at is not None:
                log.warning("%s: %s", self.stream_id, self._link_message)
            else:
                log.info("%s: connected; audio flowing", self.stream_id)
        seg.last_at = now
        seg.ring.write(np.frombuffer(data[:usable], dtype="<f4").astype(np.float32))

    def _stderr(self, proc: subprocess.Popen[bytes], seg: _Segment, finite: threading.Event) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _DURATION_RE.search(line)
            if m and seg.first_at is None:
                finite.set()
            if line:
                seg.stderr.append(line.replace(self.url, self.stream_id))
                log.debug("%s: ffmpeg: %s", self.stream_id, seg.stderr[-1])

    def _watchdog(self, proc: subprocess.Popen[bytes], seg: _Segment, stalled: threading.Event) -> None:
        """Kill an ffmpeg that delivered audio and then nothing for ``timeout_s``."""
        while proc.poll() is None and not self._closed.is_set():
            last = seg.last_at
            if last is not None and time.monotonic() - last > self.timeout_s:
                stalled.set()
                proc.kill()
                return
            self._closed.wait(min(1.0, self.timeout_s / 4))

    # -- reading ---------------------------------------------------------------------

    def read(self, max_samples: int) -> np.ndarray | None:
        """Up to ``max_samples`` float32 samples; empty when none are ready (or at a gap).

        Audio of two ffmpeg runs is never returned in one read: the read that reaches
        a lost stream's end returns what is left of it, and the first read of the next
        run adds the gap to ``gap_seconds`` (so the pipeline skips it before feeding).
        Returns ``None`` after :meth:`close` or at the end of a finite input.
        """
        if max_samples <= 0:
            raise ValueError(f"max_samples={max_samples!r}: must be > 0")
        if self._closed.is_set():
            return None
        if self._thread is None:
            self.start()
        boundary = False
        with self._seg_lock:
            while len(self._segments) > 1 and self._segments[0].done and not self._segments[0].ring.available:
                old = self._segments.popleft()
                boundary |= old.first_at is not None
                self._retire(old)
            seg = self._segments[0] if self._segments else None
        if seg is None or boundary:  # one empty read between two runs' audio
            self.state = self._link if self._link != "starting" else self.state
            self.message = self._link_message
            return np.zeros(0, dtype=np.float32)
        if seg.lost_at is not None and seg.first_at is not None:
            self.gap_seconds += max(0.0, seg.first_at - seg.lost_at)
            seg.lost_at = None
        out = self._finite(seg.ring.read(max_samples))
        self._update_counters(seg)
        if not out.shape[0]:
            # The old run is drained: now say what the supervisor knows (lost, back, ended).
            if self._finished and seg.done and len(self._segments) == 1:
                self.state = "ended"
                self.message = self._link_message
                return None
            self.state = self._link if self._link != "starting" else self.state
            self.message = self._link_message
        elif self.state != "running" and seg.first_at is not None:
            self.state = "running"
            self.message = self._link_message
        return out

    def _retire(self, seg: _Segment) -> None:
        self._dropped_before += seg.ring.dropped_samples
        self._overruns_before += seg.ring.overruns

    def _update_counters(self, seg: _Segment) -> None:
        with self._seg_lock:
            live = list(self._segments)
        self.dropped_samples = self._dropped_before + sum(s.ring.dropped_samples for s in live)
        self.overruns = self._overruns_before + sum(s.ring.overruns for s in live)

    def stats(self) -> dict[str, Any]:
        d = super().stats()
        d.update(reconnects=self.reconnects, connect_failures=self.connect_failures)
        return d

    def close(self) -> None:
        """Stop ffmpeg and the threads; safe to call twice."""
        self._closed.set()
        with self._proc_lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)
        self.state = "ended"
