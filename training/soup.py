"""``python -m training.soup OUT CKPT CKPT [...]``: a uniform weight soup of checkpoints.

Averages every floating-point weight of runs that share one network, label list and
front end (BatchNorm running statistics included; integer buffers such as
``num_batches_tracked`` are the first checkpoint's). This is what runs fine-tuned from one
starting point allow, as the default model's later runs are (``v2_wide3.toml`` to
``v2_wide6.toml``, all from v2.4 or v2.5). Checkpoints that differ in ``model_config``,
``features`` or ``labels`` are refused with the one that differs named.

The soup keeps the first checkpoint's metadata without its optimizer state, names its
ingredients in ``soup_of``, and is evaluated and exported like any run
(``training.evaluate``, ``training.export``): the default model's card lists the soups
that were measured and not kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.model import read_checkpoint

__all__ = ["main", "soup"]

log = logging.getLogger("training.soup")

SAME = ("model_config", "features", "labels")
"""What every ingredient must share with the first."""


def soup(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The uniform soup of ``paths`` (at least two) as a checkpoint dict."""
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two checkpoints; got {len(paths)}")
    cks = [read_checkpoint(p) for p in paths]
    first = cks[0]
    for path, ck in zip(paths[1:], cks[1:], strict=True):
        for key in SAME:
            if ck[key] != first[key]:
                raise ValueError(f"{path}: its {key} differs from {paths[0]}'s; a soup needs one network")
        if ck["model"].keys() != first["model"].keys():
            raise ValueError(f"{path}: its weights are not {paths[0]}'s (different state dict keys)")
    state = {}
    for key, value in first["model"].items():
        if value.is_floating_point():
            mean = torch.stack([ck["model"][key].double() for ck in cks]).mean(dim=0)
            state[key] = mean.to(value.dtype)
        else:
            state[key] = value.clone()
    out = {k: v for k, v in first.items() if k not in ("model", "optimizer", "scaler")}
    out["model"] = state
    out["soup_of"] = [str(p) for p in paths]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.soup", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="where to write the soup (a checkpoint, e.g. runs/soup/last.pt)")
    p.add_argument("checkpoints", nargs="+", type=Path, help="two or more checkpoints of one network")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        ck = soup(args.checkpoints)
    except (ValueError, FileNotFoundError) as e:
        print(f"training.soup: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, args.out)
    log.info("soup of %d checkpoints -> %s", len(args.checkpoints), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
