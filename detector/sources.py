"""Audio sources: files, the microphone and raw PCM on stdin, all as float32 mono at one rate.

Every source follows :class:`Source`: ``read(max_samples)`` returns at most
``max_samples`` float32 mono samples at ``sample_rate`` (the front end's rate,
``FeatureConfig.sample_rate``); an *empty* array means "nothing yet, try again
later" (live sources), and ``None`` means the stream has ended. Sources count
what they lose (``dropped_samples``, ``overruns``, ``gaps``, ``gap_seconds``,
``nonfinite_samples``) and never fill a gap with invented audio.

``parse_source("mic:USB", 16000)``, ``parse_source("-", 16000)`` and
``parse_source("clip.flac", 16000)`` build the right source from a CLI string.
"""

from __future__ import annotations

import abc
import logging
import os
import time
from typing import Any, Literal

import numpy as np
import soundfile as sf

from detector.resample import StreamResampler

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "FileSource",
    "Source",
    "SourceError",
    "SourceState",
    "describe_format",
]

log = logging.getLogger(__name__)

SourceState = Literal["starting", "running", "reconnecting", "ended", "error"]

MIN_RATE = 1000
"""Lowest input sample rate accepted (Hz)."""
MAX_RATE = 384000
"""Highest input sample rate accepted (Hz)."""

_HEAD_BYTES = 16
"""How many leading bytes of an undecodable file to quote in the error."""


class SourceError(ValueError):
    """An audio source cannot be opened or read; the message says what was found and what works."""


def _khz(rate: float) -> str:
    """``44100 -> '44.1 kHz'``."""
    return f"{rate / 1000:g} kHz"


def _channels_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}-channel")


def describe_format(rate: int, channels: int, out_rate: int) -> str:
    """One line saying what was received and what it becomes, e.g. for the INFO log."""
    got = f"got {_khz(rate)} {_channels_name(channels)}"
    todo = []
    if rate != out_rate:
        todo.append(f"resampling to {_khz(out_rate)}")
    if channels != 1:
        todo.append("downmixing to mono")
    return got + ("; " + ", ".join(todo) if todo else "; no conversion needed")


def _check_rate(rate: int, what: str) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SourceError(
            f"{what}: sample rate {rate} Hz is outside the accepted {MIN_RATE}..{MAX_RATE} Hz"
        )


class Source(abc.ABC):
    """Common interface and counters of every audio source.

    Attributes:
        stream_id: name of the stream on the wire (``mic:<name>``, file basename, ``stdin``).
        sample_rate: output rate in Hz (what :meth:`read` returns).
        is_live: ``True`` when samples arrive in real time (an empty read is normal).
        state: ``starting``, ``running``, ``reconnecting``, ``ended`` or ``error``.
        message: human-readable detail about the state (``None`` when there is nothing to say).
        dropped_samples: input samples lost because the consumer was too slow.
        overruns: number of events in which samples were lost.
        gaps: number of interruptions of the input (device lost, ...).
        gap_seconds: total duration of those interruptions (seconds, wall clock).
        nonfinite_samples: NaN/Inf input samples replaced by 0.
    """

    is_live: bool = False

    def __init__(self, stream_id: str, sample_rate: int) -> None:
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate={sample_rate!r}: must be a positive integer (Hz)")
        self.stream_id = stream_id
        self.sample_rate = int(sample_rate)
        self.state: SourceState = "starting"
        self.message: str | None = None
        self.dropped_samples = 0
        self.overruns = 0
        self.gaps = 0
        self.gap_seconds = 0.0
        self.nonfinite_samples = 0

    def start(self) -> None:  # noqa: B027 - optional hook, a no-op for sources that need none
        """Begin capturing (live sources); a no-op where nothing needs starting."""

    @abc.abstractmethod
    def read(self, max_samples: int) -> np.ndarray | None:
        """Return up to ``max_samples`` float32 mono samples ``(n,)``; empty = later, ``None`` = ended."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file, device or thread; safe to call twice."""

    def stats(self) -> dict[str, Any]:
        """Counters and state as a JSON-ready dict (for status messages)."""
        return {
            "stream_id": self.stream_id,
            "state": self.state,
            "message": self.message,
            "sample_rate": self.sample_rate,
            "dropped_samples": self.dropped_samples,
            "overruns": self.overruns,
            "gaps": self.gaps,
            "gap_seconds": round(self.gap_seconds, 3),
            "nonfinite_samples": self.nonfinite_samples,
        }

    def _finite(self, x: np.ndarray) -> np.ndarray:
        """Replace NaN/Inf by 0 in place (counting them) and return ``x``."""
        bad = ~np.isfinite(x)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            if self.nonfinite_samples == 0:
                log.warning(
                    "%s: input contains NaN/Inf samples; replacing them by 0", self.stream_id
                )
            self.nonfinite_samples += n_bad
            x[bad] = 0.0
        return x

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- files


def _accepted_formats() -> str:
    names = sorted(sf.available_formats())
    return "formats libsndfile reads (" + ", ".join(names) + ")"


def _wav_data_shortfall(path: str, size: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE file, ``(declared, present)`` data bytes when the data chunk is cut short."""
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
                # 0 and 0xFFFFFFFF mean "unknown" (streamed WAV): not a truncation.
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                present = size - (pos + 8)
                return (chunk_size, present) if present < chunk_size else None
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


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
        if ext:
            kind += f" (not a {ext.upper()})"
    return SourceError(
        f"{path}: file ends after {size} bytes, starting with {kind}; libsndfile says "
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
        self._file = self._open(spath, allow_truncated)
        self.in_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        self._block = max(1, round(chunk_seconds * self.in_rate))
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
                        "repair it or pass allow_truncated=True"
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
        out = self._pending[:want].copy()
        self._pending = self._pending[want:]
        self._emitted += out.shape[0]
        return out

    def _fill(self) -> None:
        """Decode one block, convert it and append it to the pending output."""
        try:
            block = self._file.read(self._block, dtype="float32", always_2d=True)
        except sf.LibsndfileError as e:
            self.state = "error"
            self.message = f"decode error after {self._file.tell() / self.in_rate:.3f} s: {e}"
            raise SourceError(f"{self.path}: {self.message} (file truncated or corrupt)") from e
        if block.shape[0] == 0:
            self._eof = True
            tail = self._resampler.flush()
        else:
            mono = block[:, 0] if self.channels == 1 else block.mean(axis=1, dtype=np.float32)
            tail = self._resampler.process(self._finite(np.ascontiguousarray(mono)))
        if tail.shape[0]:
            self._pending = np.concatenate([self._pending, tail])

    def close(self) -> None:
        """Close the file."""
        if not self._file.closed:
            self._file.close()
        if self.state not in ("ended", "error"):
            self.state = "ended"
