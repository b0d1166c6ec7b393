"""``python -m training.corpus.demo CORPUS OUT.flac``: the bundled demo clip.

A ~25 s sequence of real recordings from the corpus **validation** split (never
trained on), one after another with short gaps over quiet noise, plus a CSV of
what sounds where (``label,start,end`` in seconds). Deterministic.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["DEMO_EVENTS", "build_demo", "main"]

RATE = 16000
GAP_S = 0.8
NOISE_DBFS = -75.0
PEAK_DBFS = -3.0
#: (label written in the truth CSV, file-name fragment of a validation clip, seconds to keep, repeats)
DEMO_EVENTS: list[tuple[str, str, float, int]] = [
    ("Speech", "Candy_cane_photo_1_desc_fr", 3.5, 1),
    ("Dog", "qabcs__abcs__all__noises__dog", 0.7, 3),
    ("Baby cry, infant cry", "audio__42ec6f14", 3.0, 1),
    ("Door", "minetest_game_", 0.7, 1),
    ("Clapping", "lmms__samples__misc__applause01", 2.1, 1),
    ("Bird", "widelands__data__sound__animals", 3.0, 1),
    ("Typing", "buckle__wav__0d-0", 0.33, 6),
    ("Guitar", "sonic-pi__samples__guit_em9", 3.0, 1),
    ("Horse", "explore_farm_animals", 3.5, 1),
]


def _find(rows: list[dict[str, str]], label: str, fragment: str) -> dict[str, str]:
    for r in rows:
        if fragment in r["path"] and label in r["labels"].split("|"):
            return r
    raise SystemExit(f"no validation clip with {fragment!r} labelled {label!r}; rebuild the corpus")


def build_demo(corpus: Path, out: Path) -> list[tuple[str, float, float]]:
    rows = [r for r in csv.DictReader((corpus / "clips.csv").open()) if r["split"] == "val"]
    rng = np.random.default_rng(0)
    pieces: list[np.ndarray] = []
    truth: list[tuple[str, float, float]] = []
    t = GAP_S
    pieces.append(np.zeros(round(GAP_S * RATE)))
    for label, fragment, keep_s, repeats in DEMO_EVENTS:
        x, sr = sf.read(corpus / _find(rows, label, fragment)["path"], dtype="float64")
        if sr != RATE:
            raise SystemExit(f"corpus clips must be {RATE} Hz; got {sr}")
        x = x[: round(keep_s * RATE)]
        x = x * (10 ** (PEAK_DBFS / 20) / max(np.abs(x).max(), 1e-9))
        start = t
        for _ in range(repeats):
            pieces.append(x)
            t += len(x) / RATE
        truth.append((label, round(start, 3), round(t, 3)))
        pieces.append(np.zeros(round(GAP_S * RATE)))
        t += GAP_S
    y = np.concatenate(pieces)
    y += rng.standard_normal(len(y)) * 10 ** (NOISE_DBFS / 20)
    sf.write(out, y.astype(np.float32), RATE, subtype="PCM_16")
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "start", "end"])
        w.writerows(truth)
    return truth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.corpus.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", type=Path, help="folder written by sed-corpus build")
    p.add_argument("out", type=Path, help="output .flac (a .csv of the truth is written beside it)")
    args = p.parse_args(argv)
    for label, start, end in build_demo(args.corpus, args.out):
        print(f"{start:6.2f} {end:6.2f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
