"""training.soup: the uniform average of checkpoints of one network."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig  # noqa: E402
from training.model import PRESETS, SedNet, load_checkpoint  # noqa: E402
from training.soup import main, soup  # noqa: E402


def _save(path: Path, seed: int, preset: str = "tiny", labels: tuple[str, ...] = ("a", "b", "c")) -> SedNet:
    torch.manual_seed(seed)
    net = SedNet(PRESETS[preset], len(labels), FeatureConfig())
    with torch.no_grad():  # BatchNorm statistics that differ between the two, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    torch.save({"model": net.state_dict(), "model_config": PRESETS[preset].to_dict(),
                "features": FeatureConfig().to_dict(), "labels": [{"name": n, "mid": ""} for n in labels],
                "optimizer": {"state": {}}, "epoch": seed}, path)
    return net


def test_soup_averages_every_weight_and_statistic_and_keeps_the_first_metadata(tmp_path: Path) -> None:
    a, b = _save(tmp_path / "a.pt", 1), _save(tmp_path / "b.pt", 2)
    assert main([str(tmp_path / "s" / "last.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    net, ck = load_checkpoint(tmp_path / "s" / "last.pt")
    sa, sb, ss = a.state_dict(), b.state_dict(), net.state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats) and any(k.endswith("head.weight") for k in floats)
    for k in floats:
        torch.testing.assert_close(ss[k], (sa[k] + sb[k]) / 2)
    assert not torch.equal(ss["head.weight"], sa["head.weight"])
    assert ck["epoch"] == 1 and "optimizer" not in ck
    assert ck["soup_of"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]


def test_soup_refuses_checkpoints_of_another_network_or_label_list(tmp_path: Path) -> None:
    _save(tmp_path / "a.pt", 1)
    _save(tmp_path / "labels.pt", 2, labels=("a", "b", "x"))
    _save(tmp_path / "small.pt", 3, preset="small")
    with pytest.raises(ValueError, match="labels differs"):
        soup([tmp_path / "a.pt", tmp_path / "labels.pt"])
    with pytest.raises(ValueError, match="model_config differs"):
        soup([tmp_path / "a.pt", tmp_path / "small.pt"])
    with pytest.raises(ValueError, match="at least two"):
        soup([tmp_path / "a.pt"])
    assert main([str(tmp_path / "out.pt"), str(tmp_path / "a.pt"), str(tmp_path / "nope.pt")]) == 2
    assert not (tmp_path / "out.pt").exists()
