"""training.data: ontology, manifests, dataset layouts, waveform cache, patches, sampling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from detector.frontend.features import FeatureConfig
from training.data import (
    BalancedSampler,
    Clip,
    LabelError,
    LayoutError,
    ManifestError,
    Ontology,
    PatchDataset,
    WaveformStore,
    content_hash,
    dedup_clips,
    esc50_table,
    group_split,
    read_audioset_strong,
    read_audioset_weak,
    read_esc50,
    read_folder_per_label,
    read_fsd50k,
    read_manifest,
    write_manifest,
)

CFG = FeatureConfig()
SR = CFG.sample_rate
ONT = Ontology.load()
DOG_MID = ONT.mid("Dog")


def tone(path: Path, seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(round(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(x[:, None], channels, axis=1) if channels > 1 else x, sr)
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# --- ontology ---------------------------------------------------------------------------

def test_ontology_resolves_names_mids_and_case() -> None:
    assert len(ONT) == 632
    assert ONT.resolve("Dog") == "Dog"
    assert ONT.resolve(DOG_MID) == "Dog" and ONT.name(DOG_MID) == "Dog"
    assert ONT.resolve("baby cry, infant cry") == "Baby cry, infant cry"
    assert "Bark" in ONT.children("Dog")
    assert "Bark" in ONT.children("Animal", recursive=True)
    with pytest.raises(LabelError, match="did you mean 'Dog'"):
        ONT.resolve("Dgo")


def test_esc50_table_covers_all_50_categories() -> None:
    table = esc50_table(ONT)
    assert len(table) == 50
    assert table["crying_baby"] == ("Baby cry, infant cry",)
    assert all(labels for labels in table.values())


# --- manifest ---------------------------------------------------------------------------

def test_manifest_reads_names_mids_strong_rows_and_extra_columns(tmp_path: Path) -> None:
    tone(tmp_path / "audio" / "a.wav", 1.0)
    tone(tmp_path / "audio" / "b.wav", 2.0)
    m = write_csv(tmp_path / "m.csv", [
        ["path", "labels", "onset", "offset", "source", "split", "license"],
        ["audio/a.wav", f"Baby cry, infant cry|{DOG_MID}", "", "", "s1", "", "CC0"],
        ["audio/b.wav", "Dog", "0.5", "1.0", "s2", "val", "CC0"],
        ["audio/b.wav", "Bark", "1.2", "1.9", "s2", "val", "CC0"],
    ])
    clips = read_manifest(m, ONT)
    assert clips[0] == Clip(tmp_path / "audio" / "a.wav", ("Baby cry, infant cry", "Dog"), None, None, "s1", None)
    assert clips[1].onset == 0.5 and clips[1].offset == 1.0 and clips[1].split == "val"
    assert clips[2].labels == ("Bark",) and clips[2].path == clips[1].path
    out = write_manifest(clips, tmp_path / "copy.csv")
    assert read_manifest(out, ONT) == clips


def test_manifest_two_column_minimum(tmp_path: Path) -> None:
    tone(tmp_path / "a.wav", 0.5)
    m = write_csv(tmp_path / "m.csv", [["path", "labels"], ["a.wav", "Speech"]])
    assert read_manifest(m, ONT) == [Clip(tmp_path / "a.wav", ("Speech",))]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["a.wav", "Dgo", "", ""], r"m\.csv:2: unknown label 'Dgo'; did you mean 'Dog'"),
        (["nope.wav", "Dog", "", ""], r"m\.csv:2: audio file 'nope.wav' not found"),
        (["a.wav", "Dog", "-1", "2"], r"m\.csv:2: onset '-1'; accepted: finite seconds >= 0"),
        (["a.wav", "Dog", "2", "1"], r"m\.csv:2: offset 1.0 <= onset 2.0"),
        (["a.wav", "Dog", "x", "1"], r"m\.csv:2: onset 'x' is not a number"),
        (["a.wav", "Dog", "1", ""], r"m\.csv:2: onset '1' with offset ''; accepted: both empty"),
        (["a.wav", "", "", ""], r"m\.csv:2: empty labels"),
    ],
)
def test_manifest_bad_rows_name_file_line_and_accepted(tmp_path: Path, row: list[str], message: str) -> None:
    tone(tmp_path / "a.wav", 0.5)
    m = write_csv(tmp_path / "m.csv", [["path", "labels", "onset", "offset"], row])
    with pytest.raises(ManifestError, match=message):
        read_manifest(m, ONT)


def test_manifest_missing_column(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", [["path", "label"], ["a.wav", "Dog"]])
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['labels'\]"):
        read_manifest(m, ONT)


# --- layouts ----------------------------------------------------------------------------

def test_folder_per_label_accepts_names_and_mid_folders(tmp_path: Path) -> None:
    tone(tmp_path / "root" / "Dog" / "x.wav", 0.3)
    tone(tmp_path / "root" / "_m_09x0r" / "sub" / "y.flac", 0.3)  # /m/09x0r = Speech
    (tmp_path / "root" / "Dog" / "notes.txt").write_text("ignored")
    clips = read_folder_per_label(tmp_path / "root", ONT)
    assert sorted((c.path.name, c.labels) for c in clips) == [("x.wav", ("Dog",)), ("y.flac", ("Speech",))]
    tone(tmp_path / "bad" / "Dgo" / "z.wav", 0.3)
    with pytest.raises(LayoutError, match="did you mean 'Dog'"):
        read_folder_per_label(tmp_path / "bad", ONT)


def test_fsd50k_layout(tmp_path: Path) -> None:
    gt = tmp_path / "FSD50K.ground_truth"
    write_csv(gt / "dev.csv", [["fname", "labels", "mids", "split"],
                               ["101", "Bark,Dog", f"/m/05tny_,{DOG_MID}", "train"],
                               ["102", "Speech", "/m/09x0r", "val"]])
    write_csv(gt / "eval.csv", [["fname", "labels", "mids"], ["201", "Speech", "/m/09x0r"]])
    tone(tmp_path / "FSD50K.dev_audio" / "101.wav", 0.3)
    tone(tmp_path / "FSD50K.dev_audio" / "102.wav", 0.3)
    tone(tmp_path / "FSD50K.eval_audio" / "201.wav", 0.3)
    dev = read_fsd50k(tmp_path, "dev", ONT)
    assert [(c.labels, c.split) for c in dev] == [(("Bark", "Dog"), "train"), (("Speech",), "val")]
    assert [c.split for c in read_fsd50k(tmp_path, "eval", ONT)] == ["eval"]
    (tmp_path / "FSD50K.dev_audio" / "102.wav").unlink()
    with pytest.raises(LayoutError, match=r"dev\.csv:3: audio .*102\.wav not found"):
        read_fsd50k(tmp_path, "dev", ONT)
    assert len(read_fsd50k(tmp_path, "dev", ONT, missing="skip")) == 1


def test_esc50_layout(tmp_path: Path) -> None:
    write_csv(tmp_path / "meta" / "esc50.csv", [
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
        ["1-100-A-0.wav", "1", "0", "dog", "True", "100", "A"],
        ["3-200-A-20.wav", "3", "20", "crying_baby", "True", "200", "A"],
    ])
    tone(tmp_path / "audio" / "1-100-A-0.wav", 0.3)
    tone(tmp_path / "audio" / "3-200-A-20.wav", 0.3)
    clips = read_esc50(tmp_path, ONT)
    assert [(c.labels, c.split, c.source) for c in clips] == [
        (("Dog",), "fold1", "esc50:100"), (("Baby cry, infant cry",), "fold3", "esc50:200")]


def test_audioset_weak_layout_and_naming(tmp_path: Path) -> None:
    seg = write_csv(tmp_path / "balanced_train_segments.csv", [])
    seg.write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=2, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        f'aaa, 30.000, 40.000, "/m/09x0r,{DOG_MID}"\n'
        'bbb, 0.000, 10.000, "/m/09x0r"\n'
        'ccc, 5.000, 15.000, "/m/09x0r"\n'
    )
    audio = tmp_path / "audio"
    tone(audio / "aaa_30000.wav", 0.3)  # <YTID>_<start ms>
    tone(audio / "bbb.flac", 0.3)  # <YTID>
    clips = read_audioset_weak(seg, audio, ONT)
    assert [(c.path.name, c.labels) for c in clips] == [
        ("aaa_30000.wav", ("Speech", "Dog")), ("bbb.flac", ("Speech",))]
    with pytest.raises(LayoutError, match="no audio for ccc"):
        read_audioset_weak(seg, audio, ONT, missing="error")


def test_audioset_strong_layout(tmp_path: Path) -> None:
    tsv = tmp_path / "audioset_train_strong.tsv"
    tsv.write_text(
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        f"aaa_30000\t0.5\t1.5\t{DOG_MID}\n"
        "aaa_30000\t2.0\t4.0\t/m/09x0r\n"
        "zzz_0\t0.0\t1.0\t/m/09x0r\n"
    )
    tone(tmp_path / "audio" / "aaa_30000.wav", 5.0)
    clips = read_audioset_strong(tsv, tmp_path / "audio", ONT)
    assert [(c.labels, c.onset, c.offset) for c in clips] == [(("Dog",), 0.5, 1.5), (("Speech",), 2.0, 4.0)]
    assert clips[0].source == "audioset:aaa"


# --- dedup and splits -------------------------------------------------------------------

def test_dedup_folds_identical_files(tmp_path: Path) -> None:
    a = tone(tmp_path / "pkg1" / "dog.wav", 0.3)
    b = tmp_path / "pkg2" / "dog_copy.wav"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    c = tone(tmp_path / "other.wav", 0.3, freq=880.0)
    assert content_hash(a) == content_hash(b) != content_hash(c)
    out = dedup_clips([Clip(a, ("Dog",)), Clip(b, ("Bark",)), Clip(c, ("Speech",)), Clip(a, ("Dog",))])
    assert out == [Clip(a, ("Dog",)), Clip(a, ("Bark",)), Clip(c, ("Speech",))]


def test_group_split_never_shares_a_group() -> None:
    clips = [Clip(Path(f"/x/{s}_{i}.wav"), ("Dog",), source=f"src{s}") for s in range(10) for i in range(5)]
    clips.append(Clip(Path("/x/0_0.wav"), ("Bark",), 0.0, 1.0, source="other"))  # same file, other source
    train, val = group_split(clips, 0.3, seed=1)
    assert len(train) + len(val) == len(clips)
    assert {c.source for c in train}.isdisjoint({c.source for c in val})
    assert {c.path for c in train}.isdisjoint({c.path for c in val})
    assert 0.3 * len(clips) <= len(val) < 0.3 * len(clips) + 6
    assert group_split(clips, 0.3, seed=1) == (train, val)


# --- waveform store ---------------------------------------------------------------------

def test_store_decodes_resamples_once_and_reuses_cache(tmp_path: Path) -> None:
    src = tone(tmp_path / "stereo44k.wav", 0.5, sr=44100, channels=2)
    store = WaveformStore(tmp_path / "cache", CFG)
    assert store.build([Clip(src, ("Dog",))]) == 1
    wave = store.get(src)
    assert wave.dtype == np.float32 and wave.shape == (SR // 2,)
    assert isinstance(wave, np.memmap)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.02)
    assert store.build([src]) == 0
    again = WaveformStore(tmp_path / "cache", CFG)
    assert again.build([src]) == 0
    np.testing.assert_array_equal(again.get(src), wave)


def test_store_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    store = WaveformStore(tmp_path / "cache", CFG)
    with pytest.raises(ValueError, match=r"bad\.wav: cannot decode"):
        store.build([bad])
    with pytest.raises(ValueError, match=r"missing\.wav: cannot open"):
        store.get(tmp_path / "missing.wav")


# --- patch dataset ----------------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path: Path) -> tuple[list[Clip], WaveformStore]:
    long = tone(tmp_path / "long.wav", 10.0)
    short = tone(tmp_path / "short.wav", 0.3, freq=880.0)
    clips = [
        Clip(long, ("Dog",), 2.0, 3.0),
        Clip(long, ("Speech",)),
        Clip(short, ("Bark", "Cat")),
    ]
    store = WaveformStore(tmp_path / "cache", CFG)
    store.build(clips)
    return clips, store


def test_random_patches_and_strong_targets(corpus: tuple[list[Clip], WaveformStore]) -> None:
    clips, store = corpus
    labels = ["Dog", "Speech", "Bark"]
    ds = PatchDataset(clips, store, labels, CFG, seed=3, mode="random")
    assert len(ds) == 2
    assert ds.targets.tolist() == [[1, 1, 0], [0, 0, 1]]
    dog_on = []
    for _ in range(60):
        wave, target = ds[0]
        assert wave.shape == (CFG.patch_samples,) and wave.dtype == torch.float32
        assert target[1] == 1.0  # weak label holds everywhere
        dog_on.append(float(target[0]))
    assert 0 < np.mean(dog_on) < 1  # strong label on only for crops overlapping 2-3 s
    wave, target = ds[1]
    nonzero = int((wave != 0).sum())
    assert nonzero <= round(0.3 * SR) and nonzero > 0.25 * SR  # short clip padded with zeros
    assert target.tolist() == [0.0, 0.0, 1.0]  # Cat is not in label_names


def test_strong_target_depends_on_overlap(corpus: tuple[list[Clip], WaveformStore]) -> None:
    clips, store = corpus
    ds = PatchDataset(clips, store, ["Dog"], CFG, mode="random", min_overlap=0.5)
    p = CFG.patch_samples
    assert ds._target(0, 2 * SR)[0] == 1.0  # 2.0-2.975 s inside the event
    assert ds._target(0, 0)[0] == 0.0
    assert ds._target(0, 3 * SR - p // 4)[0] == 0.0  # a quarter patch of overlap < half
    assert ds._target(0, 3 * SR - 3 * p // 4)[0] == 1.0


def test_all_mode_enumerates_every_patch(corpus: tuple[list[Clip], WaveformStore]) -> None:
    clips, store = corpus
    ds = PatchDataset(clips, store, ["Dog", "Speech", "Bark"], CFG, mode="all", hop_s=0.48)
    hop = round(0.48 * SR)
    n_long = 10 * SR
    starts = list(range(0, n_long - CFG.patch_samples + 1, hop))
    if starts[-1] != n_long - CFG.patch_samples:
        starts.append(n_long - CFG.patch_samples)
    assert len(ds) == len(starts) + 1
    assert ds.clip_index.tolist() == [0] * len(starts) + [1]
    assert ds.patch_start[: len(starts)].tolist() == starts
    assert ds.targets.shape == (len(ds), 3)
    assert ds.targets[:, 0].sum() >= 1 and ds.targets[:, 0].sum() < len(starts)
    w0, t0 = ds[0]
    np.testing.assert_array_equal(w0.numpy(), store.get(clips[0])[: CFG.patch_samples])
    np.testing.assert_array_equal(t0.numpy(), ds.targets[0])


def test_dataset_in_a_dataloader_with_workers(corpus: tuple[list[Clip], WaveformStore]) -> None:
    clips, store = corpus
    ds = PatchDataset(clips, store, ["Dog", "Speech", "Bark"], CFG, mode="random")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    waves, targets = next(iter(loader))
    assert waves.shape == (2, CFG.patch_samples) and targets.shape == (2, 3)


# --- sampler ----------------------------------------------------------------------------

def test_balanced_sampler_draws_rare_labels_as_often() -> None:
    targets = np.zeros((1000, 2))
    targets[:990, 0] = 1
    targets[990:, 1] = 1  # 10 rare examples
    s = BalancedSampler(targets, num_samples=4000, seed=0, include_negatives=False)
    draws = np.array(list(s))
    assert len(draws) == 4000
    rare = (draws >= 990).mean()
    assert 0.45 < rare < 0.55
    assert list(s) != list(draws)  # next epoch differs
    s.set_epoch(0)
    assert list(s) == list(draws)


@pytest.mark.parametrize(("power", "rare_share"), [(0.5, 10**0.5 / (10**0.5 + 990**0.5)),
                                                   (1.0, 10 / 1000)])
def test_balanced_sampler_power_draws_labels_by_count(power: float, rare_share: float) -> None:
    targets = np.zeros((1000, 2))
    targets[:990, 0] = 1
    targets[990:, 1] = 1
    draws = np.array(list(BalancedSampler(targets, 20000, seed=1, include_negatives=False,
                                          power=power)))
    assert (draws >= 990).mean() == pytest.approx(rare_share, rel=0.15)
    with pytest.raises(ValueError, match=r"power=1.5; accepted: 0 <= power <= 1"):
        BalancedSampler(targets, 10, power=1.5)


def test_balanced_sampler_ranks_take_disjoint_slices() -> None:
    targets = np.eye(4)[np.arange(40) % 4]
    full = list(BalancedSampler(targets, 40, seed=5, rank=0, world_size=1))
    parts = [list(BalancedSampler(targets, 20, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert parts[0] == full[0::2] and parts[1] == full[1::2]
    with pytest.raises(ValueError, match="rank=2"):
        BalancedSampler(targets, 5, rank=2, world_size=2)


@pytest.mark.parametrize("alone", [0.0, 1.0])
def test_dataset_targets_follow_a_noise_bed_augmentation(
    corpus: tuple[list[Clip], WaveformStore], alone: float
) -> None:
    """A bed under the clip keeps its labels; a bed alone (the clip replaced) has none."""
    from training.augment import AugmentConfig, WaveAugment

    clips, store = corpus
    fields = {**AugmentConfig.off().to_dict(), "noise_bed": True, "noise_bed_prob": 1.0,
              "noise_bed_alone_prob": alone}
    aug = WaveAugment(AugmentConfig(**fields), SR, seed=0)
    for mode in ("random", "all"):
        plain = PatchDataset(clips, store, ["Dog", "Speech", "Bark"], CFG, seed=1, mode=mode)
        ds = PatchDataset(clips, store, ["Dog", "Speech", "Bark"], CFG, augment=aug, seed=1, mode=mode)
        for i in range(len(ds)):
            (w0, t0), (w, t) = plain[i], ds[i]
            assert not torch.equal(w, w0)
            assert t.tolist() == ([0.0, 0.0, 0.0] if alone else t0.tolist())
        assert ds.targets.any()  # the dataset's own table is not emptied


def test_all_mode_pad_edges_centres_cover_the_recording(corpus: tuple[list[Clip], WaveformStore]) -> None:
    clips, store = corpus
    ds = PatchDataset(clips, store, ["Dog"], CFG, mode="all", hop_s=0.1, pad_edges=True)
    half = CFG.patch_samples // 2
    long_starts = ds.patch_start[ds.clip_index == 0]
    assert long_starts[0] == -half and long_starts[-1] == 10 * SR - CFG.patch_samples + half
    w0, _ = ds[0]
    assert (w0[:half] == 0).all()  # zeros before the recording
    np.testing.assert_array_equal(w0[half:].numpy(), store.get(clips[0])[: CFG.patch_samples - half])
    centres = (long_starts + CFG.patch_samples / 2) / SR
    on = ds.targets[ds.clip_index == 0, 0] > 0
    assert centres[on].min() == pytest.approx(2.0, abs=0.11)  # Dog event 2-3 s (one hop)
    assert centres[on].max() == pytest.approx(3.0, abs=0.11)
