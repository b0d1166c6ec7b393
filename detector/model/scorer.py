"""Model execution: batched onnxruntime inference over log-mel patches.

Only this module imports onnxruntime. Decisions (thresholds, events) live in
``detector.decide.smoother``; the scorer turns ``(B, patch_frames, n_mels)`` patches into
``(B, n_labels)`` sigmoid scores and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.contract import ContractError, ModelContract

__all__ = ["DEVICES", "OnnxScorer", "open_session", "providers_for"]

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "sed needs onnxruntime to run models: pip install onnxruntime "
            "(or onnxruntime-gpu for --device cuda)"
        ) from e
    return onnxruntime


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` (``cpu``, ``cuda`` or ``auto``)."""
    ort = _ort()
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"--device cuda: onnxruntime has no CUDA provider here (available: {available}); "
                "install onnxruntime-gpu on a machine with an NVIDIA GPU, or use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    raise ValueError(f"device {device!r}; accepted: {list(DEVICES)}")


def open_session(path: str | Path, device: str = "cpu", threads: int = 0) -> Any:
    """An onnxruntime InferenceSession, with model-file errors made readable."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise ContractError(f"model {path}: {what}; expected an ONNX file (sed-export writes one)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Worker threads that spin between calls cost ~5 % of a core on an idle stream and
    # steal the core the feature loop needs; measured no throughput loss at batch 1 or 64.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers_for(device))
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        if isinstance(e, RuntimeError) and "CUDA" in str(e):
            raise
        raise ContractError(
            f"model {path}: onnxruntime cannot load it ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); expected an ONNX model exported by sed-export"
        ) from e


class OnnxScorer:
    """``score(patches (B, patch_frames, n_mels) float32) -> (B, n_labels) float32``.

    Batches larger than ``max_batch`` are split; each row's scores are independent
    of what else is in the batch.
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", threads: int = 0, max_batch: int = 256
    ) -> None:
        self.path = Path(path)
        self.session = open_session(path, device, threads)
        self.contract = ModelContract.from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(path)
        )
        self.max_batch = max_batch
        self.device = device
        self.providers = list(self.session.get_providers())
        cfg = self.contract.features
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        name = self.contract.input_name
        if name not in inputs:
            raise ContractError(f"model {path}: no input named {name!r} (inputs: {sorted(inputs)})")
        if self.contract.output_name not in outputs:
            raise ContractError(
                f"model {path}: no output named {self.contract.output_name!r} "
                f"(outputs: {sorted(outputs)})"
            )
        shape = list(inputs[name].shape)
        want = [cfg.patch_frames, cfg.n_mels]
        if len(shape) != 3 or shape[1:] != want:
            raise ContractError(
                f"model {path}: input {name!r} has shape {shape}; the contract's features need "
                f"[batch, {want[0]}, {want[1]}]"
            )
        n_out = outputs[self.contract.output_name].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.contract.labels):
            raise ContractError(
                f"model {path}: {n_out} outputs but {len(self.contract.labels)} labels in metadata"
            )
        log.info(
            "model %s (%s, %d labels) on %s",
            self.path.name, self.contract.model_version, len(self.contract.labels), self.providers[0],
        )

    def score(self, patches: np.ndarray) -> np.ndarray:
        cfg = self.contract.features
        if patches.ndim != 3 or patches.shape[1:] != (cfg.patch_frames, cfg.n_mels):
            raise ValueError(
                f"patches of shape {patches.shape}; expected (B, {cfg.patch_frames}, {cfg.n_mels})"
            )
        x = np.ascontiguousarray(patches, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, len(self.contract.labels)), dtype=np.float32)
        outs = [
            self.session.run([self.contract.output_name], {self.contract.input_name: x[i : i + self.max_batch]})[0]
            for i in range(0, x.shape[0], self.max_batch)
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)
