"""training.extend: start from a checkpoint; --freeze-known trains only the new labels."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig  # noqa: E402
from training.extend import HeadOnly, init_from, retrain_rows  # noqa: E402
from training.model import PRESETS, SedNet, load_checkpoint  # noqa: E402
from training.toy import TOY_LABELS, make_toy_clips  # noqa: E402
from training.train import load_config, main  # noqa: E402

NAMES = sorted(TOY_LABELS)
KNOWN = NAMES[:2]  # the "old" model knows two of the four toy labels


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_clips(tmp_path_factory.mktemp("toy_clips"), n_per_label=4, seed=5)


def _train(manifest: Path, out: Path, labels: list[str], *extra: str) -> dict:
    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text("labels = [" + ", ".join(f'"{n}"' for n in labels) + "]\n")
    args = ["--config", str(cfg), "--train", str(manifest), "--cache", str(manifest.parent / "cache"),
            "--out", str(out), "--preset", "tiny", "--epochs", "2", "--batch-size", "8",
            "--samples-per-epoch", "32", "--device", "cpu", "--no-mix", *extra]
    assert main(args) == 0
    return torch.load(out / "last.pt", weights_only=True)


def test_freeze_known_leaves_old_labels_bit_identical(toy_manifest: Path, tmp_path: Path) -> None:
    old = _train(toy_manifest, tmp_path / "old", KNOWN)
    new = _train(toy_manifest, tmp_path / "new", NAMES, "--init-from", str(tmp_path / "old" / "last.pt"),
                 "--freeze-known")
    assert [d["name"] for d in new["labels"]] == NAMES
    rows = [NAMES.index(n) for n in KNOWN]
    fresh = [i for i in range(len(NAMES)) if i not in rows]
    for key, value in old["model"].items():  # backbone incl. BatchNorm running statistics
        if key.startswith("head."):
            torch.testing.assert_close(new["model"][key][rows], value, rtol=0, atol=0, msg=key)
        else:
            torch.testing.assert_close(new["model"][key], value, rtol=0, atol=0, msg=key)
    patches = torch.randn(5, 96, 64)
    with torch.no_grad():
        before = load_checkpoint(tmp_path / "old" / "last.pt")[0].scores(patches)
        after = load_checkpoint(tmp_path / "new" / "last.pt")[0].scores(patches)
    # The weights above are bit-identical; the scores agree to float rounding only, because
    # a wider output layer lets the BLAS block the matrix product differently (6e-8 seen).
    torch.testing.assert_close(after[:, rows], before, rtol=0, atol=1e-6)
    assert new["train_config"]["freeze_known"] and new["train_config"]["init_from"]

    # The new rows did learn: they moved between the first and the second epoch.
    first = _train(toy_manifest, tmp_path / "new1", NAMES, "--init-from",
                   str(tmp_path / "old" / "last.pt"), "--freeze-known", "--stop-epoch", "1")
    moved = (first["model"]["head.weight"][fresh] - new["model"]["head.weight"][fresh]).abs().max()
    assert moved > 1e-4, moved


def test_init_from_without_freeze_fine_tunes_everything(toy_manifest: Path, tmp_path: Path) -> None:
    old = _train(toy_manifest, tmp_path / "old", KNOWN)
    new = _train(toy_manifest, tmp_path / "ft", NAMES, "--init-from", str(tmp_path / "old" / "last.pt"))
    key = "stem.0.weight"
    assert not torch.equal(new["model"][key], old["model"][key])


def test_init_from_copies_rows_by_name_and_rejects_a_different_model(tmp_path: Path) -> None:
    features = FeatureConfig()
    src = SedNet(PRESETS["tiny"], 3, features)
    path = tmp_path / "src.pt"
    torch.save({"model": src.state_dict(), "model_config": PRESETS["tiny"].to_dict(),
                "features": features.to_dict(),
                "labels": [{"name": n, "mid": ""} for n in ("a", "b", "c")]}, path)
    dst = SedNet(PRESETS["tiny"], 3, features)
    known = init_from(dst, path, ["c", "new", "a"])
    assert known == [0, 2]
    torch.testing.assert_close(dst.head.weight[0], src.head.weight[2], rtol=0, atol=0)
    torch.testing.assert_close(dst.head.weight[2], src.head.weight[0], rtol=0, atol=0)
    torch.testing.assert_close(dst.stem[0].weight, src.stem[0].weight, rtol=0, atol=0)

    with pytest.raises(ValueError, match="model_config"):
        init_from(SedNet(PRESETS["small"], 3, features), path, ["a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        init_from(dst, tmp_path / "nope.pt", ["a"])
    torch.save({"model": src.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"checkpoint lacks \['model_config', 'labels', 'features'\]"):
        init_from(dst, tmp_path / "bare.pt", ["a"])
    with pytest.raises(ValueError, match="nothing would train"):
        HeadOnly(dst, [0, 1, 2])


def test_freeze_known_needs_init_from() -> None:
    with pytest.raises(ValueError, match="freeze_known=true without init_from"):
        load_config(None, {"freeze_known": True})


def test_retrain_trains_a_known_row_again_and_freezes_the_rest(toy_manifest: Path, tmp_path: Path) -> None:
    old = _train(toy_manifest, tmp_path / "old", KNOWN)
    new = _train(toy_manifest, tmp_path / "re", NAMES, "--init-from", str(tmp_path / "old" / "last.pt"),
                 "--freeze-known", "--retrain", KNOWN[0])
    kept, again = NAMES.index(KNOWN[1]), NAMES.index(KNOWN[0])
    for key, value in old["model"].items():
        if key.startswith("head."):
            torch.testing.assert_close(new["model"][key][kept], value[1], rtol=0, atol=0, msg=key)
            assert not torch.equal(new["model"][key][again], value[0]), key
        else:
            torch.testing.assert_close(new["model"][key], value, rtol=0, atol=0, msg=key)
    assert new["train_config"]["retrain"] == [KNOWN[0]]


def test_retrain_rejects_names_it_cannot_retrain() -> None:
    assert retrain_rows([0, 2], ["a", "new", "c"], ["c"]) == [0]
    with pytest.raises(ValueError, match=r"\['zzz'\] are not labels of this run"):
        retrain_rows([0, 2], ["a", "new", "c"], ["zzz"])
    with pytest.raises(ValueError, match=r"\['new'\] are new to this run"):
        retrain_rows([0, 2], ["a", "new", "c"], ["new"])
    with pytest.raises(ValueError, match="without freeze_known=true"):
        load_config(None, {"retrain": ["a"], "init_from": "x.pt"})


def test_init_from_takes_the_checkpoints_own_network_and_freezes_its_wide_head(
    toy_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --preset, sed-train --init-from fine-tunes the checkpoint's network as it is
    (a default model with the wide path, say), and --freeze-known keeps both heads' rows."""
    cfg = tmp_path / "wide.toml"
    cfg.write_text("labels = [" + ", ".join(f'"{n}"' for n in KNOWN) + ']\npreset = "tiny"\n[model]\nexpand = 16\n')
    common = ["--train", str(toy_manifest), "--cache", str(toy_manifest.parent / "cache"), "--epochs", "2",
              "--batch-size", "8", "--samples-per-epoch", "32", "--device", "cpu", "--no-mix"]
    assert main(["--config", str(cfg), "--out", str(tmp_path / "old"), *common]) == 0
    old = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    assert old["model_config"]["expand"] == 16
    assert old["model"]["head2.weight"].abs().sum() > 0  # the wide path trained
    labels = tmp_path / "new.toml"
    labels.write_text("labels = [" + ", ".join(f'"{n}"' for n in NAMES) + "]\n")
    assert main(["--config", str(labels), "--out", str(tmp_path / "new"), *common,
                 "--init-from", str(tmp_path / "old" / "last.pt"), "--freeze-known"]) == 0
    new = torch.load(tmp_path / "new" / "last.pt", weights_only=True)
    assert new["model_config"] == old["model_config"]
    rows = [NAMES.index(n) for n in KNOWN]
    for key in ("head.weight", "head2.weight", "head2.bias"):
        torch.testing.assert_close(new["model"][key][rows], old["model"][key], rtol=0, atol=0, msg=key)
    capsys.readouterr()
    # Another network named: a one-line error naming both.
    assert main(["--config", str(labels), "--out", str(tmp_path / "bad"), *common, "--preset", "tiny",
                 "--init-from", str(tmp_path / "old" / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert "its model_config is" in err and "'expand': 16" in err and "'expand': 0" in err
