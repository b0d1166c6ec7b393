"""``sed-eval``: score every patch of every clip in a manifest and report tagging metrics.

Usage::

    sed-eval MODEL --manifest val.csv --out DIR [--hop-s 0.48] [--cache DIR]
             [--split val] [--pooling max|mean] [--off-fraction 0.5]

``MODEL`` is a ``sed-train`` checkpoint (``.pt``, read by
:func:`training.model.load_checkpoint`) or an exported ONNX file (labels, front end
and pooling from its :class:`detector.model.contract.ModelContract`).

Each recording is cut into ``cfg.patch_samples``-sample patches every ``hop_s``, the
first centred on the recording's start and the last on its end (zeros outside, so
events at the edges keep resolvable boundaries), turned into log-mel with
:class:`training.frontend.LogMel` and scored. A clip's score is the **maximum** over its
patches (the contract's ``pooling`` for an ONNX model when it is ``mean``; ``--pooling``
overrides) — the detector likewise fires when any patch crosses the on-threshold.

Clip-level metrics: per-label and mean AP, ROC AUC, d′, lwlrap, and macro/micro F1 at
per-label thresholds tuned for F1 on *these* clips (optimistic when this set is also
the test set; F1 at the model's own thresholds is reported beside it). Where the
manifest has strong labels, event-based F1 (200 ms onset collar, offset collar
max(200 ms, 20 % of the event)) compares hysteresis events from the patch scores
with the annotated events.

Writes ``DIR/report.json`` (``metrics``, ``per_label``, ``labels``, ``mids``,
``thresholds: {"on": [...], "off": [...]}`` in the model's label order — the input of
``sed-export --report``), ``DIR/per_label_ap.png``, ``DIR/score_histograms.png`` and,
for a checkpoint with a ``history``, ``DIR/training_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.frontend.features import FeatureConfig
from training.metrics import (
    DEFAULT_OFF_FRACTION,
    DEFAULT_PERCENTAGE_OF_LENGTH,
    DEFAULT_T_COLLAR,
    Event,
    average_precision,
    d_prime,
    event_f1,
    f1_at_thresholds,
    lwlrap,
    mean_excluding,
    roc_auc,
    scores_to_events,
    tune_thresholds,
)

__all__ = [
    "CLIP_POOLINGS", "LoadedModel", "evaluate", "format_table", "load_model", "main", "pool_clips",
    "write_plots",
]

log = logging.getLogger(__name__)

#: Tuned on-thresholds are clipped to this range: labels with one or two validation
#: clips otherwise tune to ~0.001 (fires on anything live) or ~0.99 (never fires).
THRESHOLD_BOUNDS = (0.2, 0.9)

CLIP_POOLINGS = ("max", "mean")
DEFAULT_BATCH = 64
_HIST_BINS = 20
_GRID_COLUMNS = 4
_FIG_INCH_PER_LABEL = 0.25
_FIG_MIN_INCH = 3.0


@dataclass
class LoadedModel:
    """A scorer ``(B, frames, mels) float32 -> (B, L) probabilities`` plus its metadata."""

    score: Callable[[np.ndarray], np.ndarray]
    names: list[str]
    mids: list[str]
    features: FeatureConfig
    pooling: str = "max"
    on: list[float] | None = None
    off: list[float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "checkpoint"


def load_model(path: str | Path, threads: int = 1) -> LoadedModel:
    """Open an ``.onnx`` export (onnxruntime) or a ``sed-train`` checkpoint (torch)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; expected a .pt checkpoint or .onnx")
    if path.suffix.lower() == ".onnx":
        from detector.model.contract import ModelContract
        from detector.model.session import open_session

        sess = open_session(path, "cpu", threads)
        contract = ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map, str(path))

        def score_onnx(patches: np.ndarray) -> np.ndarray:
            out = sess.run([contract.output_name], {contract.input_name: patches})
            return np.asarray(out[0], dtype=np.float64)

        pooling = contract.pooling if contract.pooling in CLIP_POOLINGS else "max"
        return LoadedModel(
            score_onnx, contract.names, [lab.mid for lab in contract.labels], contract.features,
            pooling, list(contract.on_thresholds), list(contract.off_thresholds), kind="onnx",
        )
    from training.model import load_checkpoint

    model, ckpt = load_checkpoint(path)

    def score_torch(patches: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.scores(torch.from_numpy(patches)).double().numpy()

    labels = ckpt["labels"]
    return LoadedModel(
        score_torch, [str(d["name"]) for d in labels], [str(d["mid"]) for d in labels],
        FeatureConfig.from_dict(ckpt["features"]), "max",
        history=[dict(h) for h in ckpt.get("history", [])],
    )


def _patch_scores(loaded: LoadedModel, dataset: Any, batch_size: int) -> np.ndarray:
    """Scores ``(N, L)`` of every item of a ``mode="all"`` PatchDataset."""
    from training.frontend import LogMel

    frontend = LogMel(loaded.features)
    out = []
    with torch.no_grad():
        for lo in range(0, len(dataset), batch_size):
            waves = torch.stack([dataset[i][0] for i in range(lo, min(lo + batch_size, len(dataset)))])
            mel = frontend(waves).numpy().astype(np.float32)
            out.append(loaded.score(np.ascontiguousarray(mel)))
    if not out:
        return np.zeros((0, len(loaded.names)))
    return np.concatenate(out)


def pool_clips(patch_scores: np.ndarray, clip_index: np.ndarray, n_clips: int, pooling: str) -> np.ndarray:
    """Per-clip scores ``(n_clips, L)``: max or mean over each clip's patches."""
    if pooling not in CLIP_POOLINGS:
        raise ValueError(f"pooling {pooling!r}; accepted: {list(CLIP_POOLINGS)}")
    counts = np.bincount(clip_index, minlength=n_clips)
    if counts.size != n_clips or (counts == 0).any():
        raise ValueError(f"clip_index must name every clip 0..{n_clips - 1} at least once")
    order = np.argsort(clip_index, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sorted_scores = patch_scores[order]
    if pooling == "max":
        return np.maximum.reduceat(sorted_scores, starts, axis=0)
    return np.add.reduceat(sorted_scores, starts, axis=0) / counts[:, None]


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    return x


def evaluate(
    model_path: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    hop_s: float | None = None,
    cache_dir: str | Path | None = None,
    split: str | None = None,
    pooling: str | None = None,
    off_fraction: float = DEFAULT_OFF_FRACTION,
    threshold_bounds: tuple[float, float] = THRESHOLD_BOUNDS,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 1,
    t_collar: float = DEFAULT_T_COLLAR,
    percentage_of_length: float = DEFAULT_PERCENTAGE_OF_LENGTH,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the evaluation (module docstring); writes and returns the report dict."""
    from training.clips import read_manifest
    from training.data import PatchDataset, WaveformStore

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model_path, threads)
    pooling = pooling or loaded.pooling
    cfg = loaded.features
    clips = read_manifest(manifest)
    if split is not None:
        clips = [c for c in clips if c.split == split]
        if not clips:
            raise ValueError(f"{manifest}: no rows with split={split!r}")
    names = loaded.names
    unknown = sorted({lab for c in clips for lab in c.labels} - set(names))
    if unknown:
        log.warning("%d manifest label(s) unknown to the model are ignored: %s", len(unknown), unknown)
    store = WaveformStore(Path(cache_dir) if cache_dir else out_dir / "cache", cfg)
    store.build(clips)
    hop = cfg.patch_seconds / 2 if hop_s is None else hop_s
    ds = PatchDataset(clips, store, names, cfg, mode="all", hop_s=hop, pad_edges=True)
    patch_scores = _patch_scores(loaded, ds, batch_size)
    n_clips = len(ds.paths)
    clip_scores = pool_clips(patch_scores, ds.clip_index, n_clips, pooling)
    targets = ds.clip_targets
    log.info("scored %d patches of %d clips", len(ds), n_clips)

    ap = average_precision(clip_scores, targets)
    auc = roc_auc(clip_scores, targets)
    dp = d_prime(auc)
    lw_all, lw = lwlrap(clip_scores, targets)
    on, off = tune_thresholds(clip_scores, targets, off_fraction, bounds=threshold_bounds)
    f1 = f1_at_thresholds(clip_scores, targets, on)
    own = f1_at_thresholds(clip_scores, targets, loaded.on) if loaded.on is not None else None

    strong_labels = sorted({lab for evs in ds.events for lab, _, _ in evs})
    ev = None
    if strong_labels:
        ref: list[Event] = []
        est: list[Event] = []
        centres = (ds.patch_start + cfg.patch_samples / 2) / cfg.sample_rate
        hop_actual = ds.hop_samples / cfg.sample_rate
        first = np.searchsorted(ds.clip_index, np.arange(n_clips + 1))  # items are by clip
        for r, evs in enumerate(ds.events):
            if not evs:
                continue
            fid = str(ds.paths[r])
            ref += [(fid, lab, a, b) for lab, a, b in evs]
            rows = slice(first[r], first[r + 1])
            found = scores_to_events(patch_scores[rows], centres[rows], hop_actual, on, off,
                                     store.seconds(ds.paths[r]))
            est += [(fid, lab, a, b) for lab, a, b in found if lab in strong_labels]
        ev = event_f1(ref, est, len(names), t_collar, percentage_of_length)

    mean_ap, excl_ap = mean_excluding(ap)
    mean_auc, excl_auc = mean_excluding(auc)
    metrics: dict[str, Any] = {
        "mAP": mean_ap, "mAUC": mean_auc, "d_prime": float(mean_excluding(dp)[0]),
        "lwlrap": lw_all, "macro_f1": f1.macro_f1, "micro_f1": f1.micro_f1,
        "labels_excluded_no_positives": excl_ap, "labels_excluded_auc": excl_auc,
        "n_clips": n_clips, "n_patches": len(ds),
    }
    if own is not None:
        metrics.update(macro_f1_model_thresholds=own.macro_f1, micro_f1_model_thresholds=own.micro_f1)
    if ev is not None:
        metrics.update(event_macro_f1=ev.macro_f1, event_micro_f1=ev.micro_f1,
                       event_labels=len(strong_labels))
    positives = targets.sum(axis=0).astype(int)
    per_label = [
        {
            "name": n, "mid": loaded.mids[j], "positives": int(positives[j]),
            "ap": float(ap[j]), "auc": float(auc[j]), "d_prime": float(dp[j]),
            "lwlrap": float(lw[j]), "f1": float(f1.f1[j]), "precision": float(f1.precision[j]),
            "recall": float(f1.recall[j]), "on": float(on[j]), "off": float(off[j]),
            "event_f1": float(ev.f1[j]) if ev is not None else math.nan,
        }
        for j, n in enumerate(names)
    ]
    report: dict[str, Any] = {
        "model": str(model_path), "model_kind": loaded.kind, "manifest": str(manifest),
        "split": split, "hop_s": ds.hop_samples / cfg.sample_rate, "pooling": pooling,
        "labels": names, "mids": loaded.mids, "metrics": metrics, "per_label": per_label,
        "thresholds": {"on": [float(x) for x in on], "off": [float(x) for x in off],
                       "off_fraction": off_fraction, "bounds": list(threshold_bounds),
                       "tuned_on": "clip scores of this manifest"},
        "event_collars": {"t_collar_s": t_collar, "percentage_of_length": percentage_of_length},
        "history": loaded.history,
    }
    report = _nan_to_none(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False), "utf-8")
    if plots:
        write_plots(out_dir, names, ap, clip_scores, targets, loaded.history)
    return report


def write_plots(
    out_dir: Path, names: Sequence[str], ap: np.ndarray, scores: np.ndarray,
    targets: np.ndarray, history: Sequence[dict[str, Any]],
) -> list[Path]:
    """Per-label AP bars, a grid of positive/negative score histograms and, given a
    history, training curves. Returns the written PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = len(names)
    fig, ax = plt.subplots(figsize=(8, max(_FIG_MIN_INCH, _FIG_INCH_PER_LABEL * n)))
    order = np.argsort(np.nan_to_num(ap, nan=-1.0))
    ax.barh([names[i] for i in order], np.nan_to_num(ap[order], nan=0.0), color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision (labels without positives at 0)")
    ax.set_title(f"per-label AP, mean {mean_excluding(ap)[0]:.3f}")
    fig.tight_layout()
    written.append(out_dir / "per_label_ap.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    cols = min(_GRID_COLUMNS, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    bins = np.linspace(0, 1, _HIST_BINS + 1)
    for j in range(rows * cols):
        a = axes[j // cols][j % cols]
        if j >= n:
            a.axis("off")
            continue
        pos = targets[:, j] > 0
        a.hist(scores[~pos, j], bins=bins, alpha=0.6, label="negatives", color="tab:gray")
        a.hist(scores[pos, j], bins=bins, alpha=0.6, label="positives", color="tab:orange")
        a.set_title(names[j], fontsize=8)
        a.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("clip scores: positives vs negatives")
    fig.tight_layout()
    written.append(out_dir / "score_histograms.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    if history:
        fig, ax1 = plt.subplots(figsize=(7, 4))
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        ax1.plot(epochs, [h.get("train_loss", math.nan) for h in history], "o-", label="train loss")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("train loss")
        ax2 = ax1.twinx()
        ax2.plot(epochs, [h.get("val_map", math.nan) for h in history], "s-", color="tab:green",
                 label="val mAP")
        ax2.set_ylabel("val mAP")
        if any("lr" in h for h in history):
            ax3 = ax1.twinx()
            ax3.spines["right"].set_position(("axes", 1.15))
            ax3.plot(epochs, [h.get("lr", math.nan) for h in history], ":", color="tab:red",
                     label="lr")
            ax3.set_ylabel("lr")
        fig.legend(loc="upper center", ncol=3, fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "training_curves.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def _fmt(x: Any) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def format_table(report: dict[str, Any]) -> str:
    """A compact per-label text table plus the summary line."""
    width = max([len(r["name"]) for r in report["per_label"]] + [5])
    lines = [f"{'label':<{width}}  {'pos':>5}  {'AP':>6}  {'AUC':>6}  {'F1':>6}  {'on':>6}  {'evF1':>6}"]
    for r in report["per_label"]:
        lines.append(
            f"{r['name']:<{width}}  {r['positives']:>5}  {_fmt(r['ap'])}  {_fmt(r['auc'])}  "
            f"{_fmt(r['f1'])}  {_fmt(r['on'])}  {_fmt(r['event_f1'])}"
        )
    m = report["metrics"]
    summary = (f"mAP {_fmt(m['mAP'])}  mAUC {_fmt(m['mAUC'])}  d' {_fmt(m['d_prime'])}  "
               f"lwlrap {_fmt(m['lwlrap'])}  macro-F1 {_fmt(m['macro_f1'])}  "
               f"micro-F1 {_fmt(m['micro_f1'])}")
    if "event_macro_f1" in m:
        summary += f"  event-F1 {_fmt(m['event_macro_f1'])}"
    lines.append(summary)
    excluded = m["labels_excluded_no_positives"]
    lines.append(f"{m['n_clips']} clips, {m['n_patches']} patches; "
                 f"{excluded} label(s) without positives excluded from means")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """sed-eval: tagging metrics, tuned thresholds and plots for a model on a manifest."""
    p = argparse.ArgumentParser(prog="sed-eval", description=main.__doc__)
    p.add_argument("model", type=Path, help="sed-train checkpoint (.pt) or exported .onnx")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV to evaluate on")
    p.add_argument("--out", type=Path, required=True, help="output folder for report.json and PNGs")
    p.add_argument("--hop-s", type=float, default=None,
                   help="seconds between patches (default: half a patch, 0.48 s)")
    p.add_argument("--cache", type=Path, default=None, help="waveform cache (default OUT/cache)")
    p.add_argument("--split", default=None, help="only rows whose split column equals this")
    p.add_argument("--pooling", choices=CLIP_POOLINGS, default=None,
                   help="clip pooling over patches (default: max, or the ONNX contract's)")
    p.add_argument("--off-fraction", type=float, default=DEFAULT_OFF_FRACTION,
                   help="off-threshold = this * tuned on-threshold")
    p.add_argument("--threshold-range", type=float, nargs=2, default=THRESHOLD_BOUNDS,
                   metavar=("LOW", "HIGH"),
                   help=f"clip tuned on-thresholds to this range (default {THRESHOLD_BOUNDS})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    try:
        report = evaluate(
            args.model, args.manifest, args.out, hop_s=args.hop_s, cache_dir=args.cache,
            split=args.split, pooling=args.pooling, off_fraction=args.off_fraction,
            threshold_bounds=tuple(args.threshold_range), batch_size=args.batch_size, threads=args.threads, plots=not args.no_plots,
        )
    except (OSError, ValueError) as e:
        print(f"sed-eval: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
