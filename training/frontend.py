"""Training's front end: the :class:`detector.frontend.features.FeatureConfig` log-mel in torch.

Framing, window, FFT size, mel filters and log offset all come from the one
FeatureConfig; ``tests/test_features.py`` holds this equal to the detector's
numpy path. Runs on whatever device its input lives on (GPU when present).
"""

from __future__ import annotations

import torch
import torchaudio

from detector.frontend.features import FeatureConfig

__all__ = ["LogMel"]


class LogMel(torch.nn.Module):
    """Waveform ``(..., n_samples)`` at ``cfg.sample_rate`` -> log-mel ``(..., frames, n_mels)``.

    ``frames = 1 + (n_samples - win_length) // hop_length`` (no centring), as in the
    streaming detector.
    """

    window: torch.Tensor
    fbank: torch.Tensor

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FeatureConfig()
        c = self.cfg
        self.register_buffer(
            "window", torch.hann_window(c.win_length, periodic=True, dtype=torch.float64),
            persistent=False,
        )
        fbank = torchaudio.functional.melscale_fbanks(
            n_freqs=c.n_freqs, f_min=c.f_min, f_max=c.f_max, n_mels=c.n_mels,
            sample_rate=c.sample_rate, norm=None, mel_scale="htk",
        )
        self.register_buffer("fbank", fbank.to(torch.float64), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if waveform.shape[-1] < c.win_length:
            raise ValueError(
                f"waveform has {waveform.shape[-1]} samples; a frame needs {c.win_length}"
            )
        # float64 like the detector: a float32 STFT drifts up to 3e-4 in quiet bins.
        # The cost is negligible beside the network's.
        x = waveform.to(torch.float64)
        frames = x.unfold(-1, c.win_length, c.hop_length) * self.window.to(x.dtype)
        spec = torch.fft.rfft(frames, n=c.n_fft, dim=-1).abs()
        mel = spec @ self.fbank.to(spec.dtype)
        return torch.log(mel + c.log_offset).to(torch.float32)
