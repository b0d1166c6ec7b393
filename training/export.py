"""Export a trained :class:`training.model.SedNet` to ONNX with its contract (``sed-export``).

The ONNX file has input ``patches`` ``(batch, patch_frames, n_mels)`` float32 log-mel,
output ``scores`` ``(batch, n_labels)`` sigmoid probabilities, a dynamic batch axis,
BatchNorm folded into the convolution before it, and the metadata key
``sed.contract`` holding :class:`detector.model.contract.ModelContract` JSON (labels, mids,
front end, per-label on/off thresholds, training config, data summary, git
revision). Two sidecars are written beside it: ``labels.csv``
(``index,mid,display_name``) and ``thresholds.json``. The command line also writes
``model.pt``, the weights as a slim checkpoint (:func:`write_weights`), so an exported
model can be fine-tuned or given new labels (``sed-train --init-from``).

Every export is checked: onnxruntime and torch must agree within
:data:`PARITY_TOLERANCE` on random and (when given) real patches, or it raises.
Optional fp16 / int8 variants are written next to it with their accuracy cost
(max abs difference and, given validation patches, the mAP change) logged.

Usage::

    sed-export runs/small/best.pt --out exports/small [--report eval/report.json]
        [--val-manifest data/val.csv --cache cache/] [--fp16] [--int8]
        [--event-labels default|FILE]

``--event-labels`` writes the contract's ``event_labels``: the labels that raise events
unless the user picks others (``sed-listen --labels``). ``default`` is the home/office
set in ``detector/data/event_labels_home.txt`` (written for YAMNet's 521 classes; the
labels of it that the model has); a FILE names one label a line. Without it every label
raises events.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import logging
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detector.frontend.features import FeatureConfig
from detector.model.contract import CONTRACT_KEY, Label, ModelContract
from detector.model.labels import HOME_EVENT_LABELS, parse_labels, read_label_file
from training.model import PreActBlock, SedNet, load_checkpoint

__all__ = [
    "DEFAULT_OFF_THRESHOLD",
    "DEFAULT_ON_THRESHOLD",
    "INPUT_NAME",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "PARITY_TOLERANCE",
    "ExportCheck",
    "ScoresModel",
    "event_labels_option",
    "export_onnx",
    "fold_batchnorm",
    "git_revision",
    "main",
    "make_contract",
    "onnx_scores",
    "quantize_variant",
    "thresholds_from_report",
    "write_weights",
]

log = logging.getLogger(__name__)

#: Per-label hysteresis thresholds used when no sed-eval report gives tuned ones.
DEFAULT_ON_THRESHOLD = 0.5
DEFAULT_OFF_THRESHOLD = 0.35
#: Largest accepted |onnxruntime - torch| score difference of an fp32 export.
PARITY_TOLERANCE = 1e-4
ONNX_OPSET = 17
INPUT_NAME = "patches"
OUTPUT_NAME = "scores"
_RANDOM_CHECK_PATCHES = 8


class ScoresModel(nn.Module):
    """Wraps a :class:`SedNet` so the graph outputs sigmoid probabilities."""

    def __init__(self, net: SedNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(patches))


def fold_batchnorm(model: SedNet) -> SedNet:
    """An eval-mode copy with each BatchNorm that directly follows a conv folded into it.

    Folds the stem's BN and every block's ``bn2`` (which follows ``conv1``). The
    pre-activation BNs on the residual stream follow an addition, not a conv, and stay
    (onnxruntime runs them as one per-channel multiply-add).
    """
    fused = copy.deepcopy(model).eval()
    conv, bn = fused.stem[0], fused.stem[1]
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        fused.stem[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        fused.stem[1] = nn.Identity()
    for block in fused.stages:
        if isinstance(block, PreActBlock) and isinstance(block.bn2, nn.BatchNorm2d):
            block.conv1 = torch.nn.utils.fusion.fuse_conv_bn_eval(block.conv1, block.bn2)
            block.bn2 = nn.Identity()
    return fused


def git_revision(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the source tree, or ``"unknown"`` outside a repository."""
    where = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
            timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else "unknown"


def thresholds_from_report(path: str | Path, names: Sequence[str]) -> tuple[list[float], list[float]]:
    """Per-label (on, off) thresholds from a sed-eval ``report.json``.

    Accepts ``"thresholds": {"on": [...], "off": [...]}`` in label order, or
    ``"thresholds": {name: {"on": x, "off": y}, ...}``; labels missing from a mapping
    get the defaults.
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    th = doc.get("thresholds") if isinstance(doc, dict) else None
    if not isinstance(th, dict):
        raise ValueError(f"{path}: no 'thresholds' object (keys: {sorted(doc) if isinstance(doc, dict) else type(doc).__name__})")
    if isinstance(th.get("on"), list) and isinstance(th.get("off"), list):
        report_labels = doc.get("labels")
        if report_labels is not None and list(report_labels) != list(names):
            raise ValueError(
                f"{path}: report labels {report_labels} differ from the model's {list(names)}"
            )
        on, off = [float(x) for x in th["on"]], [float(x) for x in th["off"]]
        if len(on) != len(names) or len(off) != len(names):
            raise ValueError(
                f"{path}: {len(on)} on- and {len(off)} off-thresholds for {len(names)} labels"
            )
        return on, off
    on, off = [], []
    for name in names:
        entry = th.get(name, {})
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: thresholds[{name!r}] is {entry!r}; expected {{on, off}}")
        on.append(float(entry.get("on", DEFAULT_ON_THRESHOLD)))
        off.append(float(entry.get("off", min(DEFAULT_OFF_THRESHOLD, on[-1]))))
    return on, off


def make_contract(
    labels: Sequence[dict[str, str]],
    features: FeatureConfig,
    *,
    on: Sequence[float] | None = None,
    off: Sequence[float] | None = None,
    model_version: str | None = None,
    extra: dict[str, Any] | None = None,
    event_labels: Sequence[str] | None = None,
    event_timing: dict[str, dict[str, float]] | None = None,
) -> ModelContract:
    """A :class:`ModelContract` from checkpoint-style labels (``[{"name", "mid"}]``).

    ``event_labels``: exact label names that raise events by default (None: every label).
    ``event_timing``: per-label event timing (``training.tune_events``).
    """
    n = len(labels)
    on_t = tuple(float(x) for x in on) if on is not None else (DEFAULT_ON_THRESHOLD,) * n
    off_t = tuple(float(x) for x in off) if off is not None else (DEFAULT_OFF_THRESHOLD,) * n
    version = model_version or f"sed-{datetime.date.today().isoformat()}"
    doc_extra = {"git_revision": git_revision()}
    doc_extra.update(extra or {})
    contract = ModelContract(
        labels=tuple(Label(str(d["name"]), str(d["mid"])) for d in labels),
        features=features,
        on_thresholds=on_t,
        off_thresholds=off_t,
        model_version=version,
        event_labels=tuple(event_labels) if event_labels is not None else None,
        event_timing=dict(event_timing or {}),
        extra=doc_extra,
    )
    # Read back as the detector will: unknown event_labels fail here, not at sed-listen.
    return ModelContract.from_json(contract.to_json(), "sed-export")


def event_labels_option(value: str, names: Sequence[str]) -> tuple[str, ...]:
    """``--event-labels default|FILE`` -> label names of this model.

    ``default``: the labels of :data:`detector.model.labels.HOME_EVENT_LABELS` the model
    has (the file is written for YAMNet's 521 classes). A FILE: one name a line, each
    a label of the model (read as ``sed-listen --labels`` reads names).
    """
    if value == "default":
        home = read_label_file(HOME_EVENT_LABELS)
        have = set(names)
        chosen = tuple(n for n in home if n in have)
        if not chosen:
            raise ValueError(
                f"--event-labels default: none of the {len(home)} labels in {HOME_EVENT_LABELS} "
                "is a label of this model"
            )
        log.info("event labels: %d of the %d default home/office labels (%d not in this model)",
                 len(chosen), len(home), len(home) - len(chosen))
        return chosen
    return parse_labels(list(read_label_file(value)), names, f"--event-labels {value}")


def onnx_scores(path: str | Path, patches: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run an exported model on ``(B, frames, mels)`` float32 patches -> ``(B, L)``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(patches, dtype=np.float32)})
    return np.asarray(out[0], dtype=np.float32)


@dataclass(frozen=True)
class ExportCheck:
    """Result of comparing onnxruntime with torch on check patches."""

    max_abs_diff: float
    n_patches: int


def _write_sidecars(contract: ModelContract, out_dir: Path) -> None:
    with (out_dir / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "mid", "display_name"])
        for i, lab in enumerate(contract.labels):
            w.writerow([i, lab.mid, lab.name])
    (out_dir / "thresholds.json").write_text(
        json.dumps(
            {
                "labels": contract.names,
                "on": list(contract.on_thresholds),
                "off": list(contract.off_thresholds),
            },
            indent=1,
        )
    )


#: Checkpoint keys kept in the exported ``.pt`` (no optimizer state, no history).
WEIGHT_KEYS = ("model", "model_config", "labels", "features", "train_config", "augment_config",
               "data_summary", "git_revision", "epoch")


def write_weights(ckpt: dict[str, Any], path: str | Path) -> Path:
    """The PyTorch weights beside the ONNX: a slim checkpoint that ``load_checkpoint`` and
    ``sed-train --init-from`` read (fine-tune the model, or add labels to it)."""
    path = Path(path)
    torch.save({k: ckpt[k] for k in WEIGHT_KEYS if k in ckpt}, path)
    return path


def export_onnx(
    model: SedNet,
    contract: ModelContract,
    path: str | Path,
    *,
    check_patches: np.ndarray | None = None,
    seed: int = 0,
) -> ExportCheck:
    """Write ``model`` to ``path`` as ONNX with ``contract`` in its metadata, plus sidecars.

    ``check_patches`` ``(N, frames, mels)``: real log-mel patches added to the random
    ones for the parity check. Raises ``RuntimeError`` when onnxruntime and torch
    differ by more than :data:`PARITY_TOLERANCE`.
    """
    import onnx

    f = contract.features
    if f != model.features:
        raise ValueError(f"contract features {f} differ from the model's {model.features}")
    if len(contract.labels) != model.n_labels:
        raise ValueError(
            f"contract has {len(contract.labels)} labels; the model outputs {model.n_labels}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    wrapped = ScoresModel(fold_batchnorm(model)).eval()
    example = torch.zeros(2, f.patch_frames, f.n_mels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            wrapped, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, contract.to_json()
    proto.doc_string = f"sed tagger {contract.model_version}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    _write_sidecars(contract, path.parent)

    rng = np.random.default_rng(seed)
    # Random patches spread over the log-mel range: log(offset) .. ~log(100).
    lo = np.log(f.log_offset)
    patches = rng.uniform(lo, -lo / 2, size=(_RANDOM_CHECK_PATCHES, f.patch_frames, f.n_mels))
    if check_patches is not None and len(check_patches):
        patches = np.concatenate([patches, np.asarray(check_patches, dtype=np.float64)])
    patches32 = patches.astype(np.float32)
    with torch.no_grad():
        ref = model.scores(torch.from_numpy(patches32)).numpy()
    got = onnx_scores(path, patches32)
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"{path}: onnxruntime and torch differ by {diff:.3g} on {len(patches32)} patches; "
            f"accepted <= {PARITY_TOLERANCE}"
        )
    log.info("exported %s (%d labels); onnxruntime vs torch max |diff| %.2g on %d patches",
             path, model.n_labels, diff, len(patches32))
    return ExportCheck(diff, len(patches32))


class _PatchReader:
    """onnxruntime calibration reader over ``(N, frames, mels)`` patches, batch 1."""

    def __init__(self, patches: np.ndarray) -> None:
        self.patches = patches.astype(np.float32)
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.patches):
            return None
        self.i += 1
        return {INPUT_NAME: self.patches[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def quantize_variant(
    src: str | Path, kind: str, calibration: np.ndarray | None = None
) -> Path:
    """Write ``<stem>.fp16.onnx`` or ``<stem>.int8.onnx`` beside ``src``; returns its path.

    fp16 keeps float32 inputs and outputs. int8 is static QDQ quantization calibrated
    on ``calibration`` patches when given, else dynamic (weights only).
    """
    import onnx

    src = Path(src)
    dst = src.with_name(f"{src.stem}.{kind}.onnx")
    if kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = onnx.load(str(src))
        half = convert_float_to_float16(proto, keep_io_types=True)
        onnx.save(half, str(dst))
    elif kind == "int8":
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        if calibration is not None and len(calibration):

            class Reader(_PatchReader, CalibrationDataReader):
                pass

            quantize_static(
                str(src), str(dst), Reader(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=True,
            )
        else:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        # Quantization tools drop nothing we rely on, but make sure the contract stays.
        proto, orig = onnx.load(str(dst)), onnx.load(str(src))
        if not any(p.key == CONTRACT_KEY for p in proto.metadata_props):
            proto.metadata_props.extend(orig.metadata_props)
            onnx.save(proto, str(dst))
    else:
        raise ValueError(f"quantization kind {kind!r}; accepted: 'fp16', 'int8'")
    return dst


def _val_patches(
    manifest: Path, cache: Path, labels: list[str], features: FeatureConfig, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel patches ``(N, frames, mels)`` and targets ``(N, L)``: every patch of the
    manifest's recordings at half-patch hop, thinned evenly to at most ``limit``."""
    from training.data import PatchDataset, WaveformStore, read_manifest
    from training.frontend import LogMel

    clips = read_manifest(manifest)
    store = WaveformStore(cache, features)
    store.build(clips)
    ds = PatchDataset(clips, store, labels, features, augment=None, seed=0, mode="all")
    keep = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), limit)).round().astype(int))
    waves, targets = zip(*(ds[int(i)] for i in keep), strict=True)
    with torch.no_grad():
        mel = LogMel(features)(torch.stack(list(waves)))
    return mel.numpy().astype(np.float32), torch.stack(list(targets)).numpy()


def main(argv: list[str] | None = None) -> int:
    """sed-export: checkpoint -> ONNX with contract, sidecars, parity check, optional fp16/int8."""
    p = argparse.ArgumentParser(prog="sed-export", description=main.__doc__)
    p.add_argument("checkpoint", type=Path, help="sed-train checkpoint (.pt)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--name", default="model", help="file stem of the .onnx (default: model)")
    p.add_argument("--report", type=Path, help="sed-eval or training.tune_events report.json: tuned "
                   "thresholds (and event_timing, per-label hold from tune_events)")
    p.add_argument("--model-version", help="version string stored in the contract")
    p.add_argument("--val-manifest", type=Path, help="manifest of real clips for checks")
    p.add_argument("--cache", type=Path, default=Path("cache"), help="waveform cache directory")
    p.add_argument("--val-limit", type=int, default=512, help="at most this many val patches")
    p.add_argument("--fp16", action="store_true", help="also write an fp16 variant")
    p.add_argument("--int8", action="store_true", help="also write an int8 variant")
    p.add_argument("--event-labels", metavar="default|FILE",
                   help="labels that raise events by default: 'default' (the home/office set, "
                   "detector/data/event_labels_home.txt) or a file of names, one a line "
                   "(default: every label)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    model, ckpt = load_checkpoint(args.checkpoint)
    labels = list(ckpt["labels"])
    names = [str(d["name"]) for d in labels]
    on = off = None
    timing: dict[str, dict[str, float]] = {}
    if args.report:
        on, off = thresholds_from_report(args.report, names)
        timing = json.loads(args.report.read_text()).get("event_timing") or {}
    extra = {
        "training": {"model": ckpt.get("model_config"), "train": ckpt.get("train_config"),
                     "epoch": ckpt.get("epoch"), "history": ckpt.get("history", [])[-1:]},
        "data": ckpt.get("data_summary", {}),
        "checkpoint_git_revision": ckpt.get("git_revision", "unknown"),
    }
    events = event_labels_option(args.event_labels, names) if args.event_labels else None
    contract = make_contract(labels, model.features, on=on, off=off,
                             model_version=args.model_version or args.checkpoint.stem, extra=extra,
                             event_labels=events, event_timing=timing)
    val_x = val_y = None
    if args.val_manifest:
        val_x, val_y = _val_patches(args.val_manifest, args.cache, names, model.features,
                                    args.val_limit)
    path = args.out / f"{args.name}.onnx"
    check = export_onnx(model, contract, path, check_patches=val_x)
    weights = write_weights(ckpt, args.out / f"{args.name}.pt")
    print(f"wrote {path} ({len(names)} labels), parity max |diff| {check.max_abs_diff:.2g} "
          f"on {check.n_patches} patches; weights for sed-train --init-from: {weights}")
    for kind in [k for k, on_ in (("fp16", args.fp16), ("int8", args.int8)) if on_]:
        dst = quantize_variant(path, kind, calibration=val_x)
        ref_x = val_x if val_x is not None else np.random.default_rng(0).uniform(
            np.log(model.features.log_offset), 0.0,
            size=(_RANDOM_CHECK_PATCHES, model.features.patch_frames, model.features.n_mels),
        ).astype(np.float32)
        ref, got = onnx_scores(path, ref_x), onnx_scores(dst, ref_x)
        line = f"{kind}: {dst}  max |diff| vs fp32 {float(np.max(np.abs(got - ref))):.3g}"
        if val_y is not None:
            from training.metrics import average_precision, mean_excluding

            m32 = mean_excluding(average_precision(ref, val_y))[0]
            mq = mean_excluding(average_precision(got, val_y))[0]
            line += f"  mAP {m32:.4f} -> {mq:.4f} (delta {mq - m32:+.4f})"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
