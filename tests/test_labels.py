"""Choosing labels (issue 22 #5, issue 20): one parser for --labels, [listen] labels,
--mqtt-label and sed-export --event-labels; the contract's event_labels; only chosen
labels open events while every label is still scored."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SCENE_EVENTS

from detector.config import Config, load_config
from detector.decide.smoother import Smoother, SmootherConfig
from detector.frontend.features import FeatureConfig
from detector.io.publisher import ListSink
from detector.model.contract import ContractError, Label, ModelContract
from detector.model.labels import (
    HOME_EVENT_LABELS,
    LabelError,
    choose_event_labels,
    parse_labels,
    read_label_file,
    suggest,
)

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
NAMES = ["Dog", "Glass", "Smoke detector, smoke alarm", "Alarm", "Speech", "A", "B", "A, B",
         "Roaring cats (lions, tigers)"]


# -- the parser ----------------------------------------------------------------------


def test_commas_inside_names_are_read_longest_first() -> None:
    assert parse_labels("Dog,Glass,Smoke detector, smoke alarm", NAMES) == (
        "Dog", "Glass", "Smoke detector, smoke alarm")
    assert parse_labels("A,B", NAMES) == ("A, B",)  # the longest match wins ...
    assert parse_labels("A|B", NAMES) == ("A", "B")  # ... and '|' settles it
    assert parse_labels("Roaring cats (lions, tigers),Dog", NAMES) == (
        "Roaring cats (lions, tigers)", "Dog")


def test_case_spacing_repeats_and_several_strings() -> None:
    assert parse_labels(" dog , SMOKE DETECTOR,smoke alarm|speech,Dog", NAMES) == (
        "Dog", "Smoke detector, smoke alarm", "Speech")
    assert parse_labels(["Dog", "Glass|Dog"], NAMES) == ("Dog", "Glass")


def test_unknown_names_are_one_error_with_suggestions() -> None:
    with pytest.raises(LabelError) as e:
        parse_labels("Dgo,Smoke detector, smoke alaarm,Frog", NAMES)
    msg = str(e.value)
    assert "'Dgo' (did you mean 'Dog'?)" in msg
    assert "'Smoke detector, smoke alaarm' (did you mean 'Smoke detector, smoke alarm'?)" in msg
    assert "'Frog' " in msg and "not among the model's 9 labels" in msg
    assert "\n" not in msg


def test_a_part_of_a_name_suggests_the_whole_name() -> None:
    assert suggest("smoke alarm", NAMES)[0] == "Smoke detector, smoke alarm"
    assert suggest("qwertyuiop", NAMES) == []


@pytest.mark.parametrize("spec", ["", " , ", "|", []])
def test_no_names_is_an_error(spec: str | list[str]) -> None:
    with pytest.raises(LabelError, match="no label names"):
        parse_labels(spec, NAMES)


def test_choose_event_labels_precedence() -> None:
    assert choose_event_labels(NAMES, None, None) == tuple(NAMES)
    assert choose_event_labels(NAMES, ("Dog",), None) == ("Dog",)
    assert choose_event_labels(NAMES, ("Dog",), "Glass") == ("Glass",)


def test_home_set_is_audioset_names() -> None:
    """Every default event label is an AudioSet (and so YAMNet) display name; none of
    the noise, silence or room classes is among them."""
    names = read_label_file(HOME_EVENT_LABELS)
    assert 60 <= len(names) <= 100
    ontology = {d["name"] for d in json.loads((REPO / "training/data/ontology.json").read_text())}
    assert set(names) <= ontology, sorted(set(names) - ontology)
    for noise in ("Noise", "White noise", "Pink noise", "Hum", "Mains hum", "Static", "Silence",
                  "Mechanical fan", "Air conditioning", "Inside, small room", "Water"):
        assert noise not in names
    for wanted in ("Speech", "Baby cry, infant cry", "Dog", "Doorbell", "Knock",
                   "Smoke detector, smoke alarm", "Shatter", "Typing", "Toilet flush"):
        assert wanted in names


# -- contract ------------------------------------------------------------------------


def _contract(event_labels: object = None) -> str:
    c = ModelContract(
        labels=tuple(Label(n, f"/m/{i}") for i, n in enumerate(NAMES)), features=FeatureConfig(),
        on_thresholds=(0.5,) * len(NAMES), off_thresholds=(0.3,) * len(NAMES), model_version="t",
    )
    doc = json.loads(c.to_json())
    assert "event_labels" not in doc  # absent unless set
    if event_labels is not None:
        doc["event_labels"] = event_labels
    return json.dumps(doc)


def test_contract_event_labels_round_trip() -> None:
    assert ModelContract.from_json(_contract()).event_labels is None
    c = ModelContract.from_json(_contract(["Dog", "Smoke detector, smoke alarm"]))
    assert c.event_labels == ("Dog", "Smoke detector, smoke alarm")
    assert ModelContract.from_json(c.to_json()).event_labels == c.event_labels
    assert "event_labels" not in c.extra


@pytest.mark.parametrize("bad, match", [
    (["Dog", "Dgo"], "'Dgo' \\(did you mean 'Dog'\\?\\)"),
    ("Dog", "must be a list of label names"),
    ([1], "must be a list of label names"),
])
def test_contract_event_labels_unknown_is_a_contract_error(bad: object, match: str) -> None:
    with pytest.raises(ContractError, match=match):
        ModelContract.from_json(_contract(bad))


# -- config --------------------------------------------------------------------------


def test_config_labels_list_or_string(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[listen]\nlabels = ["Dog", "Smoke detector, smoke alarm"]\n')
    assert load_config(p).listen.labels == ("Dog", "Smoke detector, smoke alarm")
    p.write_text('[listen]\nlabels = "Dog|Glass"\n')
    assert load_config(p).listen.labels == ("Dog|Glass",)
    p.write_text("[listen]\nlabels = 3\n")
    with pytest.raises(ValueError, match=r"\[listen\] labels = 3 \(int\); expected a list of strings"):
        load_config(p)
    assert load_config(None, {"labels": ["Dog"]}).listen.labels == ("Dog",)  # the CLI override


# -- the smoother and the pipeline ---------------------------------------------------


def test_smoother_opens_events_only_for_chosen_labels() -> None:
    names = ["a", "b"]
    sm = Smoother(SmootherConfig(), names, [0.5, 0.5], [0.3, 0.3], 0.5, event_labels=["b"])
    onsets = []
    for k in range(6):
        s, tr = sm.process(np.array([0.9, 0.9]), 0.5 * k)
        onsets += [names[t.label] for t in tr if t.kind == "onset"]
        assert s[0] > 0  # the unchosen label is still smoothed (and published)
    assert onsets == ["b"]


def _scene_messages(toy_model: Path, toy_scene: Path, config: Config, event_labels: tuple[str, ...] | None = None) -> list[dict]:
    from detector.model.scorer import OnnxScorer
    from detector.pipeline import Listener
    from detector.sources.file import FileSource

    scorer = OnnxScorer(toy_model)
    if event_labels is not None:
        scorer.contract = dataclasses.replace(scorer.contract, event_labels=event_labels)
    sink = ListSink()
    Listener([FileSource(toy_scene, 16000)], [sink], config, scorer=scorer).run()
    return sink.messages


def test_pipeline_events_for_chosen_labels_scores_for_all(toy_model: Path, toy_scene: Path) -> None:
    cfg = load_config(None, {"labels": ["Sine wave,Beep, bleep"]})
    msgs = _scene_messages(toy_model, toy_scene, cfg)
    onsets = [m["label"] for m in msgs if m["type"] == "event" and m["event"] == "onset"]
    assert onsets == ["Sine wave", "Beep, bleep"]
    scored = {e["label"] for m in msgs if m["type"] == "scores" for e in m["top"]}
    assert "White noise" in scored


def test_contract_default_and_override(toy_model: Path, toy_scene: Path) -> None:
    """The contract's event_labels are the default; [listen] labels / --labels override."""
    msgs = _scene_messages(toy_model, toy_scene, Config(), event_labels=("White noise",))
    assert [m["label"] for m in msgs if m["type"] == "event" and m["event"] == "onset"] == ["White noise"]
    cfg = load_config(None, {"labels": ["Beep, bleep"]})
    msgs = _scene_messages(toy_model, toy_scene, cfg, event_labels=("White noise",))
    assert [m["label"] for m in msgs if m["type"] == "event" and m["event"] == "onset"] == ["Beep, bleep"]


# -- sed-listen as a user runs it ----------------------------------------------------


def _listen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector.cli.listen", *args], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=REPO)


def test_listen_labels_flag(toy_model: Path, toy_scene: Path) -> None:
    r = _listen(str(toy_scene), "--model", str(toy_model), "--json", "--no-publish",
                "--labels", "beep, bleep")
    assert r.returncode == 0, r.stderr
    onsets = [json.loads(x)["label"] for x in r.stdout.splitlines() if '"onset"' in x]
    assert onsets == ["Beep, bleep"]
    assert len(SCENE_EVENTS) == 3  # the other two sounds were not chosen


def test_listen_bad_label_is_one_line_before_any_source(toy_model: Path) -> None:
    r = _listen("mic:does-not-exist", "--model", str(toy_model), "--no-publish",
                "--labels", "Sine wav,Beep, bleep")
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert err == ["sed-listen: error: --labels: 'Sine wav' (did you mean 'Sine wave'?) is not "
                   "among the model's 4 labels; separate names with ',' or '|' "
                   "(sed-listen --list-labels prints them)"], r.stderr


def test_listen_bad_config_label(toy_model: Path, tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[listen]\nlabels = ["Beep bleep"]\n')
    r = _listen("x.wav", "--model", str(toy_model), "--no-publish", "--config", str(p))
    assert r.returncode == 2
    assert "[listen] labels: 'Beep bleep' (did you mean 'Beep, bleep'?)" in r.stderr


def test_list_labels(toy_model: Path) -> None:
    r = _listen("--model", str(toy_model), "--list-labels", "--labels", "Sine wave")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(lines) == sorted(["Sine wave\tevents", "Beep, bleep", "Chirp tone", "White noise"])
