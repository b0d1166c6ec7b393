"""One stream's stage chain and counters: log-mel -> patcher, then smoother -> events.

:class:`StreamState` owns everything per stream (front end state, smoother, open
events, sequence numbers, level/latency/drop counters) and turns scores into wire
messages; :class:`detector.pipeline.Listener` runs many of them around one batched
scorer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from detector.config import Config
from detector.decide.events import EventBuilder
from detector.decide.smoother import Decisions, LabelPolicy, Smoother, SmootherConfig
from detector.frontend.logmel import LogMelKernel, LogMelStage
from detector.frontend.patcher import Patch, Patcher
from detector.io.clips import ClipRecorder
from detector.io.control import ControlError, SeqStore
from detector.io.wire import envelope
from detector.model.labels import choose_event_labels
from detector.model.scorer import Scorer
from detector.sources.base import MAX_ABS_SAMPLE, peak_abs, sanitize
from detector.sources.parse import Source

__all__ = ["LATENCY_WINDOW", "StreamState", "hop_frames_for", "top_k", "with_model_timing"]

log = logging.getLogger(__name__)

LEVEL_FLOOR_DBFS = -120.0
LATENCY_WINDOW = 512  # recent per-hop latencies kept for p50/p99
# Smoother arrays a reload may not change (thresholds and timing it may: Smoother.set_policy).
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


def with_model_timing(config: SmootherConfig, timing: Mapping[str, Mapping[str, float]]) -> SmootherConfig:
    """The user's smoother settings over the model's per-label event timing (its contract's
    ``event_timing``). The user wins: a field of ``[smoother]`` changed from its built-in
    default applies to every label, and a label ``[smoother.labels]`` names keeps every
    field given there; the model's timing fills in the rest."""
    if not timing:
        return config
    builtin = LabelPolicy()
    mine = {f for f in ("hold_s", "debounce_s", "min_duration_s")
            if getattr(config.default, f) != getattr(builtin, f)}
    merged = {name: {**{k: v for k, v in timing.get(name, {}).items() if k not in mine},
                     **config.labels.get(name, {})}
              for name in (*timing, *config.labels)}
    return SmootherConfig(config.default, {k: v for k, v in merged.items() if v})


def _percentiles(x: np.ndarray, *qs: float) -> list[float]:
    """``np.percentile(x, qs)`` (linear interpolation) from one partial sort: a status
    message per stream per second must stay cheap at thousands of streams."""
    n = x.size
    pos = [q / 100.0 * (n - 1) for q in qs]
    ranks = sorted({int(p) for p in pos} | {min(int(p) + 1, n - 1) for p in pos})
    a = np.partition(x, ranks)  # each rank holds the value a full sort would put there
    out = []
    for p in pos:
        lo = int(p)
        hi = min(lo + 1, n - 1)
        out.append(float(a[lo] + (a[hi] - a[lo]) * (p - lo)))
    return out


def _dbfs(x: float) -> float:
    return max(LEVEL_FLOOR_DBFS, 20.0 * math.log10(x)) if x > 0 else LEVEL_FLOOR_DBFS


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``(n, L)`` -> ``(n, k)`` indices of each row's ``k`` largest, largest first, ties
    by the lower index: ``np.argsort(-scores, axis=1, kind="stable")[:, :k]``, exactly.

    A partition finds the ``k`` largest (O(L)), and only they are sorted; a row where
    more than ``k`` values reach the ``k``-th largest (a tie at the boundary) or a NaN
    makes the partition ambiguous, and that row takes the full stable sort. With 521
    labels this is ~10x cheaper than sorting every row (a scores message per hop).
    """
    n, labels = scores.shape
    if k >= labels or n == 0:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    vals = np.take_along_axis(scores, part, axis=1)
    kth = vals.min(axis=1)
    exact = (scores >= kth[:, None]).sum(axis=1) == k  # False for ties at kth and NaN rows
    out = np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)
    for r in np.flatnonzero(~exact):
        out[r] = np.argsort(-scores[r], kind="stable")[:k]
    return out


class StreamState:
    """One stream's stages and counters. ``feed(samples)`` -> ready patches."""

    def __init__(
        self,
        source: Source,
        scorer: Scorer,
        config: Config,
        session: str,
        seq_store: SeqStore | None = None,
        kernel: LogMelKernel | None = None,
        live_streams: int = 1,
    ) -> None:
        contract = scorer.contract
        cfg = contract.features
        self.source = source
        self.id = source.stream_id
        self.session = session
        self.listen = config.listen
        self.contract = contract
        self.logmel = LogMelStage(cfg, kernel)
        self.patcher = Patcher(cfg, hop_frames_for(config.listen.hop_for(source.is_live, live_streams), scorer),
                               lead_in=config.listen.lead_in)
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
        self.due = 0.0  # time.monotonic() when a paced source's next patch is complete
        self.paused = False
        self.error: str | None = None
        self.deferred_error: Exception | None = None  # raised at the next read (pipeline)
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
        # The last LATENCY_WINDOW per-hop latencies (s), a ring: a status message a second
        # per stream takes their percentiles without building an array.
        self._latency = np.zeros(LATENCY_WINDOW)
        self._latency_n = 0  # latencies recorded in all
        self._last_status_wall = 0.0
        self.next_status = 0.0  # time.time() of its next periodic status (the Listener's)
        self._last_status_samples = 0
        self._last_status_busy = 0.0
        # Whether any sink takes this stream's scores messages (the Listener keeps it
        # current from ZeroMQ subscriptions): nobody listening, nothing built.
        self.scores_wanted = True
        # The same for the periodic status message (state changes are always sent).
        self.status_wanted = True
        # Event clips (sed-listen --clips): set by the Listener, None when off.
        self.clips: ClipRecorder | None = None

    def _make_smoother(self, config: Config) -> Smoother:
        c = self.contract
        chosen = choose_event_labels(c.names, c.event_labels, config.listen.labels, "[listen] labels")
        return Smoother(with_model_timing(config.smoother, c.event_timing), c.names, c.on_thresholds,
                        c.off_thresholds, self.hop_s, chosen)

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
        """Samples ``(n,)`` -> the patches they complete (front end run for this stream alone)."""
        return self.take(self.logmel.kernel(self.prepare(samples)))

    def take(self, mel: np.ndarray) -> list[Patch]:
        """Log-mel rows of this stream's frames from :meth:`prepare` -> ready patches."""
        return self.patcher.process(mel)

    def samples_to_next_patch(self) -> int:
        """Stream samples still to come before the next patch is complete (>= 1)."""
        cfg = self.patcher.cfg
        end = self.patcher.next_end_frame
        if self._realign:  # after a hole the front end restarts at the next frame boundary
            end = -(-self.samples // cfg.hop_length) + cfg.patch_frames
        last = (end - 1) * cfg.hop_length + cfg.win_length
        return max(1, last - self.samples)

    def prepare(self, samples: np.ndarray) -> np.ndarray:
        """Samples ``(n,)`` -> raw frames ``(k, win_length)`` for the shared log-mel kernel.

        Counts level and bad samples and advances stream time; :meth:`take` gets the
        frames' log-mel rows back.
        """
        if samples.size == 0:
            return np.zeros((0, self.patcher.cfg.win_length))
        peak = peak_abs(samples)  # NaN if any sample is NaN
        if not peak <= MAX_ABS_SAMPLE:
            samples = samples.copy()  # a source's buffer may be read-only or shared
            n_bad = sanitize(samples)
            if self.nonfinite_samples == 0:
                log.warning("%s: NaN/Inf or out-of-range (|x| > %g) samples; replacing them by 0",
                            self.id, MAX_ABS_SAMPLE)
            self.nonfinite_samples += n_bad
            peak = peak_abs(samples)
        if self.clips is not None:  # clips keep the audio the realignment below skips
            self.clips.feed(self.samples, samples)
        if self._realign:
            samples = self._restart(samples)
            if samples.size == 0:
                return np.zeros((0, self.patcher.cfg.win_length))
        self.samples += samples.size
        if self.wall_origin is None:  # set after `samples`: another thread reading both
            # (sed-bench's lag monitor) never sees the origin without its first samples
            self.wall_origin = time.time() - self.samples / self.sample_rate
        self._sum_sq += float(np.dot(samples, samples))
        self._level_n += samples.size
        self._peak = max(self._peak, peak)
        return self.logmel.frames(samples)

    def skip(self, n: int) -> None:
        """Advance stream time over ``n`` samples that are not analysed (a hole).

        The next :meth:`feed` restarts the front end at the first frame boundary
        after the hole (discarding < 1 hop of samples to reach it); the partial
        frame and any patch that would straddle the hole are dropped, never padded.
        """
        self.samples += n
        if self.wall_origin is None:  # after `samples`, as in prepare()
            self.wall_origin = time.time() - self.samples / self.sample_rate
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
        """Scores ``(L,)`` of one patch -> its event and scores messages."""
        return self.on_scores_many([patch], raw[None, :])

    def centre_of(self, patch: Patch) -> float:
        """Stream seconds of a patch's centre: the instant its scores are attributed to.

        A lead-in patch's is never earlier than half a hop after its audio starts: a sound
        heard in it is not placed before the stream's start."""
        centre = 0.5 * (patch.start + patch.start + self.patcher.cfg.patch_seconds)
        if patch.lead_frames:
            centre = max(centre, patch.audio_start + 0.5 * self.hop_s)
        return centre

    def on_scores_many(self, patches: list[Patch], raw: np.ndarray) -> list[dict[str, Any]]:
        """Scores ``(n, L)`` of ``n`` consecutive patches -> their messages, in patch order.

        Smoothing and hysteresis run as array work over the block
        (:meth:`~detector.decide.smoother.Smoother.process_many`); per patch only the
        events that happen and the top-k scores message are built.
        """
        centres = np.array([self.centre_of(p) for p in patches])
        return self.on_decisions(patches, centres, self.smoother.process_many(raw, centres))

    def on_decisions(self, patches: list[Patch], centres: np.ndarray, d: Decisions) -> list[dict[str, Any]]:
        """What the smoother decided for ``n`` consecutive patches (centred at ``centres``)
        -> their event and scores messages, in patch order."""
        n = len(patches)
        self.patches += n
        if not any(d.transitions) and self.quiet():
            return []  # the usual hop of a quiet stream: nothing to say
        scores = self.listen.scores and self.scores_wanted
        k = min(self.listen.top_k, len(self.labels))
        if scores:
            top = top_k(d.smoothed, k)
            rows = np.arange(n)[:, None]
            top_scores = d.smoothed[rows, top].tolist()
            top_active = d.active[rows, top].tolist()
            on, off = self.smoother.on, self.smoother.off
            top_idx = top.tolist()
        out: list[dict[str, Any]] = []
        for r, patch in enumerate(patches):
            trs = d.transitions[r]
            if trs or self.events.open:
                events = [self.message("event", p, patch.end)
                          for p in self.events.process(trs, d.smoothed[r], float(centres[r]))]
                if self.clips is not None and events:
                    self.clips.on_events(events)  # adds the clip's path to offsets
                out.extend(events)
            if scores:
                entries = [
                    {"label": self.labels[i], "score": round(v, 4), "on": round(float(on[i]), 4),
                     "off": round(float(off[i]), 4), "active": a}
                    for i, v, a in zip(top_idx[r], top_scores[r], top_active[r], strict=True)
                ]
                payload = {"patch_start": round(patch.audio_start, 4), "patch_end": round(patch.end, 4), "top": entries}
                out.append(self.message("scores", payload, patch.end))
        return out

    def quiet(self) -> bool:
        """A hop with no onset or offset says nothing: no scores message is wanted and no
        event is open (that would send updates)."""
        return not self.events.open and not (self.listen.scores and self.scores_wanted)

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
        self.smoother.set_policy(new)  # in place: the arrays may be rows of a SmootherBank

    def add_busy(self, seconds: float) -> None:
        self._busy_s += seconds

    def add_latency(self, seconds: float) -> None:
        self._latency[self._latency_n % LATENCY_WINDOW] = seconds
        self._latency_n += 1

    def latencies(self) -> np.ndarray:
        """The last (up to) LATENCY_WINDOW per-hop latencies, oldest first (seconds)."""
        n = self._latency_n
        if n <= LATENCY_WINDOW:
            return self._latency[:n].copy()
        return np.roll(self._latency, -(n % LATENCY_WINDOW))

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
            "nonfinite_samples": self._nonfinite(),
            **(self.clips.counters() if self.clips is not None else {}),
        }

    def _nonfinite(self) -> int:
        """Samples replaced as NaN/Inf or out of range: the source's and this stream's."""
        return int(getattr(self.source, "nonfinite_samples", 0)) + self.nonfinite_samples

    def bad_input_notice(self) -> str | None:
        """A one-time status message when the first NaN/Inf/out-of-range samples were replaced."""
        if self._bad_input_reported:
            return None
        n = self._nonfinite()
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
        n = min(self._latency_n, LATENCY_WINDOW)
        lat = self._latency[:n] * 1000.0 if n else np.zeros(1)  # in any order, but for `last`
        last = 1000.0 * float(self._latency[(self._latency_n - 1) % LATENCY_WINDOW]) if n else 0.0
        p50, p99 = _percentiles(lat, 50.0, 99.0)
        payload: dict[str, Any] = {
            "state": state,
            "level_dbfs": round(_dbfs(np.sqrt(self._sum_sq / self._level_n)) if self._level_n else LEVEL_FLOOR_DBFS, 2),
            "peak_dbfs": round(_dbfs(self._peak), 2),
            "speed": round(audio / dt, 3) if dt else 0.0,
            "load": round(busy / audio, 5) if audio > 0 else 0.0,
            "latency_ms": {"last": round(last, 3), "p50": round(p50, 3), "p99": round(p99, 3)},
            **self.counters(),
            "patches": self.patches,
            "open_events": len(self.events.open),
        }
        text = message or getattr(self.source, "message", None)
        if text:
            payload["message"] = str(text)
        self.last_state = state
        self._new_status_interval(now)
        return self.message("status", payload, self.stream_time)

    def status_skipped(self, now: float) -> None:
        """A periodic status nobody takes is not built; the next one's level, speed and
        load cover the time from here, as if this one had been sent."""
        self._new_status_interval(now)

    def _new_status_interval(self, now: float) -> None:
        self._last_status_wall = now
        self._last_status_samples = self.samples
        self._last_status_busy = self._busy_s
        self._sum_sq, self._level_n, self._peak = 0.0, 0, 0.0

    def state_now(self) -> str:
        if self.error:
            return "error"
        if self.ended:
            return "ended"
        if self.paused:
            return "paused"
        return str(getattr(self.source, "state", "running"))
