"""Steady noise beds (issue 20): white, pink, brown, mains hum, fan, HVAC, room tone, mic self-noise.

Every generator has the signature ``gen(n, level_dbfs, rng, sample_rate=16000)`` and
returns ``(n,)`` float32 at exactly ``level_dbfs``. **dBFS here is the RMS of the samples
(DC included) relative to 1.0**: ``20 * log10(sqrt(mean(x**2)))``, the scale of the
detector's own ``level_dbfs`` status field; on it a full-scale sine reads -3.01 dBFS.

Broadband parts are shaped in the frequency domain: complex Gaussian bins times an
amplitude response, one inverse FFT for the whole bed (O(n log n); an hour at 16 kHz
takes a few seconds), so slopes are exact and there are no block seams. Slow wander
(level, mains frequency, fan speed) is Gaussian noise at a low control rate,
interpolated to the sample rate. No per-sample Python loops.

Kinds (:data:`KINDS`):

* ``white``: flat; ``pink``: -3 dB/octave; ``brown``: -6 dB/octave (both rolled off
  below :data:`LOW_CUT_HZ` so that sub-audio drift does not carry the level);
* ``hum50`` / ``hum60``: mains fundamental plus up to :data:`HUM_HARMONICS` harmonics
  falling about 1/k (random per harmonic, odd ones a little stronger), with a slow
  +-0.1 % frequency and +-5 % amplitude wander, over a pink floor 35-50 dB down;
* ``fan``: pink-ish noise with a broad 150-700 Hz hump rolled off above 2-4 kHz,
  amplitude-modulated at the rotation rate, plus the blade-pass tone (rotation
  12-25 Hz x 3-7 blades) and two harmonics, speed wandering slowly;
* ``hvac``: a low-frequency rumble (peak 30-90 Hz) plus broad air-flow band noise
  (centre 400-1500 Hz), slowly modulated;
* ``room``: a quiet room's floor, falling about -4 to -5 dB/octave (like an NC curve)
  with extra rumble below 100 Hz;
* ``mic_self_noise``: a cheap USB microphone with nothing in front of it: preamp white
  noise, a 1/f part with a 100-600 Hz corner, a tiny DC offset and a slow drift.

``python -m training.corpus.noise write OUT_DIR [--minutes 10] [--levels -60 -40 -20]
[--kinds ...]`` writes the held-out noise-bed set: ``OUT_DIR/<kind>_<level>dBFS.flac``
(16 kHz, 24-bit) and ``OUT_DIR/manifest.csv`` (``path, labels, source, seconds, level``;
labels empty, source ``noise/<kind>``). Its generators are seeded from
``[EVAL_SEED_TAG, kind, level]``, a stream that no training run's augmentation draws from
(those come from the data loader's ``[seed, worker seed]`` generators).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "EVAL_SEED_TAG",
    "GENERATORS",
    "KINDS",
    "SAMPLE_RATE",
    "bed",
    "dbfs",
    "eval_rng",
    "main",
    "write_set",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
LOW_CUT_HZ = 20.0  # pink/brown/room spectra roll off below this
HUM_HARMONICS = 20
DEFAULT_LEVELS = (-60.0, -40.0, -20.0)
DEFAULT_MINUTES = 10.0
#: First entropy word of the evaluation set's generators ("noisebed" in ASCII).
EVAL_SEED_TAG = 0x6E6F697365626564
_CONTROL_HZ = 20.0  # control rate of the slow wander signals
_TINY = 1e-20

Generator = Callable[..., np.ndarray]


def dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBFS (re 1.0, DC included); -inf for silence."""
    p = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * np.log10(p) if p > 0 else float("-inf")


def _at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64)))
    if rms <= _TINY:
        raise ValueError("bed is silent; cannot scale it to a level")
    y = x * (10.0 ** (level_dbfs / 20.0) / rms)
    peak = float(np.max(np.abs(y)))
    if peak > 1.0:
        raise ValueError(f"level {level_dbfs} dBFS clips this bed (peak {peak:.2f} > 1.0); "
                         "accepted: a level whose peak stays within full scale")
    return y.astype(np.float32)


def _shaped(n: int, amp: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
            sample_rate: int) -> np.ndarray:
    """Gaussian noise of ``n`` samples whose amplitude spectrum is ``amp(f_hz)`` (DC removed).

    Scaled so that ``amp = 1`` everywhere gives unit-variance white noise.
    """
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    a = np.asarray(amp(f), dtype=np.float64) * np.sqrt(n / 2.0)
    a[0] = 0.0
    spec = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * a
    return np.fft.irfft(spec, n)


def _power_law(slope_db_oct: float, low_cut_hz: float = LOW_CUT_HZ) -> Callable[[np.ndarray], np.ndarray]:
    """Amplitude response with ``slope_db_oct`` dB/octave of power above ``low_cut_hz``,
    rising 12 dB/octave below it (a second-order high-pass knee)."""
    exponent = slope_db_oct / (20.0 * np.log10(2.0))  # power dB/oct -> amplitude exponent

    def amp(f: np.ndarray) -> np.ndarray:
        g = np.maximum(f, low_cut_hz) ** exponent
        return g * np.minimum(f / low_cut_hz, 1.0) ** 2

    return amp


def _slow(n: int, rng: np.random.Generator, sample_rate: int, rate_hz: float = _CONTROL_HZ,
          smooth: int = 8) -> np.ndarray:
    """A slow, zero-mean, unit-RMS random signal (changes over ~``smooth / rate_hz`` s)."""
    knots = int(np.ceil(n / sample_rate * rate_hz)) + smooth + 2
    k = np.convolve(rng.standard_normal(knots), np.hanning(smooth + 2)[1:-1], mode="same")
    k -= k.mean()
    k /= max(float(np.std(k)), _TINY)
    t = np.arange(n) / sample_rate * rate_hz
    return np.interp(t, np.arange(knots), k)


def _tones(f0: np.ndarray | float, n: int, amps: Sequence[float], rng: np.random.Generator,
           sample_rate: int) -> np.ndarray:
    """Sum of harmonics ``k * f0`` (k = 1..len(amps)) of a possibly time-varying ``f0`` (Hz)."""
    inst = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2.0 * np.pi * np.cumsum(inst) / sample_rate
    out = np.zeros(n)
    nyquist = sample_rate / 2
    top = float(np.max(inst)) if n else 0.0
    for k, a in enumerate(amps, start=1):
        if k * top >= 0.95 * nyquist:
            break
        out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def white(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Flat-spectrum Gaussian noise."""
    return _at_level(rng.standard_normal(n), level_dbfs)


def pink(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """1/f noise: -3 dB/octave above 20 Hz."""
    return _at_level(_shaped(n, _power_law(-10 * np.log10(2.0)), rng, sample_rate), level_dbfs)


def brown(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """1/f^2 noise: -6 dB/octave above 20 Hz."""
    return _at_level(_shaped(n, _power_law(-20 * np.log10(2.0)), rng, sample_rate), level_dbfs)


def _hum(f_mains: float, n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    f0 = f_mains * (1.0 + 0.001 * _slow(n, rng, sample_rate, rate_hz=2.0))
    amps = [rng.uniform(0.4, 1.0) * (1.3 if k % 2 else 1.0) / k for k in range(1, HUM_HARMONICS + 1)]
    amps[0], amps[1] = 1.0, rng.uniform(0.3, 1.0)  # the fundamental, and 2 f0 (magnetostriction)
    x = _tones(f0, n, amps, rng, sample_rate) * (1.0 + 0.05 * _slow(n, rng, sample_rate, 1.0))
    floor = _shaped(n, _power_law(-3.0), rng, sample_rate)
    floor *= np.sqrt(np.mean(x**2) / max(np.mean(floor**2), _TINY)) * 10 ** (-rng.uniform(35, 50) / 20)
    return _at_level(x + floor, level_dbfs)


def hum50(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """50 Hz mains hum with harmonics, slight wander and a faint broadband floor."""
    return _hum(50.0, n, level_dbfs, rng, sample_rate)


def hum60(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """60 Hz mains hum with harmonics, slight wander and a faint broadband floor."""
    return _hum(60.0, n, level_dbfs, rng, sample_rate)


def fan(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A fan: humped, low-passed noise modulated at the rotation rate, plus the blade-pass tone."""
    hump, cutoff = rng.uniform(150, 700), rng.uniform(2000, 4000)
    base = _power_law(-3.0)

    def amp(f: np.ndarray) -> np.ndarray:
        bump = 1.0 + 3.0 * np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / hump) / 1.0) ** 2)
        return base(f) * bump / np.sqrt(1.0 + (f / cutoff) ** 8)

    rot = rng.uniform(12, 25) * (1.0 + 0.01 * _slow(n, rng, sample_rate, rate_hz=1.0))
    blades = int(rng.integers(3, 8))
    noise = _shaped(n, amp, rng, sample_rate)
    rot_phase = 2 * np.pi * np.cumsum(rot) / sample_rate
    noise *= 1.0 + rng.uniform(0.05, 0.2) * np.sin(rot_phase) + 0.05 * _slow(n, rng, sample_rate, 2.0)
    tone = _tones(rot * blades, n, [1.0, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3)], rng, sample_rate)
    tone *= np.sqrt(np.mean(noise**2) / max(np.mean(tone**2), _TINY)) * 10 ** (-rng.uniform(6, 15) / 20)
    return _at_level(noise + tone, level_dbfs)


def hvac(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Air conditioning: LF rumble plus broad air-flow band noise, slowly modulated."""
    rumble_hz, centre = rng.uniform(30, 90), rng.uniform(400, 1500)
    rumble_db = rng.uniform(6, 18)  # rumble above the band, at their peaks

    def amp(f: np.ndarray) -> np.ndarray:
        lo = np.minimum(f / LOW_CUT_HZ, 1.0) ** 2
        rumble = 10 ** (rumble_db / 20) / (1.0 + (f / rumble_hz) ** 2)
        airflow = np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / 1.3) ** 2)
        return lo * (rumble + airflow)

    x = _shaped(n, amp, rng, sample_rate) * (1.0 + 0.08 * _slow(n, rng, sample_rate, 1.0))
    return _at_level(x, level_dbfs)


def room(n: int, level_dbfs: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Room tone: a quiet room's floor, about -4 to -5 dB/octave, extra rumble below 100 Hz."""
    slope = rng.uniform(-5.0, -4.0)
    base = _power_law(slope)
    rumble_db = rng.uniform(3, 12)

    def amp(f: np.ndarray) -> np.ndarray:
        return base(f) * (1.0 + 10 ** (rumble_db / 20) / (1.0 + (f / 60.0) ** 4))

    return _at_level(_shaped(n, amp, rng, sample_rate), level_dbfs)


def mic_self_noise(n: int, level_dbfs: float, rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Quiet input through a cheap microphone: white + 1/f preamp noise, DC offset, slow drift."""
    corner = rng.uniform(100, 600)

    def amp(f: np.ndarray) -> np.ndarray:  # 1/f power meeting the white floor at ``corner``
        return np.sqrt(corner / np.maximum(f, 2.0)) * np.minimum(f / 2.0, 1.0)

    x = rng.standard_normal(n) + _shaped(n, amp, rng, sample_rate)
    rms = float(np.std(x))
    x += rms * (rng.uniform(-0.3, 0.3) + 0.1 * _slow(n, rng, sample_rate, rate_hz=0.5))
    return _at_level(x, level_dbfs)


GENERATORS: dict[str, Generator] = {
    "white": white, "pink": pink, "brown": brown, "hum50": hum50, "hum60": hum60,
    "fan": fan, "hvac": hvac, "room": room, "mic_self_noise": mic_self_noise,
}
KINDS = tuple(GENERATORS)


def bed(kind: str, n: int, level_dbfs: float, rng: np.random.Generator,
        sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A ``kind`` bed of ``n`` samples at ``level_dbfs`` (see the module docstring)."""
    if kind not in GENERATORS:
        raise ValueError(f"noise kind {kind!r}; accepted: {list(KINDS)}")
    if n <= 0:
        raise ValueError(f"n={n}; accepted: a positive number of samples")
    if not np.isfinite(level_dbfs) or level_dbfs > 0:
        raise ValueError(f"level {level_dbfs} dBFS; accepted: a finite level <= 0 dBFS")
    return GENERATORS[kind](n, level_dbfs, rng, sample_rate)


def eval_rng(kind: str, level_dbfs: float) -> np.random.Generator:
    """The evaluation set's generator for one file (independent of any training stream)."""
    centi = round(level_dbfs * 100)
    return np.random.default_rng([EVAL_SEED_TAG, KINDS.index(kind), abs(centi), int(centi < 0)])


def _level_name(level: float) -> str:
    return f"{level:g}"


def write_set(out_dir: str | Path, minutes: float = DEFAULT_MINUTES,
              levels: Sequence[float] = DEFAULT_LEVELS, kinds: Sequence[str] = KINDS,
              sample_rate: int = SAMPLE_RATE) -> Path:
    """Write one FLAC per kind x level and ``manifest.csv``; returns the manifest path."""
    import soundfile as sf

    bad = [k for k in kinds if k not in GENERATORS]
    if bad:
        raise ValueError(f"unknown noise kind(s) {bad}; accepted: {list(KINDS)}")
    if minutes <= 0:
        raise ValueError(f"minutes={minutes}; accepted: > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = round(minutes * 60 * sample_rate)
    rows = []
    for kind in kinds:
        for level in levels:
            x = bed(kind, n, float(level), eval_rng(kind, float(level)), sample_rate)
            name = f"{kind}_{_level_name(level)}dBFS.flac"
            sf.write(out / name, x, sample_rate, subtype="PCM_24")
            rows.append([name, "", f"noise/{kind}", f"{n / sample_rate:g}", _level_name(level)])
            log.info("wrote %s (%.1f dBFS)", name, dbfs(x))
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "source", "seconds", "level"])
        w.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.corpus.noise", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the held-out noise-bed set")
    w.add_argument("out_dir")
    w.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    w.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), help="dBFS (RMS re 1.0)")
    w.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = write_set(a.out_dir, a.minutes, a.levels, a.kinds)
    except ValueError as e:
        log.error("%s", e)
        return 2
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
