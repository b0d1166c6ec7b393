"""Synthetic labelled audio and a toy model, for tests.

Four kinds of sound, each named by a real AudioSet label (:data:`TOY_LABELS`):

* ``Sine wave``   a steady tone, 300-1000 Hz;
* ``Beep, bleep`` a pulsed tone, 1.5-3 kHz, ~0.1 s on / ~0.1 s off;
* ``Chirp tone``  repeated exponential sweeps, 0.25-0.5 s each, between ~200 Hz and ~6 kHz;
* ``White noise`` a loud broadband Gaussian burst.

Backgrounds are quiet pink (1/f) noise, so "low noise" and the ``White noise``
label differ in level and in spectral shape.

* :func:`make_toy_scene` sounds events at known times over background;
* :func:`make_toy_clips` writes FLAC clips and a manifest (``training.clips`` format);
* :func:`make_toy_model` trains the real :class:`training.model.SedNet` at a small width
  on toy patches (seconds on one core) and exports it with :mod:`training.export`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from detector.frontend.features import FeatureConfig
from training.model import ModelConfig, SedNet

__all__ = [
    "TOY_LABELS",
    "TOY_MODEL_CONFIG",
    "TOY_OFF_THRESHOLD",
    "TOY_ON_THRESHOLD",
    "background",
    "make_toy_clips",
    "make_toy_model",
    "make_toy_patches",
    "make_toy_scene",
    "toy_sound",
]

log = logging.getLogger(__name__)

#: Toy sound name -> AudioSet mid (names and mids as in ``training/data/ontology.json``).
TOY_LABELS: dict[str, str] = {
    "Sine wave": "/m/01v_m0",
    "Beep, bleep": "/m/02fs_r",
    "Chirp tone": "/m/0hdsk",
    "White noise": "/m/0chx_",
}
#: The toy model: the real architecture, narrow.
TOY_MODEL_CONFIG = ModelConfig(
    stem_channels=8, widths=(8, 16, 24, 32), blocks=(1, 1, 1, 1), dropout=0.0, pooling="max"
)
TOY_ON_THRESHOLD = 0.5
TOY_OFF_THRESHOLD = 0.3

_BACKGROUND_RMS = 0.003  # about -50 dBFS
_EVENT_RMS = (0.05, 0.2)  # about -26 .. -14 dBFS
_FADE_SECONDS = 0.01
_SINE_HZ = (300.0, 1000.0)
_BEEP_HZ = (1500.0, 3000.0)
_BEEP_ON_OFF_SECONDS = (0.08, 0.14)
_CHIRP_HZ = (200.0, 6000.0)
_CHIRP_PERIOD_SECONDS = (0.25, 0.5)
#: Part of a toy clip the event fills; the rest (background only) gives negative patches.
_CLIP_EVENT_FRACTION = (0.3, 0.6)


def _sine(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * rng.uniform(*_SINE_HZ) * t + rng.uniform(0, 2 * np.pi))


def _beep(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    tone = np.sin(2 * np.pi * rng.uniform(*_BEEP_HZ) * t)
    on, off = rng.uniform(*_BEEP_ON_OFF_SECONDS, size=2)
    gate = ((t + rng.uniform(0, on + off)) % (on + off)) < on
    return tone * gate


def _chirp(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(*_CHIRP_PERIOD_SECONDS)
    f0, f1 = _CHIRP_HZ if rng.random() < 0.5 else _CHIRP_HZ[::-1]
    t = np.arange(n) / sr
    tau = (t + rng.uniform(0, period)) % period  # time within the current sweep
    k = np.log(f1 / f0) / period
    phase = 2 * np.pi * f0 * (np.exp(k * tau) - 1) / k
    return np.sin(phase)


def _white(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


_GENERATORS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "Sine wave": _sine,
    "Beep, bleep": _beep,
    "Chirp tone": _chirp,
    "White noise": _white,
}


def _resolve(label: str) -> str:
    if label in TOY_LABELS:
        return label
    for name, mid in TOY_LABELS.items():
        if label == mid:
            return name
    raise ValueError(f"toy label {label!r}; accepted names: {list(TOY_LABELS)} or their mids")


def toy_sound(label: str, n_samples: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` of the toy sound ``label`` (name or mid), float32, RMS in the event range.

    Starts and ends with a short fade so no click marks the boundary.
    """
    x = _GENERATORS[_resolve(label)](n_samples, sr, rng)
    rms = float(np.sqrt(np.mean(x**2))) if n_samples else 0.0
    x = x * (rng.uniform(*_EVENT_RMS) / max(rms, 1e-9))
    fade = min(int(_FADE_SECONDS * sr), n_samples // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[n_samples - fade :] *= ramp[::-1]
    return x.astype(np.float32)


def background(n_samples: int, rng: np.random.Generator, rms: float = _BACKGROUND_RMS) -> np.ndarray:
    """Quiet pink (1/f power) noise, ``(n_samples,)`` float32 at the given RMS."""
    if n_samples == 0:
        return np.zeros(0, dtype=np.float32)
    spec = np.fft.rfft(rng.standard_normal(n_samples))
    f = np.arange(spec.shape[0], dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n=n_samples)
    x *= rms / max(float(np.sqrt(np.mean(x**2))), 1e-12)
    return x.astype(np.float32)


def make_toy_scene(
    events: Sequence[tuple[str, float, float]],
    seconds: float,
    sr: int = 16000,
    seed: int = 0,
) -> np.ndarray:
    """A mono scene ``(round(seconds * sr),)`` float32: each ``(label, start_s, dur_s)``
    event sounds from ``start_s`` for ``dur_s`` seconds over quiet pink noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    out = background(n, rng)
    for label, start, dur in events:
        a, b = round(start * sr), round((start + dur) * sr)
        if not (0 <= a < b <= n):
            raise ValueError(
                f"event {label!r} at {start} s for {dur} s lies outside the {seconds} s scene"
            )
        out[a:b] += toy_sound(label, b - a, sr, rng)
    return out


def make_toy_patches(
    n_per_label: int, cfg: FeatureConfig, seed: int = 0, negatives: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Patch-length waveforms ``(N, cfg.patch_samples)`` and targets ``(N, len(TOY_LABELS))``.

    Each positive holds one toy sound over a random part (>= 1/3) of the patch, over
    background of random level (silence included); ``negatives`` * N more hold
    background only.
    """
    rng = np.random.default_rng(seed)
    names = list(TOY_LABELS)
    n_pos = n_per_label * len(names)
    n_neg = round(negatives * n_pos)
    n = cfg.patch_samples
    waves = np.zeros((n_pos + n_neg, n), dtype=np.float32)
    targets = np.zeros((n_pos + n_neg, len(names)), dtype=np.float32)
    for i in range(n_pos + n_neg):
        bg_rms = _BACKGROUND_RMS * rng.choice([0.0, 0.3, 1.0, 3.0])
        waves[i] = background(n, rng, bg_rms) if bg_rms > 0 else 0.0
        if i < n_pos:
            k = i % len(names)
            length = rng.integers(n // 3, n + 1)
            start = rng.integers(0, n - length + 1)
            waves[i, start : start + length] += toy_sound(names[k], int(length), cfg.sample_rate, rng)
            targets[i, k] = 1.0
    return waves, targets


def make_toy_clips(
    directory: str | Path, n_per_label: int = 8, seed: int = 0, seconds: float = 3.0
) -> Path:
    """Write toy FLAC clips and ``manifest.csv`` (``path,labels,onset,offset,source,split``).

    Each clip is ``seconds`` long and holds one toy sound between ``onset`` and
    ``offset`` (recorded in the manifest) over background; every fifth clip per label
    is ``split="val"``, the rest ``"train"``. Returns the manifest path.
    """
    import soundfile as sf

    from training.clips import Clip, write_manifest

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sr = FeatureConfig().sample_rate
    rng = np.random.default_rng(seed)
    clips = []
    for name in TOY_LABELS:
        slug = "".join(c if c.isalnum() else "_" for c in name.lower())
        for j in range(n_per_label):
            dur = rng.uniform(*_CLIP_EVENT_FRACTION) * seconds
            onset = rng.uniform(0.0, seconds - dur)
            wave = make_toy_scene([(name, onset, dur)], seconds, sr, seed=int(rng.integers(2**31)))
            path = directory / f"{slug}_{j:03d}.flac"
            sf.write(path, wave, sr)
            clips.append(
                Clip(path=path, labels=(name,), onset=round(onset, 3),
                     offset=round(onset + dur, 3), source="toy",
                     split="val" if j % 5 == 4 else "train")
            )
    manifest = directory / "manifest.csv"
    write_manifest(clips, manifest)
    return manifest


def make_toy_model(
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_per_label: int = 96,
    epochs: int = 12,
    batch_size: int = 32,
    model_config: ModelConfig = TOY_MODEL_CONFIG,
) -> Path:
    """Train :data:`TOY_MODEL_CONFIG` on toy patches and export ``out_dir/toy.onnx``.

    Deterministic for a seed. Writes ``toy.pt`` (a ``sed-train``-style checkpoint), the
    ONNX file with its contract (on 0.5 / off 0.3), ``labels.csv`` and
    ``thresholds.json``. Takes ~10-30 s on one core. Returns the ONNX path.
    """
    from training.export import export_onnx, make_contract
    from training.frontend import LogMel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = FeatureConfig()
    torch.manual_seed(seed)
    waves, targets = make_toy_patches(n_per_label, cfg, seed=seed)
    with torch.no_grad():
        x_all = LogMel(cfg)(torch.from_numpy(waves))
    y_all = torch.from_numpy(targets)
    model = SedNet(model_config, len(TOY_LABELS), cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * -(-len(x_all) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    log.info("toy model trained: final batch loss %.4f", loss.item())
    labels = [{"name": n, "mid": m} for n, m in TOY_LABELS.items()]
    ckpt = {
        "model": model.state_dict(),
        "model_config": model_config.to_dict(),
        "labels": labels,
        "features": cfg.to_dict(),
        "train_config": {"toy": True, "seed": seed, "epochs": epochs, "n_per_label": n_per_label},
        "data_summary": {n: n_per_label for n in TOY_LABELS},
        "epoch": epochs,
        "history": [],
    }
    torch.save(ckpt, out_dir / "toy.pt")
    n = len(labels)
    contract = make_contract(
        labels, cfg, on=[TOY_ON_THRESHOLD] * n, off=[TOY_OFF_THRESHOLD] * n,
        model_version=f"toy-seed{seed}",
        extra={"training": {"toy": True, "model": model_config.to_dict()},
               "data": ckpt["data_summary"]},
    )
    path = out_dir / "toy.onnx"
    export_onnx(model, contract, path, check_patches=x_all[:: max(1, len(x_all) // 16)].numpy())
    return path
