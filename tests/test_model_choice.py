"""YAMNet as a model choice (issue 22 #6) and sed-tag --pool (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SCENE_EVENTS

from detector.cli.tag import pool_scores, tag_file
from detector.model.labels import HOME_EVENT_LABELS, read_label_file
from detector.model.scorer import OnnxScorer
from detector.model.yamnet import find_yamnet

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "detector" / "data" / "demo.flac"
ENV = dict(os.environ, PYTHONPATH=str(REPO))
needs_yamnet = pytest.mark.skipif(
    find_yamnet() is None, reason="YAMNet not fetched (bin/setup fetches it: sed-bench fetch-yamnet)"
)


def _cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=120, env=env or ENV, cwd=REPO)


@pytest.mark.parametrize("module", ["detector.cli.listen", "detector.cli.tag"])
def test_yamnet_not_fetched_is_one_line_with_the_fetch_command(tmp_path: Path, module: str) -> None:
    env = dict(ENV, HOME=str(tmp_path))  # an empty ~/.cache/sed/yamnet
    r = _cli(module, str(DEMO), "--model", "yamnet", *(["--no-publish"] if "listen" in module else []),
             env=env)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "--model yamnet: YAMNet is not fetched" in lines[0]
    assert "`sed-bench fetch-yamnet`" in lines[0]


def test_sed_model_yamnet_env_is_the_same_choice(tmp_path: Path) -> None:
    env = dict(ENV, HOME=str(tmp_path), SED_MODEL="yamnet")
    r = _cli("detector.cli.tag", str(DEMO), env=env)
    assert r.returncode == 2 and "YAMNet is not fetched" in r.stderr


@needs_yamnet
def test_sed_tag_yamnet_521_classes() -> None:
    r = _cli("detector.cli.tag", str(DEMO), "--model", "yamnet", "--pool", "mean")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"].startswith("yamnet") and doc["pooling"] == "mean"
    assert len(doc["scores"]) == 521
    assert all(0.0 <= v <= 1.0 for v in doc["scores"].values())


@needs_yamnet
def test_sed_listen_yamnet_events_for_the_home_set_only() -> None:
    home = set(read_label_file(HOME_EVENT_LABELS))
    r = _cli("detector.cli.listen", str(DEMO), "--model", "yamnet", "--json-all", "--no-publish")
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(x) for x in r.stdout.splitlines()]
    onsets = [m["label"] for m in msgs if m["type"] == "event" and m["event"] == "onset"]
    assert onsets, "YAMNet raised no event on the demo clip (speech, dog, typing ...)"
    assert set(onsets) <= home, set(onsets) - home
    assert sum(m["event"] == "offset" for m in msgs if m["type"] == "event") == len(onsets)
    r = _cli("detector.cli.listen", "--model", "yamnet", "--list-labels")
    lines = r.stdout.splitlines()
    assert len(lines) == 521 and sum(ln.endswith("\tevents") for ln in lines) == len(home)


# -- sed-tag --pool --------------------------------------------------------------------


def test_pool_scores() -> None:
    x = np.array([[0.1, 0.9], [0.3, 0.1]])
    np.testing.assert_allclose(pool_scores(x), [0.3, 0.9])
    np.testing.assert_allclose(pool_scores(x, "mean"), [0.2, 0.5])
    with pytest.raises(ValueError, match="pool 'median'; accepted"):
        pool_scores(x, "median")
    with pytest.raises(ValueError, match="no patches"):
        pool_scores(np.zeros((0, 2)))


def test_tag_file_mean_does_not_depend_on_the_batch(toy_model: Path, toy_scene: Path) -> None:
    scorer = OnnxScorer(toy_model)
    mean = tag_file(toy_scene, scorer, pool="mean", batch=64)
    np.testing.assert_allclose(tag_file(toy_scene, scorer, pool="mean", batch=3), mean, atol=1e-6)
    high = tag_file(toy_scene, scorer, pool="max", batch=3)
    assert np.all(high >= mean) and np.any(high > mean + 0.1)
    # each sound of the scene fills 1-3 s of its 12 s: present (max), a minority (mean)
    idx = [scorer.contract.names.index(label) for label, _, _ in SCENE_EVENTS]
    assert high[idx].min() > 0.5 and mean[idx].max() < 0.5


def test_sed_tag_pool_flag(toy_model: Path, toy_scene: Path) -> None:
    out = {}
    for pool in ("max", "mean"):
        r = _cli("detector.cli.tag", str(toy_scene), "--model", str(toy_model), "--pool", pool)
        assert r.returncode == 0, r.stderr
        out[pool] = json.loads(r.stdout)
        assert out[pool]["pooling"] == pool
    assert all(out["max"]["scores"][k] >= v for k, v in out["mean"]["scores"].items())
    # the default is the mean (set on the held-out packages; detector/cli/tag.py)
    r = _cli("detector.cli.tag", str(toy_scene), "--model", str(toy_model))
    assert r.returncode == 0 and json.loads(r.stdout) == out["mean"], r.stderr
    r = _cli("detector.cli.tag", str(toy_scene), "--model", str(toy_model), "--pool", "median")
    assert r.returncode == 2 and "invalid choice: 'median'" in r.stderr
