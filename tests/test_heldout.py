"""Leave-package-out evaluation (training.heldout): the mapping, the reserved-package
refusal, and the pooling + AP logic on two tiny FLACs scored by a fake model."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from detector.cli.tag import PatchPool, pool_scores
from detector.frontend.features import FeatureConfig
from detector.model.contract import Label
from training import heldout
from training.corpus.mapping import load_label_names, load_mapping
from training.ontology import Ontology

RATE = 16000


def test_mapping_loads_with_ontology_names_for_the_heldout_packages_only() -> None:
    rules = load_mapping(heldout.DEFAULT_MAPPING)
    names = load_label_names()
    labelled = [r for r in rules if not r.excluded]
    assert len(labelled) >= 50
    assert {lab for r in labelled for lab in r.labels} <= names
    assert {r.package for r in rules} == set(heldout.HELDOUT_PACKAGES)
    assert all(r.checked.strip() and "pending" not in r.checked for r in rules)
    heldout.check_not_reserved(r.package for r in rules)  # none reserved


@pytest.mark.parametrize("name", ["scratch", "asterisk-core-sounds-fr-g722",
                                  "asterisk-core-sounds-fr-wav"])
def test_reserved_packages_are_refused_by_name(name: str, tmp_path: Path) -> None:
    with pytest.raises(heldout.ReservedPackageError, match=name):
        heldout.check_not_reserved(["kajongg", name])
    # refused before any download: no apt call, nothing written
    with pytest.raises(heldout.ReservedPackageError):
        heldout.build(tmp_path / "out", tmp_path / "debs", names=[name])
    assert not (tmp_path / "debs").exists()
    table = tmp_path / "m.csv"
    table.write_text("package,pattern,labels,group,role,checked,notes\n"
                     f"{name},.*\\.wav,Speech,file,event,listened,\n", encoding="utf-8")
    with pytest.raises(heldout.ReservedPackageError):
        heldout.build(tmp_path / "out", tmp_path / "debs", mapping=table, names=["kajongg"])
    heldout.check_not_reserved(["asterisk-core-sounds-it-g722", "scratchpad"])


def test_patch_pool_matches_pool_scores_over_batches() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((7, 3)).astype(np.float32)
    pool = PatchPool()
    pool.add(s[:4])
    pool.add(s[4:4])
    pool.add(s[4:])
    assert pool.n == 7
    for p in ("max", "mean"):
        np.testing.assert_allclose(pool.pooled(p), pool_scores(s, p), rtol=1e-6)
    with pytest.raises(ValueError, match="accepted"):
        pool.pooled("median")
    with pytest.raises(ValueError, match="no patches"):
        PatchPool().pooled()


class LoudnessScorer:
    """Fake model: every label's score is a sigmoid of the patch's mean log-mel (loudness)."""

    def __init__(self, labels: list[str], invert: tuple[str, ...] = ()) -> None:
        onto = Ontology.load()
        self.contract = SimpleNamespace(
            features=FeatureConfig(), labels=tuple(Label(n, onto.mid(n)) for n in labels))
        self.sign = np.array([-1.0 if n in invert else 1.0 for n in labels])

    def score(self, patches: np.ndarray) -> np.ndarray:
        e = patches.mean(axis=(1, 2)).astype(np.float64)  # about -6.9 (silence) .. 0
        return (1.0 / (1.0 + np.exp(-(e[:, None] + 4.0) * self.sign))).astype(np.float32)


def _write(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), RATE, subtype="PCM_16", format="FLAC")


@pytest.fixture()
def tiny_set(tmp_path: Path) -> Path:
    """burst.flac: 1 s of loud noise then 4 s of silence (labels Dog, Bark);
    steady.flac: 5 s of quiet noise (label Speech)."""
    rng = np.random.default_rng(1)
    burst = np.zeros(5 * RATE)
    burst[:RATE] = 0.8 * rng.standard_normal(RATE).clip(-1.2, 1.2)
    steady = 0.01 * rng.standard_normal(5 * RATE)
    _write(tmp_path / "clips" / "burst.flac", burst)
    _write(tmp_path / "clips" / "steady.flac", steady)
    (tmp_path / "manifest.csv").write_text(
        "path,labels,source,package,seconds\n"
        "clips/burst.flac,Dog|Bark,t:burst,t,5.000\n"
        "clips/steady.flac,Speech,t:steady,t,5.000\n", encoding="utf-8")
    return tmp_path


def test_pooling_and_ap_on_two_tiny_flacs(tiny_set: Path) -> None:
    recs = heldout.load_manifest(tiny_set)
    sed = LoudnessScorer(["Dog", "Speech"])
    yam = LoudnessScorer(["Dog", "Speech", "Bark"], invert=("Dog",))
    s = heldout.score_recordings(recs, sed)
    y = heldout.score_recordings(recs, yam)
    dog = 0
    # max: the burst's loudest patch beats the steady noise; mean: its silence pulls it below
    assert s["max"][0, dog] > s["max"][1, dog]
    assert s["mean"][0, dog] < s["mean"][1, dog]
    res = heldout.evaluate(recs, s, [lab.mid for lab in sed.contract.labels],
                           y, [lab.mid for lab in yam.contract.labels], min_positives=1)
    assert res["labels"]["both"] == ["Dog", "Speech"]
    assert res["labels"]["yamnet_only"] == ["Bark"]
    ap = {p: {r["label"]: (r["sed_ap"], r["yamnet_ap"]) for r in res["pools"][p]["per_label"]}
          for p in ("max", "mean")}
    # one positive of two recordings: AP 1.0 ranked first, 0.5 ranked second
    # the fake YAMNet's Dog is inverted loudness: the burst's silence ranks it first either way
    assert ap["max"]["Dog"] == (1.0, 1.0)
    assert ap["mean"]["Dog"] == (0.5, 1.0)
    assert ap["max"]["Speech"] == (0.5, 0.5)
    assert ap["mean"]["Speech"] == (1.0, 1.0)
    assert res["pools"]["max"]["sed_map"] == pytest.approx(0.75)
    assert res["pools"]["mean"]["sed_map"] == pytest.approx(0.75)
    assert res["pools"]["max"]["yamnet_map"] == pytest.approx(0.75)
    assert res["pools"]["max"]["yamnet_only"] == [
        {"label": "Bark", "positives": 1, "yamnet_ap": 1.0}]
    assert res["pools"]["mean"]["yamnet_only"] == [
        {"label": "Bark", "positives": 1, "yamnet_ap": 0.5}]
    table = heldout.markdown_table(res, "max")
    assert "| Dog | 1 | 1.000 | 1.000 |" in table and "| Bark | 1 | 1.000 |" in table


def test_min_positives_filters_labels_and_nan_without_yamnet(tiny_set: Path) -> None:
    recs = heldout.load_manifest(tiny_set)
    sed = LoudnessScorer(["Dog", "Speech"])
    s = heldout.score_recordings(recs, sed)
    mids = [lab.mid for lab in sed.contract.labels]
    assert heldout.evaluate(recs, s, mids, min_positives=2)["labels_with_min_positives"] == 0
    res = heldout.evaluate(recs, s, mids, min_positives=1)
    assert res["labels"]["both"] == ["Dog", "Speech"]  # without YAMNet: every label ours has
    assert res["labels"]["neither"] == ["Bark"]
    assert math.isnan(res["pools"]["max"]["yamnet_map"])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (bin/setup)")
def test_decode_any_reads_raw_g722_through_ffmpeg(tmp_path: Path) -> None:
    t = np.arange(RATE) / RATE
    _write(tmp_path / "tone.flac", 0.3 * np.sin(2 * np.pi * 440 * t))
    g = tmp_path / "tone.g722"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(tmp_path / "tone.flac"),
                    "-ar", "16000", "-ac", "1", "-f", "g722", str(g)], check=True)
    w = heldout.decode_any(g, RATE)
    assert abs(w.size - RATE) < 200
    assert 0.15 < float(np.sqrt(np.mean(w**2))) < 0.25


def test_compare_table_puts_models_side_by_side_on_shared_labels(tmp_path: Path) -> None:
    from training.heldout import compare_table

    def result(rows: list[tuple[str, int, float, float]]) -> dict[str, object]:
        per = [{"label": lab, "positives": n, "sed_ap": a, "yamnet_ap": y} for lab, n, a, y in rows]
        return {"pools": {"mean": {"per_label": per}, "max": {"per_label": per}}}

    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(result([("Dog", 5, 0.5, 1.0), ("Cat", 3, 0.25, 0.5)])))
    b.write_text(json.dumps(result([("Dog", 5, 0.75, 1.0), ("Cat", 3, 1.0, 0.5),
                                     ("Hum", 9, 0.1, 0.2)])))
    text = compare_table([f"old={a}", f"new={b}"])
    lines = text.splitlines()
    assert lines[0] == "| label | positives | old | new | YAMNet |"
    assert lines[2] == "| Dog | 5 | 0.50 | 0.75 | 1.00 |"  # most positives first
    assert "Hum" not in text  # only labels every result scored
    assert lines[-1] == "| **mAP, 2 labels** | | **0.375** | **0.875** | **0.750** |"
    with pytest.raises(ValueError, match=r"NAME=EVAL\.json"):
        compare_table([str(a)])
