"""The shipped default model (exports/default) on the bundled demo clip (validation audio).

A regression guard for what a new user sees first: the README's first command runs
exactly this. The expected labels are those the v1 model gets right today (see
exports/default/MODEL_CARD.md for what it misses: here the baby cry, the door and
the clapping).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detector.contract import ModelContract
from detector.models import DEFAULT_MODEL
from detector.pipeline import detect_file

DEMO = Path(__file__).resolve().parents[1] / "detector" / "data" / "demo.flac"
HEARD = ("Speech", "Dog", "Bird", "Typing", "Horse")  # labels v1 detects in the demo
TOLERANCE_S = 1.0


def _truth() -> dict[str, tuple[float, float]]:
    with DEMO.with_suffix(".csv").open() as f:
        return {r["label"]: (float(r["start"]), float(r["end"])) for r in csv.DictReader(f)}


def test_default_model_carries_its_contract() -> None:
    c = ModelContract.read(DEFAULT_MODEL)
    assert len(c.labels) == len(set(c.names)) > 50
    assert all(lab.mid.startswith("/m/") or lab.mid.startswith("/t/") for lab in c.labels)
    assert all(0.2 <= on <= 0.9 for on in c.on_thresholds)
    assert "git_revision" in c.extra and "training" in c.extra


@pytest.mark.parametrize("label", HEARD)
def test_default_model_hears_the_demo(label: str) -> None:
    events = [e for e in detect_file(DEMO) if e["event"] == "onset" and e["label"] == label]
    start, end = _truth()[label]
    assert events, f"no {label} onset"
    assert any(start - TOLERANCE_S <= e["start"] <= end for e in events), [e["start"] for e in events]
