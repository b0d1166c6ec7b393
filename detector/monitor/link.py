"""What the subscriber thread hands the UI: connection state, per-stream seq bookkeeping
and the coalesced :class:`Batch` of messages.

Pure Python (no Textual, no ZeroMQ). :mod:`detector.monitor.subscriber` fills these;
:class:`detector.monitor.state.MonitorState` applies a :class:`Batch` to what is shown.
Times are local monotonic seconds (:func:`time.monotonic`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Batch", "ConnState", "Connection", "SeqStats", "SeqTracker"]

log = logging.getLogger(__name__)


class ConnState(StrEnum):
    """Where the subscriber stands with the publisher."""

    WAITING = "waiting"
    """No publisher has answered yet (ZeroMQ keeps retrying)."""
    CONNECTED = "connected"
    """A publisher is connected but has sent nothing yet."""
    RECEIVING = "receiving"
    """Messages are arriving."""
    STALE = "stale"
    """Connected, but silent for longer than the subscriber's ``stale_after_s``."""
    DISCONNECTED = "disconnected"
    """The publisher went away; ZeroMQ is reconnecting."""
    REFUSED = "refused"
    """The security handshake failed (CURVE keys); stays until a handshake succeeds."""
    STOPPED = "stopped"
    """The subscriber loop has ended."""


@dataclass(frozen=True)
class Connection:
    """The connection state as the subscriber saw it."""

    state: ConnState
    endpoint: str
    since: float
    """Monotonic seconds when ``state`` began."""
    connects: int = 0
    """How many times a publisher connected (reconnects = connects - 1)."""
    detail: str = ""


@dataclass(frozen=True)
class SeqStats:
    """Sequence bookkeeping of one stream, from every message received (before coalescing)."""

    session: str
    last_seq: int
    received: int
    """Messages received in this session."""
    lost: int
    """Messages missing from seq gaps in this session."""
    restarts: int
    """Session changes or seq resets seen on this stream since the monitor started."""
    last_received: float
    """Monotonic seconds of the last message."""


class SeqTracker:
    """Counts seq gaps and daemon restarts per stream.

    Must see every message, so it runs in the subscriber thread before scores are
    coalesced. A new ``session`` or a ``seq`` that does not increase counts as a
    restart and starts the counts of the new session afresh.
    """

    def __init__(self) -> None:
        self._stats: dict[str, SeqStats] = {}

    def observe(self, message: Mapping[str, Any], now: float) -> SeqStats:
        """Account for one decoded message received at monotonic time ``now``."""
        stream = str(message["stream"])
        session = str(message["session"])
        seq = int(message["seq"])
        prev = self._stats.get(stream)
        if prev is None:
            stats = SeqStats(session, seq, 1, 0, 0, now)
        elif prev.session != session or seq <= prev.last_seq:
            why = "new session" if prev.session != session else f"seq reset {prev.last_seq}->{seq}"
            log.info("stream %s restarted (%s)", stream, why)
            stats = SeqStats(session, seq, 1, 0, prev.restarts + 1, now)
        else:
            lost = prev.lost + seq - prev.last_seq - 1
            stats = SeqStats(session, seq, prev.received + 1, lost, prev.restarts, now)
        self._stats[stream] = stats
        return stats

    def snapshot(self) -> dict[str, SeqStats]:
        """A copy of the current per-stream stats."""
        return dict(self._stats)

    def reset(self) -> None:
        """Forget every stream."""
        self._stats.clear()


@dataclass(frozen=True)
class Batch:
    """What the subscriber posts to the UI at a bounded rate.

    ``messages`` holds every event and status message in arrival order, then only
    the latest scores message of each stream; ``coalesced`` counts the scores
    messages that a newer one replaced.
    """

    messages: tuple[dict[str, Any], ...]
    seq: Mapping[str, SeqStats]
    connection: Connection
    coalesced: int = 0
    invalid: int = 0
    """Undecodable messages since the previous batch."""
    dropped_events: int = 0
    """Event/status messages dropped because one batch held too many."""
    last_error: str = ""
    snapshot: str | None = None
    """The open-events snapshot asked for since the previous batch: ``None`` when none
    was, ``""`` when it arrived (its events are in ``messages``), else why it failed."""
