"""The pipeline: source -> log-mel -> patcher -> [batched scorer] -> smoother -> events -> sinks.

:class:`StreamState` chains one stream's stages; :class:`Listener` runs many streams
in one loop and sends every patch that is ready, from every stream and from any
backlog, through **one** batched inference call per iteration. File mode is the same
loop with file sources (:func:`detect_file`), so offline results are the streaming
results.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.config import Config
from detector.events import EventBuilder
from detector.logmel import LogMelStage
from detector.models import resolve_model
from detector.patcher import Patch, Patcher
from detector.publisher import ListSink, Sink
from detector.scorer import OnnxScorer
from detector.smoother import Smoother
from detector.sources import FileSource, Source
from detector.wire import envelope

__all__ = ["Listener", "StreamState", "detect_file", "hop_frames_for"]

log = logging.getLogger(__name__)

LEVEL_FLOOR_DBFS = -120.0
LATENCY_WINDOW = 512  # recent per-hop latencies kept for p50/p99


def hop_frames_for(patch_hop_s: float, scorer: OnnxScorer) -> int:
    cfg = scorer.contract.features
    frames = round(patch_hop_s * cfg.sample_rate / cfg.hop_length)
    if not 1 <= frames <= cfg.patch_frames:
        raise ValueError(
            f"patch_hop_s={patch_hop_s} is {frames} frames; accepted: "
            f"{cfg.frame_seconds:g} to {cfg.patch_seconds:g} s"
        )
    return frames


def _dbfs(x: float) -> float:
    return max(LEVEL_FLOOR_DBFS, 20.0 * np.log10(x)) if x > 0 else LEVEL_FLOOR_DBFS


@dataclass
class _Pending:
    stream: StreamState
    patch: Patch
    ready_at: float  # perf_counter() when the audio completing the patch was read


class StreamState:
    """One stream's stages and counters. ``feed(samples)`` -> ready patches."""

    def __init__(self, source: Source, scorer: OnnxScorer, config: Config, session: str) -> None:
        contract = scorer.contract
        cfg = contract.features
        self.source = source
        self.id = source.stream_id
        self.session = session
        self.listen = config.listen
        self.logmel = LogMelStage(cfg)
        self.patcher = Patcher(cfg, hop_frames_for(config.listen.patch_hop_s, scorer))
        hop_s = self.patcher.hop_frames * cfg.frame_seconds
        self.smoother = Smoother(
            config.smoother, contract.names, contract.on_thresholds, contract.off_thresholds, hop_s
        )
        self.events = EventBuilder(contract.labels, config.listen.update_interval_s, self.wall_of)
        self.labels = contract.names
        self.sample_rate = cfg.sample_rate
        self.seq = 0
        self.samples = 0
        self.patches = 0
        self.wall_origin: float | None = None
        self.ended = False
        self.error: str | None = None
        self._sum_sq = 0.0
        self._level_n = 0
        self._peak = 0.0
        self._busy_s = 0.0
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_status_wall = 0.0
        self._last_status_samples = 0
        self._last_status_busy = 0.0

    def wall_of(self, t: float) -> float:
        return (self.wall_origin if self.wall_origin is not None else time.time()) + t

    @property
    def stream_time(self) -> float:
        return self.samples / self.sample_rate

    def message(self, kind: str, payload: dict[str, Any], stream_time: float) -> dict[str, Any]:
        msg = envelope(kind, self.id, self.seq, self.session, time.time(), stream_time)
        msg.update(payload)
        self.seq += 1
        return msg

    def feed(self, samples: np.ndarray) -> list[Patch]:
        if samples.size == 0:
            return []
        if self.wall_origin is None:
            self.wall_origin = time.time() - samples.size / self.sample_rate
        self.samples += samples.size
        self._sum_sq += float(np.dot(samples, samples))
        self._level_n += samples.size
        self._peak = max(self._peak, float(np.max(np.abs(samples))))
        return self.patcher.process(self.logmel.process(samples))

    def finish(self) -> list[Patch]:
        return self.patcher.flush()

    def on_scores(self, patch: Patch, raw: np.ndarray) -> list[dict[str, Any]]:
        centre = 0.5 * (patch.start + patch.start + self.patcher.cfg.patch_seconds)
        smoothed, transitions = self.smoother.process(raw, centre)
        out = [
            self.message("event", p, patch.end)
            for p in self.events.process(transitions, smoothed, centre)
        ]
        self.patches += 1
        if self.listen.scores:
            k = min(self.listen.top_k, len(self.labels))
            top = np.argsort(-smoothed, kind="stable")[:k]
            entries = [
                {
                    "label": self.labels[i],
                    "score": round(float(smoothed[i]), 4),
                    "on": round(float(self.smoother.on[i]), 4),
                    "off": round(float(self.smoother.off[i]), 4),
                    "active": bool(self.smoother.active[i]),
                }
                for i in top
            ]
            payload = {"patch_start": round(patch.start, 4), "patch_end": round(patch.end, 4), "top": entries}
            out.append(self.message("scores", payload, patch.end))
        return out

    def close_events(self, reason: str) -> list[dict[str, Any]]:
        t = self.stream_time
        transitions = self.smoother.close(t)
        return [
            self.message("event", p, t)
            for p in self.events.close(transitions, self.smoother.smoothed, reason)
        ]

    def add_busy(self, seconds: float) -> None:
        self._busy_s += seconds

    def add_latency(self, seconds: float) -> None:
        self._latency.append(seconds)

    def status(self, state: str, now: float, message: str | None = None) -> dict[str, Any]:
        dt = max(now - self._last_status_wall, 1e-9) if self._last_status_wall else None
        audio = (self.samples - self._last_status_samples) / self.sample_rate
        busy = self._busy_s - self._last_status_busy
        lat = np.array(self._latency) * 1000.0 if self._latency else np.zeros(1)
        src = self.source
        payload: dict[str, Any] = {
            "state": state,
            "level_dbfs": round(_dbfs(np.sqrt(self._sum_sq / self._level_n)) if self._level_n else LEVEL_FLOOR_DBFS, 2),
            "peak_dbfs": round(_dbfs(self._peak), 2),
            "speed": round(audio / dt, 3) if dt else 0.0,
            "load": round(busy / audio, 5) if audio > 0 else 0.0,
            "latency_ms": {
                "last": round(float(lat[-1]), 3),
                "p50": round(float(np.percentile(lat, 50)), 3),
                "p99": round(float(np.percentile(lat, 99)), 3),
            },
            "dropped_samples": int(getattr(src, "dropped_samples", 0)),
            "overruns": int(getattr(src, "overruns", 0)),
            "gaps": int(getattr(src, "gaps", 0)),
            "patches": self.patches,
            "open_events": len(self.events.open),
        }
        text = message or getattr(src, "message", None)
        if text:
            payload["message"] = str(text)
        self._last_status_wall = now
        self._last_status_samples = self.samples
        self._last_status_busy = self._busy_s
        self._sum_sq, self._level_n, self._peak = 0.0, 0, 0.0
        return self.message("status", payload, self.stream_time)


class Listener:
    """Runs streams through one batched scorer until they end or ``stop`` is set."""

    def __init__(
        self,
        sources: Sequence[Source],
        sinks: Sequence[Sink],
        config: Config | None = None,
        model: str | Path | None = None,
        scorer: OnnxScorer | None = None,
    ) -> None:
        self.config = config or Config()
        lc = self.config.listen
        self.scorer = scorer or OnnxScorer(resolve_model(model), lc.device, lc.threads, lc.max_batch)
        self.sinks = list(sinks)
        self.session = uuid.uuid4().hex[:12]
        ids = [s.stream_id for s in sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"stream ids must be unique; repeated: {dupes}")
        self.streams = [StreamState(s, self.scorer, self.config, self.session) for s in sources]
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=LATENCY_WINDOW)

    def _send(self, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            for sink in self.sinks:
                sink.send(m)

    def _read(self, st: StreamState, pending: list[_Pending], chunk: int) -> bool:
        """Read from one source; True if it produced audio or ended."""
        samples = st.source.read(chunk)
        now = time.perf_counter()
        if samples is None:
            st.ended = True
            pending.extend(_Pending(st, p, now) for p in st.finish())
            return True
        if samples.size == 0:
            return False
        t0 = time.perf_counter()
        patches = st.feed(samples)
        st.add_busy(time.perf_counter() - t0)
        pending.extend(_Pending(st, p, now) for p in patches)
        return True

    def _fail(self, st: StreamState, err: Exception) -> None:
        st.ended = True
        st.error = f"{type(err).__name__}: {err}"
        log.error("stream %s failed and was closed: %s", st.id, err)
        self._send(st.close_events("stream_error"))
        self._send([st.status("error", time.time(), st.error)])
        st.source.close()

    def _score(self, pending: list[_Pending]) -> None:
        t0 = time.perf_counter()
        scores = self.scorer.score(np.stack([p.patch.data for p in pending]))
        t_inf = time.perf_counter() - t0
        self.batches += 1
        self.batch_sizes.append(len(pending))
        share = t_inf / len(pending)
        for item, raw in zip(pending, scores, strict=True):
            st = item.stream
            if st.error:
                continue
            t1 = time.perf_counter()
            self._send(st.on_scores(item.patch, raw))
            done = time.perf_counter()
            st.add_busy(share + done - t1)
            st.add_latency(done - item.ready_at)

    def run(self, stop: threading.Event | None = None) -> None:
        """Process until every stream has ended, or ``stop`` is set (then close cleanly)."""
        stop = stop or threading.Event()
        lc = self.config.listen
        for st in self.streams:
            try:
                st.source.start()
            except Exception as e:  # a bad source is reported and dropped; others carry on
                self._fail(st, e)
        live = [st for st in self.streams if not st.ended]
        self._send([st.status("starting", time.time()) for st in live])
        last_status = time.time()
        try:
            while live and not stop.is_set():
                pending: list[_Pending] = []
                progressed = False
                for st in live:
                    chunk = round(lc.file_chunk_s * st.sample_rate)
                    try:
                        progressed |= self._read(st, pending, chunk)
                    except Exception as e:  # one bad stream never stops the others
                        self._fail(st, e)
                if pending:
                    self._score(pending)
                for st in live:
                    if st.ended and not st.error:
                        self._send(st.close_events("end_of_stream"))
                        self._send([st.status("ended", time.time())])
                        st.source.close()
                live = [st for st in live if not st.ended]
                now = time.time()
                if now - last_status >= lc.status_interval_s:
                    self._send([st.status(getattr(st.source, "state", "running"), now) for st in live])
                    last_status = now
                if not progressed:
                    stop.wait(lc.live_poll_s)
        finally:
            for st in live:
                self._send(st.close_events("shutdown"))
                self._send([st.status("ended", time.time(), "shutdown")])
                st.source.close()


def detect_file(
    path: str | Path,
    model: str | Path | None = None,
    config: Config | None = None,
    chunk_samples: int | None = None,
    scorer: OnnxScorer | None = None,
) -> list[dict[str, Any]]:
    """Run one file through the streaming pipeline; return its event messages in order.

    ``chunk_samples`` sets how much audio each loop reads (the result does not
    depend on it).
    """
    config = config or Config()
    scorer = scorer or OnnxScorer(resolve_model(model), config.listen.device, config.listen.threads)
    rate = scorer.contract.features.sample_rate
    if chunk_samples is not None:
        from dataclasses import replace

        config = replace(config, listen=replace(config.listen, file_chunk_s=chunk_samples / rate))
    sink = ListSink()
    Listener([FileSource(path, rate)], [sink], config, scorer=scorer).run()
    return [m for m in sink.messages if m["type"] == "event"]
