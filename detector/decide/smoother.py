"""Decisions: per-label score smoothing and onset/offset hysteresis. Pure numpy.

Each patch hop gives one score vector, attributed to the interval
``[centre - hop/2, centre + hop/2]`` around the patch centre (stream seconds).
Per label, with the smoothed score ``s``:

- **smoothing**: ``ema`` (time constant ``ema_tau_s``; alpha = 1 - exp(-hop/tau)),
  ``median`` over ``median_s`` seconds of hops, or ``none``;
- **onset**: ``s >= on`` continuously for at least ``debounce_s``; the event starts
  at the beginning of the first interval above ``on``;
- **offset**: ``s < off`` continuously for at least ``hold_s``; the event ends at the
  beginning of the first interval below ``off``, but never before
  ``start + min_duration_s`` (every reported event lasts at least that long);
- ``on``/``off`` default to the model's tuned thresholds (``None`` = use the model's).

Defaults live in :class:`LabelPolicy`; ``SmootherConfig.labels`` overrides any field
for one label (by display name). Only the labels in ``event_labels`` (the user's
``--labels``, else the model's default set) and ``enabled`` open events; every label's
score is still smoothed. Transitions are returned, never printed or sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LabelPolicy", "Smoother", "SmootherConfig", "Transition"]

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
        self._hist = np.zeros((int(med.max()), L))
        self._n_labels = L
        self.reset()

    def reset(self) -> None:
        L = self._n_labels
        self._ema_state = np.zeros(L)
        self._hist[:] = 0.0
        self._steps = 0
        self.active = np.zeros(L, dtype=bool)
        self.start = np.full(L, np.nan)
        self._above_since = np.full(L, np.nan)
        self._below_since = np.full(L, np.nan)
        self.smoothed = np.zeros(L)

    def _smooth(self, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        if self._ema.any():
            self._ema_state = self._alpha * x + (1.0 - self._alpha) * self._ema_state
            out[self._ema] = self._ema_state[self._ema]
        if self._median.any():
            depth = self._hist.shape[0]
            self._hist[self._steps % depth] = x
            n = min(self._steps + 1, depth)
            for m in np.unique(self._med_len[self._median]):
                k = min(int(m), n)
                rows = [(self._steps - j) % depth for j in range(k)]
                sel = self._median & (self._med_len == m)
                out[sel] = np.median(self._hist[rows][:, sel], axis=0)
        self._steps += 1
        return out

    def process(self, scores: np.ndarray, centre_s: float) -> tuple[np.ndarray, list[Transition]]:
        x = np.asarray(scores, dtype=np.float64)
        if x.shape != (self._n_labels,):
            raise ValueError(f"scores of shape {x.shape}; expected ({self._n_labels},)")
        s = self._smooth(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0))
        self.smoothed = s
        a = centre_s - self.hop_s / 2.0
        b = centre_s + self.hop_s / 2.0
        out: list[Transition] = []

        # Onsets among inactive labels.
        above = (s >= self.on) & self.enabled & ~self.active
        self._above_since[~above & ~self.active] = np.nan
        newly = above & np.isnan(self._above_since)
        self._above_since[newly] = a
        fire = above & (b - self._above_since >= self.debounce)
        for i in np.flatnonzero(fire):
            out.append(Transition(int(i), "onset", float(self._above_since[i])))
        self.start[fire] = self._above_since[fire]
        self.active |= fire
        self._above_since[fire] = np.nan
        self._below_since[fire] = np.nan

        # Offsets among active labels (not those that just fired).
        act = self.active & ~fire
        below = act & (s < self.off)
        self._below_since[act & ~below] = np.nan
        newly = below & np.isnan(self._below_since)
        self._below_since[newly] = a
        end = np.maximum(self._below_since, self.start + self.min_dur)
        close = below & (b - self._below_since >= self.hold) & (b >= self.start + self.min_dur)
        for i in np.flatnonzero(close):
            out.append(Transition(int(i), "offset", float(end[i])))
        self.active[close] = False
        self.start[close] = np.nan
        self._below_since[close] = np.nan
        return s, out

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
