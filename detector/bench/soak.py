"""Soak test: hours of audio through the real daemon loop, recording RSS and open files.

    nice -n 19 python -m detector.bench.soak --model toy.onnx --clip scene.wav --hours 24 --out soak.json
    python -m detector.bench.soak --model toy.onnx --mic --minutes 30 --out live.json   # live capture

File mode replays ``--clip`` end to end, again and again, as **one** continuous
stream (:class:`LoopSource`) through :class:`~detector.pipeline.Listener` at full
speed, publishing on a real ZeroMQ socket read by a subscriber thread. Mic mode
captures the default input device in real time for ``--minutes``. Every
``--sample-minutes`` of audio the RSS (``VmRSS``), the number of open file
descriptors and the message counts are recorded; the summary says whether both
stayed flat after warm-up. Exit status 1 when they did not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from detector.cli.common import run_cli, setup_logging
from detector.config import Config
from detector.io.publisher import ZmqPublisher
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource, MicSource, Source

__all__ = ["LoopSource", "Meter", "main", "open_fds", "rss_kb"]

log = logging.getLogger("sed-soak")

WARMUP_FRACTION = 0.1
"""Share of the samples treated as warm-up (allocators, caches) before judging flatness."""
RSS_SLACK_MB = 8.0
"""RSS growth after warm-up tolerated as noise (allocator fragmentation)."""


def rss_kb() -> int:
    """Resident set size of this process (kB), from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError("no VmRSS line in /proc/self/status (not Linux?)")


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


class LoopSource(Source):
    """A file replayed end to end forever (until ``seconds`` of output), as one stream."""

    def __init__(self, path: str | Path, sample_rate: int, seconds: float) -> None:
        super().__init__(f"loop:{Path(path).name}", sample_rate)
        self.path = Path(path)
        self.total = round(seconds * sample_rate)
        self.emitted = 0
        self.loops = 0
        self._file = FileSource(self.path, sample_rate)
        self.state = "running"

    def read(self, max_samples: int) -> np.ndarray | None:
        if self.emitted >= self.total:
            self.state = "ended"
            return None
        want = min(max_samples, self.total - self.emitted)
        x = self._file.read(want)
        if x is None:
            self._file.close()
            self._file = FileSource(self.path, self.sample_rate)
            self.loops += 1
            x = self._file.read(want)
            if x is None:
                raise ValueError(f"{self.path}: no audio to replay")
        self.emitted += x.shape[0]
        return x

    def close(self) -> None:
        self._file.close()
        self.state = "ended"


class Meter:
    """A sink that counts messages and samples RSS/FDs every ``every_s`` of stream time."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self.samples: list[dict[str, Any]] = []
        self._next = 0.0
        self._loss = (0, 0)
        self._t0 = time.monotonic()

    def send(self, m: dict[str, Any]) -> None:
        self.counts[m["type"]] = self.counts.get(m["type"], 0) + 1
        if m["type"] == "status":
            self._loss = (m["dropped_samples"], m["overruns"])
        if m["stream_time"] >= self._next:
            self._next = m["stream_time"] + self.every_s
            self.record(m["stream_time"], *self._loss)

    def record(self, stream_time: float, dropped_samples: int, overruns: int) -> None:
        """Append one sample (stream time in seconds)."""
        self.samples.append({
            "audio_h": round(stream_time / 3600, 4),
            "wall_s": round(time.monotonic() - self._t0, 1),
            "rss_mb": round(rss_kb() / 1024, 2),
            "fds": open_fds(),
            "messages": sum(self.counts.values()),
            "dropped_samples": dropped_samples,
            "overruns": overruns,
        })
        log.info("soak: %s", self.samples[-1])

    def close(self) -> None:
        pass


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """First/last/max RSS and FDs, after-warm-up growth, and the flatness verdict."""
    if len(samples) < 2:
        raise ValueError(f"{len(samples)} samples; need at least 2 to judge a trend")
    warm = samples[max(1, int(len(samples) * WARMUP_FRACTION)):]
    rss = [s["rss_mb"] for s in warm]
    fds = [s["fds"] for s in warm]
    growth = max(rss) - rss[0]
    return {
        "samples": len(samples),
        "audio_hours": samples[-1]["audio_h"],
        "wall_seconds": samples[-1]["wall_s"],
        "rss_mb_first": samples[0]["rss_mb"],
        "rss_mb_after_warmup": rss[0],
        "rss_mb_last": rss[-1],
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "rss_growth_after_warmup_mb": round(growth, 2),
        "fds_first": samples[0]["fds"],
        "fds_after_warmup": fds[0],
        "fds_last": fds[-1],
        "fds_max": max(fds),
        "flat": growth <= RSS_SLACK_MB and max(fds) <= fds[0],
    }


def _subscriber(endpoint: str, stop: threading.Event, got: list[int]) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    n = 0
    while not stop.is_set():
        if sock.poll(100):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                    n += 1
                except zmq.Again:
                    break
    got.append(n)
    sock.close(0)


def _run(args: argparse.Namespace) -> int:
    scorer = OnnxScorer(args.model, threads=args.threads)
    rate = scorer.contract.features.sample_rate
    source: Source
    if args.mic:
        source = MicSource(None, rate)
        seconds = args.minutes * 60.0
    else:
        if args.clip is None:
            raise ValueError("file mode needs --clip AUDIO_FILE (or use --mic)")
        seconds = args.hours * 3600.0
        source = LoopSource(args.clip, rate, seconds)
    meter = Meter(args.sample_minutes * 60.0)
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    sub_stop = threading.Event()
    got: list[int] = []
    sub = threading.Thread(target=_subscriber, args=(pub.bound, sub_stop, got), daemon=True)
    sub.start()
    stop = threading.Event()
    if args.mic:
        threading.Timer(seconds, stop.set).start()
    listener = Listener([source], [meter, pub], Config(), scorer=scorer)
    t0 = time.monotonic()
    try:
        listener.run(stop)
        st = listener.streams[0]
        c = st.counters()
        meter.record(st.stream_time, c["dropped_samples"], c["overruns"])  # sockets still open
    finally:
        sub_stop.set()
        sub.join(5)
        pub.close()
    summary = summarize(meter.samples)
    report: dict[str, Any] = {
        "mode": "mic" if args.mic else "file",
        "summary": summary,
        "speed_x_realtime": round(st.stream_time / (time.monotonic() - t0), 1),
        "messages": meter.counts,
        "subscriber_received": got[0] if got else None,
        "counters": c,
        "samples": meter.samples,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(json.dumps(summary))
    return 0 if summary["flat"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sed-soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="ONNX model from sed-export")
    p.add_argument("--clip", type=Path, help="audio file replayed end to end (file mode)")
    p.add_argument("--hours", type=float, default=24.0, help="hours of audio in file mode")
    p.add_argument("--mic", action="store_true", help="capture the default microphone instead")
    p.add_argument("--minutes", type=float, default=30.0, help="wall minutes of capture in mic mode")
    p.add_argument("--sample-minutes", type=float, default=30.0, help="audio minutes between samples")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument("--out", type=Path, help="write the full report (JSON) here")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("sed-soak", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
