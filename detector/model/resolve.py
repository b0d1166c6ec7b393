"""Where models come from: an explicit path, ``$SED_MODEL``, or the shipped default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "resolve_model"]

# The default model ships in the repository's exports/ (see exports/default/MODEL_CARD.md).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "exports" / "default" / "model.onnx"


def resolve_model(model: str | Path | None = None) -> Path:
    """The model file to load: ``model``, else ``$SED_MODEL``, else :data:`DEFAULT_MODEL`."""
    if model is not None:
        return Path(model)
    env = os.environ.get("SED_MODEL")
    if env:
        return Path(env)
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"no model given and the default model {DEFAULT_MODEL} is missing; "
            "pass --model PATH (an ONNX file from sed-export) or set SED_MODEL"
        )
    return DEFAULT_MODEL
