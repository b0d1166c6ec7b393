"""Event clips (issue 22): ``sed-listen --clips DIR`` on the shipped model and demo clip.

The demo's known onsets (detector/data/demo.csv) are checked against the clip files:
each clip is the source audio itself (bit-exact: both are 16-bit), so a clip that
starts before a sound's true onset holds it.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from detector.config import Config
from detector.io import clips as clips_mod
from detector.io.clips import ClipConfig, ClipHistory, ClipWriter, enforce_retention, parse_age
from detector.io.publisher import ListSink
from detector.model.resolve import resolve_model
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "detector" / "data" / "demo.flac"
RATE = 16000


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer(resolve_model(None), "cpu", 1)


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    x, sr = sf.read(DEMO, dtype="float32")
    assert sr == RATE and sf.info(DEMO).subtype == "PCM_16"
    return x


def _truth() -> dict[str, tuple[float, float]]:
    with DEMO.with_suffix(".csv").open() as f:
        return {r["label"]: (float(r["start"]), float(r["end"])) for r in csv.DictReader(f)}


def _run(scorer: OnnxScorer, config: ClipConfig, source: Any = None, listen: Config | None = None
         ) -> tuple[list[dict[str, Any]], ClipWriter]:
    writer = ClipWriter(config)
    sink = ListSink()
    try:
        Listener([source or FileSource(DEMO, RATE)], [sink], listen, scorer=scorer, clips=writer).run()
    finally:
        writer.close()
    return sink.messages, writer


def _offset(messages: list[dict[str, Any]], label: str) -> dict[str, Any]:
    return next(m for m in messages if m["type"] == "event" and m["event"] == "offset" and m["label"] == label)


def test_clip_holds_the_sounds_onset(scorer: OnnxScorer, demo: np.ndarray, tmp_path: Path) -> None:
    messages, writer = _run(scorer, ClipConfig(tmp_path / "clips"))
    off = _offset(messages, "Dog")
    path = Path(off["clip"])
    assert path.is_absolute() and path.parent == tmp_path / "clips" and path.suffix == ".flac"
    audio, sr = sf.read(path, dtype="float32")
    side = json.loads(path.with_suffix(".json").read_text())
    assert sr == RATE == side["sample_rate"]
    # Pre-roll 2 s before the detected onset, post-roll 1 s after the offset.
    assert side["clip_start"] == pytest.approx(off["start"] - 2.0, abs=1e-4)
    assert side["clip_end"] == pytest.approx(off["end"] + 1.0, abs=1e-4)
    assert side["onset_in_clip"] == pytest.approx(2.0, abs=1e-4) and side["truncated"] is None
    a = round(side["clip_start"] * RATE)
    assert audio.size == round(side["clip_end"] * RATE) - a
    np.testing.assert_array_equal(audio, demo[a : a + audio.size])  # the source audio, bit-exact
    true_start, _ = _truth()["Dog"]
    assert side["clip_start"] < true_start < side["clip_end"]
    # The bark is in it: much louder after the true onset than in the second before it.
    k = round((true_start - side["clip_start"]) * RATE)
    before, after = audio[k - RATE : k], audio[k : k + RATE // 2]
    assert np.sqrt(np.mean(after**2)) > 4 * np.sqrt(np.mean(before**2))
    offsets = [m for m in messages if m["type"] == "event" and m["event"] == "offset"]
    assert offsets and all(Path(m["clip"]).with_suffix(".json").exists() for m in offsets)
    assert writer.counters("demo.flac") == {"clips": len(offsets), "clip_errors": 0, "clips_dropped": 0}


def test_sidecar_holds_the_events_messages(scorer: OnnxScorer, tmp_path: Path) -> None:
    messages, _ = _run(scorer, ClipConfig(tmp_path))
    off = _offset(messages, "Speech")
    side = json.loads(Path(off["clip"]).with_suffix(".json").read_text())
    published = [m for m in messages if m["type"] == "event" and m["event_id"] == off["event_id"]]
    assert published[0]["event"] == "onset" and published[-1] is off
    assert any(m["event"] == "update" for m in published)
    assert side["messages"] == published  # onset, updates, offset (with "clip"), as published
    assert side["messages"][-1]["clip"] == off["clip"]
    assert (side["stream"], side["label"], side["event_id"]) == ("demo.flac", "Speech", off["event_id"])
    assert side["clip"] == Path(off["clip"]).name
    assert side["clip_start"] == 0.0  # the onset is 0.72 s in: the pre-roll stops at the start


def test_long_events_are_capped(scorer: OnnxScorer, tmp_path: Path) -> None:
    messages, _ = _run(scorer, ClipConfig(tmp_path, max_s=0.5, pre_s=1.0, post_s=0.25))
    off = _offset(messages, "Speech")  # 0.72 .. 4.56 s
    side = json.loads(Path(off["clip"]).with_suffix(".json").read_text())
    assert side["truncated"] == "max"
    assert side["clip_start"] == 0.0 and side["clip_end"] == pytest.approx(off["start"] + 0.75, abs=1e-4)
    assert sf.info(off["clip"]).frames == round(side["clip_end"] * RATE)
    assert side["messages"][-1]["event"] == "offset"  # the sidecar still waits for the offset


def test_event_open_at_the_end_is_cut_where_the_audio_ends(scorer: OnnxScorer, demo: np.ndarray,
                                                          tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"  # the demo up to the middle of its dog's barking (5.1-6.9 s)
    sf.write(cut, demo[: round(6.4 * RATE)], RATE, subtype="PCM_16")
    messages, _ = _run(scorer, ClipConfig(tmp_path / "clips"), FileSource(cut, RATE))
    last = [m for m in messages if m["type"] == "event" and m.get("reason") == "end_of_stream"]
    assert last
    side = json.loads(Path(last[0]["clip"]).with_suffix(".json").read_text())
    assert side["truncated"] == "end_of_stream"
    assert side["clip_end"] == pytest.approx(sf.info(cut).frames / RATE, abs=1e-4)


def test_history_ring_by_absolute_index() -> None:
    h = ClipHistory(10)
    h.write(0, np.arange(6, dtype=np.float32))
    h.write(6, np.arange(6, 14, dtype=np.float32))  # wraps; 0..3 overwritten
    assert (h.start, h.end) == (4, 14)
    a, x = h.read(0, 100)
    assert a == 4 and x.tolist() == list(range(4, 14))
    h.write(20, np.array([1.0, 2.0], dtype=np.float32))  # a hole: only audio after it is held
    assert h.read(0, 100)[0] == 20 and h.read(0, 100)[1].tolist() == [1.0, 2.0]
    h.write(22, np.arange(25, dtype=np.float32))  # longer than the ring: its newest 10
    assert h.read(0, 100)[1].tolist() == list(range(15, 25))


def test_a_hole_ends_the_clip_where_the_audio_stopped(tmp_path: Path) -> None:
    """Audio is never invented: a gap (or pause, or overrun) after the onset cuts the clip
    at the hole; the offset that follows still gets the path and the sidecar."""
    writer = ClipWriter(ClipConfig(tmp_path, pre_s=0.5, post_s=1.0))
    rec = clips_mod.ClipRecorder("mic:x", "abcdef123456", RATE, writer, lag_s=1.0)
    ramp = (np.arange(3 * RATE, dtype=np.float32) / (3 * RATE) - 0.5).astype(np.float32)
    try:
        rec.feed(0, ramp[: 2 * RATE])
        onset = {"type": "event", "event": "onset", "event_id": 4, "label": "Dog", "start": 1.0,
                 "start_wall": 1.7e9}
        rec.on_events([onset])
        rec.feed(3 * RATE, ramp[: RATE // 10])  # 1 s of audio missing: a hole
        offset = {**onset, "event": "offset", "end": 3.05, "reason": "score"}
        rec.on_events([offset])
    finally:
        writer.close()
    path = Path(offset["clip"])
    audio, _ = sf.read(path, dtype="float32")
    side = json.loads(path.with_suffix(".json").read_text())
    assert (side["clip_start"], side["clip_end"], side["truncated"]) == (0.5, 2.0, "gap")
    np.testing.assert_allclose(audio, ramp[RATE // 2 : 2 * RATE], atol=1 / 32768)
    assert [m["event"] for m in side["messages"]] == ["onset", "offset"]
    assert side["messages"][-1]["clip"] == str(path)


def _clip_file(d: Path, stamp: str, size: int, age_s: float, now: float) -> list[Path]:
    out = []
    for ext, n in ((".flac", size), (".json", 100)):
        p = d / f"{stamp}_mic_default_Dog_abcd-1{ext}"
        p.write_bytes(b"x" * n)
        os.utime(p, (now - age_s, now - age_s))
        out.append(p)
    return out


def test_retention_by_size_removes_the_oldest_clips_with_their_sidecars(tmp_path: Path) -> None:
    now = time.time()
    files = [_clip_file(tmp_path, f"2025010{i}T000000.000Z", 1000, 100 - i, now) for i in range(1, 6)]
    other = tmp_path / "notes.txt"
    other.write_bytes(b"y" * 10_000)  # not a clip: never counted or removed
    assert enforce_retention(tmp_path, 3 * 1100, None, now) == 2
    assert not any(p.exists() for p in files[0] + files[1])
    assert all(p.exists() for group in files[2:] for p in group) and other.exists()
    assert enforce_retention(tmp_path, 3 * 1100, None, now) == 0


def test_retention_by_age(tmp_path: Path) -> None:
    now = time.time()
    old = _clip_file(tmp_path, "20250101T000000.000Z", 10, 8 * 86400, now)
    new = _clip_file(tmp_path, "20250108T000000.000Z", 10, 3600, now)
    stray = tmp_path / "old.wav"
    stray.write_bytes(b"z")
    os.utime(stray, (now - 30 * 86400, now - 30 * 86400))
    assert enforce_retention(tmp_path, None, parse_age("7d"), now) == 1
    assert not any(p.exists() for p in old) and all(p.exists() for p in new) and stray.exists()


def test_writer_applies_retention_as_it_writes(scorer: OnnxScorer, tmp_path: Path) -> None:
    # The demo's clips without a limit first: the limit below holds the largest clip (so the
    # newest is always kept) and less than all of them, whatever the model's events are.
    probe, _ = _run(scorer, ClipConfig(tmp_path / "probe"))
    sizes = [sum(p.stat().st_size for p in (Path(m["clip"]), Path(m["clip"]).with_suffix(".json")))
             for m in probe if m["type"] == "event" and m["event"] == "offset"]
    assert len(sizes) >= 3
    limit = (max(sizes) + sum(sizes)) // 2
    clips = tmp_path / "clips"
    clips.mkdir()
    now = time.time()
    stale = _clip_file(clips, "20240101T000000.000Z", 10, 10 * 86400, now)
    messages, writer = _run(scorer, ClipConfig(clips, max_bytes=limit, max_age_s=parse_age("7d")))
    assert not any(p.exists() for p in stale)  # removed at start by age
    total = sum(p.stat().st_size for p in clips.iterdir())
    assert total <= limit
    offsets = [m for m in messages if m["type"] == "event" and m["event"] == "offset"]
    kept = [m for m in offsets if Path(m["clip"]).exists()]
    assert 0 < len(kept) < len(offsets) and writer.removed > 0
    assert Path(offsets[-1]["clip"]).exists()  # the newest is kept


@pytest.mark.parametrize("text,seconds", [("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0),
                                          ("90", 90.0), ("1.5w", 907200.0)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "7x", "d7", "1e9"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"--clips-max-age .*accepted"):
        parse_age(text)


class _SlowFile(FileSource):
    """The demo read in small pieces with a pause after each, so the clip writer's
    errors arrive while the stream still runs (a file otherwise ends in ~0.3 s)."""

    def read(self, max_samples: int) -> np.ndarray | None:
        time.sleep(0.002)
        return super().read(max_samples)


def test_full_disk_is_counted_on_status_and_detection_goes_on(
    scorer: OnnxScorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, data: bytes) -> None:
        path.write_bytes(data[:10])  # a partial file, as a filling disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    config = replace(Config(), listen=replace(Config().listen, file_chunk_s=0.05))
    baseline = ListSink()
    Listener([FileSource(DEMO, RATE)], [baseline], config, scorer=scorer).run()
    monkeypatch.setattr(clips_mod, "write_file", full)
    messages, writer = _run(scorer, ClipConfig(tmp_path), _SlowFile(DEMO, RATE), config)

    def events(ms: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(m["event"], m["label"], m["start"], m["end"]) for m in ms if m["type"] == "event"]

    assert events(messages) == events(baseline.messages)  # detection unchanged
    status = [m for m in messages if m["type"] == "status"]
    told = [m for m in status if "No space left on device" in m.get("message", "")]
    assert told, [m.get("message") for m in status]
    assert told[0]["clip_errors"] >= 1 and "detection goes on" in told[0]["message"]
    assert status[-1]["state"] == "ended" and status[-1]["clip_errors"] >= 1
    offsets = [m for m in messages if m["type"] == "event" and m["event"] == "offset"]
    assert writer.counters("demo.flac")["clip_errors"] == len(offsets)  # each clip failed, once
    assert writer.counters("demo.flac")["clips"] == 0
    assert list(tmp_path.iterdir()) == []  # no partial files left


def test_a_full_queue_drops_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stuck disk holds the writer; submit still returns at once and counts the drops."""
    release = threading.Event()
    real_write = clips_mod.write_file

    def stuck(path: Path, data: bytes) -> None:
        release.wait(10)
        real_write(path, data)

    monkeypatch.setattr(clips_mod, "write_file", stuck)
    writer = ClipWriter(ClipConfig(tmp_path, queue_size=1))
    jobs = [clips_mod.ClipJob("s", tmp_path / f"20250101T000000.00{i}Z_s.flac", RATE,
                              audio=np.zeros(100, np.float32)) for i in range(5)]
    try:
        assert writer.submit(jobs[0])
        deadline = time.monotonic() + 5
        while writer._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer takes job 0 and blocks in the write
        t0 = time.monotonic()
        results = [writer.submit(j) for j in jobs[1:]]
        assert time.monotonic() - t0 < 0.5
    finally:
        release.set()
        writer.close()
    assert results == [True, False, False, False]
    assert writer.counters("s") == {"clips": 2, "clip_errors": 0, "clips_dropped": 3}


def test_files_only_wait_for_the_writer_instead_of_dropping(
    scorer: OnnxScorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (files read as fast as they decode) nothing is lost by waiting: a slow disk
    and a one-job queue still get every clip."""
    real_write = clips_mod.write_file

    def slow(path: Path, data: bytes) -> None:
        time.sleep(0.02)
        real_write(path, data)

    monkeypatch.setattr(clips_mod, "write_file", slow)
    messages, writer = _run(scorer, ClipConfig(tmp_path, queue_size=1))
    offsets = [m for m in messages if m["type"] == "event" and m["event"] == "offset"]
    assert writer.counters("demo.flac") == {"clips": len(offsets), "clip_errors": 0, "clips_dropped": 0}
    assert all(Path(m["clip"]).exists() for m in offsets)


def test_cli_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli.listen import main

    d = tmp_path / "c"
    assert main([str(DEMO), "--no-publish", "--json", "--clips", str(d), "--clip-pre", "1",
                 "--clip-post", "0.5", "--clips-max-mb", "100", "--clips-max-age", "7d"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    offsets = [m for m in lines if m["event"] == "offset"]
    assert offsets and all(Path(m["clip"]).parent == d.resolve() for m in offsets)
    assert all(Path(m["clip"]).exists() and Path(m["clip"]).with_suffix(".json").exists() for m in offsets)
    dog = json.loads(Path(_offset(lines, "Dog")["clip"]).with_suffix(".json").read_text())
    assert dog["onset_in_clip"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("args,expected", [
    (["--clip-pre", "-1"], "--clip-pre -1 s; accepted: 0 to 60 s"),
    (["--clip-max", "0"], "--clip-max 0 s; accepted"),
    (["--clips-max-mb", "0"], "--clips-max-mb 0; accepted"),
    (["--clips-max-age", "soon"], "--clips-max-age 'soon'; accepted"),
    (["--clip-post", "2", "--no-clips"], "--clip-post set(s) how clips are kept, but --clips DIR is not given"),
])
def test_cli_bad_clip_settings_one_line(args: list[str], expected: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli.listen import main

    clips = [] if "--no-clips" in args else ["--clips", str(tmp_path)]
    assert main([str(DEMO), "--no-publish", *clips, *[a for a in args if a != "--no-clips"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
