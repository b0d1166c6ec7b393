"""The tagger: a compact pre-activation ResNet on log-mel patches.

Input ``(batch, patch_frames, n_mels)`` log-mel (96 x 64 by default, see
:class:`detector.frontend.features.FeatureConfig`), output ``(batch, n_labels)``.
:meth:`SedNet.forward` returns **logits** (for ``BCEWithLogits`` and mixed
precision); :meth:`SedNet.scores` and the exported ONNX graph return sigmoid
probabilities.

Layout::

    patches (B, T, F) -> unsqueeze -> MelNorm (BatchNorm per mel bin)
    -> stem Conv3x3/stride -> BN -> ReLU
    -> stages of pre-activation blocks (BN -> ReLU -> Conv) x 2 + shortcut
    -> BN -> ReLU -> mean over frequency -> (B, C, T')  "frame level"
    -> pooling over time: max | mean | attention (per-label softmax over T')
    -> dropout -> linear -> logits (B, L)

With ``expand = E > 0`` (max or mean pooling) a second, wider path is added to the
logits: each frame's C features -> linear to E -> ReLU -> the same pooling over time
-> dropout -> linear (``head2``, zero at initialisation) -> logits. The pooled C-wide
embedding is the narrowest point of the network (128 values for 521 labels in
"small"); the wide path widens it where it costs least (T' = 3 frames), and since
``head2`` starts at zero, a model grown from a checkpoint without it starts out
computing exactly what that checkpoint did (:func:`training.distill`'s ``init_from``).

Only Conv, BatchNormalization (folded into the conv before it at export where one
is), Relu, ReduceMean/ReduceMax, Softmax and MatMul/Gemm appear in the ONNX graph,
all fast in onnxruntime on CPU. Run ``python -m training.model`` to print the MAC
count and parameter count of the preset sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detector.frontend.features import FeatureConfig

__all__ = [
    "PER_LABEL_LAYERS",
    "POOLINGS",
    "PRESETS",
    "ModelConfig",
    "PreActBlock",
    "SedNet",
    "build_model",
    "count_macs",
    "load_checkpoint",
    "main",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

POOLINGS = ("max", "mean", "attention")
PER_LABEL_LAYERS = ("head", "attention", "head2")
""":class:`SedNet`'s Linear layers with one output row per label (the last two optional):
the rows that follow a label when a checkpoint's labels are matched to another's."""


def _pair(value: Any, what: str) -> tuple[int, int]:
    """An int or a 2-sequence of ints -> ``(time, freq)`` pair."""
    if isinstance(value, bool):
        raise ValueError(f"{what} is {value!r}; expected an int or [time, freq]")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{what} is {value!r}; expected an int or [time, freq]")


@dataclass(frozen=True)
class ModelConfig:
    """Width, depth and head of :class:`SedNet`.

    ``strides`` and ``stem_stride`` are ints or ``(time, freq)`` pairs; one stride per
    stage, applied by the first block of the stage. ``widths`` and ``blocks`` give the
    channels and the number of pre-activation blocks per stage.
    """

    stem_channels: int = 16
    stem_stride: tuple[int, int] = (2, 2)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    strides: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (2, 2))
    dropout: float = 0.2
    pooling: str = "max"
    expand: int = 0  # width of the wide path to the logits; 0: none

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise lists (from TOML/JSON) to tuples
        set_(self, "stem_stride", _pair(self.stem_stride, "stem_stride"))
        set_(self, "widths", tuple(int(w) for w in self.widths))
        set_(self, "blocks", tuple(int(b) for b in self.blocks))
        set_(self, "strides", tuple(_pair(s, f"strides[{i}]") for i, s in enumerate(self.strides)))
        problems = []
        if self.stem_channels <= 0:
            problems.append(f"stem_channels={self.stem_channels} (must be > 0)")
        if not self.widths or len({len(self.widths), len(self.blocks), len(self.strides)}) != 1:
            problems.append(
                f"widths={self.widths}, blocks={self.blocks}, strides={self.strides} "
                "(need one entry per stage, at least one stage)"
            )
        if any(w <= 0 for w in self.widths) or any(b <= 0 for b in self.blocks):
            problems.append(f"widths={self.widths}, blocks={self.blocks} (all must be > 0)")
        if any(s <= 0 for pair in (self.stem_stride, *self.strides) for s in pair):
            problems.append(f"strides {self.stem_stride}, {self.strides} (all must be > 0)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} (need 0 <= dropout < 1)")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling={self.pooling!r} (accepted: {list(POOLINGS)})")
        if self.expand < 0 or (self.expand and self.pooling == "attention"):
            problems.append(f"expand={self.expand} with pooling={self.pooling!r} (need expand >= 0, "
                            "and expand = 0 with attention pooling)")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-friendly dict (lists, not tuples)."""
        d = dataclasses.asdict(self)
        d["stem_stride"] = list(self.stem_stride)
        d["widths"] = list(self.widths)
        d["blocks"] = list(self.blocks)
        d["strides"] = [list(s) for s in self.strides]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a mapping; unknown keys are errors that name them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model key(s) {unknown}; accepted: {sorted(names)}")
        return cls(**data)


#: Named sizes; "small" is the default. MACs per 96x64 patch (see ``python -m training.model``).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(stem_channels=8, widths=(8, 16, 32, 64)),
    "small": ModelConfig(),
    "small-wide": ModelConfig(expand=512),
    "base": ModelConfig(stem_channels=24, widths=(24, 48, 96, 192)),
}


class MelNorm(nn.Module):
    """BatchNorm over mel bins of ``(B, T, F)`` input; returns ``(B, 1, T, F)``."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not self.training and bn.running_var is not None and bn.running_mean is not None:
            # Inference: the same per-bin affine map on (B, T, F) as it is. Exported, this
            # is one Mul and one Add; BatchNorm over (B, F, T, 1) cost two Transposes and
            # a BatchNormalization, 13 % of onnxruntime's time per batch (docs/benchmarks.md).
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            return (x * scale + shift).unsqueeze(1)
        # Training: (B, T, F) -> (B, F, T, 1), mel bins as channels, normalised, then back.
        y = bn(x.transpose(1, 2).unsqueeze(-1))
        return y.squeeze(-1).transpose(1, 2).unsqueeze(1)


class PreActBlock(nn.Module):
    """``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``; 1x1 strided shortcut on shape change.

    ``conv1`` is directly followed by ``bn2``, so export folds ``bn2`` into it.
    """

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if c_in != c_out or stride != (1, 1):
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        # Pre-activation ResNet: a strided shortcut reads the activated input.
        skip = x if self.shortcut is None else self.shortcut(a)
        y = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return y + skip


class SedNet(nn.Module):
    """Pre-activation ResNet tagger, ``(B, patch_frames, n_mels)`` -> logits ``(B, n_labels)``."""

    def __init__(self, cfg: ModelConfig, n_labels: int, features: FeatureConfig) -> None:
        super().__init__()
        if n_labels <= 0:
            raise ValueError(f"n_labels={n_labels}; need at least one label")
        self.cfg = cfg
        self.features = features
        self.n_labels = n_labels
        self.mel_norm = MelNorm(features.n_mels)
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem_channels, 3, stride=cfg.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c_in = cfg.stem_channels
        for width, n_blocks, stride in zip(cfg.widths, cfg.blocks, cfg.strides, strict=True):
            for j in range(n_blocks):
                layers.append(PreActBlock(c_in, width, stride if j == 0 else (1, 1)))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.post = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU())
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c_in, n_labels)
        self.attention: nn.Linear | None = None
        if cfg.pooling == "attention":
            self.attention = nn.Linear(c_in, n_labels)
        self.expand: nn.Linear | None = None
        self.head2: nn.Linear | None = None
        if cfg.expand:
            self.expand = nn.Linear(c_in, cfg.expand)
            self.head2 = nn.Linear(cfg.expand, n_labels)
            nn.init.zeros_(self.head2.weight)  # the wide path adds nothing until trained
            nn.init.zeros_(self.head2.bias)
        self.embed_dim = c_in

    def frames(self, patches: torch.Tensor) -> torch.Tensor:
        """Frame-level embeddings ``(B, T', C)`` (mean over the frequency axis)."""
        f = self.features
        if patches.ndim != 3 or patches.shape[1:] != (f.patch_frames, f.n_mels):
            raise ValueError(
                f"patches have shape {tuple(patches.shape)}; expected "
                f"(batch, {f.patch_frames}, {f.n_mels})"
            )
        h = self.post(self.stages(self.stem(self.mel_norm(patches))))
        return h.mean(dim=3).transpose(1, 2)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_labels)``; apply a sigmoid for probabilities (see :meth:`scores`)."""
        return self.forward_with_embedding(patches)[0]

    def forward_with_embedding(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n_labels)`` and the patch embedding ``(B, C)`` they come from
        (the pooled frames; their mean over time with attention pooling). Distillation
        matches the embedding to the teacher's (``training.distill``)."""
        h = self.frames(patches)  # (B, T', C)
        if self.attention is not None:
            logits_t = self.head(self.dropout(h))  # (B, T', L)
            weights = torch.softmax(self.attention(h), dim=1)
            return (weights * logits_t).sum(dim=1), h.mean(dim=1)
        pooled = self._pool(h)
        logits = self.head(self.dropout(pooled))
        if self.expand is not None and self.head2 is not None:
            wide = self._pool(torch.relu(self.expand(h)))  # (B, E)
            logits = logits + self.head2(self.dropout(wide))
        return logits, pooled

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, T', C)`` -> ``(B, C)``: max or mean over time."""
        return h.amax(dim=1) if self.cfg.pooling == "max" else h.mean(dim=1)

    def scores(self, patches: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities ``(B, n_labels)``."""
        return torch.sigmoid(self.forward(patches))


def build_model(cfg: ModelConfig, n_labels: int, features: FeatureConfig) -> SedNet:
    return SedNet(cfg, n_labels, features)


def count_macs(model: SedNet, cfg: FeatureConfig | None = None) -> tuple[int, int]:
    """Multiply-accumulates for one patch and the parameter count.

    Counts every Conv and Linear layer by forward hooks on one ``(1, frames, mels)``
    patch: a conv output element costs ``in_channels / groups * kh * kw`` MACs, a
    linear output element ``in_features``. BatchNorm, ReLU, pooling and the
    attention softmax (all element-wise, < 1 % here) are not counted.
    """
    cfg = cfg or model.features
    total = 0

    def conv_hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d | nn.Conv1d):
            k = 1
            for s in mod.kernel_size:
                k *= s
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    hooks = [
        m.register_forward_hook(conv_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, cfg.patch_frames, cfg.n_mels))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return total, params


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A ``sed-train`` checkpoint's dict (``weights_only=True``), checked for the keys
    ``model`` (state dict), ``model_config``, ``labels`` (list of ``{"name", "mid"}``)
    and ``features`` (FeatureConfig dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: checkpoint is a {type(ckpt).__name__}; expected a dict")
    missing = [k for k in ("model", "model_config", "labels", "features") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing} (has {sorted(ckpt)})")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[SedNet, dict[str, Any]]:
    """Load a ``sed-train`` checkpoint (:func:`read_checkpoint`) and rebuild its model in eval mode."""
    ckpt = read_checkpoint(path, map_location)
    model = SedNet(
        ModelConfig.from_dict(ckpt["model_config"]),
        len(ckpt["labels"]),
        FeatureConfig.from_dict(ckpt["features"]),
    )
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def main(argv: list[str] | None = None) -> int:
    """Print MACs per patch and parameters of the presets (or one TOML-free override)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--labels", type=int, default=527, help="number of output labels")
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append")
    args = parser.parse_args(argv)
    features = FeatureConfig()
    for name in args.preset or sorted(PRESETS):
        cfg = PRESETS[name]
        for pooling in POOLINGS:
            if cfg.expand and pooling == "attention":
                continue  # the wide path has no attention form
            model = SedNet(dataclasses.replace(cfg, pooling=pooling), args.labels, features)
            macs, params = count_macs(model)
            print(f"{name:6s} pooling={pooling:9s} {macs / 1e6:6.2f} M MACs/patch  "
                  f"{params / 1e6:5.3f} M params  widths={list(cfg.widths)} "
                  f"blocks={list(cfg.blocks)}" + (f" expand={cfg.expand}" if cfg.expand else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
