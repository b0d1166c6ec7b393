"""sed-corpus: the CI subset build (real Debian packages + shared clips), dedup, splits,
labels, determinism; the Qt .rcc reader; synthetic events and scenes.

The build downloads three small packages (~7 MB) and the small TimGM6mb soundfont
(~5 MB) with ``apt-get download`` into a shared ``--deb-cache``, as the issue allows for
this test, and renders one General MIDI phrase per instrument with fluidsynth.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.corpus import scenes, soundfont, synth
from training.corpus.build import MANIFEST_COLUMNS, BuildConfig, build, decode
from training.corpus.cli import main
from training.corpus.mapping import load_label_names, load_mapping
from training.corpus.rcc import RccError, read_rcc

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SR = 16000

needs_build = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg") is None or not SHARED.is_dir()
    or shutil.which("fluidsynth") is None,
    reason="needs apt-get/dpkg, fluidsynth and ../shared/data",
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _plant_duplicates(root: Path) -> tuple[str, str]:
    """A byte-identical copy and a near copy (gain, noise, resampled) of one CI shared clip."""
    with (SHARED / "donateacry" / "manifest.csv").open(newline="") as f:
        first = sorted(csv.DictReader(f), key=lambda r: r["path"])[0]
    src = SHARED / "donateacry" / first["path"]
    audio = root / "planted" / "audio"
    audio.mkdir(parents=True)
    shutil.copyfile(src, audio / "exact_copy.flac")
    wave, sr = sf.read(str(src), dtype="float32")
    rng = np.random.default_rng(0)
    near = 0.7 * wave + 1e-5 * rng.standard_normal(wave.size).astype(np.float32)
    sf.write(str(audio / "near_copy.wav"), near, sr, subtype="PCM_24")
    with (root / "planted" / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "source", "license", "seconds"])
        for name in ("exact_copy.flac", "near_copy.wav"):
            w.writerow([f"audio/{name}", first["labels"], "planted", "test", first["seconds"]])
    return "planted:audio/exact_copy.flac", "planted:audio/near_copy.wav"


@pytest.fixture(scope="module")
def ci_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[str, str]]:
    base = tmp_path_factory.mktemp("corpus")
    planted = _plant_duplicates(base)
    debs = base / "debs"
    outs = []
    for name in ("a", "b"):
        out = base / name
        build(out, SHARED, debs, BuildConfig.for_subset("ci"), extra_data=base)
        outs.append(out)
    return outs[0], outs[1], planted


@needs_build
def test_manifests_are_valid(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    out = ci_builds[0]
    names = load_label_names()
    for manifest in ("train.csv", "val.csv", "scenes_train.csv", "scenes_val.csv"):
        rows = _rows(out / manifest)
        assert rows, manifest
        assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
        for r in rows:
            labels = [s for s in r["labels"].split("|") if s]
            assert labels and set(labels) <= names, (manifest, r)
            assert 0.0 <= float(r["onset"]) < float(r["offset"])
            assert (out / r["path"]).is_file()
    train = _rows(out / "train.csv")
    info = sf.info(str(out / train[0]["path"]))
    assert (info.samplerate, info.channels, info.format) == (SR, 1, "FLAC")
    assert any(r["source"].startswith("synthetic:") for r in train)
    made = {r["source"].removeprefix("synthetic:") for r in train if r["source"].startswith("synthetic:")}
    assert set(synth.KINDS) <= made and not made & set(synth.VOICE_KINDS)  # voices are opt-in
    assert any(r["source"].startswith("bucklespring-data:") for r in train)
    from training.data import read_manifest  # the trainer's reader accepts every manifest

    for manifest in ("train.csv", "val.csv", "scenes_train.csv", "scenes_val.csv",
                     "background_val.csv"):
        assert len(read_manifest(out / manifest)) == len(_rows(out / manifest))
    # a label with a comma survives the CSV round trip
    assert any(r["labels"] == "Baby cry, infant cry" for r in train + _rows(out / "val.csv"))


@needs_build
def test_soundfont_clips_are_training_only(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    out, again, _ = ci_builds
    train = [r for r in _rows(out / "train.csv") if r["source"].startswith("synthetic:soundfont:")]
    cfg = BuildConfig.for_subset("ci")
    assert len(train) == cfg.soundfont_per_program * len(soundfont.INSTRUMENTS)
    by_name = {i.name: i for i in soundfont.INSTRUMENTS}
    for r in train:
        inst = by_name[r["source"].removeprefix("synthetic:soundfont:")]
        labels = r["labels"].split("|")  # the instrument's labels, then their ancestors
        assert labels[: len(inst.labels)] == list(inst.labels), (labels, inst.labels)
        wave, sr = sf.read(str(out / r["path"]), dtype="float32")
        assert sr == SR and abs(wave.size / SR - float(r["offset"])) < 1e-3
        assert soundfont.PEAK[0] - 0.01 <= np.abs(wave).max() <= soundfont.PEAK[1] + 0.01
        assert (out / r["path"]).read_bytes() == (again / r["path"]).read_bytes(), r["path"]
    for name in ("val.csv", "scenes_val.csv", "background_val.csv", "clips.csv"):
        assert not [r for r in _rows(out / name) if "soundfont" in r["source"]], name
    import json

    summary = json.loads((out / "corpus.json").read_text())
    assert summary["package_versions"]["timgm6mb-soundfont"]
    trumpet = summary["labels"]["Trumpet"]["train"]
    assert trumpet["synthetic_clips"] >= cfg.soundfont_per_program
    row = next(line for line in (out / "REPORT.md").read_text().splitlines()
               if line.startswith("| Trumpet |"))
    assert row.split("|")[4].strip() == str(trumpet["synthetic_clips"])


@needs_build
def test_duplicates_removed_and_grouped(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    out, _, planted = ci_builds
    kept = {r["source"] for r in _rows(out / "clips.csv")}
    assert not kept & set(planted), "planted exact and near duplicates must be dropped"
    import json

    summary = json.loads((out / "corpus.json").read_text())
    assert summary["exact_duplicates_dropped"] >= 1
    assert summary["near_duplicates_dropped"] >= 1


@needs_build
def test_no_group_in_both_splits(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    rows = _rows(ci_builds[0] / "clips.csv")
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert {r["split"] for r in rows} == {"train", "val"}
    fsdd = {r["group"] for r in rows if r["source"].startswith("fsdd:")}
    assert fsdd and all(g.startswith("fsdd:") for g in fsdd)  # FSDD grouped by speaker
    val_sources = {r["source"] for r in _rows(ci_builds[0] / "val.csv")}
    for r in _rows(ci_builds[0] / "scenes_val.csv"):
        src = r["source"].removeprefix("scene:")
        assert src.startswith("synthetic:") or src in val_sources, src


@needs_build
def test_build_is_deterministic(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    a, b, _ = ci_builds
    for name in ("train.csv", "val.csv", "clips.csv", "scenes_val.csv", "corpus.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for r in _rows(a / "train.csv")[:40] + _rows(a / "scenes_val.csv"):
        ha = hashlib.sha256((a / r["path"]).read_bytes()).hexdigest()
        assert ha == hashlib.sha256((b / r["path"]).read_bytes()).hexdigest(), r["path"]


def test_missing_shared_data_is_a_clear_error(tmp_path: Path) -> None:
    assert main(["build", str(tmp_path / "c"), "--shared-data", str(tmp_path / "nope")]) == 2
    with pytest.raises(FileNotFoundError, match="--shared-data"):
        build(tmp_path / "c", tmp_path / "nope", tmp_path / "debs", BuildConfig.for_subset("ci"))


def test_mapping_labels_are_audioset_names() -> None:
    rules = load_mapping()
    names = load_label_names()
    assert rules and all(set(r.labels) <= names for r in rules)
    assert all(r.checked.strip() for r in rules)


def _rcc(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A minimal version-2 Qt resource file holding ``files`` in the root directory."""
    names, data, nodes = b"", b"", []
    entries = sorted(files.items())
    name_offs = []
    for name, _ in entries:
        name_offs.append(len(names))
        enc = name.encode("utf-16-be")
        names += struct.pack(">HI", len(enc) // 2, 0) + enc
    nodes.append(struct.pack(">IHII", 0, 0x2, len(entries), 1) + bytes(8))
    for (_name, (payload, compress)), noff in zip(entries, name_offs, strict=True):
        blob = struct.pack(">I", len(payload)) + zlib.compress(payload) if compress else payload
        nodes.append(struct.pack(">IHHHI", noff, 0x1 if compress else 0, 0, 0, len(data))
                     + bytes(8))
        data += struct.pack(">I", len(blob)) + blob
    tree = b"".join(nodes)
    header = 20
    return (b"qres" + struct.pack(">IIII", 2, header, header + len(tree),
                                  header + len(tree) + len(data)) + tree + data + names)


def test_rcc_reader_plain_and_zlib() -> None:
    archive = read_rcc(_rcc({"a.wav": (b"RIFFplain", False), "b.ogg": (b"OggS" * 50, True)}))
    assert [(f.path, f.data) for f in archive.files] == [("a.wav", b"RIFFplain"),
                                                         ("b.ogg", b"OggS" * 50)]
    assert archive.skipped == []
    with pytest.raises(RccError, match="qres"):
        read_rcc(b"RIFF" + bytes(40))


def test_complete_labels_adds_vocabulary_ancestors_only() -> None:
    from training.corpus.build import NOT_IMPLIED, complete_labels
    from training.ontology import Ontology

    onto = Ontology.load()
    assert onto.ancestors("Bark")[:2] == ["Dog", "Domestic animals, pets"]
    assert "Animal" in onto.ancestors("Bark")
    assert "Cattle, bovinae" in onto.ancestors("Cowbell")
    assert "Cattle, bovinae" not in onto.ancestors("Cowbell", NOT_IMPLIED)
    assert "Percussion" in onto.ancestors("Cowbell", NOT_IMPLIED)  # the other path stays
    vocab = frozenset({"Animal", "Dog", "Bark", "Music", "Percussion", "Cattle, bovinae",
                       "Cowbell", "Alarm", "Siren", "Howl", "Canidae, dogs, wolves"})
    assert complete_labels(("Bark",), vocab, onto) == ("Bark", "Dog", "Animal")
    assert complete_labels(("Siren", "Emergency vehicle"), vocab, onto) == (
        "Siren", "Emergency vehicle", "Alarm")
    assert complete_labels(("Cowbell",), vocab, onto) == ("Cowbell", "Percussion", "Music")
    assert complete_labels(("Howl", "Canidae, dogs, wolves"), vocab, onto) == (
        "Howl", "Canidae, dogs, wolves", "Animal")  # a wolf's howl is not a dog's
    assert complete_labels(("Speech",), vocab, onto) == ("Speech",)


@needs_build
def test_built_labels_are_ancestor_complete(ci_builds: tuple[Path, Path, tuple[str, str]]) -> None:
    from training.corpus.build import NOT_IMPLIED
    from training.ontology import Ontology

    onto = Ontology.load()
    rows = [r for m in ("train.csv", "val.csv") for r in _rows(ci_builds[0] / m)]
    vocab = {lab for r in rows for lab in r["labels"].split("|")}
    for r in rows:
        labels = set(r["labels"].split("|"))
        for lab in labels:
            missing = (set(onto.ancestors(lab, NOT_IMPLIED)) & vocab) - labels
            assert not missing, (r["path"], lab, missing)


def test_synth_is_deterministic_and_scene_labels_are_strong() -> None:
    for kind in synth.ALL_KINDS:
        x = synth.generate(kind, 7, SR)
        assert x.dtype == np.float32 and 0 < np.abs(x).max() <= 1.0
        assert np.array_equal(x, synth.generate(kind, 7, SR))
    knock = scenes.SourceClip(synth.generate("knock", 1, SR), ("Knock",), "k")
    cfg = scenes.SceneConfig(reverb_probability=0.0, snr_db=(30.0, 30.0))
    scene = scenes.make_scene(np.random.default_rng(0), [knock], [], cfg, n_events=1)
    assert scene.wave.shape == (round(cfg.seconds * SR),)
    noise, event = scene.events
    assert noise.labels == scenes.NOISE_LABELS and (noise.onset, noise.offset) == (0.0, cfg.seconds)
    inside = scene.wave[round(event.onset * SR): round(event.offset * SR)]
    outside = np.concatenate([scene.wave[: round(event.onset * SR)],
                              scene.wave[round(event.offset * SR):]])
    assert np.sqrt(np.mean(inside**2)) > 10 * np.sqrt(np.mean(outside**2))


def test_decode_resamples_to_16k(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    sf.write(str(tmp_path / "x.wav"), np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1), 44100)
    y = decode(tmp_path / "x.wav", SR)
    assert y.shape == (SR,) and y.dtype == np.float32
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * SR / y.size
    assert abs(peak_hz - 440) <= 1


@needs_build
def test_report_subcommand_rewrites_table(ci_builds: tuple[Path, Path, tuple[str, str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = ci_builds[0]
    (out / "REPORT.md").unlink()
    assert main(["report", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| Typing |" in text and "**THIN**" in text
    assert text == capsys.readouterr().out


@needs_build
def test_train_all_and_labels_subcommand(ci_builds: tuple[Path, Path, tuple[str, str]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import tomllib

    from training.corpus.labels import LabelRule, select_labels

    out = ci_builds[0]
    train = (out / "train.csv").read_text().splitlines()
    scenes_train = (out / "scenes_train.csv").read_text().splitlines()
    assert (out / "train_all.csv").read_text().splitlines() == train + scenes_train[1:]
    assert main(["labels", str(out), "--min-real", "1", "--min-synthetic", "1"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)["labels"]
    summary = json.loads((out / "corpus.json").read_text())
    assert printed == select_labels(summary["labels"], LabelRule(1, 1, 1))[0]
    assert printed and "Typing" in printed
    for name in printed:
        stats = summary["labels"][name]
        assert stats["val"]["real_clips"] + stats["val"]["synthetic_clips"] >= 1


def test_synth_check_ranks_labels_with_yamnet() -> None:
    from detector.model.yamnet import YamnetScorer, find_yamnet
    from training.corpus.synth_check import check

    path = find_yamnet()
    if path is None:
        pytest.skip("YAMNet not fetched (bin/setup does: python -m detector.bench fetch-yamnet)")
    scorer = YamnetScorer(path, threads=1)
    names = [lab.name for lab in scorer.contract.labels]
    rows = {(r["kind"], r["label"]): r for r in check(scorer, names, clips=2)}
    assert {k for k, _ in rows} == set(synth.ALL_KINDS)
    assert ("car_horn", "Vehicle horn, car horn, honking") in rows
    for r in rows.values():
        assert 1 <= int(r["median_rank"]) <= len(names)
        assert 0.0 <= float(r["top5_share"]) <= 1.0
    # the checked-in spot check says these are heard as labelled; the test holds it to that
    assert int(rows[("firecrackers", "Fireworks")]["median_rank"]) <= 5
    assert int(rows[("siren_wail", "Siren")]["median_rank"]) <= 5


def test_labels_heard_in_part_are_for_validation_only(tmp_path: Path) -> None:
    """`Bird?` in mapping.csv: a validation clip carries Bird (and Animal), a training clip neither."""
    from dataclasses import replace

    from training.corpus.build import _package_candidates, clip_labels, complete_labels
    from training.corpus.mapping import MappingError
    from training.ontology import Ontology

    head = "package,pattern,labels,group,role,checked,notes\n"
    table = tmp_path / "mapping.csv"
    table.write_text(head + 'pkg,a/amb\\.ogg,"Outside, rural or natural|Bird?",file,background,'
                     "YAMNet: Bird in 30 % of patches,\n", encoding="utf-8")
    (rule,) = load_mapping(table)
    assert rule.labels == ("Outside, rural or natural", "Bird") and rule.partial == ("Bird",)
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "a" / "amb.ogg").write_bytes(b"")
    (cand,) = _package_candidates([rule], "pkg", tmp_path / "root")
    vocab, onto = frozenset({"Outside, rural or natural", "Bird", "Animal"}), Ontology.load()
    cand = replace(cand, labels=complete_labels(cand.labels, vocab, onto),
                   train_labels=complete_labels(cand.train_labels, vocab, onto))
    assert clip_labels(cand, "val") == ("Outside, rural or natural", "Bird", "Animal")
    assert clip_labels(cand, "train") == ("Outside, rural or natural",)
    whole = replace(cand, train_labels=None)  # a rule without `?`
    assert clip_labels(whole, "train") == clip_labels(whole, "val")

    table.write_text(head + "pkg,a/amb\\.ogg,Bird?,file,background,checked,\n", encoding="utf-8")
    with pytest.raises(MappingError, match="every label is partial"):
        load_mapping(table)
