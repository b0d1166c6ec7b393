"""Choosing labels by name: one parser for ``--labels``, ``[listen] labels``, ``sed-mqtt --label``
and the contract's ``event_labels``.

AudioSet display names contain commas (``"Smoke detector, smoke alarm"``), so a list
of them cannot simply be split on commas. :func:`parse_labels` reads a list in two
ways:

- the text is split on commas and read against the model's label list, taking at each
  position the **longest** run of comma-joined pieces that is a label:
  ``"Dog,Glass,Smoke detector, smoke alarm"`` -> ``Dog``, ``Glass``,
  ``Smoke detector, smoke alarm``;
- ``|`` always separates names, so it settles a list the longest match would read
  otherwise: ``"Dog|Smoke detector, smoke alarm"``.

Names match case-insensitively, with any spacing around commas. A name that is not a
label is an error naming it, with the nearest labels (:mod:`difflib`) as a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "HOME_EVENT_LABELS",
    "NEVER_EVENT_LABELS",
    "SEPARATOR",
    "LabelError",
    "choose_event_labels",
    "parse_labels",
    "read_label_file",
    "suggest",
]

SEPARATOR = "|"
#: The default event labels for a home or an office (99 AudioSet/YAMNet display names; the
#: file says what is left out and why): ``sed-export --event-labels default`` and YAMNet.
HOME_EVENT_LABELS = Path(__file__).resolve().parents[1] / "data" / "event_labels_home.txt"
NEVER_EVENT_LABELS = Path(__file__).resolve().parents[1] / "data" / "event_labels_never.txt"
"""Noise, hum, silence and room classes: never event labels by default, what a bed may be."""
SUGGESTIONS = 3  # nearest labels offered for a name that is not one
CUTOFF = 0.6  # difflib similarity below which nothing is suggested
CLOSE = 0.8  # similarity at which unknown comma pieces are taken as one multi-piece name


class LabelError(ValueError):
    """A label name that the model does not have (the message suggests the nearest)."""


def _key(text: str) -> str:
    """Case- and comma-spacing-insensitive form of a name."""
    return ", ".join(t.strip() for t in text.split(",")).casefold()


def suggest(name: str, names: Sequence[str], n: int = SUGGESTIONS) -> list[str]:
    """The labels nearest to ``name``: by whole name, or by one comma-separated part of one
    (``"smoke alarm"`` -> ``"Smoke detector, smoke alarm"``)."""
    by_key: dict[str, str] = {}
    for full in names:
        by_key.setdefault(_key(full), full)
        for part in full.split(","):
            by_key.setdefault(_key(part), full)
    hits = difflib.get_close_matches(_key(name), list(by_key), n=4 * n, cutoff=CUTOFF)
    out: list[str] = []
    for h in hits:
        if by_key[h] not in out:
            out.append(by_key[h])
    return out[:n]


def _unknown(bad: Sequence[str], names: Sequence[str], what: str) -> LabelError:
    parts = []
    for b in bad:
        near = suggest(b, names)
        hint = f" (did you mean {' or '.join(repr(x) for x in near)}?)" if near else ""
        parts.append(f"{b!r}{hint}")
    return LabelError(
        f"{what}: {', '.join(parts)} {'is' if len(bad) == 1 else 'are'} not among the model's "
        f"{len(names)} labels; separate names with ',' or '|' (sed-listen --list-labels prints them)"
    )


def _split(text: str, index: dict[str, str], bad: list[str]) -> list[str]:
    """Names in ``text``: pieces between ``|``, each read as comma-joined names, longest
    match first. Runs of pieces that match nothing are reported as one name in ``bad``."""
    out: list[str] = []
    for piece in text.split(SEPARATOR):
        tokens = [t.strip() for t in piece.split(",")]
        miss: list[str] = []
        i = 0
        while i < len(tokens):
            if not tokens[i]:
                i += 1
                continue
            for j in range(len(tokens), i, -1):  # longest run of pieces first
                k = _key(", ".join(tokens[i:j]))
                if k in index:
                    out.append(index[k])
                    i = j
                    break
            else:
                miss.append(tokens[i])
                i += 1
                continue
            if miss:
                bad.extend(_runs(miss, list(index.values())))
                miss = []
        if miss:
            bad.extend(_runs(miss, list(index.values())))
    return out


def _runs(tokens: list[str], names: Sequence[str]) -> list[str]:
    """Unknown comma pieces as the names the user probably meant: consecutive pieces are
    one name when they closely match a label of as many pieces (``"Smoke detector, smoke
    alarn"``), else each piece is one name."""
    by_pieces: dict[int, list[str]] = {}
    for n in names:
        by_pieces.setdefault(n.count(",") + 1, []).append(_key(n))
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for j in range(len(tokens), i + 1, -1):
            joined = ", ".join(tokens[i:j])
            if difflib.get_close_matches(_key(joined), by_pieces.get(j - i, []), 1, CLOSE):
                out.append(joined)
                i = j
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def parse_labels(
    spec: str | Iterable[str], names: Sequence[str], what: str = "--labels"
) -> tuple[str, ...]:
    """The labels named by ``spec``, as the model spells them, in order, without repeats.

    ``spec``: one string, or several (a repeated option, a TOML list), each read as the
    module docstring says. ``names``: the model's labels. ``what`` names the input in
    errors. Raises :class:`LabelError` for names that are not labels, or for no names.
    """
    texts = [spec] if isinstance(spec, str) else list(spec)
    index: dict[str, str] = {}
    for full in names:
        index.setdefault(_key(full), full)
    bad: list[str] = []
    chosen: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise LabelError(f"{what}: {text!r} is not a label name (a string)")
        for name in _split(text, index, bad):
            if name not in chosen:
                chosen.append(name)
    if bad:
        raise _unknown(bad, names, what)
    if not chosen:
        raise LabelError(f"{what}: no label names given (got {spec!r})")
    return tuple(chosen)


def choose_event_labels(
    names: Sequence[str],
    default: Sequence[str] | None,
    chosen: str | Iterable[str] | None,
    what: str = "--labels",
) -> tuple[str, ...]:
    """The labels that raise events: ``chosen`` (``--labels`` or ``[listen] labels``) if
    given, else the model contract's ``event_labels`` (``default``), else every label."""
    if chosen is not None:
        return parse_labels(chosen, names, what)
    return tuple(default) if default is not None else tuple(names)


def read_label_file(path: str | Path) -> tuple[str, ...]:
    """Label names from a text file: one exact display name per line, ``#`` comments."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ValueError(f"label file {p}: no such file") from e
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    return tuple(dict.fromkeys(n for n in names if n))
