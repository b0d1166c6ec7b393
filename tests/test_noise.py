"""training.corpus.noise (steady beds) and training.noise_eval (false onsets on them).

Levels are exact, spectra have the slopes and peaks their names promise, beds are
reproducible by seed, and noise_eval's counts are detect_file's onsets on the shipped model.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detector.model.resolve import DEFAULT_MODEL
from detector.model.scorer import OnnxScorer
from detector.pipeline import detect_file
from training.corpus.noise import KINDS, bed, dbfs, eval_rng, main, write_set
from training.noise_eval import evaluate_beds, format_table

SR = 16000
N = 4 * SR


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def octave_slope_db(x: np.ndarray, lo: float = 100.0, hi: float = 6400.0) -> float:
    """Least-squares slope of band power (dB) per octave over octave bands from ``lo`` to ``hi``."""
    f = np.fft.rfftfreq(x.size, 1 / SR)
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    edges = lo * 2.0 ** np.arange(int(np.log2(hi / lo)) + 1)
    db = [10 * np.log10(p[(f >= a) & (f < 2 * a)].mean()) for a in edges[:-1]]
    return float(np.polyfit(np.arange(len(db)), db, 1)[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("level", [-70.0, -45.0, -20.0])
def test_each_kind_hits_its_level(kind: str, level: float) -> None:
    x = bed(kind, N, level, rng())
    assert x.shape == (N,) and x.dtype == np.float32
    assert dbfs(x) == pytest.approx(level, abs=0.1)
    assert np.abs(x).max() < 1.0


@pytest.mark.parametrize(("kind", "slope", "tol"), [("white", 0.0, 0.5), ("pink", -3.01, 0.5),
                                                     ("brown", -6.02, 0.5)])
def test_colour_slopes(kind: str, slope: float, tol: float) -> None:
    assert octave_slope_db(bed(kind, N, -30.0, rng(1))) == pytest.approx(slope, abs=tol)


def test_white_is_flat_band_by_band() -> None:
    x = bed("white", N, -30.0, rng(2)).astype(np.float64)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    p = np.abs(np.fft.rfft(x)) ** 2
    bands = [10 * np.log10(p[(f >= a) & (f < 2 * a)].mean()) for a in (125, 250, 500, 1000, 2000, 4000)]
    assert max(bands) - min(bands) < 1.0


@pytest.mark.parametrize(("kind", "mains"), [("hum50", 50.0), ("hum60", 60.0)])
def test_hum_has_peaks_at_the_mains_harmonics(kind: str, mains: float) -> None:
    x = bed(kind, N, -30.0, rng(3)).astype(np.float64)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    p = np.abs(np.fft.rfft(x)) ** 2

    def at(hz: float) -> float:
        return 10 * np.log10(p[np.abs(f - hz) <= 1.0].mean())

    for k in (1, 2, 3):
        between = at((k + 0.5) * mains)
        assert at(k * mains) > between + 20, (k, at(k * mains), between)


def test_shaped_kinds_have_their_shapes() -> None:
    def lo_hi_db(x: np.ndarray, split: float) -> float:
        f = np.fft.rfftfreq(x.size, 1 / SR)
        p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        return float(10 * np.log10(p[(f > 20) & (f < split)].mean() / p[f >= split].mean()))

    assert lo_hi_db(bed("hvac", N, -30.0, rng(4)), 200) > 15  # rumble over the air-flow band
    assert lo_hi_db(bed("room", N, -30.0, rng(4)), 200) > 15
    assert lo_hi_db(bed("fan", N, -30.0, rng(4)), 1000) > 10  # low-passed above 2-4 kHz
    mic = bed("mic_self_noise", N, -30.0, rng(4)).astype(np.float64)
    assert abs(mic.mean()) > 1e-5  # a DC offset
    assert octave_slope_db(mic, 1000, 8000) == pytest.approx(0.0, abs=1.0)  # white above the corner


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(kind: str) -> None:
    a, b = bed(kind, SR, -40.0, rng(7)), bed(kind, SR, -40.0, rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, bed(kind, SR, -40.0, rng(8)))


def test_bad_arguments_say_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"noise kind 'rain'; accepted"):
        bed("rain", N, -30.0, rng())
    with pytest.raises(ValueError, match=r"level 3\.0 dBFS; accepted"):
        bed("white", N, 3.0, rng())
    with pytest.raises(ValueError, match="n=0"):
        bed("white", 0, -30.0, rng())


def test_eval_streams_are_distinct_from_each_other() -> None:
    a = eval_rng("white", -20.0).standard_normal(8)
    assert not np.array_equal(a, eval_rng("white", -40.0).standard_normal(8))
    assert not np.array_equal(a, eval_rng("pink", -20.0).standard_normal(8))
    np.testing.assert_array_equal(a, eval_rng("white", -20.0).standard_normal(8))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("beds")
    assert main(["write", str(out), "--minutes", "0.1", "--levels", "-40", "-20",
                 "--kinds", "white", "pink", "hum50"]) == 0
    return out


def test_write_set_files_and_manifest(tiny_set: Path) -> None:
    import soundfile as sf

    with (tiny_set / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [f"{k}_{lv}dBFS.flac" for k in ("white", "pink", "hum50")
                                        for lv in (-40, -20)]
    for r in rows:
        x, sr = sf.read(tiny_set / r["path"], dtype="float32")
        assert sr == SR and x.shape == (round(6 * SR),) and r["labels"] == ""
        assert r["source"].startswith("noise/") and float(r["seconds"]) == 6.0
        assert dbfs(x) == pytest.approx(float(r["level"]), abs=0.1)
    again = tiny_set / "again"
    write_set(again, 0.1, [-40.0], ["pink"])
    a, _ = sf.read(tiny_set / "pink_-40dBFS.flac")
    b, _ = sf.read(again / "pink_-40dBFS.flac")
    np.testing.assert_array_equal(a, b)  # reproducible


def test_the_default_model_opens_nothing_on_steady_noise(tiny_set: Path) -> None:
    report = evaluate_beds(tiny_set, OnnxScorer(DEFAULT_MODEL, "cpu", 1))  # v1.4 opened Rain/Water on hiss
    assert report["onsets"] == 0, report["by_label"]


def test_noise_eval_counts_detect_file_onsets(tiny_set: Path) -> None:
    from training.model_card import _capped

    # Every on-threshold capped at 0.05: a model that hears events in noise, so there is
    # something to count (the shipped v2 opens none, above).
    scorer = _capped(OnnxScorer(DEFAULT_MODEL, "cpu", 1), 0.05)
    report = evaluate_beds(tiny_set, scorer)
    assert report["hours"] == pytest.approx(6 * 6.0 / 3600)
    assert len(report["files"]) == 6
    total: Counter[str] = Counter()
    for f in report["files"]:
        direct = Counter(m["label"] for m in detect_file(f["path"], scorer=scorer)
                         if m["event"] == "onset")
        assert f["labels"] == dict(direct)
        assert f["onsets"] == sum(direct.values())
        assert set(f["open_s"]) == set(direct) and all(0 < v <= 6.0 for v in f["open_s"].values())
        total.update(direct)
    assert report["onsets"] == sum(total.values()) and report["by_label"] == dict(total)
    assert report["per_hour"] == pytest.approx(report["onsets"] / report["hours"])
    assert sum(report["by_kind"].values()) == report["onsets"]
    assert report["onsets"] > 0
    table = format_table(report)
    assert "| white |" in table and "-20 dBFS" in table and "per hour" in table
