"""Log-mel frames and YAMNet's scores for every pool file, computed once, keyed by content hash.

``sed-corpus pool cache POOL`` fills ``POOL/cache/<hash[:2]>/<hash>.npz`` for each row of
the pool (:func:`training.corpus.pool.read_pool`):

``mel``      ``(frames, 64)`` float16 log-mel (:func:`detector.frontend.features.log_mel`, the one
             feature definition), of the file zero-padded to at least one patch;
``teacher``  ``(patches, 521)`` float16 YAMNet probabilities for the patches starting at
             frames ``0, hop, 2 hop, ...`` (:data:`TEACHER_HOP_FRAMES`, 0.48 s).

The key is the PCM hash, so the same audio reached by two paths is scored once, and an
interrupted run resumes where it stopped (a file is written whole under a temporary
name, then renamed). ``POOL/cache/summary.csv`` gets one line per file: its patch count,
the teacher's mean Speech and Music and its top three classes by mean, which the pool's
report uses to check the path-derived kinds.

Cost here: about 0.3 ms of YAMNet and 0.1 ms of log-mel per patch on one core, so the
whole pool (~30 h, ~225 k patches) takes a few minutes.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from detector.frontend.features import FeatureConfig, log_mel
from training.corpus.pool import read_pool

__all__ = ["TEACHER_HOP_FRAMES", "cache_path", "cache_pool", "load_entry", "main_cache",
           "patch_starts"]

log = logging.getLogger(__name__)

TEACHER_HOP_FRAMES = 48
SUMMARY_COLUMNS = ("hash", "package", "kind", "patches", "speech", "music", "top")


def cache_path(pool: Path, h: str) -> Path:
    return pool / "cache" / h[:2] / f"{h}.npz"


def patch_starts(frames: int, cfg: FeatureConfig, hop: int = TEACHER_HOP_FRAMES) -> np.ndarray:
    """Start frames of the cached patches: every ``hop`` frames, at least one."""
    return np.arange(0, max(1, frames - cfg.patch_frames + 1), hop)


def features_of(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``(frames, n_mels)`` float32 log-mel of ``wave`` zero-padded to one patch at least."""
    wave = np.pad(np.asarray(wave, dtype=np.float64), (0, max(0, cfg.patch_samples - wave.size)))
    return log_mel(wave, cfg)


def load_entry(pool: Path, h: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mel (frames, 64) float16, teacher (patches, 521) float16)`` of one cached file."""
    with np.load(cache_path(pool, h)) as z:
        return z["mel"], z["teacher"]


def _score(scorer: Any, mel: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    starts = patch_starts(mel.shape[0], cfg)
    patches = np.stack([mel[s : s + cfg.patch_frames] for s in starts]).astype(np.float32)
    return np.asarray(scorer.score(patches), dtype=np.float32)


def cache_pool(pool: Path, scorer: Any, cfg: FeatureConfig | None = None) -> dict[str, int]:
    """Fill the cache for every pool row; returns counts (done, computed, failed)."""
    cfg = cfg or FeatureConfig()
    rows = read_pool(pool)
    names = [lab.name for lab in scorer.contract.labels]
    speech, music = names.index("Speech"), names.index("Music")
    summary_path = pool / "cache" / "summary.csv"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    have = set()
    if summary_path.is_file():
        with summary_path.open(newline="", encoding="utf-8") as f:
            have = {r["hash"] for r in csv.DictReader(f)}
    new = not summary_path.is_file()
    counts = {"done": 0, "computed": 0, "failed": 0}
    start, patches = time.monotonic(), 0
    with summary_path.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        if new:
            w.writeheader()
        for n, row in enumerate(rows):
            h = row["hash"]
            out = cache_path(pool, h)
            if out.is_file() and h in have:
                counts["done"] += 1
                continue
            path = Path(row["path"]) if os.path.isabs(row["path"]) else pool / row["path"]
            try:
                wave, sr = sf.read(str(path), dtype="float32")
            except (sf.LibsndfileError, RuntimeError) as e:
                log.warning("%s: %s", path, e)
                counts["failed"] += 1
                continue
            if sr != cfg.sample_rate or wave.ndim != 1:
                log.warning("%s: %d Hz, shape %s; the pool holds %d Hz mono", path, sr,
                            wave.shape, cfg.sample_rate)
                counts["failed"] += 1
                continue
            mel = features_of(wave, cfg)
            probs = _score(scorer, mel, cfg)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.stem + ".tmp.npz")
            np.savez(tmp, mel=mel.astype(np.float16), teacher=probs.astype(np.float16))
            tmp.replace(out)
            mean = probs.mean(axis=0)
            top = np.argsort(-mean)[:3]
            w.writerow({"hash": h, "package": row["package"], "kind": row["kind"],
                        "patches": probs.shape[0], "speech": round(float(mean[speech]), 3),
                        "music": round(float(mean[music]), 3),
                        "top": "|".join(f"{names[i]}:{mean[i]:.2f}" for i in top)})
            counts["computed"] += 1
            patches += probs.shape[0]
            if counts["computed"] % 500 == 0:
                f.flush()
                rate = patches / max(1e-9, time.monotonic() - start)
                log.info("cached %d/%d files (%d patches, %.0f patches/s)", n + 1, len(rows),
                         patches, rate)
    log.info("cache %s: %s; %d patches in %.0f s", pool, counts, patches,
             time.monotonic() - start)
    return counts


def main_cache(pool: Path, threads: int = 1) -> int:
    """``sed-corpus pool cache POOL``: returns the exit code."""
    from detector.model.yamnet import YamnetScorer, find_yamnet, how_to_fetch

    path = find_yamnet(None)
    if path is None:
        log.error("%s", how_to_fetch())
        return 2
    if not read_pool(pool):
        log.error("%s holds no decoded package; run `sed-corpus pool build %s` first", pool, pool)
        return 2
    counts = cache_pool(pool, YamnetScorer(path, threads=threads))
    return 1 if counts["failed"] else 0
