"""Pure-Python model of what the monitor shows, fed by decoded wire messages.

Nothing here imports Textual or ZeroMQ, so the whole model is unit-testable:
build messages with :func:`detector.io.wire.envelope`, feed them to
:class:`~detector.monitor.link.SeqTracker` (every message, in the subscriber thread) and
:class:`MonitorState` (the coalesced :class:`~detector.monitor.link.Batch`, in the UI
thread), and read the streams, labels, events and status back. The connection and
sequence bookkeeping the subscriber hands over lives in :mod:`detector.monitor.link`
(its names are re-exported here).

Times: ``received_at`` / ``since`` / ``now`` are local monotonic seconds
(:func:`time.monotonic`); ``wall_time``-like fields are Unix seconds taken from
the messages; ``start`` / ``end`` / ``stream_time`` are seconds of audio.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .link import Batch, Connection, ConnState, SeqStats, SeqTracker

__all__ = [
    "EVENT_LOG_SIZE",
    "HISTORY_POINTS",
    "Batch",
    "Changes",
    "ConnState",
    "Connection",
    "EventRow",
    "LabelView",
    "MonitorState",
    "SeqStats",
    "SeqTracker",
    "StatusView",
    "StreamView",
    "matches",
]

log = logging.getLogger(__name__)

HISTORY_POINTS = 40
"""Scores kept per label for the sparkline (one point per displayed scores update)."""
EVENT_LOG_SIZE = 1000
"""Events kept in the log; the oldest are dropped beyond this."""
LEVEL_FLOOR_DBFS = -120.0
"""Floor of the wire format's level fields (``docs/wire.md``)."""


@dataclass
class LabelView:
    """One label's current score, thresholds and sparkline history."""

    label: str
    score: float
    on: float
    off: float
    active: bool
    history: deque[float]
    idle_updates: int = 0
    """Scores updates since this label was last in the top-k."""


@dataclass(frozen=True)
class StatusView:
    """A ``status`` message, with defaults for fields a publisher left out."""

    state: str
    level_dbfs: float
    peak_dbfs: float
    speed: float
    load: float
    latency_last_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    dropped_samples: int
    overruns: int
    gaps: int
    patches: int
    open_events: int
    message: str
    wall_time: float
    stream_time: float

    @classmethod
    def from_message(cls, m: Mapping[str, Any]) -> StatusView:
        """Parse a status message; missing or null numbers become NaN / 0."""
        lat = m.get("latency_ms") or {}
        return cls(
            state=str(m.get("state", "?")),
            level_dbfs=_num(m.get("level_dbfs"), LEVEL_FLOOR_DBFS),
            peak_dbfs=_num(m.get("peak_dbfs"), LEVEL_FLOOR_DBFS),
            speed=_num(m.get("speed")),
            load=_num(m.get("load")),
            latency_last_ms=_num(lat.get("last")),
            latency_p50_ms=_num(lat.get("p50")),
            latency_p99_ms=_num(lat.get("p99")),
            dropped_samples=int(m.get("dropped_samples") or 0),
            overruns=int(m.get("overruns") or 0),
            gaps=int(m.get("gaps") or 0),
            patches=int(m.get("patches") or 0),
            open_events=int(m.get("open_events") or 0),
            message=str(m.get("message") or ""),
            wall_time=_num(m.get("wall_time")),
            stream_time=_num(m.get("stream_time")),
        )


def _num(value: Any, default: float = math.nan) -> float:
    """``value`` as a float, ``default`` when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


@dataclass
class StreamView:
    """Everything known about one stream."""

    stream: str
    session: str = ""
    top: list[str] = field(default_factory=list)
    """Labels of the latest scores message, highest score first."""
    labels: dict[str, LabelView] = field(default_factory=dict)
    status: StatusView | None = None
    seq: SeqStats | None = None
    stream_time: float = 0.0
    patch_end: float = math.nan
    scores_updates: int = 0
    """Scores messages applied (after coalescing)."""
    restarted: bool = False
    """The daemon of this stream restarted while the monitor was watching."""

    def top_labels(self) -> list[LabelView]:
        """The current top-k, highest score first."""
        return [self.labels[name] for name in self.top if name in self.labels]

    def age_s(self, now: float) -> float:
        """Seconds since the last message of this stream (NaN when none yet)."""
        return now - self.seq.last_received if self.seq is not None else math.nan


@dataclass
class EventRow:
    """One sound event: created by its onset (or any later message on late join)."""

    stream: str
    session: str
    event_id: int
    label: str
    mid: str
    phase: str
    """``open`` until the offset, then ``closed``; ``orphaned`` if the daemon restarted first."""
    start: float
    end: float | None
    start_wall: float
    end_wall: float | None
    duration: float
    peak: float
    mean: float
    score: float
    reason: str = ""
    version: int = 0
    """``MonitorState.events_version`` at the row's last change."""

    @property
    def key(self) -> str:
        """A unique id for the row (stream, session, event id)."""
        return f"{self.stream}\x1f{self.session}\x1f{self.event_id}"


@dataclass(frozen=True)
class Changes:
    """What one :meth:`MonitorState.apply_batch` changed, so the UI redraws only that."""

    streams: frozenset[str]
    events: bool
    connection: bool
    new_streams: bool


class MonitorState:
    """Streams, labels, events, status and connection, fed by :class:`Batch` es."""

    def __init__(
        self,
        endpoint: str = "",
        history_points: int = HISTORY_POINTS,
        event_log_size: int = EVENT_LOG_SIZE,
    ) -> None:
        if history_points < 1 or event_log_size < 1:
            raise ValueError(
                f"history_points={history_points}, event_log_size={event_log_size}; both must be >= 1"
            )
        self.history_points = history_points
        self.event_log_size = event_log_size
        self.connection = Connection(ConnState.WAITING, endpoint, since=0.0)
        self.streams: dict[str, StreamView] = {}
        self.events: OrderedDict[str, EventRow] = OrderedDict()
        self.events_version = 0
        self.invalid = 0
        self.coalesced = 0
        self.dropped_events = 0
        self.last_error = ""
        self.snapshot_error = ""
        """Why the latest open-events snapshot failed; empty when it arrived or none was asked."""

    # ---- feeding
    def apply_batch(self, batch: Batch) -> Changes:
        """Apply one coalesced batch from the subscriber."""
        conn_changed = batch.connection != self.connection
        self.connection = batch.connection
        self.invalid += batch.invalid
        self.coalesced += batch.coalesced
        self.dropped_events += batch.dropped_events
        if batch.last_error:
            self.last_error = batch.last_error
        if batch.snapshot is not None:
            self.snapshot_error = batch.snapshot
        n_streams = len(self.streams)
        version = self.events_version
        touched: set[str] = set()
        for stream, stats in batch.seq.items():
            view = self.streams.get(stream)
            if (
                view is not None
                and view.seq is not None
                and stats.restarts > view.seq.restarts
                and stats.session == view.seq.session
            ):
                # seq went backwards within one session id: a restart all the same. (A new
                # session is handled by apply(), which may already have seen it in a snapshot.)
                self._restart(view)
        for message in batch.messages:
            touched.add(self.apply(message))
        for stream, stats in batch.seq.items():
            view = self._stream(stream)
            if view.seq != stats:
                view.seq = stats
                touched.add(stream)
        return Changes(
            streams=frozenset(touched),
            events=self.events_version != version,
            connection=conn_changed,
            new_streams=len(self.streams) != n_streams,
        )

    def apply(self, message: Mapping[str, Any]) -> str:
        """Apply one decoded message (see ``docs/wire.md``); returns its stream id."""
        stream = str(message["stream"])
        view = self._stream(stream)
        session = str(message["session"])
        if view.session and session != view.session:
            self._restart(view)
        view.session = session
        view.stream_time = max(view.stream_time, _num(message.get("stream_time"), 0.0))
        kind = message["type"]
        if kind == "scores":
            self._apply_scores(view, message)
        elif kind == "status":
            view.status = StatusView.from_message(message)
        elif kind == "event":
            self._apply_event(view, message)
        else:
            log.warning("ignoring message type %r on stream %s", kind, stream)
        return stream

    def _stream(self, stream: str) -> StreamView:
        view = self.streams.get(stream)
        if view is None:
            view = self.streams[stream] = StreamView(stream)
        return view

    def _restart(self, view: StreamView) -> None:
        """The daemon behind ``view`` restarted: clear live data, orphan its open events."""
        log.info("stream %s: session %s ended", view.stream, view.session)
        view.top = []
        view.labels = {}
        view.status = None
        view.stream_time = 0.0
        view.patch_end = math.nan
        view.restarted = True
        for row in self.events.values():
            if row.stream == view.stream and row.session == view.session and row.phase == "open":
                row.phase = "orphaned"
                row.reason = "daemon restarted"
                self._touch(row)

    def _apply_scores(self, view: StreamView, m: Mapping[str, Any]) -> None:
        top = m.get("top") or []
        view.scores_updates += 1
        view.patch_end = _num(m.get("patch_end"))
        names: list[str] = []
        for entry in top:
            name = str(entry["label"])
            names.append(name)
            lv = view.labels.get(name)
            score = _num(entry.get("score"), 0.0)
            if lv is None:
                lv = view.labels[name] = LabelView(
                    name, score, 0.0, 0.0, False, deque(maxlen=self.history_points)
                )
            lv.score = score
            lv.on = _num(entry.get("on"), math.nan)
            lv.off = _num(entry.get("off"), math.nan)
            lv.active = bool(entry.get("active", False))
            lv.idle_updates = 0
            lv.history.append(score)
        in_top = set(names)
        for name in list(view.labels):
            if name in in_top:
                continue
            lv = view.labels[name]
            lv.idle_updates += 1
            if lv.idle_updates > self.history_points:
                del view.labels[name]
            else:
                # Below the top-k: the publisher did not say; draw it at zero.
                lv.score = 0.0
                lv.active = False
                lv.history.append(0.0)
        view.top = names

    def _apply_event(self, view: StreamView, m: Mapping[str, Any]) -> None:
        key = f"{view.stream}\x1f{view.session}\x1f{int(m['event_id'])}"
        row = self.events.get(key)
        phase = "closed" if m.get("event") == "offset" else "open"
        if row is None:
            row = EventRow(
                stream=view.stream,
                session=view.session,
                event_id=int(m["event_id"]),
                label=str(m.get("label", "?")),
                mid=str(m.get("mid", "")),
                phase=phase,
                start=_num(m.get("start")),
                end=None,
                start_wall=_num(m.get("start_wall"), _num(m.get("wall_time"))),
                end_wall=None,
                duration=0.0,
                peak=0.0,
                mean=0.0,
                score=0.0,
            )
            self.events[key] = row
            while len(self.events) > self.event_log_size:
                self.events.popitem(last=False)
        row.phase = phase
        end = m.get("end")
        row.end = None if end is None else _num(end)
        end_wall = m.get("end_wall")
        row.end_wall = None if end_wall is None else _num(end_wall)
        row.duration = _num(m.get("duration"), row.duration)
        row.peak = _num(m.get("peak"), row.peak)
        row.mean = _num(m.get("mean"), row.mean)
        row.score = _num(m.get("score"), row.score)
        row.reason = str(m.get("reason") or "")
        self._touch(row)

    def _touch(self, row: EventRow) -> None:
        self.events_version += 1
        row.version = self.events_version

    # ---- reading
    def stream_ids(self) -> list[str]:
        """Stream ids in the order they first appeared."""
        return list(self.streams)

    def event_rows(self, label_filter: str = "") -> list[EventRow]:
        """Events, oldest first, whose label contains ``label_filter`` (case-insensitive)."""
        return [row for row in self.events.values() if matches(row.label, label_filter)]

    def rows_changed_since(self, version: int, label_filter: str = "") -> list[EventRow]:
        """Events changed after ``events_version`` was ``version``, oldest first."""
        return [
            row
            for row in self.events.values()
            if row.version > version and matches(row.label, label_filter)
        ]

    def totals(self) -> tuple[int, int]:
        """(lost messages, restarts) summed over streams."""
        lost = sum(v.seq.lost for v in self.streams.values() if v.seq is not None)
        restarts = sum(v.seq.restarts for v in self.streams.values() if v.seq is not None)
        return lost, restarts


def matches(label: str, label_filter: str) -> bool:
    """Case-insensitive substring match; an empty filter matches everything."""
    return not label_filter or label_filter.casefold() in label.casefold()
