"""The microphone: sounddevice (PortAudio) capture into a ring buffer, with reconnection.

Finding the device (and ``--list-devices``) is :mod:`detector.sources.devices`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from detector.sources.base import (
    Source,
    SourceError,
    _check_rate,
    describe_format,
)
from detector.sources.devices import (
    PA_LOCK,
    device_not_found,
    import_sounddevice,
    list_devices,
    resolve_device,
)
from detector.sources.resample import StreamResampler
from detector.sources.ring import RingBuffer

__all__ = ["MicSource", "list_devices"]  # list_devices from .devices

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 1.0
_STALL_BLOCKS = 100
"""A stream that has delivered audio and then no callback for this many blocks
(and at least _STALL_MIN_S) is taken as lost; streams that end or fail are seen at once."""
_STALL_MIN_S = 2.0


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
    paced = True

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
        self._sd = import_sounddevice()
        with PA_LOCK:
            self._info = resolve_device(self._sd, device)
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
        with PA_LOCK:
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
            raise device_not_found(self.device, f"cannot open '{self.device_name}': {e}") from e
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
            with PA_LOCK:
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
            self.reconnects += 1
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
        with PA_LOCK:
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

