"""Leave-package-out evaluation: whole Debian packages no model trains on, scored per recording.

``python -m training.heldout build OUT_DIR [--deb-cache DIR]`` downloads the
:data:`HELDOUT_PACKAGES`, applies the reviewed rules of ``corpus/heldout_mapping.csv``
(the format of ``corpus/mapping.csv``, see :mod:`training.corpus.mapping`), decodes
every matched file whole to 16 kHz mono FLAC (libsndfile, else ffmpeg: MP3 on old
libsndfile, G.722), drops exact PCM duplicates and writes ``OUT_DIR/manifest.csv``
(``path, labels, source, package, seconds``) and ``OUT_DIR/duplicates.csv``. Labels
carry their ontology ancestors (:func:`training.corpus.build.complete_labels`) within
the vocabulary of both mapping tables and the synthetic sources, as the training
corpus does. Labels marked ``?`` (heard in part) are kept: this is evaluation.

``python -m training.heldout eval OUT_DIR MODEL.onnx [--yamnet] [--pool mean|max]
[--json out.json]`` scores every recording with the model (and YAMNet) over log-mel
patches at hop 0.48 s (:func:`detector.cli.tag.score_file`, the path of ``sed-tag``),
pools them by max or mean, and reports per-label average precision over the labels
with at least :data:`MIN_POSITIVES` positive recordings that both models can express
(YAMNet's 521 classes matched to ours by AudioSet mid), each model's mAP over them,
and separately the labels only YAMNet can express. The JSON holds both poolings.

The packages named in :data:`RESERVED` are reserved for an independent evaluation
and are refused by name.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from training.corpus import dedup, packages, soundfont, synth
from training.corpus.build import complete_labels, decode
from training.corpus.mapping import DEFAULT_MAPPING as TRAIN_MAPPING
from training.corpus.mapping import Rule, load_mapping, match
from training.metrics import average_precision
from training.ontology import Ontology

__all__ = [
    "DEFAULT_MAPPING",
    "HELDOUT_PACKAGES",
    "MANIFEST_COLUMNS",
    "MIN_POSITIVES",
    "RESERVED",
    "Recording",
    "ReservedPackageError",
    "build",
    "check_not_reserved",
    "decode_any",
    "evaluate",
    "load_manifest",
    "main",
    "markdown_table",
    "report",
    "score_recordings",
]

log = logging.getLogger(__name__)

DEFAULT_MAPPING = Path(__file__).parent / "corpus" / "heldout_mapping.csv"
HELDOUT_PACKAGES = (
    "scorched3d-data", "supertuxkart-data", "triplea", "etw-data", "flightgear-data-base",
    "searchandrescue-data", "torcs-data", "berusky2-data", "kajongg",
    "asterisk-core-sounds-it-g722", "hydrogen-drumkits-effects", "chuck-data",
)
#: Reserved for an independent evaluation (../shared/DATA.md): never built here.
RESERVED = ("scratch",)
RESERVED_PREFIXES = ("asterisk-core-sounds-fr-",)
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac", ".aiff", ".aif", ".opus", ".mp3", ".g722")
#: Raw streams without a container: ffmpeg needs the format named.
RAW_FORMATS = {".g722": "g722"}
MANIFEST_COLUMNS = ("path", "labels", "source", "package", "seconds")
LABEL_SEP = "|"
MIN_POSITIVES = 3
MIN_SECONDS = 0.05
SILENCE_PEAK = 1e-4
HOP_SECONDS = 0.48
POOLS = ("max", "mean")


class ReservedPackageError(ValueError):
    """A package reserved for independent evaluation was asked for."""


def check_not_reserved(names: Iterable[str]) -> None:
    """Raise :class:`ReservedPackageError` naming every reserved package in ``names``."""
    bad = [n for n in names if n in RESERVED or n.startswith(RESERVED_PREFIXES)]
    if bad:
        raise ReservedPackageError(
            f"packages {bad} are reserved for independent evaluation (`scratch`, "
            "`asterisk-core-sounds-fr-*`); they are never built or scored here")


def _ffmpeg_decode(path: Path, sample_rate: int) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError(f"{path}: libsndfile cannot read it and ffmpeg is not installed "
                           "(apt-get install ffmpeg)")
    fmt = RAW_FORMATS.get(path.suffix.lower())
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *(["-f", fmt] if fmt else []), "-i", str(path),
           "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg cannot decode {path}: {proc.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def decode_any(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``: libsndfile (:func:`~training.corpus.build.decode`),
    else ffmpeg (raw G.722, or what this libsndfile lacks)."""
    if path.suffix.lower() not in RAW_FORMATS:
        try:
            return decode(path, sample_rate)
        except (sf.LibsndfileError, RuntimeError) as e:
            log.info("%s: libsndfile: %s; trying ffmpeg", path.name, e)
    return _ffmpeg_decode(path, sample_rate)


def vocabulary(rules: Sequence[Rule]) -> frozenset[str]:
    """Labels ancestors may be completed to: those of both mapping tables, the synthetic
    events and the soundfont instruments (the training corpus's vocabulary, plus ours)."""
    words = {lab for r in (*rules, *load_mapping(TRAIN_MAPPING)) for lab in r.labels}
    words.update(lab for _, labs in synth.kinds(True).values() for lab in labs)
    words.update(lab for inst in soundfont.INSTRUMENTS for lab in inst.labels)
    return frozenset(words)


def _clip_name(package: str, relpath: str) -> str:
    return f"clips/{package}/{relpath.replace('/', '__').rsplit('.', 1)[0]}.flac"


def build(out: Path, deb_cache: Path, mapping: Path = DEFAULT_MAPPING,
          names: Sequence[str] = HELDOUT_PACKAGES, sample_rate: int = 16000) -> dict[str, Any]:
    """Build the held-out set into ``out`` (see module docstring); returns the summary."""
    check_not_reserved(names)
    rules = load_mapping(mapping)
    check_not_reserved({r.package for r in rules})
    ontology = Ontology.load()
    vocab = vocabulary(rules)
    if (out / "clips").exists():
        shutil.rmtree(out / "clips")
    rows: list[dict[str, object]] = []
    dup_rows: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    versions: dict[str, str] = {}
    for pkg in names:
        deb = packages.download(pkg, deb_cache)
        versions[pkg] = packages.deb_version(deb)
        root = packages.unpack(deb, out / "unpacked" / pkg)
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and p.suffix.lower() in AUDIO_SUFFIXES)
        n = 0
        for f in files:
            rel = f.relative_to(root).as_posix()
            rule = match(rules, pkg, rel)
            if rule is None:
                skipped["unmapped"] += 1
                continue
            if rule.excluded:
                skipped["excluded"] += 1
                continue
            try:
                wave = decode_any(f, sample_rate)
            except (sf.LibsndfileError, RuntimeError, ValueError) as e:
                log.warning("cannot decode %s:%s: %s", pkg, rel, e)
                skipped["undecodable"] += 1
                continue
            if wave.size < MIN_SECONDS * sample_rate:
                skipped["too_short"] += 1
                continue
            if float(np.max(np.abs(wave))) < SILENCE_PEAK:
                skipped["silent"] += 1
                continue
            labels = complete_labels(rule.labels, vocab, ontology)
            digest = dedup.pcm_hash(wave)
            if digest in seen:
                kept = rows[seen[digest]]
                dup_rows.append({"dropped": f"{pkg}:{rel}", "kept": kept["source"]})
                if set(labels) - set(str(kept["labels"]).split(LABEL_SEP)):
                    log.warning("%s:%s duplicates %s but is labelled %s", pkg, rel,
                                kept["source"], labels)
                continue
            name = _clip_name(pkg, rel)
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out / name), np.clip(wave, -1.0, 1.0), sample_rate,
                     subtype="PCM_16", format="FLAC")
            seen[digest] = len(rows)
            rows.append({"path": name, "labels": LABEL_SEP.join(labels),
                         "source": f"{pkg}:{rel}", "package": pkg,
                         "seconds": f"{wave.size / sample_rate:.3f}"})
            n += 1
        log.info("%s %s: %d recordings", pkg, versions[pkg], n)
        shutil.rmtree(out / "unpacked" / pkg)
    shutil.rmtree(out / "unpacked", ignore_errors=True)
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with (out / "duplicates.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=("dropped", "kept"), lineterminator="\n")
        w.writeheader()
        w.writerows(dup_rows)
    per_label = Counter(lab for r in rows for lab in str(r["labels"]).split(LABEL_SEP))
    summary: dict[str, Any] = {
        "recordings": len(rows), "exact_duplicates_dropped": len(dup_rows),
        "skipped": dict(sorted(skipped.items())), "package_versions": versions,
        "seconds": round(sum(float(str(r["seconds"])) for r in rows), 1),
        "per_package": dict(Counter(str(r["package"]) for r in rows)),
        "labels": dict(sorted(per_label.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    (out / "heldout.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


@dataclass(frozen=True)
class Recording:
    """One row of ``manifest.csv``."""

    path: Path
    labels: frozenset[str]
    source: str
    package: str
    seconds: float


def load_manifest(root: Path) -> list[Recording]:
    """The recordings of ``root/manifest.csv`` (paths resolved against ``root``)."""
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return [Recording(root / r["path"], frozenset(s for s in r["labels"].split(LABEL_SEP) if s),
                          r["source"], r["package"], float(r["seconds"]))
                for r in csv.DictReader(fh)]


class _Scorer(Protocol):
    contract: Any

    def score(self, patches: np.ndarray) -> np.ndarray: ...


def score_recordings(recs: Sequence[Recording], scorer: _Scorer,
                     hop_s: float = HOP_SECONDS) -> dict[str, np.ndarray]:
    """``{pool: (N, L) clip scores}`` for every pool in :data:`POOLS`, one pass per file."""
    from detector.cli.tag import score_file

    out: dict[str, list[np.ndarray]] = {p: [] for p in POOLS}
    for i, r in enumerate(recs):
        pooled = score_file(r.path, scorer, hop_s)  # type: ignore[arg-type]
        for p in POOLS:
            out[p].append(pooled.pooled(p))
        if (i + 1) % 200 == 0:
            log.info("scored %d/%d", i + 1, len(recs))
    return {p: np.stack(v) for p, v in out.items()}


def _mid_index(scorer: _Scorer) -> dict[str, int]:
    return {lab.mid: i for i, lab in enumerate(scorer.contract.labels)}


def evaluate(recs: Sequence[Recording], sed: dict[str, np.ndarray], sed_mids: Sequence[str],
             yam: dict[str, np.ndarray] | None = None, yam_mids: Sequence[str] = (),
             min_positives: int = MIN_POSITIVES, ontology: Ontology | None = None,
             ) -> dict[str, Any]:
    """Per-label AP and mAP from pooled scores (``{pool: (N, L)}``), for every pool given.

    Labels (display names) with at least ``min_positives`` positive recordings are split
    into: ``both`` (the model and YAMNet have the mid; the comparison), ``sed_only``,
    ``yamnet_only`` and ``neither``. Without YAMNet, ``both`` is every label the model has.
    """
    onto = ontology or Ontology.load()
    counts = Counter(lab for r in recs for lab in r.labels)
    wanted = sorted(lab for lab, n in counts.items() if n >= min_positives)
    si = {m: i for i, m in enumerate(sed_mids)}
    yi = {m: i for i, m in enumerate(yam_mids)}
    groups: dict[str, list[str]] = {"both": [], "sed_only": [], "yamnet_only": [], "neither": []}
    for lab in wanted:
        mid = onto.mid(lab)
        has_s, has_y = mid in si, (mid in yi) or yam is None
        key = ("both" if has_y else "sed_only") if has_s else ("yamnet_only" if has_y and yam
                                                               is not None else "neither")
        groups[key].append(lab)
    result: dict[str, Any] = {
        "recordings": len(recs), "min_positives": min_positives,
        "labels_with_min_positives": len(wanted),
        "groups": {k: len(v) for k, v in groups.items()}, "pools": {}}

    def aps(scores: np.ndarray, index: dict[str, int], labs: list[str]) -> list[float]:
        if not labs:
            return []
        cols = [index[onto.mid(lab)] for lab in labs]
        targets = np.array([[lab in r.labels for lab in labs] for r in recs], dtype=np.int8)
        return [float(a) for a in average_precision(scores[:, cols], targets)]

    for pool, s_scores in sed.items():
        rows = []
        s_ap = aps(s_scores, si, groups["both"])
        y_ap = aps(yam[pool], yi, groups["both"]) if yam is not None else [math.nan] * len(s_ap)
        for lab, a, b in zip(groups["both"], s_ap, y_ap, strict=True):
            rows.append({"label": lab, "positives": counts[lab], "sed_ap": a, "yamnet_ap": b})
        y_only = aps(yam[pool], yi, groups["yamnet_only"]) if yam is not None else []
        result["pools"][pool] = {
            "sed_map": float(np.mean(s_ap)) if s_ap else math.nan,
            "yamnet_map": float(np.mean(y_ap)) if s_ap and yam is not None else math.nan,
            "per_label": rows,
            "yamnet_only": [{"label": lab, "positives": counts[lab], "yamnet_ap": a}
                            for lab, a in zip(groups["yamnet_only"], y_only, strict=True)],
            "yamnet_only_map": float(np.mean(y_only)) if y_only else math.nan,
        }
    result["labels"] = groups
    return result


def _f(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def markdown_table(result: dict[str, Any], pool: str) -> str:
    """The per-label table of one pooling, best-covered labels first, with the mAPs."""
    r = result["pools"][pool]
    g = result["groups"]
    lines = [
        f"pool {pool}: {result['recordings']} recordings; {result['labels_with_min_positives']} "
        f"labels with >= {result['min_positives']} positives: {g['both']} both models express, "
        f"{g['yamnet_only']} only YAMNet, {g['sed_only']} only the model, {g['neither']} neither",
        "", f"mAP over the {g['both']} shared labels: model {_f(r['sed_map'])}, "
        f"YAMNet {_f(r['yamnet_map'])}", "",
        "| label | positives | model AP | YAMNet AP |", "|---|---:|---:|---:|"]
    for row in sorted(r["per_label"], key=lambda x: (-x["positives"], x["label"])):
        lines.append(f"| {row['label']} | {row['positives']} | {_f(row['sed_ap'])} "
                     f"| {_f(row['yamnet_ap'])} |")
    if r["yamnet_only"]:
        lines += ["", f"Labels only YAMNet expresses (mAP {_f(r['yamnet_only_map'])}):", "",
                  "| label | positives | YAMNet AP |", "|---|---:|---:|"]
        for row in sorted(r["yamnet_only"], key=lambda x: (-x["positives"], x["label"])):
            lines.append(f"| {row['label']} | {row['positives']} | {_f(row['yamnet_ap'])} |")
    return "\n".join(lines) + "\n"


def report(root: Path, model: Path, use_yamnet: bool, yamnet_path: Path | None = None,
           min_positives: int = MIN_POSITIVES, hop_s: float = HOP_SECONDS) -> dict[str, Any]:
    """Score ``root``'s recordings with ``model`` (and YAMNet) and :func:`evaluate` them."""
    from detector.model.scorer import OnnxScorer

    recs = load_manifest(root)
    if not recs:
        raise ValueError(f"{root}/manifest.csv lists no recordings")
    sed = OnnxScorer(model)
    s_scores = score_recordings(recs, sed, hop_s)
    s_mids = [lab.mid for lab in sed.contract.labels]
    y_scores, y_mids = None, []
    if use_yamnet:
        from detector.model.yamnet import YamnetScorer, find_yamnet, how_to_fetch

        found = find_yamnet(yamnet_path)
        if found is None:
            raise FileNotFoundError(how_to_fetch())
        yam = YamnetScorer(found)
        y_scores = score_recordings(recs, yam, hop_s)
        y_mids = [lab.mid for lab in yam.contract.labels]
    result = evaluate(recs, s_scores, s_mids, y_scores, y_mids, min_positives)
    result["model"] = str(model)
    result["model_version"] = sed.contract.model_version
    result["hop_s"] = hop_s
    return result


def compare_table(results: list[str], pool: str = "mean") -> str:
    """Per-label AP of several models' ``eval --json`` results as one markdown table.

    ``results``: ``NAME=PATH`` items. Rows are the labels every result scored (the
    labels both a model and YAMNet express differ with the model's label set), with
    each model's mAP over exactly those rows; YAMNet's column comes from the first result.
    """
    named: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for item in results:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{item!r}; accepted: NAME=EVAL.json")
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        named.append((name, {r["label"]: r for r in doc["pools"][pool]["per_label"]}))
    common = set.intersection(*(set(rows) for _, rows in named))
    if not common:
        raise ValueError("the results share no label")
    first = named[0][1]
    yam = all(first[lab].get("yamnet_ap") is not None for lab in common)
    labels = sorted(common, key=lambda lab: (-first[lab]["positives"], lab))
    cols = [n for n, _ in named] + (["YAMNet"] if yam else [])
    out = [f"| label | positives | {' | '.join(cols)} |", "|---|---:|" + "---:|" * len(cols)]

    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:.2f}"

    for lab in labels:
        vals = [rows[lab]["sed_ap"] for _, rows in named] + ([first[lab]["yamnet_ap"]] if yam else [])
        out.append(f"| {lab} | {first[lab]['positives']} | {' | '.join(cell(v) for v in vals)} |")
    means = [float(np.mean([rows[lab]["sed_ap"] for lab in labels])) for _, rows in named]
    if yam:
        means.append(float(np.mean([first[lab]["yamnet_ap"] for lab in labels])))
    out.append(f"| **mAP, {len(labels)} labels** | | {' | '.join(f'**{m:.3f}**' for m in means)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download, map, decode and dedup the held-out packages")
    b.add_argument("out", type=Path, metavar="OUT_DIR")
    b.add_argument("--deb-cache", type=Path, default=Path.home() / ".cache" / "sed" / "debs")
    b.add_argument("--mapping", type=Path, default=DEFAULT_MAPPING)
    b.add_argument("--packages", nargs="+", default=list(HELDOUT_PACKAGES), metavar="PKG")
    e = sub.add_parser("eval", help="per-label AP of a model (and YAMNet) on the built set")
    e.add_argument("out", type=Path, metavar="OUT_DIR")
    e.add_argument("model", type=Path, metavar="MODEL.onnx")
    e.add_argument("--yamnet", nargs="?", const="", default=None, metavar="PATH",
                   help="also score YAMNet (default: the cached one, see detector.model.yamnet)")
    e.add_argument("--pool", choices=POOLS, default="max", help="table printed (JSON has both)")
    e.add_argument("--min-positives", type=int, default=MIN_POSITIVES)
    e.add_argument("--json", type=Path, default=None)
    c = sub.add_parser("compare", help="several eval --json results side by side, per label")
    c.add_argument("results", nargs="+", metavar="NAME=EVAL.json",
                   help="a column name and an `eval --json` file (the first one's YAMNet column "
                   "is shown too, when it has one)")
    c.add_argument("--pool", choices=POOLS, default="mean")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.cmd == "compare":
        try:
            print(compare_table(args.results, args.pool), end="")
        except (OSError, ValueError, KeyError) as err:
            print(f"python -m training.heldout: error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.cmd == "build":
            summary = build(args.out, args.deb_cache, args.mapping, args.packages)
            print(json.dumps({k: summary[k] for k in ("recordings", "seconds", "per_package",
                                                       "exact_duplicates_dropped", "skipped")}))
            return 0
        result = report(args.out, args.model, args.yamnet is not None,
                        Path(args.yamnet) if args.yamnet else None, args.min_positives)
    except (ReservedPackageError, packages.PackageError, FileNotFoundError, ValueError) as err:
        print(f"python -m training.heldout: error: {err}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(markdown_table(result, args.pool), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
