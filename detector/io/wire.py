"""The wire format shared by ``sed-listen``, ``sed-monitor`` and ``sed-hub``.

ZeroMQ multipart messages ``[topic, JSON]``, UTF-8, JSON only (never pickle).

Topics:
    ``event.<label>``   onset / update / offset of a sound event
    ``scores.<stream>`` top-k smoothed scores at each patch hop
    ``status.<stream>`` level, real-time factor, drops, latency, state

Every message carries the envelope fields of :func:`envelope`. This module imports
nothing but the standard library so consumers (the dashboard) stay light.
See ``docs/wire.md`` for the full schema with examples.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "DEFAULT_ENDPOINT",
    "SCHEMA_VERSION",
    "WireError",
    "decode",
    "encode",
    "envelope",
    "topic_for",
]

SCHEMA_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"
KINDS = ("event", "scores", "status")
ENVELOPE_FIELDS = ("schema", "type", "stream", "seq", "session", "wall_time", "stream_time")


class WireError(ValueError):
    """A message that is not a valid sed wire message."""


def envelope(
    kind: str, stream: str, seq: int, session: str, wall_time: float, stream_time: float
) -> dict[str, Any]:
    """The fields every message carries.

    ``seq`` counts the messages of one stream in one daemon session, from 0, so a
    subscriber sees gaps; ``session`` changes when the daemon restarts.
    ``wall_time`` is Unix seconds; ``stream_time`` is seconds of audio since the
    stream started.
    """
    if kind not in KINDS:
        raise WireError(f"message type {kind!r}; accepted: {list(KINDS)}")
    return {
        "schema": SCHEMA_VERSION,
        "type": kind,
        "stream": stream,
        "seq": seq,
        "session": session,
        "wall_time": round(wall_time, 6),
        "stream_time": round(stream_time, 6),
    }


def topic_for(message: dict[str, Any]) -> str:
    """``event.<label>`` for events, ``<type>.<stream>`` otherwise."""
    if message["type"] == "event":
        return f"event.{message['label']}"
    return f"{message['type']}.{message['stream']}"


_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""``json.dumps(m, separators=(",", ":"), allow_nan=False)`` builds this encoder anew at every call."""


def encode(message: dict[str, Any]) -> list[bytes]:
    """Message -> ``[topic, json]`` frames."""
    return [topic_for(message).encode("utf-8"), _JSON.encode(message).encode("utf-8")]


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """``[topic, json]`` frames -> (topic, message), validating the envelope."""
    if len(frames) != 2:
        raise WireError(f"expected 2 frames [topic, json]; got {len(frames)}")
    try:
        topic = frames[0].decode("utf-8")
        message = json.loads(frames[1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"undecodable message: {e}") from e
    if not isinstance(message, dict):
        raise WireError(f"message body is {type(message).__name__}; expected a JSON object")
    missing = [k for k in ENVELOPE_FIELDS if k not in message]
    if missing:
        raise WireError(f"message lacks envelope field(s) {missing}")
    if message["schema"] != SCHEMA_VERSION:
        raise WireError(f"schema {message['schema']!r}; this reader understands {SCHEMA_VERSION}")
    if message["type"] not in KINDS:
        raise WireError(f"message type {message['type']!r}; accepted: {list(KINDS)}")
    return topic, message
