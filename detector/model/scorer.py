"""Model execution: batched onnxruntime inference over log-mel patches.

Only :mod:`detector.model.session` imports onnxruntime. Decisions (thresholds, events) live in
``detector.decide.smoother``; the scorer turns ``(B, patch_frames, n_mels)`` patches into
``(B, n_labels)`` sigmoid scores and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detector.model.contract import ModelContract
from detector.model.session import DEVICES, ContractError, open_session, providers_for

__all__ = ["DEVICES", "SMALL_BATCH", "OnnxScorer", "Scorer", "open_session", "providers_for"]  # the last two from .session

log = logging.getLogger(__name__)

SMALL_BATCH = 16
"""On the CPU with onnxruntime's own thread count (``threads=0``), batches smaller than this
run on a second, single-threaded session. For a model of a few M MACs, splitting each
layer of a small batch over threads that sleep between calls (spinning is off) costs more
than it saves: batch 1 measured 0.19-0.21 ms a patch on one thread against 0.24 ms on
two, at 0.20 against 0.32 ms of CPU; from batch 32, two threads are faster. The scores
are bit for bit the same on either session (``tests/test_speed.py``)."""


class Scorer(Protocol):
    """What the pipeline needs of a model: :class:`OnnxScorer`, or
    :class:`detector.model.yamnet.YamnetScorer` (``--model yamnet``)."""

    contract: ModelContract
    max_batch: int

    def score(self, patches: np.ndarray) -> np.ndarray:
        """``(B, patch_frames, n_mels)`` float32 log-mel -> ``(B, n_labels)`` probabilities."""
        ...


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
        # Small batches' session (SMALL_BATCH), opened at the first small batch.
        self._small_wanted = threads == 0 and self.providers[0] == "CPUExecutionProvider"
        self._small: Any = None
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
            self._session_for(part.shape[0]).run([self.contract.output_name], {self.contract.input_name: part})[0]
            for part in (x[i : i + self.max_batch] for i in range(0, x.shape[0], self.max_batch))
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _session_for(self, batch: int) -> Any:
        if batch >= SMALL_BATCH or not self._small_wanted:
            return self.session
        if self._small is None:
            self._small = open_session(self.path, self.device, 1)
        return self._small
