"""Spot check of the synthetic events: does an AudioSet tagger hear what they claim?

``python -m training.corpus.synth_check [--out training/corpus/synth_check.csv]`` renders
:data:`CLIPS` events of every :data:`training.corpus.synth.ALL_KINDS` kind (seeds the
corpus build does not use), adds a -50 dBFS white-noise floor (a clean render's digital
silence reads as "Silence" to the tagger), scores each with YAMNet (max over patches,
hop 0.48 s) and writes, per kind and label, the median rank of the label among
YAMNet's 521 classes, the share of events where it is in the top 5, its median score,
and YAMNet's five best classes on average. The check is independent of our model: it
asks a tagger trained on two million real AudioSet clips whether the events sound like
their labels, which is what a listening test would ask.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

from detector.frontend.features import FeatureConfig, log_mel
from training.corpus import synth

__all__ = ["CLIPS", "check", "main"]

log = logging.getLogger(__name__)

CLIPS = 20
NOISE_RMS = 0.003  # about -50 dBFS
SEED_BASE = 10_000_000  # far from the build's stable-hash seeds
DEFAULT_OUT = Path(__file__).with_name("synth_check.csv")
COLUMNS = ("kind", "label", "median_rank", "top5_share", "median_score", "yamnet_top5")


def _clip_scores(scorer: object, wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    wave = np.pad(wave, (0, max(0, cfg.patch_samples - wave.size))).astype(np.float64)
    mel = log_mel(wave, cfg)
    hop = cfg.patch_frames // 2
    starts = range(0, max(1, mel.shape[0] - cfg.patch_frames + 1), hop)
    patches = np.stack([mel[i : i + cfg.patch_frames] for i in starts]).astype(np.float32)
    return np.asarray(scorer.score(patches)).max(axis=0)  # type: ignore[attr-defined]


def check(scorer: object, names: list[str], clips: int = CLIPS) -> list[dict[str, str]]:
    """One row per (kind, label) the tagger has; see the module docstring."""
    cfg = FeatureConfig()
    rows: list[dict[str, str]] = []
    for kind in sorted(synth.ALL_KINDS):
        noise = np.random.default_rng(SEED_BASE - 1)
        scores = np.stack([
            _clip_scores(scorer, _with_floor(synth.generate(kind, SEED_BASE + k, cfg.sample_rate),
                                             noise), cfg)
            for k in range(clips)])
        top = np.argsort(-scores.mean(axis=0))[:5]
        top5 = "; ".join(f"{names[t]} {scores[:, t].mean():.2f}" for t in top)
        for label in synth.ALL_KINDS[kind][1]:
            if label not in names:
                continue
            j = names.index(label)
            rank = (scores > scores[:, [j]]).sum(axis=1) + 1
            rows.append({"kind": kind, "label": label, "median_rank": f"{np.median(rank):.0f}",
                         "top5_share": f"{np.mean(rank <= 5):.2f}",
                         "median_score": f"{np.median(scores[:, j]):.2f}", "yamnet_top5": top5})
    return rows


def _with_floor(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (wave + NOISE_RMS * rng.standard_normal(wave.size)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.corpus.synth_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--yamnet", default=None, help="YAMNet model.onnx (default: the cached one)")
    p.add_argument("--clips", type=int, default=CLIPS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from detector.model.yamnet import YamnetScorer, find_yamnet, how_to_fetch

    path = find_yamnet(args.yamnet)
    if path is None:
        log.error("YAMNet not found: %s", how_to_fetch())
        return 2
    scorer = YamnetScorer(path)
    names = [lab.name for lab in scorer.contract.labels]
    rows = check(scorer, names, args.clips)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['kind']:15s} {r['label'][:32]:32s} rank {r['median_rank']:>4s} "
              f"top5 {r['top5_share']} score {r['median_score']} | {r['yamnet_top5']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
