"""End to end: toy audio -> sed-train (augmentations on) -> sed-export -> onnxruntime -> detector.

Generated clips (sine tones, beeps, chirps, white-noise bursts, each an AudioSet label)
train the real architecture at the "tiny" preset to >= 0.95 validation mAP on CPU; the
exported model then scores a toy scene in onnxruntime and the streaming detector finds
its events at the right times.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig, log_mel  # noqa: E402
from detector.model.contract import ModelContract  # noqa: E402
from detector.pipeline import detect_file  # noqa: E402
from training import export, train  # noqa: E402
from training.toy import TOY_LABELS, make_toy_clips, make_toy_scene  # noqa: E402

FEATURES = FeatureConfig()
EVENTS = [("Sine wave", 1.5, 2.5), ("White noise", 5.5, 2.0), ("Chirp tone", 9.0, 2.5),
          ("Beep, bleep", 13.0, 2.5)]
SCENE_SECONDS = 17.0
TIME_TOLERANCE_S = 0.75
MIN_MAP = 0.95
MAX_SECONDS = 120.0
#: Gain, shift, batch mixing and SpecAugment on; reverb and band limiting (which hide a
#: chirp's top octave, too much for 25 short epochs) off. 15 epochs passed on Intel hosts
#: but left a false half-second "Sine wave" at the chirp's start on an AMD EPYC one (the
#: float kernels, hence the training, differ by CPU); 20 and 25 pass there.
TRAIN_TOML = """
preset = "tiny"
epochs = 25
batch_size = 16
samples_per_epoch = 256
[augment]
reverb = false
band_limit = false
"""


@pytest.mark.slow
def test_toy_audio_trains_exports_and_detects(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    t0 = time.monotonic()
    manifest = make_toy_clips(tmp_path / "clips", n_per_label=20, seed=5)
    run = tmp_path / "run"
    config = tmp_path / "train.toml"
    config.write_text(TRAIN_TOML)
    assert train.main([
        "--config", str(config), "--train", str(manifest), "--cache", str(tmp_path / "cache"),
        "--out", str(run), "--device", "cpu", "--seed", "0",
    ]) == 0
    ckpt = torch.load(run / "best.pt", weights_only=True)
    best_map = max(h["val_map"] for h in ckpt["history"])
    assert best_map >= MIN_MAP, ckpt["history"]

    out = tmp_path / "export"
    assert export.main([str(run / "best.pt"), "--out", str(out), "--val-manifest", str(manifest),
                        "--cache", str(tmp_path / "cache")]) == 0
    model = out / "model.onnx"
    contract = ModelContract.from_metadata(
        __import__("onnxruntime").InferenceSession(
            str(model), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    )
    names = contract.names
    assert sorted(names) == sorted(TOY_LABELS)
    assert contract.extra["data"]["train_counts"] == {n: 16 for n in names}

    wave = make_toy_scene(EVENTS, SCENE_SECONDS, seed=9)
    scene = tmp_path / "scene.wav"
    sf.write(scene, wave, FEATURES.sample_rate, subtype="FLOAT")

    # Patch scores in onnxruntime: each event's label wins inside it, nothing fires in gaps.
    mel = log_mel(wave, FEATURES)
    starts = np.arange(0, mel.shape[0] - FEATURES.patch_frames + 1, FEATURES.patch_frames // 4)
    scores = export.onnx_scores(model, np.stack([mel[s : s + FEATURES.patch_frames] for s in starts]))
    t_start = starts * FEATURES.frame_seconds
    t_end = t_start + FEATURES.patch_seconds
    for label, on, dur in EVENTS:
        inside = (t_start >= on) & (t_end <= on + dur)
        k = names.index(label)
        assert scores[inside, k].mean() > 0.7, (label, scores[inside])
        assert (scores[inside].argmax(axis=1) == k).all(), label
    gaps = np.ones_like(t_start, dtype=bool)
    for _, on, dur in EVENTS:
        gaps &= (t_end <= on) | (t_start >= on + dur)
    assert gaps.any()
    assert scores[gaps].max() < 0.5, scores[gaps]

    # The streaming detector on the scene file: one closed event per toy event.
    closed = [m for m in detect_file(scene, model) if m["event"] == "offset"]
    found = sorted((m["label"], m["start"], m["end"]) for m in closed)
    assert [f[0] for f in found] == sorted(e[0] for e in EVENTS), found
    for label, on, dur in EVENTS:
        (_, start, end), = [f for f in found if f[0] == label]
        assert abs(start - on) <= TIME_TOLERANCE_S, (label, start, on)
        assert abs(end - (on + dur)) <= TIME_TOLERANCE_S, (label, end, on + dur)
    assert time.monotonic() - t0 < MAX_SECONDS
