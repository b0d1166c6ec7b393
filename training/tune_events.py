"""Event settings tuned on soundscapes: per label, the on-threshold and hold with the best event F1.

``sed-eval --threshold-range`` tunes each label's threshold for *clip* F1 on single
clips. Events are another question: an onset must land within the collar of a true
start and its offset near the true end, over real backgrounds, with the hysteresis and
timing ``sed-listen`` applies. This tool asks that question directly, on the training
soundscapes of ``sed-corpus build`` (``scenes_train.csv``: labelled training clips laid
over backgrounds; the validation scenes stay for measuring, ``--eval``):

    python -m training.tune_events MODEL.onnx --scenes CORPUS/scenes_train.csv \
        --eval CORPUS/scenes_val.csv --candidates scenes --out DIR
    sed-export CHECKPOINT --out EXPORT --report DIR/report.json --event-labels DIR/event_labels.txt

1. Every scene goes once through the runtime's own stages: the streaming front end and
   patcher of :class:`detector.stream.StreamState` at the file hop, then the model.
2. Only the decisions are replayed (``StreamState.on_scores_many``, the code that turns
   scores into events in ``sed-listen``) for each on-threshold of a grid (the
   off-threshold at ``off_ratio`` of it) and each hold time; each label's events are
   scored against the references with :func:`training.metrics.event_f1` (1 s collar).
3. Each event label with at least ``min_events`` reference events gets the grid point of
   best F1 when it beats the model's own settings (the higher threshold, then the
   shorter hold, on a tie), among the settings that open no event on steady noise beds
   (every kind of :mod:`training.corpus.noise` at -65, -45 and -25 dBFS, from generators
   of their own: the evaluation beds stay unseen). A *candidate* (``--candidates``: every label the scenes hold,
   or a file) becomes an event label where its tuned F1 reaches ``--min-f1``; the noise,
   hum, silence and scene classes of ``detector/data/event_labels_never.txt`` never do.

``python -m training.tune_events yamnet ...`` tunes the teacher the same way, from the
home/office event labels: the soundscape figures of the two models then compare
(``python -m training.model_card --yamnet-events DIR/report.json``).

``DIR/report.json`` holds the thresholds and the per-label hold (``event_timing``) in the
form ``sed-export --report`` writes into the model contract, with the per-label F1 before
and after; ``DIR/event_labels.txt`` the event labels; ``DIR/summary.md`` a table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

from detector.config import Config
from detector.decide.smoother import SmootherConfig
from detector.frontend.patcher import Patch
from detector.model.labels import NEVER_EVENT_LABELS, choose_event_labels, read_label_file
from detector.model.scorer import OnnxScorer, Scorer
from detector.sources.parse import FileSource
from detector.stream import StreamState
from training.clips import read_manifest
from training.metrics import event_f1

__all__ = ["DEFAULT_GRID", "DEFAULT_HOLDS", "Scene", "applied", "decide", "main", "measure", "score_scenes", "tune"]

log = logging.getLogger("training.tune_events")

DEFAULT_GRID = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
DEFAULT_HOLDS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Up to 8 s: birdsong, rain or a drum roll come in bouts with gaps of seconds, and the
longest hold closes the gaps inside one (v2.5's events with holds up to 4 s: soundscape F1
0.293; up to 8 s: 0.313, on the validation scenes it never tunes on)."""
COLLAR_S = 1.0

Event = tuple[str, int, float, float]


@dataclasses.dataclass
class Scene:
    """One soundscape: its patches and their scores, and its reference events."""

    path: Path
    patches: list[Patch]
    scores: np.ndarray  # (n, L)
    samples: int  # its length at the model's rate: where the last open event is closed
    references: list[tuple[int, float, float]]  # (label index, onset, offset)


def _state(path: Path, scorer: OnnxScorer, config: Config) -> StreamState:
    rate = scorer.contract.features.sample_rate
    return StreamState(FileSource(path, rate), scorer, config, "tune")


def score_scenes(scorer: OnnxScorer, manifest: Path, limit: int | None = None) -> list[Scene]:
    """Each scene of ``manifest`` through the runtime front end, patcher and model, once."""
    names = list(scorer.contract.names)
    refs: dict[Path, list[tuple[int, float, float]]] = defaultdict(list)
    for clip in read_manifest(manifest):
        refs.setdefault(clip.path, [])
        for name in clip.labels:
            if name in names and clip.onset is not None and clip.offset is not None:
                refs[clip.path].append((names.index(name), clip.onset, clip.offset))
    paths = sorted(refs)[:limit] if limit else sorted(refs)
    out = []
    for k, path in enumerate(paths):
        out.append(_score_file(scorer, path, refs[path]))
        if (k + 1) % 100 == 0:
            log.info("scored %d/%d scenes", k + 1, len(paths))
    return out


def _score_file(scorer: OnnxScorer, path: Path, references: list[tuple[int, float, float]]) -> Scene:
    st = _state(path, scorer, Config())
    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != st.sample_rate:
        raise ValueError(f"{path}: {rate} Hz; the scenes are written at {st.sample_rate} Hz")
    st.source.close()
    patches = st.feed(wave.mean(axis=1)) + st.finish()
    n = len(scorer.contract.names)
    scores = scorer.score(np.stack([p.data for p in patches])) if patches else np.zeros((0, n))
    return Scene(path, patches, scores, st.samples, references)


TUNE_SEED_TAG = 0x74756E656E6F6973  # "tunenois": a stream neither training nor the evaluation beds draw
NOISE_LEVELS = (-65.0, -45.0, -25.0)
NOISE_MINUTES = 10.0
"""Minutes of each tuning bed: as long as the evaluation's (``training.noise_eval``). With 3, a
setting could pass and then open an event minutes into a longer bed (v2.4's Water: 3.4 min
into HVAC at -20 dBFS, with its on-threshold at 0.5; tuned on 10-minute beds, 0.6)."""


def noise_scenes(scorer: OnnxScorer, out: Path, minutes: float = NOISE_MINUTES,
                 levels: Sequence[float] = NOISE_LEVELS) -> list[Scene]:
    """Steady noise beds of every kind (:mod:`training.corpus.noise`) as scenes with no
    events, written to ``out`` and scored like the soundscapes. Their own generators and
    levels: they are not the evaluation set of ``python -m training.corpus.noise write``."""
    from training.corpus import noise

    rate = scorer.contract.features.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    n = round(minutes * 60 * rate)
    scenes = []
    for i, kind in enumerate(noise.KINDS):
        for j, level in enumerate(levels):
            rng = np.random.default_rng([TUNE_SEED_TAG, i, j])
            path = out / f"{kind}_{level:g}dBFS.flac"
            sf.write(path, noise.bed(kind, n, float(level), rng, rate), rate, subtype="PCM_24")
            scenes.append(_score_file(scorer, path, []))
    return scenes


def decide(scene: Scene, scorer: OnnxScorer, config: Config) -> list[Event]:
    """The events ``sed-listen`` would raise on ``scene`` with ``config`` (decisions replayed)."""
    names = scorer.contract.names
    st = _state(scene.path, scorer, config)
    st.source.close()
    msgs: list[dict[str, Any]] = []
    if scene.patches:
        msgs += st.on_scores_many(scene.patches, scene.scores)
    st.samples = scene.samples
    msgs += st.close_events("end_of_stream")
    index = {n: i for i, n in enumerate(names)}
    onsets = {m["event_id"]: m for m in msgs if m["type"] == "event" and m["event"] == "onset"}
    return [(str(scene.path), index[m["label"]], onsets[m["event_id"]]["start"], m["end"])
            for m in msgs if m["type"] == "event" and m["event"] == "offset"]


def _with(config: Config, on: float | None, off_ratio: float, labels: Sequence[str], hold: float | None = None) -> Config:
    policy = dataclasses.replace(config.smoother.default, on=on, off=None if on is None else on * off_ratio)
    if hold is not None:
        policy = dataclasses.replace(policy, hold_s=hold)
    listen = dataclasses.replace(config.listen, labels=tuple(labels), scores=False)
    return dataclasses.replace(config, smoother=SmootherConfig(policy, config.smoother.labels), listen=listen)


def _per_label(scenes: list[Scene], scorer: OnnxScorer, config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(scorer.contract.names)
    ref = [(str(s.path), k, on, off) for s in scenes for k, on, off in s.references]
    est = [e for s in scenes for e in decide(s, scorer, config)]
    sc = event_f1(ref, est, n, t_collar=COLLAR_S)
    return sc.tp, sc.fp, sc.fn


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def tune(
    scenes: list[Scene], scorer: OnnxScorer, labels: Sequence[str], grid: Sequence[float] = DEFAULT_GRID,
    off_ratio: float = 0.5, min_events: int = 3, holds: Sequence[float] = DEFAULT_HOLDS,
    candidates: Sequence[str] = (), min_f1: float = 0.3, noise: Sequence[Scene] = (),
) -> dict[str, Any]:
    """Per label of ``labels`` and ``candidates``, the on-threshold of ``grid`` and the
    hold of ``holds`` with the best event F1 on ``scenes``, among the settings that open
    no event on the ``noise`` scenes (steady beds, :func:`noise_scenes`).

    ``labels`` are the model's event labels: they stay event labels whatever they score.
    ``candidates`` join them only where their tuned F1 reaches ``min_f1``.
    """
    c = scorer.contract
    names = list(c.names)
    on, off = np.array(c.on_thresholds, dtype=float), np.array(c.off_thresholds, dtype=float)
    base = Config()
    every = tuple(dict.fromkeys((*labels, *candidates)))
    n_ref = np.zeros(len(names))
    for s in scenes:
        for k, _, _ in s.references:
            n_ref[k] += 1
    tp0, fp0, fn0 = _per_label(scenes, scorer, _with(base, None, off_ratio, labels))
    if noise:
        log.info("noise beds: %d, %.1f min in all", len(noise), sum(s.samples for s in noise) / 60 / c.features.sample_rate)
    f1_before = _f1(tp0, fp0, fn0)
    # The grid overrides every label's timing: the model's own event_timing is set aside.
    bare = copy.copy(scorer)
    bare.contract = dataclasses.replace(c, event_timing={})
    points = [(g, h) for h in holds for g in grid]
    f1 = np.zeros((len(points), len(names)))
    quiet = np.ones((len(points), len(names)), dtype=bool)  # no onset on any noise bed
    for i, (g, h) in enumerate(points):
        cfg = _with(base, g, off_ratio, every, h)
        f1[i] = _f1(*_per_label(scenes, bare, cfg))
        for s in noise:
            for _, k, _, _ in decide(s, bare, cfg):
                quiet[i, k] = False
        log.info("replayed on %.2f, hold %.1f s (%d/%d)", g, h, i + 1, len(points))
    tuned: dict[str, dict[str, float]] = {}
    timing: dict[str, dict[str, float]] = dict(c.event_timing)
    chosen = list(labels)
    for name in every:
        k = names.index(name)
        if n_ref[k] < min_events:
            continue
        allowed = [i for i in range(len(points)) if quiet[i, k]]
        if not allowed:
            continue  # every setting tried opens events on steady noise
        best = max(allowed, key=lambda i: (round(float(f1[i, k]), 9), points[i][0], -points[i][1]))
        g, h = points[best]
        if name in labels and f1[best, k] <= f1_before[k]:
            continue  # an event label keeps the model's own settings unless beaten
        if name not in labels:
            if f1[best, k] < min_f1:
                continue
            chosen.append(name)
        on[k], off[k] = g, g * off_ratio
        timing[name] = {"hold_s": float(h)}
        tuned[name] = {"on": float(g), "hold_s": float(h), "f1_before": float(f1_before[k]),
                       "f1": float(f1[best, k]), "events": int(n_ref[k]), "added": name not in labels}
    return {
        "labels": names,
        "thresholds": {"on": on.tolist(), "off": off.tolist()},
        "event_timing": timing,
        "event_labels": chosen,
        "tuned": tuned,
        "grid": list(grid),
        "holds": list(holds),
        "off_ratio": off_ratio,
        "min_f1": min_f1,
        "scenes": len(scenes),
        "reference_events": int(n_ref.sum()),
        "micro_f1_before": float(_f1(tp0.sum(), fp0.sum(), fn0.sum())),
    }


_S = TypeVar("_S", bound=Scorer)


def applied(scorer: _S, report: dict[str, Any]) -> _S:
    """``scorer`` with a tuning report's thresholds, event timing and event labels in its
    contract, as ``sed-export --report ... --event-labels`` would write them (a copy)."""
    c = scorer.contract
    if list(report["labels"]) != list(c.names):
        raise ValueError("the report was tuned for another model's labels")
    out = copy.copy(scorer)
    out.contract = dataclasses.replace(
        c, on_thresholds=tuple(report["thresholds"]["on"]), off_thresholds=tuple(report["thresholds"]["off"]),
        event_timing=dict(report["event_timing"]), event_labels=tuple(report["event_labels"]))
    return out


def measure(scenes: list[Scene], scorer: OnnxScorer) -> dict[str, Any]:
    """Event F1 (1 s collar) of ``scorer`` with its contract's settings on ``scenes``."""
    names = scorer.contract.names
    ref = [(str(s.path), k, on, off) for s in scenes for k, on, off in s.references]
    est = [e for s in scenes for e in decide(s, scorer, Config())]
    sc = event_f1(ref, est, len(names), t_collar=COLLAR_S)
    return {"micro_f1": sc.micro_f1, "macro_f1": sc.macro_f1, "reference_events": len(ref),
            "detected": len(est), "true_positives": int(sc.tp.sum())}


def _summary(report: dict[str, Any]) -> str:
    lines = [f"# Event thresholds and hold tuned on {report['scenes']} soundscapes "
             f"({report['reference_events']} reference events)", "",
             f"micro F1 with the model's settings: {report['micro_f1_before']:.3f}; "
             f"{len(report['event_labels'])} event labels after tuning", "",
             "| label | events | on | hold (s) | F1 before | F1 after | added |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, t in sorted(report["tuned"].items(), key=lambda kv: -kv[1]["events"]):
        lines.append(f"| {name} | {t['events']} | {t['on']:.2f} | {t['hold_s']:g} | {t['f1_before']:.3f} "
                     f"| {t['f1']:.3f} | {'yes' if t['added'] else ''} |")
    if "eval" in report:
        e = report["eval"]
        lines += ["", f"Measured on {e['manifest']} (not tuned on): micro F1 {e['before']['micro_f1']:.3f} -> "
                  f"{e['after']['micro_f1']:.3f}, macro {e['before']['macro_f1']:.3f} -> {e['after']['macro_f1']:.3f} "
                  f"({e['after']['true_positives']} of {e['after']['reference_events']} reference events found, "
                  f"{e['after']['detected']} detected)"]
    return "\n".join(lines) + "\n"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.3,0.5") from e


def _scorer(model: str, yamnet: Path | None, threads: int) -> OnnxScorer:
    """The model to tune: an exported one, or (``yamnet``) the teacher, its event labels
    starting as the home/office labels it has."""
    if model != "yamnet":
        return OnnxScorer(model, threads=threads)
    from detector.model.labels import HOME_EVENT_LABELS
    from detector.model.yamnet import YamnetScorer, class_map, find_yamnet, how_to_fetch

    path = find_yamnet(yamnet)
    if path is None:
        raise SystemExit(f"model 'yamnet': no YAMNet model found; {how_to_fetch()}")
    names = {lab.name for lab in class_map(path)}
    home = [n for n in read_label_file(HOME_EVENT_LABELS) if n in names]
    return YamnetScorer(path, threads=threads, event_labels=home)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.tune_events", description=__doc__.split("\n")[0])
    p.add_argument("model", help="exported model (.onnx), or 'yamnet': the teacher (its w8a8 export from "
                                 "the cache, --yamnet), from the home event labels, tuned the same way "
                                 "for comparison (training.model_card --yamnet-events)")
    p.add_argument("--yamnet", type=Path, help="YAMNet's model.onnx for model 'yamnet' (default: search the cache)")
    p.add_argument("--scenes", type=Path, required=True, help="soundscape manifest (sed-corpus build: scenes_train.csv)")
    p.add_argument("--out", type=Path, required=True,
                   help="output directory (report.json for sed-export --report, event_labels.txt, summary.md)")
    p.add_argument("--labels", metavar="FILE", help="event labels (a label file); default: the model's")
    p.add_argument("--candidates", metavar="scenes|FILE",
                   help="more labels that become event labels where their tuned F1 reaches --min-f1: "
                        "'scenes' (every label the scenes hold) or a label file; never those of "
                        "detector/data/event_labels_never.txt")
    p.add_argument("--min-f1", type=float, default=0.3, help="tuned F1 a candidate needs (default 0.3)")
    p.add_argument("--grid", type=_floats, default=DEFAULT_GRID, help="on-thresholds to try (comma-separated)")
    p.add_argument("--holds", type=_floats, default=DEFAULT_HOLDS, help="hold times (s) to try (comma-separated)")
    p.add_argument("--noise-minutes", type=float, default=NOISE_MINUTES,
                   help="minutes of each steady noise bed (9 kinds x --noise-levels) that a tuned setting "
                        f"must stay silent on; 0: no such check (default {NOISE_MINUTES:g})")
    p.add_argument("--noise-levels", type=_floats, default=NOISE_LEVELS, metavar="DBFS,...",
                   help=f"levels of those beds in dBFS (default {','.join(f'{v:g}' for v in NOISE_LEVELS)}; "
                        "write --noise-levels=-65,-20)")
    p.add_argument("--off-ratio", type=float, default=0.5, help="off-threshold as a fraction of on (default 0.5)")
    p.add_argument("--min-events", type=int, default=3, help="reference events a label needs to be tuned")
    p.add_argument("--eval", type=Path, metavar="SCENES",
                   help="soundscapes to measure before and after on (scenes_val.csv; never tuned on)")
    p.add_argument("--limit", type=int, help="at most this many scenes (a quick look)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its choice)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("detector.sources").setLevel(logging.WARNING)  # a line per scene replayed
    if not 0.0 < args.off_ratio <= 1.0:
        p.error(f"--off-ratio {args.off_ratio}: accepted 0 < ratio <= 1")
    if not all(0.0 < g <= 1.0 for g in args.grid) or not all(h >= 0 for h in args.holds):
        p.error(f"--grid {args.grid} must lie in (0, 1] and --holds {args.holds} be >= 0")
    if not args.noise_levels or not all(-120.0 <= v <= -6.0 for v in args.noise_levels):
        p.error(f"--noise-levels {args.noise_levels}: accepted -120 to -6 dBFS each")
    if args.yamnet is not None and args.model != "yamnet":
        p.error(f"--yamnet {args.yamnet} is for model 'yamnet'; got model {args.model!r}")
    scorer = _scorer(args.model, args.yamnet, args.threads)
    names = scorer.contract.names
    chosen = read_label_file(args.labels) if args.labels else None
    labels = choose_event_labels(names, scorer.contract.event_labels, chosen, "--labels")
    scenes = score_scenes(scorer, args.scenes, args.limit)
    candidates: tuple[str, ...] = ()
    if args.candidates == "scenes":
        candidates = tuple(dict.fromkeys(names[k] for s in scenes for k, _, _ in s.references))
    elif args.candidates:
        candidates = choose_event_labels(names, None, read_label_file(args.candidates), "--candidates")
    never = set(read_label_file(NEVER_EVENT_LABELS))
    candidates = tuple(n for n in candidates if n not in never and n not in labels)
    noise = (noise_scenes(scorer, args.out / "noise_beds", args.noise_minutes, args.noise_levels)
             if args.noise_minutes > 0 else [])
    report = tune(scenes, scorer, labels, args.grid, args.off_ratio, args.min_events, args.holds,
                  candidates, args.min_f1, noise)
    report["noise_beds_minutes"] = args.noise_minutes * len(noise)
    report["noise_levels_dbfs"] = list(args.noise_levels)
    report["model"] = str(args.model)
    report["scenes_manifest"] = str(args.scenes)
    if args.eval:
        held = score_scenes(scorer, args.eval)
        report["eval"] = {"manifest": str(args.eval), "before": measure(held, scorer),
                          "after": measure(held, applied(scorer, report))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "event_labels.txt").write_text(
        f"# event labels after python -m training.tune_events on {args.scenes}\n"
        + "".join(f"{n}\n" for n in report["event_labels"]), encoding="utf-8")
    (args.out / "summary.md").write_text(_summary(report), encoding="utf-8")
    print(_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
