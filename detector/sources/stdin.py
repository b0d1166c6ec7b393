"""Raw PCM on standard input (``arecord ... | sed-listen -``)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import numpy as np

from detector.sources.base import (
    Source,
    SourceError,
    _check_rate,
    describe_format,
)
from detector.sources.resample import StreamResampler
from detector.sources.ring import RingBuffer

__all__ = ['StdinSource']

log = logging.getLogger(__name__)

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
                if frames.dtype.kind == "f":  # NaN/Inf/huge values must not reach the downmix
                    frames = self._finite(frames.astype(np.float32))
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

