"""``python -m training.model_card``: measure an exported model and write its MODEL_CARD.md.

Everything in the card is measured here, through the detector's own streaming
path (``detector.cli_tag.tag_file`` for clip scores, ``detector.pipeline.detect_file``
for events), on data the model never trained on:

- clip-level per-label AP (max-pooled patch scores) and top-1 rank on the corpus
  validation clips, for the model and, on the labels both share, for YAMNet;
- event F1 (200 ms and 1 s onset collars) and onset latency on the validation
  soundscapes, whose strong labels are known;
- false alarms per hour on background-only soundscapes (an onset counts as false
  unless its label is a background label or an ancestor/descendant of one);
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
from pathlib import Path
from typing import Any

import numpy as np

from detector.cli_tag import tag_file
from detector.modelcost import graph_cost, ms_per_patch
from detector.pipeline import detect_file
from detector.scorer import OnnxScorer
from detector.yamnet import YamnetScorer, find_yamnet
from training.clips import read_manifest
from training.metrics import average_precision, event_f1, mean_excluding
from training.ontology import Ontology

__all__ = ["main", "measure"]

log = logging.getLogger(__name__)

WELL_COVERED_VAL_CLIPS = 5  # "well-covered" labels for the top-1 criterion
COLLARS_S = (0.2, 1.0)
PATCH = (96, 64)  # (patch_frames, n_mels) of both models


def _clip_table(manifest: Path) -> tuple[list[Path], list[set[str]]]:
    by_path: dict[Path, set[str]] = defaultdict(set)
    for clip in read_manifest(manifest):
        by_path[clip.path].update(clip.labels)
    paths = sorted(by_path)
    return paths, [by_path[p] for p in paths]


def _clip_scores(scorer: Any, paths: list[Path]) -> np.ndarray:
    return np.stack([tag_file(p, scorer) for p in paths])


def _ap(scores: np.ndarray, labels: list[set[str]], names: list[str]) -> np.ndarray:
    targets = np.array([[n in ls for n in names] for ls in labels], dtype=np.float32)
    return average_precision(scores, targets)


def _top1(scores: np.ndarray, labels: list[set[str]], names: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    best = np.argmax(scores, axis=1)
    for j, name in enumerate(names):
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


def _events(scorer: OnnxScorer, manifest: Path, names: list[str]) -> dict[str, Any]:
    refs = defaultdict(list)
    for clip in read_manifest(manifest):
        for lab in clip.labels:
            if lab in names and clip.onset is not None and clip.offset is not None:
                refs[clip.path].append((names.index(lab), clip.onset, clip.offset))
    ref_ev, est_ev, latencies = [], [], []
    for path, ev in sorted(refs.items()):
        detected = detect_file(path, scorer=scorer)
        for lab, on, off in ev:
            ref_ev.append((str(path), lab, on, off))
        onsets = [m for m in detected if m["event"] == "onset"]
        offsets = {m["event_id"]: m for m in detected if m["event"] == "offset"}
        for m in onsets:
            lab = names.index(m["label"])
            est_ev.append((str(path), lab, m["start"], offsets[m["event_id"]]["end"]))
            # latency: when the onset message left (stream time of its patch end) minus the
            # true start of the nearest reference event of that label it overlaps
            cands = [on for (lb, on, off) in ev if lb == lab and on - 0.5 <= m["start"] <= off]
            if cands:
                latencies.append(m["stream_time"] - min(cands, key=lambda o: abs(o - m["start"])))
    out: dict[str, Any] = {"files": len(refs), "reference_events": len(ref_ev), "detected": len(est_ev)}
    for collar in COLLARS_S:
        s = event_f1(ref_ev, est_ev, len(names), t_collar=collar)
        out[f"collar_{collar}"] = {"micro_f1": s.micro, "macro_f1": s.macro,
                                   "per_label": {names[i]: float(v) for i, v in enumerate(s.f1) if not np.isnan(v)}}
    lat = np.array(latencies)
    out["onset_latency_s"] = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                              "n": len(lat)} if len(lat) else {}
    return out


def _false_alarms(scorer: OnnxScorer, manifest: Path, ontology: Ontology) -> dict[str, Any]:
    paths, labels = _clip_table(manifest)
    seconds, false = 0.0, defaultdict(int)
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


def measure(model: Path, corpus: Path, yamnet: Path | None) -> dict[str, Any]:
    ontology = Ontology.load()
    ours = OnnxScorer(model, threads=1)
    names = ours.contract.names
    paths, labels = _clip_table(corpus / "val.csv")
    log.info("scoring %d validation clips", len(paths))
    s_ours = _clip_scores(ours, paths)
    card: dict[str, Any] = {"model": str(model), "model_version": ours.contract.model_version,
                            "labels": names, "val_clips": len(paths)}
    ap = _ap(s_ours, labels, names)
    card["ap"] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ap, strict=True)}
    card["map"], card["map_excluded"] = mean_excluding(ap)
    card["top1"] = _top1(s_ours, labels, names)
    cost = graph_cost(model)
    card["cost"] = {"macs": cost.macs, "params": cost.params, "ms_per_patch_b1": ms_per_patch(ours.score, 1, PATCH, seconds=3.0)}
    if yamnet is not None:
        y = YamnetScorer(yamnet, threads=1)
        ynames = y.contract.names
        shared = [n for n in names if n in ynames]
        s_y = _clip_scores(y, paths)[:, [ynames.index(n) for n in shared]]
        ap_y = _ap(s_y, labels, shared)
        ap_o = _ap(s_ours[:, [names.index(n) for n in shared]], labels, shared)
        yc = graph_cost(yamnet)
        card["yamnet"] = {
            "shared_labels": shared,
            "ap": {n: (None if np.isnan(v) else float(v)) for n, v in zip(shared, ap_y, strict=True)},
            "ours_ap": {n: (None if np.isnan(v) else float(v)) for n, v in zip(shared, ap_o, strict=True)},
            "map": mean_excluding(ap_y)[0], "ours_map": mean_excluding(ap_o)[0],
            "macs": yc.macs, "params": yc.params, "ms_per_patch_b1": ms_per_patch(y.score, 1, PATCH, seconds=3.0),
        }
    log.info("events on validation soundscapes")
    card["events"] = _events(ours, corpus / "scenes_val.csv", names)
    log.info("false alarms on background-only soundscapes")
    card["background"] = _false_alarms(ours, corpus / "background_val.csv", ontology)
    summary = json.loads((corpus / "corpus.json").read_text())
    card["counts"] = {n: summary["labels"].get(n) for n in names}
    card["corpus"] = {k: summary[k] for k in ("real_seconds", "package_versions", "exact_duplicates_dropped",
                                              "near_duplicates_dropped") if k in summary}
    if (corpus / "debs").is_dir():
        card["licenses"] = _licenses(corpus / "debs")
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported ONNX model")
    p.add_argument("--corpus", type=Path, required=True, help="folder written by sed-corpus build")
    p.add_argument("--yamnet", type=Path, help="YAMNet w8a8 model.onnx (default: search the cache)")
    p.add_argument("--out", type=Path, required=True, help="card.json to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    card = measure(args.model, args.corpus, args.yamnet or find_yamnet())
    args.out.write_text(json.dumps(card, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
