"""Synthetic vocal and household events for labels no source here records enough of.

Sneeze, Screaming and Singing have no real clip in ``../shared/DATA.md``'s sources, and
Cat, Train and Toilet flush have one or two. These generators follow the same contract
as :mod:`training.corpus.synth` (a ``numpy.random.Generator`` and a sample rate in, a
peak-normalised float32 mono waveform out) and are its opt-in ``VOICE_KINDS``
(``sed-corpus build --synthetic-voices``): the model trained with them lost more on real
audio than it gained (the default model card has the figures), so the default corpus
leaves them out.

The voices are additive source-filter synthesis (:func:`voice`): the harmonics of a
time-varying pitch, each weighted by a spectral envelope of time-varying formant
resonances and a glottal tilt, plus breath noise. That gives pitch contours (a meow's
rise and fall, a sung melody with vibrato, a scream's strained hold) and vowel changes
without a phonetic front end. :mod:`training.corpus.synth_check` asks YAMNet whether each
kind sounds like its label; its figures are in ``synth_check.csv``.
"""

from __future__ import annotations

import itertools

import numpy as np

from training.corpus.dsp import band, brown, finish, lowpass, place, seconds_axis

__all__ = ["meow", "scream", "singing", "sneeze", "toilet_flush", "train", "voice"]

#: (F1, F2, F3) in Hz of an adult voice; other speakers scale them.
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
          "o": (570, 840, 2410), "u": (300, 870, 2240), "ae": (660, 1720, 2410)}
_BANDWIDTHS = np.array([0.12, 0.09, 0.08])  # of the formant frequency, at least 80 Hz
_FORMANT_GAIN = np.array([1.0, 0.6, 0.35])


def _smooth(x: np.ndarray, seconds: float, sr: int) -> np.ndarray:
    """Moving average over ``seconds`` (edges held), for gliding contours."""
    n = max(1, round(seconds * sr))
    padded = np.pad(x, (n, n), mode="edge")
    return np.convolve(padded, np.ones(n) / n, mode="same")[n:-n]


def voice(f0: np.ndarray, formants: np.ndarray, sr: int, rng: np.random.Generator,
          tilt_db_per_octave: float = -6.0, breath: float = 0.05,
          jitter: float = 0.0) -> np.ndarray:
    """Voiced sound: ``f0`` (Hz, one per sample) through ``formants`` (Hz, shape (n, 3)).

    Harmonic k has frequency k * f0(t) and amplitude = tilt(k) * sum of the three formant
    resonance curves at that frequency (the tilt is the glottal source's roll-off net of
    lip radiation); harmonics above 0.45 * sr are silent. ``jitter`` is the relative
    size of fast (20-100 Hz) pitch perturbation, which makes a voice rough. The breath is
    band-passed noise (0.5-6 kHz) at ``breath`` times the voice's level.
    """
    if jitter > 0:
        f0 = f0 * (1 + jitter * band(rng.standard_normal(f0.size), 20, 100, sr) * 4)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    widths = np.maximum(80.0, formants * _BANDWIDTHS)
    out = np.zeros(f0.size)
    k_max = int(0.45 * sr / max(float(f0.min()), 40.0))
    for k in range(1, k_max + 1):
        fk = k * f0
        env = np.zeros(f0.size)
        for j in range(3):
            env += _FORMANT_GAIN[j] / (1.0 + ((fk - formants[:, j]) / widths[:, j]) ** 2)
        amp = env * k ** (tilt_db_per_octave / 6.02) * (fk < 0.45 * sr)
        out += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    out /= np.std(out) + 1e-9
    if breath > 0:
        out += breath * band(rng.standard_normal(f0.size), 500, 6000, sr) * 3
    return out


def _contour(points: list[tuple[float, float]], n: int, sr: int) -> np.ndarray:
    """Piecewise-linear curve through (seconds, value) points, one value per sample."""
    t = np.arange(n) / sr
    xs, ys = zip(*points, strict=True)
    return np.interp(t, xs, ys)


def _attack_release(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.clip(np.minimum(t / attack, (n / sr - t) / release), 0.0, 1.0)


def _formant_track(vowels: list[str], n: int, scale: float, glide: float, sr: int) -> np.ndarray:
    """Formants stepping through ``vowels`` evenly over n samples, glided over ``glide`` s."""
    seg = np.minimum(np.arange(n) * len(vowels) // n, len(vowels) - 1)
    table = np.array([VOWELS[v] for v in vowels], dtype=float) * scale
    return np.stack([_smooth(table[seg, j], glide, sr) for j in range(3)], axis=1)


def meow(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Cat meow: one to three calls of 0.4-1.2 s whose pitch (550-950 Hz) rises by a fifth
    to a half and falls, and whose formants open from a closed "u" through "i-a" to "o-u"
    (a small vocal tract: 1.8-2.3 times an adult's formants)."""
    total = np.zeros(round(rng.uniform(2.0, 4.0) * sr))
    pos = rng.uniform(0.05, 0.4)
    for _ in range(int(rng.integers(1, 4))):
        dur = rng.uniform(0.4, 1.2)
        n = round(dur * sr)
        base, peak = rng.uniform(550, 950), rng.uniform(1.2, 1.6)
        f0 = _contour([(0, base), (dur * rng.uniform(0.25, 0.5), base * peak), (dur, base * 0.75)], n, sr)
        f0 *= 1 + 0.01 * _smooth(rng.standard_normal(n), 0.02, sr)
        formants = _formant_track(["u", "i", "a", "a", "o", "u"], n, rng.uniform(1.8, 2.3), 0.08, sr)
        x = voice(f0, formants, sr, rng, tilt_db_per_octave=rng.uniform(-5, -1), breath=0.1,
                  jitter=0.015)
        env = _attack_release(n, sr, 0.06, 0.15) * _contour([(0, 0.3), (0.1, 1.0), (dur, 0.6)], n, sr)
        place(total, x * env * rng.uniform(0.6, 1.0), round(pos * sr))
        pos += dur + rng.uniform(0.3, 0.9)
        if pos > total.size / sr - 0.4:
            break
    return finish(total, rng)


def scream(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Screaming: one or two strained, loud vowels ("a", "ae", "i") of 0.6-2.2 s at a high
    pitch (300-600 Hz for a man, 600-1200 Hz otherwise) that jumps up, wavers (5-9 Hz)
    and falls, roughened by jitter and period doubling, with raised formants, a flat
    spectral tilt and clipping."""
    total = np.zeros(round(rng.uniform(2.0, 3.5) * sr))
    pos = rng.uniform(0.05, 0.3)
    for _ in range(int(rng.integers(1, 3))):
        dur = rng.uniform(0.6, 2.2)
        n = round(dur * sr)
        base = rng.uniform(300, 600) if rng.random() < 0.3 else rng.uniform(600, 1200)
        f0 = _contour([(0, base * 0.7), (0.1, base), (dur * 0.6, base * rng.uniform(1.0, 1.3)),
                       (dur, base * rng.uniform(0.55, 0.8))], n, sr)
        t = np.arange(n) / sr
        f0 *= 1 + rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * rng.uniform(5, 9) * t)
        vowel = str(rng.choice(["a", "ae", "i", "a"]))
        formants = _formant_track([vowel], n, rng.uniform(1.15, 1.4), 0.05, sr)
        formants[:, 0] = np.maximum(formants[:, 0], rng.uniform(850, 1100))
        x = voice(f0, formants, sr, rng, tilt_db_per_octave=rng.uniform(-4, -1), breath=0.05,
                  jitter=rng.uniform(0.008, 0.02))
        # period doubling (subharmonics at f0 / 2): the rough, strained quality of a scream
        x *= 1 + rng.uniform(0.2, 0.6) * np.cos(np.pi * np.cumsum(f0) / sr)
        x = np.tanh(rng.uniform(2.0, 4.0) * x / (np.max(np.abs(x)) + 1e-9))
        place(total, x * _attack_release(n, sr, 0.05, 0.25), round(pos * sr))
        pos += dur + rng.uniform(0.2, 0.6)
        if pos > total.size / sr - 0.6:
            break
    return finish(total, rng)


_MAJOR = (0, 2, 4, 5, 7, 9, 11, 12)


def singing(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A sung phrase: 4-9 notes of a major scale (root 100-330 Hz, the lowest note sung)
    of 0.35-1.2 s, legato with 40 ms glides, vibrato (4.5-6.5 Hz, 2-4.5 %) that sets in
    after each note's onset, a vowel per note, consonant noise at some note changes and
    0.2-0.8 s of silence around the phrase."""
    root = rng.uniform(100, 330)
    lengths = rng.uniform(0.35, 1.2, int(rng.integers(4, 10)))
    n = round(lengths.sum() * sr)
    steps = np.cumsum(rng.integers(-3, 4, lengths.size))
    degrees = np.clip(steps - steps.min(), 0, len(_MAJOR) - 1)
    bounds = np.concatenate([[0], np.round(np.cumsum(lengths) * sr).astype(int)])
    bounds[-1] = n
    f0 = np.zeros(n)
    vib = np.zeros(n)
    vowels = list(VOWELS)
    vowel_per_note = [str(rng.choice(vowels)) for _ in lengths]
    formant_steps = np.zeros((n, 3))
    rate, depth = rng.uniform(4.5, 6.5), rng.uniform(0.02, 0.045)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        f0[a:b] = root * 2 ** (_MAJOR[int(degrees[i])] / 12)
        t = np.arange(b - a) / sr
        vib[a:b] = depth * np.sin(2 * np.pi * rate * t) * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
        formant_steps[a:b] = VOWELS[vowel_per_note[i]]
    f0 = _smooth(f0, 0.04, sr) * (1 + vib)
    scale = 1.0 if root < 180 else rng.uniform(1.1, 1.25)
    formants = np.stack([_smooth(formant_steps[:, j] * scale, 0.06, sr) for j in range(3)], axis=1)
    x = voice(f0, formants, sr, rng, tilt_db_per_octave=rng.uniform(-8, -5), breath=0.03,
              jitter=0.003)
    env = _attack_release(n, sr, 0.08, 0.3)
    for a in bounds[1:-1]:
        if rng.random() < 0.4:  # a consonant: a short dip and a hiss
            width = round(rng.uniform(0.03, 0.07) * sr)
            lo, hi = max(0, a - width // 2), min(n, a + width // 2)
            env[lo:hi] *= 0.2
            hiss = band(rng.standard_normal(hi - lo), 2500, 7500, sr) * 0.8
            x[lo:hi] += hiss * np.hanning(hi - lo)
    total = np.zeros(n + round(rng.uniform(0.2, 0.8) * sr))
    place(total, x * env, round(rng.uniform(0.05, 0.2) * sr))
    return finish(total, rng)


def sneeze(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Sneeze: one or two breathy, rising "ha" gasps (0.15-0.45 s, pitch 150-350 Hz), a
    catch of 50-200 ms, then the "choo": a sharp blast of noise (3-8 ms attack, 0.3-7.5 kHz
    with extra hiss above 2.5 kHz, 60-120 ms decay) over a loud, falling, voiced "oo",
    "e" or "ae" (0.2-0.4 s) with breath through it."""
    total = np.zeros(round(rng.uniform(1.5, 2.5) * sr))
    pos = rng.uniform(0.05, 0.3)
    base = rng.uniform(150, 350)
    for _ in range(int(rng.integers(1, 3))):
        dur = rng.uniform(0.15, 0.45)
        n = round(dur * sr)
        f0 = _contour([(0, base), (dur, base * rng.uniform(1.15, 1.5))], n, sr)
        x = voice(f0, _formant_track(["a"], n, rng.uniform(1.0, 1.3), 0.05, sr), sr, rng,
                  breath=rng.uniform(0.08, 0.2))
        env = _contour([(0, 0.1), (dur * 0.8, 1.0), (dur, 0.3)], n, sr)
        place(total, x / (np.max(np.abs(x)) + 1e-9) * env * rng.uniform(0.3, 0.6), round(pos * sr))
        pos += dur + rng.uniform(0.03, 0.12)
    pos += rng.uniform(0.05, 0.2)
    t = seconds_axis(rng.uniform(0.3, 0.5), sr)
    blast = band(rng.standard_normal(t.size), 300, 7500, sr) + band(rng.standard_normal(t.size), 2500, 7500, sr)
    blast *= np.minimum(1.0, t / rng.uniform(0.003, 0.008)) * np.exp(-t / rng.uniform(0.06, 0.12))
    n = round(rng.uniform(0.2, 0.4) * sr)
    peak = base * rng.uniform(1.5, 2.2)
    f0 = _contour([(0, peak), (n / sr, peak * rng.uniform(0.6, 0.8))], n, sr)
    vowel = str(rng.choice(["u", "e", "ae"]))
    oo = voice(f0, _formant_track([vowel], n, 1.1, 0.05, sr), sr, rng, tilt_db_per_octave=-3,
               breath=rng.uniform(0.1, 0.25), jitter=0.01)
    oo *= np.minimum(1.0, np.arange(n) / sr / 0.01) * np.exp(-np.arange(n) / sr / rng.uniform(0.12, 0.25))
    place(total, blast / (np.max(np.abs(blast)) + 1e-9), round(pos * sr))
    place(total, oo / (np.max(np.abs(oo)) + 1e-9) * rng.uniform(0.5, 0.9), round((pos + 0.01) * sr))
    return finish(total, rng)


def toilet_flush(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Toilet flush: a lever clunk, then a swirling roar of water rising in 0.2-0.5 s and
    draining over 1.5-3 s (noise under 1-2.5 kHz, churning at 3-10 Hz, and thousands of
    bubbles at 200-1500 Hz whose pitch falls as the bowl empties), a gurgling tail of
    bursts, and the cistern refilling with a thin hiss to the end."""
    seconds = rng.uniform(5.0, 9.0)
    total = np.zeros(round(seconds * sr))
    t = np.arange(total.size) / sr
    ct = seconds_axis(0.06, sr)
    place(total, band(rng.standard_normal(ct.size), 150, 2000, sr) * np.exp(-ct / 0.01) * 2, 0)
    start, rush, gurgle = rng.uniform(0.1, 0.3), rng.uniform(1.5, 3.0), rng.uniform(0.8, 2.0)
    end = start + rush + gurgle
    noise = rng.standard_normal(total.size)
    water = lowpass(noise, rng.uniform(1000, 2500), sr, order=2) + 0.3 * band(noise, 2000, 6000, sr)
    churn = np.clip(1 + 6 * _smooth(rng.standard_normal(total.size), 1 / rng.uniform(3, 10), sr),
                    0.2, 2.0)
    env = np.clip((t - start) / rng.uniform(0.2, 0.5), 0.0, 1.0) * np.clip(
        1 - (t - start - rush) / gurgle, 0.0, 1.0)
    tail = (t > start + rush) & (t < end)
    bursts = (_smooth(rng.standard_normal(total.size), 0.05, sr) > 0.02) * tail
    water = water / (np.std(water) + 1e-9) * (env * churn + 0.7 * bursts) * 0.5
    for _ in range(int(rng.integers(800, 2000))):  # bubbles, densest in the rush
        at = start + rush * rng.beta(1.5, 2.5) * (rush + gurgle) / rush
        pitch = rng.uniform(200, 1500) * (1.3 - 0.6 * min(1.0, (at - start) / (rush + gurgle)))
        bt = seconds_axis(rng.uniform(0.01, 0.05), sr)
        f = pitch * (1 + rng.uniform(0.1, 0.5) * bt / bt[-1])
        pop = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-bt / rng.uniform(0.005, 0.02))
        place(water, pop * rng.uniform(0.2, 1.0), round(at * sr))
    refill = band(noise[::-1], 2500, 7000, sr) * np.clip((t - start - rush) / 1.0, 0.0, 1.0)
    return finish(total + water + refill / (np.std(refill) + 1e-9) * rng.uniform(0.03, 0.1), rng)


def _clack(sr: int, rng: np.random.Generator, modes: np.ndarray) -> np.ndarray:
    t = seconds_axis(0.12, sr)
    ring = sum(np.sin(2 * np.pi * m * t) * np.exp(-t * rng.uniform(40, 90)) for m in modes)
    thud = lowpass(rng.standard_normal(t.size), 400, sr) * np.exp(-t * 50) * 3
    return np.asarray(ring) * 0.3 + thud + rng.standard_normal(t.size) * np.exp(-t * 400)


def train(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Passing train: a low rolling rumble (brown noise under 150-400 Hz and a mid band)
    with the clickety-clack of wheels over rail joints (pairs of metallic clacks, 0.5-1.5 s
    apart, the pair 0.1-0.25 s), swelling and fading as it passes; most sound a
    two- or three-tone horn (seven in ten), some squeal (a wavering 2-6 kHz tone)."""
    seconds = rng.uniform(5.0, 9.0)
    t = seconds_axis(seconds, sr)
    rumble = lowpass(brown(rng, t.size), rng.uniform(150, 400), sr)
    roll = band(rng.standard_normal(t.size), 300, 2000, sr)
    bed = rumble / (np.std(rumble) + 1e-9) + rng.uniform(0.3, 0.8) * roll / (np.std(roll) + 1e-9)
    clacks = np.zeros(t.size)
    modes = rng.uniform(800, 4000, 3)
    period, pair = rng.uniform(0.5, 1.5), rng.uniform(0.1, 0.25)
    pos = rng.uniform(0.0, period)
    while pos < seconds:
        for offset in (0.0, pair):
            place(clacks, _clack(sr, rng, modes) * rng.uniform(0.6, 1.0), round((pos + offset) * sr))
        pos += period * rng.uniform(0.95, 1.05)
    bed *= 1 + 0.3 * np.sin(2 * np.pi * t / period)  # the bogies rolling past
    x = 0.5 * bed + clacks * rng.uniform(1.0, 2.5)
    centre = rng.uniform(0.3, 0.7) * seconds
    x *= 0.25 + 0.75 * np.exp(-0.5 * ((t - centre) / rng.uniform(1.5, 4.0)) ** 2)
    if rng.random() < 0.7:
        f1 = rng.uniform(250, 400)
        ratios = (1.0, 1.19, 1.5)[: int(rng.integers(2, 4))]
        hn = round(rng.uniform(0.8, 2.5) * sr)
        ht = np.arange(hn) / sr
        saw = sum(((f1 * r * ht + rng.uniform()) % 1.0 - 0.5) for r in ratios)
        horn = band(np.tanh(3 * np.asarray(saw)), 200, 4000, sr) * _attack_release(hn, sr, 0.05, 0.15)
        place(x, 1.5 * horn / (np.max(np.abs(horn)) + 1e-9) * np.max(np.abs(x)),
              round(rng.uniform(0.0, max(0.1, seconds - hn / sr)) * sr))
    if rng.random() < 0.3:
        f = rng.uniform(2000, 6000) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(2, 7) * t))
        x += 0.3 * np.max(np.abs(x)) * np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(
            -0.5 * ((t - centre) / 1.0) ** 2)
    return finish(x, rng)
