"""training.export: ONNX parity, dynamic batch, contract metadata, sidecars, variants."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from detector.frontend.features import FeatureConfig, log_mel  # noqa: E402
from detector.model.contract import ContractError, ModelContract  # noqa: E402
from detector.model.labels import LabelError  # noqa: E402
from training.export import (  # noqa: E402
    DEFAULT_OFF_THRESHOLD,
    DEFAULT_ON_THRESHOLD,
    PARITY_TOLERANCE,
    event_labels_option,
    export_onnx,
    main,
    make_contract,
    onnx_scores,
    thresholds_from_report,
)
from training.model import PRESETS, ModelConfig, SedNet, load_checkpoint  # noqa: E402
from training.toy import TOY_LABELS, make_toy_scene  # noqa: E402

FEATURES = FeatureConfig()
LABELS = [{"name": "Dog", "mid": "/m/0bt9lr"}, {"name": "Cat", "mid": "/m/01yrx"},
          {"name": "Speech", "mid": "/m/09x0r"}]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _trained_like(pooling: str, expand: int = 0) -> SedNet:
    """A tiny net whose BatchNorm statistics are not the identity (as after training)."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**PRESETS["tiny"].to_dict(), "pooling": pooling, "expand": expand})
    model = SedNet(cfg, 3, FEATURES)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, FEATURES.patch_frames, FEATURES.n_mels) * 2 - 3)
        if model.head2 is not None:
            model.head2.weight.normal_(0.0, 0.3)  # as after training (it starts at zero)
    return model.eval()


@pytest.mark.parametrize(("pooling", "expand"), [("max", 0), ("attention", 0), ("max", 24), ("mean", 24)])
def test_parity_with_dynamic_batch(tmp_path: Path, pooling: str, expand: int) -> None:
    model = _trained_like(pooling, expand)
    path = tmp_path / "m.onnx"
    check = export_onnx(model, make_contract(LABELS, FEATURES), path)
    assert check.max_abs_diff <= PARITY_TOLERANCE
    rng = np.random.default_rng(3)
    for batch in (1, 7):
        x = rng.normal(-3.0, 2.0, (batch, FEATURES.patch_frames, FEATURES.n_mels)).astype(np.float32)
        got = onnx_scores(path, x)
        with torch.no_grad():
            ref = model.scores(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 3)
        assert np.max(np.abs(got - ref)) <= PARITY_TOLERANCE
        assert np.all((got >= 0) & (got <= 1))


def test_graph_is_simple_and_batchnorm_folded(tmp_path: Path) -> None:
    model = _trained_like("max")
    path = tmp_path / "m.onnx"
    export_onnx(model, make_contract(LABELS, FEATURES), path)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    # Left: each block's pre-activation BN and the final BN. The per-mel input norm is
    # one Mul and one Add on (B, T, F) as it comes: no Transpose before the stem.
    assert ops.count("BatchNormalization") == len(model.stages) + 1
    stem = next(i for i, n in enumerate(proto.graph.node) if n.op_type == "Conv")
    before = [n.op_type for n in proto.graph.node[:stem] if n.op_type not in ("Constant", "Identity")]
    assert before == ["Mul", "Add", "Unsqueeze"]
    assert ops.count("Conv") == 1 + 2 * len(model.stages) + 4  # stem, 2/block, 4 shortcuts
    producers = {out: n.op_type for n in proto.graph.node for out in n.output}
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            assert producers.get(node.input[0]) != "Conv", "a BN after a conv was not folded"
    assert proto.opset_import[0].version >= 17
    inp = proto.graph.input[0]
    assert inp.name == "patches"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].name == "scores"


def test_contract_metadata_round_trip_and_sidecars(tmp_path: Path) -> None:
    model = _trained_like("max")
    contract = make_contract(
        LABELS, FEATURES, on=[0.6, 0.5, 0.4], off=[0.3, 0.25, 0.2], model_version="t-1",
        extra={"training": {"epochs": 3}, "data": {"Dog": 4}},
    )
    path = tmp_path / "out" / "m.onnx"
    export_onnx(model, contract, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    read = ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map, str(path))
    assert read == contract
    assert read.names == ["Dog", "Cat", "Speech"]
    assert read.on_thresholds == (0.6, 0.5, 0.4)
    assert read.extra["training"] == {"epochs": 3}
    assert read.extra["data"] == {"Dog": 4}
    assert isinstance(read.extra["git_revision"], str) and read.extra["git_revision"]
    with (path.parent / "labels.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["index", "mid", "display_name"]
    assert rows[1:] == [["0", "/m/0bt9lr", "Dog"], ["1", "/m/01yrx", "Cat"], ["2", "/m/09x0r", "Speech"]]
    th = json.loads((path.parent / "thresholds.json").read_text())
    assert th == {"labels": ["Dog", "Cat", "Speech"], "on": [0.6, 0.5, 0.4], "off": [0.3, 0.25, 0.2]}


def test_default_thresholds_and_report(tmp_path: Path) -> None:
    c = make_contract(LABELS, FEATURES)
    assert c.on_thresholds == (DEFAULT_ON_THRESHOLD,) * 3
    assert c.off_thresholds == (DEFAULT_OFF_THRESHOLD,) * 3
    names = [d["name"] for d in LABELS]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"thresholds": {"on": [0.7, 0.6, 0.5], "off": [0.3, 0.3, 0.3]}}))
    assert thresholds_from_report(report, names) == ([0.7, 0.6, 0.5], [0.3, 0.3, 0.3])
    report.write_text(json.dumps({"thresholds": {"Cat": {"on": 0.8, "off": 0.4}}}))
    on, off = thresholds_from_report(report, names)
    assert on == [DEFAULT_ON_THRESHOLD, 0.8, DEFAULT_ON_THRESHOLD]
    assert off == [DEFAULT_OFF_THRESHOLD, 0.4, DEFAULT_OFF_THRESHOLD]
    report.write_text(json.dumps({"labels": ["Cat", "Dog", "Speech"],
                                  "thresholds": {"on": [0.7, 0.6, 0.5], "off": [0.3] * 3}}))
    with pytest.raises(ValueError, match="differ from the model's"):
        thresholds_from_report(report, names)
    report.write_text(json.dumps({"thresholds": {"on": [0.5], "off": [0.3]}}))
    with pytest.raises(ValueError, match="1 on- and 1 off-thresholds for 3 labels"):
        thresholds_from_report(report, names)


def test_rejects_mismatched_contract(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contract has 2 labels; the model outputs 3"):
        export_onnx(_trained_like("max"), make_contract(LABELS[:2], FEATURES), tmp_path / "m.onnx")


def test_toy_model_scores_toy_scene(toy_model: Path) -> None:
    """High scores while a toy sound fills the patch, low on background-only patches."""
    names = list(TOY_LABELS)
    events = [("Chirp tone", 1.0, 2.0), ("Sine wave", 4.5, 2.0), ("White noise", 8.0, 1.5),
              ("Beep, bleep", 10.5, 2.5)]
    wave = make_toy_scene(events, 14.0, seed=11)
    mel = log_mel(wave, FEATURES)
    hop = FEATURES.patch_frames // 2
    starts = list(range(0, mel.shape[0] - FEATURES.patch_frames + 1, hop))
    scores = onnx_scores(toy_model, np.stack([mel[s : s + FEATURES.patch_frames] for s in starts]))
    patch_s = FEATURES.patch_seconds
    for (label, t0, dur), k in zip(events, [names.index(e[0]) for e in events], strict=True):
        inside = [i for i, s in enumerate(starts)
                  if s * FEATURES.frame_seconds >= t0 and s * FEATURES.frame_seconds + patch_s <= t0 + dur]
        assert inside, label
        assert scores[inside, k].min() > 0.8, (label, scores[inside, k])
    quiet = [i for i, s in enumerate(starts)
             if all(s * FEATURES.frame_seconds + patch_s <= t0 or s * FEATURES.frame_seconds >= t0 + d
                    for _, t0, d in events)]
    assert quiet
    assert scores[quiet].max() < 0.2, scores[quiet]
    silence = np.full((1, FEATURES.patch_frames, FEATURES.n_mels), np.log(FEATURES.log_offset))
    assert onnx_scores(toy_model, silence.astype(np.float32)).max() < 0.2


def test_cli_with_report_and_variants(toy_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = toy_model.parent / "toy.pt"
    names = list(TOY_LABELS)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"thresholds": {names[0]: {"on": 0.65, "off": 0.3}}}))
    out = tmp_path / "export"
    assert main([str(ckpt), "--out", str(out), "--report", str(report), "--fp16", "--int8"]) == 0
    printed = capsys.readouterr().out
    assert "fp16:" in printed and "int8:" in printed
    contract = ModelContract.from_json(
        onnx.load(str(out / "model.onnx")).metadata_props[0].value, "cli export"
    )
    assert contract.names == names
    assert contract.on_thresholds[0] == 0.65
    assert contract.extra["training"]["model"]["widths"] == [8, 16, 24, 32]
    slim, slim_ckpt = load_checkpoint(out / "model.pt")  # the weights, for --init-from
    assert "optimizer" not in slim_ckpt and [d["name"] for d in slim_ckpt["labels"]] == names
    x = np.random.default_rng(0).normal(-3, 2, (4, FEATURES.patch_frames, FEATURES.n_mels))
    ref = onnx_scores(out / "model.onnx", x.astype(np.float32))
    for kind, tol in (("fp16", 5e-3), ("int8", 0.1)):
        got = onnx_scores(out / f"model.{kind}.onnx", x.astype(np.float32))
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) < tol, kind
    with torch.no_grad():
        torch_scores = slim.scores(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(torch_scores, ref, atol=1e-5)


def test_event_labels_default_file_and_unknown(tmp_path: Path) -> None:
    names = [d["name"] for d in LABELS]
    assert make_contract(LABELS, FEATURES).event_labels is None
    # 'default': the home/office set's labels that this model has (all three here)
    assert event_labels_option("default", names) == ("Speech", "Dog", "Cat")
    f = tmp_path / "events.txt"
    f.write_text("# mine\ndog\nSpeech  # people\n")
    assert event_labels_option(str(f), names) == ("Dog", "Speech")
    f.write_text("Dgo\n")
    with pytest.raises(LabelError, match="did you mean 'Dog'"):
        event_labels_option(str(f), names)
    with pytest.raises(ValueError, match="none of the"):
        event_labels_option("default", ["Sine wave"])
    with pytest.raises(ContractError, match="'Cta' \\(did you mean 'Cat'\\?\\)"):
        make_contract(LABELS, FEATURES, event_labels=["Cta"])


def test_cli_writes_event_labels(toy_model: Path, tmp_path: Path) -> None:
    f = tmp_path / "events.txt"
    f.write_text("Beep, bleep\nSine wave\n")
    out = tmp_path / "export"
    assert main([str(toy_model.parent / "toy.pt"), "--out", str(out), "--event-labels", str(f)]) == 0
    contract = ModelContract.read(out / "model.onnx")
    assert contract.event_labels == ("Beep, bleep", "Sine wave")
