"""One stream's stage chain and counters: log-mel -> patcher, then smoother -> events.

:class:`StreamState` owns everything per stream (front end state, smoother, open
events, sequence numbers, level/latency/drop counters) and turns scores into wire
messages; :class:`detector.pipeline.Listener` runs many of them around one batched
scorer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np

from detector.config import Config
from detector.decide.events import EventBuilder
from detector.decide.smoother import Smoother
from detector.frontend.logmel import LogMelStage
from detector.frontend.patcher import Patch, Patcher
from detector.io.clips import ClipRecorder
from detector.io.control import ControlError, SeqStore
from detector.io.wire import envelope
from detector.model.labels import choose_event_labels
from detector.model.scorer import Scorer
from detector.sources.base import MAX_ABS_SAMPLE, sanitize
from detector.sources.parse import Source

__all__ = ["LATENCY_WINDOW", "StreamState", "hop_frames_for"]

log = logging.getLogger(__name__)

LEVEL_FLOOR_DBFS = -120.0
LATENCY_WINDOW = 512  # recent per-hop latencies kept for p50/p99
# Smoother arrays a threshold change or reload may replace; the rest needs a restart.
_POLICY_ARRAYS = ("on", "off", "enabled", "debounce", "hold", "min_dur")
_STATE_ARRAYS = ("_ema", "_median", "_alpha", "_med_len")


def hop_frames_for(patch_hop_s: float, scorer: Scorer) -> int:
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


class StreamState:
    """One stream's stages and counters. ``feed(samples)`` -> ready patches."""

    def __init__(
        self,
        source: Source,
        scorer: Scorer,
        config: Config,
        session: str,
        seq_store: SeqStore | None = None,
    ) -> None:
        contract = scorer.contract
        cfg = contract.features
        self.source = source
        self.id = source.stream_id
        self.session = session
        self.listen = config.listen
        self.contract = contract
        self.logmel = LogMelStage(cfg)
        self.patcher = Patcher(cfg, hop_frames_for(config.listen.patch_hop_s, scorer))
        self.hop_s = self.patcher.hop_frames * cfg.frame_seconds
        self.smoother = self._make_smoother(config)
        self.events = EventBuilder(contract.labels, config.listen.update_interval_s, self.wall_of)
        self.labels = contract.names
        self.sample_rate = cfg.sample_rate
        self.hop_length = cfg.hop_length
        self.seq_store = seq_store
        self.seq = seq_store.first(self.id) if seq_store else 0
        self.seq_limit = self.seq
        self.samples = 0
        self.patches = 0
        self.wall_origin: float | None = None
        self.ended = False
        self.paused = False
        self.error: str | None = None
        self.last_state: str = "starting"
        self.gap_seconds_seen = 0.0
        # Audio the pipeline itself dropped (processing too slow); the source counts its own.
        self.dropped_samples = 0
        self.overruns = 0
        self.paused_samples = 0
        # NaN/Inf/out-of-range samples that reached the stream (sources replace their own
        # before resampling; this catches any source that did not) and whether the first
        # bad sample, from either, has been reported on status.
        self.nonfinite_samples = 0
        self._bad_input_reported = False
        self._realign = False
        self._last_overrun_log = 0.0
        self._sum_sq = 0.0
        self._level_n = 0
        self._peak = 0.0
        self._busy_s = 0.0
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_status_wall = 0.0
        self._last_status_samples = 0
        self._last_status_busy = 0.0
        # Event clips (sed-listen --clips): set by the Listener, None when off.
        self.clips: ClipRecorder | None = None

    def _make_smoother(self, config: Config) -> Smoother:
        c = self.contract
        chosen = choose_event_labels(c.names, c.event_labels, config.listen.labels, "[listen] labels")
        return Smoother(config.smoother, c.names, c.on_thresholds, c.off_thresholds, self.hop_s, chosen)

    def wall_of(self, t: float) -> float:
        return (self.wall_origin if self.wall_origin is not None else time.time()) + t

    @property
    def stream_time(self) -> float:
        return self.samples / self.sample_rate

    def message(self, kind: str, payload: dict[str, Any], stream_time: float) -> dict[str, Any]:
        if self.seq_store is not None and self.seq >= self.seq_limit:
            self.seq_limit = self.seq_store.reserve(self.id, self.seq)
        msg = envelope(kind, self.id, self.seq, self.session, time.time(), stream_time)
        msg.update(payload)
        self.seq += 1
        return msg

    def feed(self, samples: np.ndarray) -> list[Patch]:
        if samples.size == 0:
            return []
        if self.wall_origin is None:
            self.wall_origin = time.time() - samples.size / self.sample_rate
        with np.errstate(invalid="ignore"):
            clean = bool(np.all(np.abs(samples) <= MAX_ABS_SAMPLE))  # False for any NaN
        if not clean:
            samples = samples.copy()  # a source's buffer may be read-only or shared
            n_bad = sanitize(samples)
            if self.nonfinite_samples == 0:
                log.warning("%s: NaN/Inf or out-of-range (|x| > %g) samples; replacing them by 0",
                            self.id, MAX_ABS_SAMPLE)
            self.nonfinite_samples += n_bad
        if self.clips is not None:  # clips keep the audio the realignment below skips
            self.clips.feed(self.samples, samples)
        if self._realign:
            samples = self._restart(samples)
            if samples.size == 0:
                return []
        self.samples += samples.size
        self._sum_sq += float(np.dot(samples, samples))
        self._level_n += samples.size
        self._peak = max(self._peak, float(np.max(np.abs(samples))))
        return self.patcher.process(self.logmel.process(samples))

    def skip(self, n: int) -> None:
        """Advance stream time over ``n`` samples that are not analysed (a hole).

        The next :meth:`feed` restarts the front end at the first frame boundary
        after the hole (discarding < 1 hop of samples to reach it); the partial
        frame and any patch that would straddle the hole are dropped, never padded.
        """
        if self.wall_origin is None:
            self.wall_origin = time.time() - n / self.sample_rate
        self.samples += n
        self._realign = True

    def _restart(self, samples: np.ndarray) -> np.ndarray:
        align = -self.samples % self.hop_length
        k = min(align, samples.size)
        self.samples += k
        if k < align:
            return samples[k:]  # empty: still short of the frame boundary
        frame = self.samples // self.hop_length
        self.logmel.reset()
        self.patcher.reset(start_frame=frame)
        self._realign = False
        return samples[k:]

    def finish(self) -> list[Patch]:
        return self.patcher.flush()

    def on_scores(self, patch: Patch, raw: np.ndarray) -> list[dict[str, Any]]:
        centre = 0.5 * (patch.start + patch.start + self.patcher.cfg.patch_seconds)
        smoothed, transitions = self.smoother.process(raw, centre)
        out = [
            self.message("event", p, patch.end)
            for p in self.events.process(transitions, smoothed, centre)
        ]
        if self.clips is not None:
            self.clips.on_events(out)  # adds the clip's path to offsets
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
        out = [
            self.message("event", p, t)
            for p in self.events.close(transitions, self.smoother.smoothed, reason)
        ]
        if self.clips is not None:
            self.clips.on_events(out)
            self.clips.flush(reason)  # no audio follows contiguously: clips end here
        return out

    def open_events(self) -> list[dict[str, Any]]:
        """Current open events as ``update`` payloads with the envelope (no ``seq`` used)."""
        out = []
        for payload in self.events.snapshot(self.smoother.smoothed, self.stream_time):
            msg = envelope("event", self.id, self.seq - 1, self.session, time.time(), self.stream_time)
            msg.update(payload)
            out.append(msg)
        return out

    def apply_smoother(self, config: Config) -> None:
        """Replace thresholds and timing policy (not the smoothing method) in place."""
        new = self._make_smoother(config)
        changed = [a for a in _STATE_ARRAYS if not np.array_equal(getattr(new, a), getattr(self.smoother, a))]
        if changed:
            raise ControlError(
                f"stream {self.id}: the smoothing method or its time constants changed; "
                "that needs a restart (thresholds, debounce, hold, min duration and enabled "
                "can be reloaded)"
            )
        for a in _POLICY_ARRAYS:
            setattr(self.smoother, a, getattr(new, a))

    def add_busy(self, seconds: float) -> None:
        self._busy_s += seconds

    def add_latency(self, seconds: float) -> None:
        self._latency.append(seconds)

    def counters(self) -> dict[str, Any]:
        """Cumulative loss counters: the source's plus the pipeline's own drops."""
        src = self.source
        return {  # sources and the pipeline both count output-rate samples
            "dropped_samples": int(getattr(src, "dropped_samples", 0)) + self.dropped_samples,
            "overruns": int(getattr(src, "overruns", 0)) + self.overruns,
            "gaps": int(getattr(src, "gaps", 0)),
            "gap_seconds": round(float(getattr(src, "gap_seconds", 0.0)), 3),
            "paused_seconds": round(self.paused_samples / self.sample_rate, 3),
            "reconnects": int(getattr(src, "reconnects", 0)),
            "nonfinite_samples": int(getattr(src, "nonfinite_samples", 0)) + self.nonfinite_samples,
            **(self.clips.counters() if self.clips is not None else {}),
        }

    def bad_input_notice(self) -> str | None:
        """A one-time status message when the first NaN/Inf/out-of-range samples were replaced."""
        if self._bad_input_reported:
            return None
        n = self.counters()["nonfinite_samples"]
        if not n:
            return None
        self._bad_input_reported = True
        return (
            f"input has NaN/Inf or out-of-range samples (|x| > {MAX_ABS_SAMPLE:g}; audio is "
            f"nominally within +-1): {n} so far, replaced by 0 and counted in nonfinite_samples"
        )

    def status(self, state: str, now: float, message: str | None = None) -> dict[str, Any]:
        dt = max(now - self._last_status_wall, 1e-9) if self._last_status_wall else None
        audio = (self.samples - self._last_status_samples) / self.sample_rate
        busy = self._busy_s - self._last_status_busy
        lat = np.array(self._latency) * 1000.0 if self._latency else np.zeros(1)
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
            **self.counters(),
            "patches": self.patches,
            "open_events": len(self.events.open),
        }
        text = message or getattr(self.source, "message", None)
        if text:
            payload["message"] = str(text)
        self.last_state = state
        self._last_status_wall = now
        self._last_status_samples = self.samples
        self._last_status_busy = self._busy_s
        self._sum_sq, self._level_n, self._peak = 0.0, 0, 0.0
        return self.message("status", payload, self.stream_time)

    def state_now(self) -> str:
        if self.error:
            return "error"
        if self.ended:
            return "ended"
        if self.paused:
            return "paused"
        return str(getattr(self.source, "state", "running"))
