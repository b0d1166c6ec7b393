"""The soak harness itself, briefly: 30 min of replayed audio with flat RSS and FDs.

The real runs (24 h replay, 30 min live) are ``python -m detector.bench.soak``; their numbers
are in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.bench import soak
from detector.sources.parse import FileSource, Source


def _all(src: Source) -> np.ndarray:
    parts = []
    while (x := src.read(7000)) is not None:
        parts.append(x)
    return np.concatenate(parts)


def test_loop_source_is_one_continuous_stream(toy_scene: Path) -> None:
    ref = _all(FileSource(toy_scene, 16000))
    loop = soak.LoopSource(toy_scene, 16000, seconds=2.5 * ref.shape[0] / 16000)
    got = _all(loop)
    assert loop.loops == 2 and got.shape[0] == round(2.5 * ref.shape[0])
    np.testing.assert_array_equal(got[: ref.shape[0]], ref)
    np.testing.assert_array_equal(got[ref.shape[0] : 2 * ref.shape[0]], ref)


def test_half_hour_replay_keeps_rss_and_fds_flat(toy_model: Path, toy_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    rc = soak.main(["--model", str(toy_model), "--clip", str(toy_scene), "--hours", "0.5",
                    "--sample-minutes", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    s = report["summary"]
    assert rc == 0, s
    assert s["flat"] and s["audio_hours"] == 0.5 and s["samples"] >= 15
    assert s["rss_growth_after_warmup_mb"] <= soak.RSS_SLACK_MB
    assert report["messages"]["event"] > 0 and report["subscriber_received"] > 0
    assert report["counters"]["dropped_samples"] == 0
