"""A tiny Standard MIDI File writer: format 0, one track, notes on one channel.

Enough for :mod:`training.corpus.soundfont` to hand fluidsynth a phrase: a tempo
meta event, a program change, note on/off pairs and an end-of-track event placed after
the last note so that release tails are rendered. Times are in ticks
(:data:`TICKS_PER_QUARTER` per quarter note); the tempo is microseconds per quarter.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DRUM_CHANNEL", "TICKS_PER_QUARTER", "Note", "encode_varlen", "write_midi"]

TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9  # 0-based; "channel 10" in General MIDI
_NOTE_OFF, _NOTE_ON, _PROGRAM = 0x80, 0x90, 0xC0
_MAX_TEMPO_US = 0xFFFFFF


@dataclass(frozen=True)
class Note:
    """One note: start and length in ticks, MIDI pitch 0-127, velocity 1-127."""

    start: int
    length: int
    pitch: int
    velocity: int


def encode_varlen(value: int) -> bytes:
    """MIDI variable-length quantity (7 bits per byte, high bit = more follows)."""
    if not 0 <= value <= 0x0FFFFFFF:
        raise ValueError(f"variable-length value {value} outside 0..{0x0FFFFFFF}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(notes: Sequence[Note], program: int, tempo_us: int, end_tick: int,
               channel: int = 0) -> bytes:
    """A format-0 SMF with one track: tempo, program change, ``notes``, end of track.

    ``program`` is the 0-based General MIDI program (on :data:`DRUM_CHANNEL` it selects
    the drum kit); ``end_tick`` places the end-of-track event and must not precede the
    last note-off.
    """
    if not 0 <= channel <= 15:
        raise ValueError(f"channel {channel}; accepted: 0-15")
    if not 0 <= program <= 127:
        raise ValueError(f"program {program}; accepted: 0-127")
    if not 0 < tempo_us <= _MAX_TEMPO_US:
        raise ValueError(f"tempo {tempo_us} us per quarter; accepted: 1-{_MAX_TEMPO_US}")
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes); offs before ons
    for n in notes:
        if not (0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.start >= 0
                and n.length > 0):
            raise ValueError(f"invalid note {n}")
        events.append((n.start, 1, bytes((_NOTE_ON | channel, n.pitch, n.velocity))))
        events.append((n.start + n.length, 0, bytes((_NOTE_OFF | channel, n.pitch, 0))))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    last = events[-1][0] if events else 0
    if end_tick < last:
        raise ValueError(f"end_tick {end_tick} precedes the last note-off at {last}")
    track = bytearray()
    track += b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big")
    track += bytes((0x00, _PROGRAM | channel, program))
    now = 0
    for tick, _, data in events:
        track += encode_varlen(tick - now) + data
        now = tick
    track += encode_varlen(end_tick - now) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)
