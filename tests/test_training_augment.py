"""training.augment: each effect changes the input when on and leaves it identical when off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from training.augment import AugmentConfig, SpecAugment, WaveAugment, mix_batch

SR = 16000
N = 15600
SWITCHES: dict[str, dict[str, Any]] = {
    "gain": {},
    "shift": {},
    "reverb": {"reverb_prob": 1.0},
    "band_limit": {"band_limit_prob": 1.0, "band_limit_hz": [4000.0]},
    "background": {"background_prob": 1.0},
    "noise_bed": {"noise_bed_prob": 1.0, "noise_bed_alone_prob": 0.0},
}


def only(name: str, **extra: object) -> AugmentConfig:
    """Every switch off except ``name``."""
    fields = AugmentConfig.off().to_dict()
    fields.update({name: True, **SWITCHES.get(name, {}), **extra})
    return AugmentConfig(**fields)


def noise(seed: int = 0, n: int = N) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_effect_changes_input_when_on_and_not_when_off(name: str) -> None:
    x = noise()
    bg = [noise(seed=7, n=3 * N)]
    on = WaveAugment(only(name), SR, bg, seed=1)(x.copy())
    assert on.shape == x.shape and on.dtype == np.float32
    assert not np.array_equal(on, x)
    off_cfg = AugmentConfig(**{**only(name).to_dict(), name: False})
    off = WaveAugment(off_cfg, SR, bg, seed=1)(x.copy())
    np.testing.assert_array_equal(off, x)


def test_all_off_is_identity_and_torch_in_torch_out() -> None:
    x = noise()
    aug = WaveAugment(AugmentConfig.off(), SR, [noise(3)], seed=0)
    np.testing.assert_array_equal(aug(x), x)
    t = torch.from_numpy(x)
    out = WaveAugment(AugmentConfig(), SR, [noise(3)], seed=0)(t)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape


def test_band_limit_removes_energy_above_cutoff() -> None:
    x = noise()
    y = WaveAugment(only("band_limit"), SR, seed=0)(x)
    above_before = band_energy(x, 4000, SR / 2) / band_energy(x, 0, SR / 2)
    above_after = band_energy(y, 4000, SR / 2) / band_energy(y, 0, SR / 2)
    assert above_before > 0.4
    assert above_after < 1e-10
    assert band_energy(y, 100, 3900) == pytest.approx(band_energy(x, 100, 3900), rel=0.01)
    # a cutoff at Nyquist leaves the signal alone
    nyq = WaveAugment(only("band_limit", band_limit_hz=[8000.0]), SR, seed=0)(x)
    np.testing.assert_array_equal(nyq, x)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_background_snr_is_as_requested(snr: float) -> None:
    x = noise(1).astype(np.float64)
    aug = WaveAugment(only("background", snr_db=[snr, snr]), SR, [10 * noise(2, 2 * N)], seed=0)
    added = aug(x.astype(np.float32)).astype(np.float64) - x
    measured = 10 * np.log10(np.mean(x**2) / np.mean(added**2))
    assert measured == pytest.approx(snr, abs=0.01)


def decay_time(x: np.ndarray, start: int, drop_db: float) -> float:
    """Seconds after ``start`` until the remaining energy falls ``drop_db`` below the total."""
    tail = np.cumsum((x[start:].astype(np.float64) ** 2)[::-1])[::-1]
    below = np.flatnonzero(10 * np.log10(tail / tail[0] + 1e-30) < -drop_db)
    return below[0] / SR if below.size else x.size / SR


def test_reverb_lengthens_decay() -> None:
    x = np.zeros(N, dtype=np.float32)
    x[1600:1680] = noise(4, 80)  # a 5 ms burst at 0.1 s
    y = WaveAugment(only("reverb", rt60_s=[0.6, 0.6]), SR, seed=0)(x)
    assert decay_time(x, 1600, 30) < 0.01
    assert decay_time(y, 1600, 30) > 0.1
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-4)


def test_reverb_with_user_impulse_responses(tmp_path: Path) -> None:
    ir = np.zeros(800)
    ir[160] = 1.0  # a pure 10 ms delay
    (tmp_path / "irs").mkdir()
    sf.write(tmp_path / "irs" / "delay.wav", ir, SR)
    x = noise(5)
    y = WaveAugment(only("reverb", ir_dir=str(tmp_path / "irs")), SR, seed=0)(x)
    gain = float(y[160:] @ x[:-160] / (x[:-160] @ x[:-160]))  # RMS matching rescales
    assert gain == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(y[160:], gain * x[:-160], atol=1e-5)
    assert np.abs(y[:160]).max() < 1e-5


def test_mix_batch_unions_labels_and_sums_waves() -> None:
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(4, 100, generator=g)
    targets = torch.eye(4)
    mixed, union = mix_batch(waves, targets, prob=1.0, generator=torch.Generator().manual_seed(1))
    assert (union.sum(dim=1) == 2).all()  # each example gains its partner's label
    for i in range(4):
        j = int(torch.nonzero(union[i] * (1 - targets[i]))[0])
        resid = mixed[i] - waves[i]
        gain = float((resid @ waves[j]) / (waves[j] @ waves[j]))
        assert 10 ** (-6 / 20) - 1e-5 <= gain <= 1 + 1e-5
        torch.testing.assert_close(resid, gain * waves[j])
    same_w, same_t = mix_batch(waves, targets, prob=0.0, generator=g)
    assert torch.equal(same_w, waves) and torch.equal(same_t, targets)


def test_spec_augment_train_only_and_each_part_changes() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 96, 64)
    for kwargs in ({"time_masks": 2}, {"freq_masks": 2}, {"time_warp": 8}, {"filter_db": 6.0}):
        spec = SpecAugment(**{"time_masks": 0, "freq_masks": 0, "time_warp": 0, **kwargs})
        assert not torch.equal(spec.train()(x), x), kwargs
        assert torch.equal(spec.eval()(x), x)
    off = SpecAugment(time_masks=0, freq_masks=0, time_warp=0).train()
    assert torch.equal(off(x), x)


def test_spec_augment_filter_is_a_smooth_eq_on_the_magnitude() -> None:
    torch.manual_seed(2)
    off, max_db, points = 1e-3, 6.0, 4
    x = torch.log(torch.rand(4, 96, 64) * 2 + 0.05 + off)
    x[:, :, 10] = np.log(off)  # a silent band
    spec = SpecAugment(time_masks=0, freq_masks=0, time_warp=0, filter_db=max_db,
                       filter_points=points, log_offset=off)
    assert torch.equal(spec.eval()(x), x)
    y = spec.train()(x).double()
    assert torch.allclose(y[:, :, 10], x[:, :, 10].double())  # silence stays silence
    keep = [m for m in range(64) if m != 10]
    mag_x, mag_y = torch.exp(x.double()) - off, torch.exp(y) - off
    db = 20 * torch.log10(mag_y[:, :, keep] / mag_x[:, :, keep])  # (B, frames, mels)
    assert torch.allclose(db, db[:, :1].expand_as(db), atol=1e-3)  # one gain per mel bin
    assert float(db.abs().max()) <= max_db + 1e-3
    assert float(db.abs().max()) > 0.5  # it did filter
    resp = db[:, 0]  # (B, 63): linear between at most points - 2 interior kinks
    kinks = (resp[:, 2:] - 2 * resp[:, 1:-1] + resp[:, :-2]).abs() > 1e-3
    # the bin dropped at 10 joins two steps, so count kinks away from it
    kinks[:, 7:10] = False
    assert int(kinks.sum(dim=1).max()) <= points - 2
    with pytest.raises(ValueError, match="filter_points=1"):
        SpecAugment(filter_points=1)
    with pytest.raises(ValueError, match="filter_db=-1"):
        AugmentConfig(filter_db=-1)


def test_spec_augment_masks_fill_with_mean_within_width() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 96, 64)
    y = SpecAugment(time_masks=1, time_width=10, freq_masks=0, time_warp=0).train()(x)
    for i in range(2):
        changed = (y[i] != x[i]).any(dim=1)
        assert 1 <= int(changed.sum()) <= 10
        assert torch.allclose(y[i][changed], x[i].mean().expand_as(y[i][changed]))


def test_noise_bed_under_the_clip_keeps_labels_at_a_level_in_range() -> None:
    x = noise(6)
    target = np.array([0.0, 1.0, 1.0], dtype=np.float32)
    aug = WaveAugment(only("noise_bed", noise_bed_prob=1.0, noise_bed_alone_prob=0.0), SR, seed=0)
    levels = []
    for _ in range(40):
        y, t = aug.apply(x, target)
        assert t is target or np.array_equal(t, target)
        added = y.astype(np.float64) - x
        levels.append(10 * np.log10(np.mean(added**2)))
    assert -70.05 <= min(levels) and max(levels) <= -19.95
    assert max(levels) - min(levels) > 20  # drawn across the range, not fixed
    assert not AugmentConfig().noise_bed and not AugmentConfig.off().noise_bed  # off by default


def test_noise_bed_alone_replaces_the_clip_and_empties_its_labels() -> None:
    x = noise(7)
    target = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    cfg = only("noise_bed", noise_bed_alone_prob=1.0, noise_bed_dbfs=[-50.0, -30.0],
               noise_bed_kinds=["hum50", "pink"])
    aug = WaveAugment(cfg, SR, seed=0)
    for _ in range(10):
        y, t = aug.apply(x, target)
        assert t.shape == target.shape and not t.any()
        level = 10 * np.log10(np.mean(y.astype(np.float64) ** 2))
        assert -50.05 <= level <= -29.95  # the bed alone: x (-20 dBFS) is gone
    assert target.tolist() == [1.0, 0.0, 1.0]  # the caller's array is untouched
    with pytest.raises(ValueError, match=r"call WaveAugment\.apply"):
        aug(x)  # the wave-only call cannot carry the emptied labels
    # band-limited examples get a band-limited bed, still at its level
    lim = WaveAugment(AugmentConfig(**{**cfg.to_dict(), "noise_bed_kinds": ["white"],
                                       "band_limit": True, "band_limit_prob": 1.0,
                                       "band_limit_hz": [4000.0]}), SR, seed=0)
    y, _ = lim.apply(x, target)
    assert band_energy(y, 4000, SR / 2) < 1e-10 * band_energy(y, 0, SR / 2)
    assert -50.05 <= 10 * np.log10(np.mean(y.astype(np.float64) ** 2)) <= -29.95


def test_noise_bed_leaves_the_other_steps_draws_alone() -> None:
    x = noise(8)
    base = AugmentConfig(reverb_prob=1.0, band_limit_prob=0.0)
    with_bed = AugmentConfig(**{**base.to_dict(), "noise_bed": True, "noise_bed_prob": 0.0,
                                "noise_bed_alone_prob": 0.0})
    np.testing.assert_array_equal(WaveAugment(base, SR, seed=3)(x), WaveAugment(with_bed, SR, seed=3)(x))


def test_config_validation_and_toml_lists() -> None:
    cfg = AugmentConfig(gain_db=[-3, 3], band_limit_hz=[4000])  # type: ignore[arg-type]
    assert cfg.gain_db == (-3.0, 3.0) and cfg.band_limit_hz == (4000.0,)
    with pytest.raises(ValueError, match=r"gain_db=\[3.0, -3.0\]"):
        AugmentConfig(gain_db=(3.0, -3.0))
    with pytest.raises(ValueError, match="reverb_prob=2"):
        AugmentConfig(reverb_prob=2)
    with pytest.raises(ValueError, match="sample_rate"):
        WaveAugment(AugmentConfig(), [], 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"noise_bed_kinds=\['rain'\]"):
        AugmentConfig(noise_bed_kinds=("rain",))
    with pytest.raises(ValueError, match="noise_bed_dbfs"):
        AugmentConfig(noise_bed_dbfs=(-20.0, 6.0))
    with pytest.raises(ValueError, match=r"noise_bed_alone_prob=1\.5"):
        AugmentConfig(noise_bed_alone_prob=1.5)
