"""``python -m training.distill``: the v2 recipe, learning all that YAMNet hears, from caches.

Labels are scarce here and sound is not. The student predicts every one of YAMNet's 521
classes; its targets are YAMNet's scores on exactly the patch it sees, after the
augmentation below, plus our labels where a clip has them. Everything runs on the
log-mel of cached files (:mod:`training.corpus.pool_cache`), so an epoch over the pool
costs minutes on two cores instead of hours of decoding and resampling.

Batches draw from three streams:

* **pool**: a random 0.96 s patch of an unlabelled recording (the Debian pool and the
  shared recordings, :mod:`training.corpus.pool`), teacher targets only;
* **labelled**: a patch of a labelled corpus clip (``sed-corpus build``'s
  ``train_all.csv``); our positive labels are floors under the teacher's scores
  (``max(hard, teacher)``), so a dog clip stays a dog whatever YAMNet says of it; with
  ``onset_events`` part of them is the onset of a strong event of the training
  soundscapes (:meth:`LabelledSet.onset_patch`: the patch ending 0.2-0.6 s after it
  starts), taught its labels;
* **beds**: a steady noise bed alone (:mod:`training.corpus.noise` kinds at -70 to -20
  dBFS), so that hiss and hum are "Noise", "Static" or "Hum", never "Rain" (with
  ``bed_alone_targets = "noise_classes"`` only those classes keep the teacher's score:
  YAMNet itself calls mains hum "Music").

Augmentation, on magnitude mel ``M = exp(logmel) - offset`` (the front end's own scale):

* gain: ``M * g``; mixing: ``sqrt(M1^2 + (g M2)^2)`` (incoherent sources add in power),
  with the union of the labels; a noise bed under any patch at -70 to -20 dBFS;
* late onsets (``onset_prob``): the patch's first 30-500 ms moved to its end, the mixing
  partner and a bed before it, teacher targets only; what a live detector sees in the
  first patches of a sound, where the onset is decided;
* room: a late-reverberation tail per mel band, power decaying 60 dB in RT60 (0.2-1.2 s,
  faster at high frequencies), wet level random;
* band-limiting to 3.4-7 kHz (telephone and cheap microphones; without it "no energy
  above 4 kHz" would mean speech, because the prompts and digits are 8 kHz recordings);
* SpecAugment's masks and FilterAugment's smooth EQ (:class:`training.augment.SpecAugment`)
  on the student's input only, after the teacher has scored the patch.

The checkpoint has ``sed-train``'s keys, so ``sed-eval`` and ``sed-export`` take it as is.
Training resumes from ``OUT/last.pt`` (``--resume``) and logs examples per second.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from detector.frontend.features import FeatureConfig, mel_filterbank
from training.augment import AugmentConfig, SpecAugment
from training.corpus import pool as pool_mod
from training.corpus.pool_cache import TEACHER_HOP_FRAMES, features_of, load_entry, patch_starts
from training.metrics import average_precision
from training.model import PER_LABEL_LAYERS, PRESETS, SedNet

__all__ = ["BalancedSampler", "DistillConfig", "LabelledSet", "MelAugment", "PoolSet", "load_config", "main",
           "noise_classes", "source_key", "targets", "train", "validation_sources"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run; read from TOML, unknown keys are errors."""

    pool: str = "~/.cache/sed/pool"
    train_manifest: str = "~/.cache/sed/corpus-v4-voices/train_all.csv"
    val_manifest: str = "~/.cache/sed/corpus-v4-voices/val.csv"
    mel_cache: str = "~/.cache/sed/melcache"  # labelled clips' log-mel + teacher, by hash
    out_dir: str = "runs/v2"
    preset: str = "small"
    init_from: str = ""  # a sed-train checkpoint: body and the rows of labels it shares
    epochs: int = 30
    steps_per_epoch: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 2
    teacher_threads: int = 1
    free_only: bool = False
    music_cap_hours: float = 9.0
    speech_cap_hours: float = 9.0
    pool_val_percent: int = 5  # pool files whose hash falls here are validation only
    embedding_weight: float = 0.0  # > 0: also match YAMNet's 1024-d embedding (cosine), this much
    labelled_fraction: float = 0.35
    bed_alone_fraction: float = 0.05
    # What a noise bed alone is taught: "teacher" (YAMNet's scores, which call mains hum
    # Music and brown noise Wind) or "noise_classes" (the teacher's scores on the noise,
    # hum, silence and room classes of detector/data/event_labels_never.txt, 0 elsewhere).
    bed_alone_targets: str = "teacher"
    # Labelled recordings left out: any whose clips' source (less a "scene:" prefix) starts
    # with one of these, e.g. ["urbansound8k:", "virufy:"] with free_only for the pool.
    exclude_sources: tuple[str, ...] = ()
    # A strong event (the training soundscapes) labels a patch it overlaps by half of the
    # shorter of the two (0.48 s of a long event), or by this many seconds if fewer: a
    # patch holding a sound's first 0.2 s then learns the sound, not the teacher's
    # (slow) reading of it. 0: the half rule alone. Meant for earlier onsets; 0.2 did not
    # bring them (training/configs/v2_wide5.toml).
    strong_overlap_s: float = 0.0
    # Of the labelled examples, this fraction is the onset of a strong event (the training
    # soundscapes): a patch that ends ``onset_event_tail_s`` after the event starts, what
    # came before it in front, taught the event's labels. A live onset is decided on such
    # patches; the teacher's own score there is low (it needs ~0.8 s of a sound in these
    # scenes), so without labels the student learns its hesitation.
    onset_events: float = 0.0
    onset_event_tail_s: tuple[float, float] = (0.2, 0.6)
    # The target of the event's labels on an onset patch, at the shortest and the longest
    # tail (linear between): (1, 1) teaches a sound's first 0.2 s as surely as its whole;
    # (0.5, 1) asks for a score that grows as more of the sound is heard.
    onset_event_floor: tuple[float, float] = (1.0, 1.0)
    # Of the onset examples, this share is the start of a labelled clip's sound instead
    # (:func:`sound_start`; silence in front, which mixing and beds fill): every source and
    # label of the corpus, not only the soundscapes' backgrounds.
    onset_clip_share: float = 0.0
    val_patches: int = 4000
    # Of the pool's patches in a batch, this fraction is drawn class-balanced by the
    # teacher's cached scores (a class at random among those with at least
    # ``balance_min_patches`` patches scoring >= ``balance_threshold``, then one of them);
    # the rest uniformly. Rare sounds in a pool of mostly speech and music get seen.
    pool_balance: float = 0.0
    balance_threshold: float = 0.3
    balance_min_patches: int = 20
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.pool_balance <= 1.0:
            raise ValueError(f"pool_balance = {self.pool_balance}; accepted: 0 to 1")
        if not 0.0 <= self.onset_events <= 1.0:
            raise ValueError(f"onset_events = {self.onset_events}; accepted: 0 to 1")
        lo, hi = self.onset_event_tail_s
        if not 0.0 < lo <= hi:
            raise ValueError(f"onset_event_tail_s = {self.onset_event_tail_s}; accepted: 0 < low <= high")
        if not 0.0 <= self.onset_clip_share <= 1.0:
            raise ValueError(f"onset_clip_share = {self.onset_clip_share}; accepted: 0 to 1")
        if not all(0.0 < w <= 1.0 for w in self.onset_event_floor):
            raise ValueError(f"onset_event_floor = {self.onset_event_floor}; accepted: two targets in (0, 1]")
        if self.bed_alone_targets not in ("teacher", "noise_classes"):
            raise ValueError(f"bed_alone_targets = {self.bed_alone_targets!r}; accepted: "
                             "'teacher', 'noise_classes'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MelAugmentConfig:
    """Probabilities and ranges of :class:`MelAugment` (dB are amplitude dB)."""

    gain_db: tuple[float, float] = (-24.0, 12.0)
    mix_prob: float = 0.5
    mix_gain_db: tuple[float, float] = (-12.0, 6.0)
    bed_prob: float = 0.5
    bed_dbfs: tuple[float, float] = (-70.0, -20.0)
    reverb_prob: float = 0.35
    rt60_s: tuple[float, float] = (0.2, 1.2)
    wet_db: tuple[float, float] = (-15.0, 3.0)
    band_limit_prob: float = 0.3
    band_limit_hz: tuple[float, ...] = (3400.0, 4000.0, 5500.0, 7000.0)
    onset_prob: float = 0.0  # shift the patch so that its sound starts this close to the end
    onset_tail_s: tuple[float, float] = (0.03, 0.5)
    spec_augment: dict[str, Any] = field(default_factory=lambda: {"filter_db": 6.0})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelAugmentConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown [augment] key(s) {unknown}; accepted: {sorted(names)}")
        conv: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in data.items()}
        return cls(**conv)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    data.update(overrides or {})
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; accepted: {sorted(names)}")
    cfg = DistillConfig(**data)
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset {cfg.preset!r}; accepted: {sorted(PRESETS)}")
    MelAugmentConfig.from_dict(cfg.augment)  # fail early on a bad [augment] table
    return cfg


def _expand(p: str) -> Path:
    return Path(os.path.expanduser(p))


def _hash_percent(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % 100


def source_key(row: dict[str, str]) -> str:
    """A pool row's file as the labelled corpus names it (``clips.csv``'s ``source``)."""
    return f"{row['package'].removeprefix('shared:')}:{row['relpath']}"


def validation_sources(clips_csv: Path) -> frozenset[str]:
    """The sources of every clip in a validation *group* of a ``sed-corpus build``
    (``clips.csv``): pool files that must not be trained on, or the labelled validation
    would score recordings the student has heard (other takes of a group included)."""
    if not clips_csv.is_file():
        log.warning("%s not found: the pool cannot leave out the validation groups", clips_csv)
        return frozenset()
    with clips_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    groups = {r["group"] for r in rows if r["split"] == "val"}
    return frozenset(r["source"] for r in rows if r["group"] in groups)


class PoolSet:
    """Cached log-mel of the selected pool files, split by hash into train and validation.

    :meth:`refresh` takes in files cached since (a pool still being built and cached
    while training runs); files already loaded stay, their patches keep their indices.
    """

    def __init__(self, pool: Path, cfg: DistillConfig, features: FeatureConfig,
                 exclude: frozenset[str] = frozenset()) -> None:
        self.pool, self.cfg, self.features, self.exclude = pool, cfg, features, exclude
        self.mels: list[np.ndarray] = []
        self.teacher: list[np.ndarray] = []
        self.packages: list[str] = []
        self.loaded: set[str] = set()
        self.train = np.zeros((0, 2), dtype=np.int64)
        self.val = np.zeros((0, 2), dtype=np.int64)
        self.refresh()
        if not len(self.train):
            raise ValueError(f"{pool}: no cached pool patches; run `sed-corpus pool build` and "
                             "`sed-corpus pool cache` first")

    def refresh(self) -> int:
        """Load the selected files cached since the last call; returns how many."""
        cfg = self.cfg
        pcfg = pool_mod.PoolConfig(free_only=cfg.free_only, music_cap_hours=cfg.music_cap_hours,
                                   speech_cap_hours=cfg.speech_cap_hours)
        every = pool_mod.read_pool(self.pool)
        rows = [r for r in pool_mod.select(every, pcfg)
                if source_key(r) not in self.exclude and r["hash"] not in self.loaded]
        train_items: list[tuple[int, int]] = []
        val_items: list[tuple[int, int]] = []
        added = 0
        for r in rows:
            try:
                mel, teach = load_entry(self.pool, r["hash"])
            except FileNotFoundError:
                continue  # not cached yet
            i = len(self.mels)
            self.mels.append(mel)
            self.teacher.append(teach)
            self.packages.append(r["package"])
            self.loaded.add(r["hash"])
            added += 1
            val = _hash_percent(r["hash"]) < cfg.pool_val_percent
            (val_items if val else train_items).extend(
                (i, int(s)) for s in patch_starts(mel.shape[0], self.features))
        if train_items:
            self.train = np.concatenate([self.train, np.array(train_items, dtype=np.int64)])
        if val_items:
            self.val = np.concatenate([self.val, np.array(val_items, dtype=np.int64)])
        hours = sum(m.shape[0] for m in self.mels) / 360000
        log.info("pool: +%d files (%d of %d in the pool; %d left out as the labelled corpus's "
                 "validation groups): %.1f h, %d train and %d validation patches", added,
                 len(self.mels), len(every), sum(source_key(r) in self.exclude for r in every),
                 hours, len(self.train), len(self.val))
        return added

    def patch(self, item: np.ndarray, frames: int) -> np.ndarray:
        f, s = int(item[0]), int(item[1])
        return self.mels[f][s : s + frames]

    def cached_teacher(self, item: np.ndarray) -> np.ndarray:
        return self.teacher[int(item[0])][int(item[1]) // TEACHER_HOP_FRAMES]

    def train_hits(self, threshold: float) -> np.ndarray:
        """``(train items, classes)`` bool: the teacher's cached score >= ``threshold``."""
        n_cls = self.teacher[0].shape[1] if self.teacher else 0
        out = np.zeros((len(self.train), n_cls), dtype=bool)
        files = self.train[:, 0]
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(files)) + 1, [len(files)]])
        for a, b in itertools.pairwise(cuts):
            rows = self.train[a:b, 1] // TEACHER_HOP_FRAMES
            out[a:b] = self.teacher[int(files[a])][rows] >= threshold
        return out


class BalancedSampler:
    """Draws the pool's training items for a batch, part of them class-balanced.

    A ``fraction`` of the draws takes a class at random among those the teacher scores
    >= ``threshold`` on at least ``min_patches`` training patches, then one of those
    patches; the rest are uniform over the pool. With ``fraction`` 0 it is the uniform
    draw alone (the same random numbers as before it existed).
    """

    def __init__(self, pool: PoolSet, fraction: float, threshold: float, min_patches: int,
                 names: list[str] | None = None) -> None:
        self.pool, self.fraction = pool, fraction
        self.threshold, self.min_patches = threshold, min_patches
        self.names = names
        self.members: list[np.ndarray] = []
        self.classes = np.zeros(0, dtype=np.int64)
        self.rebuild()

    def rebuild(self) -> None:
        if self.fraction <= 0.0:
            return
        hits = self.pool.train_hits(self.threshold)
        counts = hits.sum(axis=0)
        self.classes = np.flatnonzero(counts >= self.min_patches)
        self.members = [np.flatnonzero(hits[:, c]) for c in self.classes]
        if not self.members:
            raise ValueError(f"pool_balance: no class has {self.min_patches} training patches "
                             f"scoring >= {self.threshold}; lower balance_min_patches")
        rare = self.classes[np.argsort(counts[self.classes])[:5]]
        names = self.names or [str(c) for c in range(hits.shape[1])]
        log.info("balanced draws: %d classes with >= %d patches at >= %.2f (rarest: %s)",
                 len(self.classes), self.min_patches, self.threshold,
                 ", ".join(f"{names[c]} {counts[c]}" for c in rare))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        train = self.pool.train
        if self.fraction <= 0.0:
            return train[rng.integers(len(train), size=n)]
        k = round(n * self.fraction)
        uniform = rng.integers(len(train), size=n - k)
        picks = rng.integers(len(self.members), size=k)
        balanced = np.array([m[rng.integers(len(m))] for m in (self.members[c] for c in picks)],
                            dtype=np.int64)
        return train[np.concatenate([uniform, balanced])]


class LabelledSet:
    """Labelled clips (a ``sed-train`` manifest) as cached log-mel with per-patch targets.

    Targets are over the teacher's label list; a clip's weak labels hold for all its
    patches, a strong event for the patches it overlaps by half of the shorter of the two,
    or by ``strong_overlap_s`` if that is positive and less.
    Labels the teacher does not have are ignored (counted in the log).
    """

    def __init__(self, manifest: Path, cache: Path, names: list[str], features: FeatureConfig,
                 hop_frames: int = TEACHER_HOP_FRAMES, exclude_sources: tuple[str, ...] = (),
                 strong_overlap_s: float = 0.0) -> None:
        from training.clips import read_manifest

        index = {n: i for i, n in enumerate(names)}
        clips = read_manifest(manifest)
        by_path: dict[str, list[Any]] = {}
        for c in clips:
            by_path.setdefault(str(c.path), []).append(c)
        if exclude_sources:
            left = [p for p, cs in by_path.items()
                    if any(c.source.removeprefix("scene:").startswith(exclude_sources) for c in cs)]
            for p in left:
                del by_path[p]
            log.info("%s: %d recordings left out (sources %s)", manifest, len(left), list(exclude_sources))
        self.mels: list[np.ndarray] = []
        items: list[tuple[int, int]] = []
        targets: list[np.ndarray] = []
        self.clip_targets: list[np.ndarray] = []
        self.clip_patches: list[np.ndarray] = []
        self.weak: list[np.ndarray] = []
        self.events: list[list[tuple[int, float, float]]] = []
        # (recording, onset s, label indices) of each strong event that starts inside its recording
        self.onsets: list[tuple[int, float, tuple[int, ...]]] = []
        # the same for each clip (not a scene) labelled as a whole: where its sound starts
        self.clip_onsets: list[tuple[int, float, tuple[int, ...]]] = []
        ignored: set[str] = set()
        fs = features.hop_length / features.sample_rate
        patch_s = features.patch_frames * fs
        self.patch_s, self.strong_overlap_s = patch_s, strong_overlap_s
        for path, cs in sorted(by_path.items()):
            mel = self._mel(Path(path), cache, features)
            i = len(self.mels)
            self.mels.append(mel)
            weak = np.zeros(len(names), dtype=np.float32)
            events: list[tuple[int, float, float]] = []
            for c in cs:
                for lab in c.labels:
                    if lab not in index:
                        ignored.add(lab)
                    elif c.onset is None or c.offset is None:
                        weak[index[lab]] = 1.0
                    else:
                        events.append((index[lab], c.onset, c.offset))
                known = tuple(index[lab] for lab in c.labels if lab in index)
                if c.onset is not None and c.onset > 0.0 and known:
                    self.onsets.append((i, float(c.onset), known))
            if all(not c.source.startswith("scene:") and not c.onset for c in cs):
                labs = tuple(sorted({int(j) for j in np.flatnonzero(weak)} | {ev[0] for ev in events}))
                if labs:
                    self.clip_onsets.append((i, sound_start(mel, features), labs))
            self.weak.append(weak)
            self.events.append(events)
            clip_t = weak.copy()
            first = len(items)
            for lab_i, _, _ in events:
                clip_t[lab_i] = 1.0
            for s in patch_starts(mel.shape[0], features, hop_frames):
                items.append((i, int(s)))
                targets.append(self._targets(i, s * fs, s * fs + patch_s))
            self.clip_targets.append(clip_t)
            self.clip_patches.append(np.arange(first, len(items)))
        if ignored:
            log.info("%s: %d label(s) the teacher lacks ignored: %s", manifest, len(ignored),
                     sorted(ignored))
        self.items = np.array(items, dtype=np.int64)
        self.targets = np.stack(targets)
        log.info("%s: %d recordings, %d patches", manifest, len(self.mels), len(self.items))

    @staticmethod
    def _mel(path: Path, cache: Path, features: FeatureConfig) -> np.ndarray:
        key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                           .encode()).hexdigest()[:20]
        out = cache / key[:2] / f"{key}.npy"
        if out.is_file():
            return np.load(out)
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        if sr != features.sample_rate:
            raise ValueError(f"{path}: {sr} Hz; the corpus holds {features.sample_rate} Hz clips")
        mel = features_of(wave.mean(axis=1), features).astype(np.float16)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.npy")  # two runs may share the cache
        np.save(tmp, mel)
        tmp.replace(out)
        return mel

    def patch(self, k: int, frames: int) -> np.ndarray:
        f, s = self.items[k]
        return self.mels[int(f)][int(s) : int(s) + frames]

    def onset_patch(self, k: int, tail_s: float, features: FeatureConfig,
                    floor: float = 1.0, clip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Strong event ``k``'s onset (:attr:`onsets`; with ``clip``, clip ``k``'s sound's
        start, :attr:`clip_onsets`): the patch that ends ``tail_s`` after it starts (silence
        in front where the recording began later), and its targets: the recording's weak
        labels, its other strong events the patch overlaps by the usual rule, and this
        event's labels at ``floor`` (1: taught as surely as the whole sound)."""
        i, on, labs = (self.clip_onsets if clip else self.onsets)[k]
        mel = self.mels[i]
        fs = features.hop_length / features.sample_rate
        frames = features.patch_frames
        end = min(mel.shape[0], max(1, round((on + tail_s) / fs)))
        start = end - frames
        x = mel[max(0, start) : end]
        if start < 0:
            silence = np.full((-start, mel.shape[1]), math.log(features.log_offset), dtype=mel.dtype)
            x = np.concatenate([silence, x])
        t = self._targets(i, start * fs, end * fs, skip=(None if clip else on, labs))
        t[list(labs)] = np.maximum(t[list(labs)], floor)
        return x, t

    def _targets(self, i: int, a: float, b: float,
                 skip: tuple[float | None, tuple[int, ...]] | None = None) -> np.ndarray:
        """Recording ``i``'s targets for the patch ``[a, b)`` s: its weak labels, and each
        strong event the patch overlaps by half of the shorter of the two (or by
        ``strong_overlap_s`` if that is positive and less); ``skip`` (onset, labels): leave
        out the events of those labels that start there (onset None: wherever they start)."""
        t = self.weak[i].copy()
        for lab_i, on, off in self.events[i]:
            if skip is not None and lab_i in skip[1] and skip[0] in (None, on):
                continue
            need = 0.5 * min(off - on, self.patch_s)
            if self.strong_overlap_s > 0:
                need = min(need, self.strong_overlap_s)
            if min(b, off) - max(a, on) >= need:
                t[lab_i] = 1.0
        return t


def sound_start(mel: np.ndarray, features: FeatureConfig, below_peak_db: float = 20.0) -> float:
    """Seconds into a clip's log-mel ``(frames, mels)`` where its sound starts: the first
    frame whose mel power is within ``below_peak_db`` of the loudest frame's."""
    x = mel.astype(np.float32)
    m = x.max(axis=1, keepdims=True)
    power = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))  # log of each frame's summed mel power
    first = int(np.argmax(power >= power.max() - below_peak_db * math.log(10.0) / 10.0))
    return first * features.hop_length / features.sample_rate


def _mel_centres_hz(features: FeatureConfig) -> np.ndarray:
    fb = mel_filterbank(features)  # (n_fft/2+1, n_mels)
    freqs = np.linspace(0, features.sample_rate / 2, fb.shape[0])
    return (fb * freqs[:, None]).sum(axis=0) / np.maximum(fb.sum(axis=0), 1e-12)


class MelAugment:
    """The augmentations of the module docstring, on ``(B, T, F)`` float32 log-mel."""

    def __init__(self, cfg: MelAugmentConfig, features: FeatureConfig,
                 beds: list[np.ndarray]) -> None:
        self.cfg, self.features = cfg, features
        self.offset = features.log_offset
        self.centres = _mel_centres_hz(features)
        self.beds = beds  # magnitude mel (frames, F) of each bed kind at 0 dBFS RMS
        frame_s = features.hop_length / features.sample_rate
        self.frame_s = frame_s

    def magnitude(self, logmel: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(logmel.astype(np.float32)) - self.offset, 0.0)

    def log(self, mag: np.ndarray) -> np.ndarray:
        return np.log(mag + self.offset).astype(np.float32)

    def bed(self, rng: np.random.Generator, n: int, frames: int) -> np.ndarray:
        """``(n, frames, F)`` magnitude of random beds at random levels."""
        lo, hi = self.cfg.bed_dbfs
        out = np.empty((n, frames, self.features.n_mels), dtype=np.float32)
        for i in range(n):
            b = self.beds[int(rng.integers(len(self.beds)))]
            s = int(rng.integers(0, b.shape[0] - frames + 1))
            out[i] = b[s : s + frames] * 10 ** (rng.uniform(lo, hi) / 20)
        return out

    def reverb(self, mag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A late tail per band: power decaying 60 dB in RT60 (shorter at high bands)."""
        power = mag.astype(np.float64) ** 2
        rt60 = rng.uniform(*self.cfg.rt60_s) * (1.0 - 0.5 * self.centres / self.centres.max())
        a = 10 ** (-6.0 * self.frame_s / rt60)  # per-frame power decay, (F,)
        tail = np.zeros_like(power)
        acc = np.zeros(power.shape[1])
        for t in range(power.shape[0]):
            tail[t] = acc
            acc = a * (acc + power[t])
        # tail[t] = sum_k>=1 a^k P[t-k]; its energy for an impulse is a / (1 - a), so
        # (1 - a) / a scales it to the drawn wet-to-dry energy ratio
        wet = 10 ** (rng.uniform(*self.cfg.wet_db) / 10) * (1 - a) / a
        return np.sqrt(power + wet * tail).astype(np.float32)

    def band_limit(self, mag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cut = float(rng.choice(self.cfg.band_limit_hz))
        roll = np.clip((cut - self.centres) / 300.0 + 0.5, 0.0, 1.0)
        return mag * roll[None, :].astype(np.float32)

    def onset_shift(self, mag: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> None:
        """Move each chosen patch's start to its last 30-500 ms, in place, silence before.

        A live onset is decided on the first patches that hold only the start of a sound;
        the teacher needs ~50 ms of it there, a student trained on whole patches ~300 ms.
        What fills the silence is the mixing partner and the bed, as in a room.
        """
        frames = mag.shape[1]
        lo, hi = (max(1, round(s / self.frame_s)) for s in self.cfg.onset_tail_s)
        for i in np.flatnonzero(chosen):
            tail = int(rng.integers(lo, min(hi, frames - 1) + 1))
            mag[i, frames - tail :] = mag[i, :tail].copy()
            mag[i, : frames - tail] = 0.0

    def __call__(self, x: np.ndarray, partner: np.ndarray, alone: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment ``x`` ``(B, T, F)`` log-mel; ``partner`` are mixing candidates (same shape).

        ``alone`` (B,) bool: replace the patch by a bed. Returns the augmented log-mel,
        ``(B,)`` bool: which examples took the partner's labels too, and ``(B,)`` bool:
        which were shifted to a late onset (their own weak labels no longer hold: the
        teacher alone says what the short tail is).
        """
        cfg = self.cfg
        b, frames, _ = x.shape
        mag = self.magnitude(x)
        gains = np.asarray(10 ** (rng.uniform(*cfg.gain_db, size=b) / 20), dtype=np.float32)
        mag *= gains[:, None, None]
        late: np.ndarray = np.asarray(rng.random(b) < cfg.onset_prob) & ~alone
        if late.any():
            self.onset_shift(mag, late, rng)
        mixed: np.ndarray = np.asarray(rng.random(b) < cfg.mix_prob)
        if mixed.any():
            pm = self.magnitude(partner[mixed])
            g = np.asarray(10 ** (rng.uniform(*cfg.mix_gain_db, size=int(mixed.sum())) / 20),
                           dtype=np.float32)
            mag[mixed] = np.sqrt(mag[mixed] ** 2 + (pm * g[:, None, None]) ** 2)
        under: np.ndarray = np.asarray(rng.random(b) < cfg.bed_prob) | alone | late
        if under.any():
            beds = self.bed(rng, int(under.sum()), frames)
            mag[under] = np.sqrt(np.where(alone[under, None, None], 0.0, mag[under] ** 2)
                                 + beds ** 2)
        for i in np.flatnonzero(rng.random(b) < cfg.reverb_prob):
            mag[i] = self.reverb(mag[i], rng)
        for i in np.flatnonzero(rng.random(b) < cfg.band_limit_prob):
            mag[i] = self.band_limit(mag[i], rng)
        return self.log(mag), mixed & ~alone, late


def make_beds(features: FeatureConfig, seconds: float = 30.0, seed: int = 12345) -> list[np.ndarray]:
    """Magnitude mel of each noise-bed kind scaled to 0 dBFS RMS, ``seconds`` long.

    Made at -30 dBFS (the generators refuse levels that clip) and scaled up in the mel
    domain, where amplitude scales linearly: :meth:`MelAugment.bed` applies the level.
    """
    from detector.frontend.features import log_mel
    from training.corpus import noise

    rng = np.random.default_rng(seed)
    n = round(seconds * features.sample_rate)
    out = []
    for kind in noise.KINDS:
        wave = noise.bed(kind, n, -30.0, rng, features.sample_rate)
        mag = np.maximum(np.exp(log_mel(wave, features)) - features.log_offset, 0.0)
        out.append((mag * 10 ** (30 / 20)).astype(np.float32))
    return out


def targets(soft: np.ndarray, hard: np.ndarray, alone: np.ndarray, bed_keep: np.ndarray) -> np.ndarray:
    """The teacher's scores ``(B, L)`` with our labels ``hard`` as floors; on a bed alone
    (``alone`` (B,) bool) only the classes where ``bed_keep`` (L,) is 1 keep the teacher's score."""
    out = np.array(soft, dtype=np.float32)
    out[alone] *= bed_keep
    return np.maximum(out, hard)


def noise_classes() -> frozenset[str]:
    """The classes a steady bed may be: ``detector/data/event_labels_never.txt``."""
    from detector.model.labels import NEVER_EVENT_LABELS, read_label_file

    return frozenset(read_label_file(NEVER_EVENT_LABELS))


def _onset_floor(cfg: DistillConfig, tail_s: float) -> float:
    """:attr:`DistillConfig.onset_event_floor` at ``tail_s``: linear over the tails."""
    (lo, hi), (w_lo, w_hi) = cfg.onset_event_tail_s, cfg.onset_event_floor
    return w_hi if hi <= lo else w_lo + (w_hi - w_lo) * min(1.0, max(0.0, (tail_s - lo) / (hi - lo)))


def _lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _init_from(model: SedNet, path: str, mids: list[str]) -> int:
    """Copy a checkpoint's body and the head rows of the labels it shares (by mid)."""
    ckpt = torch.load(_expand(path), map_location="cpu", weights_only=True)
    state = ckpt["model"]
    theirs = {lab["mid"]: i for i, lab in enumerate(ckpt["labels"])}
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v
    shared = [(i, theirs[m]) for i, m in enumerate(mids) if m in theirs]
    for name in (f"{layer}.{p}" for layer in PER_LABEL_LAYERS for p in ("weight", "bias")):
        if name in state and name in own:
            for i, j in shared:
                own[name][i] = state[name][j]
    model.load_state_dict(own)
    return len(shared)


def _teacher_agreement(student: np.ndarray, teacher: np.ndarray, min_pos: int = 5) -> float:
    """Macro AP of the student against the teacher's decisions (> 0.5), over classes
    with at least ``min_pos`` positive patches."""
    pos = teacher > 0.5
    keep = pos.sum(axis=0) >= min_pos
    if not keep.any():
        return float("nan")
    ap = average_precision(student[:, keep], pos[:, keep].astype(np.float32))
    return float(np.nanmean(ap))


def train(cfg: DistillConfig, resume: bool = False) -> Path:
    """Run (or resume) a distillation; returns the path of ``last.pt``."""
    from detector.model.yamnet import EMBEDDING_DIM, YamnetScorer, find_yamnet, how_to_fetch

    torch.set_num_threads(cfg.threads)
    features = FeatureConfig()
    ypath = find_yamnet(None)
    if ypath is None:
        raise FileNotFoundError(how_to_fetch())
    use_embedding = cfg.embedding_weight > 0
    teacher = YamnetScorer(ypath, threads=cfg.teacher_threads, embedding=use_embedding)
    labels = [{"name": lab.name, "mid": lab.mid} for lab in teacher.contract.labels]
    names = [lab["name"] for lab in labels]
    bed_keep = np.ones(len(names), dtype=np.float32)  # per class, kept of the teacher on a bed alone
    if cfg.bed_alone_targets == "noise_classes":
        keep = noise_classes()
        bed_keep = np.array([n in keep for n in names], dtype=np.float32)
        log.info("a bed alone is taught %d noise, hum, silence and room classes, 0 elsewhere",
                 int(bed_keep.sum()))
    aug_cfg = MelAugmentConfig.from_dict(cfg.augment)
    exclude = validation_sources(_expand(cfg.val_manifest).parent / "clips.csv")
    pool = PoolSet(_expand(cfg.pool), cfg, features, exclude)
    cache = _expand(cfg.mel_cache)
    lab = LabelledSet(_expand(cfg.train_manifest), cache, names, features,
                      exclude_sources=tuple(cfg.exclude_sources), strong_overlap_s=cfg.strong_overlap_s)
    val = LabelledSet(_expand(cfg.val_manifest), cache, names, features)
    beds = make_beds(features)
    mel_aug = MelAugment(aug_cfg, features, beds)
    spec = SpecAugment.from_config(
        dataclasses.replace(AugmentConfig(), **aug_cfg.spec_augment), features.log_offset)

    model = SedNet(PRESETS[cfg.preset], len(labels), features)
    out = _expand(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The teacher's embedding as a second target: a linear map from the student's patch
    # embedding to YAMNet's 1024 dimensions, used in training only (not exported).
    proj = nn.Linear(model.embed_dim, EMBEDDING_DIM) if use_embedding else None
    params = list(model.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch, step, best = 0, 0, -1.0
    last = out / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        if proj is not None:
            if "embed_proj" not in ck:
                raise ValueError(f"{last} was trained without embedding_weight; resume it without, or start afresh")
            proj.load_state_dict(ck["embed_proj"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = int(ck["epoch"]), int(ck["step"])
        history = list(ck.get("history", []))
        best = max([h.get("score", -1.0) for h in history] + [-1.0])
        log.info("resumed %s at epoch %d (step %d)", last, start_epoch, step)
    elif cfg.init_from:
        n = _init_from(model, cfg.init_from, [lb["mid"] for lb in labels])
        log.info("initialised from %s: body and %d head rows", cfg.init_from, n)

    frames = features.patch_frames
    total = cfg.epochs * cfg.steps_per_epoch
    n_lab = round(cfg.batch_size * cfg.labelled_fraction)
    n_alone = max(1, round(cfg.batch_size * cfg.bed_alone_fraction))
    n_pool = cfg.batch_size - n_lab - n_alone
    clip_share = cfg.onset_clip_share if lab.clip_onsets else 0.0
    if clip_share and not lab.onsets:  # clip onsets are the only ones there are
        clip_share = 1.0
    n_onset = round(n_lab * cfg.onset_events) if lab.onsets or clip_share else 0
    if cfg.onset_events > 0 and not n_onset:
        log.warning("onset_events = %g, but %s holds no strong event that starts inside its "
                    "recording (nor clips, with onset_clip_share): no onset examples",
                    cfg.onset_events, cfg.train_manifest)
    summary: dict[str, Any] = {"pool_train_patches": len(pool.train),
               "pool_val_patches": len(pool.val),
               "labelled_patches": len(lab.items), "val_recordings": len(val.mels),
               "strong_onsets": len(lab.onsets), "clip_onsets": len(lab.clip_onsets),
               "onset_examples_per_batch": n_onset, "onset_clip_share": clip_share,
               "teacher": teacher.contract.model_version, "beds": len(beds)}
    sampler = BalancedSampler(pool, cfg.pool_balance, cfg.balance_threshold,
                              cfg.balance_min_patches, names)
    for epoch in range(start_epoch, cfg.epochs):
        if epoch > start_epoch and pool.refresh():
            sampler.rebuild()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        t0, seen, loss_sum, emb_sum = time.monotonic(), 0, 0.0, 0.0
        for _ in range(cfg.steps_per_epoch):
            if cfg.pool_balance > 0.0:  # beds alone replace their patch: no need to balance them
                pi = np.concatenate([sampler.draw(rng, n_pool),
                                     pool.train[rng.integers(len(pool.train), size=n_alone)]])
            else:
                pi = sampler.draw(rng, n_pool + n_alone)
            li = rng.integers(len(lab.items), size=n_lab - n_onset)
            onset_x, onset_t = [], []
            if n_onset:  # (drawn in this order so that runs without clip onsets keep their draws)
                from_clip = rng.random(n_onset) < clip_share if clip_share else np.zeros(n_onset, bool)
                ks = rng.integers(len(lab.onsets), size=n_onset) if lab.onsets else np.zeros(n_onset, int)
                kc = rng.integers(len(lab.clip_onsets), size=n_onset) if clip_share else ks
                for j in range(n_onset):
                    tail = float(rng.uniform(*cfg.onset_event_tail_s))
                    clip = bool(from_clip[j])
                    ox, ot = lab.onset_patch(int(kc[j] if clip else ks[j]), tail, features,
                                             _onset_floor(cfg, tail), clip=clip)
                    onset_x.append(ox)
                    onset_t.append(ot)
            x = np.stack([pool.patch(it, frames) for it in pi]
                         + [lab.patch(int(k), frames) for k in li] + onset_x).astype(np.float32)
            hard = np.zeros((cfg.batch_size, len(names)), dtype=np.float32)
            hard[n_pool + n_alone : cfg.batch_size - n_onset] = lab.targets[li]
            if n_onset:
                hard[cfg.batch_size - n_onset :] = np.stack(onset_t)
            alone = np.zeros(cfg.batch_size, dtype=bool)
            alone[n_pool : n_pool + n_alone] = True
            perm = rng.permutation(cfg.batch_size)
            partner = x[perm]
            own = hard.copy()
            xa, took, late = mel_aug(x, partner, alone, rng)
            own[late] = 0.0  # a shifted patch keeps only its first 30-500 ms: teacher only
            hard = np.where(took[:, None], np.maximum(own, hard[perm]), own)
            hard[alone] = 0.0
            if proj is not None:
                soft, t_emb = teacher.score_and_embed(xa)
            else:
                soft, t_emb = teacher.score(xa), None
            target = torch.from_numpy(targets(soft, hard, alone, bed_keep))
            inp = spec(torch.from_numpy(xa))
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg.warmup_steps, cfg.lr)
            logits, emb = model.forward_with_embedding(inp)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
            if proj is not None and t_emb is not None:
                cos = nn.functional.cosine_similarity(proj(emb), torch.from_numpy(t_emb), dim=1, eps=1e-6)
                emb_loss = (1.0 - cos).mean()
                emb_sum += float(emb_loss.item()) * cfg.batch_size
                loss = loss + cfg.embedding_weight * emb_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            seen += cfg.batch_size
            loss_sum += float(loss.item()) * cfg.batch_size
            if step % 50 == 0:
                log.info("step %d: loss %.4f, %.0f examples/s", step, loss_sum / seen,
                         seen / max(time.monotonic() - t0, 1e-9))
        entry: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                                 "examples_per_s": seen / max(time.monotonic() - t0, 1e-9),
                                 "lr": opt.param_groups[0]["lr"]}
        if proj is not None:
            entry["train_embedding_cosine_distance"] = emb_sum / max(seen, 1)
        entry.update(evaluate(model, pool, val, features, cfg.val_patches, cfg.seed))
        entry["score"] = entry["val_clip_map"] + entry["pool_teacher_map"]
        summary.update(pool_files=len(pool.mels), pool_train_patches=len(pool.train),
                       pool_val_patches=len(pool.val))
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1,
                 ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "epoch"))
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                "step": step, "history": history, "labels": labels,
                "features": features.to_dict(), "model_config": PRESETS[cfg.preset].to_dict(),
                "train_config": {"recipe": "distill", **cfg.to_dict()},
                "augment_config": dataclasses.asdict(aug_cfg), "data_summary": summary,
                "git_revision": _git_revision()}
        if proj is not None:
            ckpt["embed_proj"] = proj.state_dict()
        tmp = last.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(last)
        if entry["score"] > best:
            best = entry["score"]
            torch.save(ckpt, out / "best.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return last


def _git_revision() -> str:
    from training.export import git_revision

    return git_revision()


@torch.no_grad()
def evaluate(model: SedNet, pool: PoolSet, val: LabelledSet, features: FeatureConfig,
             limit: int, seed: int) -> dict[str, float]:
    """Teacher agreement on held-back pool patches, and clip mAP on labelled validation."""
    model.eval()
    frames = features.patch_frames
    rng = np.random.default_rng(seed)
    items = pool.val if len(pool.val) <= limit else pool.val[rng.choice(len(pool.val), limit,
                                                                       replace=False)]
    out: dict[str, float] = {}
    if len(items):
        x = np.stack([pool.patch(it, frames) for it in items]).astype(np.float32)
        s = np.concatenate([torch.sigmoid(model(torch.from_numpy(x[i : i + 256]))).numpy()
                            for i in range(0, len(x), 256)])
        t = np.stack([pool.cached_teacher(it) for it in items]).astype(np.float32)
        out["pool_teacher_map"] = _teacher_agreement(s, t)
    else:
        out["pool_teacher_map"] = float("nan")
    x = np.stack([val.patch(k, frames) for k in range(len(val.items))]).astype(np.float32)
    s = np.concatenate([torch.sigmoid(model(torch.from_numpy(x[i : i + 256]))).numpy()
                        for i in range(0, len(x), 256)])
    clip_s = np.stack([s[p].max(axis=0) for p in val.clip_patches])
    clip_t = np.stack(val.clip_targets)
    keep = clip_t.sum(axis=0) > 0
    out["val_clip_map"] = float(np.nanmean(average_precision(clip_s[:, keep], clip_t[:, keep])))
    out["val_labels"] = float(keep.sum())
    model.train()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="TOML (keys of DistillConfig)")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                   help="override config keys, e.g. epochs=2 out_dir='\"runs/x\"'")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    train(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
