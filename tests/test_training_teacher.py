"""training.teacher: YAMNet soft targets, the blended loss, and distillation in sed-train."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig, log_mel  # noqa: E402
from detector.model.yamnet import find_yamnet  # noqa: E402
from training.teacher import Teacher, blend, label_weights, load_teacher  # noqa: E402
from training.toy import make_toy_clips  # noqa: E402
from training.train import load_config, main  # noqa: E402

needs_yamnet = pytest.mark.skipif(
    find_yamnet() is None, reason="YAMNet not fetched (bin/setup does: python -m detector.bench fetch-yamnet)"
)
#: AudioSet mids: Speech, Dog, Music, and one that no model has.
MIDS = ["/m/09x0r", "/m/0bt9lr", "/m/04rlf", "/m/not_a_class"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_blend_weights_each_label_and_ignores_zero_weight_columns() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, 3.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    soft = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    hard = bce(logits, target, reduction="none")
    distill = bce(logits, soft, reduction="none")
    zero = torch.zeros(3)
    assert blend(hard, logits, soft, zero).item() == pytest.approx(hard.mean().item())
    w = torch.tensor([1.0, 0.25, 0.0])
    expected = ((1 - w) * hard + w * distill).mean()
    assert blend(hard, logits, soft, w).item() == pytest.approx(expected.item())
    assert blend(hard, logits, soft, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(
        torch.cat([distill[:, :2], hard[:, 2:]], dim=1).mean().item())
    logits.grad = None
    blend(torch.zeros_like(hard), logits, soft, torch.tensor([1.0, 1.0, 0.0])).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, 2] == 0)  # weight 0: the teacher has no say there
    assert torch.all(logits.grad[:, :2] != 0)


@needs_yamnet
def test_teacher_maps_labels_by_mid_and_hears_speech(speech_clip_path: Path) -> None:
    import soundfile as sf

    path = find_yamnet()
    assert path is not None
    teacher = Teacher(path, MIDS, threads=1)
    assert teacher.mask.tolist() == [True, True, True, False]
    wave, sr = sf.read(speech_clip_path, dtype="float64")
    cfg = FeatureConfig()
    assert sr == cfg.sample_rate
    mel = log_mel(np.pad(wave, (0, max(0, cfg.patch_samples - wave.size))), cfg)[: cfg.patch_frames]
    probs = teacher(torch.from_numpy(mel[None].astype(np.float32)))
    assert probs.shape == (1, 4) and probs.dtype == torch.float32
    speech, dog, music, missing = probs[0].tolist()
    assert speech > 0.5 and speech > 3 * max(dog, music)
    assert missing == 0.0
    silence = teacher(torch.full((1, cfg.patch_frames, cfg.n_mels), float(np.log(cfg.log_offset))))
    assert silence[0, 0].item() < speech


def test_load_teacher_names_the_fix_when_the_model_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fetch-yamnet"):
        load_teacher(str(tmp_path / "nowhere"), MIDS)


def test_distill_weight_is_validated() -> None:
    with pytest.raises(ValueError, match=r"distill_weight=1.5 \(accepted: 0 <= w <= 1\)"):
        load_config(None, {"distill_weight": 1.5})


def _relabelled(manifest: Path, out: Path) -> Path:
    """The same clips with every label rotated to another clip's: wrong hard labels."""
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = [r["labels"] for r in rows]
    for r, lab in zip(rows, labels[1:] + labels[:1], strict=True):
        r["labels"] = lab
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


@needs_yamnet
def test_full_distillation_ignores_hard_labels_and_partial_does_not(tmp_path: Path) -> None:
    manifest = make_toy_clips(tmp_path / "clips", n_per_label=3, seed=4)
    wrong = _relabelled(manifest, manifest.parent / "wrong.csv")
    common = ["--cache", str(manifest.parent / "cache"), "--preset", "tiny", "--epochs", "1",
              "--batch-size", "8", "--samples-per-epoch", "24", "--device", "cpu", "--no-balanced",
              "--no-wave-augment", "--no-spec-augment", "--no-mix", "--teacher", "yamnet",
              "--no-distill-per-label"]

    def weights(train: Path, out: str, w: str) -> dict[str, torch.Tensor]:
        assert main(["--train", str(train), "--out", str(tmp_path / out), "--distill-weight", w,
                     *common]) == 0
        ckpt = torch.load(tmp_path / out / "last.pt", weights_only=True)
        assert ckpt["train_config"]["teacher"] == "yamnet"
        return dict(ckpt["model"])

    right1, wrong1 = weights(manifest, "right1", "1.0"), weights(wrong, "wrong1", "1.0")
    for name, value in right1.items():
        torch.testing.assert_close(wrong1[name], value, rtol=0, atol=0, msg=name)
    right_half, wrong_half = weights(manifest, "right05", "0.5"), weights(wrong, "wrong05", "0.5")
    assert any(not torch.equal(right_half[n], wrong_half[n]) for n in right_half)
    assert any(not torch.equal(right_half[n], right1[n]) for n in right_half)


@needs_yamnet
def test_label_weights_follow_the_teachers_training_ap(speech_clip_path: Path,
                                                       tmp_path: Path) -> None:
    """Speech clips labelled Speech: the teacher ranks them first (AP 1, full weight). The
    same clips labelled Dog: the teacher does not hear dogs there (AP < 1, less weight)."""
    from training.data import Clip, PatchDataset, WaveformStore

    path = find_yamnet()
    assert path is not None
    teacher = Teacher(path, MIDS, threads=1)
    store = WaveformStore(tmp_path / "cache")
    baby_cry = speech_clip_path.with_name("baby_cry.flac")
    clips = [Clip(speech_clip_path, ("Speech",)), Clip(baby_cry, ("Dog",))]
    store.build(clips)
    ds = PatchDataset(clips, store, ["Speech", "Dog", "Music", "Nothing"])
    w, ap = label_weights(teacher, ds, 0.5)
    assert ap[0] == pytest.approx(1.0)
    assert w[0].item() == pytest.approx(0.5)
    assert 0.0 <= w[1].item() == pytest.approx(0.5 * ap[1]) and ap[1] <= 1.0
    assert w[2].item() == 0.0 and np.isnan(ap[2])  # no training positive
    assert w[3].item() == 0.0 and np.isnan(ap[3])  # the teacher lacks it
    flat, _ = label_weights(teacher, ds, 0.5, per_label=False)
    assert flat.tolist() == [0.5, 0.5, 0.5, 0.0]
