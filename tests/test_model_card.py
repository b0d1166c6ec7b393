"""training.model_card: the threshold-cap sweep and the rendered card."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from detector.model.scorer import OnnxScorer
from training.model_card import _capped, _clip_table, _real_rows, _recording_counts, render


def test_capped_scorer_lowers_on_thresholds_and_keeps_off_ratios(toy_model: Path) -> None:
    scorer = OnnxScorer(toy_model, threads=1)
    c = scorer.contract
    cap = min(c.on_thresholds) - 0.01  # below every tuned threshold: all of them move
    capped = _capped(scorer, cap)
    assert capped.contract.on_thresholds == (cap,) * len(c.labels)
    for off, on, off0, on0 in zip(capped.contract.off_thresholds, capped.contract.on_thresholds,
                                  c.off_thresholds, c.on_thresholds, strict=True):
        assert off / on == pytest.approx(off0 / on0)
    assert scorer.contract is c  # the original is untouched
    assert capped.session is scorer.session  # and not reloaded
    assert _capped(scorer, 2.0).contract.on_thresholds == c.on_thresholds


def _card() -> dict[str, object]:
    per_label = {"Speech": 0.5}
    return {
        "labels": ["Speech"], "val_clips": 3, "map": 0.9, "map_excluded": 0, "on_thresholds": [0.9],
        "ap": {"Speech": 0.9}, "top1": {"Speech": {"top1": 1.0, "clips": 3}},
        "counts": {"Speech": {"train": {"real_clips": 9, "synthetic_clips": 0}}},
        "cost": {"macs": 6e6, "params": 3e5, "ms_per_patch_b1": 0.09},
        "events": {"files": 2, "reference_events": 10, "detected": 8,
                   "collar_0.2": {"micro_f1": 0.3, "macro_f1": 0.3, "per_label": per_label},
                   "collar_1.0": {"micro_f1": 0.5, "macro_f1": 0.4, "per_label": per_label},
                   "onset_latency_s": {"p50": 0.6, "p95": 1.2, "n": 5}},
        "background": {"hours": 0.5, "false_alarms": 10, "per_hour": 20.0, "by_label": {"Speech": 10}},
        "cap_sweep": [{"cap": 0.6, "micro_f1": 0.55, "macro_f1": 0.45, "detected": 12,
                       "reference_events": 10, "fa_per_hour": 80.0, "onset_latency_p50_s": 0.5}],
    }


def test_render_puts_the_shipped_cap_first_in_the_sweep_table() -> None:
    md = render(_card(), "# Card\n")
    table = md.split("## Threshold cap")[1]
    rows = [r for r in table.splitlines() if r.startswith("| **") or r.startswith("| 0.")]
    assert rows[0].startswith("| **0.90 (shipped)** | 0.500 / 0.400 | 8 / 10 | 0.60 s | 20 |")
    assert rows[1].startswith("| 0.60 | 0.550 / 0.450 | 12 / 10 | 0.50 s | 80 |")


def _val_manifest(tmp_path: Path) -> Path:
    for name in ("a.flac", "b.flac", "c.flac"):
        (tmp_path / name).write_bytes(b"")  # read_manifest checks that files exist
    (tmp_path / "val.csv").write_text(
        "path,labels,source\n"
        "a.flac,Knock|Door,minetest-data:door.ogg\n"
        "b.flac,Knock,synthetic:knock/7\n"
        "c.flac,Door,gcompris-qt-data:door.ogg\n",
        encoding="utf-8",
    )
    return tmp_path / "val.csv"


def test_real_val_counts_leave_out_synthetic_clips(tmp_path: Path) -> None:
    """"Well-covered" (the YAMNet comparison's subset) counts real recordings only."""
    manifest = _val_manifest(tmp_path)
    paths, labels = _clip_table(manifest)
    assert _recording_counts(labels, _real_rows(manifest, paths)) == {"Knock": 1, "Door": 2}


def test_recordings_only_mask_drops_synthetic_clips(tmp_path: Path) -> None:
    manifest = _val_manifest(tmp_path)
    paths, _ = _clip_table(manifest)
    assert [p.name for p, real in zip(paths, _real_rows(manifest, paths), strict=True) if real] == [
        "a.flac", "c.flac"]


def test_render_states_the_recordings_only_comparison() -> None:
    card = _card()
    card["yamnet"] = {"shared_labels": ["Speech"], "ap": {"Speech": 0.8}, "ours_ap": {"Speech": 0.9},
                      "map": 0.8, "ours_map": 0.9, "macs": 69e6, "params": 3.7e6, "ms_per_patch_b1": 1.2,
                      "recordings_only": {"clips": 2, "labels": 1, "map": 0.7, "ours_map": 0.6}}
    card["ap_recordings"] = {"Speech": 0.85}
    md = render(card, "# Card\n")
    assert "On recordings only (2 clips; synthetic validation events left out, so 1 labels" in md
    assert "sed mAP **0.600**, YAMNet mAP **0.700**" in md
    assert "| Speech | 0.900 | 0.850 | 0.800 | 1.00 of 3 |" in md  # AP, on recordings, YAMNet's


def test_render_gives_top1_on_all_clips_and_on_recordings_alone() -> None:
    """The acceptance measure is top-1 on recordings: its own column, beside all clips'."""
    card = _card()
    card["top1_recordings"] = {"Speech": {"top1": 0.5, "clips": 2}}
    row = next(r for r in render(card, "# Card\n").splitlines() if r.startswith("| Speech |"))
    assert "| 1.00 of 3 | 0.50 of 2 |" in row
    older = next(r for r in render(_card(), "# Card\n").splitlines() if r.startswith("| Speech |"))
    assert "| 1.00 of 3 | n/a |" in older  # a card.json written before the column still renders


def test_render_sets_yamnet_top1_beside_ours_and_counts_the_majority_labels() -> None:
    """Each well-covered label's recordings: is the right label ranked first for most, by each model."""
    card = _card()
    card["labels"] = ["Speech", "Walk, footsteps"]
    card["ap"]["Walk, footsteps"] = 0.4
    card["top1_recordings"] = {"Speech": {"top1": 0.9, "clips": 10}, "Walk, footsteps": {"top1": 0.5, "clips": 6}}
    card["yamnet"] = {"shared_labels": card["labels"], "ap": {}, "map": 0.8, "ours_map": 0.9,
                      "macs": 69e6, "params": 3.7e6, "ms_per_patch_b1": 1.2,
                      "recordings_only": {"clips": 16, "labels": 2, "map": 0.7, "ours_map": 0.6,
                                          "top1": {"Speech": {"top1": 0.8, "clips": 10},
                                                   "Walk, footsteps": {"top1": 2 / 3, "clips": 6}}},
                      "well_covered": {"labels": card["labels"], "map": 0.5, "ours_map": 0.6}}
    md = render(card, "# Card\n")
    assert "| top-1, recordings only | YAMNet top-1, recordings only |" in md
    walk = next(r for r in md.splitlines() if r.startswith("| Walk, footsteps |"))
    assert "| 0.50 of 6 | 0.67 of 6 |" in walk
    assert ("is right for most clips (> 0.5) of 1 of the 2 (YAMNet, among the shared labels: 2); "
            "not for Walk, footsteps.") in md
    header = next(r for r in md.splitlines() if r.startswith("| label |"))
    rule = md.splitlines()[md.splitlines().index(header) + 1]
    assert header.count("|") == rule.count("|")  # the column rule matches the header
    del card["yamnet"]["recordings_only"]["top1"]  # a card.json from before the column
    assert "YAMNet top-1" not in render(card, "# Card\n")


def test_render_says_which_labels_are_measured_and_which_come_from_the_teacher_alone() -> None:
    card = _card()
    card["labels"] = ["Speech", "Bird", "Sine wave", "Yodeling"]
    card["counts"] = {"Speech": {"train": {"real_clips": 9}, "val": {"real_clips": 3}},
                      "Bird": {"train": {"real_clips": 4}},
                      "Sine wave": {"train": {"synthetic_clips": 5}}}
    md = render(card, "# Card\n")
    assert ("Of its 4 labels, **1 have real validation recordings** (their figures below are measured), "
            "1 have real training recordings only, 1 only synthetic clips, and **1 are learnt from the "
            "teacher (YAMNet) alone**") in md
    card["labels"], card["counts"] = ["Speech"], {"Speech": {"val": {"real_clips": 3}}}
    assert "teacher (YAMNet) alone" not in render(card, "# Card\n")


def test_events_give_late_start_latency_at_the_file_and_the_live_hop(toy_model: Path, toy_scene: Path,
                                                                       tmp_path: Path) -> None:
    from conftest import SCENE_EVENTS

    from detector.config import LIVE_FINE_HOP_S
    from training.model_card import LATE_START_S, OUTCOMES, _events
    from training.ontology import Ontology

    lines = ["path,labels,onset,offset,source,split"]
    lines += [f"{toy_scene},\"{label}\",{start:.3f},{start + dur:.3f},toy,val" for label, start, dur in SCENE_EVENTS]
    lines.append(f"{toy_scene},Sine wave,0.000,0.500,toy,val")  # starts with the scene: not a late start
    (tmp_path / "scenes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    scorer = OnnxScorer(toy_model, threads=1)
    names = list(scorer.contract.names)
    file_hop = _events(scorer, tmp_path / "scenes.csv", names, ontology=Ontology.load())
    live_hop = _events(scorer, tmp_path / "scenes.csv", names, LIVE_FINE_HOP_S)
    assert file_hop["hop_s"] == 0.48 and live_hop["hop_s"] == LIVE_FINE_HOP_S
    for r in (file_hop, live_hop):
        everything, late = r["onset_latency_s"], r["onset_latency_late_start_s"]
        assert late["n"] >= len(SCENE_EVENTS) - 1  # the toy model finds (nearly) all three
        assert everything["n"] >= late["n"]
        assert 0.0 < late["p50"] < 1.5
    # A finer hop completes a patch sooner after a sound starts.
    assert live_hop["onset_latency_late_start_s"]["p50"] < file_hop["onset_latency_late_start_s"]["p50"]
    card = _card()
    card["events"] = file_hop
    card["events_live_hop"] = live_hop
    md = render(card, "# Card\n")
    assert f"starts ≥ {LATE_START_S:g} s" in md
    assert "| file hop 0.48 s |" in md and f"| live hop {LIVE_FINE_HOP_S:g} s |" in md
    # every reference event is in one outcome, and the card lists them all
    assert sum(file_hop["outcomes"].values()) == file_hop["reference_events"] and "outcomes" not in live_hop
    assert file_hop["outcomes"]["onset_and_offset"] >= 1
    assert all(f"| {text} | {file_hop['outcomes'][k]} |" in md for k, text in OUTCOMES.items())


def test_outcome_says_where_a_reference_event_went() -> None:
    from training.model_card import outcome
    from training.ontology import Ontology

    onto = Ontology.load()
    labels = {"Dog", "Bark", "Speech"}
    never = {"Outside, rural or natural"}

    def where(ref: tuple[str, float, float], *detected: tuple[str, float, float]) -> str:
        return outcome(ref, list(detected), labels, never, onto)

    assert where(("Outside, rural or natural", 0.0, 10.0), ("Dog", 0.2, 9.0)) == "never_an_event"
    assert where(("Cat", 1.0, 3.0), ("Cat", 1.0, 3.0)) == "not_an_event_label"
    assert where(("Dog", 1.0, 3.0), ("Dog", 1.2, 3.4)) == "onset_and_offset"
    assert where(("Dog", 1.0, 9.0), ("Dog", 1.2, 3.0)) == "onset_only"  # ends 6 s early: > 20 % of 8 s
    assert where(("Dog", 1.0, 9.0), ("Dog", 4.0, 9.0)) == "onset_off"  # found 3 s late
    assert where(("Dog", 1.0, 3.0), ("Bark", 1.2, 2.8)) == "related_label"  # a narrower label
    assert where(("Bark", 1.0, 3.0), ("Dog", 1.2, 2.8), ("Speech", 1.0, 3.0)) == "related_label"
    assert where(("Dog", 1.0, 3.0), ("Speech", 1.5, 2.0)) == "other_label"
    assert where(("Dog", 1.0, 3.0), ("Speech", 5.0, 6.0)) == "nothing"
    assert where(("Dog", 1.0, 3.0)) == "nothing"
    # the best outcome among several detections of its label wins
    assert where(("Dog", 1.0, 3.0), ("Dog", 4.5, 6.0), ("Dog", 1.1, 3.1)) == "onset_and_offset"


def test_render_sets_yamnets_tuned_events_beside_ours_by_hop() -> None:
    """The teacher's events, tuned as ours were, in the same table: the comparison the
    soundscape figures need (tune_events yamnet, model_card --yamnet-events)."""
    card = _card()
    late = {"p50": 0.7, "p95": 1.5, "n": 3}
    card["events"]["onset_latency_late_start_s"] = late  # type: ignore[index]
    y = {"files": 2, "reference_events": 10, "detected": 4, "collar_1.0": {"micro_f1": 0.12, "macro_f1": 0.07},
         "onset_latency_s": {"p50": 0.95, "p95": 2.1, "n": 2}, "onset_latency_late_start_s": {"p50": 1.07, "p95": 2.2, "n": 1}}
    card["yamnet_events"] = {"report": "r.json", "event_labels": 114,
                             "file_hop": {**y, "hop_s": 0.48}, "live_hop": {**y, "hop_s": 0.1}}
    rows = [r for r in render(card, "# Card\n").splitlines() if r.startswith("| YAMNet, ")]
    assert rows == ["| YAMNet, file hop 0.48 s | 0.120 | 0.95 s | 1.07 / 2.20 s | 2 / 1 |",
                    "| YAMNet, live hop 0.1 s | 0.120 | 0.95 s | 1.07 / 2.20 s | 2 / 1 |"]
    del card["yamnet_events"]
    assert "YAMNet, file hop" not in render(card, "# Card\n")
