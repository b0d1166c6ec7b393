"""The model contract: what an exported ONNX model says about itself.

An export stores one JSON document under the ONNX metadata key ``sed.contract``
(``training.export`` writes it; this module reads it with onnxruntime alone, so the
runtime needs neither torch nor the ``onnx`` package)::

    {
      "contract_version": 1,
      "model_version": "default-2026-11-22",
      "labels": [{"name": "Dog", "mid": "/m/0bt9lr"}, ...],
      "features": {FeatureConfig fields},
      "thresholds": {"on": [float per label], "off": [float per label]},
      "input": {"name": "patches", "shape": ["batch", 96, 64]},
      "output": {"name": "scores", "activation": "sigmoid"},
      "pooling": "max",                # how clip scores are pooled over patches
      "event_labels": ["Dog", ...],    # optional: the labels that raise events by default
                                       # (absent: every label; sed-listen --labels overrides)
      "event_timing": {"Bird": {"hold_s": 3.0}, ...},   # optional: per-label event timing
                                       # (training.tune_events); what the user's [smoother]
                                       # config sets overrides it (detector.stream.with_model_timing)
      "training": {...}, "data": {...}, "git_revision": "..."   # informational
    }

The detector never repeats any of these values as a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.frontend.features import FeatureConfig
from detector.model.labels import suggest
from detector.model.session import ContractError, open_session

__all__ = [
    "CONTRACT_KEY",
    "CONTRACT_VERSION",
    "ContractError",
    "Label",
    "ModelContract",
]

CONTRACT_KEY = "sed.contract"
CONTRACT_VERSION = 1
POOLINGS = ("max", "mean", "attention")


@dataclass(frozen=True)
class Label:
    name: str
    mid: str


def _event_labels(
    value: Any, labels: tuple[Label, ...], source: str
) -> tuple[str, ...] | None:
    """The contract's ``event_labels``: exact label names (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContractError(f"{source}: event_labels must be a list of label names; got {value!r}")
    names = [lab.name for lab in labels]
    known = set(names)
    bad = [v for v in value if v not in known]
    if bad:
        hints = {b: suggest(b, names, 1) for b in bad}
        raise ContractError(
            f"{source}: event_labels names {len(bad)} label(s) the model does not have: "
            + ", ".join(f"{b!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for b, h in hints.items())
        )
    return tuple(dict.fromkeys(value))


TIMING_FIELDS = ("hold_s", "debounce_s", "min_duration_s")
"""What a model may say about its labels' event timing (seconds; see LabelPolicy)."""


def _event_timing(value: Any, labels: tuple[Label, ...], source: str) -> dict[str, dict[str, float]]:
    """The contract's ``event_timing``: ``{label: {field: seconds}}`` ({} when absent)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContractError(f"{source}: event_timing must map label names to timing; got {value!r}")
    known = {lab.name for lab in labels}
    out: dict[str, dict[str, float]] = {}
    for name, fields in value.items():
        if name not in known:
            raise ContractError(f"{source}: event_timing names {name!r}, not a label of the model")
        if not isinstance(fields, dict) or not fields:
            raise ContractError(f"{source}: event_timing[{name!r}] must be a non-empty object; got {fields!r}")
        bad = sorted(set(fields) - set(TIMING_FIELDS))
        if bad:
            raise ContractError(f"{source}: event_timing[{name!r}] has {bad}; accepted: {list(TIMING_FIELDS)}")
        vals = {k: v for k, v in fields.items()}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 3600 for v in vals.values()):
            raise ContractError(f"{source}: event_timing[{name!r}] = {fields!r}; seconds from 0 to 3600")
        out[name] = {k: float(v) for k, v in vals.items()}
    return out


@dataclass(frozen=True)
class ModelContract:
    labels: tuple[Label, ...]
    features: FeatureConfig
    on_thresholds: tuple[float, ...]
    off_thresholds: tuple[float, ...]
    model_version: str
    input_name: str = "patches"
    output_name: str = "scores"
    pooling: str = "max"
    #: Labels that raise events unless the user chooses (``--labels``); None: every label.
    event_labels: tuple[str, ...] | None = None
    #: Per-label event timing the model was tuned with (``{label: {"hold_s": 3.0}}``).
    event_timing: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def to_json(self) -> str:
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            contract_version=CONTRACT_VERSION,
            model_version=self.model_version,
            labels=[{"name": lab.name, "mid": lab.mid} for lab in self.labels],
            features=self.features.to_dict(),
            thresholds={"on": list(self.on_thresholds), "off": list(self.off_thresholds)},
            input={
                "name": self.input_name,
                "shape": ["batch", self.features.patch_frames, self.features.n_mels],
            },
            output={"name": self.output_name, "activation": "sigmoid"},
            pooling=self.pooling,
        )
        if self.event_labels is not None:
            doc["event_labels"] = list(self.event_labels)
        if self.event_timing:
            doc["event_timing"] = self.event_timing
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelContract:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ContractError(f"{source}: metadata {CONTRACT_KEY!r} is not JSON ({e})") from e
        if not isinstance(doc, dict):
            raise ContractError(f"{source}: metadata {CONTRACT_KEY!r} is not a JSON object")
        version = doc.get("contract_version")
        if version != CONTRACT_VERSION:
            raise ContractError(
                f"{source}: contract_version {version!r}; this detector reads {CONTRACT_VERSION}"
            )
        missing = [k for k in ("labels", "features", "thresholds", "model_version") if k not in doc]
        if missing:
            raise ContractError(f"{source}: model metadata lacks {missing}")
        try:
            labels = tuple(Label(str(d["name"]), str(d["mid"])) for d in doc["labels"])
            features = FeatureConfig.from_dict(doc["features"])
            on = tuple(float(x) for x in doc["thresholds"]["on"])
            off = tuple(float(x) for x in doc["thresholds"]["off"])
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"{source}: malformed model metadata: {e}") from e
        if not labels:
            raise ContractError(f"{source}: model metadata has an empty label list")
        if len(on) != len(labels) or len(off) != len(labels):
            raise ContractError(
                f"{source}: {len(labels)} labels but {len(on)} on- and {len(off)} off-thresholds"
            )
        bad = [labels[i].name for i in range(len(labels)) if not 0.0 <= off[i] <= on[i] <= 1.0]
        if bad:
            raise ContractError(f"{source}: thresholds need 0 <= off <= on <= 1; violated for {bad}")
        pooling = str(doc.get("pooling", "max"))
        if pooling not in POOLINGS:
            raise ContractError(f"{source}: pooling {pooling!r}; accepted: {list(POOLINGS)}")
        event_labels = _event_labels(doc.get("event_labels"), labels, source)
        event_timing = _event_timing(doc.get("event_timing"), labels, source)
        known = {
            "contract_version", "model_version", "labels", "features", "thresholds",
            "input", "output", "pooling", "event_labels", "event_timing",
        }
        return cls(
            labels=labels,
            features=features,
            on_thresholds=on,
            off_thresholds=off,
            model_version=str(doc["model_version"]),
            input_name=str(doc.get("input", {}).get("name", "patches")),
            output_name=str(doc.get("output", {}).get("name", "scores")),
            pooling=pooling,
            event_labels=event_labels,
            event_timing=event_timing,
            extra={k: v for k, v in doc.items() if k not in known},
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelContract:
        if CONTRACT_KEY not in metadata:
            raise ContractError(
                f"{source}: ONNX metadata has no {CONTRACT_KEY!r} entry (keys: {sorted(metadata)}); "
                "export models with sed-export"
            )
        return cls.from_json(metadata[CONTRACT_KEY], source)

    @classmethod
    def read(cls, path: str | Path) -> ModelContract:
        """Read the contract of an ONNX file without running it."""
        return cls.from_metadata(
            open_session(path, "cpu").get_modelmeta().custom_metadata_map, str(path)
        )
