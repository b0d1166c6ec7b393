"""Clean synthetic events for thin labels, deterministic from a seed.

Every generator takes a ``numpy.random.Generator`` and the sample rate and returns a
mono float32 waveform in [-1, 1] (peak-normalised to a random level) of a few seconds.
:data:`KINDS` maps a kind name to (generator, AudioSet labels).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["KINDS", "generate"]

Generator = Callable[[np.random.Generator, int], np.ndarray]


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(round(seconds * sr)) / sr


def _partials(f0: float, t: np.ndarray, ratios: list[float], decay: float,
              rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(t)
    for k, r in enumerate(ratios):
        amp = rng.uniform(0.3, 1.0) / (k + 1)
        out += amp * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 2 * np.pi)) * np.exp(
            -t * decay * (1 + 0.5 * k))
    return out


def _finish(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.max(np.abs(x))) or 1.0
    fade = min(64, x.size)
    x = x.copy()
    x[:fade] *= np.linspace(0.0, 1.0, fade)
    x[-fade:] *= np.linspace(1.0, 0.0, fade)
    return (x / peak * rng.uniform(0.3, 0.9)).astype(np.float32)


def _place(total: np.ndarray, part: np.ndarray, start: int) -> None:
    stop = min(total.size, start + part.size)
    if start < stop:
        total[start:stop] += part[: stop - start]


def chime(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Doorbell ding-dong: two (sometimes three) bell tones a major third/fifth apart."""
    f1 = rng.uniform(500, 1000)
    interval = rng.choice([5 / 4, 4 / 3, 3 / 2])
    tones = [f1 * interval, f1] if rng.random() < 0.8 else [f1 * 3 / 2, f1 * 5 / 4, f1]
    gap = rng.uniform(0.35, 0.7)
    total = np.zeros(round((gap * len(tones) + 1.8) * sr))
    ratios = [1.0, 2.0, 2.76, 3.0, 5.4]
    for i, f in enumerate(tones):
        tone_t = _t(rng.uniform(1.2, 1.8), sr)
        _place(total, _partials(f, tone_t, ratios, rng.uniform(2.0, 4.0), rng), round(i * gap * sr))
    return _finish(total, rng)


def siren_two_tone(rng: np.random.Generator, sr: int) -> np.ndarray:
    """European hi-lo siren: alternating tones with odd harmonics (square-ish)."""
    lo = rng.uniform(400, 600)
    hi = lo * rng.uniform(1.25, 1.4)
    half = rng.uniform(0.4, 0.7)
    t = _t(rng.uniform(3.0, 6.0), sr)
    f = np.where((t // half) % 2 == 0, hi, lo)
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in (1, 3, 5, 7))
    return _finish(np.asarray(x), rng)


def siren_wail(rng: np.random.Generator, sr: int) -> np.ndarray:
    """US wail/yelp: a tone swept up and down between ~600 and ~1500 Hz."""
    period = rng.uniform(0.25, 0.4) if rng.random() < 0.4 else rng.uniform(2.0, 4.0)
    t = _t(rng.uniform(3.0, 6.0), sr)
    lo, hi = rng.uniform(500, 750), rng.uniform(1300, 1700)
    f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    return _finish(x, rng)


def alarm_beeps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Alarm clock / smoke alarm: square-ish beeps in repeating patterns."""
    f = rng.uniform(2000, 4000) if rng.random() < 0.5 else rng.uniform(800, 2000)
    beep, gap = rng.uniform(0.06, 0.3), rng.uniform(0.05, 0.3)
    per_burst = int(rng.integers(1, 5))
    pause = rng.uniform(0.3, 1.0)
    total = np.zeros(round(rng.uniform(3.0, 5.0) * sr))
    tb = _t(beep, sr)
    tone = np.sign(np.sin(2 * np.pi * f * tb)) * 0.6 + 0.4 * np.sin(2 * np.pi * f * tb)
    pos = 0.0
    while pos * sr < total.size:
        for _ in range(per_burst):
            _place(total, tone, round(pos * sr))
            pos += beep + gap
        pos += pause
    return _finish(total, rng)


def shatter(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Glass breaking: a noise burst plus many short high resonances (shards) that decay."""
    total = np.zeros(round(rng.uniform(1.2, 2.0) * sr))
    impact_t = _t(0.08, sr)
    _place(total, rng.standard_normal(impact_t.size) * np.exp(-impact_t * 60), 0)
    for _ in range(int(rng.integers(20, 60))):
        t = _t(rng.uniform(0.05, 0.4), sr)
        f = rng.uniform(2500, 7000)
        ring = np.sin(2 * np.pi * f * t) * np.exp(-t * rng.uniform(15, 60)) * rng.uniform(0.1, 0.6)
        _place(total, ring, round(abs(rng.exponential(0.15)) * sr))
    tail_t = _t(total.size / sr, sr)
    hiss = rng.standard_normal(total.size) * np.exp(-tail_t * 6) * 0.2
    return _finish(total + np.diff(hiss, prepend=0.0), rng)


def knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Knocking on a door: 2-6 damped low resonances with irregular spacing."""
    total = np.zeros(round(rng.uniform(1.5, 3.0) * sr))
    modes = rng.uniform(80, 400, size=3)
    pos = rng.uniform(0.05, 0.3)
    for _ in range(int(rng.integers(2, 7))):
        t = _t(0.15, sr)
        hit = sum(np.sin(2 * np.pi * m * t) * np.exp(-t * rng.uniform(30, 70)) for m in modes)
        click = rng.standard_normal(t.size) * np.exp(-t * 400) * 0.5
        _place(total, (np.asarray(hit) + click) * rng.uniform(0.6, 1.0), round(pos * sr))
        pos += rng.uniform(0.12, 0.35)
    return _finish(total, rng)


def phone_ring(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Telephone ring: dual-tone bursts (e.g. 440+480 Hz) with bell-like amplitude trill."""
    f1 = rng.uniform(400, 1000)
    f2 = f1 * rng.uniform(1.05, 1.3)
    on, off = rng.uniform(0.8, 2.0), rng.uniform(0.5, 2.0)
    trill = rng.uniform(15, 25)
    t = _t(on, sr)
    burst = (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) * (
        0.6 + 0.4 * np.sign(np.sin(2 * np.pi * trill * t)))
    total = np.zeros(round(rng.uniform(3.0, 6.0) * sr))
    pos = 0.0
    while pos * sr < total.size:
        _place(total, burst, round(pos * sr))
        pos += on + off
    return _finish(total, rng)


KINDS: dict[str, tuple[Generator, tuple[str, ...]]] = {
    "chime": (chime, ("Doorbell", "Ding-dong")),
    "siren_two_tone": (siren_two_tone, ("Siren", "Emergency vehicle")),
    "siren_wail": (siren_wail, ("Siren", "Emergency vehicle")),
    "alarm_beeps": (alarm_beeps, ("Alarm", "Beep, bleep")),
    "shatter": (shatter, ("Shatter", "Glass")),
    "knock": (knock, ("Knock",)),
    "phone_ring": (phone_ring, ("Telephone bell ringing", "Telephone")),
}


def generate(kind: str, seed: int, sample_rate: int) -> np.ndarray:
    """One event of ``kind`` (a key of :data:`KINDS`), identical for identical arguments."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind][0](np.random.default_rng(seed), sample_rate)
