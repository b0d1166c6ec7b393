"""Audio sources: files, the microphone and raw PCM on stdin, all as float32 mono at one rate.

The contract every source follows is :class:`detector.sources.base.Source`; one module
per kind: :mod:`detector.sources.file`, :mod:`detector.sources.mic`, :mod:`detector.sources.stdin`.

``parse_source("mic:USB", 16000)``, ``parse_source("-", 16000)``,
``parse_source("rtsp://cam.local/stream", 16000)`` and ``parse_source("clip.flac", 16000)``
build the right source from a CLI string (network URLs: :mod:`detector.sources.net`).
"""

from __future__ import annotations

from detector.sources.base import (
    MAX_RATE,
    MIN_RATE,
    Source,
    SourceError,
    SourceState,
    describe_format,
)
from detector.sources.file import FileSource
from detector.sources.mic import MicSource, list_devices
from detector.sources.net import NET_SCHEMES, NetSource, is_url
from detector.sources.stdin import StdinSource

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "NET_SCHEMES",
    "FileSource",
    "MicSource",
    "NetSource",
    "Source",
    "SourceError",
    "SourceState",
    "StdinSource",
    "describe_format",
    "is_live_spec",
    "list_devices",
    "parse_source",
]


def is_live_spec(spec: str, realtime: bool = False) -> bool:
    """Whether :func:`parse_source` makes a live source of ``spec`` (without opening it)."""
    text = spec.strip()
    if text == "mic" or text.startswith("mic:") or text in ("-", "stdin") or is_url(text):
        return True
    return realtime


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
    allow_truncated: bool = False,
) -> Source:
    """Build a source from a CLI string.

    ``mic``, ``mic:default``, ``mic:NAME_OR_INDEX`` -> :class:`MicSource`;
    ``-`` or ``stdin`` -> :class:`StdinSource`; ``rtsp://``, ``http://``, ... (any
    ``scheme://``; :data:`NET_SCHEMES` are accepted) -> :class:`NetSource`; anything else is a file path
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
    if is_url(text):
        return NetSource(text, sample_rate, ring_seconds=ring_seconds)
    return FileSource(
        spec, sample_rate, chunk_seconds=chunk_seconds, realtime=realtime,
        allow_truncated=allow_truncated,
    )
