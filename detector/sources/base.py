"""The source contract shared by every audio input: :class:`Source`, :class:`SourceError`.

Every source follows :class:`Source`: ``read(max_samples)`` returns at most
``max_samples`` float32 mono samples at ``sample_rate`` (the front end's rate,
``FeatureConfig.sample_rate``); an *empty* array means "nothing yet, try again
later" (live sources), and ``None`` means the stream has ended. Sources count
what they lose (``dropped_samples``, ``overruns``, ``gaps``, ``gap_seconds``,
``nonfinite_samples``) and never fill a gap with invented audio.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Literal

import numpy as np

__all__ = [
    "MAX_ABS_SAMPLE",
    "MAX_RATE",
    "MIN_RATE",
    "Source",
    "SourceError",
    "SourceState",
    "describe_format",
    "peak_abs",
    "sanitize",
]

log = logging.getLogger(__name__)

SourceState = Literal["starting", "running", "reconnecting", "ended", "error"]

MIN_RATE = 1000
"""Lowest input sample rate accepted (Hz)."""
MAX_RATE = 384000
"""Highest input sample rate accepted (Hz)."""
MAX_ABS_SAMPLE = 1000.0
"""Largest sample magnitude taken as audio. Float audio is nominally within +-1 (integer
PCM is scaled into it); a hot float signal may exceed that a little, but a sample 60 dB
over full scale is not audio (random bytes read as ``f32le`` give values up to 3e38,
which overflow the level and spectrum arithmetic). Such samples are replaced by 0 and
counted with the NaN/Inf ones in ``nonfinite_samples``."""


def peak_abs(x: np.ndarray) -> float:
    """``max |x|`` without a temporary array (two reductions); NaN if ``x`` holds a NaN, 0 if empty."""
    if x.size == 0:
        return 0.0
    # The ufuncs' own reductions (ndarray.max/min add ~1 us of Python each, per stream and
    # hop); both are NaN when x holds a NaN, so the builtin max keeps it.
    return float(max(np.maximum.reduce(x, axis=None), -np.minimum.reduce(x, axis=None)))


def sanitize(x: np.ndarray) -> int:
    """Replace NaN, Inf and ``|x| > MAX_ABS_SAMPLE`` by 0 in place; return how many."""
    if peak_abs(x) <= MAX_ABS_SAMPLE:  # the usual case: nothing to replace, nothing allocated
        return 0
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x) <= MAX_ABS_SAMPLE)  # NaN compares False, so it is caught too
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        x[bad] = 0.0
    return n_bad



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
        reconnects: interruptions after which the input came back (device reopened,
            network stream reconnected).
        nonfinite_samples: NaN/Inf or out-of-range (``|x| > MAX_ABS_SAMPLE``) input
            samples replaced by 0.
    """

    is_live: bool = False
    #: Audio arrives at the real-time rate (a capture device, a paced replay): the
    #: pipeline then sleeps until a source's next patch is due instead of polling it.
    paced: bool = False

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
        self.reconnects = 0
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
            "reconnects": self.reconnects,
            "nonfinite_samples": self.nonfinite_samples,
        }

    def _finite(self, x: np.ndarray) -> np.ndarray:
        """Replace NaN/Inf and out-of-range samples by 0 in place (counting them); return ``x``.

        Done before resampling, so one bad sample does not spread to its neighbours.
        """
        n_bad = sanitize(x)
        if n_bad:
            if self.nonfinite_samples == 0:
                log.warning(
                    "%s: input contains NaN/Inf or out-of-range (|x| > %g) samples; "
                    "replacing them by 0", self.stream_id, MAX_ABS_SAMPLE,
                )
            self.nonfinite_samples += n_bad
        return x

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- files


