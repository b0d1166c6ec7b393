"""training.model: MAC counter, shapes, configs, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig  # noqa: E402
from training.model import (  # noqa: E402
    PRESETS,
    MelNorm,
    ModelConfig,
    SedNet,
    count_macs,
    load_checkpoint,
)

FEATURES = FeatureConfig()
MAX_DEFAULT_MACS = 17_000_000


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_mac_counter_matches_hand_count() -> None:
    # 96x64 input, stem 3x3 stride 2 -> 48x32x2, one block 2->2 stride 2 -> 24x16x2.
    cfg = ModelConfig(stem_channels=2, widths=(2,), blocks=(1,), strides=((2, 2),), dropout=0.0)
    model = SedNet(cfg, n_labels=3, features=FEATURES)
    stem = 48 * 32 * 2 * (1 * 3 * 3)
    conv1 = 24 * 16 * 2 * (2 * 3 * 3)
    conv2 = 24 * 16 * 2 * (2 * 3 * 3)
    shortcut = 24 * 16 * 2 * (2 * 1 * 1)
    head = 3 * 2
    macs, params = count_macs(model)
    assert macs == stem + conv1 + conv2 + shortcut + head == 56_838
    assert params == sum(p.numel() for p in model.parameters())

    # Attention pooling: head and attention layers run on each of the 24 time steps.
    att = SedNet(ModelConfig(**{**cfg.to_dict(), "pooling": "attention"}), 3, FEATURES)
    att_macs, _ = count_macs(att)
    assert att_macs == stem + conv1 + conv2 + shortcut + 2 * 24 * 3 * 2


def test_default_size_within_budget() -> None:
    assert ModelConfig() == PRESETS["small"]
    for name in ("small", "small-wide", "tiny"):
        macs, _ = count_macs(SedNet(PRESETS[name], 527, FEATURES))
        assert 0 < macs <= MAX_DEFAULT_MACS, name
    small, _ = count_macs(SedNet(PRESETS["small"], 527, FEATURES))
    assert small < 7_000_000


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_output_shape_range_and_batch_invariance(pooling: str) -> None:
    torch.manual_seed(0)
    model = SedNet(ModelConfig(**{**PRESETS["tiny"].to_dict(), "pooling": pooling}), 5, FEATURES)
    model.eval()
    x = torch.randn(4, FEATURES.patch_frames, FEATURES.n_mels) * 3 - 4
    with torch.no_grad():
        scores = model.scores(x)
        single = model.scores(x[2:3])
    assert scores.shape == (4, 5)
    assert torch.all((scores >= 0) & (scores <= 1))
    torch.testing.assert_close(single[0], scores[2], atol=1e-5, rtol=0)
    assert model.frames(x).shape[:2] == (4, FEATURES.patch_frames // 32)


def test_cli_prints_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from training.model import main

    assert main(["--labels", "10"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in PRESETS)
    assert "expand=512" in out and "small-wide pooling=attention" not in out


def test_rejects_wrong_input_shape() -> None:
    model = SedNet(PRESETS["tiny"], 2, FEATURES)
    with pytest.raises(ValueError, match=r"expected \(batch, 96, 64\)"):
        model(torch.zeros(1, 64, 96))


def test_config_validation_and_round_trip() -> None:
    cfg = ModelConfig(widths=(8, 16), blocks=(2, 1), strides=(2, [2, 1]), pooling="attention")
    assert cfg.strides == ((2, 2), (2, 1))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model key"):
        ModelConfig.from_dict({"width": [8]})
    with pytest.raises(ValueError, match="pooling='sum'"):
        ModelConfig(pooling="sum")
    with pytest.raises(ValueError, match="one entry per stage"):
        ModelConfig(widths=(8, 16), blocks=(1,), strides=(2, 2))
    with pytest.raises(ValueError, match="expand=-1"):
        ModelConfig(expand=-1)
    with pytest.raises(ValueError, match="expand=8 with pooling='attention'"):
        ModelConfig(expand=8, pooling="attention")
    assert ModelConfig.from_dict(PRESETS["small-wide"].to_dict()).expand == 512


def test_wide_path_macs_and_a_grown_model_computes_what_its_checkpoint_did(tmp_path: Path) -> None:
    narrow_cfg = ModelConfig(**{**PRESETS["tiny"].to_dict()})
    wide_cfg = ModelConfig(**{**narrow_cfg.to_dict(), "expand": 40})
    torch.manual_seed(2)
    narrow = SedNet(narrow_cfg, 5, FEATURES)
    wide = SedNet(wide_cfg, 5, FEATURES)
    frames = FEATURES.patch_frames // 32
    c = narrow_cfg.widths[-1]
    assert count_macs(wide)[0] - count_macs(narrow)[0] == frames * c * 40 + 40 * 5
    narrow.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        narrow(torch.randn(8, FEATURES.patch_frames, FEATURES.n_mels) * 2 - 3)
    narrow.eval()
    torch.save({"model": narrow.state_dict(), "model_config": narrow_cfg.to_dict(),
                "labels": [{"name": f"l{i}", "mid": f"/m/{i}"} for i in range(5)],
                "features": FEATURES.to_dict()}, tmp_path / "narrow.pt")
    from training.distill import _init_from

    assert _init_from(wide, str(tmp_path / "narrow.pt"), [f"/m/{i}" for i in range(5)]) == 5
    wide.eval()
    x = torch.randn(3, FEATURES.patch_frames, FEATURES.n_mels) * 2 - 3
    with torch.no_grad():
        torch.testing.assert_close(wide.scores(x), narrow.scores(x), atol=0, rtol=0)
        wide.head2.weight.normal_()  # trained, the wide path changes the scores
        assert not torch.allclose(wide.scores(x), narrow.scores(x))


def test_load_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = SedNet(PRESETS["tiny"], 2, FEATURES).eval()
    ckpt = {
        "model": model.state_dict(),
        "model_config": PRESETS["tiny"].to_dict(),
        "labels": [{"name": "Dog", "mid": "/m/0bt9lr"}, {"name": "Cat", "mid": "/m/01yrx"}],
        "features": FEATURES.to_dict(),
    }
    path = tmp_path / "c.pt"
    torch.save(ckpt, path)
    loaded, meta = load_checkpoint(path)
    x = torch.randn(3, FEATURES.patch_frames, FEATURES.n_mels)
    with torch.no_grad():
        torch.testing.assert_close(loaded.scores(x), model.scores(x))
    assert meta["labels"][1]["name"] == "Cat"
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="lacks"):
        load_checkpoint(path)


def test_mel_norm_inference_is_its_batchnorm() -> None:
    """In eval mode MelNorm is a per-bin affine map on (B, T, F) (one Mul, one Add when
    exported); it must equal the BatchNorm over mel bins that training uses."""
    torch.manual_seed(0)
    norm = MelNorm(64)
    with torch.no_grad():
        norm.bn.running_mean.uniform_(-8.0, 2.0)
        norm.bn.running_var.uniform_(0.5, 9.0)
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.uniform_(-1.0, 1.0)
    norm.eval()
    x = torch.randn(5, 96, 64) * 3.0 - 4.0
    with torch.no_grad():
        got = norm(x)
        ref = norm.bn(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2).unsqueeze(1)
    assert got.shape == (5, 1, 96, 64)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    # Training mode still normalises by the batch's own statistics (and updates the running ones).
    norm.train()
    y = norm(x)
    assert torch.allclose(y.mean(dim=(0, 2)).squeeze(0), norm.bn.bias, atol=1e-4)
