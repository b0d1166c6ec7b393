"""Evaluation metrics in numpy alone.

Arrays: ``scores`` ``(N, L)`` float (higher = more likely), ``targets`` ``(N, L)`` in
{0, 1}. A label with no positive (or, for AUC, no negative) rows gets NaN; means skip
NaN and :func:`mean_excluding` says how many labels were skipped.

* average precision: area under the step precision-recall curve over distinct score
  thresholds (``sklearn.metrics.average_precision_score``'s definition);
* ROC AUC: Mann-Whitney U with tied scores counted half;
* d′ = ``sqrt(2) * Φ⁻¹(AUC)``, AUC clipped to ``[AUC_CLIP, 1 - AUC_CLIP]`` so that a
  perfect label gives a large finite value;
* lwlrap: label-weighted label-ranking average precision (DCASE 2019 task 2); tied
  scores rank pessimistically;
* F1 at per-label thresholds (``score >= threshold`` is positive), macro and micro;
* :func:`tune_thresholds`: per-label F1-maximising on-threshold, off = ``off_fraction * on``;
* :func:`event_f1`: DCASE/sed_eval event-based F1: same file and label, ``|Δonset| <=
  t_collar`` and ``|Δoffset| <= max(t_collar, percentage_of_length * reference length)``,
  one-to-one maximum matching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "AUC_CLIP",
    "DEFAULT_OFF_FRACTION",
    "Event",
    "EventScores",
    "F1Scores",
    "average_precision",
    "d_prime",
    "event_f1",
    "event_matches",
    "f1_at_thresholds",
    "lwlrap",
    "mean_excluding",
    "roc_auc",
    "scores_to_events",
    "tune_thresholds",
]

AUC_CLIP = 1e-6
DEFAULT_OFF_FRACTION = 0.5
DEFAULT_THRESHOLD = 0.5
DEFAULT_T_COLLAR = 0.2
DEFAULT_PERCENTAGE_OF_LENGTH = 0.2


def _check(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim == 1:
        s = s[:, None]
    if t.ndim == 1:
        t = t[:, None]
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (N, L)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return s, t > 0


def mean_excluding(values: np.ndarray) -> tuple[float, int]:
    """(mean over finite entries, number of NaN entries excluded); NaN mean if all excluded."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    return (float(v[ok].mean()) if ok.any() else math.nan), int((~ok).sum())


def _ap_one(s: np.ndarray, y: np.ndarray) -> float:
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # end of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-label average precision ``(L,)``; NaN for labels without positives."""
    s, t = _check(scores, targets)
    return np.array([_ap_one(s[:, j], t[:, j]) for j in range(s.shape[1])])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-label ROC AUC ``(L,)``; NaN for labels lacking positives or negatives."""
    s, t = _check(scores, targets)
    out = np.full(s.shape[1], math.nan)
    for j in range(s.shape[1]):
        y = t[:, j]
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos and n_neg:
            r = _average_ranks(s[:, j])
            out[j] = (r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return out


def d_prime(auc: np.ndarray | float) -> np.ndarray:
    """``sqrt(2) * Φ⁻¹(AUC)`` elementwise; NaN stays NaN, AUC clipped by ``AUC_CLIP``."""
    a = np.atleast_1d(np.asarray(auc, dtype=np.float64))
    inv = NormalDist().inv_cdf
    return np.array([
        math.nan if math.isnan(x) else math.sqrt(2.0) * inv(min(max(x, AUC_CLIP), 1 - AUC_CLIP))
        for x in a
    ])


def lwlrap(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(overall lwlrap, per-label ``(L,)`` with NaN for labels without positives).

    For each positive (row, label), precision = positives ranked at or above it / its
    rank; a label's value is the mean over its positives, and the overall value the
    mean over all positive pairs (labels weighted by their positive counts).
    """
    s, t = _check(scores, targets)
    n_labels = s.shape[1]
    sums = np.zeros(n_labels)
    counts = t.sum(axis=0).astype(np.float64)
    for i in np.flatnonzero(t.any(axis=1)):
        pos = np.flatnonzero(t[i])
        ps = s[i, pos]
        rank = (s[i][None, :] >= ps[:, None]).sum(axis=1)  # pessimistic ranks, 1-based
        hits = (ps[None, :] >= ps[:, None]).sum(axis=1)
        sums[pos] += hits / rank
    with np.errstate(invalid="ignore", divide="ignore"):
        per_label = np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)
    total = counts.sum()
    return (float(sums.sum() / total) if total else math.nan), per_label


@dataclass(frozen=True)
class F1Scores:
    """Per-label ``f1``/``precision``/``recall`` ``(L,)`` (NaN where no positives) and means."""

    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    macro_f1: float
    micro_f1: float
    n_excluded: int


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.shape(tp), dtype=np.float64), where=denom > 0)


def f1_at_thresholds(
    scores: np.ndarray, targets: np.ndarray, thresholds: Sequence[float] | np.ndarray
) -> F1Scores:
    """F1 with ``score >= thresholds[label]`` as positive; macro over labels with positives."""
    s, t = _check(scores, targets)
    th = np.asarray(thresholds, dtype=np.float64)
    if th.shape != (s.shape[1],):
        raise ValueError(f"thresholds shape {th.shape}; expected ({s.shape[1]},)")
    pred = s >= th[None, :]
    tp = (pred & t).sum(axis=0).astype(np.float64)
    fp = (pred & ~t).sum(axis=0).astype(np.float64)
    fn = (~pred & t).sum(axis=0).astype(np.float64)
    has_pos = t.any(axis=0)
    f1 = np.where(has_pos, _f1(tp, fp, fn), math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(has_pos, np.where(tp + fp > 0, tp / (tp + fp), 0.0), math.nan)
        recall = np.where(has_pos, tp / np.maximum(tp + fn, 1), math.nan)
    macro, excluded = mean_excluding(f1)
    micro = float(_f1(tp.sum(), fp.sum(), fn.sum()))
    return F1Scores(f1, precision, recall, macro, micro, excluded)


def tune_thresholds(
    scores: np.ndarray,
    targets: np.ndarray,
    off_fraction: float = DEFAULT_OFF_FRACTION,
    default: float = DEFAULT_THRESHOLD,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label F1-maximising thresholds on validation scores -> ``(on, off)`` ``(L,)``.

    The on-threshold lies midway between the lowest score kept positive and the next
    lower score (ties: the higher threshold), then is clipped to ``bounds``: with one or
    two positives the F1 optimum sits just under their scores, however low, and a
    threshold of 0.001 fires on anything in a live stream. Labels without positives get
    ``default``. ``off = off_fraction * on`` (hysteresis: an event ends when its score
    falls below off).
    """
    if not 0.0 <= off_fraction <= 1.0:
        raise ValueError(f"off_fraction={off_fraction}; accepted: 0 <= off_fraction <= 1")
    if not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
        raise ValueError(f"bounds={bounds}; accepted: 0 <= low <= high <= 1")
    s, t = _check(scores, targets)
    on = np.full(s.shape[1], float(default))
    for j in range(s.shape[1]):
        y = t[:, j]
        n_pos = int(y.sum())
        if n_pos == 0:
            continue
        order = np.argsort(-s[:, j], kind="mergesort")
        sj, yj = s[order, j], y[order]
        last = np.r_[np.flatnonzero(np.diff(sj)), sj.size - 1]
        tp = np.cumsum(yj)[last].astype(np.float64)
        fp = (last + 1) - tp
        f1 = _f1(tp, fp, n_pos - tp)
        k = int(np.argmax(f1))
        kept = sj[last[k]]
        below = sj[last[k] + 1] if last[k] + 1 < sj.size else 0.0
        on[j] = (kept + below) / 2.0
    on = np.clip(on, *bounds)
    return on, on * off_fraction


Event = tuple[str, int, float, float]
"""(file id, label index, onset s, offset s)."""


@dataclass(frozen=True)
class EventScores:
    """Event-based per-label F1 ``(L,)`` (NaN for labels without reference events), means and counts."""

    f1: np.ndarray
    macro_f1: float
    micro_f1: float
    n_excluded: int
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray


def event_matches(ref: tuple[float, float], est: tuple[float, float], collar: float, pol: float) -> bool:
    """An estimated event ``(onset, offset)`` matches a reference one: onset within ``collar``,
    offset within ``max(collar, pol * reference length)`` (:func:`event_f1`)."""
    off_collar = max(collar, pol * (ref[1] - ref[0]))
    return abs(est[0] - ref[0]) <= collar and abs(est[1] - ref[1]) <= off_collar


def _max_matching(adj: list[list[int]], n_est: int) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths)."""
    owner = [-1] * n_est

    def augment(r: int, seen: list[bool]) -> bool:
        for e in adj[r]:
            if not seen[e]:
                seen[e] = True
                if owner[e] < 0 or augment(owner[e], seen):
                    owner[e] = r
                    return True
        return False

    return sum(augment(r, [False] * n_est) for r in range(len(adj)))


def event_f1(
    reference: Sequence[Event],
    estimated: Sequence[Event],
    n_labels: int,
    t_collar: float = DEFAULT_T_COLLAR,
    percentage_of_length: float = DEFAULT_PERCENTAGE_OF_LENGTH,
) -> EventScores:
    """Event-based F1 (module docstring). Events are ``(file, label index, onset, offset)``."""
    groups: dict[tuple[str, int], tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
    for f, lab, on, off in reference:
        groups.setdefault((f, lab), ([], []))[0].append((on, off))
    for f, lab, on, off in estimated:
        groups.setdefault((f, lab), ([], []))[1].append((on, off))
    tp, n_ref, n_est = (np.zeros(n_labels) for _ in range(3))
    for (_, lab), (refs, ests) in groups.items():
        if not 0 <= lab < n_labels:
            raise ValueError(f"event label index {lab}; accepted: 0..{n_labels - 1}")
        adj = [[k for k, e in enumerate(ests) if event_matches(r, e, t_collar, percentage_of_length)]
               for r in refs]
        tp[lab] += _max_matching(adj, len(ests))
        n_ref[lab] += len(refs)
        n_est[lab] += len(ests)
    fp, fn = n_est - tp, n_ref - tp
    f1 = np.where(n_ref > 0, _f1(tp, fp, fn), math.nan)
    macro, excluded = mean_excluding(f1)
    micro = float(_f1(tp.sum(), fp.sum(), fn.sum()))
    return EventScores(f1, macro, micro, excluded, tp, fp, fn)


def scores_to_events(
    scores: np.ndarray,
    centres_s: np.ndarray,
    hop_s: float,
    on: Sequence[float] | np.ndarray,
    off: Sequence[float] | np.ndarray,
    duration_s: float | None = None,
) -> list[tuple[int, float, float]]:
    """Patch scores ``(T, L)`` at patch centres ``(T,)`` -> ``(label, onset s, offset s)``.

    Hysteresis: an event starts when a score reaches ``on`` and lasts while it stays at
    or above ``off``; it spans from half a hop before its first patch centre to half a
    hop after its last, clipped to ``[0, duration_s]``.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(centres_s, dtype=np.float64)
    on_a, off_a = np.asarray(on, dtype=np.float64), np.asarray(off, dtype=np.float64)
    if s.ndim != 2 or c.shape != (s.shape[0],):
        raise ValueError(f"scores {s.shape} and centres {c.shape}: need (T, L) and (T,)")
    end = math.inf if duration_s is None else duration_s
    out: list[tuple[int, float, float]] = []
    for lab in range(s.shape[1]):
        first: int | None = None
        for k in range(s.shape[0] + 1):
            v = s[k, lab] if k < s.shape[0] else -math.inf
            if first is None and v >= on_a[lab]:
                first = k
            elif first is not None and v < off_a[lab]:
                onset = max(0.0, c[first] - hop_s / 2)
                offset = min(end, c[k - 1] + hop_s / 2)
                out.append((lab, float(onset), float(offset)))
                first = None
    return out
