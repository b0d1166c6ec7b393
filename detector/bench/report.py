"""``sed-bench``'s report: the figures of a run as a table, with the ratio to YAMNet.

A run's results (``sed-bench --json``) carry the :class:`detector.bench.run.BenchConfig`
they were measured with as ``config``; :func:`rows` names the figures it implies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Row", "ratio", "rows", "table", "under_load"]

#: (section, figure, key path, higher is better, target)
Row = tuple[str, str, tuple[str, ...], bool, str]


def rows(config: dict[str, Any]) -> list[Row]:
    """The table's rows for a run made with ``config`` (:class:`BenchConfig` as a dict)."""
    batches = config["batches"]
    long_min = config["long_seconds"] / 60
    n_short = config["short_files"]
    out: list[Row] = [
        ("cost", "MACs per patch (M)", ("cost", "macs_per_patch"), False, ""),
        ("cost", "parameters (k)", ("cost", "params"), False, ""),
    ]
    for b in batches:
        out.append(("cost", f"ms per patch, batch {b}", ("cost", f"ms_per_patch_b{b}"), False,
                    ">= 2x YAMNet" if b == 1 else ""))
    for b in batches:
        out.append(("cost", f"% of fp32 sgemm peak, batch {b}", ("cost", f"peak_fraction_b{b}"), True, ""))
    out += [
        ("file", f"one {long_min:.3g}-min file, x real time", ("file", "long", "x_realtime"), True, ">= 2000"),
        ("file", f"{n_short} short files, x real time", ("file", "short", "x_realtime"), True, ""),
        ("file", f"one {long_min:.3g}-min file, every scores message built", ("file", "long_every_message", "x_realtime"),
         True, ""),
        ("live", "hop latency p50 (ms)", ("live", "latency_p50_ms"), False, ""),
        ("live", "hop latency p99 (ms)", ("live", "latency_p99_ms"), False, ""),
        ("live", "hop latency max (ms)", ("live", "latency_max_ms"), False, ""),
        ("live", "CPU, one stream (% of a core)", ("live", "cpu_percent_of_one_core"), False, "<= 3"),
        ("live", "onset latency p50 (ms)", ("onset", "onset_p50_ms"), False, "<= 300"),
        ("live", "onset latency p95 (ms)", ("onset", "onset_p95_ms"), False, ""),
        ("live", "onset: sound in the deciding patch p50 (ms)", ("onset", "stage_sound_in_patch_p50_ms"), False, ""),
        ("live", "onset: patch complete -> received p50 (ms)", ("onset", "stage_patch_to_publish_p50_ms"), False, ""),
        ("live", "onsets detected / events", ("onset", "detected"), True, ""),
        ("scale", "streams sustained, no drops, one process", ("scale", "max_streams"), True, ">= 2000"),
        ("scale", "streams sustained, no drops, one process per core (--workers)",
         ("scale_processes", "max_streams"), True, ">= 2000"),
        ("memory", "sed-listen RSS (MB)", ("memory", "listen", "rss_mb"), False, ""),
        ("memory", "sed-monitor RSS (MB)", ("memory", "monitor", "rss_mb"), False, ""),
    ]
    return out


_SCALE = {"macs_per_patch": 1e-6, "params": 1e-3}
_PERCENT_PREFIX = "peak_fraction"


def _get(d: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    cur: Any = d
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    scale = 100.0 if path[-1].startswith(_PERCENT_PREFIX) else _SCALE.get(path[-1], 1.0)
    return float(cur) * scale


def ratio(ours: float | None, theirs: float | None, higher_better: bool) -> float | None:
    """How many times better ours is (> 1 = ours better); None when either is missing."""
    if ours is None or theirs is None or not np.isfinite(ours) or not np.isfinite(theirs):
        return None
    num, den = (ours, theirs) if higher_better else (theirs, ours)
    return num / den if den > 0 else None


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def under_load(d: dict[str, Any] | None, section: str) -> bool:
    """Whether ``section`` of one model's results was measured while other processes
    used more than ``LOAD_LIMIT`` cores (``sed-bench`` marks it ``under_load``)."""
    sec = (d or {}).get(section)
    return bool(isinstance(sec, dict) and sec.get("load", {}).get("under_load"))


def table(res: dict[str, Any], markdown: bool = False) -> str:
    """The results as a text (or Markdown) table, with the ratio to YAMNet per figure.

    A figure measured under load (other processes busy, :func:`under_load`) ends in ``*``.
    """
    head = ["section", "figure", "ours", "YAMNet", "x better", "target"]
    body = []
    marked = False
    for sec, fig, path, hb, target in rows(res["config"]):
        o, y = _get(res.get("ours"), path), _get(res.get("yamnet"), path)
        star_o = "*" if under_load(res.get("ours"), path[0]) else ""
        star_y = "*" if under_load(res.get("yamnet"), path[0]) else ""
        marked |= bool(star_o or star_y)
        if fig.startswith("onsets detected"):
            o_ev, y_ev = _get(res.get("ours"), ("onset", "events")), _get(res.get("yamnet"), ("onset", "events"))
            body.append([sec, fig, f"{_fmt(o)}/{_fmt(o_ev)}{star_o}",
                         f"{_fmt(y)}/{_fmt(y_ev)}{star_y}" if y is not None else "n/a", "", target])
            continue
        # YAMNet's share of the fp32 peak counts int8 MACs: not comparable, no ratio.
        r = None if path[-1].startswith(_PERCENT_PREFIX) else ratio(o, y, hb)
        body.append([sec, fig, _fmt(o) + star_o, _fmt(y) + (star_y if y is not None else ""),
                     f"{r:.2f}" if r is not None else "", target])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines + ([_LOAD_NOTE] if marked else []))
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body])
    return text + ("\n" + _LOAD_NOTE if marked else "")


_LOAD_NOTE = "* measured while other processes used more than 1 core on average (figure pessimistic)"
