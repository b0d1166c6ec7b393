"""Clean synthetic events for thin labels, deterministic from a seed.

Every generator takes a ``numpy.random.Generator`` and the sample rate and returns a
mono float32 waveform in [-1, 1] (peak-normalised to a random level) of a few seconds.
:data:`KINDS` maps a kind name to (generator, AudioSet labels); :data:`VOICE_KINDS` are
opt-in kinds from :mod:`training.corpus.synth_voice`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.corpus import synth_body, synth_voice
from training.corpus.dsp import band, brown, finish, lowpass, partials, place, seconds_axis

__all__ = ["ALL_KINDS", "KINDS", "VOICE_KINDS", "generate", "kinds"]

Generator = Callable[[np.random.Generator, int], np.ndarray]


def chime(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Doorbell ding-dong: two (sometimes three) bell tones a major third/fifth apart."""
    f1 = rng.uniform(500, 1000)
    interval = rng.choice([5 / 4, 4 / 3, 3 / 2])
    tones = [f1 * interval, f1] if rng.random() < 0.8 else [f1 * 3 / 2, f1 * 5 / 4, f1]
    gap = rng.uniform(0.35, 0.7)
    total = np.zeros(round((gap * len(tones) + 1.8) * sr))
    ratios = [1.0, 2.0, 2.76, 3.0, 5.4]
    for i, f in enumerate(tones):
        tone_t = seconds_axis(rng.uniform(1.2, 1.8), sr)
        place(total, partials(f, tone_t, ratios, rng.uniform(2.0, 4.0), rng), round(i * gap * sr))
    return finish(total, rng)


def siren_two_tone(rng: np.random.Generator, sr: int) -> np.ndarray:
    """European hi-lo siren: alternating tones with odd harmonics (square-ish)."""
    lo = rng.uniform(400, 600)
    hi = lo * rng.uniform(1.25, 1.4)
    half = rng.uniform(0.4, 0.7)
    t = seconds_axis(rng.uniform(3.0, 6.0), sr)
    f = np.where((t // half) % 2 == 0, hi, lo)
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in (1, 3, 5, 7))
    return finish(np.asarray(x), rng)


def siren_wail(rng: np.random.Generator, sr: int) -> np.ndarray:
    """US wail/yelp: a tone swept up and down between ~600 and ~1500 Hz."""
    period = rng.uniform(0.25, 0.4) if rng.random() < 0.4 else rng.uniform(2.0, 4.0)
    t = seconds_axis(rng.uniform(3.0, 6.0), sr)
    lo, hi = rng.uniform(500, 750), rng.uniform(1300, 1700)
    f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    return finish(x, rng)


def alarm_beeps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Alarm clock / smoke alarm: square-ish beeps in repeating patterns."""
    f = rng.uniform(2000, 4000) if rng.random() < 0.5 else rng.uniform(800, 2000)
    beep, gap = rng.uniform(0.06, 0.3), rng.uniform(0.05, 0.3)
    per_burst = int(rng.integers(1, 5))
    pause = rng.uniform(0.3, 1.0)
    total = np.zeros(round(rng.uniform(3.0, 5.0) * sr))
    tb = seconds_axis(beep, sr)
    tone = np.sign(np.sin(2 * np.pi * f * tb)) * 0.6 + 0.4 * np.sin(2 * np.pi * f * tb)
    pos = 0.0
    while pos * sr < total.size:
        for _ in range(per_burst):
            place(total, tone, round(pos * sr))
            pos += beep + gap
        pos += pause
    return finish(total, rng)


def shatter(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Glass breaking: a noise burst plus many short high resonances (shards) that decay."""
    total = np.zeros(round(rng.uniform(1.2, 2.0) * sr))
    impact_t = seconds_axis(0.08, sr)
    place(total, rng.standard_normal(impact_t.size) * np.exp(-impact_t * 60), 0)
    for _ in range(int(rng.integers(20, 60))):
        t = seconds_axis(rng.uniform(0.05, 0.4), sr)
        f = rng.uniform(2500, 7000)
        ring = np.sin(2 * np.pi * f * t) * np.exp(-t * rng.uniform(15, 60)) * rng.uniform(0.1, 0.6)
        place(total, ring, round(abs(rng.exponential(0.15)) * sr))
    tail_t = seconds_axis(total.size / sr, sr)
    hiss = rng.standard_normal(total.size) * np.exp(-tail_t * 6) * 0.2
    return finish(total + np.diff(hiss, prepend=0.0), rng)


def knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Knocking on a door: 2-6 knuckle hits at a steady-ish pace, each a band-limited thud
    (80 Hz-2.5 kHz noise, ~15 ms decay), a click and damped panel modes (100-700 Hz)."""
    total = np.zeros(round(rng.uniform(1.5, 3.0) * sr))
    modes = rng.uniform(100, 700, size=4)
    click = rng.uniform(0.3, 1.0)
    pos, pace = rng.uniform(0.05, 0.3), rng.uniform(0.12, 0.3)
    for _ in range(int(rng.integers(2, 7))):
        t = seconds_axis(0.2, sr)
        ring = sum(np.sin(2 * np.pi * m * t) * np.exp(-t * rng.uniform(30, 100)) for m in modes)
        n = rng.standard_normal(t.size)
        thud = band(n, 80, rng.uniform(800, 2500), sr) * np.exp(-t * rng.uniform(40, 90))
        hit = np.asarray(ring) / 2 + 3 * thud + click * n * np.exp(-t * 600)
        place(total, hit * rng.uniform(0.6, 1.0), round(pos * sr))
        pos += pace * rng.uniform(0.8, 1.25)
    return finish(total, rng)


def phone_ring(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Telephone ring: dual-tone bursts (e.g. 440+480 Hz) with bell-like amplitude trill."""
    f1 = rng.uniform(400, 1000)
    f2 = f1 * rng.uniform(1.05, 1.3)
    on, off = rng.uniform(0.8, 2.0), rng.uniform(0.5, 2.0)
    trill = rng.uniform(15, 25)
    t = seconds_axis(on, sr)
    burst = (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) * (
        0.6 + 0.4 * np.sign(np.sin(2 * np.pi * trill * t)))
    total = np.zeros(round(rng.uniform(3.0, 6.0) * sr))
    pos = 0.0
    while pos * sr < total.size:
        place(total, burst, round(pos * sr))
        pos += on + off
    return finish(total, rng)


def car_horn(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Car horn: one to three honks of a pair of sawtooth tones about a third apart
    (330-620 Hz), overdriven (tanh) and band-limited to 200 Hz-5 kHz, fast attack/release."""
    f1 = rng.uniform(330, 480)
    f2 = f1 * rng.uniform(1.18, 1.3)
    total = np.zeros(round(rng.uniform(2.0, 4.0) * sr))
    pos = rng.uniform(0.05, 0.4)
    for _ in range(int(rng.integers(1, 4))):
        length = rng.uniform(0.3, 1.6)
        t = seconds_axis(length, sr)
        saw = sum((f * t + rng.uniform()) % 1.0 - 0.5 for f in (f1, f2))
        env = np.minimum(1.0, np.minimum(t / 0.01, (length - t) / 0.02).clip(0.0))
        place(total, band(np.tanh(4 * np.asarray(saw)) * env, 200, 5000, sr), round(pos * sr))
        pos += length + rng.uniform(0.08, 0.4)
    return finish(total, rng)


def thunder(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Rolling thunder: brown noise low-passed at 300-1200 Hz, shaped by 10-40 short
    swells (20-150 ms) whose times spread out and fade from the first one, over a 2-5 s
    decaying bed; 4-9 s in all."""
    seconds = rng.uniform(4.0, 9.0)
    t = seconds_axis(seconds, sr)
    rumble = lowpass(brown(rng, t.size), rng.uniform(300, 1200), sr)
    onset = rng.uniform(0.0, 1.0)
    env = np.zeros_like(t)
    for _ in range(int(rng.integers(10, 40))):
        c, w = onset + rng.exponential(1.5), rng.uniform(0.02, 0.15)
        env += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((t - c) / w) ** 2) * np.exp(-(c - onset) / 3)
    env += 0.3 * np.exp(-np.maximum(t - onset, 0.0) / rng.uniform(2.0, 5.0)) * (t > onset)
    return finish(rumble / (np.std(rumble) + 1e-9) * env, rng)


def fireworks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Fireworks: bangs every 0.15-1.5 s (a 2 ms attack, a short blast and a 0.3-0.8 s
    tail, low-passed at 1.5-5 kHz), most followed by a crackle of tiny clicks."""
    total = np.zeros(round(rng.uniform(4.0, 8.0) * sr))
    pos = rng.uniform(0.0, 0.5)
    while pos < total.size / sr - 0.5:
        bt = seconds_axis(rng.uniform(1.0, 2.0), sr)
        env = 0.8 * np.exp(-bt / rng.uniform(0.02, 0.06)) + 0.2 * np.exp(-bt / rng.uniform(0.3, 0.8))
        bang = lowpass(rng.standard_normal(bt.size) * np.minimum(1.0, bt / 0.002) * env,
                        rng.uniform(1500, 5000), sr, order=2)
        place(total, bang / (np.max(np.abs(bang)) + 1e-9) * rng.uniform(0.4, 1.0), round(pos * sr))
        if rng.random() < 0.6:
            ct = seconds_axis(0.01, sr)
            for _ in range(int(rng.integers(30, 200))):
                click = rng.standard_normal(ct.size) * np.exp(-ct * 800) * rng.uniform(0.05, 0.4)
                place(total, click, round((pos + 0.1 + rng.exponential(0.5)) * sr))
        pos += rng.uniform(0.15, 1.5)
    return finish(total, rng)


def firecrackers(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A string of firecrackers: sharp pops (5-20 ms decay) about every 80 ms, 3-6 s."""
    total = np.zeros(round(rng.uniform(3.0, 6.0) * sr))
    pos = 0.1
    bt = seconds_axis(0.15, sr)
    while pos < total.size / sr - 0.2:
        pop = rng.standard_normal(bt.size) * np.exp(-bt / rng.uniform(0.005, 0.02))
        place(total, pop * rng.uniform(0.3, 1.0), round(pos * sr))
        pos += rng.exponential(0.08)
    return finish(lowpass(total, 6000, sr), rng)


def engine(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Combustion engine: 40 harmonics of a 25-90 Hz firing rate (idling, steady or
    revving, with slow speed wander) low-passed at 0.8-4 kHz, plus combustion noise
    gated by the firing cycle and, sometimes, valve ticks."""
    seconds = rng.uniform(3.0, 6.0)
    t = seconds_axis(seconds, sr)
    base = rng.uniform(25, 90)
    mode = rng.integers(0, 3)  # 0 idle, 1 steady higher, 2 rev up and down
    if mode == 0:
        f = base * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    elif mode == 1:
        f = np.full_like(t, base * rng.uniform(1.3, 2.0))
    else:
        c, w = rng.uniform(0.3, 0.7) * seconds, rng.uniform(0.5, 1.5)
        f = base * (1 + rng.uniform(0.8, 2.0) * np.exp(-0.5 * ((t - c) / w) ** 2))
    f = f * (1 + 0.3 * lowpass(rng.standard_normal(t.size), 20, sr))
    phase = 2 * np.pi * np.cumsum(f) / sr
    amps = rng.uniform(0.2, 1.0, 40) / np.arange(1, 41) ** rng.uniform(0.3, 0.8)
    tone = lowpass(np.asarray(sum(a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
                                   for k, a in enumerate(amps, 1))), rng.uniform(800, 4000), sr)
    gate = np.maximum(0.0, np.cos(phase)) ** 6
    x = tone / (np.std(tone) + 1e-9) + rng.uniform(1.0, 3.0) * band(
        rng.standard_normal(t.size), 100, 3000, sr) * gate
    if rng.random() < 0.5:
        ticks = np.maximum(0.0, np.cos(2 * phase)) ** 40
        x += 1.5 * band(rng.standard_normal(t.size), 2000, 6000, sr) * ticks
    return finish(x, rng)


def vacuum_cleaner(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Vacuum cleaner: airflow noise strongest at 2-7.5 kHz, the motor's whine (11
    harmonics of 300-450 Hz, slight wobble), sometimes spinning up or down."""
    seconds = rng.uniform(3.0, 6.0)
    t = seconds_axis(seconds, sr)
    noise = rng.standard_normal(t.size)
    air = (band(noise, 2000, 7500, sr) * rng.uniform(0.6, 1.0)
           + band(noise, 500, 2000, sr) * rng.uniform(0.3, 0.6))
    ramp = np.ones_like(t)
    r = rng.random()
    if r < 0.3:
        ramp = 1 - np.exp(-t / rng.uniform(0.2, 0.6))
    elif r < 0.5:
        ramp = np.clip((seconds - t) / rng.uniform(0.5, 1.5), 0.0, 1.0)
    f = rng.uniform(300, 450) * (0.6 + 0.4 * ramp) * (
        1 + 0.005 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    whine = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.3, 1.0) / k**0.5
                for k in range(1, 12))
    x = (air / (np.std(air) + 1e-9) + rng.uniform(0.5, 1.5) * np.asarray(whine) / 3) * (
        0.1 + 0.9 * ramp)
    return finish(x, rng)


KINDS: dict[str, tuple[Generator, tuple[str, ...]]] = {
    "chime": (chime, ("Doorbell", "Ding-dong")),
    "siren_two_tone": (siren_two_tone, ("Siren", "Emergency vehicle")),
    "siren_wail": (siren_wail, ("Siren", "Emergency vehicle")),
    "alarm_beeps": (alarm_beeps, ("Alarm", "Beep, bleep")),
    "shatter": (shatter, ("Shatter", "Glass")),
    "knock": (knock, ("Knock",)),
    "phone_ring": (phone_ring, ("Telephone bell ringing", "Telephone")),
    "car_horn": (car_horn, ("Vehicle horn, car horn, honking", "Vehicle")),
    "thunder": (thunder, ("Thunder",)),
    "fireworks": (fireworks, ("Fireworks", "Explosion")),
    "firecrackers": (firecrackers, ("Fireworks", "Explosion")),
    "engine": (engine, ("Engine",)),
    "vacuum_cleaner": (vacuum_cleaner, ("Vacuum cleaner",)),
    "applause": (synth_body.applause, ("Applause", "Clapping", "Crowd", "Hands")),
    "footsteps": (synth_body.footsteps, ("Walk, footsteps",)),
}

#: Opt-in kinds (``sed-corpus build --synthetic-voices``) for labels no source here has
#: enough recordings of. Off by default: a model trained with them (runs/v2 in the model
#: card's history) gained these labels but lost real-world quality (see MODEL_CARD.md).
VOICE_KINDS: dict[str, tuple[Generator, tuple[str, ...]]] = {
    "meow": (synth_voice.meow, ("Cat",)),
    "scream": (synth_voice.scream, ("Screaming",)),
    "singing": (synth_voice.singing, ("Singing",)),
    "sneeze": (synth_voice.sneeze, ("Sneeze",)),
    "toilet_flush": (synth_voice.toilet_flush, ("Toilet flush",)),
    "train": (synth_voice.train, ("Train",)),
}
ALL_KINDS = {**KINDS, **VOICE_KINDS}


def kinds(voices: bool = False) -> dict[str, tuple[Generator, tuple[str, ...]]]:
    """The kinds a corpus build makes: :data:`KINDS`, plus :data:`VOICE_KINDS` if ``voices``."""
    return ALL_KINDS if voices else KINDS


def generate(kind: str, seed: int, sample_rate: int) -> np.ndarray:
    """One event of ``kind`` (a key of :data:`ALL_KINDS`), identical for identical arguments."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; known: {sorted(ALL_KINDS)}")
    return ALL_KINDS[kind][0](np.random.default_rng(seed), sample_rate)
