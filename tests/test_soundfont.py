"""General MIDI rendering for the corpus: the MIDI writer (parsed back), phrase ranges,
the label table, fluidsynth rendering (pitch, energy, determinism) and the missing-
fluidsynth error.

Rendering tests use the small TimGM6mb soundfont that Debian installs with fluidsynth
(``bin/setup`` installs fluidsynth); they are skipped where either is missing.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from training.corpus import cli, soundfont
from training.corpus.build import BuildConfig
from training.corpus.mapping import load_label_names
from training.corpus.midi import DRUM_CHANNEL, TICKS_PER_QUARTER, Note, encode_varlen, write_midi

SR = 16000
SF2 = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SF2.is_file(),
    reason=f"needs fluidsynth and {SF2} (`{soundfont.FLUIDSYNTH_INSTALL}`)")


def _read_varlen(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    while True:
        b = data[i]
        i += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i


def _parse(data: bytes) -> tuple[tuple[int, int, int], list[tuple[int, str, tuple[int, ...]]]]:
    """(format, tracks, division) and [(absolute tick, kind, values)] of a format-0 SMF."""
    assert data[:4] == b"MThd"
    hlen, fmt, ntrk, division = struct.unpack(">IHHH", data[4:14])
    assert hlen == 6
    assert data[14:18] == b"MTrk"
    (tlen,) = struct.unpack(">I", data[18:22])
    track = data[22:]
    assert len(track) == tlen, "track length field must match the bytes that follow"
    events: list[tuple[int, str, tuple[int, ...]]] = []
    i = tick = 0
    while i < len(track):
        delta, i = _read_varlen(track, i)
        tick += delta
        status = track[i]
        assert status & 0x80, "the writer uses no running status"
        if status == 0xFF:
            kind, (length, j) = track[i + 1], _read_varlen(track, i + 2)
            payload = track[j: j + length]
            i = j + length
            if kind == 0x51:
                events.append((tick, "tempo", (int.from_bytes(payload, "big"),)))
            elif kind == 0x2F:
                events.append((tick, "end", ()))
                assert i == len(track), "end of track must be the last event"
            continue
        hi, ch = status & 0xF0, status & 0x0F
        if hi == 0xC0:
            events.append((tick, "program", (ch, track[i + 1])))
            i += 2
        elif hi in (0x80, 0x90):
            events.append((tick, "on" if hi == 0x90 else "off", (ch, track[i + 1], track[i + 2])))
            i += 3
        else:
            raise AssertionError(f"unexpected status byte {status:#x}")
    return (fmt, ntrk, division), events


def test_varlen_matches_the_smf_spec_examples() -> None:
    cases = {0: "00", 0x40: "40", 0x7F: "7f", 0x80: "8100", 0x2000: "c000", 0x3FFF: "ff7f",
             0x4000: "818000", 0x1FFFFF: "ffff7f", 0x200000: "81808000", 0x0FFFFFFF: "ffffff7f"}
    for value, hexed in cases.items():
        assert encode_varlen(value).hex() == hexed
        assert _read_varlen(encode_varlen(value), 0) == (value, len(hexed) // 2)
    with pytest.raises(ValueError, match="outside"):
        encode_varlen(0x10000000)


def test_midi_writer_round_trip() -> None:
    notes = [Note(0, 480, 60, 100), Note(0, 960, 64, 90), Note(480, 200, 67, 1),
             Note(20000, 300, 72, 127)]
    data = write_midi(notes, program=40, tempo_us=600_000, end_tick=21_000, channel=3)
    header, events = _parse(data)
    assert header == (0, 1, TICKS_PER_QUARTER)
    assert events[0] == (0, "tempo", (600_000,))
    assert events[1] == (0, "program", (3, 40))
    assert events[-1] == (21_000, "end", ())
    ons = sorted((t, v[1], v[2]) for t, k, v in events if k == "on")
    offs = sorted((t, v[1]) for t, k, v in events if k == "off")
    assert ons == sorted((n.start, n.pitch, n.velocity) for n in notes)
    assert offs == sorted((n.start + n.length, n.pitch) for n in notes)
    assert all(v[0] == 3 for _, k, v in events if k in ("on", "off"))
    ticks = [t for t, _, _ in events]
    assert ticks == sorted(ticks)
    # at tick 480 the note-off of 60 comes before the note-on of 67
    at_480 = [(k, v[1]) for t, k, v in events if t == 480]
    assert at_480 == [("off", 60), ("on", 67)]


def test_midi_writer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="precedes the last note-off"):
        write_midi([Note(0, 480, 60, 100)], 0, 500_000, end_tick=479)
    with pytest.raises(ValueError, match="invalid note"):
        write_midi([Note(0, 480, 128, 100)], 0, 500_000, end_tick=480)
    with pytest.raises(ValueError, match="invalid note"):
        write_midi([Note(0, 480, 60, 0)], 0, 500_000, end_tick=480)
    with pytest.raises(ValueError, match="program"):
        write_midi([], 128, 500_000, end_tick=0)


def test_instrument_table() -> None:
    names = load_label_names()
    insts = soundfont.INSTRUMENTS
    assert len({i.name for i in insts}) == len(insts)
    assert len({i.program for i in insts if not i.drum_keys}) == sum(1 for i in insts
                                                                     if not i.drum_keys)
    for inst in insts:
        assert set(inst.labels) <= names, inst
        assert inst.labels[-1] == "Music"
        assert 0 <= inst.program <= 127 and 0 <= inst.low < inst.high <= 127
        assert (inst.style in ("kit", "hits")) == bool(inst.drum_keys), inst.name
        assert inst.channel == (DRUM_CHANNEL if inst.drum_keys else 0)
    by_name = {i.name: i for i in insts}
    assert by_name["acoustic_grand_piano"].labels == ("Piano", "Keyboard (musical)", "Music")
    assert by_name["violin"].labels == ("Violin, fiddle", "Bowed string instrument", "Music")


def test_phrases_stay_in_range_and_in_time() -> None:
    for inst in soundfont.INSTRUMENTS:
        polyphonic = False
        for seed in range(12):
            ph = soundfont.phrase(inst, np.random.default_rng(seed))
            assert ph.notes, (inst.name, seed)
            bad = [n.pitch for n in ph.notes if not inst.allows(n.pitch)]
            assert not bad, (inst.name, seed, bad, inst.low, inst.high, inst.drum_keys)
            assert soundfont.SECONDS[0] <= ph.seconds <= soundfont.SECONDS[1]
            ticks_per_second = TICKS_PER_QUARTER * 1e6 / ph.tempo_us
            assert ph.end_tick == int(ph.seconds * ticks_per_second)
            last_off = max(n.start + n.length for n in ph.notes)
            assert last_off <= ph.end_tick - int(soundfont.TAIL_SECONDS * ticks_per_second)
            assert all(1 <= n.velocity <= 127 and n.length > 0 for n in ph.notes)
            bpm = 60e6 / ph.tempo_us
            assert soundfont.BPM[0] - 0.1 <= bpm <= soundfont.BPM[1] + 0.1
            starts = [n.start for n in ph.notes]
            if inst.style == "melody":  # monophonic: each note ends before the next starts
                for a, b in zip(ph.notes, ph.notes[1:], strict=False):
                    assert a.start + a.length <= b.start, (inst.name, seed, a, b)
            polyphonic |= len(set(starts)) < len(starts) or any(
                a.start + a.length > b.start for a, b in zip(ph.notes, ph.notes[1:], strict=False))
        if inst.style in ("chords", "arpeggio", "kit"):
            assert polyphonic, inst.name
    # the phrases vary: velocities, tempi and lengths differ across seeds
    phs = [soundfont.phrase(soundfont.INSTRUMENTS[0], np.random.default_rng(s)) for s in range(8)]
    assert len({p.tempo_us for p in phs}) == 8 and len({p.seconds for p in phs}) == 8
    assert len({n.velocity for p in phs for n in p.notes}) > 10
    assert len({n.length for p in phs for n in p.notes}) > 3


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


@needs_fluidsynth
def test_render_piano_a4_has_its_fundamental() -> None:
    midi = write_midi([Note(0, TICKS_PER_QUARTER, 69, 100)], 0, 500_000, TICKS_PER_QUARTER)
    x = soundfont.render(midi, SF2, SR)
    assert x.dtype == np.float32 and x.size >= SR // 2  # the release tail is rendered
    assert np.sqrt(np.mean(x[: SR // 2] ** 2)) > 1e-3
    assert abs(_peak_hz(x[: SR // 2], SR) - 440.0) < 8.0
    low = soundfont.render(write_midi([Note(0, 480, 45, 100)], 0, 500_000, 480), SF2, SR)
    assert abs(_peak_hz(low[: SR // 2], SR) - 110.0) < 4.0
    silent = soundfont.render(write_midi([], 0, 500_000, 480), SF2, SR)
    assert float(np.max(np.abs(silent), initial=0.0)) < soundfont.SILENT_PEAK


@needs_fluidsynth
def test_generate_is_deterministic_and_normalised() -> None:
    by_name = {i.name: i for i in soundfont.INSTRUMENTS}
    for name in ("trumpet", "acoustic_guitar_steel", "drum_kit", "snare_drum"):
        inst = by_name[name]
        a = soundfont.generate(inst, 5, SF2, SR)
        assert np.array_equal(a, soundfont.generate(inst, 5, SF2, SR)), name
        ph = soundfont.phrase(inst, np.random.default_rng(5))
        assert a.shape == (round(ph.seconds * SR),)
        assert soundfont.PEAK[0] - 1e-6 <= float(np.max(np.abs(a))) <= soundfont.PEAK[1] + 1e-6
        b = soundfont.generate(inst, 6, SF2, SR)
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_missing_fluidsynth_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(soundfont.shutil, "which", lambda _name: None)
    with pytest.raises(soundfont.SoundfontError, match="apt-get install --no-install-recommends "
                       "fluidsynth"):
        soundfont.require_fluidsynth()
    with caplog.at_level(logging.ERROR):
        assert cli.main(["build", str(tmp_path / "c"), "--shared-data", str(tmp_path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "--no-soundfont" in errors[0]
    assert not (tmp_path / "c" / "debs").exists()  # failed before any download


def test_no_soundfont_flag_turns_rendering_off(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    seen: list[BuildConfig] = []

    def fake_build(out: Path, shared: Path, debs: Path, cfg: BuildConfig,
                   extra_data: Path | None = None) -> dict[str, object]:
        seen.append(cfg)
        return {"clips": {}, "real_seconds": {}}

    monkeypatch.setattr(cli, "build", fake_build)
    for flag in ([], ["--no-soundfont"]):
        assert cli.main(["build", str(tmp_path / "c"), "--shared-data", str(tmp_path), *flag]) == 0
    assert [c.soundfont_per_program for c in seen] == [30, 0]
    ci = BuildConfig.for_subset("ci")
    assert ci.soundfont_package == "timgm6mb-soundfont" and 1 <= ci.soundfont_per_program <= 2
