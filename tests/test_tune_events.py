"""training.tune_events: the replayed decisions are sed-listen's, and tuning finds the threshold that made the references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from detector.config import Config
from detector.decide.smoother import SmootherConfig
from detector.model.resolve import load_scorer
from detector.pipeline import detect_file
from training.tune_events import decide, main, score_scenes, tune

DEMO = Path(__file__).resolve().parents[1] / "detector" / "data" / "demo.flac"


def _events(messages: list[dict[str, object]]) -> list[tuple[str, float, float]]:
    starts = {m["event_id"]: m["start"] for m in messages if m["event"] == "onset"}
    return sorted((str(m["label"]), float(starts[m["event_id"]]), float(m["end"]))  # type: ignore[arg-type]
                  for m in messages if m["event"] == "offset")


def _manifest(tmp_path: Path, rows: list[tuple[str, float, float]]) -> Path:
    path = tmp_path / "scenes.csv"
    lines = ["path,labels,onset,offset,source,split"]
    lines += [f'{DEMO},"{label}",{on:.3f},{off:.3f},scene:test,train' for label, on, off in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(on: float | None = None, labels: tuple[str, ...] | None = None) -> Config:
    c = Config()
    policy = dataclasses.replace(c.smoother.default, on=on, off=None if on is None else on * 0.5)
    return dataclasses.replace(c, smoother=SmootherConfig(policy), listen=dataclasses.replace(c.listen, labels=labels))


@pytest.mark.parametrize("on", [None, 0.3])
def test_replayed_decisions_are_the_pipelines(tmp_path: Path, on: float | None) -> None:
    scorer = load_scorer(None, threads=1)
    scene = score_scenes(scorer, _manifest(tmp_path, [("Speech", 0.5, 4.5)]))[0]
    names = scorer.contract.names
    config = _config(on)
    replayed = sorted((names[k], a, b) for _, k, a, b in decide(scene, scorer, config))
    streamed = _events(detect_file(DEMO, config=config, scorer=scorer))
    assert replayed == streamed
    assert len(replayed) >= 5  # the demo holds several events either way


def test_tune_recovers_the_threshold_that_made_the_references(tmp_path: Path) -> None:
    scorer = load_scorer(None, threads=1)
    # The references use the default hold (0.5 s) for every label, the one hold tuned here;
    # the shipped model's own per-label holds (up to 4 s) would join events across gaps.
    scorer.contract = dataclasses.replace(scorer.contract, event_timing={})
    # References: what sed-listen raises at on = 0.3 for every label; the model's own
    # thresholds (tuned for clips) give other events on the demo for some of them.
    at_03 = _events(detect_file(DEMO, config=_config(0.3), scorer=scorer))
    scenes = score_scenes(scorer, _manifest(tmp_path, at_03))
    labels = sorted({lab for lab, _, _ in at_03})
    report = tune(scenes, scorer, labels, grid=(0.3, 0.6, 0.9), min_events=1, holds=(0.5,))
    assert report["tuned"], "no label's F1 improved over the model's own thresholds"
    names = list(scorer.contract.names)
    for name, t in report["tuned"].items():
        assert t["on"] == 0.3 and t["f1"] == pytest.approx(1.0) and t["f1"] > t["f1_before"]
        assert report["event_timing"][name] == {"hold_s": 0.5}
        assert report["thresholds"]["on"][names.index(name)] == 0.3
        assert report["thresholds"]["off"][names.index(name)] == pytest.approx(0.15)
    untouched = [k for k, n in enumerate(names) if n not in report["tuned"]]
    assert all(report["thresholds"]["on"][k] == scorer.contract.on_thresholds[k] for k in untouched)


def test_cli_writes_a_report_sed_export_reads(tmp_path: Path) -> None:
    from training.export import thresholds_from_report

    model = Path(__file__).resolve().parents[1] / "exports" / "default" / "model.onnx"
    manifest = _manifest(tmp_path, [("Speech", 0.72, 4.56), ("Dog", 5.04, 6.96)])
    assert main([str(model), "--scenes", str(manifest), "--out", str(tmp_path / "t"), "--threads", "1"]) == 0
    names = load_scorer(None, threads=1).contract.names
    on, off = thresholds_from_report(tmp_path / "t" / "report.json", names)
    assert len(on) == len(names) and all(0 < b <= a for a, b in zip(on, off, strict=True))
    assert "micro F1" in (tmp_path / "t" / "summary.md").read_text(encoding="utf-8")
    listed = (tmp_path / "t" / "event_labels.txt").read_text(encoding="utf-8")
    assert "Speech" in listed.splitlines()  # the model's event labels stay event labels
    # sed-export writes the report's thresholds and event timing into the contract
    pytest.importorskip("torch")
    import json

    from detector.model.scorer import OnnxScorer
    from training.export import main as export_main

    doc = json.loads((tmp_path / "t" / "report.json").read_text(encoding="utf-8"))
    doc["event_timing"] = {"Dog": {"hold_s": 2.0}}
    (tmp_path / "t" / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "export"
    assert export_main([str(model.with_suffix(".pt")), "--out", str(out), "--report", str(tmp_path / "t" / "report.json"),
                        "--event-labels", str(tmp_path / "t" / "event_labels.txt")]) == 0
    exported = OnnxScorer(out / "model.onnx", threads=1).contract
    assert exported.event_timing == {"Dog": {"hold_s": 2.0}}
    assert list(exported.on_thresholds) == doc["thresholds"]["on"]


def test_candidates_join_the_event_labels_only_where_they_score(tmp_path: Path) -> None:
    scorer = load_scorer(None, threads=1)
    at_03 = _events(detect_file(DEMO, config=_config(0.3), scorer=scorer))
    dog = [e for e in at_03 if e[0] == "Dog"]
    assert dog, "the demo's dog is heard at 0.3"
    scenes = score_scenes(scorer, _manifest(tmp_path, dog))
    report = tune(scenes, scorer, ["Speech"], grid=(0.3,), holds=(0.5, 2.0), min_events=1,
                  candidates=["Dog", "Cat"], min_f1=0.5)
    assert report["event_labels"] == ["Speech", "Dog"]  # Cat: no reference events, never added
    assert report["tuned"]["Dog"]["added"] and report["tuned"]["Dog"]["f1"] == pytest.approx(1.0)
    # applied as sed-export writes it, the tuned model raises the reference events
    from training.tune_events import applied, measure

    after = measure(scenes, applied(scorer, report))
    assert after["true_positives"] == len(dog) and after["micro_f1"] > 0.5


def test_model_timing_under_the_users_settings() -> None:
    from detector.decide.smoother import SmootherConfig
    from detector.stream import with_model_timing

    user = SmootherConfig(labels={"Dog": {"hold_s": 0.2}, "Cat": {"on": 0.9}})
    merged = with_model_timing(user, {"Dog": {"hold_s": 3.0, "debounce_s": 0.1}, "Bird": {"hold_s": 4.0}})
    assert merged.policy("Dog").hold_s == 0.2 and merged.policy("Dog").debounce_s == 0.1
    assert merged.policy("Bird").hold_s == 4.0
    assert merged.policy("Cat").on == 0.9 and merged.policy("Cat").hold_s == user.default.hold_s
    assert with_model_timing(user, {}) is user
    # a [smoother] default the user changed applies to every label, the model's included
    from detector.decide.smoother import LabelPolicy

    mine = SmootherConfig(LabelPolicy(hold_s=9.0), {"Dog": {"debounce_s": 0.3}})
    merged = with_model_timing(mine, {"Dog": {"hold_s": 3.0, "debounce_s": 0.1}, "Bird": {"hold_s": 4.0}})
    assert merged.policy("Dog").hold_s == 9.0 and merged.policy("Dog").debounce_s == 0.3
    assert merged.policy("Bird").hold_s == 9.0


@pytest.mark.parametrize(("timing", "message"), [
    ({"Dgo": {"hold_s": 1.0}}, "not a label"),
    ({"Dog": {"hold": 1.0}}, "accepted"),
    ({"Dog": {"hold_s": -1}}, "seconds"),
    ({"Dog": {}}, "non-empty"),
    (["Dog"], "must map"),
])
def test_contract_rejects_bad_event_timing(timing: object, message: str) -> None:
    import json

    from detector.model.contract import ContractError, ModelContract

    c = load_scorer(None, threads=1).contract
    doc = json.loads(c.to_json())
    doc["event_timing"] = timing
    with pytest.raises(ContractError, match=message):
        ModelContract.from_json(json.dumps(doc), "m.onnx")
    doc["event_timing"] = {"Dog": {"hold_s": 2}}
    assert ModelContract.from_json(json.dumps(doc)).event_timing == {"Dog": {"hold_s": 2.0}}



def test_never_event_labels_are_yamnet_classes() -> None:
    from detector.model.contract import ModelContract
    from detector.model.labels import read_label_file
    from detector.model.resolve import DEFAULT_MODEL
    from training.tune_events import NEVER_EVENT_LABELS

    names = set(ModelContract.read(DEFAULT_MODEL).names)  # v2: all 521 of YAMNet's classes
    never = read_label_file(NEVER_EVENT_LABELS)
    assert len(never) > 20 and set(never) <= names, sorted(set(never) - names)
    home = Path(__file__).resolve().parents[1] / "detector" / "data" / "event_labels_home.txt"
    assert not set(never) & set(read_label_file(home))


def test_settings_that_fire_on_steady_noise_are_never_chosen(tmp_path: Path) -> None:
    scorer = load_scorer(None, threads=1)
    at_03 = _events(detect_file(DEMO, config=_config(0.3), scorer=scorer))
    scenes = score_scenes(scorer, _manifest(tmp_path, at_03))
    labels = sorted({lab for lab, _, _ in at_03})
    free = tune(scenes, scorer, labels, grid=(0.3,), holds=(0.5,), min_events=1)
    assert free["tuned"]
    # The same audio as a "noise bed": every label it makes fire at 0.3 is left as it was.
    noisy = tune(scenes, scorer, labels, grid=(0.3,), holds=(0.5,), min_events=1,
                 noise=[dataclasses.replace(scenes[0], references=[])])
    assert not noisy["tuned"]
    assert noisy["thresholds"]["on"] == list(scorer.contract.on_thresholds)


def test_noise_scenes_cover_every_kind_at_every_level(tmp_path: Path) -> None:
    from training.corpus.noise import KINDS
    from training.tune_events import NOISE_LEVELS, noise_scenes

    scenes = noise_scenes(load_scorer(None, threads=1), tmp_path, minutes=0.05)
    assert len(scenes) == len(KINDS) * len(NOISE_LEVELS)
    assert all(not s.references and len(s.patches) >= 3 for s in scenes)


def test_noise_levels_are_chosen_on_the_command_line(tmp_path: Path) -> None:
    import json

    model = Path(__file__).resolve().parents[1] / "exports" / "default" / "model.onnx"
    manifest = _manifest(tmp_path, [("Speech", 0.72, 4.56)])
    out = tmp_path / "t"
    assert main([str(model), "--scenes", str(manifest), "--out", str(out), "--threads", "1",
                 "--noise-minutes", "0.05", "--noise-levels=-60,-20", "--grid", "0.5"]) == 0
    assert sorted(p.name for p in (out / "noise_beds").glob("white_*")) == ["white_-20dBFS.flac", "white_-60dBFS.flac"]
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["noise_levels_dbfs"] == [-60.0, -20.0]
    with pytest.raises(SystemExit):
        main([str(model), "--scenes", str(manifest), "--out", str(out), "--noise-levels=-60,3"])


def test_cli_tunes_yamnet_the_same_way_for_comparison(tmp_path: Path) -> None:
    """``tune_events yamnet``: the teacher, from the home event labels, tuned as the model is;
    ``training.model_card --yamnet-events`` measures it with the report."""
    import json

    from detector.model.labels import HOME_EVENT_LABELS, read_label_file
    from detector.model.yamnet import YamnetScorer, find_yamnet
    from training.tune_events import applied

    path = find_yamnet()
    if path is None:
        pytest.skip("YAMNet not fetched (bin/setup does: python -m detector.bench fetch-yamnet)")
    manifest = _manifest(tmp_path, [("Speech", 0.72, 4.56), ("Dog", 5.04, 6.96)])
    assert main(["yamnet", "--scenes", str(manifest), "--out", str(tmp_path / "y"), "--threads", "1",
                 "--noise-minutes", "0", "--grid", "0.3,0.6", "--holds", "0.5", "--min-events", "1"]) == 0
    report = json.loads((tmp_path / "y" / "report.json").read_text(encoding="utf-8"))
    teacher = YamnetScorer(path, threads=1)
    assert report["labels"] == teacher.contract.names and len(report["labels"]) == 521
    home = [n for n in read_label_file(HOME_EVENT_LABELS) if n in teacher.contract.names]
    assert report["event_labels"][: len(home)] == home
    tuned = applied(teacher, report)
    assert tuned.contract.event_labels == tuple(report["event_labels"])
    assert list(tuned.contract.on_thresholds) == report["thresholds"]["on"]
    with pytest.raises(SystemExit):  # --yamnet names the teacher's file; with another model it is a mistake
        main([str(DEMO.parents[2] / "exports" / "default" / "model.onnx"), "--scenes", str(manifest),
              "--out", str(tmp_path / "z"), "--yamnet", str(path)])
