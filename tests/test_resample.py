"""StreamResampler: chunk-size invariance, alignment, length, passband and stopband."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detector.sources.resample import PASSBAND_EDGE, StreamResampler

OUT = 16000
IN_RATES = [8000, 22050, 44100, 48000]


def tone(freq: float, rate: int, seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * np.pi * freq * t + phase).astype(np.float32)


def one_shot(r: StreamResampler, x: np.ndarray) -> np.ndarray:
    return np.concatenate([r.process(x), r.flush()])


def chunked(r: StreamResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    parts, i, j = [], 0, 0
    while i < x.shape[0]:
        n = sizes[j % len(sizes)]
        parts.append(r.process(x[i : i + n]))
        i += n
        j += 1
    parts.append(r.flush())
    return np.concatenate(parts)


def fit_tone(y: np.ndarray, freq: float, rate: int) -> tuple[float, float]:
    """Amplitude and phase (rad) of ``freq`` in ``y`` by least squares, edges trimmed."""
    t = np.arange(y.shape[0]) / rate
    trim = y.shape[0] // 8
    sl = slice(trim, y.shape[0] - trim)
    basis = np.stack([np.sin(2 * np.pi * freq * t[sl]), np.cos(2 * np.pi * freq * t[sl])], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, y[sl].astype(np.float64), rcond=None)
    return float(np.hypot(a, b)), float(np.arctan2(b, a))


@pytest.mark.parametrize("in_rate", [*IN_RATES, OUT])
def test_length_and_tone_fidelity(in_rate: int) -> None:
    for n in (0, 1, 7, 1001, in_rate):
        r = StreamResampler(in_rate, OUT)
        y = one_shot(r, np.ones(n, dtype=np.float32))
        assert y.shape[0] == round(n * OUT / in_rate)
        assert y.dtype == np.float32
    x = tone(1000.0, in_rate, 1.0, phase=0.3)
    y = one_shot(StreamResampler(in_rate, OUT), x)
    ref = tone(1000.0, OUT, 1.0, phase=0.3)
    trim = 200  # edges see the zero padding before/after the stream
    err = np.abs(y[trim:-trim] - ref[trim:-trim]).max()
    assert err < 1e-4, f"{in_rate} Hz: max error {err:.2e} against the ideal 1 kHz tone"


@pytest.mark.parametrize("in_rate", IN_RATES)
def test_chunk_size_invariance(in_rate: int) -> None:
    rng = np.random.default_rng(in_rate)
    x = rng.standard_normal(in_rate // 4).astype(np.float32)  # 0.25 s
    ref = one_shot(StreamResampler(in_rate, OUT), x)
    r = StreamResampler(in_rate, OUT)
    for sizes in ([1], [3, 1, 2], [160, 441, 4000], rng.integers(1, 5000, 50).tolist()):
        got = chunked(r, x, sizes)  # flush resets, so r is reused
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # 10 s chunks of a 25 s signal against one shot
    long = rng.standard_normal(in_rate * 25).astype(np.float32)
    np.testing.assert_allclose(
        chunked(r, long, [in_rate * 10]), one_shot(r, long), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("in_rate", [*IN_RATES, 96000])
def test_click_alignment(in_rate: int) -> None:
    """A click at t seconds comes out at sample t * OUT (within one output sample)."""
    for t_click in (0.25, 0.3217, 0.5):
        x = np.zeros(in_rate, dtype=np.float32)
        x[round(t_click * in_rate)] = 1.0
        y = one_shot(StreamResampler(in_rate, OUT), x)
        peak = int(np.argmax(np.abs(y)))
        assert abs(peak - t_click * OUT) <= 1.0, (in_rate, t_click, peak)


@pytest.mark.parametrize("in_rate", IN_RATES)
def test_tone_phase_alignment(in_rate: int) -> None:
    """Output sample k is the input at k / OUT: a tone keeps its phase (< 1 output sample)."""
    freq = 440.0
    _, ph_out = fit_tone(
        one_shot(StreamResampler(in_rate, OUT), tone(freq, in_rate, 1.0)), freq, OUT
    )
    delay_samples = abs(ph_out) / (2 * np.pi * freq) * OUT
    assert delay_samples < 0.05, delay_samples


@pytest.mark.parametrize("in_rate", IN_RATES)
def test_passband_and_stopband(in_rate: int) -> None:
    nyq = min(in_rate, OUT) / 2
    r = StreamResampler(in_rate, OUT)
    gains = []
    for frac in (0.05, 0.25, 0.5, 0.75, PASSBAND_EDGE):
        f = frac * nyq
        amp, _ = fit_tone(one_shot(r, tone(f, in_rate, 0.5)), f, OUT)
        gains.append((f, 20 * np.log10(amp)))
    print(
        f"\n{in_rate}->{OUT} passband gain dB:", [(round(f), round(float(g), 4)) for f, g in gains]
    )
    assert all(abs(g) < 0.05 for _, g in gains), gains
    worst = -np.inf
    if in_rate > OUT:
        # Tones above the output Nyquist must not alias into the output.
        for f in np.linspace(OUT / 2, in_rate / 2 * 0.98, 12):
            y = one_shot(r, tone(f, in_rate, 0.5))
            rms = np.sqrt(np.mean(y[200:-200].astype(np.float64) ** 2)) * np.sqrt(2)
            worst = max(worst, 20 * np.log10(max(rms, 1e-12)))
    else:
        # Upsampling: the images above the input Nyquist must be suppressed.
        for f in np.linspace(0.05 * nyq, PASSBAND_EDGE * nyq, 8):
            y = one_shot(r, tone(f, in_rate, 0.5)).astype(np.float64)
            spec = np.abs(np.fft.rfft(y * np.hanning(y.shape[0])))
            freqs = np.fft.rfftfreq(y.shape[0], 1 / OUT)
            image = spec[freqs > nyq].max() / spec.max()
            worst = max(worst, 20 * np.log10(max(image, 1e-12)))
    print(f"{in_rate}->{OUT} worst stopband level: {worst:.1f} dB")
    assert worst <= -60.0


def test_passthrough_and_errors() -> None:
    r = StreamResampler(OUT, OUT)
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(r.process(x), x)
    assert r.flush().shape == (0,)
    with pytest.raises(ValueError, match="positive integers"):
        StreamResampler(0, OUT)
    with pytest.raises(ValueError, match="positive integers"):
        StreamResampler(44100.5, OUT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mono 1-D"):
        StreamResampler(44100, OUT).process(np.zeros((10, 2), dtype=np.float32))


def test_odd_rate_uses_block_weights() -> None:
    """A rate pair with thousands of phases (no table) still streams exactly."""
    in_rate = 44101  # gcd with 16000 is 1: 16000 phases
    r = StreamResampler(in_rate, OUT)
    assert r._table is None
    x = tone(1000.0, in_rate, 0.3)
    y = one_shot(r, x)
    assert y.shape[0] == round(x.shape[0] * OUT / in_rate)
    np.testing.assert_allclose(chunked(r, x, [1234, 77]), y, atol=1e-6, rtol=0)
    amp, _ = fit_tone(y, 1000.0, OUT)
    assert abs(amp - 1) < 1e-3


@pytest.mark.parametrize("in_rate", [44100, 48000])
def test_speed(in_rate: int) -> None:
    """Throughput in input MSamples/s with 100 ms chunks (printed; lower bound is generous)."""
    x = np.random.default_rng(0).standard_normal(in_rate * 10).astype(np.float32)
    r = StreamResampler(in_rate, OUT)
    step = in_rate // 10
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], step):
        r.process(x[i : i + step])
    r.flush()
    rate = x.shape[0] / (time.perf_counter() - t0) / 1e6
    print(f"\n{in_rate}->{OUT}: {rate:.2f} MSamples/s in ({rate * 1e6 / in_rate:.0f}x real time)")
    assert rate > 0.2
