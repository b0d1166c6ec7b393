"""Event clips: each event's audio as FLAC plus a JSON sidecar, written off the audio path.

Three parts, each with one concern:

* :class:`ClipHistory` -- a preallocated float32 ring of one stream's most recent audio,
  indexed by absolute sample number (stream time x rate). Written by the pipeline loop.
* :class:`ClipRecorder` -- one per stream, on the pipeline loop: follows the stream's
  event messages (onset, updates, offset), adds the clip's path to the offset, and
  copies ``[onset - pre, min(offset, onset + max) + post)`` out of the history as soon
  as that audio has arrived. It never waits: a copy is a few hundred kB, and the job is
  handed to the writer with a non-blocking put (a full queue is counted, not waited on).
  Only when every stream is an offline file (nothing is lost by waiting) does a full
  queue hold the loop back instead, so that file analysis keeps every clip.
* :class:`ClipWriter` -- one thread for all streams: encodes FLAC, writes the clip and
  its sidecar (each via a temporary file and a rename), then applies retention (total
  size, age). A write error (a full disk: ``ENOSPC``) is counted per stream, logged and
  reported on the stream's ``status``; detection goes on.

Clip audio is never invented: a hole in the stream (a gap, a pause, an overrun) or the
end of the stream ends the clip early, and the sidecar says so (``truncated``).
See ``docs/wire.md`` (the offset's ``clip`` field, the status counters).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "ClipConfig",
    "ClipHistory",
    "ClipJob",
    "ClipRecorder",
    "ClipWriter",
    "enforce_retention",
    "parse_age",
    "write_file",
]

log = logging.getLogger(__name__)

MAX_ROLL_S = 60.0
"""Longest accepted pre-roll or post-roll (seconds)."""
MAX_CLIP_S = 3600.0
"""Longest accepted event part of a clip (seconds)."""
CLIP_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_.+\.(flac|json)$")
"""File names this module writes; retention touches no other file in the directory."""
_AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_ERROR_LOG_INTERVAL_S = 60.0
OFFLINE_WAIT_S = 30.0
"""Longest an offline (files only) run waits for room in the writer's queue (a hung disk)."""


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or plain seconds -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    value = float(m.group(1)) * _AGE_UNITS[m.group(2) or "s"] if m else 0.0
    if not m or value <= 0:
        raise ValueError(
            f"--clips-max-age {text!r}; accepted: a positive number with an optional unit "
            "s, m, h, d or w (e.g. 7d, 12h, 3600)"
        )
    return value


@dataclass(frozen=True)
class ClipConfig:
    """Where and how much to record. Times in seconds; ``None`` = no such limit."""

    directory: Path
    pre_s: float = 2.0  # audio kept before the onset
    post_s: float = 1.0  # audio kept after the offset
    max_s: float = 30.0  # longest event part of a clip (long events are capped)
    max_bytes: int | None = 1024 * 2**20  # retention: total size of the clips and sidecars
    max_age_s: float | None = None  # retention: delete clips older than this
    queue_size: int = 64  # clip jobs waiting for the writer; beyond that they are dropped
    retention_interval_s: float = 60.0  # age retention runs at least this often

    def __post_init__(self) -> None:
        for name, flag in (("pre_s", "--clip-pre"), ("post_s", "--clip-post")):
            v = getattr(self, name)
            if not 0 <= v <= MAX_ROLL_S:
                raise ValueError(f"{flag} {v:g} s; accepted: 0 to {MAX_ROLL_S:g} s")
        if not 0 < self.max_s <= MAX_CLIP_S:
            raise ValueError(f"--clip-max {self.max_s:g} s; accepted: more than 0, at most {MAX_CLIP_S:g} s")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"--clips-max-mb {self.max_bytes / 2**20:g}; accepted: a size > 0 MB")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"--clips-max-age {self.max_age_s:g} s; accepted: > 0")
        if self.queue_size < 1 or self.retention_interval_s <= 0:
            raise ValueError(
                f"queue_size={self.queue_size}, retention_interval_s={self.retention_interval_s}; "
                "both must be > 0"
            )


class ClipHistory:
    """The last ``capacity`` samples of one stream, by absolute sample index.

    ``write(pos, x)`` appends ``x`` as samples ``pos .. pos + len(x)``; a ``pos`` other
    than :attr:`end` is a hole (audio skipped), after which only the new audio is
    held. Storage is allocated once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity}; must be >= 1 sample")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.capacity = capacity
        self.end = 0  # absolute index one past the newest sample
        self._valid_from = 0  # first absolute index since the last hole

    @property
    def start(self) -> int:
        """First absolute index still held."""
        return max(self._valid_from, self.end - self.capacity)

    def write(self, pos: int, x: np.ndarray) -> None:
        if pos != self.end:
            self._valid_from = pos
            self.end = pos
        n = x.size
        if n >= self.capacity:
            x, pos, n = x[n - self.capacity :], pos + n - self.capacity, self.capacity
        i = pos % self.capacity
        first = min(n, self.capacity - i)
        self._buf[i : i + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self.end = pos + n

    def read(self, a: int, b: int) -> tuple[int, np.ndarray]:
        """A copy of samples ``[a, b)`` clamped to what is held: ``(first index, samples)``."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return a, np.zeros(0, dtype=np.float32)
        i, n = a % self.capacity, b - a
        first = min(n, self.capacity - i)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._buf[i : i + first]
        out[first:] = self._buf[: n - first]
        return a, out


@dataclass
class ClipJob:
    """Work for the writer: a clip (``audio`` set) and/or its sidecar (``sidecar`` set)."""

    stream: str
    path: Path  # the .flac; the sidecar is the same path with .json
    sample_rate: int
    audio: np.ndarray | None = None
    sidecar: dict[str, Any] | None = None


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (the one place clip bytes reach the disk)."""
    with open(path, "wb") as f:
        f.write(data)


def _put(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _encode_flac(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def enforce_retention(
    directory: Path, max_bytes: int | None, max_age_s: float | None, now: float | None = None
) -> int:
    """Delete the oldest clips (with their sidecars) until they total at most ``max_bytes``,
    and every clip older than ``max_age_s``. Only files named as this module names them
    are touched. Returns the number of clips removed."""
    now = time.time() if now is None else now
    groups: dict[str, list[tuple[Path, int, float]]] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError as e:
        log.warning("clip retention: cannot list %s: %s", directory, e)
        return 0
    for entry in entries:
        if not CLIP_NAME.match(entry.name) or not entry.is_file():
            continue
        try:
            st = entry.stat()
        except OSError:
            continue  # removed meanwhile
        groups.setdefault(entry.name.rsplit(".", 1)[0], []).append((Path(entry.path), st.st_size, st.st_mtime))
    # Oldest first: by the newest mtime of a clip's files, then by name (which starts with the time).
    order = sorted(groups, key=lambda k: (max(m for _, _, m in groups[k]), k))
    total = sum(size for files in groups.values() for _, size, _ in files)
    removed = 0
    for stem in order:
        files = groups[stem]
        too_old = max_age_s is not None and now - max(m for _, _, m in files) > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            if max_age_s is None:
                break  # sizes only: the rest are newer and fit
            continue
        for path, size, _ in files:
            try:
                path.unlink()
                total -= size
            except FileNotFoundError:
                total -= size
            except OSError as e:
                log.warning("clip retention: cannot remove %s: %s", path, e)
        removed += 1
    return removed


@dataclass
class _Counts:
    written: int = 0
    errors: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_log: float = field(default=-1e18)


_STOP = object()


class ClipWriter:
    """One thread writing every stream's clips; :meth:`submit` never blocks.

    Creating it makes the directory (an error names it) and applies retention once.
    """

    def __init__(self, config: ClipConfig) -> None:
        self.config = config
        self.directory = Path(config.directory).expanduser().resolve()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"clips directory {config.directory}: cannot create it ({e.strerror or e})") from e
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"clips directory {self.directory}: not writable by this user")
        self._queue: queue.Queue[ClipJob | object] = queue.Queue(maxsize=config.queue_size)
        self._lock = threading.Lock()
        self._counts: dict[str, _Counts] = {}
        self.removed = 0
        self._closed = False
        self._retain()
        self._thread = threading.Thread(target=self._run, name="sed-clips", daemon=True)
        self._thread.start()

    def _count(self, stream: str) -> _Counts:
        with self._lock:
            return self._counts.setdefault(stream, _Counts())

    def submit(self, job: ClipJob, wait_s: float = 0.0) -> bool:
        """Queue ``job``, waiting up to ``wait_s`` for room (0: never wait); False (and
        counted as dropped) when the queue stays full or the writer is closed."""
        if not self._closed:
            try:
                if wait_s > 0:
                    self._queue.put(job, timeout=wait_s)
                else:
                    self._queue.put_nowait(job)
                return True
            except queue.Full:
                pass
        c = self._count(job.stream)
        with self._lock:
            c.dropped += 1
        log.warning("%s: clip %s dropped: the writer is %s", job.stream, job.path.name,
                    "closed" if self._closed else f"{self.config.queue_size} jobs behind")
        return False

    def counters(self, stream: str) -> dict[str, int]:
        c = self._count(stream)
        with self._lock:
            return {"clips": c.written, "clip_errors": c.errors, "clips_dropped": c.dropped}

    def last_error(self, stream: str) -> str | None:
        c = self._count(stream)
        with self._lock:
            return c.last_error

    def _run(self) -> None:
        next_retention = time.monotonic() + self.config.retention_interval_s
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, next_retention - time.monotonic()))
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if isinstance(job, ClipJob):
                self._write(job)
            if isinstance(job, ClipJob) or time.monotonic() >= next_retention:
                self._retain()
                next_retention = time.monotonic() + self.config.retention_interval_s

    def _write(self, job: ClipJob) -> None:
        try:
            if job.audio is not None:
                _put(job.path, _encode_flac(job.audio, job.sample_rate))
            if job.sidecar is not None:
                text = json.dumps(job.sidecar, indent=1, allow_nan=False) + "\n"
                _put(job.path.with_suffix(".json"), text.encode("utf-8"))
        except (OSError, RuntimeError, ValueError) as e:  # a full disk, libsndfile, bad JSON
            self._failed(job, e)
            return
        if job.audio is not None:
            c = self._count(job.stream)
            with self._lock:
                c.written += 1

    def _failed(self, job: ClipJob, e: Exception) -> None:
        what = "clip" if job.audio is not None else "sidecar"
        msg = f"{what} {job.path.name if job.audio is not None else job.path.with_suffix('.json').name} not written: {e}"
        c = self._count(job.stream)
        now = time.monotonic()
        with self._lock:
            c.errors += 1
            c.last_error = msg
            n, quiet = c.errors, now - c.last_log < _ERROR_LOG_INTERVAL_S
            if not quiet:
                c.last_log = now
        if not quiet:
            log.warning("%s: %s (%d clip errors so far; detection goes on)", job.stream, msg, n)

    def _retain(self) -> None:
        cfg = self.config
        if cfg.max_bytes is not None or cfg.max_age_s is not None:
            self.removed += enforce_retention(self.directory, cfg.max_bytes, cfg.max_age_s)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting at most ``timeout`` s), then stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("clip writer: still busy after %.1f s; %d queued clip job(s) not written",
                        timeout, self._queue.qsize())
            return
        self._thread.join(timeout)


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.")[:limit] or "x"


@dataclass
class _Pending:
    event_id: int
    label: str
    path: Path
    onset: int  # absolute sample of the event's start
    want_from: int  # onset - pre-roll
    messages: list[dict[str, Any]]
    offset: int | None = None  # absolute sample of the event's end, once known
    cut: bool = False  # audio copied and handed to the writer
    clip_start: int = 0
    clip_end: int = 0
    truncated: str | None = None


class ClipRecorder:
    """One stream's clips, on the pipeline loop.

    Args:
        stream, session: the stream id and daemon session (for names and sidecars).
        sample_rate: samples per second of the stream.
        writer: the shared :class:`ClipWriter`.
        lag_s: the most audio (seconds) the pipeline may feed beyond the point an
            event message refers to (a patch, plus a read chunk or backlog); sizes the
            history so an onset's pre-roll is still held when the onset is decided.
        offline: every stream of the daemon is a file read as fast as possible: a full
            writer queue then makes the loop wait (up to ``OFFLINE_WAIT_S``) instead of
            dropping the clip. Never for a live stream.
    """

    def __init__(
        self, stream: str, session: str, sample_rate: int, writer: ClipWriter, lag_s: float,
        offline: bool = False,
    ) -> None:
        cfg = writer.config
        self.stream = stream
        self.session = session
        self.rate = sample_rate
        self.writer = writer
        self.pre = round(cfg.pre_s * sample_rate)
        self.post = round(cfg.post_s * sample_rate)
        self.max = round(cfg.max_s * sample_rate)
        self.history = ClipHistory(round((cfg.pre_s + cfg.max_s + cfg.post_s + 2 * lag_s + 1.0) * sample_rate))
        self._wait_s = OFFLINE_WAIT_S if offline else 0.0
        self._pending: dict[int, _Pending] = {}
        self._errors_seen = 0
        self._dropped_seen = 0

    def feed(self, pos: int, samples: np.ndarray) -> None:
        """Samples ``pos .. pos + len`` of the stream (absolute indices); cut finished clips."""
        if pos != self.history.end:
            self.flush("gap")  # a hole: clips waiting for audio end where the audio stopped
        self.history.write(pos, samples)
        self._cut_ready()

    def on_events(self, messages: Iterable[dict[str, Any]]) -> None:
        """Follow the stream's event messages; an offset gets ``"clip": path``."""
        for msg in messages:
            if msg.get("type") != "event":
                continue
            kind, eid = msg["event"], int(msg["event_id"])
            if kind == "onset":
                self._open(msg)
                continue
            p = self._pending.get(eid)
            if p is None:
                continue
            if kind == "offset":
                msg["clip"] = str(p.path)
                p.offset = round(float(msg["end"]) * self.rate)
            p.messages.append(dict(msg))
        self._cut_ready()

    def flush(self, reason: str) -> None:
        """No more audio follows contiguously (gap, pause, end): cut every waiting clip now."""
        for p in self._pending.values():
            if not p.cut:
                end = self._want_end(p)
                self._cut(p, min(end, self.history.end), reason if self.history.end < end else p.truncated)
        self._submit_done()

    def counters(self) -> dict[str, int]:
        return self.writer.counters(self.stream)

    def notice(self) -> str | None:
        """A status message when clips failed or were dropped since the last notice."""
        c = self.counters()
        if c["clip_errors"] == self._errors_seen and c["clips_dropped"] == self._dropped_seen:
            return None
        self._errors_seen, self._dropped_seen = c["clip_errors"], c["clips_dropped"]
        detail = self.writer.last_error(self.stream) if c["clip_errors"] else "the clip writer fell behind"
        return (f"{detail} ({c['clip_errors']} clip errors, {c['clips_dropped']} clips dropped so far; "
                "detection goes on)")

    # -- internals -------------------------------------------------------------------

    def _open(self, msg: dict[str, Any]) -> None:
        eid = int(msg["event_id"])
        onset = round(float(msg["start"]) * self.rate)
        when = datetime.fromtimestamp(float(msg["start_wall"]), UTC)
        name = (f"{when:%Y%m%dT%H%M%S}.{when.microsecond // 1000:03d}Z_{_slug(self.stream)}_"
                f"{_slug(str(msg['label']))}_{self.session[:8]}-{eid}.flac")
        self._pending[eid] = _Pending(eid, str(msg["label"]), self.writer.directory / name, onset,
                                      max(0, onset - self.pre), [dict(msg)])

    def _want_end(self, p: _Pending) -> int:
        capped = p.onset + self.max
        return (capped if p.offset is None else min(p.offset, capped)) + self.post

    def _cut_ready(self) -> None:
        for p in self._pending.values():
            if p.cut:
                continue
            end = self._want_end(p)
            if self.history.end >= end:
                capped = p.offset is None or p.offset > p.onset + self.max
                self._cut(p, end, "max" if capped else None)
        self._submit_done()

    def _cut(self, p: _Pending, end: int, truncated: str | None) -> None:
        start, audio = self.history.read(p.want_from, end)
        p.cut, p.clip_start, p.clip_end, p.truncated = True, start, start + audio.size, truncated
        if audio.size == 0:
            p.truncated = p.truncated or "no_audio"
            return
        # The clip now; its sidecar follows with the offset (a capped event may go on for long).
        self.writer.submit(ClipJob(self.stream, p.path, self.rate, audio=audio,
                                   sidecar=self._sidecar(p) if p.offset is not None else None),
                           self._wait_s)
        p.messages = p.messages if p.offset is None else []

    def _submit_done(self) -> None:
        done = [eid for eid, p in self._pending.items() if p.cut and p.offset is not None]
        for eid in done:
            p = self._pending.pop(eid)
            if p.messages:  # the clip went earlier (capped): the sidecar goes now
                self.writer.submit(ClipJob(self.stream, p.path, self.rate, sidecar=self._sidecar(p)),
                                   self._wait_s)

    def _sidecar(self, p: _Pending) -> dict[str, Any]:
        return {
            "clip": p.path.name,
            "stream": self.stream,
            "session": self.session,
            "label": p.label,
            "event_id": p.event_id,
            "sample_rate": self.rate,
            "clip_start": round(p.clip_start / self.rate, 6),  # stream seconds
            "clip_end": round(p.clip_end / self.rate, 6),
            "onset_in_clip": round((p.onset - p.clip_start) / self.rate, 6),  # seconds from the clip's start
            "truncated": p.truncated,
            "messages": p.messages,
        }
