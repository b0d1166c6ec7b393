"""Event building: smoother transitions -> onset / update / offset payloads.

Keeps, per open event, its id, start, and running peak/mean of the smoothed score.
Emits an ``update`` every ``update_interval_s`` of stream time while an event is
open. Payloads are the ``event`` fields of ``docs/wire.md`` without the envelope,
which the pipeline adds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.decide.smoother import Transition
from detector.model.contract import Label

__all__ = ["EventBuilder", "OpenEvent"]


@dataclass
class OpenEvent:
    event_id: int
    label: int
    start: float
    start_wall: float
    peak: float
    total: float
    count: int
    last_update: float


class EventBuilder:
    """``process(transitions, smoothed (L,), now_s) -> [payload]``; ``close(...)`` flushes.

    ``wall_of(t)`` maps stream seconds to Unix seconds for this stream.
    """

    def __init__(
        self,
        labels: Sequence[Label],
        update_interval_s: float,
        wall_of: Callable[[float], float],
    ) -> None:
        if update_interval_s <= 0:
            raise ValueError(f"update_interval_s={update_interval_s}; must be > 0")
        self.labels = labels
        self.update_interval_s = update_interval_s
        self.wall_of = wall_of
        self.reset()

    def reset(self) -> None:
        self.open: dict[int, OpenEvent] = {}
        self._next_id = 0

    def _payload(self, ev: OpenEvent, kind: str, score: float, end: float | None) -> dict[str, Any]:
        label = self.labels[ev.label]
        now = end if end is not None else ev.last_update
        return {
            "event": kind,
            "label": label.name,
            "mid": label.mid,
            "event_id": ev.event_id,
            "start": round(ev.start, 4),
            "end": None if end is None else round(end, 4),
            "start_wall": round(ev.start_wall, 4),
            "end_wall": None if end is None else round(self.wall_of(end), 4),
            "duration": round(max(now - ev.start, 0.0), 4),
            "peak": round(ev.peak, 4),
            "mean": round(ev.total / max(ev.count, 1), 4),
            "score": round(score, 4),
        }

    def process(
        self, transitions: Sequence[Transition], smoothed: np.ndarray, now_s: float
    ) -> list[dict[str, Any]]:
        """``now_s``: stream time this hop's decision refers to (patch centre)."""
        out = []
        for tr in transitions:
            score = float(smoothed[tr.label])
            if tr.kind == "onset":
                ev = OpenEvent(
                    event_id=self._next_id, label=tr.label, start=tr.time,
                    start_wall=self.wall_of(tr.time), peak=score, total=score, count=1,
                    last_update=now_s,
                )
                self._next_id += 1
                self.open[tr.label] = ev
                out.append(self._payload(ev, "onset", score, None))
            else:
                ev = self.open.pop(tr.label)
                out.append(self._close_payload(ev, score, tr.time, "score"))
        for ev in self.open.values():
            if ev.last_update == now_s:
                continue  # opened this hop
            score = float(smoothed[ev.label])
            ev.peak = max(ev.peak, score)
            ev.total += score
            ev.count += 1
            if now_s - ev.last_update >= self.update_interval_s:
                ev.last_update = now_s
                out.append(self._payload(ev, "update", score, None))
        return out

    def snapshot(self, smoothed: np.ndarray, now_s: float) -> list[dict[str, Any]]:
        """``update`` payloads of every open event as of stream time ``now_s`` (no state change)."""
        out = []
        for ev in self.open.values():
            p = self._payload(ev, "update", float(smoothed[ev.label]), None)
            p["duration"] = round(max(now_s - ev.start, 0.0), 4)
            out.append(p)
        return out

    def _close_payload(self, ev: OpenEvent, score: float, end: float, reason: str) -> dict[str, Any]:
        p = self._payload(ev, "offset", score, max(end, ev.start))
        p["reason"] = reason
        return p

    def close(
        self, transitions: Sequence[Transition], smoothed: np.ndarray, reason: str
    ) -> list[dict[str, Any]]:
        """Offsets for every open event (end of stream, shutdown or stream error)."""
        out = [
            self._close_payload(self.open.pop(tr.label), float(smoothed[tr.label]), tr.time, reason)
            for tr in transitions
            if tr.label in self.open
        ]
        return out
