"""Scaper-like soundscapes with strong labels: foreground events over real backgrounds.

A scene is ``seconds`` long. A background clip (looped, random offset) is scaled to a
random level; 1..``max_events`` foreground clips, label-balanced (a first label is
drawn uniformly, then a clip carrying it), are placed at random onsets (they may overlap), each at a random SNR against the background, optionally through a
synthetic room (exponentially decaying noise impulse response). The mix gets a random
overall gain. Each event yields one row with the onset/offset of its *audible* part
(frames within ``active_db`` of its peak); a labelled background yields a row
spanning the scene. Without any background clip the bed is high-passed brown noise,
labelled :data:`NOISE_LABELS`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

__all__ = ["NOISE_LABELS", "Scene", "SceneConfig", "SceneEvent", "SourceClip", "active_span", "make_scene"]

log = logging.getLogger(__name__)

NOISE_LABELS = ("Noise",)  # label of the synthetic brown-noise bed used when no background exists


@dataclass(frozen=True)
class SceneConfig:
    """Mixing parameters. Levels in dB, times in seconds."""

    sample_rate: int = 16000
    seconds: float = 10.0
    max_events: int = 3
    snr_db: tuple[float, float] = (0.0, 20.0)
    background_dbfs: tuple[float, float] = (-45.0, -25.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    reverb_probability: float = 0.6
    rt60: tuple[float, float] = (0.15, 0.8)
    wet: tuple[float, float] = (0.1, 0.5)
    active_db: float = 30.0
    frame: int = 160  # samples per frame of the activity detector
    peak_limit: float = 0.99


@dataclass(frozen=True)
class SourceClip:
    """A decoded 16 kHz clip available to the mixer."""

    wave: np.ndarray
    labels: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class SceneEvent:
    """One strong label: seconds from the scene start."""

    labels: tuple[str, ...]
    onset: float
    offset: float
    source: str


@dataclass(frozen=True)
class Scene:
    """A mixed soundscape and its strong labels."""

    wave: np.ndarray
    events: tuple[SceneEvent, ...]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def active_span(wave: np.ndarray, cfg: SceneConfig) -> tuple[int, int]:
    """First and one-past-last sample of frames within ``active_db`` of the loudest frame."""
    n = wave.size // cfg.frame
    if n == 0:
        return 0, wave.size
    energy = np.square(wave[: n * cfg.frame].reshape(n, cfg.frame), dtype=np.float64).mean(axis=1)
    peak = energy.max()
    if peak <= 0:
        return 0, 0
    on = np.nonzero(energy >= peak * 10 ** (-cfg.active_db / 10))[0]
    return int(on[0]) * cfg.frame, (int(on[-1]) + 1) * cfg.frame


def _room(rng: np.random.Generator, x: np.ndarray, cfg: SceneConfig) -> np.ndarray:
    rt60 = rng.uniform(*cfg.rt60)
    t = np.arange(round(rt60 * cfg.sample_rate)) / cfg.sample_rate
    ir = rng.standard_normal(t.size) * np.exp(-6.91 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2)) or 1.0
    wet = rng.uniform(*cfg.wet)
    tail = fftconvolve(x, ir)[: x.size]
    return np.asarray((1 - wet) * x + wet * tail * (_rms(x) / (_rms(tail) or 1.0)))


def _background(rng: np.random.Generator, clip: SourceClip | None, n: int,
                cfg: SceneConfig) -> np.ndarray:
    if clip is None or clip.wave.size == 0:
        noise = np.cumsum(rng.standard_normal(n)) * 0.02  # brown noise
        bg = noise - np.convolve(noise, np.ones(400) / 400, mode="same")
    else:
        reps = -(-n // clip.wave.size) + 1
        looped = np.tile(clip.wave, reps)
        start = int(rng.integers(0, clip.wave.size))
        bg = looped[start : start + n].astype(np.float64)
    level = 10 ** (rng.uniform(*cfg.background_dbfs) / 20)
    return bg * (level / (_rms(bg) or 1.0))


def _by_primary_label(events: Sequence[SourceClip]) -> list[list[int]]:
    """Event indices grouped by first label, groups in sorted label order."""
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(events):
        groups.setdefault(clip.labels[0] if clip.labels else "", []).append(i)
    return [groups[k] for k in sorted(groups)]


def make_scene(rng: np.random.Generator, events: Sequence[SourceClip],
               backgrounds: Sequence[SourceClip], cfg: SceneConfig,
               n_events: int | None = None) -> Scene:
    """Mix one scene. ``n_events=0`` gives a background-only scene."""
    n = round(cfg.seconds * cfg.sample_rate)
    bg_clip = backgrounds[int(rng.integers(len(backgrounds)))] if backgrounds else None
    mix = _background(rng, bg_clip, n, cfg)
    bg_rms = _rms(mix)
    rows: list[SceneEvent] = []
    if bg_clip is None:
        rows.append(SceneEvent(NOISE_LABELS, 0.0, cfg.seconds, "synthetic:brown_noise"))
    elif bg_clip.labels:
        rows.append(SceneEvent(bg_clip.labels, 0.0, cfg.seconds, bg_clip.name))
    count = int(rng.integers(1, cfg.max_events + 1)) if n_events is None else n_events
    by_label = _by_primary_label(events)
    for _ in range(count if events else 0):
        pool = by_label[int(rng.integers(len(by_label)))]
        clip = events[pool[int(rng.integers(len(pool)))]]
        x = clip.wave.astype(np.float64)[:n]
        a, b = active_span(x, cfg)
        if b <= a:
            continue
        x = _room(rng, x, cfg) if rng.random() < cfg.reverb_probability else x
        snr = rng.uniform(*cfg.snr_db)
        x = x * (bg_rms * 10 ** (snr / 20) / (_rms(x[a:b]) or 1.0))
        start = int(rng.integers(0, max(1, n - (b - a))))
        start = max(0, start - a)  # so that the audible part starts inside the scene
        stop = min(n, start + x.size)
        mix[start:stop] += x[: stop - start]
        on, off = start + a, min(stop, start + b)
        if off > on:
            rows.append(SceneEvent(clip.labels, on / cfg.sample_rate, off / cfg.sample_rate,
                                   clip.name))
    mix *= 10 ** (rng.uniform(*cfg.gain_db) / 20)
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > cfg.peak_limit:
        mix *= cfg.peak_limit / peak
    return Scene(mix.astype(np.float32), tuple(rows))
