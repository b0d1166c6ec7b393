"""sed-train under torchrun (``python -m torch.distributed.run``): 2 CPU processes (gloo), DistributedSampler and balanced sampler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from training.toy import make_toy_clips  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_clips(tmp_path_factory.mktemp("ddp_clips"), n_per_label=5, seed=3)


@pytest.mark.parametrize("sampler", ["--balanced", "--no-balanced"])
def test_torchrun_two_cpu_ranks(toy_manifest: Path, tmp_path: Path, sampler: str) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "training.train",
        "--train", str(toy_manifest), "--cache", str(toy_manifest.parent / "cache"),
        "--out", str(out), "--preset", "tiny", "--epochs", "3", "--batch-size", "8",
        "--samples-per-epoch", "64", "--lr", "0.003", "--device", "cpu", sampler,
        "--no-wave-augment", "--no-spec-augment", "--no-mix",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2
    assert ckpt["epoch"] == 3
    sums = ckpt["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1], "ranks ended with different weights"
    losses = [h["train_loss"] for h in ckpt["history"]]
    assert losses[-1] < losses[0], losses
