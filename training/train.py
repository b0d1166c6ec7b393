"""Train a :class:`training.model.SedNet` tagger (``sed-train``).

Waveform patches come from :class:`training.data.PatchDataset` (with optional
waveform augmentation), are mixed in the batch (optional), turned into log-mel on the
training device by :class:`training.frontend.LogMel` and masked by SpecAugment
(optional). Loss: multi-label BCE or focal loss on logits, optionally blended with
BCE against a teacher's scores (``teacher``, ``distill_weight``, ``distill_per_label``;
:mod:`training.teacher`). ``init_from`` starts from a trained checkpoint, and
``freeze_known`` then trains only the labels it lacks (:mod:`training.extend`).
AdamW with linear warmup then cosine decay (``schedule="cosine"``) or a one-cycle
shape; mixed precision on GPU. Each epoch writes ``last.pt`` (and ``best.pt`` on a new best validation mAP) to
``out_dir``; ``--resume`` continues from a checkpoint with identical state.

Configuration: a TOML file (``--config``) with top-level :class:`TrainConfig` keys
and ``[model]`` (:class:`training.model.ModelConfig`, on top of ``preset``) and
``[augment]`` (:class:`training.augment.AugmentConfig`) tables. Unknown keys are
errors that name them; command-line flags override the file.

Distributed: ``torchrun --nproc_per_node N -m training.train ...`` runs DDP (gloo on
CPU, nccl on GPU); each rank draws its own share of every epoch.

Checkpoints hold only tensors, strings, numbers, lists and dicts (loadable with
``torch.load(weights_only=True)``): ``model``, ``optimizer``, ``scaler``, ``epoch``,
``step``, ``history``, ``labels`` (``[{"name", "mid"}]``), ``features``,
``model_config``, ``train_config``, ``augment_config``, ``data_summary``,
``git_revision``, ``world_size`` and ``rank_checksums``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import os
import random
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from detector.frontend.features import FeatureConfig
from training.augment import AugmentConfig, SpecAugment, WaveAugment, mix_batch
from training.data import BalancedSampler
from training.extend import HeadOnly, init_from, retrain_rows
from training.frontend import LogMel
from training.model import PRESETS, ModelConfig, SedNet, read_checkpoint

__all__ = [
    "LOSSES",
    "SCHEDULES",
    "TrainConfig",
    "focal_loss",
    "load_config",
    "lr_factor",
    "main",
    "train",
]

log = logging.getLogger(__name__)

LOSSES = ("bce", "focal")
SCHEDULES = ("cosine", "onecycle")
_MIN_LR_RATIO = 0.01  # cosine decays to this fraction of lr
_ONECYCLE_START_RATIO = 0.04  # one-cycle starts (and ends near) this fraction of lr


@dataclass(frozen=True)
class TrainConfig:
    """Training-loop settings. Paths are strings so the config round-trips through TOML."""

    train_manifest: str = ""
    val_manifest: str = ""  # empty: clips of the train manifest with split == "val"
    cache_dir: str = "cache"
    out_dir: str = "runs/default"
    labels: tuple[str, ...] = ()  # empty: every label in the train manifest
    preset: str = ""  # empty: the network of init_from's checkpoint, else "small"
    epochs: int = 30
    batch_size: int = 64
    samples_per_epoch: int = 0  # 0: one pass over the training clips
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    loss: str = "bce"
    focal_gamma: float = 2.0
    balanced: bool = True
    balance_power: float = 0.0  # BalancedSampler.power: 0 = every label equally often
    # Master switches; the details (and per-effect switches) are the [augment] table.
    wave_augment: bool = True
    mix: bool = True
    spec_augment: bool = True
    background_manifest: str = ""  # clips mixed in as backgrounds by WaveAugment
    # Distillation (training.teacher): "" = none, "yamnet" = the cached YAMNet, or a path.
    teacher: str = ""
    distill_weight: float = 0.5  # loss = (1 - w) * BCE(labels) + w * BCE(teacher scores)
    distill_per_label: bool = True  # w_l = distill_weight * teacher's AP on the training clips
    # Start from a trained checkpoint (training.extend): its weights, and its head rows for
    # the labels both have; freeze_known trains only the rows of the labels it lacks.
    init_from: str = ""
    freeze_known: bool = False
    # With freeze_known: labels the checkpoint knows whose head rows train again anyway (on a
    # corpus with new data for them); every other known row stays frozen.
    retrain: tuple[str, ...] = ()
    grad_clip: float = 5.0
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    val_limit: int = 0  # 0: every validation patch

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "retrain", tuple(self.retrain))
        problems = []
        if self.preset and self.preset not in PRESETS:
            problems.append(f"preset={self.preset!r} (accepted: {sorted(PRESETS)})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule={self.schedule!r} (accepted: {list(SCHEDULES)})")
        if self.loss not in LOSSES:
            problems.append(f"loss={self.loss!r} (accepted: {list(LOSSES)})")
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            problems.append(
                f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr} (all > 0)"
            )
        if not 0.0 <= self.distill_weight <= 1.0:
            problems.append(f"distill_weight={self.distill_weight} (accepted: 0 <= w <= 1)")
        if not 0.0 <= self.balance_power <= 1.0:
            problems.append(f"balance_power={self.balance_power} (accepted: 0 <= p <= 1)")
        if self.freeze_known and not self.init_from:
            problems.append("freeze_known=true without init_from (it freezes what that "
                            "checkpoint knew)")
        if self.retrain and not self.freeze_known:
            problems.append(f"retrain={list(self.retrain)} without freeze_known=true (without "
                            "the freeze every row trains already)")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["retrain"] = list(self.retrain)
        return d


@dataclass(frozen=True)
class _Run:
    """Everything a run needs, resolved from TOML + flags."""

    train: TrainConfig
    model: ModelConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _checked(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted: {sorted(names)}")
    return data


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> _Run:
    """Read a TOML config (see module docstring) and apply flag ``overrides``."""
    doc: dict[str, Any] = {}
    if path is not None:
        with Path(path).open("rb") as fh:
            doc = tomllib.load(fh)
    where = str(path) if path else "config"
    model_over = doc.pop("model", {})
    augment = doc.pop("augment", {})
    for name, table in (("model", model_over), ("augment", augment)):
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [{name}] must be a table; got {table!r}")
    top = dict(_checked(TrainConfig, doc, where))
    top.update({k: v for k, v in (overrides or {}).items() if v is not None})
    train_cfg = TrainConfig(**top)
    if train_cfg.preset:
        base = PRESETS[train_cfg.preset].to_dict()
    elif train_cfg.init_from:  # fine-tuning a model: its own network, unless told otherwise
        base = read_checkpoint(train_cfg.init_from)["model_config"]
    else:
        base = PRESETS["small"].to_dict()
    base.update(_checked(ModelConfig, model_over, f"{where} [model]"))
    aug = AugmentConfig(**_checked(AugmentConfig, augment, f"{where} [augment]"))
    return _Run(train_cfg, ModelConfig.from_dict(base), aug)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total`` (pure, resumable)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}; accepted: {list(SCHEDULES)}")
    total = max(total, 1)
    if schedule == "onecycle":
        peak = max(warmup, 1)
        if step < peak:
            p = step / peak
            return _ONECYCLE_START_RATIO + (1 - _ONECYCLE_START_RATIO) * (1 - math.cos(math.pi * p)) / 2
        p = min(1.0, (step - peak) / max(total - peak, 1))
        return _ONECYCLE_START_RATIO * 1e-2 + (1 - _ONECYCLE_START_RATIO * 1e-2) * (
            1 + math.cos(math.pi * p)
        ) / 2
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(total - warmup, 1))
    return _MIN_LR_RATIO + (1 - _MIN_LR_RATIO) * (1 + math.cos(math.pi * p)) / 2


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float,
               reduction: str = "mean") -> torch.Tensor:
    """Binary focal loss ``(1 - p_t)^gamma * BCE`` over ``(B, L)`` logits; its mean, or the
    ``(B, L)`` elements with ``reduction="none"``."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = (1 - p_t) ** gamma * bce
    return loss if reduction == "none" else loss.mean()


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (checkpoints hold only lists, dicts and scalars)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _param_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal across DDP ranks iff the weights are."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for p in model.parameters():
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _git_revision() -> str:
    from training.export import git_revision

    return git_revision()


def _label_list(names: Sequence[str]) -> list[dict[str, str]]:
    from training.ontology import Ontology

    onto = Ontology.load()
    return [{"name": n, "mid": onto.mid(n)} for n in names]


def _load_data(run: _Run, features: FeatureConfig) -> tuple[Any, Any, list[str], dict[str, Any]]:
    """Training dataset (random patches), validation dataset (every patch), label names
    and per-label clip counts."""
    from training.clips import read_manifest
    from training.data import PatchDataset, WaveformStore

    cfg = run.train
    if not cfg.train_manifest:
        raise ValueError("no train_manifest; give --train MANIFEST or train_manifest in --config")
    clips = read_manifest(cfg.train_manifest)
    if cfg.val_manifest:
        train_clips, val_clips = clips, read_manifest(cfg.val_manifest)
    else:
        train_clips = [c for c in clips if c.split != "val"]
        val_clips = [c for c in clips if c.split == "val"]
    if not train_clips:
        raise ValueError(f"{cfg.train_manifest}: no training clips (all have split='val'?)")
    names = list(cfg.labels) or sorted({lab for c in train_clips for lab in c.labels})
    backgrounds = read_manifest(cfg.background_manifest) if cfg.background_manifest else []
    store = WaveformStore(Path(cfg.cache_dir), features)
    store.build(train_clips + val_clips + backgrounds)
    augment = None
    if cfg.wave_augment:
        waves = [np.asarray(store.get(c)) for c in backgrounds]
        augment = WaveAugment(run.augment, features.sample_rate, waves, cfg.seed)
    train_ds = PatchDataset(train_clips, store, names, features, augment=augment, seed=cfg.seed)
    val_ds: Any = None
    if val_clips:
        val_ds = PatchDataset(val_clips, store, names, features, augment=None, seed=cfg.seed,
                              mode="all")
        if cfg.val_limit and len(val_ds) > cfg.val_limit:
            keep = np.linspace(0, len(val_ds) - 1, cfg.val_limit).round().astype(int)
            val_ds = torch.utils.data.Subset(val_ds, keep.tolist())
    summary = {
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
        "train_counts": {n: int(sum(n in c.labels for c in train_clips)) for n in names},
        "val_counts": {n: int(sum(n in c.labels for c in val_clips)) for n in names},
    }
    return train_ds, val_ds, names, summary


def _evaluate(model: SedNet, frontend: LogMel, loader: DataLoader, device: torch.device) -> float:
    from training.metrics import average_precision, mean_excluding

    model.eval()
    scores, targets = [], []
    with torch.no_grad():
        for wave, target in loader:
            scores.append(model.scores(frontend(wave.to(device))).float().cpu().numpy())
            targets.append(target.numpy())
    model.train()
    ap = average_precision(np.concatenate(scores), np.concatenate(targets))
    return mean_excluding(ap)[0]


def train(run: _Run, resume: str | Path | None = None, stop_epoch: int | None = None) -> Path:
    """Run training; returns the path of the last checkpoint (written by rank 0).

    ``stop_epoch``: end this invocation after that epoch (1-based) as if interrupted;
    the schedule still spans ``epochs`` so a ``resume`` continues it unchanged.
    """
    cfg = run.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg.device, local_rank)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _seed_all(cfg.seed)
    features = FeatureConfig()
    train_ds, val_ds, names, summary = _load_data(run, features)
    log.info("labels %d, train clips %d, val clips %d", len(names), summary["train_clips"],
             summary["val_clips"])

    model = SedNet(run.model, len(names), features)
    known = init_from(model, cfg.init_from, names) if cfg.init_from else None
    if known is not None and cfg.retrain:
        known = retrain_rows(known, names, cfg.retrain)
    model = model.to(device)
    head_only = HeadOnly(model, known) if cfg.freeze_known and known is not None else None
    frontend = LogMel(features).to(device)
    params = head_only.trainable() if head_only is not None else list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    best = -1.0
    if resume is not None:
        ckpt = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        history = list(ckpt.get("history", []))
        best = max([h.get("val_map", -1.0) for h in history] + [-1.0])
        log.info("resumed %s at epoch %d, step %d", resume, start_epoch, step)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler: BalancedSampler | DistributedSampler[Any]
    if cfg.balanced:
        per_epoch = cfg.samples_per_epoch or len(train_ds)
        per_rank = max(cfg.batch_size, -(-per_epoch // world))
        sampler = BalancedSampler(train_ds.targets, per_rank, cfg.seed, rank, world,
                                  power=cfg.balance_power)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                     seed=cfg.seed, drop_last=False)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers)
    val_loader = (
        DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
        if val_ds is not None and rank == 0 else None
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    aug = run.augment
    spec = None
    if cfg.spec_augment and aug.spec_augment:
        spec = SpecAugment.from_config(aug, features.log_offset).to(device)
    mix_prob = aug.mix_prob if cfg.mix and aug.mix else 0.0
    teacher, distill_w = None, None
    if cfg.teacher and cfg.distill_weight > 0:
        from training.teacher import label_weights, load_teacher

        teacher = load_teacher(cfg.teacher, [lab["mid"] for lab in _label_list(names)],
                               threads=torch.get_num_threads())
        distill_w, teacher_ap = label_weights(teacher, train_ds, cfg.distill_weight,
                                              cfg.distill_per_label)
        summary["teacher"] = {
            "name": teacher.name,
            "train_clip_ap": {n: (None if np.isnan(a) else round(float(a), 4))
                              for n, a in zip(names, teacher_ap, strict=True)},
            "distill_weights": {n: round(float(w), 4)
                                for n, w in zip(names, distill_w.tolist(), strict=True)},
        }
        log.info("distilling from %s (weight %.2f%s, %d of %d labels; mean label weight %.3f)",
                 teacher.name, cfg.distill_weight, " x teacher AP" if cfg.distill_per_label else "",
                 int(teacher.mask.sum()), len(names), float(distill_w.mean()))

    out_dir = Path(cfg.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    from tqdm import tqdm

    end_epoch = cfg.epochs if stop_epoch is None else min(stop_epoch, cfg.epochs)
    for epoch in range(start_epoch, end_epoch):
        _seed_all(cfg.seed + 1_000_003 * (epoch + 1) + rank)  # per epoch: resume repeats it
        gen = torch.Generator().manual_seed(cfg.seed + epoch * 31 + rank)
        sampler.set_epoch(epoch)
        net.train()
        if head_only is not None:
            head_only.modes()
        t0, seen, loss_sum = time.monotonic(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0,
                   leave=False, dynamic_ncols=True, mininterval=1.0)
        for wave, target in bar:
            if mix_prob > 0:
                wave, target = mix_batch(wave, target, mix_prob, gen, aug.mix_gain_db)
            wave, target = wave.to(device, non_blocking=True), target.to(device)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, total_steps, warmup, cfg.schedule)
            with torch.no_grad():
                x = frontend(wave)
                soft = teacher(x) if teacher is not None else None
                if spec is not None:
                    x = spec(x)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
            logits = logits.float()
            if cfg.loss == "focal":
                hard = focal_loss(logits, target, cfg.focal_gamma, reduction="none")
            else:
                hard = nn.functional.binary_cross_entropy_with_logits(logits, target,
                                                                      reduction="none")
            if distill_w is not None and soft is not None:
                from training.teacher import blend

                loss = blend(hard, logits, soft, distill_w)
            else:
                loss = hard.mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if head_only is not None:
                head_only.mask_grads()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if head_only is not None:
                head_only.restore()
            step += 1
            seen += wave.shape[0]
            loss_sum += loss.item() * wave.shape[0]
            bar.set_postfix(refresh=False, loss=f"{loss.item():.4f}",
                            ex_s=f"{seen * world / max(time.monotonic() - t0, 1e-9):.0f}")
        stats = torch.tensor([loss_sum, float(seen)], dtype=torch.float64)
        if distributed:
            dist.all_reduce(stats)
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(stats[0]) / max(float(stats[1]), 1.0),
            "examples_per_s": float(stats[1]) / max(time.monotonic() - t0, 1e-9),
            "lr": float(opt.param_groups[0]["lr"]),
        }
        if val_loader is not None:
            entry["val_map"] = _evaluate(model, frontend, val_loader, device)
        history.append(entry)
        sums = [_param_checksum(model)]
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, sums[0])
            sums = [str(s) for s in gathered]
        if rank == 0:
            log.info("epoch %d: %s", epoch + 1,
                     ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "epoch"))
            ckpt_out = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "labels": _label_list(names),
                "features": features.to_dict(),
                "model_config": run.model.to_dict(),
                "train_config": _plain(cfg.to_dict()),
                "augment_config": _plain(run.augment.to_dict()),
                "data_summary": summary,
                "git_revision": _git_revision(),
                "world_size": world,
                "rank_checksums": sums,
            }
            torch.save(ckpt_out, last)
            if entry.get("val_map", -1.0) > best:
                best = entry["val_map"]
                torch.save(ckpt_out, out_dir / "best.pt")
        if distributed:
            dist.barrier()
    if distributed:
        dist.destroy_process_group()
    return last


def main(argv: list[str] | None = None) -> int:
    """sed-train: train a tagger from a manifest (see ``training.train`` docstring)."""
    p = argparse.ArgumentParser(prog="sed-train", description=main.__doc__)
    p.add_argument("--config", type=Path, help="TOML config; flags below override it")
    p.add_argument("--train", dest="train_manifest", help="training manifest CSV")
    p.add_argument("--val", dest="val_manifest", help="validation manifest CSV")
    p.add_argument("--cache", dest="cache_dir", help="waveform cache directory")
    p.add_argument("--out", dest="out_dir", help="checkpoint directory")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="network size (default: --init-from's own network, else small)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--samples-per-epoch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--seed", type=int)
    p.add_argument("--balance-power", type=float,
                   help="draw labels with probability ~ clip count^p (0: all equally, 1: as often as their clips)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=int)
    for name in ("balanced", "wave_augment", "mix", "spec_augment", "amp", "distill_per_label",
                 "freeze_known"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name,
                       action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--background", dest="background_manifest",
                   help="manifest of background recordings for WaveAugment")
    p.add_argument("--teacher", help='distil from this tagger: "yamnet" or a model.onnx path')
    p.add_argument("--distill-weight", type=float, help="weight of the teacher's targets (0-1)")
    p.add_argument("--retrain", action="append", metavar="LABEL",
                   help="with --freeze-known: this known label's head row trains again too (repeatable)")
    p.add_argument("--init-from", help="start from this trained checkpoint's weights "
                   "(labels matched by name; --freeze-known: train only the new labels)")
    p.add_argument("--resume", type=Path, help="checkpoint to continue from")
    p.add_argument("--stop-epoch", type=int, help="stop after this epoch (resume later)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = vars(p.parse_args(argv))
    logging.basicConfig(level=logging.DEBUG if args.pop("verbose") else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, resume, stop = args.pop("config"), args.pop("resume"), args.pop("stop_epoch")
    try:
        run = load_config(config, args)
        last = train(run, resume=resume, stop_epoch=stop)
    except (OSError, ValueError) as e:  # bad manifest, audio, config or checkpoint: one line
        print(f"sed-train: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("wrote %s", last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
