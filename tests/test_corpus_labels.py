"""training.corpus.labels: the rule that picks which labels the default model trains."""

from __future__ import annotations

from training.corpus.labels import LabelRule, select_labels


def _stats(real: int, synthetic: int, val_real: int, val_synthetic: int = 0) -> dict[str, dict[str, int]]:
    return {"train": {"real_clips": real, "synthetic_clips": synthetic},
            "val": {"real_clips": val_real, "synthetic_clips": val_synthetic}}


def test_rule_needs_training_data_and_a_validation_clip() -> None:
    labels = {
        "Speech": _stats(500, 0, 80),
        "Trumpet": _stats(2, 30, 1),  # thin real, enough rendered
        "Doorbell": _stats(1, 60, 0, 15),  # synthetic validation events count
        "Cat": _stats(2, 0, 1),  # too little to train
        "Thunder": _stats(5, 0, 0),  # nothing to check it on
    }
    kept, short = select_labels(labels, wanted=["Sneeze"])
    assert kept == ["Doorbell", "Speech", "Trumpet"]
    assert short == {"Cat": (2, 0, 1), "Thunder": (5, 0, 0), "Sneeze": (0, 0, 0)}
    kept, _ = select_labels(labels, LabelRule(min_real=2, min_synthetic=1000, min_val=1))
    assert kept == ["Cat", "Speech", "Trumpet"]  # Doorbell: 1 real, 60 synthetic < 1000
    assert "3 real training clips or 30 synthetic" in LabelRule().describe()
