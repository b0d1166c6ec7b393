"""The front end, defined once: YAMNet/VGGish-style log-mel patches.

Training (torchaudio, ``training.frontend``) and the detector (incremental numpy,
``detector.frontend.logmel``) both read :class:`FeatureConfig`; ``tests/test_features.py``
holds them equal.

Framing is *not centred*: frame ``t`` covers samples ``[t * hop, t * hop + win_length)``.
Each frame is multiplied by a periodic Hann window of ``win_length`` samples,
zero-padded at the end to ``n_fft``, and transformed; the magnitude spectrum
(``n_fft // 2 + 1`` bins) is projected onto ``n_mels`` HTK mel triangles
(the same filters as ``torchaudio.functional.melscale_fbanks(norm=None,
mel_scale="htk")``) and compressed with ``log(mel + log_offset)``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MEL_TILE_ROWS",
    "FeatureConfig",
    "frame_count",
    "hann_window",
    "hz_to_mel",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "padded_to_log_mel",
    "spectra_to_log_mel",
]


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end parameters. Sizes are in samples unless a name says otherwise."""

    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    n_mels: int = 64
    f_min: float = 125.0
    f_max: float = 7500.0
    log_offset: float = 0.001
    patch_frames: int = 96  # 960 ms

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate={self.sample_rate} (must be > 0)")
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            problems.append(
                f"hop_length={self.hop_length}, win_length={self.win_length}, n_fft={self.n_fft} "
                "(need 0 < hop_length <= win_length <= n_fft)"
            )
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(
                f"f_min={self.f_min}, f_max={self.f_max} (need 0 <= f_min < f_max <= sample_rate/2)"
            )
        if self.n_mels <= 0 or self.patch_frames <= 0 or self.log_offset <= 0:
            problems.append(
                f"n_mels={self.n_mels}, patch_frames={self.patch_frames}, "
                f"log_offset={self.log_offset} (all must be > 0)"
            )
        if problems:
            raise ValueError("invalid FeatureConfig: " + "; ".join(problems))

    @property
    def n_freqs(self) -> int:
        """Number of magnitude-spectrum bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def patch_samples(self) -> int:
        """Samples spanned by one patch of ``patch_frames`` frames."""
        return (self.patch_frames - 1) * self.hop_length + self.win_length

    @property
    def patch_seconds(self) -> float:
        """Nominal patch length in seconds (``patch_frames * hop``), 0.96 s by default."""
        return self.patch_frames * self.hop_length / self.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Seconds between frames (the hop)."""
        return self.hop_length / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build from a mapping; unknown or mistyped keys are errors that name them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown feature key(s) {unknown}; accepted: {sorted(fields)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            expected = int if fields[name].type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"feature {name!r} is {value!r} ({type(value).__name__}); expected a number"
                )
            if expected is int and float(value) != int(value):
                raise ValueError(f"feature {name!r} is {value!r}; expected an integer")
            kwargs[name] = expected(value)
        return cls(**kwargs)


def frame_count(n_samples: int, cfg: FeatureConfig) -> int:
    """Complete frames in ``n_samples`` samples (no centring, no padding)."""
    if n_samples < cfg.win_length:
        return 0
    return 1 + (n_samples - cfg.win_length) // cfg.hop_length


def hann_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann window, shape ``(win_length,)``, float64 (as ``torch.hann_window``)."""
    n = np.arange(cfg.win_length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Triangular HTK mel filters, shape ``(n_freqs, n_mels)``, float64, unnormalised.

    Identical in construction to ``torchaudio.functional.melscale_fbanks``.
    """
    all_freqs = np.linspace(0.0, cfg.sample_rate // 2, cfg.n_freqs)
    m_pts = np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2)
    f_pts = mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


MEL_TILE_ROWS = 64
"""The mel product runs on tiles of exactly this many frames (the last one zero-padded).

A float32 GEMM may round a row differently when the call's shape differs; with every
call the same shape, a frame's features never depend on how many frames (streams,
chunk sizes) are computed together. float32 here costs ~40 % of the float64 product.
"""


def spectra_to_log_mel(
    frames: np.ndarray,
    window: np.ndarray,
    fbank: np.ndarray,
    cfg: FeatureConfig,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Raw frames ``(n, win_length)`` -> log-mel ``(n, n_mels)`` float32.

    ``scratch`` is an optional ``(>= n, n_fft)`` float64 buffer whose columns past
    ``win_length`` are zero; passing it avoids an allocation, and an FFT input already
    padded to ``n_fft`` is about 4x faster than letting ``rfft`` pad it.
    """
    n = frames.shape[0]
    if scratch is None or scratch.shape[0] < n:
        scratch = np.zeros((n, cfg.n_fft), dtype=np.float64)
    padded = scratch[:n]
    np.multiply(frames, window, out=padded[:, : cfg.win_length])
    return padded_to_log_mel(padded, fbank, cfg)


def padded_to_log_mel(padded: np.ndarray, fbank: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Windowed frames zero-padded to ``n_fft``, ``(n, n_fft)`` float64 -> log-mel
    ``(n, n_mels)`` float32: the one kernel of the offline and the incremental path.

    The FFT and its magnitude are float64 (numpy's float32 FFT is slower here); the mel
    product and the log are float32, the product on :data:`MEL_TILE_ROWS`-row tiles.
    """
    n = padded.shape[0]
    tiles = -(-n // MEL_TILE_ROWS)
    mag = np.zeros((tiles * MEL_TILE_ROWS, cfg.n_fft // 2 + 1), dtype=np.float32)
    mag[:n] = np.abs(np.fft.rfft(padded, axis=-1))
    fb = np.asarray(fbank, dtype=np.float32)
    mel = np.matmul(mag.reshape(tiles, MEL_TILE_ROWS, -1), fb).reshape(-1, fb.shape[1])[:n]
    mel += np.float32(cfg.log_offset)
    return np.log(mel, out=mel)


def log_mel(waveform: np.ndarray, cfg: FeatureConfig | None = None) -> np.ndarray:
    """Offline log-mel of a mono waveform ``(n_samples,)`` at ``cfg.sample_rate``.

    Returns ``(frame_count(n_samples), n_mels)`` float32.
    """
    cfg = cfg or FeatureConfig()
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects a mono 1-D waveform; got shape {x.shape}")
    n = frame_count(x.shape[0], cfg)
    if n == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop_length][:n]
    return spectra_to_log_mel(frames, hann_window(cfg), mel_filterbank(cfg), cfg)
