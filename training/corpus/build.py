"""Assemble the training corpus: packages + shared data -> dedup -> split -> clips, manifests.

Everything is deterministic: file lists are sorted, random choices come from
generators seeded by :attr:`BuildConfig.seed` and stable hashes, and FLAC output is
bit-exact, so two builds from the same inputs give identical manifests and clips.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from detector.frontend.features import FeatureConfig
from training.corpus import dedup, packages, scenes, soundfont, synth
from training.corpus.mapping import DEFAULT_MAPPING, Rule, group_key, load_mapping, match
from training.ontology import Ontology

__all__ = [
    "CI_PACKAGES",
    "MANIFEST_COLUMNS",
    "NOT_IMPLIED",
    "BuildConfig",
    "Candidate",
    "build",
    "complete_labels",
    "decode",
    "write_manifest_rows",
]

log = logging.getLogger(__name__)

CI_PACKAGES = ("bucklespring-data", "minetest-data", "sound-theme-freedesktop")
MANIFEST_COLUMNS = ("path", "labels", "onset", "offset", "source", "split")
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac", ".aiff", ".aif", ".opus", ".mp3")
SPLITS = ("train", "val")
LABEL_SEP = "|"
THIN_CLIPS = 10
#: (child, parent) edges of the AudioSet ontology that our clips do not satisfy: the
#: soundfont's cowbell is a percussion instrument, not cattle; our howls are wolves';
#: our (synthetic) horns could be any vehicle's, and a thunder clip is not a whole storm.
NOT_IMPLIED = (("Cowbell", "Cattle, bovinae"), ("Howl", "Dog"),
               ("Vehicle horn, car horn, honking", "Car"), ("Thunder", "Thunderstorm"))


@dataclass(frozen=True)
class BuildConfig:
    """Build parameters; seconds unless named otherwise."""

    subset: str = "full"  # "full" or "ci"
    seed: int = 0
    val_fraction: float = 0.2
    max_seconds: float = 30.0
    min_seconds: float = 0.1
    silence_peak: float = 1e-4
    synth_train: int = 60  # synthetic events per kind
    synth_val: int = 15
    synthetic_voices: bool = False  # also synth.VOICE_KINDS (meow, scream, ... train)
    free_only: bool = False  # leave out non-commercial shared data (urbansound8k, virufy)
    scenes_train: int = 600
    scenes_val: int = 150
    background_val: int = 60
    background_min_seconds: float = 3.0
    ci_shared_per_folder: int = 6
    soundfont_per_program: int = 30  # rendered clips per soundfont.INSTRUMENTS entry; 0 = none
    soundfont_package: str = "fluid-soundfont-gm"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    near: dedup.NearDupConfig = field(default_factory=dedup.NearDupConfig)
    scene: scenes.SceneConfig = field(default_factory=scenes.SceneConfig)

    @classmethod
    def for_subset(cls, subset: str, seed: int = 0) -> BuildConfig:
        """Defaults for ``full`` or the small ``ci`` subset."""
        if subset == "full":
            return cls(seed=seed)
        if subset == "ci":
            return cls(subset="ci", seed=seed, synth_train=3, synth_val=2, scenes_train=4,
                       scenes_val=4, background_val=2, background_min_seconds=0.5,
                       soundfont_per_program=1, soundfont_package="timgm6mb-soundfont")
        raise ValueError(f"subset {subset!r}; accepted: 'full', 'ci'")


@dataclass(frozen=True)
class Candidate:
    """A source file to decode, with its labels and split group."""

    origin: str  # package name, or shared-data folder name prefixed "shared:"
    relpath: str
    file: Path
    labels: tuple[str, ...]
    group: str
    role: str
    source: str
    # the labels of its training clip when some are heard only in part (mapping.PARTIAL);
    # None: the same as ``labels``
    train_labels: tuple[str, ...] | None = None


def clip_labels(c: Candidate, split: str) -> tuple[str, ...]:
    """The labels ``c``'s clip carries in ``split``: a training clip leaves out the labels
    heard only in part of it (``mapping.PARTIAL``), and the ancestors only they implied."""
    return c.train_labels if split == "train" and c.train_labels is not None else c.labels


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """Read any soundfile-supported file as mono float32 at ``sample_rate`` Hz."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wave = data.mean(axis=1)
    if sr != sample_rate:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), sr, sample_rate).numpy()
    return np.asarray(wave, dtype=np.float32)


def complete_labels(labels: Iterable[str], vocabulary: frozenset[str],
                    ontology: Ontology) -> tuple[str, ...]:
    """``labels`` plus every ontology ancestor of them that is in ``vocabulary``.

    A bark is a Dog sound and an Animal sound; a siren is an Alarm. The mapping table
    names the specific class; this adds the general ones the corpus also uses as labels
    (``vocabulary``: every label of the mapping table, the synthetic events, the
    soundfont instruments and the shared data), so that "Animal" means every animal, as
    it does in AudioSet, not only the clips a rule happened to call "Animal". Edges in
    :data:`NOT_IMPLIED` are not climbed. Order: the given labels, then the added ones.
    """
    out = list(dict.fromkeys(labels))
    for lab in list(out):
        for anc in ontology.ancestors(lab, NOT_IMPLIED):
            if anc in vocabulary and anc not in out:
                out.append(anc)
    return tuple(out)


def _vocabulary(rules: list[Rule], cands: Iterable[Candidate],
                kinds: dict[str, tuple[synth.Generator, tuple[str, ...]]]) -> frozenset[str]:
    words = {lab for r in rules for lab in r.labels}
    words.update(lab for c in cands for lab in c.labels)
    words.update(lab for _, labs in kinds.values() for lab in labs)
    words.update(lab for inst in soundfont.INSTRUMENTS for lab in inst.labels)
    return frozenset(words)


def _center_crop(wave: np.ndarray, n: int) -> np.ndarray:
    if wave.size <= n:
        return wave
    start = (wave.size - n) // 2
    return wave[start : start + n]


def _package_candidates(rules: list[Rule], package: str, root: Path) -> list[Candidate]:
    out = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if f.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        rel = f.relative_to(root).as_posix()
        rule = match(rules, package, rel)
        if rule is None or rule.excluded:
            continue
        whole = tuple(lab for lab in rule.labels if lab not in rule.partial) if rule.partial else None
        out.append(Candidate(package, rel, f, rule.labels, group_key(rule, rel), rule.role,
                             f"{package}:{rel}", whole))
    return out


_RECORDING = re.compile(r"freesound\d+")


def is_noncommercial(license_text: str) -> bool:
    """Whether a manifest's licence forbids commercial use (CC BY-NC, CC BY-NC-SA, ...)."""
    return bool(re.search(r"(^|[\s-])NC([\s-]|$)", license_text.upper()))


def shared_candidates(root: Path, per_folder: int | None = None,
                      free_only: bool = False) -> list[Candidate]:
    """Clips of every ``root/*/manifest.csv`` (columns path, labels, source, license, seconds).

    Groups: FSDD by speaker (``source`` = ``fsdd:<speaker>``); slices of one Freesound
    recording (UrbanSound8K's ``...:freesound<ID>``) together; everything else by file.
    ``per_folder`` keeps only that many rows per source group, round-robin, for the CI
    subset. ``free_only`` leaves out rows under a non-commercial licence.
    """
    out: list[Candidate] = []
    for manifest in sorted(root.glob("*/manifest.csv")):
        folder = manifest.parent
        with manifest.open(newline="", encoding="utf-8") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
        if free_only:
            rows = [r for r in rows if not is_noncommercial(r.get("license", ""))]
        if per_folder is not None:
            by_src: dict[str, list[dict[str, str]]] = defaultdict(list)
            for row in rows:
                by_src[row["source"]].append(row)
            picked: list[dict[str, str]] = []
            while len(picked) < per_folder and any(by_src.values()):
                for key in sorted(by_src):
                    if by_src[key] and len(picked) < per_folder:
                        picked.append(by_src[key].pop(0))
            rows = sorted(picked, key=lambda r: r["path"])
        for row in rows:
            labels = tuple(s for s in row["labels"].split(LABEL_SEP) if s)
            src = row["source"]
            rec = _RECORDING.search(src)
            group = (src if src.startswith("fsdd:") else
                     f"{folder.name}:{rec.group(0)}" if rec else f"{folder.name}:{row['path']}")
            out.append(Candidate(f"shared:{folder.name}", row["path"], folder / row["path"],
                                 labels, group, "event", f"{folder.name}:{row['path']}"))
    return out


def _clip_name(cand: Candidate) -> str:
    origin = cand.origin.replace("shared:", "shared-")
    rel = cand.relpath.replace("/", "__").rsplit(".", 1)[0]
    return f"clips/{origin}/{rel}.flac"


def write_manifest_rows(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """Write ``path,labels,onset,offset,source,split`` rows (csv quotes fields with commas)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow(row)


def _write_flac(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")


def _split_groups(groups: dict[str, list[int]], labels: list[tuple[str, ...]],
                  cfg: BuildConfig) -> dict[str, str]:
    """Group -> split, stratified by each group's rarest label, deterministic."""
    label_groups: Counter[str] = Counter()
    for members in groups.values():
        for lab in {lab for i in members for lab in labels[i]}:
            label_groups[lab] += 1
    by_primary: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        labs = sorted({lab for i in members for lab in labels[i]})
        primary = min(labs, key=lambda lab: (label_groups[lab], lab))
        by_primary[primary].append(g)
    split: dict[str, str] = {}
    for primary in sorted(by_primary):
        gs = sorted(by_primary[primary], key=lambda g: (_stable_int(cfg.seed, "split", g), g))
        n_val = round(cfg.val_fraction * len(gs)) if len(gs) >= 2 else 0
        n_val = max(n_val, 1) if len(gs) >= 2 else 0
        for k, g in enumerate(gs):
            split[g] = "val" if k < n_val else "train"
    return split


def build(out: Path, shared_data: Path, deb_cache: Path, cfg: BuildConfig,
          mapping: Path = DEFAULT_MAPPING, extra_data: Path | None = None) -> dict[str, object]:
    """Build the corpus into ``out``; returns the ``corpus.json`` summary."""
    if not shared_data.is_dir():
        raise FileNotFoundError(
            f"shared data folder {shared_data} not found; pass --shared-data PATH "
            "(a folder with donateacry/ and fsdd/, each holding manifest.csv)")
    rules = load_mapping(mapping)
    if cfg.soundfont_per_program > 0:
        soundfont.require_fluidsynth()  # fail before any download
    wanted = CI_PACKAGES if cfg.subset == "ci" else tuple(sorted({r.package for r in rules}))
    # DATA.md's evaluation packages: fail before anything is downloaded or written
    folders = [d for d in (shared_data, extra_data) if d is not None and d.is_dir()]
    packages.refuse_reserved([*wanted, *(p.name for d in folders for p in d.iterdir())])
    sr = cfg.features.sample_rate
    for sub in ("clips", "scenes", "unpacked"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    versions: dict[str, str] = {}
    cands: list[Candidate] = []
    for pkg in wanted:
        deb = packages.download(pkg, deb_cache)
        versions[pkg] = packages.deb_version(deb)
        root = packages.unpack(deb, out / "unpacked" / pkg)
        found = _package_candidates(rules, pkg, root)
        log.info("%s %s: %d files mapped", pkg, versions[pkg], len(found))
        cands.extend(found)
    per = cfg.ci_shared_per_folder if cfg.subset == "ci" else None
    cands.extend(shared_candidates(shared_data, per, cfg.free_only))
    if extra_data is not None:
        cands.extend(shared_candidates(extra_data, free_only=cfg.free_only))
    ontology = Ontology.load()
    kinds = synth.kinds(cfg.synthetic_voices)
    vocab = _vocabulary(rules, cands, kinds)
    cands = [replace(c, labels=complete_labels(c.labels, vocab, ontology),
                     train_labels=None if c.train_labels is None
                     else complete_labels(c.train_labels, vocab, ontology)) for c in cands]
    synth_labels = {k: complete_labels(labs, vocab, ontology) for k, (_, labs) in kinds.items()}

    waves: list[np.ndarray] = []
    kept: list[Candidate] = []
    skipped: Counter[str] = Counter()
    for i, c in enumerate(cands):
        try:
            w = decode(c.file, sr)
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            log.warning("cannot decode %s: %s", c.source, e)
            skipped["undecodable"] += 1
            continue
        w = _center_crop(w, round(cfg.max_seconds * sr))
        if w.size < cfg.min_seconds * sr:
            skipped["too_short"] += 1
            continue
        if float(np.max(np.abs(w))) < cfg.silence_peak:
            skipped["silent"] += 1
            continue
        waves.append(w)
        kept.append(c)
        if (i + 1) % 500 == 0:
            log.info("decoded %d/%d", i + 1, len(cands))
    shutil.rmtree(out / "unpacked")

    uf = dedup.UnionFind()
    for c in kept:
        uf.find(c.group)
    drop: set[int] = set()
    dup_rows: list[dict[str, object]] = []
    hashes = [dedup.pcm_hash(w) for w in waves]
    for idx in dedup.exact_groups(hashes).values():
        for j in idx[1:]:
            drop.add(j)
            uf.union(kept[idx[0]].group, kept[j].group)
            dup_rows.append({"dropped": kept[j].source, "kept": kept[idx[0]].source,
                             "kind": "exact", "distance": "0.0000"})
    live = [i for i in range(len(kept)) if i not in drop]
    prints = np.stack([dedup.fingerprint(waves[i], cfg.features) for i in live]) if live else \
        np.zeros((0, 2 * cfg.features.n_mels), np.float32)
    secs = np.array([waves[i].size / sr for i in live])
    near = dedup.near_duplicate_pairs(prints, secs, cfg.near)
    near_drop: set[int] = set()
    for a, b in near:
        ia, ib = live[a], live[b]
        uf.union(kept[ia].group, kept[ib].group)
        near_drop.add(ib)
        dist = float(np.sqrt(np.mean((prints[a] - prints[b]) ** 2)))
        dup_rows.append({"dropped": kept[ib].source, "kept": kept[ia].source, "kind": "near",
                         "distance": f"{dist:.4f}"})
    final = [i for i in live if i not in near_drop]
    log.info("dedup: %d exact, %d near duplicates dropped; %d clips", len(drop), len(near_drop),
             len(final))

    groups: dict[str, list[int]] = defaultdict(list)
    for i in final:
        groups[uf.find(kept[i].group)].append(i)
    labels = [c.labels for c in kept]
    split_of = _split_groups(groups, labels, cfg)

    clip_rows: list[dict[str, object]] = []
    index_rows: list[dict[str, object]] = []
    for i in final:
        c = kept[i]
        name = _clip_name(c)
        _write_flac(out / name, waves[i], sr)
        g = uf.find(c.group)
        row: dict[str, object] = {  # the split was drawn on the full labels
            "path": name, "labels": LABEL_SEP.join(clip_labels(c, split_of[g])), "onset": "0.000",
            "offset": f"{waves[i].size / sr:.3f}", "source": c.source, "split": split_of[g]}
        clip_rows.append(row)
        index_rows.append({**row, "group": g, "role": c.role, "sha256": hashes[i]})

    synth_rows: list[dict[str, object]] = []
    for split, count in (("train", cfg.synth_train), ("val", cfg.synth_val)):
        for kind in sorted(kinds):
            for k in range(count):
                w = synth.generate(kind, _stable_int(cfg.seed, "synth", split, kind, k) % 2**32, sr)
                name = f"clips/synthetic/{kind}/{split}_{k:03d}.flac"
                _write_flac(out / name, w, sr)
                synth_rows.append({
                    "path": name, "labels": LABEL_SEP.join(synth_labels[kind]), "onset": "0.000",
                    "offset": f"{w.size / sr:.3f}", "source": f"synthetic:{kind}", "split": split})

    synth_rows += _soundfont_rows(out, deb_cache, cfg, versions,
                                  lambda labs: complete_labels(labs, vocab, ontology))
    manifests = {s: [r for r in clip_rows + synth_rows if r["split"] == s] for s in SPLITS}
    for s in SPLITS:
        write_manifest_rows(out / f"{s}.csv", manifests[s])
    _write_index(out / "clips.csv", index_rows)
    with (out / "duplicates.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=("dropped", "kept", "kind", "distance"),
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(dup_rows)
    scene_counts = _write_scenes(out, manifests, index_rows, cfg)
    # What sed-train trains on: the clips and the training soundscapes (strong labels).
    with (out / "train_all.csv").open("w", encoding="utf-8") as f:
        f.write((out / "train.csv").read_text(encoding="utf-8"))
        f.writelines((out / "scenes_train.csv").read_text(encoding="utf-8").splitlines(True)[1:])
    summary = _summary(cfg, versions, manifests, len(cands), skipped, len(drop), len(near_drop),
                       len(groups), scene_counts, out)
    (out / "corpus.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out / "REPORT.md").write_text(report_markdown(summary))
    return summary


def _soundfont_rows(out: Path, deb_cache: Path, cfg: BuildConfig, versions: dict[str, str],
                    complete: Callable[[tuple[str, ...]], tuple[str, ...]],
                    ) -> list[dict[str, object]]:
    """Rendered General MIDI phrases, training split only (they share samples)."""
    if cfg.soundfont_per_program <= 0:
        return []
    pkg = cfg.soundfont_package
    deb = packages.download(pkg, deb_cache)
    versions[pkg] = packages.deb_version(deb)
    sf2 = soundfont.find_sf2(packages.unpack(deb, out / "unpacked" / pkg))
    sr = cfg.features.sample_rate
    jobs = [(inst, k) for inst in soundfont.INSTRUMENTS for k in range(cfg.soundfont_per_program)]

    def render(job: tuple[soundfont.Instrument, int]) -> np.ndarray:
        inst, k = job
        seed = _stable_int(cfg.seed, "soundfont", inst.name, k) % 2**32
        return soundfont.generate(inst, seed, sf2, sr)

    rows: list[dict[str, object]] = []
    # fluidsynth runs as a subprocess per clip: one per core; results come back in order
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for (inst, k), w in zip(jobs, pool.map(render, jobs), strict=True):
            name = f"clips/soundfont/{inst.name}/train_{k:03d}.flac"
            _write_flac(out / name, w, sr)
            rows.append({"path": name, "labels": LABEL_SEP.join(complete(inst.labels)),
                         "onset": "0.000", "offset": f"{w.size / sr:.3f}",
                         "source": f"synthetic:soundfont:{inst.name}", "split": "train"})
            if k == cfg.soundfont_per_program - 1:
                log.info("soundfont %s: %d clips", inst.name, cfg.soundfont_per_program)
    shutil.rmtree(out / "unpacked")
    return rows


def _write_index(path: Path, rows: list[dict[str, object]]) -> None:
    cols = (*MANIFEST_COLUMNS, "group", "role", "sha256")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _load_sources(out: Path, rows: list[dict[str, object]]) -> list[scenes.SourceClip]:
    return [scenes.SourceClip(sf.read(str(out / str(r["path"])), dtype="float32")[0],
                              tuple(s for s in str(r["labels"]).split(LABEL_SEP) if s),
                              str(r["source"])) for r in rows]


def _write_scenes(out: Path, manifests: dict[str, list[dict[str, object]]],
                  index: list[dict[str, object]], cfg: BuildConfig) -> dict[str, int]:
    sc = cfg.scene
    role = {str(r["path"]): str(r["role"]) for r in index}
    counts: dict[str, int] = {}
    jobs = (("scenes_train", "train", cfg.scenes_train, None),
            ("scenes_val", "val", cfg.scenes_val, None),
            ("background_val", "val", cfg.background_val, 0))
    for name, split, count, n_events in jobs:
        rows = manifests[split]
        ev = [r for r in rows if role.get(str(r["path"]), "event") in ("event", "both")]
        bg = [r for r in rows if role.get(str(r["path"])) in ("background", "both")
              and float(str(r["offset"])) >= cfg.background_min_seconds]
        events = _load_sources(out, ev) if n_events is None else []
        backgrounds = _load_sources(out, bg)
        rng = np.random.default_rng(_stable_int(cfg.seed, "scenes", name) % 2**32)
        out_rows: list[dict[str, object]] = []
        for k in range(count):
            scene = scenes.make_scene(rng, events, backgrounds, sc, n_events)
            path = f"scenes/{name}/{k:05d}.flac"
            _write_flac(out / path, scene.wave, sc.sample_rate)
            evs = scene.events or (scenes.SceneEvent((), 0.0, sc.seconds, "none"),)
            for e in evs:
                out_rows.append({"path": path, "labels": LABEL_SEP.join(e.labels),
                                 "onset": f"{e.onset:.3f}", "offset": f"{e.offset:.3f}",
                                 "source": f"scene:{e.source}", "split": split})
        write_manifest_rows(out / f"{name}.csv", out_rows)
        counts[name] = count
        counts[f"{name}_events"] = sum(1 for r in out_rows if r["labels"])
    return counts


def _summary(cfg: BuildConfig, versions: dict[str, str],
             manifests: dict[str, list[dict[str, object]]], n_candidates: int,
             skipped: Counter[str], n_exact: int, n_near: int, n_groups: int,
             scene_counts: dict[str, int], out: Path) -> dict[str, object]:
    per: dict[str, dict[str, dict[str, float]]] = {}
    for split, rows in manifests.items():
        for r in rows:
            synthetic = str(r["source"]).startswith("synthetic:")
            secs = float(str(r["offset"])) - float(str(r["onset"]))
            for lab in str(r["labels"]).split(LABEL_SEP):
                d = per.setdefault(lab, {}).setdefault(
                    split, {"real_clips": 0, "real_seconds": 0.0, "synthetic_clips": 0})
                if synthetic:
                    d["synthetic_clips"] += 1
                else:
                    d["real_clips"] += 1
                    d["real_seconds"] = round(d["real_seconds"] + secs, 3)
    hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(out.glob("*.csv"))}
    real_seconds = {s: round(sum(float(str(r["offset"])) for r in rows
                                 if not str(r["source"]).startswith("synthetic:")), 3)
                    for s, rows in manifests.items()}
    return {
        "config": {k: v for k, v in asdict(cfg).items()},
        "package_versions": versions,
        "candidates": n_candidates,
        "skipped": dict(sorted(skipped.items())),
        "exact_duplicates_dropped": n_exact,
        "near_duplicates_dropped": n_near,
        "split_groups": n_groups,
        "clips": {s: len(rows) for s, rows in manifests.items()},
        "real_seconds": real_seconds,
        "labels": dict(sorted(per.items())),
        "scenes": scene_counts,
        "manifest_sha256": hashes,
    }


def report_markdown(summary: dict[str, object]) -> str:
    """Human-readable per-label table of a ``corpus.json`` summary; thin labels flagged."""
    labels = summary["labels"]
    if not isinstance(labels, dict):
        raise ValueError("corpus.json has no per-label table")
    lines = [
        "# Corpus report", "",
        f"Real seconds per split: {summary['real_seconds']}; clips: {summary['clips']}; "
        f"exact duplicates dropped: {summary['exact_duplicates_dropped']}, "
        f"near duplicates dropped: {summary['near_duplicates_dropped']}; "
        f"split groups: {summary['split_groups']}; scenes: {summary['scenes']}.", "",
        f"**THIN** = fewer than {THIN_CLIPS} real training clips.", "",
        "| label | train real clips | train real min | train synthetic | val real clips "
        "| val real min | val synthetic | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    empty = {"real_clips": 0, "real_seconds": 0.0, "synthetic_clips": 0}
    for lab in sorted(labels, key=lambda k: (labels[k].get("train", empty)["real_clips"], k)):
        tr, va = labels[lab].get("train", empty), labels[lab].get("val", empty)
        note = "**THIN**" if tr["real_clips"] < THIN_CLIPS else ""
        if va["real_clips"] == 0:
            note = (note + " no real val").strip()
        lines.append(
            f"| {lab} | {tr['real_clips']} | {tr['real_seconds'] / 60:.1f} | {tr['synthetic_clips']} "
            f"| {va['real_clips']} | {va['real_seconds'] / 60:.1f} | {va['synthetic_clips']} | {note} |")
    versions = summary.get("package_versions", {})
    if isinstance(versions, dict):
        lines += ["", "## Package versions", ""]
        lines += [f"- {k} {v}" for k, v in sorted(versions.items())]
    return "\n".join(lines) + "\n"
