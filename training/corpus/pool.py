"""The pool: every recording Debian ships (and ``../shared/data``), decoded once, for distillation.

Labels are scarce here; recorded sound is not. YAMNet can score any patch, so every
recording is training signal. The pool is that audio, without labels:

``sed-corpus pool build POOL`` (:func:`build`)
    for each package of ``pool_packages.csv`` (the survey's 110 packages and the 23 the
    labelled corpus uses, less the held-out and reserved ones): ``apt-get download``,
    ``dpkg -x``, every audio file (inside ``.zip``/``.pk3``/``.wz`` archives too) decoded
    to 16 kHz mono, silent and sub-0.1 s files dropped, exact PCM duplicates dropped
    (the first package in file order keeps it), FLAC into ``POOL/audio/<package>/``. One
    ``POOL/done/<package>.csv`` per finished package, so an interrupted build resumes
    where it stopped.
``sed-corpus pool cache POOL`` (:mod:`training.corpus.pool_cache`)
    log-mel frames and YAMNet's 521 scores per patch, keyed by content hash.
``sed-corpus pool report POOL``
    the mix by package and by kind (events / speech / music), before and after the caps.

The kind of a file comes from its package (``speech``, ``music`` or ``events``) and, in
an ``events`` or ``mixed`` package, from its path (``music/``, ``tunes/``, ``bgm/`` ... are
music; ``*_desc.ogg``, ``speech/``, ``words/`` ... are speech). Music and speech are capped (:class:`PoolConfig`) so that they do not swamp the
rest; everything else is kept.

Held-out packages (``split = heldout`` in ``pool_packages.csv``) are never decoded into the
pool: they are for leave-package-out evaluation only. The reserved packages
(:data:`training.corpus.packages.RESERVED`) cannot even be downloaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
import subprocess
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from training.corpus import packages
from training.corpus.build import is_noncommercial

__all__ = [
    "DEFAULT_PACKAGES",
    "KINDS",
    "POOL_COLUMNS",
    "PoolConfig",
    "PoolPackage",
    "build",
    "decode_bytes",
    "file_kind",
    "load_packages",
    "read_pool",
    "report_markdown",
    "select",
    "shared_rows",
]

log = logging.getLogger(__name__)

DEFAULT_PACKAGES = Path(__file__).with_name("pool_packages.csv")
KINDS = ("events", "speech", "music")
PACKAGE_KINDS = ("events", "speech", "music", "mixed")
SPLITS = ("train", "heldout", "skip")
POOL_COLUMNS = ("hash", "path", "package", "relpath", "seconds", "source_rate", "kind",
                "license", "noncommercial")
AUDIO_EXT = frozenset({"wav", "ogg", "oga", "flac", "mp3", "opus", "au", "aiff", "aif", "wv",
                       "g722", "gsm"})
ARCHIVE_EXT = frozenset({"zip", "pk3", "pk4", "wz"})
#: raw codecs soundfile cannot read, as ffmpeg's input format names
FFMPEG_FORMATS = {"g722": "g722", "gsm": "gsm"}
MUSIC_PATH = re.compile(r"(^|/)(music|musics|tunes|bgm|soundtrack|songs|tracks|moh)(/|$)|"
                        r"(^|/)[^/]*(music|theme|anthem|intro_?song)[^/]*\.[a-z0-9]+$",
                        re.IGNORECASE)
SPEECH_PATH = re.compile(r"_desc(_[a-z]{2,3})?\.[a-z0-9]+$|"
                         r"(^|/)(speech|words?|spoken|narration|dialogs?|prompts?)(/|$)",
                         re.IGNORECASE)


@dataclass(frozen=True)
class PoolConfig:
    """Build and selection parameters; seconds unless named otherwise."""

    sample_rate: int = 16000
    min_seconds: float = 0.1
    max_seconds: float = 600.0  # longer files are cut into their first max_seconds
    silence_rms: float = 10 ** (-65 / 20)  # below -65 dBFS RMS a file is taken as silence
    music_cap_hours: float = 9.0
    speech_cap_hours: float = 9.0
    # music decoded per package, in path order: the caps keep 9 h of the archive's 24 h,
    # so decoding all of it would be wasted
    music_per_package_hours: float = 0.75
    free_only: bool = False  # leave out every non-commercial source


@dataclass(frozen=True)
class PoolPackage:
    """One row of ``pool_packages.csv``."""

    package: str
    kind: str
    split: str
    note: str


class PoolError(ValueError):
    """The package list or a pool folder is malformed."""


def load_packages(path: Path = DEFAULT_PACKAGES) -> list[PoolPackage]:
    """The package list, checked: known kinds and splits, no duplicates, none reserved."""
    out: list[PoolPackage] = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            p = PoolPackage(row["package"].strip(), row["kind"].strip(), row["split"].strip(),
                            row.get("note", "").strip())
            if p.kind not in PACKAGE_KINDS:
                raise PoolError(f"{path}:{n}: kind {p.kind!r}; accepted: {PACKAGE_KINDS}")
            if p.split not in SPLITS:
                raise PoolError(f"{path}:{n}: split {p.split!r}; accepted: {SPLITS}")
            out.append(p)
    names = [p.package for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PoolError(f"{path}: packages listed twice: {', '.join(dup)}")
    packages.refuse_reserved(names)
    return out


def file_kind(package_kind: str, relpath: str) -> str:
    """``events``, ``speech`` or ``music`` for one file of a package of ``package_kind``."""
    if package_kind in ("speech", "music"):
        return package_kind
    if MUSIC_PATH.search(relpath):
        return "music"
    return "speech" if SPEECH_PATH.search(relpath) else "events"


def decode_bytes(data: bytes, ext: str, sample_rate: int) -> tuple[np.ndarray, int]:
    """Decode one file's bytes to mono float32 at ``sample_rate``; returns (wave, source rate).

    soundfile first; ffmpeg for the raw telephony codecs and whatever soundfile cannot
    read (WavPack, some MP3s). Raises ``ValueError`` naming the format when neither can.
    """
    ext = ext.lower()
    if ext not in FFMPEG_FORMATS:
        try:
            wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            return _resample(wave.mean(axis=1), sr, sample_rate), sr
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass
    if shutil.which("ffmpeg") is None:
        raise ValueError(f".{ext}: soundfile cannot read it and ffmpeg is not installed "
                         "(apt-get install ffmpeg)")
    fmt = ["-f", FFMPEG_FORMATS[ext]] if ext in FFMPEG_FORMATS else []
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *fmt, "-i", "pipe:0", "-vn", "-ac", "1",
         "-ar", str(sample_rate), "-f", "f32le", "pipe:1"],
        input=data, capture_output=True, check=False, timeout=300)
    if proc.returncode != 0 or not proc.stdout:
        raise ValueError(f".{ext}: neither soundfile nor ffmpeg decodes it "
                         f"({proc.stderr.decode(errors='replace').strip()[-200:]})")
    src = {"g722": 16000, "gsm": 8000}.get(ext, 0)
    return np.frombuffer(proc.stdout, dtype="<f4").copy(), src


def _resample(wave: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed FIR): about 1 ms a second of audio."""
    if sr == rate:
        return np.ascontiguousarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), int(rate))
    return resample_poly(np.asarray(wave, dtype=np.float32), rate // g, int(sr) // g).astype(
        np.float32)


def _ext(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _audio_files(root: Path) -> Iterator[tuple[str, bytes]]:
    """``(relpath, bytes)`` of every audio file under ``root``, archives opened in place."""
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = f.relative_to(root).as_posix()
        ext = _ext(f.name)
        if ext in AUDIO_EXT:
            yield rel, f.read_bytes()
        elif ext in ARCHIVE_EXT and zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                for info in sorted(z.infolist(), key=lambda i: i.filename):
                    if not info.is_dir() and _ext(info.filename) in AUDIO_EXT:
                        yield f"{rel}!{info.filename}", z.read(info)


def pcm_hash(wave: np.ndarray) -> str:
    """Content hash of 16-bit PCM (what the FLAC stores): equal audio, equal hash."""
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767).astype("<i2")
    return hashlib.sha1(pcm.tobytes()).hexdigest()[:20]


def _write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=POOL_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def read_pool(pool: Path) -> list[dict[str, str]]:
    """Every row of every finished package (``POOL/done/*.csv``), in file order."""
    rows: list[dict[str, str]] = []
    for part in sorted((pool / "done").glob("*.csv")):
        with part.open(newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    return rows


def _decode_package(pkg: PoolPackage, root: Path, pool: Path, cfg: PoolConfig,
                    seen: set[str]) -> tuple[list[dict[str, object]], dict[str, int]]:
    """Decode one unpacked package; every file's outcome is journalled as it happens
    (``POOL/partial/<package>.jsonl``), so a killed build resumes at the next file."""
    journal = pool / "partial" / f"{pkg.package}.jsonl"
    rows: list[dict[str, object]] = []
    skipped: dict[str, int] = defaultdict(int)
    done_rel: set[str] = set()
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            done_rel.add(entry["relpath"])
            if "row" in entry:
                rows.append(entry["row"])
                seen.add(str(entry["row"]["hash"]))
            else:
                skipped[entry["skip"]] += 1
        log.info("%s: resuming after %d files", pkg.package, len(done_rel))
    journal.parent.mkdir(parents=True, exist_ok=True)
    music_s = sum(float(str(r["seconds"])) for r in rows if r["kind"] == "music")
    with journal.open("a", encoding="utf-8") as jf:

        def note(rel: str, **entry: object) -> None:
            jf.write(json.dumps({"relpath": rel, **entry}) + "\n")
            jf.flush()

        for rel, data in _audio_files(root):
            if rel in done_rel:
                continue
            kind = file_kind(pkg.kind, rel)
            reason = _skip_reason(kind, music_s, cfg)
            wave = np.zeros(0, np.float32)
            src_rate = 0
            if reason is None:
                try:
                    wave, src_rate = decode_bytes(data, _ext(rel), cfg.sample_rate)
                except (ValueError, subprocess.TimeoutExpired) as e:
                    log.debug("%s:%s: %s", pkg.package, rel, e)
                    reason = "undecodable"
            wave = np.nan_to_num(wave[: round(cfg.max_seconds * cfg.sample_rate)])
            if reason is None:
                reason = _level_reason(wave, cfg)
            h = pcm_hash(wave) if reason is None else ""
            if reason is None and h in seen:
                reason = "duplicate"
            if reason is not None:
                skipped[reason] += 1
                note(rel, skip=reason)
                continue
            seen.add(h)
            if kind == "music":
                music_s += wave.size / cfg.sample_rate
            out = pool / "audio" / pkg.package / f"{h}.flac"
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out), np.clip(wave, -1.0, 1.0), cfg.sample_rate, subtype="PCM_16",
                     format="FLAC")
            row: dict[str, object] = {
                "hash": h, "path": out.relative_to(pool).as_posix(), "package": pkg.package,
                "relpath": rel, "seconds": round(wave.size / cfg.sample_rate, 3),
                "source_rate": src_rate, "kind": kind, "license": "debian", "noncommercial": 0}
            rows.append(row)
            note(rel, row=row)
    return rows, dict(skipped)


def _skip_reason(kind: str, music_s: float, cfg: PoolConfig) -> str | None:
    if kind == "music" and music_s >= cfg.music_per_package_hours * 3600:
        return "music over the package's share"
    return None


def _level_reason(wave: np.ndarray, cfg: PoolConfig) -> str | None:
    if wave.size < cfg.min_seconds * cfg.sample_rate:
        return "too short"
    if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < cfg.silence_rms:
        return "silent"
    return None


def shared_rows(shared: Path, pool: Path, cfg: PoolConfig, seen: set[str]) -> list[dict[str, object]]:
    """The recordings of ``shared/*/manifest.csv`` (already 16 kHz mono), hashed and deduped.

    Rows point at the shared files in place (``path`` absolute). ``noncommercial`` is 1
    when the manifest's licence has ``NC``; ``cfg.free_only`` leaves those out.
    """
    rows: list[dict[str, object]] = []
    for manifest in sorted(shared.glob("*/manifest.csv")):
        folder = manifest.parent
        with manifest.open(newline="", encoding="utf-8") as f:
            for row in sorted(csv.DictReader(f), key=lambda r: r["path"]):
                nc = int(is_noncommercial(row.get("license", "")))
                if nc and cfg.free_only:
                    continue
                wave, sr = sf.read(str(folder / row["path"]), dtype="float32", always_2d=True)
                wave = _resample(wave.mean(axis=1), sr, cfg.sample_rate)
                if wave.size < cfg.min_seconds * cfg.sample_rate:
                    continue
                h = pcm_hash(wave)
                if h in seen:
                    continue
                seen.add(h)
                kind = "speech" if folder.name == "fsdd" else "events"
                rows.append({"hash": h, "path": str((folder / row["path"]).resolve()),
                             "package": f"shared:{folder.name}", "relpath": row["path"],
                             "seconds": round(wave.size / cfg.sample_rate, 3), "source_rate": sr,
                             "kind": kind, "license": row.get("license", ""),
                             "noncommercial": nc})
    return rows


def build(pool: Path, deb_cache: Path, cfg: PoolConfig, shared: Path | None = None,
          package_list: Path = DEFAULT_PACKAGES, only: list[str] | None = None) -> list[dict[str, str]]:
    """Decode every ``train`` package of ``package_list`` (or ``only`` those) into ``pool``.

    Resumable: a package with ``POOL/done/<package>.csv`` is not decoded again, and its
    hashes still count for deduplication of the packages after it.
    """
    pkgs = [p for p in load_packages(package_list) if p.split == "train"]
    if only is not None:
        packages.refuse_reserved(only)
        unknown = sorted(set(only) - {p.package for p in pkgs})
        if unknown:
            raise PoolError(f"not train packages of {package_list}: {', '.join(unknown)}")
        pkgs = [p for p in pkgs if p.package in only]
    seen = {r["hash"] for r in read_pool(pool)}
    for pkg in pkgs:
        done = pool / "done" / f"{pkg.package}.csv"
        if done.is_file():
            continue
        deb = packages.download(pkg.package, deb_cache)
        root = packages.unpack(deb, pool / "unpacked" / pkg.package)
        try:
            rows, skipped = _decode_package(pkg, root, pool, cfg, seen)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        _write_rows(done, rows)
        (pool / "partial" / f"{pkg.package}.jsonl").unlink(missing_ok=True)
        log.info("%s: %d files, %.2f h kept; skipped %s", pkg.package, len(rows),
                 sum(float(str(r["seconds"])) for r in rows) / 3600, skipped or "none")
    if shared is not None and only is None:
        done = pool / "done" / "~shared.csv"
        if not done.is_file():
            _write_rows(done, shared_rows(shared, pool, cfg, seen))
    return read_pool(pool)


def select(rows: list[dict[str, str]], cfg: PoolConfig) -> list[dict[str, str]]:
    """The training selection: every ``events`` file; music and speech up to their caps.

    Capped kinds are taken round-robin over packages in a hash order, so that no
    package fills a cap alone and adding a package does not reshuffle the others.
    """
    keep = [r for r in rows if r["kind"] == "events"
            and not (cfg.free_only and int(r["noncommercial"]))]
    for kind, cap in (("speech", cfg.speech_cap_hours), ("music", cfg.music_cap_hours)):
        by_pkg: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in rows:
            if r["kind"] == kind and not (cfg.free_only and int(r["noncommercial"])):
                by_pkg[r["package"]].append(r)
        queues = [sorted(v, key=lambda r: r["hash"]) for _, v in sorted(by_pkg.items())]
        total = 0.0
        while total < cap * 3600 and any(queues):
            for q in queues:
                if q and total < cap * 3600:
                    r = q.pop(0)
                    keep.append(r)
                    total += float(r["seconds"])
    return keep


def _hours(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(KINDS, 0.0))
    for r in rows:
        out[r["package"]][r["kind"]] += float(r["seconds"]) / 3600
    return out


def report_markdown(rows: list[dict[str, str]], chosen: list[dict[str, str]]) -> str:
    """The mix by package and by kind, all decoded vs selected for training, in hours."""
    every, sel = _hours(rows), _hours(chosen)
    lines = ["# The pool", "",
             f"{len(rows)} files decoded, {sum(float(r['seconds']) for r in rows) / 3600:.2f} h; "
             f"{len(chosen)} selected, {sum(float(r['seconds']) for r in chosen) / 3600:.2f} h.", "",
             "| kind | decoded h | selected h |", "|---|---:|---:|"]
    for k in KINDS:
        a = sum(v[k] for v in every.values())
        b = sum(v[k] for v in sel.values())
        lines.append(f"| {k} | {a:.2f} | {b:.2f} |")
    lines += ["", "| package | events h | speech h | music h | selected h |",
              "|---|---:|---:|---:|---:|"]
    for pkg in sorted(every, key=lambda p: -sum(every[p].values())):
        v = every[pkg]
        lines.append(f"| {pkg} | {v['events']:.3f} | {v['speech']:.3f} | {v['music']:.3f} | "
                     f"{sum(sel.get(pkg, {}).values()):.3f} |")
    return "\n".join(lines) + "\n"
