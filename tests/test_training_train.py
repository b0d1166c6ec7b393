"""training.train: TOML config, schedule, losses, checkpoint contents, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.model import PRESETS  # noqa: E402
from training.toy import TOY_LABELS, make_toy_clips  # noqa: E402
from training.train import focal_loss, load_config, lr_factor, main  # noqa: E402

#: Augmentations off: the resume test compares exact weights.
PLAIN = ["--no-wave-augment", "--no-spec-augment", "--no-mix"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_clips(tmp_path_factory.mktemp("toy_clips"), n_per_label=5, seed=2)


def test_toml_config_unknown_keys_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('epochs = 7\npreset = "tiny"\n[model]\npooling = "attention"\n')
    run = load_config(cfg, {"epochs": 3, "lr": None})
    assert run.train.epochs == 3  # flag wins
    assert run.model.pooling == "attention"
    assert run.model.widths == PRESETS["tiny"].widths
    cfg.write_text("epochs = 7\nepochz = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epochz'\]"):
        load_config(cfg)
    cfg.write_text("[model]\nwidth = [8]\n")
    with pytest.raises(ValueError, match=r"\[model\]: unknown key\(s\) \['width'\]"):
        load_config(cfg)
    with pytest.raises(ValueError, match="loss='l2'"):
        load_config(None, {"loss": "l2"})


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_lr_schedule_warms_up_and_decays(schedule: str) -> None:
    total, warmup = 100, 10
    f = [lr_factor(s, total, warmup, schedule) for s in range(total)]
    assert f[0] < 0.2
    assert max(f) == pytest.approx(1.0, abs=0.02)
    assert f.index(max(f)) <= warmup
    assert f[-1] < 0.05
    assert all(a >= b - 1e-12 for a, b in zip(f[warmup:], f[warmup + 1 :], strict=False))


def test_focal_loss_down_weights_easy_examples() -> None:
    targets = torch.tensor([[1.0, 0.0]])
    easy, hard = torch.tensor([[4.0, -4.0]]), torch.tensor([[-1.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert focal_loss(easy, targets, 0.0) == pytest.approx(bce(easy, targets).item(), rel=1e-6)
    ratio_easy = focal_loss(easy, targets, 2.0) / bce(easy, targets)
    ratio_hard = focal_loss(hard, targets, 2.0) / bce(hard, targets)
    assert ratio_easy < 0.01 < ratio_hard


def _args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["--train", str(manifest), "--cache", str(manifest.parent / "cache"), "--out", str(out),
            "--preset", "tiny", "--epochs", "3", "--batch-size", "8", "--samples-per-epoch", "48",
            "--device", "cpu", *PLAIN, *extra]


def test_checkpoint_contents_and_resume_matches_uninterrupted(toy_manifest: Path, tmp_path: Path) -> None:
    assert main(_args(toy_manifest, tmp_path / "full")) == 0
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert full["epoch"] == 3 and len(full["history"]) == 3
    assert [d["name"] for d in full["labels"]] == sorted(TOY_LABELS)
    assert {d["mid"] for d in full["labels"]} == set(TOY_LABELS.values())
    assert full["features"]["n_mels"] == 64
    assert full["train_config"]["epochs"] == 3
    assert full["data_summary"]["train_counts"] == {n: 4 for n in sorted(TOY_LABELS)}
    assert isinstance(full["git_revision"], str)
    assert all("val_map" in h and h["train_loss"] > 0 for h in full["history"])

    assert main(_args(toy_manifest, tmp_path / "split", "--stop-epoch", "1")) == 0
    first = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert first["epoch"] == 1
    resumed_args = _args(toy_manifest, tmp_path / "split", "--resume",
                         str(tmp_path / "split" / "last.pt"))
    assert main(resumed_args) == 0
    resumed = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3 and resumed["step"] == full["step"]
    for name, value in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0, msg=name)
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in full["history"]], rel=1e-9
    )


@pytest.mark.gpu
def test_mixed_precision_training_on_gpu(toy_manifest: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    args = _args(toy_manifest, tmp_path / "gpu", "--amp")
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 0
    ckpt = torch.load(tmp_path / "gpu" / "last.pt", weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    losses = [h["train_loss"] for h in ckpt["history"]]
    assert losses[-1] < losses[0], losses
