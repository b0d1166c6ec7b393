"""A preallocated single-producer / single-consumer float32 ring buffer.

The producer (typically a PortAudio callback thread or a stdin reader thread)
calls :meth:`RingBuffer.write`; the consumer (the pipeline loop) calls
:meth:`RingBuffer.read`. Storage is one ``float32`` array of ``capacity``
samples allocated in the constructor and never reallocated.

When the buffer is full, the *newest* samples that do not fit are dropped and
counted (``overruns`` counts the write calls that dropped something,
``dropped_samples`` the samples lost); samples already buffered are never
overwritten, so what the consumer reads is always a contiguous, in-order
prefix of what was written, with drops only at the points where ``overruns``
was incremented.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

__all__ = ["RingBuffer"]

log = logging.getLogger(__name__)


class RingBuffer:
    """Fixed-capacity FIFO of float32 samples, safe for one producer and one consumer thread.

    Args:
        capacity_samples: number of samples the buffer holds (> 0).
    """

    def __init__(self, capacity_samples: int) -> None:
        capacity = int(capacity_samples)
        if capacity <= 0:
            raise ValueError(f"capacity_samples={capacity_samples!r}: must be a positive integer")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._capacity = capacity
        self._lock = threading.Lock()
        # Monotonic counters of samples written / read; positions are taken modulo capacity.
        self._written = 0
        self._read = 0
        self.overruns = 0
        self.dropped_samples = 0

    @property
    def capacity(self) -> int:
        """Total number of samples the buffer can hold."""
        return self._capacity

    @property
    def available(self) -> int:
        """Number of samples ready to :meth:`read`."""
        with self._lock:
            return self._written - self._read

    @property
    def free(self) -> int:
        """Number of samples a :meth:`write` can take without dropping."""
        with self._lock:
            return self._capacity - (self._written - self._read)

    def write(self, x: np.ndarray) -> int:
        """Append samples; drop (and count) the newest ones that do not fit.

        Args:
            x: samples, shape ``(n,)``; any real dtype (converted to float32).
               A multi-dimensional array is flattened in C order.

        Returns:
            The number of samples actually stored (``<= n``).
        """
        data = np.asarray(x, dtype=np.float32).reshape(-1)
        n = data.shape[0]
        if n == 0:
            return 0
        with self._lock:
            free = self._capacity - (self._written - self._read)
            start = self._written % self._capacity
        # Copy outside the lock: only this (producer) thread moves _written, and the
        # consumer never reads beyond _written, so the free region is ours alone.
        take = min(n, free)
        if take > 0:
            first = min(take, self._capacity - start)
            self._buf[start : start + first] = data[:first]
            if take > first:
                self._buf[: take - first] = data[first:take]
        with self._lock:
            self._written += take
            if take < n:
                self.overruns += 1
                self.dropped_samples += n - take
        return take

    def read(self, max_n: int | None = None) -> np.ndarray:
        """Remove and return up to ``max_n`` of the oldest samples.

        Args:
            max_n: maximum number of samples to return; ``None`` means all available.

        Returns:
            A new float32 array of shape ``(k,)``, ``0 <= k <= max_n`` (possibly empty).
        """
        if max_n is not None and max_n < 0:
            raise ValueError(f"max_n={max_n}: must be >= 0 or None")
        with self._lock:
            avail = self._written - self._read
            start = self._read % self._capacity
        take = avail if max_n is None else min(avail, int(max_n))
        out = np.empty(take, dtype=np.float32)
        if take > 0:
            first = min(take, self._capacity - start)
            out[:first] = self._buf[start : start + first]
            if take > first:
                out[first:] = self._buf[: take - first]
        with self._lock:
            self._read += take
        return out

    def reset(self) -> None:
        """Discard buffered samples and zero the counters.

        Call only while no producer is writing (e.g. before a stream starts).
        """
        with self._lock:
            self._written = 0
            self._read = 0
            self.overruns = 0
            self.dropped_samples = 0
