"""Readers for the dataset layouts users bring, each returning :class:`~training.clips.Clip` s.

* :func:`read_folder_per_label`: ``root/<label>/**/*.wav|flac|ogg|mp3``.
* :func:`read_fsd50k`: ``FSD50K.ground_truth/{dev,eval}.csv`` + ``FSD50K.{dev,eval}_audio/``.
* :func:`read_esc50`: ``meta/esc50.csv`` + ``audio/``; categories mapped to AudioSet by
  ``training/data/esc50_to_audioset.csv``; ``fold`` becomes ``split="fold<k>"``.
* :func:`read_audioset_weak`: ``balanced_train_segments.csv`` style rows
  ``YTID, start_seconds, end_seconds, "mid,mid"`` with local 10-s segment files.
* :func:`read_audioset_strong`: ``segment_id, start_time_seconds, end_time_seconds, label``
  (tab or comma separated) with local segment files ``<segment_id>.<ext>``.

AudioSet audio is looked up in ``audio_dir`` under the first of these stems that exists,
each with any of :data:`AUDIO_EXTENSIONS`: ``<YTID>_<start ms>`` (the strong-label
``segment_id`` form, e.g. ``--PJHxphWEs_30000``), ``<YTID>_<start as written>``
(``--PJHxphWEs_30.000``), ``<YTID>_<whole seconds>`` (``--PJHxphWEs_30``), ``<YTID>``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from training.clips import Clip
from training.ontology import LabelError, Ontology

__all__ = [
    "AUDIO_EXTENSIONS",
    "LayoutError",
    "esc50_table",
    "read_audioset_strong",
    "read_audioset_weak",
    "read_esc50",
    "read_folder_per_label",
    "read_fsd50k",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MISSING_POLICIES = ("error", "skip")
_MID_FOLDER = re.compile(r"^_?([a-z])_(.+)$")
_MS_PER_S = 1000


class LayoutError(ValueError):
    """A dataset folder or its metadata does not have the expected layout."""


def _check_policy(missing: str) -> None:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}; accepted: {list(MISSING_POLICIES)}")


def _resolve_folder_label(name: str, ontology: Ontology) -> str:
    """A folder name is a display name, or a mid with ``/`` written as ``_`` (``_m_0bt9lr``)."""
    try:
        return ontology.resolve(name)
    except LabelError:
        m = _MID_FOLDER.match(name)
        if m and f"/{m[1]}/{m[2]}" in ontology:
            return ontology.resolve(f"/{m[1]}/{m[2]}")
        raise


def read_folder_per_label(
    root: str | Path, ontology: Ontology | None = None, source: str | None = None
) -> list[Clip]:
    """``root/<label>/**/<file>`` -> weak clips; ``<label>`` is a display name or a mid
    with ``/`` spelt ``_`` (``_m_0bt9lr``). ``source`` defaults to ``root``'s name."""
    root = Path(root)
    ontology = ontology or Ontology.load()
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder; expected root/<label>/<audio files>")
    clips: list[Clip] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            label = _resolve_folder_label(folder.name, ontology)
        except LabelError as e:
            raise LayoutError(f"{folder}: folder name is not a label: {e}") from e
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        clips.extend(Clip(p, (label,), source=source or root.name) for p in files)
    if not clips:
        raise LayoutError(f"{root}: no {'/'.join(AUDIO_EXTENSIONS)} files in label folders")
    return clips


def _read_rows(path: Path, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LayoutError(f"{path}: cannot read ({e})") from e
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    dialect = "excel-tab" if lines and "\t" in lines[0] else "excel"
    reader = csv.DictReader(io.StringIO("\n".join(lines)), dialect=dialect, skipinitialspace=True)
    header = [h.strip() for h in reader.fieldnames or []]
    lacking = [c for c in required if c not in header]
    if lacking:
        raise LayoutError(f"{path}: header {header} lacks {lacking}")
    reader.fieldnames = header
    return [(reader.line_num, {k: (v or "").strip() for k, v in r.items() if k}) for r in reader]


def read_fsd50k(
    root: str | Path, split: str = "dev", ontology: Ontology | None = None,
    missing: str = "error",
) -> list[Clip]:
    """FSD50K: ``root/FSD50K.ground_truth/<split>.csv`` (``fname,labels,mids[,split]``) and
    ``root/FSD50K.<split>_audio/<fname>.wav``. Labels come from ``mids``; the dev set's
    ``split`` column (train/val) is kept, eval clips get ``split="eval"``."""
    if split not in ("dev", "eval"):
        raise ValueError(f"split={split!r}; accepted: 'dev' or 'eval'")
    _check_policy(missing)
    root = Path(root)
    ontology = ontology or Ontology.load()
    meta = root / "FSD50K.ground_truth" / f"{split}.csv"
    audio_dir = root / f"FSD50K.{split}_audio"
    clips: list[Clip] = []
    skipped = 0
    for line, row in _read_rows(meta, ("fname", "mids")):
        try:
            labels = tuple(dict.fromkeys(ontology.resolve(m) for m in row["mids"].split(",") if m))
        except LabelError as e:
            raise LayoutError(f"{meta}:{line}: {e}") from e
        path = audio_dir / f"{row['fname']}.wav"
        if not path.is_file():
            if missing == "error":
                raise LayoutError(f"{meta}:{line}: audio {path} not found")
            skipped += 1
            continue
        clips.append(Clip(path, labels, source="fsd50k", split=row.get("split") or split))
    if skipped:
        log.warning("%s: %d clips skipped, audio missing", meta, skipped)
    return clips


def esc50_table(ontology: Ontology | None = None) -> dict[str, tuple[str, ...]]:
    """ESC-50 category -> AudioSet display names, from the packaged table."""
    ontology = ontology or Ontology.load()
    text = resources.files("training").joinpath("data/esc50_to_audioset.csv").read_text("utf-8")
    table: dict[str, tuple[str, ...]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["category"]] = tuple(ontology.resolve(x) for x in row["labels"].split("|"))
    return table


def read_esc50(
    root: str | Path, ontology: Ontology | None = None, missing: str = "error"
) -> list[Clip]:
    """ESC-50: ``root/meta/esc50.csv`` (``filename,fold,...,category,...,src_file``) and
    ``root/audio/<filename>``. ``split="fold<fold>"``; ``source="esc50:<src_file>"`` so
    clips cut from one Freesound recording stay in one split."""
    _check_policy(missing)
    root = Path(root)
    table = esc50_table(ontology)
    meta = root / "meta" / "esc50.csv"
    clips: list[Clip] = []
    skipped = 0
    for line, row in _read_rows(meta, ("filename", "fold", "category")):
        if row["category"] not in table:
            raise LayoutError(
                f"{meta}:{line}: category {row['category']!r} is not in the ESC-50 table; "
                f"accepted: {sorted(table)}"
            )
        path = root / "audio" / row["filename"]
        if not path.is_file():
            if missing == "error":
                raise LayoutError(f"{meta}:{line}: audio {path} not found")
            skipped += 1
            continue
        src = row.get("src_file") or row["filename"]
        clips.append(Clip(path, table[row["category"]], source=f"esc50:{src}", split=f"fold{row['fold']}"))
    if skipped:
        log.warning("%s: %d clips skipped, audio missing", meta, skipped)
    return clips


def _find_audio(audio_dir: Path, stems: Iterable[str]) -> Path | None:
    for stem in stems:
        for ext in AUDIO_EXTENSIONS:
            p = audio_dir / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _segment_stems(ytid: str, start_text: str) -> list[str]:
    start = float(start_text)
    return [
        f"{ytid}_{round(start * _MS_PER_S)}",
        f"{ytid}_{start_text}",
        f"{ytid}_{int(start)}",
        ytid,
    ]


def read_audioset_weak(
    csv_path: str | Path, audio_dir: str | Path, ontology: Ontology | None = None,
    missing: str = "skip", split: str | None = None,
) -> list[Clip]:
    """AudioSet segment CSV (``# YTID, start_seconds, end_seconds, positive_labels``) ->
    weak clips. Audio naming: module docstring. Rows without audio are skipped (and
    counted in a warning) unless ``missing="error"``: AudioSet copies are always partial."""
    _check_policy(missing)
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    ontology = ontology or Ontology.load()
    try:
        text = csv_path.read_text(encoding="utf-8")
    except OSError as e:
        raise LayoutError(f"{csv_path}: cannot read ({e})") from e
    clips: list[Clip] = []
    skipped = 0
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    for row in rows:
        line = rows.line_num
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 4:
            raise LayoutError(
                f"{csv_path}:{line}: got {row!r}; expected YTID, start_seconds, end_seconds, "
                '"mid,mid,..."'
            )
        ytid, start_text, _end, mids = row[0].strip(), row[1].strip(), row[2], row[3]
        try:
            labels = tuple(dict.fromkeys(ontology.resolve(m) for m in mids.split(",") if m.strip()))
            stems = _segment_stems(ytid, start_text)
        except (LabelError, ValueError) as e:
            raise LayoutError(f"{csv_path}:{line}: {e}") from e
        path = _find_audio(audio_dir, stems)
        if path is None:
            if missing == "error":
                raise LayoutError(f"{csv_path}:{line}: no audio for {ytid} in {audio_dir} (tried {stems})")
            skipped += 1
            continue
        clips.append(Clip(path, labels, source=f"audioset:{ytid}", split=split))
    if skipped:
        log.warning("%s: %d of %d segments skipped, audio missing in %s",
                    csv_path, skipped, skipped + len(clips), audio_dir)
    return clips


def read_audioset_strong(
    tsv_path: str | Path, audio_dir: str | Path, ontology: Ontology | None = None,
    missing: str = "skip", split: str | None = None,
) -> list[Clip]:
    """AudioSet strong labels (``segment_id, start_time_seconds, end_time_seconds, label``)
    -> one strong clip per row, times relative to the segment file ``<segment_id>.<ext>``
    in ``audio_dir`` (``segment_id`` is ``<YTID>_<start ms>``)."""
    _check_policy(missing)
    tsv_path, audio_dir = Path(tsv_path), Path(audio_dir)
    ontology = ontology or Ontology.load()
    cols = ("segment_id", "start_time_seconds", "end_time_seconds", "label")
    clips: list[Clip] = []
    found: dict[str, Path | None] = {}
    skipped = 0
    for line, row in _read_rows(tsv_path, cols):
        seg = row["segment_id"]
        try:
            label = ontology.resolve(row["label"])
            onset, offset = float(row["start_time_seconds"]), float(row["end_time_seconds"])
        except (LabelError, ValueError) as e:
            raise LayoutError(f"{tsv_path}:{line}: {e}") from e
        if not 0 <= onset < offset:
            raise LayoutError(
                f"{tsv_path}:{line}: onset {onset}, offset {offset}; accepted: 0 <= onset < offset"
            )
        if seg not in found:
            found[seg] = _find_audio(audio_dir, [seg])
        path = found[seg]
        if path is None:
            if missing == "error":
                raise LayoutError(f"{tsv_path}:{line}: no audio {seg}.* in {audio_dir}")
            skipped += 1
            continue
        ytid = seg.rsplit("_", 1)[0]
        clips.append(Clip(path, (label,), onset, offset, source=f"audioset:{ytid}", split=split))
    if skipped:
        log.warning("%s: %d events skipped, audio missing in %s", tsv_path, skipped, audio_dir)
    return clips
