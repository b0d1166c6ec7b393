"""Patching: log-mel frames -> overlapping ``patch_frames``-frame patches.

A patch starts every ``hop_frames`` frames. Frames are kept in one preallocated
buffer that holds at most the next patch plus the incoming block; after each call
only the frames a future patch still needs are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.frontend.features import FeatureConfig

__all__ = ["Patch", "Patcher"]


@dataclass(frozen=True)
class Patch:
    """One model input. ``data`` is ``(patch_frames, n_mels)`` float32.

    ``start_frame`` is the stream frame index of its first frame; ``start``/``end``
    are stream seconds of the audio it covers; ``padded_frames`` > 0 only for the
    final patch of a stream that ended mid-patch (padded with silence).
    """

    data: np.ndarray
    start_frame: int
    start: float
    end: float
    padded_frames: int = 0


class Patcher:
    """``process(frames (k, n_mels))`` -> list of :class:`Patch`; ``flush()`` at stream end."""

    def __init__(self, cfg: FeatureConfig, hop_frames: int) -> None:
        if not 1 <= hop_frames <= cfg.patch_frames:
            raise ValueError(
                f"patch hop of {hop_frames} frames; accepted: 1 to {cfg.patch_frames} "
                "(a longer hop would leave audio that no patch sees)"
            )
        self.cfg = cfg
        self.hop_frames = hop_frames
        self._silence = np.float32(np.log(cfg.log_offset))
        self._buf = np.zeros((cfg.patch_frames + 4 * hop_frames, cfg.n_mels), dtype=np.float32)
        self._len = 0  # frames in buffer
        self._buf_start = 0  # stream frame index of _buf[0]
        self._emitted_end = 0  # stream frame index just after the last emitted patch

    def reset(self, start_frame: int = 0) -> None:
        """Forget buffered frames; the next frame given is stream frame ``start_frame``
        (after a hole in the audio, frames restart at the hole's end)."""
        self._len = 0
        self._buf_start = start_frame
        self._emitted_end = start_frame

    @property
    def next_start_frame(self) -> int:
        """Stream frame index where the next patch starts."""
        return self._buf_start

    def _patch(self, offset: int, padded: int = 0) -> Patch:
        cfg = self.cfg
        start_frame = self._buf_start + offset
        data = np.array(self._buf[offset : offset + cfg.patch_frames])  # copy: buffer is reused
        real_frames = cfg.patch_frames - padded
        end_sample = (start_frame + real_frames - 1) * cfg.hop_length + cfg.win_length
        return Patch(
            data=data,
            start_frame=start_frame,
            start=start_frame * cfg.hop_length / cfg.sample_rate,
            end=end_sample / cfg.sample_rate,
            padded_frames=padded,
        )

    def process(self, frames: np.ndarray) -> list[Patch]:
        cfg = self.cfg
        k = frames.shape[0]
        if frames.ndim != 2 or frames.shape[1] != cfg.n_mels:
            raise ValueError(f"Patcher expects (k, {cfg.n_mels}) frames; got {frames.shape}")
        if self._len + k > self._buf.shape[0]:
            grown = np.zeros((self._len + k + cfg.patch_frames, cfg.n_mels), dtype=np.float32)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[self._len : self._len + k] = frames
        self._len += k
        patches = []
        offset = 0  # buffer offset of the next patch start (buffer always starts there)
        while offset + cfg.patch_frames <= self._len:
            patch = self._patch(offset)
            patches.append(patch)
            self._emitted_end = patch.start_frame + cfg.patch_frames
            offset += self.hop_frames
        if offset:
            keep = self._len - offset  # >= 0 because hop_frames <= patch_frames
            self._buf[:keep] = self._buf[offset : offset + keep]
            self._buf_start += offset
            self._len = keep
        return patches

    def flush(self) -> list[Patch]:
        """At stream end: one silence-padded patch if frames remain that no patch covered."""
        cfg = self.cfg
        stream_end = self._buf_start + self._len
        if self._len == 0 or stream_end <= self._emitted_end:
            return []
        padded = cfg.patch_frames - self._len
        self._buf[self._len : cfg.patch_frames] = self._silence
        patch = self._patch(0, padded)
        self._emitted_end = stream_end
        self._len = 0
        return [patch]
