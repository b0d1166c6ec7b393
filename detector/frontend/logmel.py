"""Incremental log-mel: each chunk computes only the STFT frames it completes.

State is the tail of samples not yet covered by a complete frame (at most
``win_length - 1 + hop_length`` samples) and the index of the next frame. Any
chunking of a stream yields exactly the frames of :func:`detector.frontend.features.log_mel`
on the whole stream.

The stage is split in two so that many streams can share one transform:
:meth:`LogMelStage.frames` cuts a chunk into raw frames (per-stream state), and
:class:`LogMelKernel` turns the raw frames of any number of streams into log-mel rows
with **one** windowing, one ``rfft`` and one mel matrix product on fixed tiles
(:meth:`LogMelKernel.many`), in row blocks of a scratch buffer (one per calling thread). Every row
goes through the same arithmetic whatever else is in the call, so a stream's features
do not depend on the chunking or on the other streams (``tests/test_features.py``).
"""

from __future__ import annotations

import threading

import numpy as np

from detector.frontend.features import (
    FeatureConfig,
    hann_window,
    mel_filterbank,
    padded_to_log_mel,
)

__all__ = ["KERNEL_BLOCK_FRAMES", "LogMelKernel", "LogMelStage"]

KERNEL_BLOCK_FRAMES = 512
"""Rows per transform call: 512 x n_fft float64 = 2 MiB of scratch, cache-sized."""


class LogMelKernel:
    """Raw frames -> log-mel rows; one scratch buffer per calling thread, shared by any number of streams.

    ``kernel(frames (k, win_length))`` -> ``(k, n_mels)`` float32;
    ``kernel.many([frames_a, frames_b, ...])`` -> one ``(sum k, n_mels)`` array, the
    streams' rows in order, computed together in blocks of ``block`` rows.
    """

    def __init__(self, cfg: FeatureConfig, block: int = KERNEL_BLOCK_FRAMES) -> None:
        self.cfg = cfg
        self.block = max(1, int(block))
        self._window = hann_window(cfg)
        self._fbank = mel_filterbank(cfg).astype(np.float32)
        # One scratch buffer per thread that calls the kernel: the Listener runs a large
        # transform on its front-end thread and a small one on its loop thread, and both may
        # run at once (shared, each overwrote the other's rows: file-mode events changed from
        # run to run).
        self._local = threading.local()

    def _scratch(self) -> np.ndarray:
        scratch: np.ndarray | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.zeros((self.block, self.cfg.n_fft), dtype=np.float64)
        return scratch

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.many([frames])

    def many(self, parts: list[np.ndarray]) -> np.ndarray:
        cfg = self.cfg
        total = sum(p.shape[0] for p in parts)
        out = np.empty((total, cfg.n_mels), dtype=np.float32)
        if total == 0:
            return out
        scratch, win, block = self._scratch(), cfg.win_length, self.block
        row = 0  # rows of the current block filled
        done = 0  # output rows written
        for p in parts:
            i = 0
            while i < p.shape[0]:
                take = min(p.shape[0] - i, block - row)
                np.multiply(p[i : i + take], self._window, out=scratch[row : row + take, :win])
                row += take
                i += take
                if row == block:
                    out[done : done + row] = padded_to_log_mel(scratch[:row], self._fbank, cfg)
                    done += row
                    row = 0
        if row:
            out[done : done + row] = padded_to_log_mel(scratch[:row], self._fbank, cfg)
        return out


class LogMelStage:
    """Mono samples in, log-mel frames out.

    ``process(chunk (n,))`` -> ``(k, n_mels)`` float32, the frames completed by this
    chunk (``k`` may be 0). ``frames_done`` counts frames emitted since ``reset()``;
    frame ``t`` starts at sample ``t * hop_length`` of the stream.
    """

    def __init__(self, cfg: FeatureConfig, kernel: LogMelKernel | None = None) -> None:
        self.cfg = cfg
        # Shared by every stream of a Listener (one scratch buffer, not one per stream).
        self.kernel = kernel if kernel is not None else LogMelKernel(cfg)
        # Tail: samples from the start of the next frame; never longer than one
        # frame plus one hop minus one sample.
        self._tail = np.zeros(cfg.win_length + cfg.hop_length, dtype=np.float64)
        self._tail_len = 0
        self.frames_done = 0

    def reset(self) -> None:
        self._tail_len = 0
        self.frames_done = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """``(n,)`` samples -> ``(k, n_mels)`` float32 log-mel of the frames they complete."""
        return self.kernel(self.frames(chunk))

    def frames(self, chunk: np.ndarray) -> np.ndarray:
        """``(n,)`` samples -> ``(k, win_length)`` float64 raw frames they complete (a view).

        Advances the stage; the caller transforms the frames (:class:`LogMelKernel`).
        """
        cfg = self.cfg
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"LogMelStage expects mono samples (n,); got shape {chunk.shape}")
        total = self._tail_len + chunk.shape[0]
        if total < cfg.win_length:
            self._tail[self._tail_len : total] = chunk
            self._tail_len = total
            return np.zeros((0, cfg.win_length), dtype=np.float64)
        # One contiguous view of tail + chunk; the copy is bounded by the chunk size.
        signal = np.empty(total, dtype=np.float64)
        signal[: self._tail_len] = self._tail[: self._tail_len]
        signal[self._tail_len :] = chunk
        n_frames = 1 + (total - cfg.win_length) // cfg.hop_length
        # The frames as a strided view of ``signal`` (what sliding_window_view(...)[::hop]
        # gives, without its Python-level checks: ~25 us per call, per stream and hop).
        step = signal.itemsize
        frames = np.ndarray((n_frames, cfg.win_length), signal.dtype, signal, 0,
                            (cfg.hop_length * step, step))
        consumed = n_frames * cfg.hop_length
        rest = total - consumed
        self._tail[:rest] = signal[consumed:]
        self._tail_len = rest
        self.frames_done += n_frames
        return frames
