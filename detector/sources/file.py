"""Audio files of any rate and channel count, read in blocks and resampled to 16 kHz mono."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import soundfile as sf

from detector.sources.base import (
    Source,
    SourceError,
    _check_rate,
    describe_format,
)
from detector.sources.resample import StreamResampler

__all__ = ['FileSource']

log = logging.getLogger(__name__)

_HEAD_BYTES = 16
"""How many leading bytes of an undecodable file to quote in the error."""

_COMMON_FORMATS = ("WAV", "FLAC", "OGG", "MP3", "AIFF", "CAF", "W64", "RF64")
_FAST_BLOCK_S = 4.0
"""Seconds decoded per block when a file is not paced to the wall clock."""
_REPLAY_BLOCK_S = 1.0
"""... and when it is (a real-time replay holds at most this much decoded audio)."""
_SMALL_FILE_BYTES = 4096
"""Below this size an undecodable file is described as ending early."""
_PCM16_SCALE = np.float32(1.0 / 32768.0)
"""16-bit PCM to float: x / 32768, bit for bit libsndfile's conversion."""


def _accepted_formats() -> str:
    have = sf.available_formats()
    common = [name for name in _COMMON_FORMATS if name in have]
    return ", ".join(common) + f" and the {len(have) - len(common)} other formats libsndfile reads"


def _wav_data_chunk(path: str, size: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE file of ``size`` bytes, ``(offset, declared size)`` of its data chunk's
    samples; ``None`` for any other file or one without a data chunk."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            chunk_size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return pos + 8, chunk_size
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _unknown_size(declared: int) -> bool:
    """0 and 0xFFFFFFFF mean "unknown" (a streamed WAV): the data runs to the end of the file."""
    return declared in (0, 0xFFFFFFFF)


def _wav_data_shortfall(path: str, size: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE file, ``(declared, present)`` data bytes when the data chunk is cut short."""
    data = _wav_data_chunk(path, size)
    if data is None or _unknown_size(data[1]):
        return None
    start, declared = data
    present = size - start
    return (declared, present) if present < declared else None


def _pcm16_wav_data(path: str, f: sf.SoundFile) -> tuple[int, int] | None:
    """``(byte offset, frames)`` of the samples of a little-endian 16-bit PCM WAV, to be read
    with ``os.preadv`` (no libsndfile call per block); ``None`` for any other file, or
    where the header and libsndfile disagree on the length (libsndfile then reads it)."""
    if f.format != "WAV" or f.subtype != "PCM_16" or not hasattr(os, "preadv"):
        return None
    size = os.path.getsize(path)
    data = _wav_data_chunk(path, size)
    if data is None:
        return None
    start, declared = data
    present = size - start
    frames = (present if _unknown_size(declared) else min(declared, present)) // (2 * f.channels)
    return (start, frames) if frames == f.frames else None


def _open_error(path: str, size: int, exc: Exception) -> SourceError:
    """Turn a libsndfile open failure into a message saying what was received."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    detail = str(exc).split(": ", 1)[-1].strip()
    if head[:4] == b"RIFF":
        kind = "a RIFF/WAV header"
    elif head[:4] == b"fLaC":
        kind = "a FLAC header"
    elif head[:4] == b"OggS":
        kind = "an Ogg header"
    else:
        kind = f"bytes {head[:_HEAD_BYTES]!r}, no known audio header"
        if ext.upper() in sf.available_formats() or ext in ("wav", "mp3", "ogg", "flac"):
            kind += f": not a {ext.upper()}"
    where = f"file ends after {size} bytes" if size < _SMALL_FILE_BYTES else f"{size}-byte file"
    return SourceError(
        f"{path}: cannot decode: {where}, starting with {kind}; libsndfile says "
        f"'{detail}'. Accepted: {_accepted_formats()}"
    )


class FileSource(Source):
    """An audio file read in blocks, downmixed to mono and resampled to ``sample_rate``.

    Memory stays constant whatever the file length: at most one block of
    ``chunk_seconds`` of input plus the samples of one :meth:`read` are held.

    Args:
        path: any file libsndfile reads (WAV 8/16/24/32-bit int or float, FLAC, OGG, ...).
        sample_rate: output rate in Hz.
        chunk_seconds: input read from disk per block (seconds).
        realtime: pace reads to the wall clock (replay): :meth:`read` then returns only
            the samples whose time has come, possibly none, like a live source.
        allow_truncated: read a WAV whose data chunk is shorter than its header says
            (otherwise that is a :class:`SourceError`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        chunk_seconds: float = 0.5,
        realtime: bool = False,
        allow_truncated: bool = False,
        stream_id: str | None = None,
    ) -> None:
        spath = os.fspath(path)
        super().__init__(stream_id or os.path.basename(spath) or spath, sample_rate)
        if chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds={chunk_seconds!r}: must be > 0")
        self.path = spath
        self.realtime = realtime
        self.is_live = realtime
        self.paced = realtime
        self._file = self._open(spath, allow_truncated)
        self.in_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        # Fewer, larger libsndfile calls (each costs ~40 us of overhead); same samples.
        block_s = max(chunk_seconds, _REPLAY_BLOCK_S if realtime else _FAST_BLOCK_S)
        self._block = max(1, round(block_s * self.in_rate))
        self._pcm16 = self._file.subtype == "PCM_16"
        self._int16 = np.empty((self._block, self.channels), dtype=np.int16) if self._pcm16 else None
        # 16-bit PCM WAV (most recordings): blocks read straight from the file into
        # _int16 (os.preadv), ~3 us against ~15 us of libsndfile's Python wrapper per block,
        # which is most of a replayed stream's reading (sed-bench's streams).
        self._direct = _pcm16_wav_data(spath, self._file) if self._pcm16 else None
        self._direct_fd = os.open(spath, os.O_RDONLY) if self._direct is not None else -1
        self._direct_frame = 0
        self._resampler = StreamResampler(self.in_rate, self.sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._eof = False
        self._emitted = 0
        self._t0: float | None = None
        self.state = "running"
        log.info(
            "%s: %s %s, %.2f s; %s",
            self.stream_id,
            self._file.format,
            self._file.subtype,
            self.duration,
            describe_format(self.in_rate, self.channels, self.sample_rate),
        )
        if self._direct is not None:
            self._file.close()  # one descriptor a stream: the direct reads need no libsndfile handle

    @property
    def duration(self) -> float:
        """Length of the file in seconds."""
        return self.frames / self.in_rate

    @staticmethod
    def _open(path: str, allow_truncated: bool) -> sf.SoundFile:
        if not os.path.exists(path):
            raise SourceError(
                f"{path}: no such file (give an audio file path, 'mic[:DEVICE]' or '-' for stdin)"
            )
        if os.path.isdir(path):
            raise SourceError(f"{path}: is a directory, expected an audio file")
        try:
            with open(path, "rb"):
                pass
        except PermissionError as e:
            raise SourceError(f"{path}: no permission to read this file") from e
        except OSError as e:
            raise SourceError(f"{path}: cannot open: {e.strerror}") from e
        size = os.path.getsize(path)
        if size == 0:
            raise SourceError(
                f"{path}: file is empty (0 bytes), expected audio: {_accepted_formats()}"
            )
        try:
            f = sf.SoundFile(path)
        except sf.LibsndfileError as e:
            raise _open_error(path, size, e) from e
        try:
            if f.channels < 1:
                raise SourceError(f"{path}: file has {f.channels} channels, need at least 1")
            _check_rate(int(f.samplerate), path)
            if f.format == "WAV":
                short = _wav_data_shortfall(path, size)
                if short is not None and not allow_truncated:
                    declared, present = short
                    raise SourceError(
                        f"{path}: truncated WAV: header declares {declared} data bytes but the "
                        f"file holds {present} ({f.frames / f.samplerate:.3f} s readable); "
                        "repair it, or pass --allow-truncated to read the part that is there"
                    )
        except SourceError:
            f.close()
            raise
        return f

    def read(self, max_samples: int) -> np.ndarray | None:
        """Up to ``max_samples`` float32 samples ``(n,)`` at ``sample_rate``; ``None`` after the end."""
        if max_samples <= 0:
            raise ValueError(f"max_samples={max_samples!r}: must be > 0")
        if self.state in ("ended", "error") and self._pending.shape[0] == 0:
            return None
        want = max_samples
        if self.realtime:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = int((now - self._t0) * self.sample_rate) - self._emitted
            want = min(want, max(0, due))
        while self._pending.shape[0] < want and not self._eof:
            self._fill()
        if self._eof and self._pending.shape[0] == 0:
            self.state = "ended"
            self.message = "end of file"
            return None
        # A view: the decoded blocks are never written after they are made (no copy).
        out = self._pending[:want]
        self._pending = self._pending[want:]
        self._emitted += out.shape[0]
        return out

    def _fill(self) -> None:
        """Decode one block, convert it and append it to the pending output."""
        try:
            if self._pcm16:
                # 16-bit PCM (most recordings): decoded as int16 into one reused buffer and
                # scaled here, bit for bit libsndfile's float conversion (x / 32768) at a
                # quarter of its cost (no float array allocated per block).
                got = self._read_direct() if self._direct is not None else self._file.read(
                    self._block, dtype="int16", always_2d=True, out=self._int16)
                if got.shape[0] and self.channels == 1 and self._resampler.passthrough:
                    self._append_pcm16(got[:, 0])
                    return
                block = got.astype(np.float32)
                block *= _PCM16_SCALE
            else:
                block = self._file.read(self._block, dtype="float32", always_2d=True)
        except sf.LibsndfileError as e:
            self.state = "error"
            self.message = f"decode error after {self._file.tell() / self.in_rate:.3f} s: {e}"
            raise SourceError(f"{self.path}: {self.message} (file truncated or corrupt)") from e
        if block.shape[0] == 0:
            self._eof = True
            tail = self._resampler.flush()
        else:
            mono = np.ascontiguousarray(block[:, 0] if self.channels == 1 else block.mean(axis=1, dtype=np.float32))
            if not self._pcm16:  # (16-bit integers scaled into +-1 are always finite and in range)
                mono = self._finite(mono)
            tail = self._resampler.process(mono, owned=True)  # a fresh block, never written again
        if tail.shape[0]:
            self._pending = np.concatenate([self._pending, tail])

    def _append_pcm16(self, samples: np.ndarray) -> None:
        """16-bit mono at the output rate (the usual recording): converted straight into the
        new pending buffer behind what is left of the old one, without the float block and
        the concatenation (two of the three copies of a replayed stream's audio)."""
        keep = self._pending.shape[0]
        buf = np.empty(keep + samples.shape[0], dtype=np.float32)
        buf[:keep] = self._pending
        new = buf[keep:]
        new[...] = samples  # int16 -> float32, exact
        new *= _PCM16_SCALE
        self._resampler.process(new, owned=True)  # equal rates: counted, returned as it is
        self._pending = buf  # the old buffer's views, already read, are never written

    def _read_direct(self) -> np.ndarray:
        """The next block of a 16-bit PCM WAV's samples, ``(n, channels)`` int16 (a view of
        ``_int16``): the frames libsndfile would give, bit for bit (``tests/test_sources.py``)."""
        assert self._direct is not None and self._int16 is not None
        start, frames = self._direct
        want = min(self._block, frames - self._direct_frame)
        if want <= 0:
            return self._int16[:0]
        frame_bytes = 2 * self.channels
        buf = self._int16[:want].view(np.uint8).reshape(-1)
        try:
            got = os.preadv(self._direct_fd, [buf.data], start + self._direct_frame * frame_bytes) // frame_bytes
        except OSError as e:
            self.state = "error"
            self.message = f"read error after {self._direct_frame / self.in_rate:.3f} s: {e.strerror or e}"
            raise SourceError(f"{self.path}: {self.message}") from e
        self._direct_frame += got  # fewer than asked only if the file was cut short meanwhile
        return self._int16[:got]

    def close(self) -> None:
        """Close the file."""
        if not self._file.closed:
            self._file.close()
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1
        if self.state not in ("ended", "error"):
            self.state = "ended"


# ---------------------------------------------------------------------------- microphone

