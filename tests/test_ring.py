"""RingBuffer: order, wraparound, drop-newest accounting, one producer + one consumer thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from detector.sources.ring import RingBuffer


def test_fifo_and_wraparound() -> None:
    rb = RingBuffer(8)
    buf_id = id(rb._buf)
    assert rb.available == 0 and rb.read(5).shape == (0,)
    assert rb.write(np.arange(5)) == 5
    np.testing.assert_array_equal(rb.read(3), [0, 1, 2])
    assert rb.write(np.arange(5, 11)) == 6  # wraps: positions 5..7 then 0..2
    assert rb.available == 8 and rb.free == 0
    out = rb.read()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(3, 11))
    for start in range(0, 100, 3):  # many wraps with odd sizes
        assert rb.write(np.arange(start, start + 3)) == 3
        np.testing.assert_array_equal(rb.read(3), np.arange(start, start + 3))
    assert id(rb._buf) == buf_id and rb._buf.shape == (8,)
    assert rb.overruns == 0 and rb.dropped_samples == 0


def test_full_drops_newest_and_counts() -> None:
    rb = RingBuffer(4)
    assert rb.write(np.array([1, 2, 3])) == 3
    assert rb.write(np.array([4, 5, 6])) == 1  # 5, 6 dropped
    assert rb.write(np.array([7])) == 0
    assert (rb.overruns, rb.dropped_samples) == (2, 3)
    np.testing.assert_array_equal(rb.read(10), [1, 2, 3, 4])
    rb.write(np.array([8.0]))
    rb.reset()
    assert (rb.available, rb.overruns, rb.dropped_samples) == (0, 0, 0)


def test_read_returns_copy_and_validates() -> None:
    rb = RingBuffer(4)
    rb.write(np.ones(4))
    out = rb.read(2)
    out[:] = 7
    np.testing.assert_array_equal(rb.read(2), [1, 1])
    rb.write(np.zeros((2, 2)))  # flattened
    assert rb.available == 4
    with pytest.raises(ValueError, match="positive"):
        RingBuffer(0)
    with pytest.raises(ValueError, match="max_n"):
        rb.read(-1)


def test_threaded_producer_consumer_loses_nothing_silently() -> None:
    """Every sample arrives in order, or is counted as dropped; gaps only at overruns."""
    rb = RingBuffer(1000)
    n_blocks, block = 2000, 64
    stored: list[int] = []  # per write: samples stored

    def produce() -> None:
        for i in range(n_blocks):
            stored.append(rb.write(np.arange(i * block, (i + 1) * block, dtype=np.float32)))
            if i % 50 == 0:
                time.sleep(0.001)

    t = threading.Thread(target=produce)
    t.start()
    got = []
    rng = np.random.default_rng(0)
    while t.is_alive() or rb.available:
        got.append(rb.read(int(rng.integers(1, 300))))
        if rng.random() < 0.05:
            time.sleep(0.002)  # a slow consumer forces some overruns
    t.join()
    got.append(rb.read())
    out = np.concatenate(got).astype(np.int64)
    total = n_blocks * block
    assert out.shape[0] + rb.dropped_samples == total
    assert rb.overruns == sum(1 for s in stored if s < block)
    # What arrived is exactly, in order, the stored prefix of each written block.
    expected = np.concatenate([np.arange(i * block, i * block + s) for i, s in enumerate(stored)])
    np.testing.assert_array_equal(out, expected)
