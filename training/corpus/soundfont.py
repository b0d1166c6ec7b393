"""Render General MIDI instruments from a SoundFont into labelled training clips.

:data:`INSTRUMENTS` maps GM programs (0-based) whose samples really are one instrument
to AudioSet labels, labelled the way ``mapping.csv`` labels real recordings of it.
:func:`phrase` writes a seeded random phrase for one instrument (monophonic melodies for
winds, brass, bowed strings; chords, strums and arpeggios for keyboards, guitars, harp;
beats and single-drum patterns on GM channel 10), within the instrument's playable
range, with varied tempo, velocity and note lengths, 3-6 s long. :func:`render` turns the
phrase's MIDI file (:mod:`training.corpus.midi`) into audio with the ``fluidsynth`` CLI,
reverb and chorus off (training augmentation adds reverb), rendering as 32-bit float so
that nothing clips or is dithered. fluidsynth interpolates samples without band-limiting,
so it renders at :data:`RENDER_RATE` and a polyphase FIR decimates to the corpus rate:
rendered directly at 16 kHz, a tambourine had 15-21 dB more energy below 4 kHz and a
glockenspiel 15 dB more at 4-6 kHz (aliases) than the same phrase rendered at 96 kHz;
at 48 kHz every band was within 0.2 dB of it. :func:`generate` does both and peak-normalises to a
seeded level; identical arguments give identical samples.

The clips share samples with each other, so the corpus builder puts them in the
training split only.

Spot check (``soundfont_check.csv`` beside ``mapping.csv``): clips 0 and 1 of every
instrument, rendered from FluidR3_GM (fluid-soundfont-gm 3.1-5.3, fluidsynth 2.3.1) with
the full build's seeds, written as FLAC and decoded again. Per instrument it records the
median [min-max] of duration, spectral centroid, spectral flatness (of the mean 512-point
power spectrum, 50 Hz-7.5 kHz), the raw fluidsynth peak before normalising, the final
peak, RMS (dBFS), the share of 32 ms frames within 40 dB of the loudest, and the count of
samples at full scale. All 55 instruments were audible (RMS -33 to -13 dBFS), none
clipped (raw peaks 0.03-0.45 of full scale, 0 samples at full scale), durations 3.0-6.0 s,
centroids in each instrument's register (contrabass 138 Hz, tuba 191 Hz, violin 2.5 kHz,
crash cymbal 4.3 kHz, tambourine 5.7 kHz).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from training.corpus.midi import DRUM_CHANNEL, TICKS_PER_QUARTER, Note, write_midi

__all__ = [
    "FLUIDSYNTH_INSTALL",
    "INSTRUMENTS",
    "Instrument",
    "Phrase",
    "SoundfontError",
    "find_sf2",
    "fluidsynth_command",
    "generate",
    "phrase",
    "render",
    "require_fluidsynth",
]

log = logging.getLogger(__name__)

FLUIDSYNTH_INSTALL = "apt-get install --no-install-recommends fluidsynth"
RENDER_RATE = 48000  # Hz; decimated to the corpus rate after rendering
GAIN = 0.5  # fluidsynth master gain; output is float, so only the scale before normalising
SECONDS = (3.0, 6.0)  # clip length, including the release tail
TAIL_SECONDS = 0.6  # no note starts or sounds after seconds - tail
BPM = (70.0, 150.0)
PEAK = (0.3, 0.9)  # peak level after normalising
SILENT_PEAK = 1e-4  # a raw render below this is an error (program missing from the sf2)
FADE_SECONDS = 0.01
_Q = TICKS_PER_QUARTER
_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10),
           (0, 2, 3, 5, 7, 9, 10))  # major, natural minor, pentatonics, dorian
_TRIADS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 5, 7))
_KIT = {"kick": 36, "snare": 38, "closed_hat": 42, "open_hat": 46, "crash": 49, "ride": 51}
_TOMS = (41, 43, 45, 47, 48, 50)


class SoundfontError(RuntimeError):
    """fluidsynth is missing, failed, or rendered silence."""


@dataclass(frozen=True)
class Instrument:
    """A GM program (0-based) with its labels, playable range (MIDI notes) and style.

    ``style`` is ``melody`` (monophonic line), ``chords`` (block, strummed or broken),
    ``arpeggio``, ``kit`` (drum beats) or ``hits`` (one percussion instrument); the last
    two play ``drum_keys`` on the GM percussion channel.
    """

    name: str
    program: int
    labels: tuple[str, ...]
    low: int
    high: int
    style: str
    drum_keys: tuple[int, ...] = ()

    @property
    def channel(self) -> int:
        return DRUM_CHANNEL if self.drum_keys else 0

    def allows(self, pitch: int) -> bool:
        """Whether ``pitch`` is playable: in ``drum_keys`` for drums, else in [low, high]."""
        return pitch in self.drum_keys if self.drum_keys else self.low <= pitch <= self.high


_PIANO = ("Piano", "Keyboard (musical)", "Music")
_ORGAN = ("Organ", "Keyboard (musical)", "Music")
_AC_GUITAR = ("Guitar", "Acoustic guitar", "Plucked string instrument", "Music")
_EL_GUITAR = ("Guitar", "Electric guitar", "Plucked string instrument", "Music")
_BASS_GUITAR = ("Bass guitar", "Guitar", "Plucked string instrument", "Music")
_WOODWIND = ("Wind instrument, woodwind instrument", "Music")
_SAX = ("Saxophone", *_WOODWIND)
_FLUTE = ("Flute", *_WOODWIND)
_BRASS = ("Brass instrument", "Music")
_VIOLIN = ("Violin, fiddle", "Bowed string instrument", "Music")
_KIT_KEYS = tuple(sorted({*_KIT.values(), *_TOMS}))


def _i(name: str, program: int, labels: tuple[str, ...], low: int, high: int, style: str,
       drum_keys: tuple[int, ...] = ()) -> Instrument:
    return Instrument(name, program, labels, low, high, style, drum_keys)


INSTRUMENTS: tuple[Instrument, ...] = (
    _i("acoustic_grand_piano", 0, _PIANO, 33, 96, "chords"),
    _i("bright_acoustic_piano", 1, _PIANO, 33, 96, "chords"),
    _i("electric_piano_1", 4, ("Electric piano", "Keyboard (musical)", "Music"), 36, 91, "chords"),
    _i("harpsichord", 6, ("Harpsichord", "Keyboard (musical)", "Music"), 41, 89, "chords"),
    _i("glockenspiel", 9, ("Glockenspiel", "Mallet percussion", "Music"), 79, 108, "melody"),
    _i("vibraphone", 11, ("Vibraphone", "Mallet percussion", "Music"), 53, 89, "arpeggio"),
    _i("marimba", 12, ("Marimba, xylophone", "Mallet percussion", "Music"), 45, 96, "melody"),
    _i("xylophone", 13, ("Marimba, xylophone", "Mallet percussion", "Music"), 65, 108, "melody"),
    _i("tubular_bells", 14, ("Tubular bells", "Percussion", "Music"), 60, 77, "melody"),
    _i("drawbar_organ", 16, ("Hammond organ", *_ORGAN), 36, 91, "chords"),
    _i("church_organ", 19, _ORGAN, 36, 91, "chords"),
    _i("accordion", 21, ("Accordion", "Music"), 53, 89, "chords"),
    _i("harmonica", 22, ("Harmonica", "Music"), 60, 96, "melody"),
    _i("acoustic_guitar_nylon", 24, _AC_GUITAR, 40, 81, "chords"),
    _i("acoustic_guitar_steel", 25, _AC_GUITAR, 40, 81, "chords"),
    _i("electric_guitar_jazz", 26, _EL_GUITAR, 40, 84, "chords"),
    _i("electric_guitar_clean", 27, _EL_GUITAR, 40, 84, "chords"),
    _i("overdriven_guitar", 29, _EL_GUITAR, 40, 84, "melody"),
    _i("distortion_guitar", 30, _EL_GUITAR, 40, 84, "melody"),
    _i("electric_bass_finger", 33, _BASS_GUITAR, 28, 60, "melody"),
    _i("electric_bass_pick", 34, _BASS_GUITAR, 28, 60, "melody"),
    _i("violin", 40, _VIOLIN, 55, 100, "melody"),
    _i("viola", 41, ("Bowed string instrument", "Music"), 48, 88, "melody"),
    _i("cello", 42, ("Cello", "Bowed string instrument", "Music"), 36, 76, "melody"),
    _i("contrabass", 43, ("Double bass", "Bowed string instrument", "Music"), 28, 60, "melody"),
    _i("orchestral_harp", 46, ("Harp", "Plucked string instrument", "Music"), 36, 96, "arpeggio"),
    _i("timpani", 47, ("Timpani", "Drum", "Percussion", "Music"), 40, 57, "melody"),
    _i("string_ensemble_1", 48, ("String section", "Bowed string instrument", "Music"), 36, 96,
       "chords"),
    _i("trumpet", 56, ("Trumpet", *_BRASS), 54, 84, "melody"),
    _i("trombone", 57, ("Trombone", *_BRASS), 40, 72, "melody"),
    _i("tuba", 58, _BRASS, 28, 58, "melody"),
    _i("french_horn", 60, ("French horn", *_BRASS), 41, 77, "melody"),
    _i("brass_section", 61, _BRASS, 41, 84, "chords"),
    _i("soprano_sax", 64, _SAX, 56, 88, "melody"),
    _i("alto_sax", 65, _SAX, 49, 81, "melody"),
    _i("tenor_sax", 66, _SAX, 44, 76, "melody"),
    _i("baritone_sax", 67, _SAX, 36, 69, "melody"),
    _i("oboe", 68, ("Oboe", *_WOODWIND), 58, 91, "melody"),
    _i("bassoon", 70, ("Bassoon", *_WOODWIND), 34, 72, "melody"),
    _i("clarinet", 71, ("Clarinet", *_WOODWIND), 50, 91, "melody"),
    _i("piccolo", 72, _FLUTE, 74, 102, "melody"),
    _i("flute", 73, _FLUTE, 60, 96, "melody"),
    _i("recorder", 74, _WOODWIND, 60, 96, "melody"),
    _i("sitar", 104, ("Sitar", "Plucked string instrument", "Music"), 48, 79, "melody"),
    _i("banjo", 105, ("Banjo", "Plucked string instrument", "Music"), 48, 81, "arpeggio"),
    _i("bagpipe", 109, ("Bagpipes", "Music"), 67, 81, "melody"),
    _i("fiddle", 110, _VIOLIN, 55, 96, "melody"),
    _i("steel_drums", 114, ("Steelpan", "Percussion", "Music"), 55, 84, "melody"),
    _i("drum_kit", 0, ("Drum", "Drum kit", "Percussion", "Music"), 0, 127, "kit", _KIT_KEYS),
    _i("bass_drum", 0, ("Drum", "Bass drum", "Percussion", "Music"), 0, 127, "hits", (35, 36)),
    _i("snare_drum", 0, ("Drum", "Snare drum", "Percussion", "Music"), 0, 127, "hits", (38, 40)),
    _i("hi_hat", 0, ("Hi-hat", "Cymbal", "Percussion", "Music"), 0, 127, "hits", (42, 44, 46)),
    _i("crash_cymbal", 0, ("Crash cymbal", "Cymbal", "Percussion", "Music"), 0, 127, "hits",
       (49, 57)),
    _i("tambourine", 0, ("Tambourine", "Percussion", "Music"), 0, 127, "hits", (54,)),
    _i("cowbell", 0, ("Cowbell", "Percussion", "Music"), 0, 127, "hits", (56,)),
)


@dataclass(frozen=True)
class Phrase:
    """Notes with their tempo (microseconds per quarter) and length (ticks and seconds)."""

    notes: tuple[Note, ...]
    tempo_us: int
    end_tick: int
    seconds: float

    def midi(self, inst: Instrument) -> bytes:
        return write_midi(self.notes, inst.program, self.tempo_us, self.end_tick, inst.channel)


def _velocity(rng: np.random.Generator, base: int, spread: int = 14) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 1, 127))


def _scale_pitches(inst: Instrument, rng: np.random.Generator) -> list[int]:
    root = int(rng.integers(12))
    steps = _SCALES[int(rng.integers(len(_SCALES)))]
    return [p for p in range(inst.low, inst.high + 1) if (p - root) % 12 in steps]


def _melody(inst: Instrument, rng: np.random.Generator, stop: int) -> list[Note]:
    pitches = _scale_pitches(inst, rng)
    lengths = np.array([_Q // 4, _Q // 2, _Q, 3 * _Q // 2, 2 * _Q])
    weights = np.array([0.1, 0.35, 0.3, 0.1, 0.15])
    k = int(rng.integers(len(pitches) // 4, max(len(pitches) * 3 // 4, len(pitches) // 4 + 1)))
    base, legato = int(rng.integers(55, 115)), rng.uniform(0.6, 1.0)
    notes: list[Note] = []
    t = 0
    while t < stop:
        dur = int(rng.choice(lengths, p=weights))
        if notes and rng.random() < 0.1:  # a rest
            t += dur
            continue
        step = int(rng.choice([-4, -3, -2, -1, 0, 1, 2, 3, 4],
                              p=[0.04, 0.06, 0.15, 0.2, 0.1, 0.2, 0.15, 0.06, 0.04]))
        k = int(np.clip(k + step, 0, len(pitches) - 1))
        length = max(1, min(round(dur * legato), stop - t))
        notes.append(Note(t, length, pitches[k], _velocity(rng, base)))
        t += dur
    return notes


def _chord_tones(inst: Instrument, rng: np.random.Generator, key: int, voices: int) -> list[int]:
    shape = _TRIADS[int(rng.integers(len(_TRIADS)))]
    root_pc = (key + int(rng.choice([0, 2, 4, 5, 7, 9]))) % 12
    lows = [p for p in range(inst.low, max(inst.low + 1, inst.high - 11)) if p % 12 == root_pc]
    root = lows[int(rng.integers(len(lows)))] if lows else inst.low
    tones = [root + iv + 12 * octave for octave in range(4) for iv in shape]
    return [p for p in sorted(set(tones)) if inst.allows(p)][:voices] or [inst.low]


def _chords(inst: Instrument, rng: np.random.Generator, stop: int,
            patterns: tuple[str, ...] = ("block", "strum", "broken")) -> list[Note]:
    key = int(rng.integers(12))
    pattern = patterns[int(rng.integers(len(patterns)))]
    span = int(rng.choice([_Q, 2 * _Q, 4 * _Q]))
    base, notes, t = int(rng.integers(50, 110)), list[Note](), 0
    voices = int(rng.integers(3, 7))
    while t < stop:
        tones = _chord_tones(inst, rng, key, voices)
        length = min(span, stop - t)
        if pattern == "broken":
            step = int(rng.choice([_Q // 4, _Q // 2]))
            order = tones + tones[-2:0:-1]
            for j, u in enumerate(range(t, t + length, step)):
                notes.append(Note(u, min(step * 2, t + length - u), order[j % len(order)],
                                  _velocity(rng, base)))
        else:
            gap = int(rng.integers(8, 30)) if pattern == "strum" else 0
            for j, p in enumerate(tones):
                if t + j * gap < t + length:
                    notes.append(Note(t + j * gap, length - j * gap, p, _velocity(rng, base, 8)))
        t += span
    return notes


def _arpeggio(inst: Instrument, rng: np.random.Generator, stop: int) -> list[Note]:
    return _chords(inst, rng, stop, ("broken",))


def _hits(inst: Instrument, rng: np.random.Generator, stop: int) -> list[Note]:
    step = int(rng.choice([_Q // 4, _Q // 2, _Q]))
    density = rng.uniform(0.35, 0.9)
    base, notes = int(rng.integers(60, 120)), list[Note]()
    for t in range(0, stop, step):
        if not notes or rng.random() < density:
            key = inst.drum_keys[int(rng.integers(len(inst.drum_keys)))]
            notes.append(Note(t, min(step, stop - t), key, _velocity(rng, base, 20)))
    return notes


def _kit(inst: Instrument, rng: np.random.Generator, stop: int) -> list[Note]:
    del inst
    hat = _KIT["ride"] if rng.random() < 0.25 else _KIT["closed_hat"]
    base, eighth, notes = int(rng.integers(70, 115)), _Q // 2, list[Note]()
    crash = rng.random() < 0.5
    for t in range(0, stop, eighth):
        beat, on_beat, length = (t // _Q) % 4, t % _Q == 0, min(eighth, stop - t)
        if t == 0 and crash:
            notes.append(Note(t, length, _KIT["crash"], _velocity(rng, base)))
        if stop - t <= 2 * _Q and rng.random() < 0.5:  # a tom fill near the end
            notes.append(Note(t, length, _TOMS[int(rng.integers(len(_TOMS)))],
                              _velocity(rng, base)))
            continue
        key_hat = _KIT["open_hat"] if rng.random() < 0.08 else hat
        notes.append(Note(t, length, key_hat, _velocity(rng, base - 15)))
        if (on_beat and beat in (0, 2)) or rng.random() < 0.12:
            notes.append(Note(t, length, _KIT["kick"], _velocity(rng, base)))
        if on_beat and beat in (1, 3):
            notes.append(Note(t, length, _KIT["snare"], _velocity(rng, base)))
    return notes


_STYLES: dict[str, Callable[[Instrument, np.random.Generator, int], list[Note]]] = {
    "melody": _melody, "chords": _chords, "arpeggio": _arpeggio, "hits": _hits, "kit": _kit}


def phrase(inst: Instrument, rng: np.random.Generator) -> Phrase:
    """A random phrase for ``inst``: 3-6 s, notes end ``TAIL_SECONDS`` before the end."""
    if inst.style not in _STYLES:
        raise ValueError(f"{inst.name}: style {inst.style!r}; accepted: {sorted(_STYLES)}")
    seconds = float(rng.uniform(*SECONDS))
    tempo_us = round(60e6 / rng.uniform(*BPM))
    ticks_per_second = _Q * 1e6 / tempo_us
    end_tick = int(seconds * ticks_per_second)
    stop = end_tick - int(TAIL_SECONDS * ticks_per_second)
    notes = _STYLES[inst.style](inst, rng, stop)
    return Phrase(tuple(sorted(notes, key=lambda n: (n.start, n.pitch))), tempo_us, end_tick,
                  seconds)


def require_fluidsynth() -> str:
    """Path of the ``fluidsynth`` executable, or a :class:`SoundfontError` naming the install."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise SoundfontError(f"`fluidsynth` not found; install it with `{FLUIDSYNTH_INSTALL}` "
                             "(or build with --no-soundfont)")
    return exe


def fluidsynth_command(sf2: Path, midi: Path, wav: Path, sample_rate: int,
                       gain: float = GAIN) -> list[str]:
    """The render command: no MIDI input or shell, quiet, reverb and chorus off, float WAV."""
    return [require_fluidsynth(), "-ni", "-q", "-R", "0", "-C", "0", "-g", f"{gain:g}",
            "-r", str(sample_rate), "-o", "synth.cpu-cores=1", "-T", "wav", "-O", "float",
            "-F", str(wav), str(sf2), str(midi)]


def render(midi: bytes, sf2: Path, sample_rate: int, gain: float = GAIN) -> np.ndarray:
    """Render a MIDI file with ``sf2``; mono float32 samples at ``sample_rate`` Hz.

    fluidsynth renders at :data:`RENDER_RATE`; the result is resampled to ``sample_rate``
    (release tails run past the MIDI file's end of track).
    """
    with tempfile.TemporaryDirectory(prefix="sed-soundfont-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = fluidsynth_command(sf2, mid, wav, RENDER_RATE, gain)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise SoundfontError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: "
                                 f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != RENDER_RATE:
        raise SoundfontError(f"fluidsynth wrote {sr} Hz; asked for {RENDER_RATE} Hz")
    wave = data.mean(axis=1, dtype=np.float64)
    if sample_rate != RENDER_RATE:
        g = math.gcd(sample_rate, RENDER_RATE)
        wave = resample_poly(wave, sample_rate // g, RENDER_RATE // g)
    return np.asarray(wave, dtype=np.float32)


def generate(inst: Instrument, seed: int, sf2: Path, sample_rate: int) -> np.ndarray:
    """One rendered phrase of ``inst``: mono float32, ``Phrase.seconds`` long, peak 0.3-0.9."""
    rng = np.random.default_rng(seed)
    ph = phrase(inst, rng)
    raw = render(ph.midi(inst), sf2, sample_rate)
    n = round(ph.seconds * sample_rate)
    wave = np.zeros(n, np.float32)
    wave[: min(n, raw.size)] = raw[:n]
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak < SILENT_PEAK:
        raise SoundfontError(f"{inst.name} (program {inst.program}) rendered silence from {sf2}")
    fade = min(round(FADE_SECONDS * sample_rate), n)
    wave[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return (wave * (rng.uniform(*PEAK) / peak)).astype(np.float32)


def find_sf2(root: Path) -> Path:
    """The one ``*.sf2`` in an unpacked package tree."""
    found = sorted(root.rglob("*.sf2"))
    files = [p for p in found if p.is_file() and not p.is_symlink()]
    if len(files) != 1:
        raise SoundfontError(f"{root}: expected one .sf2 file, found {[str(p) for p in found]}")
    return files[0]
