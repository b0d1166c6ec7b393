"""The unlabelled pool (training.corpus.pool): reserved packages refused, kinds, decoding
(inside archives, raw telephony codecs), dedup, resume, caps; and its cache of log-mel and
teacher scores (training.corpus.pool_cache)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from detector.frontend.features import FeatureConfig
from detector.model.contract import Label
from training.corpus import packages, pool, pool_cache
from training.corpus.build import BuildConfig, build

SR = 16000


def _tone(seconds: float, f: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def _wav_bytes(x: np.ndarray, rate: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["scratch", "asterisk-core-sounds-fr-g722",
                                  "asterisk-core-sounds-fr-wav"])
def test_reserved_packages_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    assert packages.is_reserved(name)
    with pytest.raises(packages.ReservedPackageError, match=name):
        packages.download(name, tmp_path)  # before apt is asked
    with pytest.raises(packages.ReservedPackageError, match=name):
        packages.unpack(tmp_path / f"{name}_1.0_all.deb", tmp_path / "x")
    listing = tmp_path / "list.csv"
    listing.write_text(f"package,kind,split,note\nqabcs-data,mixed,train,\n{name},speech,train,\n")
    with pytest.raises(packages.ReservedPackageError, match=name):
        pool.load_packages(listing)
    assert not packages.is_reserved("asterisk-core-sounds-es-g722")
    assert not packages.is_reserved("scratchpad")


def test_corpus_build_fails_on_a_reserved_folder(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "scratch").mkdir(parents=True)
    with pytest.raises(packages.ReservedPackageError, match="scratch"):
        build(tmp_path / "out", shared, tmp_path / "debs",
              BuildConfig(subset="ci", soundfont_per_program=0))
    assert not (tmp_path / "out" / "clips").exists()


def test_shipped_package_list_is_valid_and_holds_out_whole_packages() -> None:
    pkgs = pool.load_packages()
    names = [p.package for p in pkgs]
    assert not any(packages.is_reserved(n) for n in names)
    held = {p.package for p in pkgs if p.split == "heldout"}
    assert len(held) >= 8 and "scorched3d-data" in held
    train = {p.package for p in pkgs if p.split == "train"}
    assert len(train) >= 90 and not held & train


@pytest.mark.parametrize(("kind", "rel", "want"), [
    ("mixed", "usr/share/games/x/music/track1.ogg", "music"),
    ("mixed", "usr/share/games/x/sounds/dog_bark.ogg", "events"),
    ("mixed", "usr/share/tuxpaint/stamps/animals/cat_desc_fr.ogg", "speech"),
    ("events", "data/bgm/level1.ogg", "music"),
    ("speech", "usr/share/asterisk/sounds/it/digits/1.g722", "speech"),
    ("music", "anything.ogg", "music"),
])
def test_file_kind(kind: str, rel: str, want: str) -> None:
    assert pool.file_kind(kind, rel) == want


def test_decode_bytes_resamples_and_reads_raw_g722() -> None:
    x = _tone(0.5)
    at44 = (0.3 * np.sin(2 * np.pi * 440 * np.arange(22050) / 44100)).astype(np.float32)
    wave, src = pool.decode_bytes(_wav_bytes(at44, 44100), "wav", SR)
    assert src == 44100 and abs(wave.size - 0.5 * SR) <= 2
    wave, src = pool.decode_bytes(_wav_bytes(x), "wav", SR)
    assert src == SR and np.allclose(wave, x, atol=1e-4)
    with pytest.raises(ValueError, match=r"\.ogg"):
        pool.decode_bytes(b"not audio at all", "ogg", SR)
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (bin/setup installs it)")
    g722 = subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "s16le", "-ar", "16000", "-ac",
                           "1", "-i", "pipe:0", "-f", "g722", "pipe:1"],
                          input=(x * 32767).astype("<i2").tobytes(), capture_output=True,
                          check=True).stdout
    wave, src = pool.decode_bytes(g722, "g722", SR)
    assert src == SR and abs(wave.size - x.size) < 400
    spec = np.abs(np.fft.rfft(wave[1000:7000]))
    assert abs(np.argmax(spec) * SR / 6000 - 440) < 10  # the tone survives the codec


def _fake_package(root: Path) -> None:
    """A package tree: two sounds, a silent file, a 50 ms blip, a duplicate, a zip."""
    d = root / "usr" / "share" / "game" / "sounds"
    d.mkdir(parents=True)
    (d / "a.wav").write_bytes(_wav_bytes(_tone(1.0, 300)))
    (d / "b.wav").write_bytes(_wav_bytes(_tone(2.0, 600)))
    (d / "same_as_a.wav").write_bytes(_wav_bytes(_tone(1.0, 300)))
    (d / "silence.wav").write_bytes(_wav_bytes(np.zeros(SR, np.float32)))
    (d / "blip.wav").write_bytes(_wav_bytes(_tone(0.05)))
    (d / "readme.txt").write_text("not audio")
    with zipfile.ZipFile(root / "usr" / "share" / "game" / "data.pk3", "w") as z:
        z.writestr("music/theme.wav", _wav_bytes(_tone(3.0, 200)))
        z.writestr("sound/door.wav", _wav_bytes(_tone(1.5, 900)))


def test_build_dedups_drops_silence_reads_archives_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("package,kind,split,note\nfake-a,mixed,train,\nfake-b,mixed,train,\n"
                       "fake-held,mixed,heldout,\n")
    unpacked: list[str] = []

    def download(name: str, cache: Path) -> Path:
        return cache / f"{name}_1_all.deb"

    def unpack(deb: Path, dest: Path) -> Path:
        unpacked.append(deb.name.split("_")[0])
        _fake_package(dest)
        return dest

    monkeypatch.setattr(packages, "download", download)
    monkeypatch.setattr(packages, "unpack", unpack)
    out = tmp_path / "pool"
    rows = pool.build(out, tmp_path / "debs", pool.PoolConfig(), None, listing)
    assert unpacked == ["fake-a", "fake-b"]  # the held-out package is never decoded
    a = [r for r in rows if r["package"] == "fake-a"]
    assert sorted(r["relpath"].rsplit("/", 1)[-1] for r in a) == ["a.wav", "b.wav", "door.wav",
                                                                  "theme.wav"]
    assert [r for r in rows if r["package"] == "fake-b"] == []  # all duplicates of fake-a
    kinds = {r["relpath"].rsplit("/", 1)[-1]: r["kind"] for r in a}
    assert kinds["theme.wav"] == "music" and kinds["door.wav"] == "events"
    assert all((out / r["path"]).is_file() for r in a)
    assert not (out / "unpacked" / "fake-a").exists()
    # resume: nothing is decoded again
    unpacked.clear()
    again = pool.build(out, tmp_path / "debs", pool.PoolConfig(), None, listing)
    assert unpacked == [] and again == rows
    text = pool.report_markdown(rows, pool.select(rows, pool.PoolConfig()))
    assert "| fake-a |" in text and "| music |" in text


def _row(h: str, pkg: str, kind: str, seconds: float, nc: int = 0) -> dict[str, str]:
    return {"hash": h, "path": f"audio/{h}.flac", "package": pkg, "relpath": h,
            "seconds": str(seconds), "source_rate": "16000", "kind": kind, "license": "",
            "noncommercial": str(nc)}


def test_select_caps_music_and_speech_round_robin_and_free_only() -> None:
    rows = ([_row(f"m{i:03d}", "big-music", "music", 3600) for i in range(20)]
            + [_row(f"n{i:03d}", "small-music", "music", 1800) for i in range(2)]
            + [_row(f"s{i:03d}", "speechy", "speech", 600) for i in range(100)]
            + [_row(f"e{i:03d}", "fx", "events", 5) for i in range(50)]
            + [_row(f"u{i:03d}", "shared:urbansound8k", "events", 4, nc=1) for i in range(10)])
    cfg = pool.PoolConfig(music_cap_hours=4.0, speech_cap_hours=2.0)
    chosen = pool.select(rows, cfg)
    by_kind: dict[str, float] = {}
    for r in chosen:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + float(r["seconds"]) / 3600
    assert by_kind["events"] == pytest.approx((50 * 5 + 40) / 3600)
    assert 4.0 <= by_kind["music"] < 4.0 + 1.0 and 2.0 <= by_kind["speech"] < 2.2
    assert {r["package"] for r in chosen if r["kind"] == "music"} == {"big-music", "small-music"}
    free = pool.select(rows, pool.PoolConfig(free_only=True))
    assert not any(r["package"] == "shared:urbansound8k" for r in free)


class _FakeTeacher:
    """Scores a patch by its mean log-mel: stands in for YAMNet's 521 outputs."""

    def __init__(self) -> None:
        labels = tuple(Label(n, f"/m/{i}") for i, n in enumerate(["Speech", "Music", "Hum"]))

        class _C:
            pass

        self.contract = _C()
        self.contract.labels = labels  # type: ignore[attr-defined]
        self.calls = 0

    def score(self, patches: np.ndarray) -> np.ndarray:
        self.calls += 1
        m = patches.mean(axis=(1, 2))
        return np.stack([1 / (1 + np.exp(-m)), np.full_like(m, 0.25), np.full_like(m, 0.75)], 1)


def test_pool_cache_is_keyed_by_hash_and_resumes(tmp_path: Path) -> None:
    cfg = FeatureConfig()
    out = tmp_path / "pool"
    (out / "audio").mkdir(parents=True)
    rows = []
    for i, seconds in enumerate((0.3, 2.5)):
        p = out / "audio" / f"h{i}.flac"
        sf.write(p, _tone(seconds, 300 + 100 * i), SR, subtype="PCM_16")
        rows.append({**_row(f"h{i}", "fx", "events", seconds), "path": f"audio/h{i}.flac"})
    (out / "done").mkdir()
    with (out / "done" / "fx.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=pool.POOL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    teacher = _FakeTeacher()
    assert pool_cache.cache_pool(out, teacher, cfg) == {"done": 0, "computed": 2, "failed": 0}
    mel, probs = pool_cache.load_entry(out, "h1")
    frames = pool_cache.features_of(_tone(2.5, 400), cfg).shape[0]
    assert mel.shape == (frames, cfg.n_mels) and mel.dtype == np.float16
    starts = pool_cache.patch_starts(frames, cfg)
    assert probs.shape == (len(starts), 3) and starts[1] == pool_cache.TEACHER_HOP_FRAMES
    short_mel, short_probs = pool_cache.load_entry(out, "h0")  # padded to one patch
    assert short_mel.shape[0] >= cfg.patch_frames and short_probs.shape[0] == 1
    calls = teacher.calls
    assert pool_cache.cache_pool(out, teacher, cfg) == {"done": 2, "computed": 0, "failed": 0}
    assert teacher.calls == calls
    with (out / "cache" / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [s["hash"] for s in summary] == ["h0", "h1"]
    assert summary[0]["top"].startswith("Hum:0.75")


def test_a_build_killed_mid_package_resumes_at_the_next_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("package,kind,split,note\nfake-a,mixed,train,\n")
    monkeypatch.setattr(packages, "download", lambda name, cache: cache / f"{name}_1_all.deb")

    def unpack(deb: Path, dest: Path) -> Path:
        _fake_package(dest)
        return dest

    monkeypatch.setattr(packages, "unpack", unpack)
    real = pool.decode_bytes
    calls: list[int] = []

    def dying(data: bytes, ext: str, rate: int) -> tuple[np.ndarray, int]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed while decoding its third file
        return real(data, ext, rate)

    monkeypatch.setattr(pool, "decode_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        pool.build(tmp_path / "p", tmp_path / "debs", pool.PoolConfig(), None, listing)
    assert (tmp_path / "p" / "partial" / "fake-a.jsonl").is_file()
    calls.clear()
    monkeypatch.setattr(pool, "decode_bytes", lambda d, e, r: (calls.append(1), real(d, e, r))[1])
    rows = pool.build(tmp_path / "p", tmp_path / "debs", pool.PoolConfig(), None, listing)
    assert len(calls) == 7 - 2  # the two files journalled before the kill are not decoded again
    fresh = pool.build(tmp_path / "q", tmp_path / "debs", pool.PoolConfig(), None, listing)
    assert [r["hash"] for r in rows] == [r["hash"] for r in fresh]
    assert not (tmp_path / "p" / "partial" / "fake-a.jsonl").exists()


def test_shared_data_groups_freesound_recordings_and_free_only_drops_nc(tmp_path: Path) -> None:
    from training.corpus.build import is_noncommercial, shared_candidates

    us = tmp_path / "urbansound8k"
    (us / "audio").mkdir(parents=True)
    free = tmp_path / "fsdd"
    (free / "audio").mkdir(parents=True)
    (us / "manifest.csv").write_text(
        "path,labels,source,license,seconds\n"
        "audio/1-a.ogg,Dog|Bark,UrbanSound8K:dog_bark:fold1:freesound101,CC BY-NC 3.0,4\n"
        "audio/1-b.ogg,Dog|Bark,UrbanSound8K:dog_bark:fold1:freesound101,CC BY-NC 3.0,4\n"
        "audio/2-a.ogg,Siren,UrbanSound8K:siren:fold2:freesound202,CC BY-NC 3.0,4\n")
    (free / "manifest.csv").write_text("path,labels,source,license,seconds\n"
                                       "audio/0_george_0.flac,Speech,fsdd:george,CC-BY-SA-4.0,0.3\n")
    cands = shared_candidates(tmp_path)
    groups = {c.relpath: c.group for c in cands}
    assert groups["audio/1-a.ogg"] == groups["audio/1-b.ogg"] != groups["audio/2-a.ogg"]
    assert groups["audio/0_george_0.flac"] == "fsdd:george"
    assert [c.relpath for c in shared_candidates(tmp_path, free_only=True)] == [
        "audio/0_george_0.flac"]
    assert is_noncommercial("CC BY-NC-SA 4.0") and is_noncommercial("CC BY-NC 3.0")
    assert not is_noncommercial("CC-BY-SA-4.0") and not is_noncommercial("CC0")
