"""Labelled clips, the manifest CSV, duplicate removal and leak-free splits.

Manifest format (UTF-8 CSV with a header)::

    path,labels[,onset,offset,source,split]
    audio/dog1.flac,Dog,,,tuxpaint,
    audio/street.wav,"Vehicle horn, car horn, honking|/m/0bt9lr",1.25,2.0,mine,val

* ``path``: audio file, relative paths resolved against the manifest's folder.
* ``labels``: AudioSet display names or mids separated by ``|``; quote the cell when a
  name holds a comma (``"Baby cry, infant cry"``).
* ``onset``/``offset``: seconds from the file start of one *strong* event; empty for a
  weak (clip-level) label. Several rows for one path give several events.
* ``source``: recording origin used to split without leakage; ``split``: optional
  ``train``/``val``/``test``/... tag. Other columns (``license``, ``seconds``) are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.ontology import LabelError, Ontology

__all__ = [
    "LABEL_SEPARATOR",
    "MANIFEST_COLUMNS",
    "Clip",
    "ManifestError",
    "content_hash",
    "dedup_clips",
    "group_split",
    "read_manifest",
    "resolve_labels",
    "write_manifest",
]

log = logging.getLogger(__name__)

LABEL_SEPARATOR = "|"
MANIFEST_COLUMNS = ("path", "labels", "onset", "offset", "source", "split")
_REQUIRED = ("path", "labels")
_HASH_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest row (or file) is unusable; the message names file and line."""


@dataclass(frozen=True)
class Clip:
    """One labelled audio file, or one strong event inside it.

    ``labels`` are resolved AudioSet display names. ``onset``/``offset`` are seconds
    from the start of the file when the label is strong, else ``None`` (the labels hold
    for the whole file).
    """

    path: Path
    labels: tuple[str, ...]
    onset: float | None = None
    offset: float | None = None
    source: str = ""
    split: str | None = None

    @property
    def is_strong(self) -> bool:
        return self.onset is not None


def _parse_time(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number; accepted: seconds >= 0 or empty") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} {text!r}; accepted: finite seconds >= 0 or empty")
    return value


def resolve_labels(cell: str, ontology: Ontology) -> tuple[str, ...]:
    """``"Dog|/m/05tny_"`` -> resolved, de-duplicated display names (order kept)."""
    parts = [p.strip() for p in cell.split(LABEL_SEPARATOR) if p.strip()]
    if not parts:
        raise LabelError(
            f"empty labels {cell!r}; accepted: AudioSet names or mids separated by "
            f"{LABEL_SEPARATOR!r}"
        )
    return tuple(dict.fromkeys(ontology.resolve(p) for p in parts))


def read_manifest(
    path: str | Path, ontology: Ontology | None = None, check_files: bool = True
) -> list[Clip]:
    """Read a manifest CSV (module docstring) into clips, validating every row.

    Raises :class:`ManifestError` naming the file, line, what was received and what
    is accepted, for an unknown label, a missing audio file, a bad or reversed
    onset/offset, or a missing column.
    """
    path = Path(path)
    ontology = ontology or Ontology.load()
    root = path.parent
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot open manifest ({e})") from e
    clips: list[Clip] = []
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ManifestError(
                f"{path}: header {header} lacks column(s) {missing}; "
                f"accepted columns: {list(MANIFEST_COLUMNS)} (first two required)"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            try:
                clips.append(_row_to_clip(row, root, ontology, check_files))
            except (ValueError, KeyError) as e:
                raise ManifestError(f"{path}:{line}: {e}") from e
    log.info("%s: %d rows, %d files", path, len(clips), len({c.path for c in clips}))
    return clips


def _row_to_clip(
    row: dict[Any, Any], root: Path, ontology: Ontology, check_files: bool
) -> Clip:
    if None in row:
        raise ValueError(f"row has more cells than the header: extra {row[None]!r}")
    cells = {k: (v or "") for k, v in row.items() if k is not None}
    if not cells.get("path", "").strip():
        raise ValueError("empty path; accepted: an audio file path relative to the manifest")
    audio = Path(cells["path"].strip())
    audio = audio if audio.is_absolute() else root / audio
    if check_files and not audio.is_file():
        raise ValueError(f"audio file {cells['path']!r} not found (looked for {audio})")
    labels = resolve_labels(cells.get("labels", ""), ontology)
    onset = _parse_time(cells.get("onset", ""), "onset")
    offset = _parse_time(cells.get("offset", ""), "offset")
    if (onset is None) != (offset is None):
        raise ValueError(
            f"onset {cells.get('onset')!r} with offset {cells.get('offset')!r}; "
            "accepted: both empty (weak label) or both seconds (strong label)"
        )
    if onset is not None and offset is not None and offset <= onset:
        raise ValueError(f"offset {offset} <= onset {onset}; accepted: onset < offset")
    split = cells.get("split", "").strip() or None
    return Clip(audio, labels, onset, offset, cells.get("source", "").strip(), split)


def write_manifest(clips: Iterable[Clip], path: str | Path) -> Path:
    """Write clips as a manifest; paths under the manifest's folder are made relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for c in clips:
            p = Path(c.path).resolve()
            rel = p.relative_to(root) if p.is_relative_to(root) else p
            w.writerow([
                rel.as_posix(),
                LABEL_SEPARATOR.join(c.labels),
                "" if c.onset is None else repr(c.onset),
                "" if c.offset is None else repr(c.offset),
                c.source,
                c.split or "",
            ])
    os.replace(tmp, path)
    return path


def content_hash(path: str | Path) -> str:
    """SHA-1 hex digest of a file's bytes (identifies duplicates across packages)."""
    h = hashlib.sha1()
    with Path(path).open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def dedup_clips(clips: Sequence[Clip]) -> list[Clip]:
    """Fold byte-identical files onto the first path seen.

    Rows of a duplicate file are re-pointed at the first copy (so its labels join the
    first copy's labels), then identical rows are dropped. Order is kept.
    """
    first_by_hash: dict[str, Path] = {}
    canon: dict[Path, Path] = {}
    for c in clips:
        if c.path in canon:
            continue
        digest = content_hash(c.path)
        canon[c.path] = first_by_hash.setdefault(digest, c.path)
    out: dict[Clip, None] = {}
    for c in clips:
        target = canon[c.path]
        if target != c.path:
            c = Clip(target, c.labels, c.onset, c.offset, c.source, c.split)
        out.setdefault(c, None)
    dropped = len({p for p, t in canon.items() if p != t})
    if dropped:
        log.info("dedup: %d duplicate file(s) folded onto earlier copies", dropped)
    return list(out)


def group_split(
    clips: Sequence[Clip],
    val_fraction: float,
    seed: int,
    group_key: Callable[[Clip], str] = lambda c: c.source,
) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (train, val) so that no group lands in both.

    Groups are ``group_key(clip)``, merged with all rows of the same file (a file is
    never split). Whole groups are drawn in a seeded random order into val until it
    holds at least ``val_fraction`` of the rows.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}; accepted: 0 <= val_fraction < 1")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for c in clips:
        a, b = find("g:" + group_key(c)), find("p:" + str(c.path))
        if a != b:
            parent[b] = a
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(find("g:" + group_key(c)), []).append(i)
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    target = val_fraction * len(clips)
    val_idx: set[int] = set()
    for g in order:
        if len(val_idx) >= target:
            break
        val_idx.update(groups[g])
    train = [c for i, c in enumerate(clips) if i not in val_idx]
    val = [c for i, c in enumerate(clips) if i in val_idx]
    log.info("group_split: %d groups -> %d train rows, %d val rows", len(groups), len(train), len(val))
    return train, val
