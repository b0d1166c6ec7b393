"""Issue 21's speed work changes nothing it should not: the shared log-mel kernel, block
smoothing, read-ahead and the paced wait give the per-stream, per-hop results."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from detector.config import FEW_LIVE_STREAMS, LIVE_FINE_HOP_S, Config, ListenConfig
from detector.decide.smoother import LabelPolicy, Smoother, SmootherConfig
from detector.frontend.features import FeatureConfig, log_mel
from detector.frontend.logmel import LogMelKernel, LogMelStage
from detector.io.publisher import ListSink
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.file import FileSource
from detector.stream import top_k

CFG = FeatureConfig()


def test_one_kernel_for_many_streams_gives_each_stream_its_own_features(real_clip: np.ndarray) -> None:
    clips = [real_clip, np.roll(real_clip, 1234)[:20000], 0.5 * real_clip[:9000]]
    kernel = LogMelKernel(CFG, block=300)  # blocks straddle stream boundaries
    stages = [LogMelStage(CFG, kernel) for _ in clips]
    got: list[list[np.ndarray]] = [[] for _ in clips]
    for start in range(0, max(len(c) for c in clips), 2500):
        parts = [(i, st.frames(c[start : start + 2500])) for i, (st, c) in enumerate(zip(stages, clips, strict=True))]
        mel = kernel.many([f for _, f in parts])
        row = 0
        for i, f in parts:
            got[i].append(mel[row : row + f.shape[0]])
            row += f.shape[0]
    for c, g in zip(clips, got, strict=True):
        np.testing.assert_array_equal(np.concatenate(g), log_mel(c, CFG))


@pytest.mark.parametrize(
    "policy",
    [
        LabelPolicy(),
        LabelPolicy(method="median", median_s=1.0, hold_s=0.3, debounce_s=0.2),
        LabelPolicy(method="none", hold_s=0.0, min_duration_s=1.0),
    ],
)
def test_smoother_block_equals_hop_by_hop(policy: LabelPolicy) -> None:
    rng = np.random.default_rng(1)
    x = np.clip(rng.random((60, 5)) ** 3 + (rng.random((60, 1)) > 0.7) * 0.6, 0, 1)
    x[7, 2] = np.nan
    labels = list("ABCDE")
    one = Smoother(SmootherConfig(default=policy), labels, [0.5] * 5, [0.3] * 5, 0.24)
    blk = Smoother(SmootherConfig(default=policy), labels, [0.5] * 5, [0.3] * 5, 0.24)
    centres = 0.48 + 0.24 * np.arange(60)
    ref = [one.process(x[i], centres[i]) for i in range(60)]
    got_s, got_t, got_a = [], [], []
    for a, b in ((0, 1), (1, 17), (17, 18), (18, 60)):
        d = blk.process_many(x[a:b], centres[a:b])
        got_s.append(d.smoothed)
        got_t += d.transitions
        got_a.append(d.active)
    np.testing.assert_array_equal(np.concatenate(got_s), np.array([s for s, _ in ref]))
    assert got_t == [t for _, t in ref]
    assert any(got_t), "the series never crossed a threshold"
    assert np.concatenate(got_a)[-1].tolist() == one.active.tolist()


def test_onset_comes_from_the_raw_score_and_offset_keeps_hysteresis() -> None:
    policy = LabelPolicy(method="ema", ema_tau_s=1.0, hold_s=0.0, min_duration_s=0.0)
    sm = Smoother(SmootherConfig(default=policy), ["A"], [0.5], [0.2], 0.5)
    _, trs = sm.process(np.array([0.9]), 0.25)  # the EMA is still ~0.35 here
    assert [(t.kind, t.time) for t in trs] == [("onset", 0.0)]
    _, trs = sm.process(np.array([0.1]), 0.75)  # raw drops, smoothed still >= off: stays open
    assert trs == [] and sm.active[0]


def test_top_k_is_the_stable_sort_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, 521)).astype(np.float32)
    x[:40] = np.round(x[:40], 1)  # many ties, some at the k-th place
    x[40:60, :300] = 0.0  # saturated rows: fewer than k distinct values
    x[60, 17] = np.nan
    x[61, :] = np.nan
    x[62, 3] = x[62, 9] = 1.0  # tie at the top
    for k in (1, 5, 10, 521, 600):
        want = np.argsort(-x, axis=1, kind="stable")[:, :k]
        got = top_k(x, k)
        assert got.shape == want.shape and np.array_equal(got, want), k
    assert top_k(x[:0], 5).shape == (0, 5)
    assert top_k(x, 5)[62, :2].tolist() == [3, 9]


def test_live_hop_is_fine_for_few_streams_and_coarse_for_many() -> None:
    lc = ListenConfig()
    assert lc.hop_for(False) == lc.patch_hop_s
    assert lc.hop_for(True, 1) == LIVE_FINE_HOP_S
    assert lc.hop_for(True, FEW_LIVE_STREAMS + 1) == lc.patch_hop_s
    assert ListenConfig(live_patch_hop_s=0.24).hop_for(True, 1000) == 0.24


class _CountingFile(FileSource):
    reads = 0

    def read(self, max_samples: int) -> np.ndarray | None:
        self.reads += 1
        return super().read(max_samples)


def test_a_paced_stream_is_read_when_a_hop_is_due_not_polled(toy_model: Path, toy_scene: Path) -> None:
    scorer = OnnxScorer(toy_model, threads=1)
    src = _CountingFile(toy_scene, 16000, realtime=True)
    listener = Listener([src], [ListSink()], Config(), scorer=scorer)
    stop = threading.Event()
    th = threading.Thread(target=listener.run, args=(stop,))
    th.start()
    time.sleep(3.0)
    stop.set()
    th.join(10)
    hops = listener.streams[0].patches
    assert hops >= 10  # 0.1 s hops from the first patch (0.96 s) on
    # A 5 ms poll drains ~600 times in 3 s (>= 2 reads each); waiting for the hop drains
    # about once per hop (a drain reads until the source is empty: 2 reads or a few).
    assert src.reads <= 6 * hops + 20, (src.reads, hops)


def test_file_read_ahead_batches_inference(toy_model: Path, toy_scene: Path) -> None:
    scorer = OnnxScorer(toy_model, threads=1)
    listener = Listener([FileSource(toy_scene, 16000)], [ListSink()], Config(), scorer=scorer)
    listener.run()
    assert max(listener.batch_sizes) > 8  # 2 s chunks alone would give batches of ~4


def test_small_batches_run_single_threaded_with_the_same_scores() -> None:
    """With onnxruntime's own thread count, batches under SMALL_BATCH go to a one-thread
    session (cheaper for a small model); the scores do not depend on which session ran them."""
    from detector.model.resolve import DEFAULT_MODEL
    from detector.model.scorer import SMALL_BATCH

    scorer = OnnxScorer(DEFAULT_MODEL)  # threads=0: onnxruntime's choice
    x = np.random.default_rng(5).uniform(-6.9, 3.0, (SMALL_BATCH + 3, 96, 64)).astype(np.float32)
    big = scorer.score(x)  # one call on the main session
    assert scorer._session_for(SMALL_BATCH) is scorer.session
    small = np.concatenate([scorer.score(x[i : i + 1]) for i in range(x.shape[0])])
    assert scorer._session_for(1) is not scorer.session  # the one-thread session ran them
    np.testing.assert_array_equal(small, big)
    explicit = OnnxScorer(DEFAULT_MODEL, threads=2)  # a thread count the user chose is kept
    assert explicit._session_for(1) is explicit.session
