"""training.distill: the mel-domain augmentations, labelled-clip targets, and a short run
from caches to a checkpoint that sed-export turns into a working ONNX model."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from detector.frontend.features import FeatureConfig, log_mel  # noqa: E402
from detector.model.yamnet import find_yamnet  # noqa: E402
from training.distill import (  # noqa: E402
    DistillConfig,
    LabelledSet,
    MelAugment,
    MelAugmentConfig,
    _onset_floor,
    _teacher_agreement,
    load_config,
    make_beds,
    train,
)

SR = 16000
CFG = FeatureConfig()


def _noise_mel(rng: np.random.Generator, seconds: float = 0.96, amp: float = 0.1) -> np.ndarray:
    x = amp * rng.standard_normal(CFG.patch_samples if seconds == 0.96 else round(seconds * SR))
    return log_mel(x, CFG)[: CFG.patch_frames]


def _aug(**kw: object) -> MelAugment:
    off = dict(gain_db=(0.0, 0.0), mix_prob=0.0, bed_prob=0.0, reverb_prob=0.0,
               band_limit_prob=0.0)
    off.update(kw)
    beds = [np.full((400, CFG.n_mels), 1.0, dtype=np.float32)]
    return MelAugment(MelAugmentConfig.from_dict(off), CFG, beds)


def test_identity_when_everything_is_off() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([_noise_mel(rng) for _ in range(3)])
    y, took, late = _aug()(x, x[::-1], np.zeros(3, bool), rng)
    assert np.allclose(y, x, atol=1e-4) and not took.any() and not late.any()


def test_gain_mix_bed_alone_band_limit_and_reverb() -> None:
    rng = np.random.default_rng(1)
    x = np.stack([_noise_mel(rng) for _ in range(4)])
    aug = _aug()
    mag = aug.magnitude(x)
    # gain: +6 dB doubles the magnitude
    y, _, _ = _aug(gain_db=(6.0206, 6.0206))(x, x, np.zeros(4, bool), rng)
    assert np.allclose(aug.magnitude(y), 2 * mag, rtol=1e-3, atol=1e-6)
    # mixing at 0 dB: power sum; every example took its partner's labels
    y, took, _ = _aug(mix_prob=1.0, mix_gain_db=(0.0, 0.0))(x, x[::-1], np.zeros(4, bool), rng)
    assert took.all()
    assert np.allclose(aug.magnitude(y), np.sqrt(mag**2 + mag[::-1] ** 2), rtol=1e-3, atol=1e-6)
    # a bed alone replaces the patch, at the drawn level, and takes no labels
    alone = np.array([True, False, False, False])
    y, took, _ = _aug(bed_dbfs=(-20.0, -20.0))(x, x, alone, rng)
    assert np.allclose(aug.magnitude(y[0]), 0.1, rtol=1e-3) and not took[0]
    assert np.allclose(y[1:], x[1:], atol=1e-4)
    # band-limiting empties the bands above the cut-off, keeps the ones well below
    y, _, _ = _aug(band_limit_prob=1.0, band_limit_hz=(3400.0,))(x, x, np.zeros(4, bool), rng)
    hi, lo = aug.centres > 3700, aug.centres < 3100
    assert np.all(aug.magnitude(y)[:, :, hi] < 1e-6)
    assert np.allclose(aug.magnitude(y)[:, :, lo], mag[:, :, lo], rtol=1e-3, atol=1e-6)
    # reverb never removes energy and leaves a tail after a burst ends
    burst = np.full((1, CFG.patch_frames, CFG.n_mels), np.log(CFG.log_offset), np.float32)
    burst[0, 10:20] = 0.0
    y, _, _ = _aug(reverb_prob=1.0, rt60_s=(1.0, 1.0), wet_db=(0.0, 0.0))(
        burst, burst, np.zeros(1, bool), rng)
    assert np.all(y >= burst - 1e-5)
    assert np.all(y[0, 25, :8] > burst[0, 25, :8] + 1.0)  # low bands still ring 50 ms later
    assert np.all(y[0, :10] <= burst[0, :10] + 1e-5)  # causal: nothing before the burst


def test_late_onset_moves_the_patch_start_to_its_end_over_a_bed() -> None:
    rng = np.random.default_rng(2)
    x = np.stack([_noise_mel(rng, amp=0.3) for _ in range(6)])
    aug = _aug(onset_prob=1.0, onset_tail_s=(0.1, 0.1), bed_dbfs=(-60.0, -60.0))
    alone = np.zeros(6, bool)
    alone[0] = True
    y, took, late = aug(x, x, alone, rng)
    assert late.tolist() == [False] + [True] * 5 and not took.any()
    mag, ymag = aug.magnitude(x), aug.magnitude(y)
    tail = 10  # 0.1 s of 10 ms frames
    # the first 0.1 s of each patch is now its last 0.1 s (a quiet bed added in power)
    assert np.allclose(ymag[1:, -tail:], mag[1:, :tail], rtol=2e-2, atol=2e-3)
    # before it only the bed: -60 dBFS is 1e-3 of the unit bed
    assert np.allclose(ymag[1:, :-tail], 1e-3, rtol=1e-2)
    assert np.allclose(ymag[0], 1e-3, rtol=1e-2)  # a bed alone is never shifted


def test_beds_cover_every_noise_kind_at_unit_level() -> None:
    from training.corpus import noise

    beds = make_beds(CFG, seconds=2.0)
    assert len(beds) == len(noise.KINDS)
    assert all(b.shape[1] == CFG.n_mels and np.isfinite(b).all() for b in beds)


def _one_clip_manifest(tmp_path: Path, seconds: float, rows: list[tuple[str, str, str]]) -> Path:
    """A manifest of one silent clip ``a.flac`` with ``(labels, onset, offset)`` rows."""
    a = tmp_path / "a.flac"
    sf.write(a, np.zeros(int(seconds * SR), np.float32), SR)
    m = tmp_path / "m.csv"
    with m.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "onset", "offset"])
        w.writerows([a.name, *row] for row in rows)
    return m


def test_labelled_targets_follow_weak_and_strong_labels(tmp_path: Path) -> None:
    names = ["Speech", "Dog", "Music"]
    m = _one_clip_manifest(tmp_path, 4.0, [("Music", "", ""), ("Dog", "2.0", "2.5")])
    ds = LabelledSet(m, tmp_path / "cache", names, CFG)
    starts = ds.items[:, 1] * CFG.hop_length / SR
    dog = ds.targets[:, 1] > 0
    assert ds.targets[:, 2].all() and not ds.targets[:, 0].any()
    for s, d in zip(starts, dog, strict=True):
        overlap = min(s + 0.96, 2.5) - max(s, 2.0)
        assert d == (overlap >= 0.25)
    assert dog.any() and not dog.all()
    assert ds.clip_targets[0].tolist() == [0.0, 1.0, 1.0]


def test_a_strong_overlap_in_seconds_labels_patches_that_hold_a_long_sounds_start(tmp_path: Path) -> None:
    names = ["Speech", "Dog"]
    m = _one_clip_manifest(tmp_path, 6.0, [
        ("Dog", "2.1", "4.9"),  # long: the half rule needs 0.48 s of it
        ("Speech", "0.5", "0.7"),  # short: half of it, 0.1 s, either way
    ])
    half = LabelledSet(m, tmp_path / "cache", names, CFG)
    early = LabelledSet(m, tmp_path / "cache", names, CFG, strong_overlap_s=0.2)
    starts = half.items[:, 1] * CFG.hop_length / SR
    dog_overlap = np.minimum(starts + 0.96, 4.9) - np.maximum(starts, 2.1)
    speech_overlap = np.minimum(starts + 0.96, 0.7) - np.maximum(starts, 0.5)
    assert ((half.targets[:, 1] > 0) == (dog_overlap >= 0.48)).all()
    assert ((early.targets[:, 1] > 0) == (dog_overlap >= 0.2)).all()
    # the patch at 1.44-2.40 s holds the dog's first 0.3 s: labelled only with the overlap in seconds
    only_early = (early.targets[:, 1] > 0) & ~(half.targets[:, 1] > 0)
    assert np.allclose(starts[only_early], [1.44])
    assert ((half.targets[:, 0] > 0) == (speech_overlap >= 0.1)).all()
    assert (early.targets[:, 0] == half.targets[:, 0]).all()


def test_an_onset_patch_ends_just_after_the_event_starts_and_is_taught_its_labels(tmp_path: Path) -> None:
    names = ["Speech", "Dog", "Bark", "Music"]
    m = _one_clip_manifest(tmp_path, 6.0, [
        ("Music", "0.0", "6.0"),  # starts with the recording: no onset inside it
        ("Dog|Bark", "3.0", "4.5"),
        ("Speech", "0.3", "0.8"),  # early: the onset patch needs silence in front
    ])
    ds = LabelledSet(m, tmp_path / "cache", names, CFG)
    assert sorted((on, labs) for _, on, labs in ds.onsets) == [(0.3, (0,)), (3.0, (1, 2))]
    dog = next(k for k, (_, on, _) in enumerate(ds.onsets) if on == 3.0)
    x, t = ds.onset_patch(dog, 0.25, CFG)
    fs = CFG.hop_length / SR
    assert x.shape == (CFG.patch_frames, CFG.n_mels)
    end = round(3.25 / fs)
    assert np.array_equal(x, ds.mels[0][end - CFG.patch_frames : end])
    # the dog's first 0.25 s: under the half rule a grid patch would not be labelled Dog
    assert t.tolist() == [0.0, 1.0, 1.0, 1.0]
    x, t = ds.onset_patch(1 - dog, 0.2, CFG)  # the speech at 0.3 s: 0.5 s of audio, silence before
    silent = CFG.patch_frames - round(0.5 / fs)
    assert np.all(x[:silent] == np.float16(np.log(CFG.log_offset)))
    assert np.array_equal(x[silent:], ds.mels[0][: round(0.5 / fs)])
    assert t.tolist() == [1.0, 0.0, 0.0, 1.0]
    # a soft floor: 0.55 s of the dog overlaps by more than the half rule's 0.48 s, yet the
    # event itself is taught at the floor alone; the weak Music is still 1
    _, t = ds.onset_patch(dog, 0.55, CFG, floor=0.7)
    assert np.allclose(t, [0.0, 0.7, 0.7, 1.0])


def test_a_clip_onset_starts_where_the_clip_sound_starts_and_is_taught_at_the_floor(tmp_path: Path) -> None:
    names = ["Speech", "Dog"]
    t = np.arange(int(1.4 * SR)) / SR
    wave = np.where(t >= 0.4, 0.3 * np.sin(2 * np.pi * 1000 * t), 1e-4 * np.sin(2 * np.pi * 300 * t))
    sf.write(tmp_path / "dog.flac", wave.astype(np.float32), SR)
    sf.write(tmp_path / "scene.flac", np.zeros(3 * SR, np.float32), SR)
    m = tmp_path / "m.csv"
    with m.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "onset", "offset", "source"])
        w.writerow(["dog.flac", "Dog", "0.000", "1.400", "pkg:dog.wav"])  # a clip labelled as a whole
        w.writerow(["scene.flac", "Speech", "0.000", "3.000", "scene:pkg:a.wav"])  # a scene's: no clip onset
    ds = LabelledSet(m, tmp_path / "cache", names, CFG)
    assert len(ds.clip_onsets) == 1 and not ds.onsets
    i, start, labs = ds.clip_onsets[0]
    assert labs == (1,) and abs(start - 0.4) <= 0.03  # the quiet lead-in is 50 dB down
    x, tgt = ds.onset_patch(0, 0.3, CFG, floor=0.6, clip=True)
    end = round((start + 0.3) / (CFG.hop_length / SR))
    assert np.array_equal(x[-end:], ds.mels[i][:end])
    assert np.all(x[: CFG.patch_frames - end] == np.float16(np.log(CFG.log_offset)))
    # 0.7 s of the clip would label a grid patch Dog; the onset patch is taught the floor
    assert np.allclose(tgt, [0.0, 0.6])


def test_the_onset_floor_grows_linearly_with_the_tail() -> None:
    cfg = DistillConfig(onset_event_tail_s=(0.2, 0.6), onset_event_floor=(0.5, 1.0))
    assert [round(_onset_floor(cfg, s), 6) for s in (0.2, 0.4, 0.6, 0.9)] == [0.5, 0.75, 1.0, 1.0]
    assert _onset_floor(DistillConfig(), 0.3) == 1.0
    with pytest.raises(ValueError, match="onset_event_floor"):
        DistillConfig(onset_event_floor=(0.0, 1.0))
    with pytest.raises(ValueError, match="onset_clip_share"):
        DistillConfig(onset_clip_share=1.5)


def test_excluded_sources_leave_out_clips_and_the_scenes_that_hold_them(tmp_path: Path) -> None:
    names = ["Speech", "Dog", "Cough"]
    m = tmp_path / "m.csv"
    rows = [("a.flac", "Speech", "pkg:a.wav"), ("b.flac", "Cough", "virufy:b.ogg"),
            ("s.flac", "Speech", "scene:pkg:c.wav"), ("s.flac", "Dog", "scene:urbansound8k:d.ogg")]
    for name, _, _ in rows:
        sf.write(tmp_path / name, np.zeros(2 * SR, np.float32), SR)
    with m.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "onset", "offset", "source"])
        w.writerows([n, lab, "", "", src] for n, lab, src in rows)
    every = LabelledSet(m, tmp_path / "cache", names, CFG)
    free = LabelledSet(m, tmp_path / "cache", names, CFG, exclude_sources=("urbansound8k:", "virufy:"))
    assert len(every.mels) == 3 and len(free.mels) == 1
    assert free.clip_targets[0].tolist() == [1.0, 0.0, 0.0]  # a.flac alone


def test_teacher_agreement_is_one_for_the_teacher_and_lower_for_noise() -> None:
    rng = np.random.default_rng(2)
    t = rng.random((200, 5))
    assert _teacher_agreement(t, t) == pytest.approx(1.0)
    assert _teacher_agreement(rng.random((200, 5)), t) < 0.8


def test_a_bed_alone_is_taught_only_noise_classes() -> None:
    from training.distill import noise_classes, targets

    names = ["Music", "Hum", "Wind", "Speech"]
    keep = np.array([n in noise_classes() for n in names], dtype=np.float32)
    assert keep.tolist() == [0.0, 1.0, 0.0, 0.0]
    soft = np.array([[0.9, 0.8, 0.6, 0.1], [0.9, 0.8, 0.6, 0.1]], dtype=np.float32)
    hard = np.array([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    alone = np.array([True, False])
    out = targets(soft, hard, alone, keep)
    assert out[0].tolist() == pytest.approx([0.0, 0.8, 0.0, 0.0])  # YAMNet's "Music" on hum: 0
    assert out[1].tolist() == pytest.approx([0.9, 0.8, 0.6, 1.0])  # elsewhere: teacher, labels as floors
    assert soft[0, 0] == pytest.approx(0.9)  # the teacher's array is left alone
    assert targets(soft, hard, alone, np.ones(4, np.float32))[0].tolist() == pytest.approx(soft[0].tolist())
    with pytest.raises(ValueError, match="noise_classes"):
        DistillConfig(bed_alone_targets="silence")


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('epochs = 2\nepoch = 3\n')
    with pytest.raises(ValueError, match="epoch"):
        load_config(p)
    p.write_text('[augment]\nmix_probability = 0.5\n')
    with pytest.raises(ValueError, match="mix_probability"):
        load_config(p)
    assert load_config(None, {"epochs": 3}).epochs == 3


def _cached_pool(tmp_path: Path, files: int, prefix: str, seed: int) -> Path:
    """A pool of ``files`` 3 s noise recordings of one package, built and cached (YAMNet)."""
    from training.corpus import pool_cache
    from training.corpus.pool import POOL_COLUMNS

    rng = np.random.default_rng(seed)
    pool = tmp_path / "pool"
    (pool / "audio").mkdir(parents=True)
    rows = []
    for i in range(files):
        sf.write(pool / "audio" / f"{prefix}{i}.flac", (0.1 * rng.standard_normal(3 * SR)).astype(np.float32), SR)
        rows.append({"hash": f"{prefix}{i}", "path": f"audio/{prefix}{i}.flac", "package": "fx",
                     "relpath": str(i), "seconds": 3, "source_rate": SR, "kind": "events",
                     "license": "", "noncommercial": 0})
    (pool / "done").mkdir()
    with (pool / "done" / "fx.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=POOL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    assert pool_cache.main_cache(pool) == 0
    return pool


@pytest.mark.skipif(find_yamnet(None) is None, reason="YAMNet not fetched (bin/setup does)")
def test_short_run_exports_a_working_model(tmp_path: Path) -> None:
    from training.export import main as export_main

    pool = _cached_pool(tmp_path, files=6, prefix="h", seed=3)
    rng = np.random.default_rng(3)
    data = Path(__file__).parent / "data"
    m = tmp_path / "m.csv"
    m.write_text(f'path,labels,onset,offset\n{data / "baby_cry.flac"},"Baby cry, infant cry",,\n'
                 f'{data / "speech_digit.flac"},Speech,,\n'
                 f'{data / "baby_cry.flac"},"Crying, sobbing",1.5,3.0\n')  # a strong event: onset examples
    cfg = DistillConfig(pool=str(pool), train_manifest=str(m), val_manifest=str(m),
                        mel_cache=str(tmp_path / "mc"), out_dir=str(tmp_path / "run"),
                        epochs=1, steps_per_epoch=2, batch_size=16, pool_val_percent=50,
                        threads=1, val_patches=50, labelled_fraction=0.5, onset_events=0.5,
                        onset_clip_share=0.5, onset_event_floor=(0.5, 1.0))
    last = train(cfg)
    ck = torch.load(last, weights_only=True)
    assert len(ck["labels"]) == 521 and ck["history"][0]["examples_per_s"] > 0
    assert ck["train_config"]["recipe"] == "distill"
    assert ck["data_summary"]["strong_onsets"] == 1
    assert ck["data_summary"]["clip_onsets"] == 1  # the digit; the cry holds a strong event
    assert ck["data_summary"]["onset_examples_per_batch"] == 4  # half of 8 labelled
    # resuming a finished run changes nothing
    before = {k: v.clone() for k, v in ck["model"].items()}
    train(cfg, resume=True)
    after = torch.load(last, weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    out = tmp_path / "export"
    assert export_main([str(last), "--out", str(out), "--model-version", "test-v2"]) == 0
    from detector.model.scorer import OnnxScorer

    scorer = OnnxScorer(out / "model.onnx", "cpu", 1)
    assert len(scorer.contract.labels) == 521
    s = scorer.score(_noise_mel(rng)[None].astype(np.float32))
    assert s.shape == (1, 521) and np.all((s >= 0) & (s <= 1))



@pytest.mark.skipif(find_yamnet(None) is None, reason="YAMNet not fetched (bin/setup does)")
def test_embedding_target_trains_a_projection_and_resumes(tmp_path: Path) -> None:
    pool = _cached_pool(tmp_path, files=4, prefix="e", seed=4)
    data = Path(__file__).parent / "data"
    m = tmp_path / "m.csv"
    m.write_text(f'path,labels\n{data / "speech_digit.flac"},Speech\n')
    cfg = DistillConfig(pool=str(pool), train_manifest=str(m), val_manifest=str(m),
                        mel_cache=str(tmp_path / "mc"), out_dir=str(tmp_path / "run"),
                        epochs=1, steps_per_epoch=2, batch_size=8, pool_val_percent=50,
                        threads=1, val_patches=20, embedding_weight=0.5)
    last = train(cfg)
    ck = torch.load(last, weights_only=True)
    assert ck["embed_proj"]["weight"].shape == (1024, 128)  # small preset: 128-d patch embedding
    d = ck["history"][0]["train_embedding_cosine_distance"]
    assert 0.0 < d <= 2.0
    assert not any(k.startswith("embed_proj") for k in ck["model"])  # not part of the exported model
    resumed = train(dataclasses.replace(cfg, epochs=2), resume=True)
    assert len(torch.load(resumed, weights_only=True)["history"]) == 2
    plain = dataclasses.replace(cfg, embedding_weight=0.0, out_dir=str(tmp_path / "run2"))
    train(plain)
    with pytest.raises(ValueError, match="without embedding_weight"):
        train(dataclasses.replace(plain, epochs=2, embedding_weight=0.5), resume=True)

def test_validation_groups_are_left_out_of_the_pool(tmp_path: Path) -> None:
    from training.distill import source_key, validation_sources

    clips = tmp_path / "clips.csv"
    clips.write_text("path,labels,onset,offset,source,split,group,role,sha256\n"
                     "a,Dog,,,pkg:dogs/bark1.wav,val,pkg:dogs/bark,event,x\n"
                     "b,Dog,,,pkg:dogs/bark2.wav,train,pkg:dogs/bark,event,x\n"
                     "c,Cat,,,pkg:cats/meow.wav,train,pkg:cats/meow,event,x\n"
                     "d,Siren,,,urbansound8k:fold1/1.flac,val,us:1,event,x\n")
    out = validation_sources(clips)
    # the whole group of a validation clip, the training take included
    assert out == {"pkg:dogs/bark1.wav", "pkg:dogs/bark2.wav", "urbansound8k:fold1/1.flac"}
    assert source_key({"package": "shared:urbansound8k", "relpath": "fold1/1.flac"}) in out
    assert source_key({"package": "pkg", "relpath": "cats/meow.wav"}) not in out


def _fake_pool(teachers: list[np.ndarray]) -> object:
    """A PoolSet over cached teacher scores alone (one row per 0.48 s patch)."""
    from training.corpus.pool_cache import TEACHER_HOP_FRAMES
    from training.distill import PoolSet

    pool = object.__new__(PoolSet)
    pool.teacher = teachers
    pool.train = np.array([(f, r * TEACHER_HOP_FRAMES) for f, t in enumerate(teachers)
                           for r in range(t.shape[0])], dtype=np.int64)
    return pool


def test_balanced_draws_see_a_rare_class_as_often_as_a_common_one() -> None:
    from training.distill import BalancedSampler

    # 3 classes over 1,000 patches in two files: class 0 on 900, class 1 on 60, class 2 on 5
    t = np.zeros((1000, 3), dtype=np.float32)
    t[:900, 0] = 0.9
    t[900:960, 1] = 0.5
    t[960:965, 2] = 0.8
    pool = _fake_pool([t[:700], t[700:]])
    hits = pool.train_hits(0.3)
    assert hits.shape == (1000, 3) and list(hits.sum(axis=0)) == [900, 60, 5]
    rng = np.random.default_rng(0)
    uniform = BalancedSampler(pool, 0.0, 0.3, 20).draw(rng, 4000)
    assert np.array_equal(uniform, pool.train[np.random.default_rng(0).integers(1000, size=4000)])
    s = BalancedSampler(pool, 1.0, 0.3, 20)
    assert list(s.classes) == [0, 1]  # class 2 has fewer than 20 patches: not a class to balance
    items = s.draw(rng, 4000)
    idx = items[:, 0] * 700 + items[:, 1] // 48  # back to the patch's row in t
    share1 = np.mean((idx >= 900) & (idx < 960))
    assert 0.45 < share1 < 0.55  # one class in two, against 6 % of the pool
    half = BalancedSampler(pool, 0.5, 0.3, 20).draw(rng, 4000)
    idx = half[:, 0] * 700 + half[:, 1] // 48
    assert 0.25 < np.mean((idx >= 900) & (idx < 960)) < 0.35  # 0.5 * 0.5 + 0.5 * 0.06
    with pytest.raises(ValueError, match="balance_min_patches"):
        BalancedSampler(pool, 0.5, 0.3, 5000)
    with pytest.raises(ValueError, match="pool_balance"):
        DistillConfig(pool_balance=1.5)
