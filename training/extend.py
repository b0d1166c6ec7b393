"""Start a run from a trained checkpoint, and optionally train only the labels it lacks.

``sed-train --init-from CKPT`` copies every weight of ``CKPT`` into the new model and
the head rows of the labels both share (matched by display name); labels new to the
run start from a fresh row. With ``--freeze-known`` only those new rows learn: the
backbone (BatchNorm statistics included) and the known labels' rows stay exactly as
they were, so a model extended with new labels scores the old ones bit for bit as
before. This is how the default model got its synthetic-only labels without the
regressions a full retrain with them caused (see exports/default/MODEL_CARD.md).
``retrain`` names known labels whose rows train again too (:func:`retrain_rows`), for a
corpus that brings new data for labels the checkpoint already had.

:class:`HeadOnly` holds that freeze as explicit state: which rows are known, their
saved values, and the three calls the training loop makes (``modes`` after
``model.train()``, ``mask_grads`` before clipping, ``restore`` after the step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from training.model import PER_LABEL_LAYERS, SedNet, read_checkpoint

__all__ = ["HeadOnly", "init_from", "retrain_rows"]

log = logging.getLogger(__name__)


def _head_params(model: SedNet) -> list[tuple[str, nn.Linear]]:
    return [(n, getattr(model, n)) for n in PER_LABEL_LAYERS if getattr(model, n, None) is not None]


def init_from(model: SedNet, path: str | Path, names: Sequence[str]) -> list[int]:
    """Load ``path``'s weights into ``model`` (whose labels are ``names``); returns the
    indices in ``names`` of the labels the checkpoint knew, whose head rows were copied.

    The checkpoint must have the same model config and front end: a different width
    or patch shape is an error that names both.
    """
    ckpt = read_checkpoint(path)
    for key, ours in (("model_config", model.cfg.to_dict()), ("features", model.features.to_dict())):
        if ckpt.get(key) != ours:
            raise ValueError(f"init_from {path}: its {key} is {ckpt.get(key)}; this run's is {ours}")
    old = [lab["name"] for lab in ckpt["labels"]]
    where = {name: i for i, name in enumerate(old)}
    known = [i for i, name in enumerate(names) if name in where]
    src = [where[names[i]] for i in known]
    heads = {f"{n}.{p}" for n, _ in _head_params(model) for p in ("weight", "bias")}
    state = ckpt["model"]
    with torch.no_grad():
        own = model.state_dict()
        for key, value in state.items():
            if key not in own:
                raise ValueError(f"init_from {path}: weight {key!r} is not in this model")
            if key in heads:
                own[key][known] = value[src].to(own[key].dtype)
            else:
                own[key].copy_(value)
    dropped = sorted(set(old) - set(names))
    log.info("init_from %s: %d of %d labels known, %d new%s", path, len(known), len(names),
             len(names) - len(known), f", {len(dropped)} dropped: {dropped}" if dropped else "")
    return known


def retrain_rows(known: Sequence[int], names: Sequence[str], retrain: Sequence[str]) -> list[int]:
    """``known`` (from :func:`init_from`) less the labels named in ``retrain``: their rows
    start from the checkpoint's values but train again, as new rows do.

    A name not among ``names``, or one the checkpoint did not know (it trains as a new row
    anyway), is an error that names it.
    """
    where = {name: i for i, name in enumerate(names)}
    missing = sorted(set(retrain) - set(where))
    if missing:
        raise ValueError(f"retrain: {missing} are not labels of this run")
    have = set(known)
    unknown = sorted(name for name in retrain if where[name] not in have)
    if unknown:
        raise ValueError(f"retrain: {unknown} are new to this run (the init checkpoint has no "
                         "row for them), so they train anyway; list only labels it knows")
    drop = {where[name] for name in retrain}
    log.info("retrain: %d known rows train again: %s", len(drop), sorted(retrain))
    return [i for i in known if i not in drop]


class HeadOnly:
    """Train only the head rows of labels not in ``known``; everything else is frozen."""

    def __init__(self, model: SedNet, known: Sequence[int]) -> None:
        if len(known) >= model.n_labels:
            raise ValueError(f"freeze_known: all {model.n_labels} labels are known to the "
                             "init checkpoint, so nothing would train; add labels or drop it")
        self.model = model
        self.known = torch.as_tensor(list(known), dtype=torch.long)
        self.heads = _head_params(model)
        head_ids = {id(p) for _, lin in self.heads for p in lin.parameters()}
        for p in model.parameters():
            if id(p) not in head_ids:
                p.requires_grad_(False)
        self.saved = {(n, w): getattr(lin, w).detach()[self.known].clone()
                      for n, lin in self.heads for w in ("weight", "bias")}

    def trainable(self) -> list[nn.Parameter]:
        """The parameters to give the optimizer (the per-label heads)."""
        return [p for _, lin in self.heads for p in lin.parameters()]

    def modes(self) -> None:
        """After ``model.train()``: the backbone back in eval mode (BatchNorm statistics fixed)."""
        for name, child in self.model.named_children():
            if name not in PER_LABEL_LAYERS and name != "dropout":
                child.eval()

    def mask_grads(self) -> None:
        """Zero the known rows' gradients, so they do not count in gradient clipping."""
        for _, lin in self.heads:
            for p in (lin.weight, lin.bias):
                if p.grad is not None:
                    p.grad[self.known] = 0.0

    def restore(self) -> None:
        """After the optimizer step: put the known rows back (AdamW's weight decay moves them)."""
        with torch.no_grad():
            for (name, which), rows in self.saved.items():
                getattr(getattr(self.model, name), which)[self.known] = rows
