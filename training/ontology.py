"""The AudioSet ontology: display names, mids and the class tree.

Labels everywhere in sed are AudioSet *display names* (``"Baby cry, infant cry"``);
users may write either a name or a mid (``"/t/dd00002"``) and :meth:`Ontology.resolve`
turns both into the display name, or fails with close suggestions.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["LabelError", "Ontology"]

log = logging.getLogger(__name__)

_PACKAGED = ("training", "data/ontology.json")
_SUGGESTIONS = 3
_SUGGEST_CUTOFF = 0.6


class LabelError(ValueError):
    """A label is neither an AudioSet display name nor a mid."""


class Ontology:
    """AudioSet classes by name and mid.

    ``entries`` are the ``ontology.json`` records (``id``, ``name``, ``child_ids``, ...).
    """

    def __init__(self, entries: Iterable[dict[str, Any]]) -> None:
        self._name_by_mid: dict[str, str] = {}
        self._mid_by_name: dict[str, str] = {}
        self._children: dict[str, tuple[str, ...]] = {}
        for e in entries:
            mid, name = str(e["id"]), str(e["name"])
            self._name_by_mid[mid] = name
            self._mid_by_name[name] = mid
            self._children[mid] = tuple(str(c) for c in e.get("child_ids", ()))
        self._parents: dict[str, list[str]] = {}
        for mid, kids in self._children.items():
            for kid in kids:
                self._parents.setdefault(kid, []).append(mid)
        self._by_folded = {n.casefold(): n for n in self._mid_by_name}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Ontology:
        """Read ``ontology.json``; default: the copy packaged with ``training``."""
        if path is None:
            text = resources.files(_PACKAGED[0]).joinpath(_PACKAGED[1]).read_text("utf-8")
            source = "packaged ontology.json"
        else:
            text = Path(path).read_text("utf-8")
            source = str(path)
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not JSON ({e})") from e
        if not isinstance(entries, list):
            raise ValueError(f"{source}: expected a JSON list of classes, got {type(entries).__name__}")
        return cls(entries)

    @property
    def names(self) -> list[str]:
        """All display names, in file order."""
        return list(self._mid_by_name)

    def __len__(self) -> int:
        return len(self._name_by_mid)

    def __contains__(self, name_or_mid: object) -> bool:
        return name_or_mid in self._mid_by_name or name_or_mid in self._name_by_mid

    def mid(self, name_or_mid: str) -> str:
        """The mid of a display name (or mid)."""
        return self._mid_by_name[self.resolve(name_or_mid)]

    def name(self, mid: str) -> str:
        """The display name of a mid (or display name)."""
        return self.resolve(mid)

    def resolve(self, name_or_mid: str) -> str:
        """Display name for a display name, a mid, or a name differing only in case.

        Raises :class:`LabelError` naming the close matches when nothing fits.
        """
        s = name_or_mid.strip()
        if s in self._mid_by_name:
            return s
        if s in self._name_by_mid:
            return self._name_by_mid[s]
        folded = self._by_folded.get(s.casefold())
        if folded is not None:
            return folded
        raise LabelError(f"unknown label {name_or_mid!r}; {self.suggest(s)}")

    def suggest(self, text: str) -> str:
        """A phrase naming the display names closest to ``text``."""
        close = difflib.get_close_matches(text, self.names, n=_SUGGESTIONS, cutoff=_SUGGEST_CUTOFF)
        if not close:
            lowered = text.casefold()
            close = [n for n in self.names if lowered and lowered in n.casefold()][:_SUGGESTIONS]
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "accepted: AudioSet display names or mids (see training/data/ontology.json)"

    def children(self, name_or_mid: str, recursive: bool = False) -> list[str]:
        """Display names of the direct (or all, ``recursive``) descendants."""
        out: list[str] = []
        seen: set[str] = set()
        stack = list(self._children[self.mid(name_or_mid)])
        while stack:
            mid = stack.pop(0)
            if mid in seen or mid not in self._name_by_mid:
                continue
            seen.add(mid)
            out.append(self._name_by_mid[mid])
            if recursive:
                stack.extend(self._children[mid])
        return out

    def ancestors(self, name_or_mid: str,
                  skip_edges: Iterable[tuple[str, str]] = ()) -> list[str]:
        """Display names of every ancestor (parents, their parents, ...), nearest first.

        ``skip_edges``: ``(child, parent)`` display-name pairs not to climb; the ontology is a
        DAG, so an ancestor reachable by another path is still returned.
        """
        skip = {(self.mid(c), self.mid(p)) for c, p in skip_edges}
        out: list[str] = []
        seen: set[str] = set()
        queue = [self.mid(name_or_mid)]
        while queue:
            mid = queue.pop(0)
            for parent in self._parents.get(mid, ()):
                if parent in seen or (mid, parent) in skip or parent not in self._name_by_mid:
                    continue
                seen.add(parent)
                out.append(self._name_by_mid[parent])
                queue.append(parent)
        return out
