"""Patching: log-mel frames -> overlapping ``patch_frames``-frame patches.

A patch starts every ``hop_frames`` frames. Frames are kept in one preallocated
buffer that holds at most the next patch plus the incoming block; after each call
only the frames a future patch still needs are kept.

With ``lead_in``, the first ``patch_frames`` frames of a stream are not waited for: every
``hop_frames`` of them from :data:`LEAD_IN_MIN_S` on also make a *lead-in* patch, the
audio so far at its end and silence before it. A sound already going on when a stream
starts is then heard after ~0.4 s, not only once a whole patch (0.96 s) has come. The
model is trained on such patches (``training.distill``'s late onsets: a patch whose sound
fills only its last 30-500 ms). Only at the start: after a hole (:meth:`Patcher.reset`),
which an overrun makes when the model is already behind, more patches a second would
only add to the load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.frontend.features import FeatureConfig

__all__ = ["LEAD_IN_MIN_S", "Patch", "Patcher"]

LEAD_IN_MIN_S = 0.4
"""Audio the first lead-in patch holds at least. From 0.1 s on, the default model opened
0.37-s "Music" events on 50 and 60 Hz hum at -20 dBFS right after the start (3 false onsets
in 4.5 h of noise beds at a 0.1 s hop, against 1 without lead-in); from 0.4 s on it opened
none more (0.2 s: 3, 0.3 s: 2, 0.5 s: 1), with the same onset latency p50 on the model card's
validation soundscapes (0.715 s at the live hop) from 0.1 to 0.5 s."""


@dataclass(frozen=True)
class Patch:
    """One model input. ``data`` is ``(patch_frames, n_mels)`` float32.

    ``start_frame`` is the stream frame index of its first frame; ``start``/``end``
    are stream seconds of the span it covers; ``padded_frames`` > 0 only for the
    final patch of a stream that ended mid-patch (padded with silence at the end);
    ``lead_frames`` > 0 only for a lead-in patch (silence at the start: its audio starts
    ``lead_frames`` frames after ``start``, which may be before the stream's start);
    ``audio_start`` is where its audio starts, in stream seconds (``start`` but for lead-in).
    """

    data: np.ndarray
    start_frame: int
    start: float
    end: float
    audio_start: float
    padded_frames: int = 0
    lead_frames: int = 0


class Patcher:
    """``process(frames (k, n_mels))`` -> list of :class:`Patch`; ``flush()`` at stream end.

    ``lead_in``: also the lead-in patches of the stream's first second (module docstring).
    """

    def __init__(self, cfg: FeatureConfig, hop_frames: int, lead_in: bool = False) -> None:
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
        # the first lead-in patch ends on the first hop boundary holding LEAD_IN_MIN_S of audio
        min_frames = round(LEAD_IN_MIN_S / cfg.frame_seconds)
        first = max(hop_frames, -(-min_frames // hop_frames) * hop_frames)
        self.reset()
        # frames of audio the next lead-in patch ends after (0: none to come)
        self._lead = first if lead_in and first < cfg.patch_frames else 0

    def reset(self, start_frame: int = 0) -> None:
        """Forget buffered frames; the next frame given is stream frame ``start_frame``
        (after a hole in the audio, frames restart at the hole's end)."""
        self._len = 0
        self._buf_start = start_frame
        self._emitted_end = start_frame
        self._lead = 0  # no lead-in after a hole (module docstring)

    @property
    def next_start_frame(self) -> int:
        """Stream frame index where the next patch starts."""
        return self._buf_start

    @property
    def next_end_frame(self) -> int:
        """Stream frame index just after the last frame the next patch needs."""
        return self._buf_start + (self._lead or self.cfg.patch_frames)

    def _lead_patch(self, frames: int) -> Patch:
        """The first ``frames`` frames since the start, silence before them."""
        cfg = self.cfg
        lead = cfg.patch_frames - frames
        data = np.empty((cfg.patch_frames, cfg.n_mels), dtype=np.float32)
        data[:lead] = self._silence
        data[lead:] = self._buf[:frames]
        return self._made(data, self._buf_start - lead, self._buf_start + frames - 1, lead=lead)

    def _patch(self, offset: int, padded: int = 0) -> Patch:
        start_frame = self._buf_start + offset
        data = np.array(self._buf[offset : offset + self.cfg.patch_frames])  # copy: buffer is reused
        return self._made(data, start_frame, start_frame + self.cfg.patch_frames - padded - 1, padded=padded)

    def _made(self, data: np.ndarray, start_frame: int, last_frame: int, padded: int = 0, lead: int = 0) -> Patch:
        """A :class:`Patch` of ``data`` from stream frame ``start_frame``; its audio ends with
        frame ``last_frame``."""
        cfg = self.cfg
        return Patch(
            data=data,
            start_frame=start_frame,
            start=start_frame * cfg.hop_length / cfg.sample_rate,
            end=(last_frame * cfg.hop_length + cfg.win_length) / cfg.sample_rate,
            audio_start=(start_frame + lead) * cfg.hop_length / cfg.sample_rate,
            padded_frames=padded,
            lead_frames=lead,
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
        while self._lead and self._lead <= self._len:  # lead-in patches (before any whole one)
            patches.append(self._lead_patch(self._lead))
            self._emitted_end = self._buf_start + self._lead
            self._lead += self.hop_frames
            if self._lead >= cfg.patch_frames:
                self._lead = 0
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
