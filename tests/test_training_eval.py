"""sed-eval on the toy model (checkpoint and ONNX) and toy clips with strong labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig  # noqa: E402
from training.clips import read_manifest, write_manifest  # noqa: E402
from training.data import PatchDataset, WaveformStore  # noqa: E402
from training.evaluate import evaluate, format_table, main, pool_clips  # noqa: E402
from training.metrics import event_f1, scores_to_events  # noqa: E402
from training.toy import TOY_LABELS, make_toy_clips  # noqa: E402

CFG = FeatureConfig()


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_clips(tmp_path_factory.mktemp("toy_clips"), n_per_label=5, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wave_cache")


def test_checkpoint_and_onnx_give_the_same_report(
    toy_model: Path, toy_manifest: Path, cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.set_num_threads(1)
    ckpt = toy_model.with_name("toy.pt")
    assert main([str(ckpt), "--manifest", str(toy_manifest), "--out", str(tmp_path / "pt"),
                 "--cache", str(cache)]) == 0
    table = capsys.readouterr().out
    assert "Sine wave" in table and "mAP" in table
    assert main([str(toy_model), "--manifest", str(toy_manifest), "--out", str(tmp_path / "onnx"),
                 "--cache", str(cache)]) == 0
    pt = json.loads((tmp_path / "pt" / "report.json").read_text())
    ox = json.loads((tmp_path / "onnx" / "report.json").read_text())
    assert pt["labels"] == ox["labels"] == list(TOY_LABELS)
    assert pt["mids"] == list(TOY_LABELS.values())
    for a, b in zip(pt["per_label"], ox["per_label"], strict=True):
        assert a["ap"] == pytest.approx(b["ap"], abs=1e-6)
    m = pt["metrics"]
    assert m["n_clips"] == 20 and m["labels_excluded_no_positives"] == 0
    assert m["mAP"] > 0.5  # chance is 0.25 with 5 positives of 20 per label
    assert 0.5 < m["mAUC"] <= 1.0 and m["d_prime"] > 0
    assert "event_macro_f1" in m and m["event_labels"] == 4
    assert "macro_f1_model_thresholds" in ox["metrics"]  # ONNX carries thresholds
    on, off = pt["thresholds"]["on"], pt["thresholds"]["off"]
    assert len(on) == len(off) == 4
    assert all(0 <= f <= n <= 1 for n, f in zip(on, off, strict=True))
    for name in ("per_label_ap.png", "score_histograms.png"):
        assert (tmp_path / "pt" / name).stat().st_size > 1000
    assert not (tmp_path / "pt" / "training_curves.png").exists()  # toy.pt has no history


def test_report_thresholds_feed_sed_export(toy_model: Path, toy_manifest: Path, cache: Path,
                                           tmp_path: Path) -> None:
    from training.export import thresholds_from_report

    report = evaluate(toy_model, toy_manifest, tmp_path, cache_dir=cache, plots=False)
    on, off = thresholds_from_report(tmp_path / "report.json", report["labels"])
    assert on == report["thresholds"]["on"] and off == pytest.approx([0.5 * x for x in on])


def test_training_curves_and_excluded_labels(toy_model: Path, toy_manifest: Path, cache: Path,
                                             tmp_path: Path) -> None:
    ckpt = torch.load(toy_model.with_name("toy.pt"), weights_only=True)
    ckpt["history"] = [{"epoch": e, "train_loss": 1.0 / e, "val_map": 0.2 * e, "lr": 1e-3}
                       for e in range(1, 4)]
    torch.save(ckpt, tmp_path / "hist.pt")
    # drop every White noise clip: that label has no positives and must be excluded
    clips = [c for c in read_manifest(toy_manifest) if "White noise" not in c.labels]
    sub = write_manifest(clips, toy_manifest.with_name("no_noise.csv"))
    report = evaluate(tmp_path / "hist.pt", sub, tmp_path / "out", cache_dir=cache, pooling="mean")
    assert (tmp_path / "out" / "training_curves.png").stat().st_size > 1000
    assert report["metrics"]["labels_excluded_no_positives"] == 1
    noise = report["per_label"][3]
    assert noise["name"] == "White noise" and noise["ap"] is None and noise["positives"] == 0
    assert report["pooling"] == "mean" and report["history"][2]["val_map"] == pytest.approx(0.6)
    assert "1 label(s) without positives excluded" in format_table(report)
    json.loads((tmp_path / "out" / "report.json").read_text())  # strict JSON: no NaN


def test_event_geometry_oracle(toy_manifest: Path, cache: Path) -> None:
    """Patch targets used as scores recover the annotated events within the collars."""
    clips = read_manifest(toy_manifest)
    store = WaveformStore(cache, CFG)
    ds = PatchDataset(clips, store, list(TOY_LABELS), CFG, mode="all", hop_s=0.05,
                      pad_edges=True)
    centres = (ds.patch_start + CFG.patch_samples / 2) / CFG.sample_rate
    ref, est = [], []
    for r, evs in enumerate(ds.events):
        rows = ds.clip_index == r
        found = scores_to_events(ds.targets[rows], centres[rows], 0.05, [0.5] * 4, [0.5] * 4,
                                 store.seconds(ds.paths[r]))
        ref += [(str(r), lab, a, b) for lab, a, b in evs]
        est += [(str(r), lab, a, b) for lab, a, b in found]
    res = event_f1(ref, est, n_labels=4)
    assert res.micro_f1 > 0.9


def test_pool_clips() -> None:
    scores = np.array([[0.1, 0.9], [0.5, 0.1], [0.3, 0.3]])
    idx = np.array([0, 0, 1])
    np.testing.assert_allclose(pool_clips(scores, idx, 2, "max"), [[0.5, 0.9], [0.3, 0.3]])
    np.testing.assert_allclose(pool_clips(scores, idx, 2, "mean"), [[0.3, 0.5], [0.3, 0.3]])
    with pytest.raises(ValueError, match="accepted"):
        pool_clips(scores, idx, 2, "attention")


def test_cli_errors_are_readable(toy_model: Path, toy_manifest: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.pt"), "--manifest", str(toy_manifest),
                 "--out", str(tmp_path)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main([str(toy_model), "--manifest", str(toy_manifest), "--out", str(tmp_path),
                 "--split", "test"]) == 2
    assert "no rows with split='test'" in capsys.readouterr().err
