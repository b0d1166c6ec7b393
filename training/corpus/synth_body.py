"""Synthetic applause and footsteps, for labels whose few recordings are all alike.

Clapping has ten drum-machine claps and one applause recording in ``../shared/DATA.md``'s
sources, and Walk, footsteps the game steps of one package: a model trained on them
hears real applause as rain and hard steps as clapping. These generators follow the
contract of :mod:`training.corpus.synth` (a ``numpy.random.Generator`` and a sample rate
in, a peak-normalised float32 mono waveform out).

- A clap (:func:`clap_hit`) after Peltola et al., "Synthesis of hand-clapping sounds"
  (IEEE TASLP 2007): a noise burst of a few ms shaped by the air cavity between the
  palms, one broad resonance whose centre (0.8-2.5 kHz) and Q (1-4) depend on how the
  hands meet. A single person's claps are not a kind: YAMNet hears neither ours nor the
  real drum-machine claps as clapping, so nothing could check them.
- Applause (:func:`applause`) is 10-120 clappers, each with their own hand
  configuration, rate (3-8 claps/s) and timing jitter, summed, swelling in and dying
  away; dry, since the corpus's augmentation adds rooms.
- Footsteps (:func:`footsteps`) on gravel or snow: heel then toe, each a low body thud
  and a crunch of small grain impacts, at a walking pace.

:mod:`training.corpus.synth_check` gives YAMNet's ranks for both (``synth_check.csv``).
"""

from __future__ import annotations

import numpy as np

from training.corpus.dsp import band, finish, lowpass, place, seconds_axis

__all__ = ["applause", "clap_hit", "footsteps"]


def _resonator(x: np.ndarray, freq: float, q: float, sr: int) -> np.ndarray:
    """Second-order resonant band-pass at ``freq`` with quality ``q`` (scipy iirpeak)."""
    from scipy.signal import iirpeak, lfilter

    b, a = iirpeak(min(freq, 0.45 * sr), q, fs=sr)
    return np.asarray(lfilter(b, a, x))


def clap_hit(rng: np.random.Generator, sr: int, freq: float, q: float, decay_s: float,
             thump: float = 0.4) -> np.ndarray:
    """One clap: a short noise burst through the palm cavity's resonance, plus a palm thump."""
    t = seconds_axis(0.12, sr)
    attack = rng.uniform(0.0005, 0.002)
    burst = rng.standard_normal(t.size) * np.minimum(1.0, t / attack) * np.exp(-t / decay_s)
    cavity = _resonator(burst, freq * rng.uniform(0.95, 1.05), q, sr)
    air = band(burst, 2000, 7000, sr) * rng.uniform(0.1, 0.4)
    palms = lowpass(rng.standard_normal(t.size), rng.uniform(200, 450), sr) * np.exp(-t / 0.004)
    return (cavity / (np.std(cavity) + 1e-9) + thump * palms / (np.std(palms) + 1e-9)
            + 0.3 * air / (np.std(air) + 1e-9))


def _hands(rng: np.random.Generator) -> tuple[float, float, float]:
    """One person's hand configuration: resonance (Hz), Q and decay (s)."""
    return rng.uniform(800, 2500), rng.uniform(1.0, 4.0), rng.uniform(0.002, 0.008)


def applause(rng: np.random.Generator, sr: int) -> np.ndarray:
    """An audience: 10-120 clappers, each with their own hands, rate and jitter, over 2-5 s,
    swelling in and dying away."""
    seconds = rng.uniform(2.0, 5.0)
    total = np.zeros(round(seconds * sr))
    for _ in range(int(rng.integers(10, 121))):
        freq, q, decay = _hands(rng)
        period = 1 / rng.uniform(3, 8)
        gain = rng.uniform(0.2, 1.0)  # near and far clappers
        pos = rng.uniform(0, 0.5)
        stop = seconds - rng.uniform(0, 0.8)
        while pos < stop:
            place(total, gain * clap_hit(rng, sr, freq, q, decay, thump=0.0), round(pos * sr))
            pos += period * rng.uniform(0.85, 1.15)
    t = seconds_axis(seconds, sr)[: total.size]
    swell = np.minimum(1.0, t / rng.uniform(0.1, 0.6)) * np.minimum(1.0, (seconds - t) / rng.uniform(0.3, 1.0))
    return finish(total * np.clip(swell, 0.0, 1.0), rng)


def _step(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One footfall on gravel or snow: heel, then toe 40-120 ms later, each a low body thud
    and the crunch of 15-60 small grain impacts (1-7 kHz)."""
    out = np.zeros(round(0.35 * sr))
    toe = rng.uniform(0.04, 0.12)
    t = seconds_axis(0.2, sr)
    for at, level in ((0.0, 1.0), (toe, rng.uniform(0.3, 0.7))):
        thud = lowpass(rng.standard_normal(t.size), rng.uniform(60, 250), sr) * np.exp(-t / rng.uniform(0.01, 0.03))
        crunch = np.zeros(t.size)
        for _ in range(int(rng.integers(15, 60))):
            g = round(rng.uniform(0, 0.12) * sr)
            crunch[g: g + 40] += rng.standard_normal(min(40, t.size - g)) * rng.uniform(0.2, 1.0)
        crunch = band(crunch, 1000, 7000, sr)
        mix = thud / (np.std(thud) + 1e-9) + rng.uniform(0.3, 1.2) * crunch / (np.std(crunch) + 1e-9)
        place(out, level * mix, round(at * sr))
    return out


def footsteps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A walk on gravel or snow: 2-7 steps at 1.5-2.3 steps/s.

    Only the crunching surfaces: YAMNet hears them as footsteps (``synth_check.csv``),
    while the hard-floor and wood-board versions tried read as a heartbeat, chopping or
    music, so they were left out.
    """
    n = int(rng.integers(2, 8))
    period = 1 / rng.uniform(1.5, 2.3)
    total = np.zeros(round((0.5 + n * period) * sr))
    pos = rng.uniform(0.02, 0.2)
    for k in range(n):
        side = 1.0 if k % 2 == 0 else rng.uniform(0.7, 1.0)  # one foot lands softer
        place(total, side * _step(rng, sr), round(pos * sr))
        pos += period * rng.uniform(0.93, 1.07)
    return finish(total, rng)
