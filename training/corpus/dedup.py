"""Duplicate removal before splitting: exact (content hash) and near (feature distance).

Exact duplicates share the SHA-256 of their decoded 16 kHz PCM (the same sound shipped
in several packages, whatever the container). Near duplicates (re-encodes, resamples,
gain changes) are found with a gain-invariant fingerprint: the per-band mean and
standard deviation of :func:`detector.frontend.features.log_mel` over the clip, with the
overall mean level subtracted, compared by RMS difference, plus a duration check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.frontend.features import FeatureConfig, log_mel

__all__ = [
    "NearDupConfig",
    "UnionFind",
    "exact_groups",
    "fingerprint",
    "near_duplicate_pairs",
    "pcm_hash",
]

log = logging.getLogger(__name__)

_REFERENCE_RMS = 0.1  # waveform RMS the fingerprint is computed at (full scale = 1)
_FLOOR = 0.05  # log offset of the fingerprint: hides low-level noise/dither in quiet gaps


@dataclass(frozen=True)
class NearDupConfig:
    """Thresholds of the near-duplicate check.

    ``max_rms_distance``: RMS difference of the fingerprints in log-mel units (natural log).
    ``max_duration_ratio``: longer/shorter duration must not exceed this.
    """

    max_rms_distance: float = 0.06
    max_duration_ratio: float = 1.05
    block: int = 1024  # rows per block of the pairwise comparison


def pcm_hash(wave: np.ndarray) -> str:
    """SHA-256 hex of a waveform quantised to 16-bit PCM (what the FLAC clips store)."""
    pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32767.0), -32768, 32767)
    return hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()


def fingerprint(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Gain-invariant summary, shape ``(2 * n_mels,)``: band means minus their mean, band stds.

    The waveform is first scaled to an RMS of ``_REFERENCE_RMS`` so that the log floor
    (here ``_FLOOR``, well above ``cfg.log_offset`` so that added noise or dither in
    quiet gaps does not dominate) sits at the same relative level for every copy.

    Clips shorter than one window are zero-padded to ``win_length`` samples.
    """
    x = np.asarray(wave, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    x = (x * (_REFERENCE_RMS / rms) if rms > 0 else x).astype(np.float32)
    if x.size < cfg.win_length:
        x = np.pad(x, (0, cfg.win_length - x.size))
    mel = log_mel(x, dataclasses.replace(cfg, log_offset=_FLOOR))
    mean = mel.mean(axis=0)
    return np.concatenate([mean - mean.mean(), mel.std(axis=0)]).astype(np.float32)


def exact_groups(hashes: Sequence[str]) -> dict[str, list[int]]:
    """Indices per hash, in input order (first index = the one kept)."""
    out: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        out.setdefault(h, []).append(i)
    return out


def near_duplicate_pairs(
    prints: np.ndarray, seconds: np.ndarray, cfg: NearDupConfig = NearDupConfig()
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, whose fingerprints and durations are near-equal.

    ``prints``: (n, d) from :func:`fingerprint`; ``seconds``: (n,) clip durations.
    """
    n = prints.shape[0]
    if n != seconds.shape[0]:
        raise ValueError(f"{n} fingerprints but {seconds.shape[0]} durations")
    dim = prints.shape[1] if prints.ndim == 2 else 0
    p = prints.astype(np.float64)
    sq = (p * p).sum(axis=1)
    limit = cfg.max_rms_distance**2 * dim
    pairs: list[tuple[int, int]] = []
    for start in range(0, n, cfg.block):
        stop = min(start + cfg.block, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * p[start:stop] @ p.T
        ratio = np.maximum(seconds[start:stop, None], seconds[None, :]) / np.maximum(
            np.minimum(seconds[start:stop, None], seconds[None, :]), 1e-9
        )
        rows, cols = np.nonzero((d2 <= limit) & (ratio <= cfg.max_duration_ratio))
        pairs.extend(
            (start + int(r), int(c)) for r, c in zip(rows, cols, strict=True) if start + r < c
        )
    return sorted(pairs)


class UnionFind:
    """Disjoint sets over hashable keys; ``find`` returns the smallest-ordered root."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        """Root of ``key`` (added as its own set if unseen)."""
        parent = self._parent.setdefault(key, key)
        if parent != key:
            parent = self.find(parent)
            self._parent[key] = parent
        return parent

    def union(self, a: str, b: str) -> None:
        """Merge the sets of ``a`` and ``b``; the lexicographically smaller root wins."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo
