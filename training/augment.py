"""Augmentation: waveform effects per example, clip mixing per batch, SpecAugment on log-mel.

:class:`WaveAugment` applies, in this order, each switched-on effect of
:class:`AugmentConfig` to one waveform ``(n,)``:

1. time shift: circular roll by up to ``shift_max_s``;
2. reverb (``reverb_prob``): convolution with a synthetic impulse response (white noise
   under an exponential envelope falling 60 dB in a random RT60 from ``rt60_s``, after a
   unit direct path) or with a random IR from ``ir_dir``; output RMS matched to input;
3. background (``background_prob``): a random excerpt of a background waveform added at a
   random SNR in ``snr_db`` (measured against the signal's mean power);
4. band limiting (``band_limit_prob``): an FFT low-pass at a random cutoff from
   ``band_limit_hz`` (4 kHz = an 8-kHz recording, 5.5125 kHz = 11.025 kHz), so that
   missing high frequencies never identify a class; cutoffs at or above Nyquist do nothing;
5. gain: a random gain in ``gain_db``;
6. noise bed (``noise_bed``, off by default): with ``noise_bed_alone_prob`` the example is
   replaced by a steady noise bed alone (:mod:`training.corpus.noise`: white, pink, brown,
   hum, fan, HVAC, room tone, mic self-noise; its labels then no longer hold, so
   :meth:`WaveAugment.apply` empties the target), else with ``noise_bed_prob`` a bed is
   added under it. The kind is uniform over ``noise_bed_kinds``, the level uniform in
   ``noise_bed_dbfs`` (RMS dBFS re 1.0, absolute: after the gain, so it is the level the
   model hears); when step 4 band-limited the example, the bed is band-limited at the
   same cutoff before it is set to its level. Its draws come after every other step's,
   so switching it on leaves the other steps' random choices as they were.

:func:`mix_batch` sums pairs of examples (labels: union); :class:`SpecAugment` filters,
masks and warps ``(B, frames, mels)`` log-mel, in ``.train()`` mode only. The filter is
FilterAugment's linear type (Nam et al., ICASSP 2022): a random smooth equaliser per
example, gains in dB at 2-``filter_points`` random mel positions, linear between them, so
that a microphone's or a room's colouring is not a class cue.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from detector.frontend.features import FeatureConfig
from training.corpus.noise import KINDS as NOISE_KINDS
from training.corpus.noise import bed as noise_bed

__all__ = ["AugmentConfig", "SpecAugment", "WaveAugment", "load_impulse_responses", "mix_batch"]

log = logging.getLogger(__name__)

DECAY_DB = 60.0  # RT60: time for the reverb tail to fall by 60 dB
_POWER_FLOOR = 1e-12
DEFAULT_MIX_GAIN_DB = (-6.0, 0.0)
_RANGES = ("gain_db", "rt60_s", "snr_db", "mix_gain_db", "noise_bed_dbfs")
Wave = TypeVar("Wave", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class AugmentConfig:
    """Switches and parameters of every augmentation (units in the names).

    Ranges are ``(low, high)``; TOML lists are accepted. ``mix_*`` and the SpecAugment
    fields parameterise :func:`mix_batch` and :class:`SpecAugment` (frames / mel bins).
    """

    gain: bool = True
    gain_db: tuple[float, float] = (-12.0, 6.0)
    shift: bool = True
    shift_max_s: float = 0.5
    reverb: bool = True
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 1.2)
    ir_dir: str | None = None
    band_limit: bool = True
    band_limit_prob: float = 0.3
    band_limit_hz: tuple[float, ...] = (4000.0, 5512.5)
    background: bool = True
    background_prob: float = 0.5
    snr_db: tuple[float, float] = (0.0, 20.0)
    noise_bed: bool = False
    noise_bed_prob: float = 0.3
    noise_bed_alone_prob: float = 0.05
    noise_bed_dbfs: tuple[float, float] = (-70.0, -20.0)
    noise_bed_kinds: tuple[str, ...] = NOISE_KINDS
    mix: bool = True
    mix_prob: float = 0.5
    mix_gain_db: tuple[float, float] = DEFAULT_MIX_GAIN_DB
    spec_augment: bool = True
    time_masks: int = 2
    time_width: int = 12
    freq_masks: int = 2
    freq_width: int = 8
    time_warp: int = 0
    filter_db: float = 0.0  # max |gain| of a filter point, dB of amplitude; 0 = no filter
    filter_points: int = 4

    def __post_init__(self) -> None:
        for name in (*_RANGES, "band_limit_hz"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        problems = []
        for name in _RANGES:
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                problems.append(f"{name}={list(lo_hi)} (need [low, high] with low <= high)")
        object.__setattr__(self, "noise_bed_kinds", tuple(str(k) for k in self.noise_bed_kinds))
        for name in ("reverb_prob", "band_limit_prob", "background_prob", "mix_prob",
                     "noise_bed_prob", "noise_bed_alone_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} (need 0..1)")
        if self.rt60_s[0] <= 0:
            problems.append(f"rt60_s={list(self.rt60_s)} (need > 0)")
        if self.shift_max_s < 0:
            problems.append(f"shift_max_s={self.shift_max_s} (need >= 0)")
        if not self.band_limit_hz or min(self.band_limit_hz) <= 0:
            problems.append(f"band_limit_hz={list(self.band_limit_hz)} (need cutoffs > 0)")
        counts = ("time_masks", "time_width", "freq_masks", "freq_width", "time_warp", "filter_db")
        problems += [f"{n}={getattr(self, n)} (need >= 0)" for n in counts if getattr(self, n) < 0]
        if self.filter_points < 2:
            problems.append(f"filter_points={self.filter_points} (need >= 2)")
        unknown = [k for k in self.noise_bed_kinds if k not in NOISE_KINDS]
        if unknown or not self.noise_bed_kinds:
            problems.append(f"noise_bed_kinds={list(self.noise_bed_kinds)} "
                            f"(need one or more of {list(NOISE_KINDS)})")
        if self.noise_bed_dbfs[1] > 0:
            problems.append(f"noise_bed_dbfs={list(self.noise_bed_dbfs)} (need levels <= 0 dBFS)")
        if problems:
            raise ValueError("invalid AugmentConfig: " + "; ".join(problems))

    @classmethod
    def off(cls) -> AugmentConfig:
        """Every augmentation switched off."""
        switches = ("gain", "shift", "reverb", "band_limit", "background", "noise_bed", "mix",
                    "spec_augment")
        off: dict[str, Any] = dict.fromkeys(switches, False)
        return cls(**off)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_impulse_responses(folder: str | Path, sample_rate: int) -> list[np.ndarray]:
    """Every audio file under ``folder`` decoded to mono at ``sample_rate``, peak-normalised."""
    from training.data import decode_audio
    from training.layouts import AUDIO_EXTENSIONS

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"ir_dir {folder}: no {'/'.join(AUDIO_EXTENSIONS)} files")
    irs = []
    for f in files:
        ir = decode_audio(f, sample_rate).astype(np.float64)
        peak = np.abs(ir).max() if ir.size else 0.0
        if peak > 0:
            irs.append(ir / peak)
    log.info("loaded %d impulse responses from %s", len(irs), folder)
    return irs


def synthetic_ir(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit direct path + white noise decaying 60 dB in ``rt60_s``; ``(round(rt60_s * sr),)``."""
    n = max(2, round(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = 10.0 ** (-DECAY_DB / 20.0 * t / rt60_s)
    ir = rng.standard_normal(n) * envelope
    ir *= 1.0 / max(np.sqrt(np.sum(ir**2)), _POWER_FLOOR)  # tail energy = direct energy
    ir[0] = 1.0
    return ir


def _fft_convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Causal convolution truncated to ``len(x)``."""
    size = x.size + ir.size - 1
    nfft = 1 << (size - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)
    return y[: x.size]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


class WaveAugment:
    """Random waveform augmentation of one example (see module docstring).

    ``backgrounds``: waveforms at ``sample_rate`` to mix in (background mixing is
    skipped without them). Call with an explicit ``rng`` for reproducible streams in
    DataLoader workers; otherwise the instance's own generator (from ``seed``) is used.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        sample_rate: int,
        backgrounds: Sequence[np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate={sample_rate!r}; accepted: a positive int (Hz)")
        self.cfg, self.sample_rate = cfg, sample_rate
        self.backgrounds = [np.asarray(b, dtype=np.float64) for b in backgrounds or [] if len(b)]
        self.irs = load_impulse_responses(cfg.ir_dir, sample_rate) if cfg.ir_dir else []
        self.rng = np.random.default_rng(seed)

    def __call__(self, wave: Wave, rng: np.random.Generator | None = None) -> Wave:
        """Augment ``wave`` ``(n,)``; returns the same type (numpy float32 or torch).

        Refused when a noise bed may replace the example (``noise_bed_alone_prob`` > 0):
        its labels would then be wrong; use :meth:`apply` with the target.
        """
        if self.cfg.noise_bed and self.cfg.noise_bed_alone_prob > 0:
            raise ValueError(
                f"noise_bed_alone_prob={self.cfg.noise_bed_alone_prob} can replace the example "
                "by a bed alone, which changes its labels; call WaveAugment.apply(wave, target)"
            )
        out, _ = self._augment(wave, rng)
        return out

    def apply(self, wave: Wave, target: np.ndarray,
              rng: np.random.Generator | None = None) -> tuple[Wave, np.ndarray]:
        """Augment ``wave`` ``(n,)`` and its multi-hot ``target`` ``(L,)``.

        The target is returned unchanged, except all zeros (a new array) when the example
        was replaced by a noise bed alone.
        """
        out, alone = self._augment(wave, rng)
        return out, (np.zeros_like(target) if alone else target)

    def _augment(self, wave: Wave, rng: np.random.Generator | None) -> tuple[Wave, bool]:
        """The augmented wave, and whether it is a noise bed alone."""
        rng = rng or self.rng
        raw = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
        x = raw.astype(np.float64)
        if x.ndim != 1:
            raise ValueError(f"WaveAugment expects one waveform (n,); got shape {x.shape}")
        c = self.cfg
        cutoff: float | None = None
        if c.shift and x.size:
            x = self.shift(x, rng)
        if c.reverb and rng.random() < c.reverb_prob:
            x = self.reverberate(x, rng)
        if c.background and self.backgrounds and rng.random() < c.background_prob:
            x = self.add_background(x, float(rng.uniform(*c.snr_db)), rng)
        if c.band_limit and rng.random() < c.band_limit_prob:
            cutoff = float(rng.choice(c.band_limit_hz))
            x = self.low_pass(x, cutoff)
        if c.gain:
            x = x * 10.0 ** (rng.uniform(*c.gain_db) / 20.0)
        alone = False
        if c.noise_bed and x.size:
            alone = bool(rng.random() < c.noise_bed_alone_prob)
            if alone:
                x = self.bed(x.size, cutoff, rng)
            elif rng.random() < c.noise_bed_prob:
                x = x + self.bed(x.size, cutoff, rng)
        out = x.astype(np.float32)
        if isinstance(wave, torch.Tensor):
            return cast(Wave, torch.from_numpy(out).to(wave.device)), alone
        return cast(Wave, out), alone

    def bed(self, n: int, cutoff_hz: float | None, rng: np.random.Generator) -> np.ndarray:
        """A random noise bed of ``n`` samples (kind and level from the config), low-passed
        at ``cutoff_hz`` (if any) before it is set to its level."""
        c = self.cfg
        kind = c.noise_bed_kinds[int(rng.integers(len(c.noise_bed_kinds)))]
        level = float(rng.uniform(*c.noise_bed_dbfs))
        x = noise_bed(kind, n, level, rng, self.sample_rate).astype(np.float64)
        if cutoff_hz is not None and cutoff_hz < self.sample_rate / 2:
            y = self.low_pass(x, cutoff_hz)
            after = _rms(y)
            x = y * (_rms(x) / after) if after > _POWER_FLOOR else x
        return x

    def shift(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Circular roll by a uniform non-zero number of samples in ``±shift_max_s``."""
        most = min(round(self.cfg.shift_max_s * self.sample_rate), x.size - 1)
        if most <= 0:
            return x
        k = int(rng.integers(1, most + 1)) * (1 if rng.random() < 0.5 else -1)
        return np.roll(x, k)

    def reverberate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Convolve with a random IR (user IR if any, else synthetic); RMS kept."""
        if self.irs:
            ir = self.irs[int(rng.integers(len(self.irs)))]
        else:
            ir = synthetic_ir(float(rng.uniform(*self.cfg.rt60_s)), self.sample_rate, rng)
        y = _fft_convolve(x, ir)
        before, after = _rms(x), _rms(y)
        return y * (before / after) if after > _POWER_FLOOR else y

    def add_background(self, x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
        """Add a random background excerpt (tiled if short) at ``snr_db`` below the signal.

        A silent signal gets the background at ``-snr_db`` relative to its own level.
        """
        bg = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        if bg.size < x.size:
            bg = np.tile(bg, -(-x.size // bg.size))
        start = int(rng.integers(0, bg.size - x.size + 1))
        noise = bg[start:start + x.size]
        p_sig, p_noise = np.mean(x**2), np.mean(noise**2)
        if p_noise <= _POWER_FLOOR:
            return x
        ref = p_sig if p_sig > _POWER_FLOOR else p_noise
        return x + noise * np.sqrt(ref / p_noise * 10.0 ** (-snr_db / 10.0))

    def low_pass(self, x: np.ndarray, cutoff_hz: float) -> np.ndarray:
        """Zero every FFT bin at or above ``cutoff_hz`` (no-op at or above Nyquist)."""
        if cutoff_hz >= self.sample_rate / 2 or x.size < 2:
            return x
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(x.size, 1.0 / self.sample_rate)
        spec[freqs >= cutoff_hz] = 0.0
        return np.fft.irfft(spec, x.size)


def mix_batch(
    waves: torch.Tensor,
    targets: torch.Tensor,
    prob: float,
    generator: torch.Generator | None = None,
    gain_db: tuple[float, float] = DEFAULT_MIX_GAIN_DB,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example, with probability ``prob``, with another one of the batch.

    ``waves`` ``(B, n)``, ``targets`` ``(B, L)``. A mixed example is
    ``w_i + 10^(g/20) * w_j`` with ``g`` uniform in ``gain_db`` and a random partner
    ``j != i``; its target is the union ``max(t_i, t_j)``. Inputs are not modified.
    """
    if waves.ndim != 2 or targets.ndim != 2 or waves.shape[0] != targets.shape[0]:
        raise ValueError(f"waves {tuple(waves.shape)} / targets {tuple(targets.shape)}: need (B, n), (B, L)")
    b = waves.shape[0]
    if b < 2 or prob <= 0:
        return waves, targets
    chosen = torch.rand(b, generator=generator) < prob
    partner = (torch.arange(b) + torch.randint(1, b, (b,), generator=generator)) % b
    lo, hi = gain_db
    gain = 10.0 ** ((lo + (hi - lo) * torch.rand(b, generator=generator)) / 20.0)
    gain = torch.where(chosen, gain, torch.zeros(b)).to(waves.dtype).to(waves.device)
    partner = partner.to(waves.device)
    chosen = chosen.to(targets.device)
    mixed = waves + gain[:, None] * waves[partner]
    union = torch.where(chosen[:, None], torch.maximum(targets, targets[partner.to(targets.device)]), targets)
    return mixed, union


class SpecAugment(nn.Module):
    """SpecAugment on log-mel ``(B, frames, mels)``; identity in ``.eval()`` mode.

    Per example: a random filter (gains up to ±``filter_db`` dB at 2 to ``filter_points``
    mel positions, the two edge bins among them, linear in between), applied to the
    magnitude under the log (``log(mel + log_offset)``, :class:`training.frontend.LogMel`),
    so silence stays silence; a time warp moving a random centre frame by up to
    ``time_warp`` frames (linear interpolation); ``time_masks`` time masks of up to
    ``time_width`` frames and ``freq_masks`` frequency masks of up to ``freq_width`` mel
    bins, filled with the example's mean. Counts, widths or ``filter_db`` of 0 switch a
    part off. Uses torch's global RNG.
    """

    def __init__(
        self, time_masks: int = 2, time_width: int = 12, freq_masks: int = 2, freq_width: int = 8,
        time_warp: int = 0, filter_db: float = 0.0, filter_points: int = 4,
        log_offset: float = FeatureConfig.log_offset,
    ) -> None:
        super().__init__()
        for name, v in (("time_masks", time_masks), ("time_width", time_width),
                        ("freq_masks", freq_masks), ("freq_width", freq_width),
                        ("time_warp", time_warp), ("filter_db", filter_db)):
            if v < 0:
                raise ValueError(f"{name}={v}; accepted: >= 0")
        if filter_points < 2:
            raise ValueError(f"filter_points={filter_points}; accepted: >= 2")
        if log_offset <= 0:
            raise ValueError(f"log_offset={log_offset}; accepted: > 0")
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_warp = time_warp
        self.filter_db, self.filter_points, self.log_offset = filter_db, filter_points, log_offset

    @classmethod
    def from_config(cls, cfg: AugmentConfig,
                    log_offset: float = FeatureConfig.log_offset) -> SpecAugment:
        w = cfg.spec_augment
        return cls(cfg.time_masks if w else 0, cfg.time_width, cfg.freq_masks if w else 0,
                   cfg.freq_width, cfg.time_warp if w else 0, cfg.filter_db if w else 0.0,
                   cfg.filter_points, log_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if x.ndim != 3:
            raise ValueError(f"SpecAugment expects (B, frames, mels); got {tuple(x.shape)}")
        out = x.clone()
        b, frames, mels = x.shape
        if self.filter_db > 0:
            out = self.filter(out)
        if self.time_warp > 0:
            out = torch.stack([self._warp(out[i]) for i in range(b)])
        fill = out.mean(dim=(1, 2))
        for axis, count, width, size in ((1, self.time_masks, self.time_width, frames),
                                         (2, self.freq_masks, self.freq_width, mels)):
            if count == 0 or width == 0:
                continue
            widths = torch.randint(1, min(width, size) + 1, (b, count), device=x.device)
            starts = (torch.rand(b, count, device=x.device) * (size - widths + 1)).long()
            pos = torch.arange(size, device=x.device)
            hit = ((pos[None, None, :] >= starts[..., None])
                   & (pos[None, None, :] < (starts + widths)[..., None])).any(dim=1)  # (B, size)
            mask = hit[:, :, None] if axis == 1 else hit[:, None, :]
            out = torch.where(mask, fill[:, None, None], out)
        return out

    def filter_gains_db(self, b: int, mels: int, device: torch.device | None = None) -> torch.Tensor:
        """``(b, mels)`` random filter responses in dB (see the class docstring)."""
        gains = torch.empty(b, mels, device=device)
        for i in range(b):
            n = int(torch.randint(2, self.filter_points + 1, (1,)))
            inner = torch.randperm(mels - 2)[: n - 2] + 1 if n > 2 else torch.empty(0)
            at = torch.cat([torch.tensor([0.0]), inner.float().sort().values,
                            torch.tensor([mels - 1.0])])
            db = (torch.rand(len(at)) * 2 - 1) * self.filter_db
            bins = torch.arange(mels, dtype=torch.float32)
            seg = torch.searchsorted(at, bins, right=True).clamp(1, len(at) - 1)
            lo, hi = at[seg - 1], at[seg]
            frac = (bins - lo) / (hi - lo)
            gains[i] = (db[seg - 1] + frac * (db[seg] - db[seg - 1])).to(gains.device)
        return gains

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """Each example of log-mel ``x`` through its own random filter."""
        gain = 10.0 ** (self.filter_gains_db(x.shape[0], x.shape[2], x.device) / 20.0)
        mag = (torch.exp(x) - self.log_offset).clamp_min(0.0)
        return torch.log(mag * gain[:, None, :] + self.log_offset)

    def _warp(self, spec: torch.Tensor) -> torch.Tensor:
        """Move a random centre frame by ±1..time_warp frames, stretching both sides."""
        frames = spec.shape[0]
        w = min(self.time_warp, (frames - 1) // 2 - 1)
        if w <= 0:
            return spec
        centre = int(torch.randint(w + 1, frames - w, (1,)))
        shift = int(torch.randint(1, w + 1, (1,))) * (1 if float(torch.rand(1)) < 0.5 else -1)
        left = _resize(spec[:centre], centre + shift)
        right = _resize(spec[centre:], frames - centre - shift)
        return torch.cat([left, right], dim=0)


def _resize(part: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of ``(frames, mels)`` to ``length`` frames."""
    y = nn.functional.interpolate(part.T[None], size=length, mode="linear", align_corners=True)
    return y[0].T

