"""``python -m training.noise_eval MODEL.onnx|yamnet NOISE_DIR [--json out.json]``: false onsets on noise beds.

Runs every file of a noise-bed set (``python -m training.corpus.noise write``; its
``manifest.csv`` names the files, their kind (``source`` = ``noise/<kind>``) and level)
through the detector's streaming file mode, :func:`detector.pipeline.detect_file`, with
the model's own thresholds and the default smoother (:class:`detector.config.Config`),
and counts onsets. The beds hold no event, so **every onset is false**; the figure is
onsets per hour over the whole set (issue 20: at most 2 per hour).

``yamnet`` runs YAMNet as ``sed-listen --model yamnet`` does (thresholds 0.5/0.35, events
for its home/office set only) through the same ``detect_file``; every onset counts there
too.

Onsets understate a bed that opens an event and holds it for the whole file, so each
file also reports how long each label's events stayed open (``open_s``, from the offset
messages, which ``detect_file`` closes at the end of the stream).

Prints a kind x level table of onsets and the labels opened, the longest share of time
one label stayed open per kind, then the total.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from detector.config import Config
from detector.pipeline import detect_file

__all__ = ["evaluate_beds", "format_table", "load_scorer", "main", "read_beds"]

log = logging.getLogger(__name__)


def read_beds(noise_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``NOISE_DIR/manifest.csv``: ``path`` (absolute), ``kind``, ``level``, ``seconds``."""
    root = Path(noise_dir)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{noise_dir}: no manifest.csv; write the set with "
                                "`python -m training.corpus.noise write DIR`")
    rows = []
    with manifest.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                path = root / row["path"]
                source = row["source"]
                rows.append({"path": path, "kind": source.removeprefix("noise/"),
                             "level": float(row["level"]), "seconds": float(row["seconds"])})
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{manifest}:{i}: bad row {row} ({e}); accepted columns: "
                                 "path, labels, source, seconds, level") from e
            if row.get("labels", "").strip():
                raise ValueError(f"{manifest}:{i}: labels {row['labels']!r}; a noise bed has none")
            if not path.is_file():
                raise FileNotFoundError(f"{manifest}:{i}: {path} not found")
    if not rows:
        raise ValueError(f"{manifest}: no rows")
    return rows


def load_scorer(model: str, threads: int = 1) -> Any:
    """The scorer ``sed-listen --model MODEL`` runs: an ONNX file, or ``yamnet`` with its
    default event labels (:func:`detector.model.resolve.load_scorer`)."""
    from detector.model.resolve import load_scorer as runtime_scorer

    return runtime_scorer(model, "cpu", threads)


def evaluate_beds(noise_dir: str | Path, scorer: Any, config: Config | None = None) -> dict[str, Any]:
    """Onsets per file, per kind and per label, and false onsets per hour over the set.

    Returns ``{"model", "hours", "onsets", "per_hour", "by_label", "by_kind", "files": [
    {"path", "kind", "level", "seconds", "onsets", "labels": {label: count},
    "open_s": {label: seconds an event of it was open}}]}``.
    """
    files = []
    by_label: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    seconds = 0.0
    for bed in read_beds(noise_dir):
        events = detect_file(bed["path"], config=config, scorer=scorer)
        onsets = Counter(m["label"] for m in events if m["event"] == "onset")
        open_s: dict[str, float] = defaultdict(float)
        for m in events:
            if m["event"] == "offset":
                open_s[m["label"]] += float(m["duration"])
        n = sum(onsets.values())
        log.info("%s: %d onsets %s", bed["path"].name, n, dict(onsets))
        files.append({**bed, "path": str(bed["path"]), "onsets": n, "labels": dict(onsets.most_common()),
                      "open_s": {k: round(v, 2) for k, v in sorted(open_s.items(), key=lambda kv: -kv[1])}})
        by_label.update(onsets)
        by_kind[bed["kind"]] += n
        seconds += bed["seconds"]
    hours = seconds / 3600
    total = sum(by_label.values())
    return {"model": scorer.contract.model_version, "hours": hours, "onsets": total,
            "per_hour": total / hours if hours else float("nan"),
            "by_label": dict(by_label.most_common()), "by_kind": dict(by_kind), "files": files}


def format_table(report: dict[str, Any]) -> str:
    """Kind x level onset counts, each kind's labels, and the total per hour (Markdown)."""
    levels = sorted({f["level"] for f in report["files"]}, reverse=True)
    kinds = list(dict.fromkeys(f["kind"] for f in report["files"]))
    cell = {(f["kind"], f["level"]): f for f in report["files"]}
    head = ("| kind | " + " | ".join(f"{lv:g} dBFS" for lv in levels)
            + " | labels opened | longest open |")
    lines = [head, "|" + "---|" * (len(levels) + 3)]
    for k in kinds:
        labels: Counter[str] = Counter()
        counts = []
        share = 0.0
        for lv in levels:
            f = cell.get((k, lv))
            counts.append("" if f is None else str(f["onsets"]))
            if f is not None:
                labels.update(f["labels"])
                share = max([share, *(v / f["seconds"] for v in f["open_s"].values())])
        names = ", ".join(f"{lab} {c}" for lab, c in labels.most_common()) or "-"
        lines.append(f"| {k} | " + " | ".join(counts) + f" | {names} | {100 * share:.0f} % |")
    lines.append("")
    lines.append(f"{report['model']}: {report['onsets']} false onsets in {report['hours']:.2f} h "
                 f"= **{report['per_hour']:.1f} per hour** (acceptance: <= 2)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.noise_eval",
                                description="false onsets per hour on a noise-bed set")
    p.add_argument("model", help="an exported ONNX model, or 'yamnet'")
    p.add_argument("noise_dir", help="a folder written by `python -m training.corpus.noise write`")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        scorer = load_scorer(a.model, a.threads)
        report = evaluate_beds(a.noise_dir, scorer)
    except (OSError, ValueError) as e:
        log.error("%s", e)
        return 2
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
