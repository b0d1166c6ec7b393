"""``python -m detector.bench``: the daemon's speed and size, printed (not a pass/fail test).

Figures, each measured end to end on this machine:

- **file mode**: seconds of audio per wall second through ``sed-listen``'s pipeline
  (decode, features, batched inference, smoothing, events, scores messages), and the
  same split into features-only and inference-only throughput;
- **live mode**: per-hop processing latency p50/p99 (audio read -> messages sent) with
  a file paced to the wall clock, as a microphone would be;
- **RSS** of a ``sed-listen`` process, and **start-up** time from exec to its first
  patch's scores on stdout.

Targets (issue 2): >= 2000x real time, p99 <= 10 ms per hop, RSS <= 150 MB,
start-up <= 1.5 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from detector.config import Config, ListenConfig
from detector.features import log_mel
from detector.models import resolve_model
from detector.pipeline import Listener
from detector.publisher import ListSink
from detector.scorer import OnnxScorer
from detector.sources import FileSource

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent


def _test_audio(path: Path, seconds: float, rate: int, seed: int = 0) -> Path:
    """Pink-ish noise with tone bursts, written in blocks (constant memory)."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as f:
        block = rate * 10
        for start in range(0, int(seconds * rate), block):
            n = min(block, int(seconds * rate) - start)
            x = 0.01 * np.cumsum(rng.standard_normal(n)) / np.sqrt(np.arange(1, n + 1))
            t = np.arange(n) / rate
            x += 0.2 * np.sin(2 * np.pi * 880 * t) * (np.sin(2 * np.pi * 0.2 * t) > 0.5)
            f.write(np.clip(x, -1, 1).astype(np.float32))
    return path


def file_mode(scorer: OnnxScorer, path: Path, config: Config) -> dict[str, float]:
    duration = sf.info(str(path)).duration
    t0 = time.perf_counter()
    sink = ListSink()
    listener = Listener([FileSource(path, 16000)], [sink], config, scorer=scorer)
    listener.run()
    wall = time.perf_counter() - t0
    x, _ = sf.read(str(path), dtype="float32", frames=16000 * 60)
    t1 = time.perf_counter()
    frames = log_mel(x)
    feat = time.perf_counter() - t1
    cfg = scorer.contract.features
    hop = listener.streams[0].patcher.hop_frames
    patches = np.stack([frames[i : i + cfg.patch_frames] for i in range(0, len(frames) - cfg.patch_frames, hop)])
    scorer.score(patches[:8])
    t2 = time.perf_counter()
    scorer.score(patches)
    inf = time.perf_counter() - t2
    return {
        "audio_s": duration,
        "wall_s": wall,
        "x_realtime": duration / wall,
        "features_x_realtime": 60.0 / feat,
        "inference_x_realtime": 60.0 / inf,
        "inference_ms_per_patch": 1000 * inf / len(patches),
        "messages": len(sink.messages),
    }


def live_mode(scorer: OnnxScorer, path: Path, seconds: float, config: Config) -> dict[str, float]:
    lc = dataclasses.replace(config.listen, realtime=True)
    src = FileSource(path, 16000, realtime=True)
    listener = Listener([src], [ListSink()], dataclasses.replace(config, listen=lc), scorer=scorer)
    import threading

    stop = threading.Event()
    th = threading.Thread(target=listener.run, args=(stop,))
    c0 = time.process_time()
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join()
    cpu = time.process_time() - c0
    lat = np.array(listener.streams[0]._latency) * 1000
    return {
        "hops": float(len(lat)),
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_max_ms": float(lat.max()),
        "cpu_percent_of_one_core": 100 * cpu / seconds,
    }


def process_figures(model: Path, path: Path) -> dict[str, float]:
    """Start-up to first scores line, and peak RSS, of a real sed-listen process."""
    cmd = [sys.executable, "-m", "detector.cli_listen", str(path), "--model", str(model),
           "--no-publish", "--json-all", "--realtime", "--log-level", "WARNING"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    startup = float("nan")
    for line in proc.stdout:
        if '"type":"scores"' in line:
            startup = time.perf_counter() - t0
            break
    time.sleep(3.0)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    rss = {k: int(v.split()[0]) / 1024 for k, v in (ln.split(":", 1) for ln in status.splitlines()) if k in ("VmRSS", "VmHWM")}
    proc.terminate()
    proc.wait(5)
    return {"startup_to_first_patch_s": startup, "rss_mb": rss["VmRSS"], "peak_rss_mb": rss["VmHWM"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--seconds", type=float, default=1800.0, help="file-mode audio length")
    p.add_argument("--live-seconds", type=float, default=20.0)
    p.add_argument("--hops", type=float, nargs="+", default=[0.24, 0.48, 0.96])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    model = resolve_model(args.model)
    scorer = OnnxScorer(model, threads=args.threads)
    results: dict[str, Any] = {"model": str(model), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        long = _test_audio(Path(tmp) / "long.wav", args.seconds, 16000)
        short = _test_audio(Path(tmp) / "short.wav", 120.0, 16000, seed=1)
        for hop in args.hops:
            cfg = Config(listen=ListenConfig(patch_hop_s=hop, threads=args.threads))
            results[f"file_hop{hop}"] = file_mode(scorer, long, cfg)
            results[f"live_hop{hop}"] = live_mode(scorer, short, args.live_seconds, cfg)
        results["process"] = process_figures(model, short)
    for key, vals in results.items():
        if isinstance(vals, dict):
            print(f"{key:14s} " + "  ".join(f"{k}={v:.4g}" for k, v in vals.items()))
        else:
            print(f"{key:14s} {vals}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
