"""training.corpus.synth_voice: the source-filter voice and the events made with it."""

from __future__ import annotations

import numpy as np
import pytest

from training.corpus import synth, synth_voice

SR = 16_000


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / SR), mag


def test_voice_puts_harmonics_of_f0_under_the_formants() -> None:
    n = SR  # one second of a steady 200 Hz "a"
    formants = np.tile(np.array(synth_voice.VOWELS["a"], dtype=float), (n, 1))
    x = synth_voice.voice(np.full(n, 200.0), formants, SR, np.random.default_rng(0), breath=0.0)
    freqs, mag = _spectrum(x)
    peaks = [freqs[np.argmax(np.where(np.abs(freqs - k * 200) < 20, mag, 0))] for k in range(1, 8)]
    assert np.allclose(peaks, 200 * np.arange(1, 8), atol=2)
    level = {k: mag[np.argmin(np.abs(freqs - k * 200))] for k in range(1, 20)}
    assert max(level, key=level.__getitem__) in (3, 4)  # F1 of "a" is 730 Hz
    between = mag[(freqs > 290) & (freqs < 310)].max()  # no energy between harmonics
    assert between < 0.01 * max(level.values())


def test_voice_is_silent_above_its_nyquist_guard() -> None:
    n = SR // 2
    formants = np.tile(np.array([3000.0, 5000.0, 7000.0]), (n, 1))
    x = synth_voice.voice(np.full(n, 1000.0), formants, SR, np.random.default_rng(1), breath=0.0)
    freqs, mag = _spectrum(x)
    assert mag[freqs > 0.46 * SR].max() < 1e-3 * mag.max()


@pytest.mark.parametrize(("kind", "seconds"), [
    ("meow", (2.0, 4.0)), ("scream", (2.0, 3.5)), ("sneeze", (1.5, 2.5)),
    ("toilet_flush", (5.0, 9.0)), ("train", (5.0, 9.0))])
def test_event_lengths_follow_their_docstrings(kind: str, seconds: tuple[float, float]) -> None:
    for seed in range(5):
        x = synth.generate(kind, seed, SR)
        assert seconds[0] * SR <= x.size <= seconds[1] * SR + 1, (kind, seed, x.size / SR)


def _pitch(seg: np.ndarray, lo: float, hi: float) -> float:
    """f0 of a voiced frame by autocorrelation, searched in [lo, hi] Hz."""
    seg = seg - seg.mean()
    ac = np.correlate(seg, seg, mode="full")[seg.size - 1 :]
    lags = np.arange(int(SR / hi), int(SR / lo) + 1)
    return SR / lags[np.argmax(ac[lags])]


def _voiced_pitches(x: np.ndarray, lo: float, hi: float, frame: int = SR // 20) -> np.ndarray:
    loud = 0.3 * np.sqrt(np.mean(x**2))
    return np.array([_pitch(x[i : i + frame], lo, hi) for i in range(0, x.size - frame, frame)
                     if np.sqrt(np.mean(x[i : i + frame] ** 2)) > loud])


def test_singing_stays_on_the_notes_of_a_major_scale() -> None:
    # the lowest sung note is the scale's root; every voiced 50 ms frame lies on a note
    # of its major scale, give or take the vibrato (at most 4.5 %, 0.8 semitone)
    for seed in range(3):
        pitches = _voiced_pitches(synth.generate("singing", seed, SR).astype(np.float64), 90, 800)
        assert pitches.size >= 10
        semis = 12 * np.log2(pitches / np.median(pitches[pitches <= np.percentile(pitches, 5)]))
        off = np.min(np.abs(semis[:, None] - np.array([0, 2, 4, 5, 7, 9, 11, 12])), axis=1)
        assert np.mean(off < 0.8) > 0.9, (seed, np.round(semis, 1))
        assert len(np.unique(np.round(semis))) >= 2  # a melody, not one held note


def test_meow_pitch_rises_then_falls() -> None:
    for seed in range(3):
        x = synth.generate("meow", seed, SR).astype(np.float64)
        frame = SR // 25
        env = np.array([np.sqrt(np.mean(x[i : i + frame] ** 2)) for i in range(0, x.size - frame, frame)])
        voiced = np.flatnonzero(env > 0.25 * env.max())
        first_call = voiced[: np.argmax(np.diff(voiced) > 1) + 1] if np.any(np.diff(voiced) > 1) else voiced
        pitches = np.array([_pitch(x[i * frame : (i + 1) * frame], 400, 1700) for i in first_call])
        top = int(np.argmax(pitches))
        assert 0 < top < pitches.size - 1, (seed, np.round(pitches))
        assert pitches[top] > 1.1 * pitches[0] and pitches[top] > 1.1 * pitches[-1], (seed, pitches)
