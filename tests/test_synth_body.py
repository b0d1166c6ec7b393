"""training.corpus.synth_body: the clap, applause and footsteps generators."""

from __future__ import annotations

import numpy as np
import pytest

from training.corpus import synth, synth_body

SR = 16_000


def _envelope(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    """RMS per ``ms`` frame."""
    n = round(ms / 1000 * SR)
    frames = x[: x.size // n * n].astype(np.float64).reshape(-1, n)
    return np.sqrt((frames**2).mean(axis=1))


@pytest.mark.parametrize("freq", [900.0, 1500.0, 2300.0])
def test_clap_hit_rings_at_the_palm_cavity_resonance(freq: float) -> None:
    mags = []
    for seed in range(8):
        x = synth_body.clap_hit(np.random.default_rng(seed), SR, freq, q=4.0, decay_s=0.005, thump=0.0)
        mags.append(np.abs(np.fft.rfft(x)) ** 2)
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    power = np.convolve(np.mean(mags, axis=0), np.ones(9) / 9, mode="same")
    lo = freqs > 500  # above the burst's own low end
    assert abs(freqs[lo][np.argmax(power[lo])] - freq) < 0.15 * freq
    env = _envelope(x, 2.0)
    assert env[25:].max() < 0.05 * env.max()  # gone after 50 ms: a clap, not a tone


def test_applause_is_dense_and_swells() -> None:
    for seed in range(4):
        x = synth.generate("applause", seed, SR).astype(np.float64)
        assert 2.0 <= x.size / SR <= 5.0
        env = _envelope(x, 50.0)
        middle = env[env.size // 3 : 2 * env.size // 3]
        assert middle.min() > 0.1 * middle.max()  # no 50 ms gap: many clappers overlap
        assert env[:3].mean() < middle.mean() and env[-3:].mean() < middle.mean()


def test_footsteps_come_at_a_walking_pace() -> None:
    for seed in range(6):
        x = synth.generate("footsteps", seed, SR).astype(np.float64)
        env = _envelope(x)
        env = env - env.mean()
        ac = np.correlate(env, env, mode="full")[env.size - 1 :]
        lags = np.arange(ac.size) * 0.01
        window = (lags > 0.3) & (lags < 1.0)
        period = lags[window][np.argmax(ac[window])]
        assert 1 / 2.3 - 0.05 <= period <= 1 / 1.5 + 0.05, (seed, period)


def test_body_kinds_are_in_the_default_build_with_their_labels() -> None:
    assert synth.KINDS["applause"][1] == ("Applause", "Clapping", "Crowd", "Hands")
    assert synth.KINDS["footsteps"][1] == ("Walk, footsteps",)
