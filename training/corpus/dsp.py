"""Small signal helpers shared by the synthetic-event generators (numpy + scipy.signal)."""

from __future__ import annotations

import numpy as np

__all__ = ["band", "brown", "finish", "lowpass", "partials", "place", "seconds_axis"]


def seconds_axis(seconds: float, sr: int) -> np.ndarray:
    """Sample times in seconds of a ``seconds``-long signal."""
    return np.arange(round(seconds * sr)) / sr


def partials(f0: float, t: np.ndarray, ratios: list[float], decay: float,
             rng: np.random.Generator) -> np.ndarray:
    """Decaying partials at ``f0 * ratios`` (higher ones quieter and shorter)."""
    out = np.zeros_like(t)
    for k, r in enumerate(ratios):
        amp = rng.uniform(0.3, 1.0) / (k + 1)
        out += amp * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 2 * np.pi)) * np.exp(
            -t * decay * (1 + 0.5 * k))
    return out


def finish(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faded in and out over 64 samples and peak-normalised to a random 0.3-0.9."""
    peak = float(np.max(np.abs(x))) or 1.0
    fade = min(64, x.size)
    x = x.copy()
    x[:fade] *= np.linspace(0.0, 1.0, fade)
    x[-fade:] *= np.linspace(1.0, 0.0, fade)
    return (x / peak * rng.uniform(0.3, 0.9)).astype(np.float32)


def place(total: np.ndarray, part: np.ndarray, start: int) -> None:
    """Add ``part`` into ``total`` at sample ``start``, cut at the end."""
    stop = min(total.size, start + part.size)
    if start < stop:
        total[start:stop] += part[: stop - start]


def lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 4) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(order, min(cutoff, 0.45 * sr), btype="low", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x))


def band(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(order, [lo, min(hi, 0.45 * sr)], btype="band", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x))


def brown(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brown (1/f^2) noise with its drift (below ~20 Hz at 16 kHz) removed."""
    x = np.cumsum(rng.standard_normal(n))
    return x - np.convolve(x, np.ones(801) / 801, mode="same")
