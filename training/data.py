"""Training data: clips and manifests, a decoded-waveform cache, patch datasets, sampling.

The public face of the data side of ``training``. Clip/manifest handling lives in
:mod:`training.clips`, dataset layouts in :mod:`training.layouts`, the ontology in
:mod:`training.ontology`; all are re-exported here.

Flow: ``read_manifest`` (or a layout reader) -> ``dedup_clips`` -> ``group_split`` ->
``WaveformStore.build`` (decode + resample once, cached as ``.npy``) -> ``PatchDataset``
(random 0.975-s patches with patch-level targets, or every patch for evaluation) ->
``BalancedSampler`` (rare labels drawn as often as common ones).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import Dataset, Sampler

from detector.frontend.features import FeatureConfig
from training.clips import (
    LABEL_SEPARATOR,
    MANIFEST_COLUMNS,
    Clip,
    ManifestError,
    content_hash,
    dedup_clips,
    group_split,
    read_manifest,
    resolve_labels,
    write_manifest,
)
from training.layouts import (
    AUDIO_EXTENSIONS,
    LayoutError,
    esc50_table,
    read_audioset_strong,
    read_audioset_weak,
    read_esc50,
    read_folder_per_label,
    read_fsd50k,
)
from training.ontology import LabelError, Ontology

__all__ = [
    "AUDIO_EXTENSIONS",
    "LABEL_SEPARATOR",
    "MANIFEST_COLUMNS",
    "PATCH_MODES",
    "AudioError",
    "BalancedSampler",
    "Clip",
    "LabelError",
    "LayoutError",
    "ManifestError",
    "Ontology",
    "PatchDataset",
    "WaveTransform",
    "WaveformStore",
    "content_hash",
    "decode_audio",
    "dedup_clips",
    "esc50_table",
    "group_split",
    "read_audioset_strong",
    "read_audioset_weak",
    "read_esc50",
    "read_folder_per_label",
    "read_fsd50k",
    "read_manifest",
    "resolve_labels",
    "write_manifest",
]

log = logging.getLogger(__name__)

PATCH_MODES = ("random", "all")
_INDEX_NAME = "index.json"
_SEED_BITS = 32


class AudioError(ValueError):
    """An audio file cannot be decoded into a usable waveform."""


class WaveTransform(Protocol):
    """Random change to one example waveform ``(n,)`` and its target ``(L,)``
    (e.g. :class:`training.augment.WaveAugment`).

    ``apply`` returns the new wave and the target, changed where the transform changes
    what the example holds (a noise bed replacing it has no labels). A Protocol, so this
    module need not import the augmentations (they import it).
    """

    def apply(self, wave: np.ndarray, target: np.ndarray,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode any libsndfile format, average channels, resample -> ``(n,)`` float32 at ``sample_rate``."""
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{path}: cannot decode ({e}); accepted: {'/'.join(AUDIO_EXTENSIONS)} files readable "
            f"by libsndfile {sf.__libsndfile_version__}"
        ) from e
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({e})") from e
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    if sr != sample_rate and mono.size:
        log.debug("%s: resampling %d Hz -> %d Hz", path, sr, sample_rate)
        mono = torchaudio.functional.resample(torch.from_numpy(mono), sr, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


class WaveformStore:
    """Decoded 16-kHz mono float32 waveforms cached as ``<cache_dir>/<sha1>_<rate>.npy``.

    The key is the content hash of the audio file plus ``cfg.sample_rate``, so a copy of
    a file shares its cache entry and a re-run decodes nothing. ``index.json`` remembers
    ``path|size|mtime -> hash`` to skip re-hashing unchanged files. ``get`` returns a
    read-only memory map.
    """

    def __init__(self, cache_dir: str | Path, cfg: FeatureConfig | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg or FeatureConfig()
        self._index: dict[str, str] = {}
        index_path = self.cache_dir / _INDEX_NAME
        if index_path.is_file():
            try:
                self._index = dict(json.loads(index_path.read_text("utf-8")))
            except (json.JSONDecodeError, ValueError, TypeError) as e:
                log.warning("%s unreadable (%s); re-hashing files", index_path, e)
        self._maps: dict[Path, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in worker processes, never pickled
        return state

    def _signature(self, path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def cache_path(self, path: str | Path) -> Path:
        """Cache file of one audio file (hashing it when the index does not know it)."""
        path = Path(path)
        try:
            sig = self._signature(path)
        except OSError as e:
            raise AudioError(f"{path}: cannot open ({e})") from e
        digest = self._index.get(sig)
        if digest is None:
            digest = content_hash(path)
            self._index[sig] = digest
        return self.cache_dir / f"{digest}_{self.cfg.sample_rate}.npy"

    def _ensure(self, path: Path) -> tuple[Path, bool]:
        target = self.cache_path(path)
        if target.is_file():
            return target, False
        wave = decode_audio(path, self.cfg.sample_rate)
        tmp = target.with_name(f"{target.stem}.{os.getpid()}.{id(wave)}.tmp.npy")
        np.save(tmp, wave)
        os.replace(tmp, target)
        return target, True

    def build(self, clips: Sequence[Clip | Path], workers: int = 1) -> int:
        """Decode every not-yet-cached file (``workers`` threads); returns how many were decoded."""
        paths = list(dict.fromkeys(Path(c.path if isinstance(c, Clip) else c) for c in clips))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(self._ensure, paths))
        else:
            results = [self._ensure(p) for p in paths]
        decoded = sum(new for _, new in results)
        log.info("waveform cache %s: %d files, %d decoded, %d reused",
                 self.cache_dir, len(paths), decoded, len(paths) - decoded)
        self._save_index()
        return decoded

    def _save_index(self) -> None:
        tmp = self.cache_dir / f"{_INDEX_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self._index, sort_keys=True), "utf-8")
        os.replace(tmp, self.cache_dir / _INDEX_NAME)

    def get(self, clip: Clip | str | Path) -> np.ndarray:
        """Waveform ``(n_samples,)`` float32 at ``cfg.sample_rate`` (memory-mapped, read-only)."""
        path = Path(clip.path if isinstance(clip, Clip) else clip)
        wave = self._maps.get(path)
        if wave is None:
            target, _ = self._ensure(path)
            wave = np.load(target, mmap_mode="r")
            self._maps[path] = wave
        return wave

    def seconds(self, clip: Clip | str | Path) -> float:
        """Duration in seconds."""
        return self.get(clip).shape[0] / self.cfg.sample_rate


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed-length waveform patches with multi-hot targets.

    Clips sharing a path form one *recording*: weak labels hold for all of it, strong
    rows add events ``(label index, onset s, offset s)``. An event's label is on in a
    patch when the overlap is at least ``min_overlap`` times the shorter of event and patch.

    * ``mode="random"``: item ``i`` is recording ``i``; a random crop of
      ``cfg.patch_samples`` samples (short recordings are placed at a random offset in
      zeros). With probability ``event_crop_prob`` the crop is centred near a random event.
    * ``mode="all"``: every patch of every recording at ``hop_s`` (default half a patch),
      plus a last patch flush with the end; ``clip_index[i]`` names its recording and
      ``patch_start[i]`` its first sample. With ``pad_edges`` the patches start half a
      patch before the recording and end half a patch after it (zeros outside), so patch
      centres cover the whole recording (event boundaries near the edges stay resolvable).

    ``__getitem__`` -> ``(wave (patch_samples,) float32, target (L,) float32)``.
    ``targets`` is ``(len(self), L)``: per recording (random) or per patch (all).
    Labels outside ``label_names`` are ignored.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        store: WaveformStore,
        label_names: Sequence[str],
        cfg: FeatureConfig | None = None,
        augment: WaveTransform | None = None,
        seed: int = 0,
        mode: str = "random",
        hop_s: float | None = None,
        min_overlap: float = 0.5,
        event_crop_prob: float = 0.5,
        pad_edges: bool = False,
    ) -> None:
        if mode not in PATCH_MODES:
            raise ValueError(f"mode={mode!r}; accepted: {list(PATCH_MODES)}")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names has duplicates: {list(label_names)}")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap={min_overlap}; accepted: 0 < min_overlap <= 1")
        self.cfg = cfg or store.cfg
        self.store, self.augment, self.seed, self.mode = store, augment, seed, mode
        self.label_names = list(label_names)
        self.min_overlap, self.event_crop_prob = min_overlap, event_crop_prob
        self.pad_edges = pad_edges
        index = {n: i for i, n in enumerate(self.label_names)}
        by_path: dict[Path, int] = {}
        self.paths: list[Path] = []
        weak: list[np.ndarray] = []
        self.events: list[list[tuple[int, float, float]]] = []
        ignored: set[str] = set()
        for c in clips:
            r = by_path.setdefault(Path(c.path), len(self.paths))
            if r == len(self.paths):
                self.paths.append(Path(c.path))
                weak.append(np.zeros(len(self.label_names), dtype=np.float32))
                self.events.append([])
            for lab in c.labels:
                if lab not in index:
                    ignored.add(lab)
                elif c.onset is None or c.offset is None:
                    weak[r][index[lab]] = 1.0
                else:
                    self.events[r].append((index[lab], c.onset, c.offset))
        if ignored:
            log.info("PatchDataset: ignoring %d label(s) not in label_names: %s",
                     len(ignored), sorted(ignored))
        self.weak = np.stack(weak) if weak else np.zeros((0, len(self.label_names)), np.float32)
        self.clip_targets = self.weak.copy()
        for r, evs in enumerate(self.events):
            for lab_i, _, _ in evs:
                self.clip_targets[r, lab_i] = 1.0
        hop_s = self.cfg.patch_seconds / 2 if hop_s is None else hop_s
        self.hop_samples = max(1, round(hop_s * self.cfg.sample_rate))
        if mode == "all":
            items = [(r, s) for r, p in enumerate(self.paths)
                     for s in self._starts(self.store.get(p).shape[0])]
            self.clip_index = np.array([r for r, _ in items], dtype=np.int64)
            self.patch_start = np.array([s for _, s in items], dtype=np.int64)
            self.targets = (np.stack([self._target(r, s) for r, s in items]) if items
                            else np.zeros((0, len(self.label_names)), np.float32))
        else:
            self.clip_index = np.arange(len(self.paths), dtype=np.int64)
            self.patch_start = np.zeros(len(self.paths), dtype=np.int64)
            self.targets = self.clip_targets
        self._gen: np.random.Generator | None = None
        self._gen_key: tuple[int, int] | None = None

    def _starts(self, n: int) -> list[int]:
        p = self.cfg.patch_samples
        if self.pad_edges:
            lo, hi = -(p // 2), n - p + p // 2
        elif n <= p:
            return [0]
        else:
            lo, hi = 0, n - p
        starts = list(range(lo, hi + 1, self.hop_samples))
        if starts[-1] != hi:
            starts.append(hi)
        return starts

    @property
    def patch_start_s(self) -> np.ndarray:
        """Start of each item's patch in seconds from its recording's start."""
        return self.patch_start / self.cfg.sample_rate

    def __len__(self) -> int:
        return len(self.clip_index)

    def _rng(self) -> np.random.Generator:
        """A generator per process: DataLoader workers get distinct, reproducible streams."""
        seed = torch.initial_seed()
        key = (os.getpid(), seed)
        if self._gen is None or self._gen_key != key:
            words = [self.seed, seed & (2**_SEED_BITS - 1), seed >> _SEED_BITS]
            self._gen, self._gen_key = np.random.default_rng(words), key
        return self._gen

    def _target(self, r: int, start: int) -> np.ndarray:
        target = self.weak[r].copy()
        sr, p = self.cfg.sample_rate, self.cfg.patch_samples
        t0, t1 = start / sr, (start + p) / sr
        for lab_i, on, off in self.events[r]:
            overlap = min(t1, off) - max(t0, on)
            if overlap > 0 and overlap >= self.min_overlap * min(off - on, p / sr):
                target[lab_i] = 1.0
        return target

    def _crop(self, wave: np.ndarray, start: int) -> np.ndarray:
        """``patch_samples`` samples from ``start`` (negative: leading zeros), zero-padded."""
        p, n = self.cfg.patch_samples, wave.shape[0]
        out = np.zeros(p, dtype=np.float32)
        lo, hi = max(start, 0), min(start + p, n)
        if hi > lo:
            out[lo - start:hi - start] = wave[lo:hi]
        return out

    def _random_start(self, r: int, n: int, rng: np.random.Generator) -> int:
        p, sr = self.cfg.patch_samples, self.cfg.sample_rate
        lo, hi = (0, n - p) if n >= p else (n - p, 0)
        evs = self.events[r]
        if evs and rng.random() < self.event_crop_prob:
            _, on, off = evs[int(rng.integers(len(evs)))]
            t = rng.uniform(on, off)
            start = round(t * sr) - int(rng.integers(p))
            return int(np.clip(start, lo, hi))
        return int(rng.integers(lo, hi + 1))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = int(self.clip_index[i])
        wave = self.store.get(self.paths[r])
        if self.mode == "random":
            rng = self._rng()
            start = self._random_start(r, wave.shape[0], rng)
            target = self._target(r, start)
        else:
            rng = None
            start = int(self.patch_start[i])
            target = self.targets[i]
        patch = self._crop(wave, start)
        if self.augment is not None:
            aug, target = self.augment.apply(patch, target, rng=rng)
            patch = np.asarray(aug, dtype=np.float32)
        return torch.from_numpy(patch), torch.from_numpy(np.array(target, dtype=np.float32))


class BalancedSampler(Sampler[int]):
    """Draws a label, then a uniform example carrying it (with replacement).

    ``power`` sets how often each label is drawn: with probability proportional to
    its example count to that power, so 0 (the default) draws every label equally
    and 1 draws labels as often as their examples occur (a uniform draw of rows,
    counted once per label they carry); 0.5 is the usual compromise. Rows with no
    positive label form one extra "background" class when
    ``include_negatives``. Each ``__iter__`` advances the epoch (or call
    :meth:`set_epoch`); with ``world_size > 1`` every rank takes the disjoint slice
    ``rank::world_size`` of the same ``num_samples * world_size`` draws.
    """

    def __init__(
        self,
        targets: np.ndarray,
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        include_negatives: bool = True,
        power: float = 0.0,
    ) -> None:
        t = np.asarray(targets)
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"targets must be a non-empty (N, L) array; got shape {t.shape}")
        if num_samples <= 0:
            raise ValueError(f"num_samples={num_samples}; accepted: > 0")
        if not 0.0 <= power <= 1.0:
            raise ValueError(f"power={power}; accepted: 0 <= power <= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}; need 0 <= rank < world_size")
        pos = t > 0
        members = [np.flatnonzero(pos[:, j]) for j in range(t.shape[1]) if pos[:, j].any()]
        negatives = np.flatnonzero(~pos.any(axis=1))
        if include_negatives and negatives.size:
            members.append(negatives)
        if not members:
            raise ValueError("targets have no positive label and include_negatives is False")
        self.counts = np.array([m.size for m in members], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.flat = np.concatenate(members)
        self.power = power
        self.probs = self.counts.astype(np.float64) ** power
        self.probs /= self.probs.sum()
        self.num_samples, self.seed = num_samples, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        total = self.num_samples * self.world_size
        if self.power == 0.0:  # the original draw, kept bit-for-bit so old runs reproduce
            cls = rng.integers(0, self.counts.size, total)
        else:
            cls = rng.choice(self.counts.size, total, p=self.probs)
        pick = self.offsets[cls] + (rng.random(total) * self.counts[cls]).astype(np.int64)
        return iter(self.flat[pick][self.rank::self.world_size].tolist())
