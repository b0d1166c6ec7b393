"""Opening a model file with onnxruntime: the only place that imports it.

:func:`open_session` turns a missing or unloadable file into a :class:`ContractError`,
the one error for "this file is not a usable sed model", which
:mod:`detector.model.contract` raises too (and re-exports). It lives here so the
contract can read a file's metadata through :func:`open_session` without the two
modules importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEVICES", "ContractError", "open_session", "providers_for"]


class ContractError(ValueError):
    """The model file or its metadata is not a usable sed model."""


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
