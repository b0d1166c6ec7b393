"""The pipeline: source -> log-mel -> patcher -> [batched scorer] -> smoother -> events -> sinks.

:class:`StreamState` chains one stream's stages; :class:`Listener` runs many streams
in one loop. Per iteration it reads every stream that has audio due, computes the
log-mel frames of **all** of them with one shared kernel (one ``rfft`` and one mel
matrix product per block of rows, :class:`~detector.frontend.logmel.LogMelKernel`),
and sends every patch that is ready through **one** batched inference call; each
stream's scores then go through its smoother as one block, and one hop of many streams
through all their smoothers at once (:class:`~detector.decide.smoother.SmootherBank`).
When more paced streams are due than :data:`LIVE_ITER_FRAMES` frames, they are read in
parts over consecutive iterations, so that the stages of one part overlap the reading of
the next. File mode is the same
loop with file sources (:func:`detect_file`), so offline results are the streaming
results; file streams read ahead until about :data:`FILE_BATCH_PATCHES` patches are
pending, so inference runs in large batches.

Waiting (docs/benchmarks.md): a paced source (microphone, real-time replay) is only
read when its next patch is due, and the loop sleeps until the earliest such time or
the next status message, never polling; other live sources (stdin, network) are
polled every ``live_poll_s`` while idle.

Reliability (``docs/reliability.md``):

* A live source that cannot wait (microphone, real-time file replay) is drained
  every iteration; if processing falls more than ``max_backlog_s`` behind, the
  oldest audio is dropped, counted (``overruns``, ``dropped_samples``), logged, and
  the stream restarts its front end after the hole, so memory stays bounded and
  stream time stays aligned with the wall clock.
* A device gap (microphone lost and reopened) closes open events
  (``reason: "gap"``) and advances stream time over the gap; nothing is invented.
* One failing stream is reported on ``status.<stream>`` and closed; the others go on.
* A :class:`~detector.io.control.ControlServer` is polled from the loop (pause, resume,
  thresholds, reload, snapshot); a :class:`~detector.io.control.SeqStore` keeps ``seq``
  increasing across restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import detector
from detector.config import FEW_LIVE_STREAMS, Config, ListenConfig, load_config
from detector.decide.smoother import SmootherBank
from detector.frontend.logmel import LogMelKernel
from detector.frontend.patcher import Patch
from detector.io.clips import ClipRecorder, ClipWriter
from detector.io.control import Commands, ControlError, ControlServer, SeqStore
from detector.io.publisher import ListSink, Sink, sink_wants
from detector.model.resolve import load_scorer
from detector.model.scorer import Scorer
from detector.sources.parse import FileSource, Source, StdinSource
from detector.stream import LATENCY_WINDOW, StreamState, hop_frames_for

__all__ = ["FILE_BATCH_PATCHES", "FailedSource", "Listener", "StreamState", "detect_file", "hop_frames_for"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FILE_BATCH_PATCHES = 64
"""Patches file streams read ahead for, per loop: inference costs least per patch around
batch 64 on CPU (docs/benchmarks.md), and the read-ahead bounds memory (~31 s of audio
for one file at a 0.48 s hop)."""
MANY_STREAMS_BATCH = 32
"""Patches per inference call with many live streams on the CPU (Listener.infer_chunk)."""
MAX_INFLIGHT = 2
"""Inference calls submitted and not yet decided, at most: one scored, one queued behind it."""
BANK_ROUNDS = 4
"""A stream with at most this many patches in a batch is decided on the SmootherBank, a
round per hop (Listener._collect); one with more (a file's read-ahead) on its own smoother."""
MIN_WAIT_S = 0.001
"""Shortest sleep of an idle loop: streams due within this are read together."""
FE_SLICE_FRAMES = 4096
"""Raw frames (about 85 live streams' hop, or 41 s of one file) after which the loop starts
their front end and reads on: with many streams the reads overlap the transform."""
LIVE_ITER_FRAMES = 8192
"""Raw frames of paced streams (about 170 live streams' hop) one iteration reads at most: when
many streams are due at once (they started together), the rest wait for the next iteration,
so that the front end, inference and decisions of one part overlap the reading of the next
instead of the whole burst passing each stage in turn (docs/benchmarks.md)."""
THREAD_MIN_FRAMES = 256
THREAD_MIN_PATCHES = 8
"""Less front-end or inference work than this runs on the loop's thread: handing it to
another thread costs more than it saves (one quiet live stream)."""
CONTROL_POLL_S = 0.1
"""Longest sleep while a control socket is open (requests are answered within this)."""


def _warn_if_blas_threaded() -> None:
    """Once per process: numpy was imported before ``detector`` (see ``detector.OPENBLAS_THREADS_LATE``)."""
    global _BLAS_WARNED
    if detector.OPENBLAS_THREADS_LATE and not _BLAS_WARNED:
        _BLAS_WARNED = True
        log.warning(
            "numpy was imported before detector without OPENBLAS_NUM_THREADS set: OpenBLAS uses "
            "every core for the front end's tiny mel product and fights onnxruntime for them "
            "(file mode measured 1.6x slower on 2 cores); import detector first, or set "
            "OPENBLAS_NUM_THREADS=1 in the environment"
        )


_BLAS_WARNED = False


class FailedSource(Source):
    """A source that could not be opened: :meth:`start` raises the original error.

    Lets a multi-stream daemon report one bad input on its own ``status.<stream>``
    and go on with the others, through the same path as a stream failing later.
    """

    def __init__(self, stream_id: str, sample_rate: int, error: Exception) -> None:
        super().__init__(stream_id, sample_rate)
        self.error = error
        self.state = "error"
        self.message = str(error)

    def start(self) -> None:
        raise self.error

    def read(self, max_samples: int) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass


def _must_drain(source: Source) -> bool:
    """Live sources that lose audio if not read (not stdin, whose pipe waits for us)."""
    return source.is_live and not isinstance(source, StdinSource)


@dataclass
class _Pending:
    stream: StreamState
    patch: Patch
    ready_at: float  # perf_counter() when the audio completing the patch was read


@dataclass
class _FrontEnd:
    """One front-end call: the streams' raw frames and their log-mel rows to come."""

    frames: list[tuple[StreamState, np.ndarray]]
    future: Future[tuple[np.ndarray, float]]


@dataclass
class _Batch:
    """One inference call in flight on the inference thread."""

    future: Future[tuple[np.ndarray, float]]
    pending: list[_Pending]


class _Schedule:
    """When each live stream is next read, as one array (rebuilt when the live set changes).

    A paced source (microphone, real-time replay) is read only once its next patch is
    due (``StreamState.due``, ``time.monotonic()``); every other source at every
    iteration. With thousands of streams, finding the due ones and the loop's next
    wake-up are array work, not a Python pass over every stream per iteration.
    """

    def __init__(self, live: list[StreamState]) -> None:
        self.live = live
        self.pos = {id(st): i for i, st in enumerate(live)}
        self.paced = np.array([st.source.paced for st in live], dtype=bool)
        self.is_live = np.array([st.source.is_live for st in live], dtype=bool)
        # Unpaced sources are always due (-inf); paced ones at their StreamState.due.
        self.due = np.where(self.paced, np.array([st.due for st in live], dtype=np.float64), -np.inf)
        self.paused_version = -1  # Listener.paused_version the masks below were built for
        self._awake = np.zeros(0, dtype=np.intp)  # paced, not paused: sleep until the first due
        self._paced_paused = False
        self._polled = False  # an unpaced live source, or a file not paused: poll

    def set(self, st: StreamState, due: float) -> None:
        """``st.due = due``, mirrored in the array."""
        st.due = due
        i = self.pos.get(id(st))
        if i is not None and self.paced[i]:
            self.due[i] = due

    def due_now(self, mono: float, first: int) -> list[int]:
        """Indices into ``live`` of the streams to read now, in turn from ``first``."""
        idx = np.flatnonzero(self.due <= mono)
        if first:
            k = int(np.searchsorted(idx, first))
            idx = np.concatenate((idx[k:], idx[:k]))
        return idx.tolist()

    def timeout(self, mono: float, until: float, paused_version: int, lc: ListenConfig) -> float:
        """Seconds the loop may sleep: until the first paced stream is due, ``until`` (the
        next status message), the status interval while a paced stream is paused, or
        ``live_poll_s`` while an unpaced live source (or an unpaused file) is polled."""
        if paused_version != self.paused_version:
            paused = np.array([st.paused for st in self.live], dtype=bool)
            self._awake = np.flatnonzero(self.paced & ~paused)
            self._paced_paused = bool((self.paced & paused).any())
            self._polled = bool((~self.paced & (self.is_live | ~paused)).any())
            self.paused_version = paused_version
        timeout = until
        if self._awake.size:
            timeout = min(timeout, float(self.due[self._awake].min()) - mono)
        if self._paced_paused:
            timeout = min(timeout, lc.status_interval_s)
        if self._polled:
            timeout = min(timeout, lc.live_poll_s)
        return timeout


class Listener:
    """Runs streams through one batched scorer until they end or ``stop`` is set.

    Args:
        sources, sinks: the streams and where their messages go.
        config: runtime settings; ``config_path`` is re-read by the ``reload`` command.
        model / scorer: the ONNX model (path) or a ready scorer.
        control_endpoint: local REQ/REP endpoint for :mod:`detector.io.control` commands.
        state_dir: directory for :class:`~detector.io.control.SeqStore` (``seq`` across restarts).
        clips: writer for event clips (:mod:`detector.io.clips`); each stream then keeps
            a history of its recent audio and records every event.
        latency_observer: called with ``(stream id, seconds)`` for every scored hop
            (the Prometheus histogram, :mod:`detector.io.metrics`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        sinks: Sequence[Sink],
        config: Config | None = None,
        model: str | Path | None = None,
        scorer: Scorer | None = None,
        control_endpoint: str | None = None,
        state_dir: str | Path | None = None,
        config_path: str | Path | None = None,
        clips: ClipWriter | None = None,
        latency_observer: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config or Config()
        self.config_path = Path(config_path) if config_path is not None else None
        _warn_if_blas_threaded()
        lc = self.config.listen
        n_live = sum(s.is_live for s in sources)  # sets the automatic live hop and threads
        self.scorer = scorer or load_scorer(model, lc.device, lc.threads_for(n_live), lc.max_batch)
        # Inference calls of at most this many patches: with many live streams on the CPU
        # (one onnxruntime thread) 32 cost ~25 % less a patch than 256 (cache-sized).
        many_on_cpu = n_live > FEW_LIVE_STREAMS and lc.device == "cpu"
        self.infer_chunk = min(lc.max_batch, MANY_STREAMS_BATCH) if many_on_cpu else lc.max_batch
        self.sinks = list(sinks)
        self.session = uuid.uuid4().hex[:12]
        ids = [s.stream_id for s in sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"stream ids must be unique; repeated: {dupes}")
        self.seq_store = SeqStore(state_dir, self.session) if state_dir is not None else None
        self.kernel = LogMelKernel(self.scorer.contract.features)  # shared by every stream
        self.streams = [
            StreamState(s, self.scorer, self.config, self.session, self.seq_store, self.kernel, n_live)
            for s in sources
        ]
        # Every stream's smoother state as rows of shared arrays: one hop of many streams
        # is decided together (_collect).
        self.bank = SmootherBank([st.smoother for st in self.streams])
        if clips is not None:
            # Audio fed beyond the instant an event message names: a patch, plus one read.
            # (Files do not read ahead while clips are recorded: see run().)
            lag = self.scorer.contract.features.patch_seconds + max(lc.file_chunk_s, lc.max_backlog_s)
            offline = not any(s.is_live for s in sources)  # files only: waiting loses nothing
            for st in self.streams:
                st.clips = ClipRecorder(st.id, self.session, st.sample_rate, clips, lag, offline)
        self.read_ahead = clips is None
        self.latency_observer = latency_observer
        self.batches = 0
        self.any_failed = False
        self.paused_version = 0  # bumped by set_paused (the schedule's masks follow it)
        self._schedule: _Schedule | None = None  # the live streams' read instants (run())
        # CPU seconds per stage, each on the thread that ran it (onnxruntime's own worker
        # threads not counted): where the time goes (sed-bench, docs/benchmarks.md).
        self.stage_cpu_s = {"read": 0.0, "frontend": 0.0, "inference": 0.0, "decide": 0.0}
        self.batch_sizes: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self._subscriptions_seen: tuple[int, ...] | None = None
        self.commands = Commands(self)
        self.control = ControlServer(control_endpoint, self.handle) if control_endpoint else None

    def publish(self, messages: list[dict[str, Any]]) -> None:
        """Send messages to every sink, in order."""
        for m in messages:
            for sink in self.sinks:
                sink.send(m)

    def _update_wanted(self) -> None:
        """Which streams' ``scores`` and periodic ``status`` messages any sink takes; redone
        when a ZeroMQ subscriber (un)subscribes. A message nobody receives is never built."""
        seen = tuple(s.poll_subscriptions() if hasattr(s, "poll_subscriptions") else 0 for s in self.sinks)
        if seen == self._subscriptions_seen:
            return
        self._subscriptions_seen = seen
        for st in self.streams:
            st.scores_wanted = any(sink_wants(s, f"scores.{st.id}") for s in self.sinks)
            st.status_wanted = any(sink_wants(s, f"status.{st.id}") for s in self.sinks)

    # -- reading ---------------------------------------------------------------------

    def _read(
        self, st: StreamState, frames: list[tuple[StreamState, np.ndarray]], chunk: int, budget: int
    ) -> bool:
        """Read from one source (up to ``budget`` samples of a file, in ``chunk`` pieces);
        its raw frames go to ``frames``. True if it produced audio or ended."""
        if st.paused and not _must_drain(st.source):
            return False  # a file or stdin simply waits while paused
        if st.deferred_error is not None:
            raise st.deferred_error
        got = 0
        while True:
            ended = False
            samples: np.ndarray | None
            try:
                if _must_drain(st.source):
                    samples, ended = self._drain(st, chunk)
                else:
                    samples = st.source.read(chunk)
                    ended = samples is None
            except Exception as e:
                if got == 0:
                    raise
                # The audio read ahead before the error is analysed first; the stream
                # fails at its next read, as it did when it was read one chunk a loop.
                st.deferred_error = e
                return True
            self._absorb_gap(st)
            if samples is not None and samples.size:
                got += samples.size
                if st.paused:
                    st.paused_samples += samples.size
                    st.skip(samples.size)
                else:
                    t0 = time.perf_counter()
                    f = st.prepare(samples)
                    st.add_busy(time.perf_counter() - t0)
                    if f.shape[0]:
                        frames.append((st, f))
                    notice = st.bad_input_notice()
                    if notice:
                        self.publish([st.status(st.state_now(), time.time(), notice)])
            if ended:
                st.ended = True
                return True
            if st.source.is_live or samples is None or samples.size == 0 or got >= budget:
                return got > 0

    def _transform(self, parts: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """The shared log-mel kernel on every stream's new frames (front-end thread)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        mel = self.kernel.many(parts)
        self.stage_cpu_s["frontend"] += time.thread_time() - c0
        return mel, time.perf_counter() - t0

    def _front_end(
        self, pool: ThreadPoolExecutor, frames: list[tuple[StreamState, np.ndarray]], rows: int
    ) -> _FrontEnd:
        """Start the shared log-mel kernel on ``frames`` (``rows`` raw frames in all)."""
        return _FrontEnd(frames, self._run(pool, self._transform, [f for _, f in frames], rows >= THREAD_MIN_FRAMES))

    def _take(self, jobs: list[_FrontEnd], pending: list[_Pending]) -> None:
        """Each stream's log-mel rows (from :meth:`_transform`) to its patcher, in the order
        the jobs were started; patches to ``pending``."""
        for job in jobs:
            self._take_one(job, pending)

    def _take_one(self, job: _FrontEnd, pending: list[_Pending]) -> None:
        mel, seconds = job.future.result()
        now = time.perf_counter()
        share = seconds / max(mel.shape[0], 1)
        row = 0
        for st, f in job.frames:
            k = f.shape[0]
            if st.error:
                row += k
                continue
            try:
                patches = st.take(mel[row : row + k])
            except Exception as e:  # one bad stream never stops the others
                self._fail(st, e)
                patches = []
            row += k
            st.add_busy(share * k)
            pending.extend(_Pending(st, p, now) for p in patches)

    def _drain(self, st: StreamState, chunk: int) -> tuple[np.ndarray, bool]:
        """Everything a live source holds, keeping at most ``max_backlog_s`` (newest) of it.

        Returns ``(samples, ended)``.
        """
        limit = max(1, round(self.config.listen.max_backlog_s * st.sample_rate))
        chunk = min(chunk, limit)
        x = st.source.read(chunk)
        if x is not None and x.size < chunk:
            return x, False  # the usual read: all the source held, in one piece, within the limit
        parts: deque[np.ndarray] = deque()
        held = 0
        dropped = 0
        ended = False
        while True:
            if x is None:
                ended = True
                break
            if x.size == 0:
                break
            parts.append(x)
            held += x.size
            short = x.size < chunk  # the source gave less than asked: it holds no more
            while held - parts[0].size >= limit:
                dropped += parts[0].size
                held -= parts.popleft().size
            if short:
                break
            x = st.source.read(chunk)
        if held > limit:
            cut = held - limit
            parts[0] = parts[0][cut:]
            dropped += cut
            held = limit
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        if dropped:
            st.skip(dropped)
            st.dropped_samples += dropped
            st.overruns += 1
            now = time.monotonic()
            if now - st._last_overrun_log >= self.config.listen.status_interval_s:
                st._last_overrun_log = now
                log.warning(
                    "%s: overrun: processing fell more than %.1f s behind; dropped %.2f s of "
                    "audio (%d overruns, %.1f s dropped so far)",
                    st.id, self.config.listen.max_backlog_s, dropped / st.sample_rate,
                    st.overruns, st.dropped_samples / st.sample_rate,
                )
        return samples, ended

    def _absorb_gap(self, st: StreamState) -> None:
        """After a device gap, advance stream time over it before the next audio is fed.

        A source measures a gap when its first audio after the loss arrives (in the
        same read), so the audio just read starts after the hole.
        """
        gap = float(getattr(st.source, "gap_seconds", 0.0))
        if gap <= st.gap_seconds_seen:
            return
        n = round((gap - st.gap_seconds_seen) * st.sample_rate)
        st.gap_seconds_seen = gap
        st.skip(n)
        log.warning("%s: audio resumed after a gap of %.2f s (not analysed, not filled)", st.id, n / st.sample_rate)
        self.publish([st.status(st.state_now(), time.time(), f"audio resumed after a gap of {n / st.sample_rate:.2f} s")])

    def _check_gap(self, st: StreamState) -> None:
        """Report a state change (device lost, reconnected) at once; a loss closes open events."""
        state = st.state_now()
        if state == st.last_state or st.ended:
            return
        if state == "reconnecting":
            self.publish(st.close_events("gap"))
        self.publish([st.status(state, time.time())])

    def _check_clips(self, st: StreamState) -> None:
        """A clip that failed to write (full disk, ...) is reported on the stream's status."""
        notice = st.clips.notice() if st.clips is not None else None
        if notice:
            self.publish([st.status(st.state_now(), time.time(), notice)])

    def _fail(self, st: StreamState, err: Exception) -> None:
        st.ended = True
        self.any_failed = True  # the loop drops it from its live streams
        # Expected failures carry a message that names the input; others keep their type.
        st.error = str(err) if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {err}"
        log.error("stream %s failed and was closed: %s", st.id, err)
        self.publish(st.close_events("stream_error"))
        self.publish([st.status("error", time.time(), st.error)])
        st.source.close()

    def _submit(self, pool: ThreadPoolExecutor, pending: list[_Pending]) -> _Batch:
        """Start one batched inference call for ``pending`` on the inference thread (which
        also stacks the patches into one batch: ~5 us a patch off this thread)."""
        self.batches += 1
        self.batch_sizes.append(len(pending))
        patches = [p.patch.data for p in pending]
        return _Batch(self._run(pool, self._infer, patches, len(pending) >= THREAD_MIN_PATCHES), pending)

    @staticmethod
    def _run(pool: ThreadPoolExecutor, fn: Callable[[Any], _T], arg: Any, threaded: bool) -> Future[_T]:
        """``fn(arg)`` on ``pool``, or here and now when the work is too small to hand over."""
        if threaded:
            return pool.submit(fn, arg)
        done: Future[_T] = Future()
        try:
            done.set_result(fn(arg))
        except Exception as e:  # raised where the result is taken, as from the pool
            done.set_exception(e)
        return done

    def _infer(self, patches: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        batch = np.concatenate(patches).reshape(len(patches), *patches[0].shape)  # np.stack, without its Python loop
        step = self.infer_chunk
        if len(patches) <= step:
            scores = self.scorer.score(batch)
        else:
            scores = np.concatenate([self.scorer.score(batch[i : i + step]) for i in range(0, len(patches), step)])
        self.stage_cpu_s["inference"] += time.thread_time() - c0
        return scores, time.perf_counter() - t0

    def _collect(self, job: _Batch) -> None:
        """Wait for a batch's scores and decide them: the streams' hops through the
        :class:`~detector.decide.smoother.SmootherBank` together, a round per hop (with many
        live streams, one hop each), or a stream whose smoother the bank cannot step
        (median smoothing) through its own decisions as one block."""
        scores, t_inf = job.future.result()
        c0 = time.thread_time()
        pending = job.pending
        share = t_inf / len(pending)
        rows: dict[int, list[int]] = {}  # each stream's patches, in order
        for i, item in enumerate(pending):
            rows.setdefault(id(item.stream), []).append(i)
        # rounds[r]: the r-th patch of every bank-steppable stream with more than r (and at
        # most BANK_ROUNDS) patches here. A live stream that fell behind has a few hops in one
        # batch; stepping them round by round keeps it on the bank's array path instead of its
        # own, slower one (which, near saturation, only made it fall further behind). A file's
        # read-ahead block goes through its own smoother, as array work over its hops.
        rounds: list[list[int]] = []
        steppable = self.bank.steppable
        for idx in rows.values():
            st = pending[idx[0]].stream
            if st.error:
                continue
            if len(idx) <= BANK_ROUNDS and steppable[st.smoother.bank_row]:
                for r, i in enumerate(idx):
                    if r == len(rounds):
                        rounds.append([])
                    rounds[r].append(i)
                continue
            t1 = time.perf_counter()
            self.publish(st.on_scores_many([pending[i].patch for i in idx], scores[idx]))
            self._done([pending[i] for i in idx], share + (time.perf_counter() - t1) / len(idx))
        for single in rounds:
            t1 = time.perf_counter()
            items = [pending[i] for i in single]
            starts = np.array([p.patch.start for p in items])  # StreamState.centre_of, at once
            centres = 0.5 * (starts + starts + self.scorer.contract.features.patch_seconds)
            for j in [j for j, p in enumerate(items) if p.patch.lead_frames]:  # the first second
                centres[j] = items[j].stream.centre_of(items[j].patch)
            bank_rows = np.array([p.stream.smoother.bank_row for p in items])
            decided = self.bank.step(bank_rows, scores[single], centres)
            transitions = decided.transitions
            for j, p in enumerate(items):
                st = p.stream
                if not transitions[j] and st.quiet():
                    st.patches += 1  # what on_decisions does with a quiet hop
                else:
                    self.publish(st.on_decisions([p.patch], centres[j : j + 1], decided.row(j)))
            each = (time.perf_counter() - t1) / len(items)
            self._done(items, share + each)
        self.stage_cpu_s["decide"] += time.thread_time() - c0

    def _done(self, items: list[_Pending], busy_each_s: float) -> None:
        """Patches are decided: ``busy_each_s`` of busy time to each one's stream, and each
        one's latency."""
        done = time.perf_counter()
        observe = self.latency_observer
        for p in items:
            st = p.stream
            st.add_busy(busy_each_s)
            st.add_latency(done - p.ready_at)
            if observe is not None:
                observe(st.id, done - p.ready_at)

    def _wait(self, schedule: _Schedule, stop: threading.Event, until_status: float) -> None:
        """Sleep until a paced stream's next patch is due, the next status message, or
        (with unpaced live sources, or while a control socket is open) a short poll."""
        timeout = schedule.timeout(time.monotonic(), until_status, self.paused_version, self.config.listen)
        timeout = max(timeout, MIN_WAIT_S)
        if self.control is not None:
            # Requests are answered as they come; the stop event is seen within CONTROL_POLL_S.
            self.control.poll(round(1000 * min(timeout, CONTROL_POLL_S)))
        else:
            stop.wait(timeout)

    def handle(self, req: dict[str, Any]) -> Any:
        """Carry out one validated control request (see :class:`detector.io.control.Commands`)."""
        return self.commands(req)

    # -- what the control commands act on (detector.io.control.Controllable) ------------

    def _stream(self, stream_id: str) -> StreamState:
        return next(st for st in self.streams if st.id == stream_id)

    def stream_ids(self) -> list[str]:
        return [st.id for st in self.streams]

    def stream_status(self, stream_id: str) -> dict[str, Any]:
        st = self._stream(stream_id)
        return {"state": st.state_now(), "seq": st.seq, "stream_time": round(st.stream_time, 3),
                "patches": st.patches, "open_events": len(st.events.open), **st.counters()}

    def open_events(self, stream_id: str) -> list[dict[str, Any]]:
        return self._stream(stream_id).open_events()

    def set_paused(self, stream_id: str, paused: bool, reason: str) -> bool:
        st = self._stream(stream_id)
        if st.paused == paused or st.ended:
            return False
        if not paused and _must_drain(st.source):
            # What a live source captured during the pause is skipped now, not analysed
            # at its next due read.
            self._read(st, [], round(self.config.listen.file_chunk_s * st.sample_rate), 0)
        st.paused = paused
        self.paused_version += 1
        if self._schedule is not None:
            self._schedule.set(st, 0.0)  # read it at the next loop iteration
        else:
            st.due = 0.0
        if paused:
            self.publish(st.close_events("paused"))
        self.publish([st.status(st.state_now(), time.time(), reason)])
        return True

    def label_names(self) -> Sequence[str]:
        return self.scorer.contract.names

    def set_thresholds(self, stream_id: str, label_index: int, on: float, off: float) -> None:
        st = self._stream(stream_id)
        st.smoother.on[label_index] = on
        st.smoother.off[label_index] = off

    def reload_smoother(self) -> str:
        if self.config_path is None:
            raise ControlError("reload: sed-listen was started without --config; nothing to reload")
        new = load_config(self.config_path)
        cfg = dataclasses.replace(self.config, smoother=new.smoother)
        for st in self.streams:
            st.apply_smoother(cfg)
        self.config = cfg
        return str(self.config_path)

    # -- the loop --------------------------------------------------------------------

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
        self.publish([st.status("starting", time.time()) for st in live])
        # Each stream's status every status_interval_s, the streams' instants spread evenly
        # over the interval: thousands of status messages never come as one burst that
        # holds up every stream's next read.
        start = time.time()
        for i, st in enumerate(live):
            st.next_status = start + lc.status_interval_s * (1.0 + i / len(live))
        status_at = np.array([st.next_status for st in live])  # (live,), rebuilt with `live`
        schedule = self._schedule = _Schedule(live)  # rebuilt with `live` too
        hop_samples = {id(st): st.patcher.hop_frames * st.hop_length for st in live}
        # Inference runs on its own thread (onnxruntime releases the GIL), up to
        # MAX_INFLIGHT calls queued: while batch k is scored, this thread reads the audio of
        # batch k+1 and, while the front-end thread transforms it, decides batch k-1; batch
        # k+1 waits on the inference thread, which never idles while this one decides.
        # Results are taken in order.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sed-inference")
        fe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sed-frontend")
        inflight: deque[_Batch] = deque()  # submitted, oldest first
        carry: list[_Pending] = []  # patches not yet sent to the busy inference thread
        n_files = sum(not st.source.is_live for st in live)  # (both redone when a stream ends)
        offline = self.read_ahead and n_files == len(live)  # files only: waiting loses nothing
        cursor = 0  # where the next iteration starts reading (live[cursor % len(live)])
        due_later: list[StreamState] = []  # paced streams read whose rows are deferred
        # Files only: the front end of one read is taken at the next iteration, so that
        # the next read overlaps it (each stage on its own core); live audio is never held.
        deferred: list[_FrontEnd] = []
        try:
            while live and not stop.is_set():
                pending: list[_Pending] = []
                frames: list[tuple[StreamState, np.ndarray]] = []
                rows = 0  # raw frames in `frames`
                # Many streams: their front end starts in slices of FE_SLICE_FRAMES while
                # the rest are still being read.
                fe_jobs: list[_FrontEnd] = []
                progressed = False
                ended: list[StreamState] = []
                visited: list[StreamState] = []
                mono = time.monotonic()
                c0 = time.thread_time()
                paced_rows = 0  # raw frames read from paced streams this iteration
                capped = False
                # Streams in turn from where the last iteration stopped (see LIVE_ITER_FRAMES).
                for j in schedule.due_now(mono, cursor % len(live)):
                    st = live[j]
                    if paced_rows >= LIVE_ITER_FRAMES:
                        cursor = j  # the rest are read next, at once
                        progressed = capped = True
                        break
                    chunk = round(lc.file_chunk_s * st.sample_rate)
                    budget = chunk
                    if self.read_ahead and not st.source.is_live:  # for a large inference batch
                        budget = max(chunk, -(-FILE_BATCH_PATCHES * hop_samples[id(st)] // n_files))
                    had = len(frames)
                    try:
                        progressed |= self._read(st, frames, chunk, budget)
                        self._check_gap(st)
                        self._check_clips(st)
                    except Exception as e:  # one bad stream never stops the others
                        self._fail(st, e)
                    if st.ended:
                        ended.append(st)
                    elif st.source.paced:
                        visited.append(st)
                    got = sum(f.shape[0] for _, f in frames[had:])
                    rows += got
                    if st.source.paced:
                        paced_rows += got
                    if rows >= FE_SLICE_FRAMES:
                        fe_jobs.append(self._front_end(fe_pool, frames, rows))
                        frames, rows = [], 0
                if frames:
                    fe_jobs.append(self._front_end(fe_pool, frames, rows))
                self.stage_cpu_s["read"] += time.thread_time() - c0
                # The front end (numpy FFT and BLAS, which release the GIL) runs on its own
                # thread while this one makes the decisions of the batch scored meanwhile.
                self._update_wanted()
                # Batches already scored are decided; the oldest is waited for only when the
                # queue is full and no more streams wait to be read (not capped).
                while inflight and (inflight[0].future.done() or (not capped and len(inflight) >= MAX_INFLIGHT)):
                    self._collect(inflight.popleft())
                pending.extend(carry)  # patches from earlier iterations go first
                carry = []
                self._take(deferred, pending)
                deferred = []
                control_waiting = self.control is not None and self.control.waiting()
                # Deferred too: live streams' rows while more of them are read at once (capped).
                if (offline or capped) and progressed and not ended and not control_waiting:
                    deferred = fe_jobs
                else:
                    self._take(fe_jobs, pending)
                waiting = {id(st) for job in deferred for st, _ in job.frames}
                mono = time.monotonic()
                not_yet = []
                for st in visited + due_later:  # when each one's next patch is complete (its
                    # patcher advanced), but never so late that more than half of
                    # max_backlog_s has piled up
                    if id(st) in waiting:  # its rows are taken next iteration: not read till then
                        schedule.set(st, math.inf)
                        not_yet.append(st)
                        continue
                    wait = min(st.samples_to_next_patch() / st.sample_rate, 0.5 * lc.max_backlog_s)
                    schedule.set(st, mono + MIN_WAIT_S + wait)
                due_later = not_yet
                for st in ended:
                    if not st.error:
                        pending.extend(_Pending(st, p, time.perf_counter()) for p in st.finish())
                if pending and len(inflight) < MAX_INFLIGHT:
                    inflight.append(self._submit(pool, pending))
                else:
                    carry = pending  # the inference thread has its queue: the next batch grows
                if ended or not progressed or control_waiting:
                    # Before an end of stream, a control command or a sleep: nothing in flight.
                    while inflight:
                        self._collect(inflight.popleft())
                    if carry:
                        self._collect(self._submit(pool, carry))
                        carry = []
                if ended or self.any_failed:
                    for st in live:
                        if st.ended and not st.error:
                            self.publish(st.close_events("end_of_stream"))
                            self.publish([st.status("ended", time.time())])
                            st.source.close()
                    live = [st for st in live if not st.ended]
                    n_files = sum(not st.source.is_live for st in live)
                    offline = self.read_ahead and n_files == len(live)
                    self.any_failed = False
                    status_at = np.array([st.next_status for st in live])
                    schedule = self._schedule = _Schedule(live)
                now = time.time()
                for j in np.flatnonzero(status_at <= now).tolist():
                    st = live[j]
                    if st.status_wanted:
                        self.publish([st.status(st.state_now(), now)])
                    else:  # nobody takes it (events-only subscribers): its interval starts anew
                        st.status_skipped(now)
                    st.next_status += lc.status_interval_s  # on its schedule, without drift,
                    if st.next_status <= now:  # but after a stall one interval from now
                        st.next_status = now + lc.status_interval_s
                    status_at[j] = st.next_status
                if self.control is not None:
                    progressed |= self.control.poll() > 0
                if not progressed and live:
                    self._wait(schedule, stop, float(status_at.min()) - time.time())
        finally:
            try:
                while inflight:
                    self._collect(inflight.popleft())
                if deferred or carry:  # audio read before a stop is still analysed
                    pending = carry
                    self._take(deferred, pending)
                    if pending:
                        self._collect(self._submit(pool, pending))
            except Exception:  # already failing: the original error is the one to see
                log.exception("scoring the last batch failed during shutdown")
            pool.shutdown(wait=True)
            fe_pool.shutdown(wait=True)
            for st in live:
                self.publish(st.close_events("shutdown"))
                self.publish([st.status("ended", time.time(), "shutdown")])
                st.source.close()
            if self.seq_store is not None:
                self.seq_store.close({st.id: st.seq for st in self.streams})
            if self.control is not None:
                self.control.close()


def detect_file(
    path: str | Path,
    model: str | Path | None = None,
    config: Config | None = None,
    chunk_samples: int | None = None,
    scorer: Scorer | None = None,
) -> list[dict[str, Any]]:
    """Run one file through the streaming pipeline; return its event messages in order.

    ``chunk_samples`` sets how much audio each loop reads (the result does not
    depend on it).
    """
    config = config or Config()
    scorer = scorer or load_scorer(model, config.listen.device, config.listen.threads)
    rate = scorer.contract.features.sample_rate
    if chunk_samples is not None:
        from dataclasses import replace

        config = replace(config, listen=replace(config.listen, file_chunk_s=chunk_samples / rate))
    sink = ListSink()
    Listener([FileSource(path, rate)], [sink], config, scorer=scorer).run()
    return [m for m in sink.messages if m["type"] == "event"]
