"""Decisions: per-label score smoothing and onset/offset hysteresis. Pure numpy.

Each patch hop gives one score vector, attributed to the interval
``[centre - hop/2, centre + hop/2]`` around the patch centre (stream seconds).
Per label, with the smoothed score ``s``:

- **smoothing**: ``ema`` (time constant ``ema_tau_s``; alpha = 1 - exp(-hop/tau)),
  ``median`` over ``median_s`` seconds of hops, or ``none``;
- **onset**: the *raw* score ``x >= on`` continuously for at least ``debounce_s``; the
  event starts at the beginning of the first interval above ``on``. Smoothing adds no
  delay to an onset (an EMA needs one or two more hops to cross ``on``);
- **offset**: ``max(x, s) < off`` continuously for at least ``hold_s`` (the smoothed
  score keeps the hysteresis, so a dip of the raw score alone ends nothing); the event
  ends at the beginning of the first interval below ``off``, but never before
  ``start + min_duration_s`` (every reported event lasts at least that long);
- ``on``/``off`` default to the model's tuned thresholds (``None`` = use the model's).

Defaults live in :class:`LabelPolicy`; ``SmootherConfig.labels`` overrides any field
for one label (by display name). Only the labels in ``event_labels`` (the user's
``--labels``, else the model's default set) and ``enabled`` open events; every label's
score is still smoothed. Transitions are returned, never printed or sent.

:meth:`Smoother.process_many` takes a block of hops at once (file mode): smoothing is
array work over hops x labels, and the hysteresis runs only on the labels whose raw
score reaches ``on`` or that are open (usually none or a few); :meth:`Smoother.process`
is the same code on one hop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Decisions", "LabelPolicy", "Smoother", "SmootherConfig", "Transition"]

METHODS = ("ema", "median", "none")


@dataclass(frozen=True)
class LabelPolicy:
    """How one label's scores become events. Times in seconds."""

    method: str = "ema"
    ema_tau_s: float = 0.25
    median_s: float = 1.5
    on: float | None = None
    off: float | None = None
    debounce_s: float = 0.0
    hold_s: float = 0.5
    min_duration_s: float = 0.25
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"smoothing method {self.method!r}; accepted: {list(METHODS)}")
        for name in ("ema_tau_s", "median_s", "debounce_s", "hold_s", "min_duration_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; must be >= 0")
        for name in ("on", "off"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} threshold {v}; accepted: 0 to 1")
        if self.on is not None and self.off is not None and self.off > self.on:
            raise ValueError(f"off threshold {self.off} above on threshold {self.on}")


@dataclass(frozen=True)
class SmootherConfig:
    """Defaults for every label plus per-label overrides ``{display name: {field: value}}``."""

    default: LabelPolicy = field(default_factory=LabelPolicy)
    labels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def policy(self, label: str) -> LabelPolicy:
        override = self.labels.get(label)
        if not override:
            return self.default
        known = {f.name for f in dataclasses.fields(LabelPolicy)}
        unknown = sorted(set(override) - known)
        if unknown:
            raise ValueError(f"smoother override for {label!r}: unknown key(s) {unknown}; accepted: {sorted(known)}")
        return dataclasses.replace(self.default, **override)

    def check_labels(self, names: Sequence[str]) -> None:
        unknown = sorted(set(self.labels) - set(names))
        if unknown:
            raise ValueError(f"smoother overrides for label(s) the model does not have: {unknown}")


@dataclass(frozen=True)
class Transition:
    label: int  # index into the model's labels
    kind: str  # "onset" | "offset"
    time: float  # stream seconds of the event start (onset) or end (offset)


@dataclass(frozen=True)
class Decisions:
    """What :meth:`Smoother.process_many` decided for ``n`` hops.

    ``smoothed`` ``(n, L)``; ``transitions[r]`` the transitions of hop ``r`` (onsets by
    label, then offsets by label); ``active`` ``(n, L)`` bool, open after each hop.
    """

    smoothed: np.ndarray
    transitions: list[list[Transition]]
    active: np.ndarray

    def row(self, r: int) -> Decisions:
        """Hop ``r`` alone."""
        return Decisions(self.smoothed[r : r + 1], [self.transitions[r]], self.active[r : r + 1])


class Smoother:
    """``process(scores (L,), centre_s) -> (smoothed (L,), [Transition])``; ``close(t)`` at end."""

    def __init__(
        self,
        config: SmootherConfig,
        labels: Sequence[str],
        model_on: Sequence[float],
        model_off: Sequence[float],
        hop_s: float,
        event_labels: Collection[str] | None = None,
    ) -> None:
        config.check_labels(labels)
        pols = [config.policy(name) for name in labels]
        chosen = set(labels if event_labels is None else event_labels)
        self.hop_s = hop_s
        L = len(labels)
        self.on = np.array([p.on if p.on is not None else model_on[i] for i, p in enumerate(pols)])
        self.off = np.array([p.off if p.off is not None else model_off[i] for i, p in enumerate(pols)])
        self.off = np.minimum(self.off, self.on)
        # Every label is smoothed (its scores are published); only these open events.
        self.enabled = np.array([p.enabled and name in chosen for p, name in zip(pols, labels, strict=True)])
        self.debounce = np.array([p.debounce_s for p in pols])
        self.hold = np.array([p.hold_s for p in pols])
        self.min_dur = np.array([p.min_duration_s for p in pols])
        method = np.array([p.method for p in pols])
        self._ema = method == "ema"
        self._median = method == "median"
        tau = np.array([max(p.ema_tau_s, 1e-9) for p in pols])
        self._alpha = 1.0 - np.exp(-hop_s / tau)
        med = np.array([max(1, round(p.median_s / hop_s)) for p in pols])
        self._med_len = med
        self._all_ema = bool(self._ema.all())
        self._any_ema = bool(self._ema.any())
        self._any_median = bool(self._median.any())
        self._hist = np.zeros((int(med.max()), L))
        self._n_labels = L
        # The state (a SmootherBank may make these views of its rows: always updated in place).
        self._ema_state = np.zeros(L)
        self.active = np.zeros(L, dtype=bool)
        self.start = np.full(L, np.nan)
        self._above_since = np.full(L, np.nan)
        self._below_since = np.full(L, np.nan)
        self.smoothed = np.zeros(L)
        self.bank: SmootherBank | None = None
        self.bank_row = -1
        self.reset()

    def reset(self) -> None:
        self._ema_state[:] = 0.0
        self._hist[:] = 0.0
        self._steps = 0
        self.active[:] = False
        self.start[:] = np.nan
        self._above_since[:] = np.nan
        self._below_since[:] = np.nan
        self.smoothed[:] = 0.0

    def set_policy(self, other: Smoother) -> None:
        """Take ``other``'s thresholds and timing (``on``, ``off``, ``enabled``, ``debounce``,
        ``hold``, ``min_dur``), in place; the smoothing state is kept."""
        for name in ("on", "off", "enabled", "debounce", "hold", "min_dur"):
            getattr(self, name)[...] = getattr(other, name)

    def _smooth(self, x: np.ndarray) -> np.ndarray:
        """Smoothed scores of hops ``x`` ``(n, L)``, in order; advances the state."""
        n = x.shape[0]
        if self._all_ema:  # the default: no copy, no masks
            self._steps += n
            return self._ema_rows(x)
        out = x.copy()
        if self._any_ema:
            out[:, self._ema] = self._ema_rows(x)[:, self._ema]
        if self._any_median:
            depth = self._hist.shape[0]
            groups = [(int(m), self._median & (self._med_len == m)) for m in np.unique(self._med_len[self._median])]
            for r in range(n):
                self._hist[self._steps % depth] = x[r]
                k_have = min(self._steps + 1, depth)
                for m, sel in groups:
                    k = min(m, k_have)
                    rows = [(self._steps - j) % depth for j in range(k)]
                    out[r, sel] = np.median(self._hist[rows][:, sel], axis=0)
                self._steps += 1
        else:
            self._steps += n
        return out

    def _ema_rows(self, x: np.ndarray) -> np.ndarray:
        a = self._alpha
        b = 1.0 - a
        state = self._ema_state
        ema = np.empty_like(x)
        for r in range(x.shape[0]):  # a recurrence; each step is one vector op over labels
            state = a * x[r] + b * state
            ema[r] = state
        self._ema_state[...] = state
        return ema

    def process(self, scores: np.ndarray, centre_s: float) -> tuple[np.ndarray, list[Transition]]:
        """One hop: scores ``(L,)`` of the patch centred at ``centre_s`` (stream seconds)."""
        x = np.asarray(scores, dtype=np.float64)
        if x.shape != (self._n_labels,):
            raise ValueError(f"scores of shape {x.shape}; expected ({self._n_labels},)")
        d = self.process_many(x[None, :], np.array([centre_s]))
        return d.smoothed[0], d.transitions[0]

    def process_many(self, scores: np.ndarray, centres_s: np.ndarray) -> Decisions:
        """``n`` consecutive hops: scores ``(n, L)``, patch centres ``(n,)`` in stream seconds."""
        x = np.asarray(scores, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._n_labels:
            raise ValueError(f"scores of shape {x.shape}; expected (n, {self._n_labels})")
        n = x.shape[0]
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
        s = self._smooth(x)
        if n:
            self.smoothed[...] = s[-1]
        starts = np.asarray(centres_s, dtype=np.float64) - self.hop_s / 2.0
        ends = starts + self.hop_s
        active_rows = np.repeat(self.active[None, :], n, axis=0)
        per_row: list[list[tuple[int, int, Transition]]] = [[] for _ in range(n)]
        # Only labels that are open, or whose raw score reaches `on`, can change state;
        # every other label just forgets a run above `on` that never fired.
        reach = ((x >= self.on) & self.enabled).any(axis=0)
        quiet = ~reach & ~self.active
        self._above_since[quiet] = np.nan
        for lab in np.flatnonzero(reach | self.active).tolist():
            self._decide(lab, x[:, lab], np.maximum(x[:, lab], s[:, lab]), starts, ends, per_row, active_rows)
        transitions = [[t for _, _, t in sorted(row, key=lambda e: (e[0], e[1]))] for row in per_row]
        return Decisions(s, transitions, active_rows)

    def _decide(
        self, lab: int, raw: np.ndarray, off_val: np.ndarray, starts: np.ndarray, ends: np.ndarray,
        per_row: list[list[tuple[int, int, Transition]]], active_rows: np.ndarray,
    ) -> None:
        """Hysteresis of one label over the hops (scalar state machine, in hop order)."""
        on, off = float(self.on[lab]), float(self.off[lab])
        enabled = bool(self.enabled[lab])
        debounce, hold, min_dur = float(self.debounce[lab]), float(self.hold[lab]), float(self.min_dur[lab])
        active = bool(self.active[lab])
        start = float(self.start[lab])
        above = float(self._above_since[lab])
        below = float(self._below_since[lab])
        nan = float("nan")
        for r, (xv, dv, a, b) in enumerate(zip(raw.tolist(), off_val.tolist(), starts.tolist(), ends.tolist(), strict=True)):
            if not active:
                if enabled and xv >= on:
                    if above != above:  # NaN: a new run above `on`
                        above = a
                    if b - above >= debounce:
                        per_row[r].append((0, lab, Transition(lab, "onset", above)))
                        active, start, above, below = True, above, nan, nan
                        active_rows[r:, lab] = True
                else:
                    above = nan
            elif dv < off:
                if below != below:
                    below = a
                if b - below >= hold and b >= start + min_dur:
                    per_row[r].append((1, lab, Transition(lab, "offset", max(below, start + min_dur))))
                    active, start, below = False, nan, nan
                    active_rows[r:, lab] = False
            else:
                below = nan
        self.active[lab] = active
        self.start[lab] = start
        self._above_since[lab] = above
        self._below_since[lab] = below

    def close(self, time_s: float) -> list[Transition]:
        """End of stream or shutdown at stream time ``time_s``: offsets for open events."""
        out = []
        for i in np.flatnonzero(self.active):
            end = self._below_since[i] if not np.isnan(self._below_since[i]) else time_s
            out.append(Transition(int(i), "offset", float(max(end, self.start[i]))))
        self.active[:] = False
        self.start[:] = np.nan
        self._below_since[:] = np.nan
        self._above_since[:] = np.nan
        return out


class SmootherBank:
    """Many streams' smoothers with their state as rows of shared ``(streams, labels)`` arrays.

    :meth:`step` decides one hop of any subset of the streams as array work over
    streams x labels, the same arithmetic as each smoother's
    :meth:`Smoother.process_many` on that hop (``tests/test_stages.py`` holds them equal):
    smoothing for all of them at once, and the hysteresis, as there, only for the
    labels whose raw score reaches ``on`` or that are open. A :class:`~detector.pipeline.Listener`
    with many live streams gets one hop of most of them per batch; one call per stream
    cost more than the model (docs/benchmarks.md).

    Each smoother keeps working alone (its arrays become views of its row, updated in
    place); only EMA (the default) or ``none`` smoothing can be stepped here (:attr:`steppable`).
    """

    _ROWS = ("on", "off", "enabled", "debounce", "hold", "min_dur", "_alpha", "_ema", "_ema_state",
             "smoothed", "active", "start", "_above_since", "_below_since")
    # (streams, labels): row i is smoothers[i]'s array of that name
    on: np.ndarray
    off: np.ndarray
    enabled: np.ndarray
    debounce: np.ndarray
    hold: np.ndarray
    min_dur: np.ndarray
    _alpha: np.ndarray
    _ema: np.ndarray
    _ema_state: np.ndarray
    smoothed: np.ndarray
    active: np.ndarray
    start: np.ndarray
    _above_since: np.ndarray
    _below_since: np.ndarray

    def __init__(self, smoothers: Sequence[Smoother]) -> None:
        self.smoothers = list(smoothers)
        widths = {s._n_labels for s in self.smoothers}
        if len(widths) > 1:
            raise ValueError(f"a SmootherBank needs one label set; got label counts {sorted(widths)}")
        for name in self._ROWS:
            rows = np.stack([getattr(s, name) for s in self.smoothers]) if self.smoothers else np.zeros((0, 0))
            setattr(self, name, rows)
            for i, s in enumerate(self.smoothers):
                setattr(s, name, rows[i])
        self._hop = np.array([s.hop_s for s in self.smoothers])
        self._all_ema = np.array([s._all_ema for s in self.smoothers], dtype=bool)
        self.steppable = np.array([not s._any_median for s in self.smoothers], dtype=bool)
        for i, s in enumerate(self.smoothers):
            s.bank, s.bank_row = self, i

    def step(self, rows: np.ndarray, scores: np.ndarray, centres_s: np.ndarray) -> Decisions:
        """One hop of the streams ``rows`` (bank rows, each once, all :attr:`steppable`):
        scores ``(m, L)``, patch centres ``(m,)``. Row ``j`` of the :class:`Decisions` is
        stream ``rows[j]``'s hop (:meth:`Decisions.row`)."""
        x = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
        a = self._alpha[rows]
        ema = a * x + (1.0 - a) * self._ema_state[rows]  # Smoother._ema_rows, one hop
        self._ema_state[rows] = ema
        # Labels smoothed with "none" keep the raw score (the hop count `_steps` only
        # matters to median smoothing, which is never stepped here).
        s = ema if self._all_ema[rows].all() else np.where(self._ema[rows], ema, x)
        self.smoothed[rows] = s
        hop = self._hop[rows]
        starts = np.asarray(centres_s, dtype=np.float64) - hop / 2.0
        active = self.active[rows]  # a copy: each stream's `active` after the hop
        hot = ((x >= self.on[rows]) & self.enabled[rows]) | active
        if not hot.all():  # labels that cannot change state forget a run above `on`
            above = self._above_since[rows]
            above[~hot] = np.nan
            self._above_since[rows] = above
        transitions: list[list[Transition]] = [[] for _ in range(len(rows))]
        j, lab = np.nonzero(hot)
        if j.size:
            self._decide_hot(rows[j], j, lab, x[j, lab], np.maximum(x[j, lab], s[j, lab]), starts[j],
                             starts[j] + hop[j], active, transitions)
        return Decisions(s, transitions, active)

    def _decide_hot(
        self, r: np.ndarray, j: np.ndarray, lab: np.ndarray, raw: np.ndarray, off_val: np.ndarray,
        a: np.ndarray, b: np.ndarray, active_rows: np.ndarray, transitions: list[list[Transition]],
    ) -> None:
        """:meth:`Smoother._decide` for one hop of many (stream, label) pairs at once: bank
        rows ``r``, step rows ``j``, labels ``lab``; hop intervals ``[a, b)``."""
        nan = np.nan
        act = active_rows[j, lab]
        start = self.start[r, lab]
        above = self._above_since[r, lab]
        below = self._below_since[r, lab]
        # Not open: a run above `on` starts (or goes on), and fires after `debounce`.
        up = ~act & self.enabled[r, lab] & (raw >= self.on[r, lab])
        above = np.where(up & np.isnan(above), a, above)
        above = np.where(~act & ~up, nan, above)
        onset = up & (b - above >= self.debounce[r, lab])
        # Open: a run below `off` starts (or goes on), and ends it after `hold` and `min_dur`.
        low = act & (off_val < self.off[r, lab])
        below = np.where(low & np.isnan(below), a, below)
        below = np.where(act & ~low, nan, below)
        min_end = start + self.min_dur[r, lab]
        offset = low & (b - below >= self.hold[r, lab]) & (b >= min_end)
        off_time = np.maximum(below, min_end)
        for k in np.flatnonzero(onset).tolist():  # onsets by label, then offsets by label
            transitions[j[k]].append(Transition(int(lab[k]), "onset", float(above[k])))
        for k in np.flatnonzero(offset).tolist():
            transitions[j[k]].append(Transition(int(lab[k]), "offset", float(off_time[k])))
        new_active = (act & ~offset) | onset
        active_rows[j, lab] = new_active
        self.active[r, lab] = new_active
        self.start[r, lab] = np.where(onset, above, np.where(offset, nan, start))
        self._above_since[r, lab] = np.where(onset, nan, above)
        self._below_since[r, lab] = np.where(onset | offset, nan, below)
