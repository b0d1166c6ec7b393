"""``sed-bench``'s scale section: how many paced real-time streams one process sustains.

Each step runs ``n`` streams through one unchanged :class:`detector.pipeline.Listener`
and watches every stream's lag behind the wall clock; :func:`scale` doubles ``n``
until a step drops a stream, then bisects (to within a quarter).

With ``processes`` > 1 a step shares its ``n`` streams out over that many processes, each
one Listener, as ``sed-listen --workers`` does (:func:`scale_step_processes`): what one
machine sustains once the Listener's Python loop, which runs on one core at a time, is no
longer the limit.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from detector.config import Config
from detector.io.publisher import ZmqPublisher
from detector.pipeline import Listener
from detector.sources.parse import FileSource, Source

__all__ = ["SCALE_MONITOR_S", "SCALE_TRIES", "ScorerRecipe", "scale", "scale_step", "scale_step_processes"]

Scorer = Any  # OnnxScorer or detector.model.yamnet.YamnetScorer (same duck type)
SCALE_MONITOR_S = 0.1  # how often the scale monitor samples each stream's lag
SCALE_TRIES = 2  # tries per scale step before it counts as failed


def scale_step(
    scorer: Scorer, path: Path, n: int, seconds: float, config: Config, max_lag_s: float
) -> dict[str, float]:
    """``n`` streams paced from ``path`` in one Listener for ``seconds``; lag and drops.

    A stream's lag is how far the audio it has consumed is behind the wall clock
    (``now - wall_origin - samples / rate``), sampled every :data:`SCALE_MONITOR_S`.
    A live source would drop samples once that lag outgrows its buffer; here a stream
    whose lag ever exceeds ``max_lag_s`` counts as dropped.
    """
    rate = scorer.contract.features.sample_rate
    ctx = zmq.Context()
    pub = ZmqPublisher("tcp://127.0.0.1:*", context=ctx)
    sources: list[Source] = [FileSource(path, rate, realtime=True, stream_id=f"s{i}") for i in range(n)]
    listener = Listener(sources, [pub], config, scorer=scorer)
    stop = threading.Event()
    th = threading.Thread(target=listener.run, args=(stop,))
    max_lag = np.zeros(n)
    c0 = time.process_time()
    w0 = time.perf_counter()
    th.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end and th.is_alive():
        stop.wait(SCALE_MONITOR_S)
        now = time.time()
        for i, st in enumerate(listener.streams):
            if st.wall_origin is not None:
                max_lag[i] = max(max_lag[i], now - st.wall_origin - st.samples / rate)
    stop.set()
    th.join()
    cpu = time.process_time() - c0
    wall = time.perf_counter() - w0
    pub.close()
    ctx.term()
    started = sum(st.wall_origin is not None for st in listener.streams)
    # (the NaN, which nanpercentile skips, stands for "no latency at all" when no stream has one)
    lat = np.concatenate([st.latencies() for st in listener.streams] + [np.full(1, np.nan)])
    batches = np.array(listener.batch_sizes) if listener.batch_sizes else np.zeros(1)
    dropped = int(np.sum(max_lag > max_lag_s)) + (n - started)
    return {
        "streams": float(n),
        "dropped_streams": float(dropped),
        "max_lag_s": float(max_lag.max()),
        "latency_p99_ms": float(1000.0 * np.nanpercentile(lat, 99)),
        "mean_batch": float(batches.mean()),
        "cpu_percent_of_one_core": 100.0 * cpu / wall,
        "patches_per_s": float(sum(st.patches for st in listener.streams)) / wall,
    }


@dataclass(frozen=True)
class ScorerRecipe:
    """How a step's worker process loads the scorer: ours (ONNX) or YAMNet, from ``path``."""

    path: Path
    yamnet: bool = False
    device: str = "cpu"
    threads: int = 1
    max_batch: int = 64

    def load(self) -> Scorer:
        if self.yamnet:
            from detector.model.yamnet import YamnetScorer

            return YamnetScorer(self.path, self.threads, self.max_batch)
        from detector.model.scorer import OnnxScorer

        return OnnxScorer(self.path, self.device, self.threads, self.max_batch)


def _step_worker(recipe: ScorerRecipe, path: Path, n: int, seconds: float, config: Config,
                 max_lag_s: float, conn: Connection) -> None:
    """One process of a step: load, say ready, wait for the go, run, send the figures."""
    scorer = recipe.load()
    conn.send("ready")
    conn.recv()
    conn.send(scale_step(scorer, path, n, seconds, config, max_lag_s))
    conn.close()


def scale_step_processes(recipe: ScorerRecipe, path: Path, n: int, seconds: float, config: Config,
                         max_lag_s: float, processes: int) -> dict[str, float]:
    """:func:`scale_step` with ``n`` streams shared out over ``processes`` processes.

    Each process loads its scorer and starts its streams on the same go; the figures are
    the processes' together: streams and drops summed, the worst lag and p99 latency, CPU
    and patches per second summed.
    """
    shares = [n // processes + (i < n % processes) for i in range(processes)]
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    try:
        for k in [k for k in shares if k > 0]:
            here, there = ctx.Pipe()
            p = ctx.Process(target=_step_worker, args=(recipe, path, k, seconds, config, max_lag_s, there))
            p.start()
            there.close()
            pipes.append(here)
            procs.append(p)
        for c in pipes:
            if c.recv() != "ready":
                raise RuntimeError("a scale worker failed to start")
        for c in pipes:
            c.send("go")
        parts: list[dict[str, float]] = [c.recv() for c in pipes]
    except EOFError as e:
        raise RuntimeError("a scale worker process died (see its error above)") from e
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    weights = np.array([r["patches_per_s"] for r in parts])
    batches = np.array([r["mean_batch"] for r in parts])
    return {
        "streams": float(n),
        "processes": float(len(parts)),
        "dropped_streams": float(sum(r["dropped_streams"] for r in parts)),
        "max_lag_s": max(r["max_lag_s"] for r in parts),
        "latency_p99_ms": float(np.nanmax([r["latency_p99_ms"] for r in parts])),
        "mean_batch": float(np.average(batches, weights=weights) if weights.sum() > 0 else batches.mean()),
        "cpu_percent_of_one_core": float(sum(r["cpu_percent_of_one_core"] for r in parts)),
        "patches_per_s": float(weights.sum()),
    }


def scale(
    scorer: Scorer, path: Path, config: Config, *, start: int, limit: int, seconds: float, max_lag_s: float,
    log_step: Callable[[dict[str, float]], None], processes: int = 1, recipe: ScorerRecipe | None = None,
) -> dict[str, Any]:
    """Double N from ``start`` (up to ``limit``) until a step drops, then bisect between the
    last two until they are within a quarter of the one that passed.

    A step that drops is tried again once (:data:`SCALE_TRIES`): other processes on a
    shared machine can only make a step fail, never pass. With ``processes`` > 1 each step
    runs in that many processes, each loading the scorer from ``recipe``.
    """
    if processes > 1 and recipe is None:
        raise ValueError("scale over several processes needs the recipe to load the scorer in each")
    steps: list[dict[str, float]] = []
    good, bad = 0, 0
    n = start

    def passes(n: int) -> bool:
        for _try in range(SCALE_TRIES):
            if processes > 1:
                assert recipe is not None
                r = scale_step_processes(recipe, path, n, seconds, config, max_lag_s, processes)
            else:
                r = scale_step(scorer, path, n, seconds, config, max_lag_s)
            steps.append(r)
            log_step(r)
            if not r["dropped_streams"]:
                return True
        return False

    while n <= limit:
        if not passes(n):
            bad = n
            break
        good = n
        n *= 2
    while bad and good and bad - good > good // 4:  # bisect to within a quarter of `good`
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return {"max_streams": float(good), "processes": processes, "steps": steps}
