"""The reviewed mapping table: which files of which package carry which AudioSet labels.

``mapping.csv`` columns:

``package``   Debian package name.
``pattern``   Python regular expression, matched with ``re.fullmatch`` against the
              file's path relative to the unpacked package root (``usr/share/...``;
              audio inside Qt ``.rcc`` bundles appears under ``<bundle>.rcc.d/``).
``labels``    AudioSet display names separated by ``|``; ``-`` excludes the files
              (a deliberate "not useful" decision, e.g. UI blips). A name ending in
              ``?`` is *heard in part* of the file (birds in some stretches of a long
              ambience): it counts for validation (a detection of it there is not a false
              alarm; the clip is a positive for AP) but is not a training target, because
              as a weak label over the whole file it teaches that the rest of the file, wind
              or rain, is that sound.
``group``     how files are grouped for the train/validation split: ``file``,
              ``stem`` (file name without a trailing take number such as ``.2`` or
              ``_03``), ``dir`` (the containing folder, e.g. one speaker), ``package``,
              or ``match`` (the text the pattern's named group ``(?P<g>...)`` matched,
              e.g. the language code of a description = one speaker).
``role``      ``event`` (foreground), ``background`` (usable under scenes) or ``both``.
``checked``   how the rule was spot-checked; ``notes``: free text.

Rules are tried in file order; the first match wins.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "DEFAULT_MAPPING",
    "GROUP_MODES",
    "ROLES",
    "MappingError",
    "Rule",
    "group_key",
    "load_label_names",
    "load_mapping",
    "match",
]

DEFAULT_MAPPING = Path(__file__).with_name("mapping.csv")
DEFAULT_ONTOLOGY = Path(__file__).resolve().parent.parent / "data" / "ontology.json"
GROUP_MODES = ("file", "stem", "dir", "package", "match")
ROLES = ("event", "background", "both")
EXCLUDE = "-"
LABEL_SEP = "|"
PARTIAL = "?"
_COLUMNS = ("package", "pattern", "labels", "group", "role", "checked", "notes")
_TAKE_SUFFIX = re.compile(r"[._\- ]?\d+$")


class MappingError(ValueError):
    """The mapping table is malformed or names a label the ontology does not have."""


@dataclass(frozen=True)
class Rule:
    """One row of the mapping table (see module docstring)."""

    line: int
    package: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]  # empty: excluded; includes the partial ones
    group: str
    role: str
    checked: str
    notes: str
    partial: tuple[str, ...] = ()  # labels heard in part of the file: validation only

    @property
    def excluded(self) -> bool:
        """True for ``-`` rules, whose files are deliberately left out."""
        return not self.labels


def load_label_names(ontology: Path = DEFAULT_ONTOLOGY) -> frozenset[str]:
    """All AudioSet display names in the ontology JSON (a list of ``{id, name, ...}``)."""
    data = json.loads(ontology.read_text(encoding="utf-8"))
    return frozenset(str(c["name"]) for c in data)


def load_mapping(path: Path = DEFAULT_MAPPING, ontology: Path = DEFAULT_ONTOLOGY) -> list[Rule]:
    """Read and validate the table; every problem found is reported in one error."""
    names = load_label_names(ontology)
    rules: list[Rule] = []
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise MappingError(f"{path}: columns {reader.fieldnames}, expected {list(_COLUMNS)}")
        for i, row in enumerate(reader, start=2):
            where = f"{path.name}:{i}"
            try:
                pattern = re.compile(row["pattern"])
            except re.error as e:
                problems.append(f"{where}: bad regex {row['pattern']!r}: {e}")
                continue
            raw = row["labels"].strip()
            marked = () if raw == EXCLUDE else tuple(s.strip() for s in raw.split(LABEL_SEP))
            labels = tuple(s.removesuffix(PARTIAL).strip() for s in marked)
            partial = tuple(s for s, m in zip(labels, marked, strict=True) if m.endswith(PARTIAL))
            if labels and len(partial) == len(labels):
                problems.append(f"{where}: every label is partial ({raw!r}); at least one "
                                "must hold for the whole file")
            unknown = [s for s in labels if s not in names]
            if unknown or (raw != EXCLUDE and not labels):
                problems.append(f"{where}: labels {unknown or raw!r} not AudioSet display names")
            if row["group"] not in GROUP_MODES:
                problems.append(f"{where}: group {row['group']!r}, accepted {GROUP_MODES}")
            if row["group"] == "match" and "g" not in pattern.groupindex:
                problems.append(f"{where}: group `match` needs a named group (?P<g>...)")
            if row["role"] not in ROLES:
                problems.append(f"{where}: role {row['role']!r}, accepted {ROLES}")
            if not row["checked"].strip():
                problems.append(f"{where}: `checked` is empty; record the spot-check")
            rules.append(
                Rule(i, row["package"], pattern, labels, row["group"], row["role"],
                     row["checked"], row["notes"], partial)
            )
    if problems:
        raise MappingError(f"{len(problems)} problem(s) in {path}:\n" + "\n".join(problems))
    return rules


def match(rules: list[Rule], package: str, relpath: str) -> Rule | None:
    """First rule of ``package`` whose pattern fully matches ``relpath``, or None."""
    for rule in rules:
        if rule.package == package and rule.pattern.fullmatch(relpath):
            return rule
    return None


def group_key(rule: Rule, relpath: str) -> str:
    """The split-group key of a file matched by ``rule`` (see :data:`GROUP_MODES`)."""
    mode, package = rule.group, rule.package
    p = PurePosixPath(relpath)
    if mode == "match":
        m = rule.pattern.fullmatch(relpath)
        if m is None:
            raise MappingError(f"{relpath!r} does not match rule at line {rule.line}")
        return f"{package}:{m['g']}"
    if mode == "file":
        return f"{package}:{relpath}"
    if mode == "stem":
        stem = p.name.split(".")[0] if p.name.count(".") > 1 else p.stem
        return f"{package}:{p.parent}/{_TAKE_SUFFIX.sub('', stem)}"
    if mode == "dir":
        return f"{package}:{p.parent}"
    if mode == "package":
        return package
    raise MappingError(f"group mode {mode!r}, accepted {GROUP_MODES}")
