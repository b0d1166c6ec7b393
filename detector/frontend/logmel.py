"""Incremental log-mel: each chunk computes only the STFT frames it completes.

State is the tail of samples not yet covered by a complete frame (at most
``win_length - 1 + hop_length`` samples) and the index of the next frame. Any
chunking of a stream yields exactly the frames of :func:`detector.frontend.features.log_mel`
on the whole stream.
"""

from __future__ import annotations

import numpy as np

from detector.frontend.features import (
    FeatureConfig,
    hann_window,
    mel_filterbank,
    spectra_to_log_mel,
)

__all__ = ["LogMelStage"]


class LogMelStage:
    """Mono samples in, log-mel frames out.

    ``process(chunk (n,))`` -> ``(k, n_mels)`` float32, the frames completed by this
    chunk (``k`` may be 0). ``frames_done`` counts frames emitted since ``reset()``;
    frame ``t`` starts at sample ``t * hop_length`` of the stream.
    """

    def __init__(self, cfg: FeatureConfig, max_chunk_frames: int = 1024) -> None:
        self.cfg = cfg
        self._window = hann_window(cfg)
        self._fbank = mel_filterbank(cfg)
        # Tail: samples from the start of the next frame; never longer than one
        # frame plus one hop minus one sample.
        self._tail = np.zeros(cfg.win_length + cfg.hop_length, dtype=np.float64)
        self._tail_len = 0
        self._scratch = np.zeros((max_chunk_frames, cfg.n_fft), dtype=np.float64)
        self.frames_done = 0

    def reset(self) -> None:
        self._tail_len = 0
        self.frames_done = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"LogMelStage expects mono samples (n,); got shape {chunk.shape}")
        total = self._tail_len + chunk.shape[0]
        if total < cfg.win_length:
            self._tail[self._tail_len : total] = chunk
            self._tail_len = total
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        # One contiguous view of tail + chunk; the copy is bounded by the chunk size.
        signal = np.empty(total, dtype=np.float64)
        signal[: self._tail_len] = self._tail[: self._tail_len]
        signal[self._tail_len :] = chunk
        n_frames = 1 + (total - cfg.win_length) // cfg.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(signal, cfg.win_length)[
            : (n_frames - 1) * cfg.hop_length + 1 : cfg.hop_length
        ]
        if n_frames > self._scratch.shape[0]:
            self._scratch = np.zeros((n_frames, cfg.n_fft), dtype=np.float64)
        out = spectra_to_log_mel(frames, self._window, self._fbank, cfg, self._scratch)
        consumed = n_frames * cfg.hop_length
        rest = total - consumed
        self._tail[:rest] = signal[consumed:]
        self._tail_len = rest
        self.frames_done += n_frames
        return out
