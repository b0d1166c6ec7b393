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
import sys
import threading
import time
from typing import Any, Literal

import numpy as np
import soundfile as sf

from detector.resample import StreamResampler
from detector.ring import RingBuffer

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "FileSource",
    "MicSource",
    "Source",
    "SourceError",
    "SourceState",
    "StdinSource",
    "describe_format",
    "list_devices",
    "parse_source",
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
    mono = " mono" if channels != 1 else ""
    if rate != out_rate:
        return f"{got}; resampling to {_khz(out_rate)}{mono}"
    if channels != 1:
        return f"{got}; downmixing to mono"
    return f"{got}; no conversion needed"


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


_COMMON_FORMATS = ("WAV", "FLAC", "OGG", "MP3", "AIFF", "CAF", "W64", "RF64")
_SMALL_FILE_BYTES = 4096
"""Below this size an undecodable file is described as ending early."""


def _accepted_formats() -> str:
    have = sf.available_formats()
    common = [name for name in _COMMON_FORMATS if name in have]
    return ", ".join(common) + f" and the {len(have) - len(common)} other formats libsndfile reads"


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


# ---------------------------------------------------------------------------- microphone

_PA_LOCK = threading.Lock()
"""PortAudio is not thread-safe for opening/closing/querying; every such call holds this."""

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 1.0
_STALL_BLOCKS = 100
"""A stream that has delivered audio and then no callback for this many blocks
(and at least _STALL_MIN_S) is taken as lost; streams that end or fail are seen at once."""
_STALL_MIN_S = 2.0


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into a :class:`SourceError`."""
    try:
        import sounddevice
    except OSError as e:  # the Python package is there but libportaudio is not
        raise SourceError(
            f"microphone input needs the PortAudio library ({e}); install it with "
            "'apt-get install libportaudio2' (Debian/Ubuntu) or use --file PATH / '-' for stdin"
        ) from e
    return sounddevice


def _not_found(device: str | int | None, detail: str) -> SourceError:
    return SourceError(
        f"microphone {device if device is not None else 'default'!r} not available ({detail}); "
        "run 'sed-listen --list-devices' to see the input devices, or use --file PATH"
    )


def _is_default(device: str | int | None) -> bool:
    """``None``, ``""`` and ``"default"`` mean the system's default input device."""
    return device is None or (isinstance(device, str) and device.strip().lower() in ("", "default"))


def _resolve_device(sd: Any, device: str | int | None) -> dict[str, Any]:
    """PortAudio device info for ``None``/``'default'``, an index, or a (part of a) name."""
    try:
        if _is_default(device):
            info = sd.query_devices(kind="input")
        elif isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
            info = sd.query_devices(int(device))
        else:
            info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as e:
        if _is_default(device):
            n_in = sum(1 for d in sd.query_devices() if int(d["max_input_channels"]) > 0)
            detail = f"PortAudio reports no default input device; {n_in} input device(s) found"
        else:
            detail = str(e).strip() or "no such device"
        raise _not_found(device, detail) from e
    if int(info["max_input_channels"]) < 1:
        raise _not_found(device, f"device {info['index']} '{info['name']}' has no input channels")
    return dict(info)


def list_devices() -> str:
    """Human-readable table of input devices; the default one is marked with ``*``."""
    sd = _sounddevice()
    with _PA_LOCK:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        try:
            default = int(sd.query_devices(kind="input")["index"])
        except sd.PortAudioError:
            default = -1
    rows = [d for d in devices if int(d["max_input_channels"]) > 0]
    if not rows:
        return "no input devices found (is a microphone connected? is PulseAudio/PipeWire running?)"
    lines = ["  idx  ch  default rate  host API      name"]
    for d in rows:
        mark = "*" if d["index"] == default else " "
        api = hostapis[d["hostapi"]]["name"]
        lines.append(
            f"{mark} {d['index']:>3}  {d['max_input_channels']:>2}  "
            f"{_khz(d['default_samplerate']):>12}  {api:<12}  {d['name']}"
        )
    lines.append("(* = default; use mic:INDEX or mic:NAME)")
    return "\n".join(lines)


class MicSource(Source):
    """Live capture from a PortAudio input device through a ring buffer.

    The PortAudio callback thread writes mono float32 at the device rate into a
    :class:`RingBuffer` of ``ring_seconds``; :meth:`read` drains it and resamples
    to ``sample_rate`` when the device could not be opened at that rate.

    Device loss (stream error, stream finished, or no callback for a while) sets
    ``state = "reconnecting"``, counts a gap, and reopens the device in the
    background with exponential backoff (0.1 s doubling to 2 s); :meth:`read`
    never blocks on it and returns empty arrays meanwhile. The gap is measured
    (``gap_seconds``) and never filled with invented audio.

    Counters: ``overruns`` = PortAudio input overflows + ring-buffer overruns;
    ``dropped_samples`` is in *output-rate* samples.

    Args:
        device: ``None``/``"default"``, a PortAudio index, or part of a device name.
        sample_rate: output rate in Hz.
        block_seconds: PortAudio callback block (seconds).
        ring_seconds: how much audio the ring buffer holds if :meth:`read` falls behind.
        device_rate: capture at exactly this rate (Hz) instead of trying ``sample_rate``
            first and then the device's default rate.
    """

    is_live = True

    def __init__(
        self,
        device: str | int | None,
        sample_rate: int,
        block_seconds: float = 0.02,
        ring_seconds: float = 10.0,
        stream_id: str | None = None,
        device_rate: int | None = None,
    ) -> None:
        label = "default" if device is None or device == "" else str(device)
        super().__init__(stream_id or f"mic:{label}", sample_rate)
        if block_seconds <= 0 or ring_seconds < block_seconds:
            raise ValueError(
                f"block_seconds={block_seconds!r}, ring_seconds={ring_seconds!r}: "
                "need 0 < block_seconds <= ring_seconds"
            )
        if device_rate is not None:
            _check_rate(int(device_rate), f"mic:{label} device_rate")
        self.requested_rate = device_rate
        self.device = device
        self.block_seconds = block_seconds
        self.ring_seconds = ring_seconds
        self._sd = _sounddevice()
        with _PA_LOCK:
            self._info = _resolve_device(self._sd, device)
        self.device_name = str(self._info["name"])
        self.device_rate = self.sample_rate  # decided in _open
        self._channels = 1
        self._stream: Any = None
        self._ring: RingBuffer | None = None
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._pa_overflows = 0
        self._dropped_before = 0  # ring drops of streams already replaced (output-rate samples)
        self._overruns_before = 0
        self._lost = threading.Event()
        self._closed = threading.Event()
        self._last_callback = 0.0
        self._callbacks = 0
        self._first_callback = 0.0
        self._lost_at = 0.0
        self._gap_open = False
        self._reconnector: threading.Thread | None = None
        self._stall_s = max(_STALL_MIN_S, _STALL_BLOCKS * block_seconds)

    # -- opening -------------------------------------------------------------------

    def _choose_settings(self) -> tuple[int, int]:
        """(rate, channels) the device accepts: the output rate if possible, else its default."""
        sd = self._sd
        index = int(self._info["index"])
        max_ch = int(self._info["max_input_channels"])
        rates = [self.sample_rate, round(float(self._info["default_samplerate"]))]
        if self.requested_rate is not None:
            rates = [self.requested_rate]
        problems = []
        for rate in dict.fromkeys(rates):
            for ch in dict.fromkeys((1, min(2, max_ch), max_ch)):
                try:
                    sd.check_input_settings(index, channels=ch, samplerate=rate, dtype="float32")
                except (ValueError, sd.PortAudioError) as e:
                    problems.append(str(e))
                    continue
                return rate, ch
        tried = ", ".join(f"{r} Hz" for r in dict.fromkeys(rates))
        reasons = "; ".join(dict.fromkeys(problems))
        raise SourceError(
            f"microphone '{self.device_name}' cannot be opened at {tried} ({reasons}); "
            "run 'sed-listen --list-devices' or use --file PATH"
        )

    def _open(self) -> None:
        """Open and start a PortAudio stream; raises SourceError or PortAudioError."""
        sd = self._sd
        with _PA_LOCK:
            rate, channels = self._choose_settings()
            if self._ring is not None:
                self._dropped_before += self._to_out(self._ring.dropped_samples)
                self._overruns_before += self._ring.overruns
            self.device_rate, self._channels = rate, channels
            self._ring = RingBuffer(max(1, round(self.ring_seconds * rate)))
            self._resampler = StreamResampler(rate, self.sample_rate)
            self._lost.clear()
            self._callbacks = 0
            self._last_callback = time.monotonic()
            stream = sd.InputStream(
                samplerate=rate,
                blocksize=max(1, round(self.block_seconds * rate)),
                device=int(self._info["index"]),
                channels=channels,
                dtype="float32",
                callback=self._callback,
                finished_callback=self._lost.set,
            )
            stream.start()
            self._stream = stream
        log.info(
            "%s: opened '%s'; %s",
            self.stream_id,
            self.device_name,
            describe_format(rate, channels, self.sample_rate),
        )

    def _to_out(self, device_samples: int) -> int:
        return round(device_samples * self.sample_rate / self.device_rate)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: count overflows, downmix, append to the ring. Never blocks."""
        now = time.monotonic()
        if self._callbacks == 0:
            self._first_callback = now
        self._last_callback = now
        self._callbacks += 1
        if status.input_overflow:
            self._pa_overflows += 1
        ring = self._ring
        if ring is None:
            return
        ring.write(indata[:, 0] if indata.shape[1] == 1 else indata.mean(axis=1))

    def start(self) -> None:
        """Open the device; a device that cannot be opened raises :class:`SourceError`."""
        if self._stream is not None:
            return
        try:
            self._open()
        except self._sd.PortAudioError as e:
            self.state = "error"
            self.message = str(e)
            raise _not_found(self.device, f"cannot open '{self.device_name}': {e}") from e
        self.state = "running"
        self.message = None

    # -- loss and reconnection -----------------------------------------------------

    def _check_health(self) -> None:
        if self.state != "running":
            return
        stream = self._stream
        now = time.monotonic()
        reason = None
        if self._lost.is_set():
            reason = "stream stopped"
        elif stream is not None and not stream.active:
            reason = "stream no longer active"
        elif self._callbacks and now - self._last_callback > self._stall_s:
            reason = f"no audio callback for {now - self._last_callback:.1f} s"
        if reason is None:
            return
        self.gaps += 1
        self._lost_at = self._last_callback
        self.state = "reconnecting"
        self.message = f"device '{self.device_name}' lost ({reason}); reconnecting"
        log.warning("%s: %s", self.stream_id, self.message)
        # Emit what the resampler still holds, so audio before the gap is not lost.
        if self._resampler is not None:
            self._append(self._drain_ring())
            self._append(self._resampler.flush())
        self._reconnector = threading.Thread(
            target=self._reconnect, name=f"{self.stream_id}-reconnect", daemon=True
        )
        self._reconnector.start()

    def _reconnect(self) -> None:
        """Background thread: close the dead stream, then reopen with exponential backoff."""
        old, self._stream = self._stream, None
        if old is not None:
            with _PA_LOCK:
                try:
                    old.abort()
                    old.close()
                except self._sd.PortAudioError as e:
                    log.debug("%s: closing the lost stream: %s", self.stream_id, e)
        delay = _BACKOFF_START_S
        attempt = 0
        while not self._closed.is_set():
            attempt += 1
            try:
                self._open()
            except (SourceError, self._sd.PortAudioError) as e:
                self.message = (
                    f"device '{self.device_name}' lost; reopen attempt {attempt} failed ({e}); "
                    f"retrying in {delay:.1f} s"
                )
                log.debug("%s: %s", self.stream_id, self.message)
                if self._closed.wait(delay):
                    return
                delay = min(2 * delay, _BACKOFF_MAX_S)
                continue
            if self._closed.is_set():
                self._close_stream()
                return
            self._gap_open = True  # closed by the first callback of the new stream (in read)
            self.state = "running"
            self.message = f"device '{self.device_name}' reconnected after {attempt} attempt(s)"
            log.warning("%s: %s", self.stream_id, self.message)
            return

    # -- reading -------------------------------------------------------------------

    def _drain_ring(self) -> np.ndarray:
        ring, res = self._ring, self._resampler
        if ring is None or res is None:
            return np.zeros(0, dtype=np.float32)
        return res.process(self._finite(ring.read()))

    def _append(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self._pending = np.concatenate([self._pending, x]) if self._pending.shape[0] else x

    def read(self, max_samples: int) -> np.ndarray | None:
        """Up to ``max_samples`` float32 samples at ``sample_rate``; empty when none are ready.

        Returns ``None`` only after :meth:`close`.
        """
        if max_samples <= 0:
            raise ValueError(f"max_samples={max_samples!r}: must be > 0")
        if self._closed.is_set():
            return None
        if self.state == "starting":
            self.start()
        self._check_health()
        if self.state == "running":
            if self._gap_open and self._callbacks:
                # The gap lasts from the last callback before the loss to the first after it.
                self.gap_seconds += self._first_callback - self._lost_at
                self._gap_open = False
            self._append(self._drain_ring())
        self._update_counters()
        out = self._pending[:max_samples].copy()
        self._pending = self._pending[max_samples:]
        return out

    def _update_counters(self) -> None:
        ring = self._ring
        ring_drops = self._to_out(ring.dropped_samples) if ring is not None else 0
        ring_overruns = ring.overruns if ring is not None else 0
        self.dropped_samples = self._dropped_before + ring_drops
        self.overruns = self._pa_overflows + self._overruns_before + ring_overruns

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with _PA_LOCK:
            try:
                stream.abort()
                stream.close()
            except self._sd.PortAudioError as e:
                log.debug("%s: closing stream: %s", self.stream_id, e)

    def close(self) -> None:
        """Stop capturing and release the device (also stops a pending reconnection)."""
        self._closed.set()
        if self._reconnector is not None and self._reconnector is not threading.current_thread():
            self._reconnector.join(timeout=_BACKOFF_MAX_S + 1.0)
        self._close_stream()
        self.state = "ended"


# ---------------------------------------------------------------------------- stdin

_STDIN_FORMATS: dict[str, tuple[str, float]] = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}
_STDIN_READ_BYTES = 1 << 14


class StdinSource(Source):
    """Raw little-endian PCM from a byte stream (stdin by default), ended by EOF.

    A reader thread moves bytes into a ring buffer (at ``in_rate``, mono), waiting
    when it is full rather than dropping (a pipe applies back-pressure to its
    writer), so :meth:`read` never blocks.

    Args:
        sample_rate: output rate in Hz.
        in_rate: rate of the incoming PCM in Hz.
        channels: interleaved channels of the incoming PCM (downmixed by mean).
        fmt: ``"s16le"`` (signed 16-bit) or ``"f32le"`` (32-bit float).
        stream: binary stream to read; default ``sys.stdin.buffer``.
        ring_seconds: buffered audio between the reader thread and :meth:`read`.
    """

    is_live = True

    def __init__(
        self,
        sample_rate: int,
        in_rate: int = 16000,
        channels: int = 1,
        fmt: str = "s16le",
        stream: Any = None,
        ring_seconds: float = 10.0,
        stream_id: str = "stdin",
    ) -> None:
        super().__init__(stream_id, sample_rate)
        if fmt not in _STDIN_FORMATS:
            raise SourceError(
                f"stdin format {fmt!r} not supported; accepted: {list(_STDIN_FORMATS)}"
            )
        _check_rate(int(in_rate), "stdin")
        if int(channels) < 1:
            raise SourceError(f"stdin: channels={channels!r}, need at least 1")
        self.in_rate, self.channels, self.fmt = int(in_rate), int(channels), fmt
        self._dtype, self._scale = _STDIN_FORMATS[fmt]
        self._frame_bytes = np.dtype(self._dtype).itemsize * self.channels
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._ring = RingBuffer(max(1, round(ring_seconds * self.in_rate)))
        self._resampler = StreamResampler(self.in_rate, self.sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._eof = threading.Event()
        self._space = threading.Condition()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.trailing_bytes = 0
        log.info(
            "%s: raw %s PCM; %s",
            self.stream_id,
            fmt,
            describe_format(self.in_rate, self.channels, self.sample_rate),
        )

    def start(self) -> None:
        """Start the reader thread (also done by the first :meth:`read`)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._reader, name="stdin-reader", daemon=True)
        self._thread.start()
        self.state = "running"

    def _reader(self) -> None:
        read = getattr(self._stream, "read1", self._stream.read)
        carry = b""
        try:
            while not self._closed.is_set():
                data = read(_STDIN_READ_BYTES)
                if not data:
                    break
                data = carry + data
                usable = len(data) - len(data) % self._frame_bytes
                carry = data[usable:]
                if usable == 0:
                    continue
                frames = np.frombuffer(data[:usable], dtype=self._dtype).reshape(-1, self.channels)
                mono = frames.mean(axis=1, dtype=np.float32) / np.float32(self._scale)
                self._put(mono)
        except (OSError, ValueError) as e:
            self.message = f"reading stdin failed: {e}"
            log.error("%s: %s", self.stream_id, self.message)
        self.trailing_bytes = len(carry)
        if carry:
            log.warning(
                "%s: %d trailing bytes at EOF do not make a whole %d-byte frame; ignored",
                self.stream_id,
                len(carry),
                self._frame_bytes,
            )
        self._eof.set()

    def _put(self, x: np.ndarray) -> None:
        """Write all of ``x``, waiting for space (back-pressure) instead of dropping."""
        while x.shape[0] and not self._closed.is_set():
            n = min(x.shape[0], self._ring.free)
            if n:
                self._ring.write(x[:n])
                x = x[n:]
            else:
                with self._space:
                    self._space.wait(timeout=0.05)

    def read(self, max_samples: int) -> np.ndarray | None:
        """Up to ``max_samples`` float32 samples; empty when none are ready; ``None`` at EOF."""
        if max_samples <= 0:
            raise ValueError(f"max_samples={max_samples!r}: must be > 0")
        if self._thread is None:
            self.start()
        eof = self._eof.is_set()  # checked before draining, so nothing written after is missed
        raw = self._ring.read()
        with self._space:
            self._space.notify()
        if raw.shape[0]:
            out = self._resampler.process(self._finite(raw))
            if out.shape[0]:
                self._pending = np.concatenate([self._pending, out])
        if eof and self.state == "running":
            tail = self._resampler.flush()
            self._pending = np.concatenate([self._pending, tail])
            self.state = "ended"
            self.message = self.message or "end of input"
        if self.state == "ended" and self._pending.shape[0] == 0:
            return None
        out = self._pending[:max_samples].copy()
        self._pending = self._pending[max_samples:]
        return out

    def close(self) -> None:
        """Stop the reader thread (it may stay blocked in a read until stdin closes)."""
        self._closed.set()
        with self._space:
            self._space.notify_all()
        self.state = "ended"


# ---------------------------------------------------------------------------- parsing


def parse_source(
    spec: str,
    sample_rate: int,
    *,
    realtime: bool = False,
    stdin_rate: int = 16000,
    stdin_channels: int = 1,
    stdin_format: str = "s16le",
    block_seconds: float = 0.02,
    ring_seconds: float = 10.0,
    chunk_seconds: float = 0.5,
) -> Source:
    """Build a source from a CLI string.

    ``mic``, ``mic:default``, ``mic:NAME_OR_INDEX`` -> :class:`MicSource`;
    ``-`` or ``stdin`` -> :class:`StdinSource`; anything else is a file path
    (:class:`FileSource`, paced to the wall clock when ``realtime``).
    """
    text = spec.strip()
    if text == "mic" or text.startswith("mic:"):
        device = text[4:] if text.startswith("mic:") else ""
        return MicSource(
            device or None, sample_rate, block_seconds=block_seconds, ring_seconds=ring_seconds
        )
    if text in ("-", "stdin"):
        return StdinSource(
            sample_rate, in_rate=stdin_rate, channels=stdin_channels, fmt=stdin_format
        )
    return FileSource(spec, sample_rate, chunk_seconds=chunk_seconds, realtime=realtime)
