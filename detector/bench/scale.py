"""``sed-bench``'s scale section: how many paced real-time streams one process sustains.

Each step runs ``n`` streams through one unchanged :class:`detector.pipeline.Listener`
and watches every stream's lag behind the wall clock; :func:`scale` doubles ``n``
until a step drops a stream, then bisects (to within a quarter).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from detector.config import Config
from detector.io.publisher import ZmqPublisher
from detector.pipeline import Listener
from detector.sources.parse import FileSource, Source

__all__ = ["SCALE_MONITOR_S", "SCALE_TRIES", "scale", "scale_step"]

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


def scale(
    scorer: Scorer, path: Path, config: Config, *, start: int, limit: int, seconds: float, max_lag_s: float,
    log_step: Callable[[dict[str, float]], None],
) -> dict[str, Any]:
    """Double N from ``start`` (up to ``limit``) until a step drops, then bisect between the
    last two until they are within a quarter of the one that passed.

    A step that drops is tried again once (:data:`SCALE_TRIES`): other processes on a
    shared machine can only make a step fail, never pass.
    """
    steps: list[dict[str, float]] = []
    good, bad = 0, 0
    n = start

    def passes(n: int) -> bool:
        for _try in range(SCALE_TRIES):
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
    return {"max_streams": float(good), "steps": steps}
