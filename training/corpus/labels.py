"""Which labels a corpus can support: the rule that picks the default model's label set.

A label is trained only when the corpus can both teach it and check it: at least
``min_real`` real training clips or ``min_synthetic`` synthetic ones, and at least
``min_val`` validation clips (real, or synthetic events made from other seeds). Labels short of that are listed, with their
counts, rather than shipped untested (the model card's "Labels not in this model").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LabelRule", "select_labels"]


@dataclass(frozen=True)
class LabelRule:
    min_real: int = 3
    min_synthetic: int = 30
    min_val: int = 1

    def describe(self) -> str:
        return (f"at least {self.min_real} real training clips or {self.min_synthetic} synthetic "
                f"ones, and at least {self.min_val} validation clip(s)")


def _count(stats: Mapping[str, Any], split: str, key: str) -> int:
    return int(stats.get(split, {}).get(key, 0))


def select_labels(
    labels: Mapping[str, Mapping[str, Any]], rule: LabelRule = LabelRule(),
    wanted: Iterable[str] = (),
) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """Split ``corpus.json``'s ``labels`` table by ``rule``.

    Returns ``(kept, short)``: the kept label names, sorted, and for every label short
    of the rule (including ``wanted`` labels the corpus lacks entirely) its
    ``(real train clips, synthetic train clips, val clips)``.
    """
    kept: list[str] = []
    short: dict[str, tuple[int, int, int]] = {}
    for name in sorted(set(labels) | set(wanted)):
        stats = labels.get(name, {})
        real = _count(stats, "train", "real_clips")
        synthetic = _count(stats, "train", "synthetic_clips")
        val = _count(stats, "val", "real_clips") + _count(stats, "val", "synthetic_clips")
        if (real >= rule.min_real or synthetic >= rule.min_synthetic) and val >= rule.min_val:
            kept.append(name)
        else:
            short[name] = (real, synthetic, val)
    return kept, short
