"""Patcher, smoother, event builder and config: the decision stages, in isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.config import load_config
from detector.decide.events import EventBuilder
from detector.decide.smoother import LabelPolicy, Smoother, SmootherBank, SmootherConfig
from detector.frontend.features import FeatureConfig
from detector.frontend.patcher import LEAD_IN_MIN_S, Patcher
from detector.model.contract import Label

CFG = FeatureConfig()
HOP = 0.5
NO_SMOOTHING = LabelPolicy(method="none", hold_s=0.0, min_duration_s=0.0)


def _run(smoother: Smoother, series: list[float]) -> list[tuple[str, float]]:
    out = []
    for k, v in enumerate(series):
        _, trs = smoother.process(np.array([v]), centre_s=k * HOP + HOP / 2)
        out += [(t.kind, t.time) for t in trs]
    return out


def _smoother(policy: LabelPolicy = NO_SMOOTHING, on: float = 0.5, off: float = 0.3) -> Smoother:
    return Smoother(SmootherConfig(default=policy), ["A"], [on], [off], HOP)


# --- patcher -------------------------------------------------------------------

def test_patcher_hop_and_times_independent_of_block_size() -> None:
    frames = np.random.default_rng(0).standard_normal((500, CFG.n_mels)).astype(np.float32)
    whole = Patcher(CFG, 48)
    ref = whole.process(frames) + whole.flush()
    for block in (1, 13, 96, 200):
        p = Patcher(CFG, 48)
        got = [q for i in range(0, 500, block) for q in p.process(frames[i : i + block])] + p.flush()
        assert [q.start_frame for q in got] == [q.start_frame for q in ref]
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a.data, b.data)
    assert [q.start_frame for q in ref[:3]] == [0, 48, 96]
    np.testing.assert_array_equal(ref[1].data, frames[48:144])
    assert ref[0].start == 0.0 and ref[0].end == pytest.approx(0.975)
    last = ref[-1]
    assert last.padded_frames == last.start_frame + CFG.patch_frames - 500
    assert np.all(last.data[-last.padded_frames :] == np.float32(np.log(CFG.log_offset)))


def test_patcher_short_stream_gives_one_padded_patch_and_empty_gives_none() -> None:
    p = Patcher(CFG, 48)
    assert p.process(np.zeros((10, CFG.n_mels), np.float32)) == []
    (only,) = p.flush()
    assert only.padded_frames == CFG.patch_frames - 10
    assert Patcher(CFG, 48).flush() == []


def test_patcher_lead_in_scores_the_first_second_every_hop_then_the_same_whole_patches() -> None:
    frames = np.random.default_rng(2).standard_normal((300, CFG.n_mels)).astype(np.float32)
    silence = np.float32(np.log(CFG.log_offset))
    plain = Patcher(CFG, 10)
    ref = plain.process(frames) + plain.flush()
    first = round(LEAD_IN_MIN_S / CFG.frame_seconds)  # 40 frames: the first hop boundary from 0.4 s
    for block in (1, 7, 96, 300):
        p = Patcher(CFG, 10, lead_in=True)
        got = [q for i in range(0, 300, block) for q in p.process(frames[i : i + block])] + p.flush()
        lead = [q for q in got if q.lead_frames]
        # the audio so far ends each lead-in patch: 40, 50, ..., 90 frames, silence before
        assert [CFG.patch_frames - q.lead_frames for q in lead] == list(range(first, CFG.patch_frames, 10))
        for q in lead:
            real = CFG.patch_frames - q.lead_frames
            assert np.all(q.data[: q.lead_frames] == silence)
            np.testing.assert_array_equal(q.data[q.lead_frames :], frames[:real])
            assert q.start_frame == -q.lead_frames and q.padded_frames == 0
            assert q.end == pytest.approx(((real - 1) * CFG.hop_length + CFG.win_length) / CFG.sample_rate)
        whole = got[len(lead) :]  # then exactly the patches without lead-in
        assert [q.start_frame for q in whole] == [q.start_frame for q in ref]
        for a, b in zip(whole, ref, strict=True):
            np.testing.assert_array_equal(a.data, b.data)


def test_patcher_lead_in_only_at_the_start_not_after_a_hole() -> None:
    """After a hole (an overrun: the model is already behind) the stream waits for a whole
    patch again; lead-in there would only add patches to a loaded process."""
    frames = np.random.default_rng(3).standard_normal((96, CFG.n_mels)).astype(np.float32)
    p = Patcher(CFG, 48, lead_in=True)
    assert p.next_end_frame == 48
    (lead,) = p.process(frames[:50])  # at the file hop: one lead-in patch, at 48 frames
    assert lead.lead_frames == 48 and lead.start_frame == -48 and p.next_end_frame == 96
    np.testing.assert_array_equal(lead.data[48:], frames[:48])
    p.reset(start_frame=1000)
    assert p.next_end_frame == 1096
    (whole,) = p.process(frames)
    assert whole.start_frame == 1000 and whole.lead_frames == 0
    assert Patcher(CFG, 96, lead_in=True).next_end_frame == 96  # a hop of a whole patch: none


def test_patcher_rejects_hops_that_skip_audio() -> None:
    with pytest.raises(ValueError, match="accepted: 1 to 96"):
        Patcher(CFG, 97)


# --- smoother ------------------------------------------------------------------

def test_hysteresis_onset_and_offset_times() -> None:
    trs = _run(_smoother(), [0.1, 0.6, 0.4, 0.35, 0.2, 0.1])
    # on at interval 1 (0.5 s), stays through 0.4/0.35 (>= off), ends at interval 4 (2.0 s)
    assert trs == [("onset", 0.5), ("offset", 2.0)]


def test_debounce_suppresses_blips() -> None:
    policy = LabelPolicy(method="none", debounce_s=1.0, hold_s=0.0, min_duration_s=0.0)
    assert _run(_smoother(policy), [0.9, 0.1, 0.9, 0.1]) == []
    assert _run(_smoother(policy), [0.1, 0.9, 0.9, 0.1])[0] == ("onset", 0.5)


def test_hold_bridges_short_dips_and_min_duration_extends_events() -> None:
    held = LabelPolicy(method="none", hold_s=1.0, min_duration_s=0.0)
    trs = _run(_smoother(held), [0.9, 0.1, 0.9, 0.1, 0.1, 0.1])
    assert trs == [("onset", 0.0), ("offset", 1.5)]
    long = LabelPolicy(method="none", hold_s=0.0, min_duration_s=2.0)
    trs = _run(_smoother(long), [0.9, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert trs == [("onset", 0.0), ("offset", 2.0)]


def test_ema_and_median_smoothing() -> None:
    ema = _smoother(LabelPolicy(method="ema", ema_tau_s=HOP / np.log(2), hold_s=0, min_duration_s=0))
    s1, _ = ema.process(np.array([1.0]), 0.25)
    s2, _ = ema.process(np.array([1.0]), 0.75)
    assert s1[0] == pytest.approx(0.5) and s2[0] == pytest.approx(0.75)
    med = _smoother(LabelPolicy(method="median", median_s=1.5, hold_s=0, min_duration_s=0))
    vals = [med.process(np.array([v]), k * HOP)[0][0] for k, v in enumerate([0.0, 1.0, 0.0, 0.0])]
    assert vals == [0.0, 0.5, 0.0, 0.0]  # a one-hop spike is removed by a 3-hop median


def test_per_label_overrides_and_model_thresholds() -> None:
    cfg = SmootherConfig(default=NO_SMOOTHING, labels={"B": {"on": 0.9, "enabled": True}, "C": {"enabled": False}})
    sm = Smoother(cfg, ["A", "B", "C"], [0.5, 0.5, 0.5], [0.3, 0.3, 0.3], HOP)
    _, trs = sm.process(np.array([0.6, 0.6, 0.99]), 0.25)
    assert [t.label for t in trs] == [0]
    assert list(sm.on) == [0.5, 0.9, 0.5]
    with pytest.raises(ValueError, match="does not have"):
        Smoother(SmootherConfig(labels={"Z": {"on": 0.1}}), ["A"], [0.5], [0.3], HOP)


def test_close_ends_open_events_and_nan_scores_are_safe() -> None:
    sm = _smoother()
    _, trs = sm.process(np.array([np.nan]), 0.25)
    assert trs == []
    sm.process(np.array([0.9]), 0.75)
    (tr,) = sm.close(3.0)
    assert (tr.kind, tr.time) == ("offset", 3.0)
    assert not sm.active.any()


def _bank_smoothers(n: int, hop: float = HOP) -> list[Smoother]:
    cfg = SmootherConfig(
        default=LabelPolicy(ema_tau_s=0.6, hold_s=0.5, min_duration_s=1.0),
        labels={"B": {"method": "none"}, "C": {"debounce_s": 1.0}, "D": {"enabled": False}, "E": {"hold_s": 1.5}},
    )
    return [Smoother(cfg, list("ABCDE"), [0.5, 0.6, 0.4, 0.5, 0.7], [0.3, 0.5, 0.2, 0.3, 0.6], hop)
            for _ in range(n)]


def test_bank_steps_many_streams_as_each_smoother_alone() -> None:
    """SmootherBank.step (one hop of many streams together) decides exactly what each
    stream's smoother decides alone, including when streams alternate between the two."""
    rng = np.random.default_rng(3)
    n_streams, hops = 6, 60
    alone = _bank_smoothers(n_streams)
    banked = _bank_smoothers(n_streams)
    bank = SmootherBank(banked)
    for sm in (alone[2], banked[2]):  # a per-stream threshold change (the control socket's)
        sm.on[0], sm.off[0] = 0.8, 0.1
    # Runs of high and low scores, so that events open, persist and close.
    level = rng.random((hops // 6, n_streams, 5)).repeat(6, axis=0)
    x = np.clip(level + 0.15 * rng.standard_normal((hops, n_streams, 5)), 0.0, 1.0)
    x[7, 1, 4] = np.nan
    fired = 0
    for k in range(hops):
        centre = k * HOP + HOP / 2
        together = [i for i in range(n_streams) if (i + k) % 4]  # the others go alone this hop
        step = bank.step(np.array(together), x[k, together], np.full(len(together), centre))
        decided = {i: step.row(j) for j, i in enumerate(together)}
        for i in range(n_streams):
            ref = alone[i].process_many(x[k, i][None, :], np.array([centre]))
            got = decided[i] if i in decided else banked[i].process_many(x[k, i][None, :], np.array([centre]))
            np.testing.assert_array_equal(got.smoothed, ref.smoothed)
            np.testing.assert_array_equal(got.active, ref.active)
            assert got.transitions == ref.transitions
            np.testing.assert_array_equal(banked[i].active, alone[i].active)
            fired += len(ref.transitions[0])
    assert fired > 20  # onsets and offsets happened, on several streams
    for a, b in zip(alone, banked, strict=True):
        assert a.close(hops * HOP) == b.close(hops * HOP)


def test_bank_takes_only_what_it_can_step() -> None:
    median = Smoother(SmootherConfig(labels={"A": {"method": "median"}}), list("ABCDE"), [0.5] * 5, [0.3] * 5, HOP)
    bank = SmootherBank([*_bank_smoothers(2), median])
    assert bank.steppable.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="one label set"):
        SmootherBank([_smoother(), *_bank_smoothers(1)])


# --- events --------------------------------------------------------------------

def test_event_builder_onset_updates_offset() -> None:
    sm = _smoother(LabelPolicy(method="none", hold_s=0.0, min_duration_s=0.0))
    eb = EventBuilder([Label("A", "/m/a")], update_interval_s=1.0, wall_of=lambda t: 1000.0 + t)
    out = []
    for k, v in enumerate([0.1, 0.7, 0.8, 0.9, 0.6, 0.1]):
        s, trs = sm.process(np.array([v]), k * HOP + HOP / 2)
        out += eb.process(trs, s, k * HOP + HOP / 2)
    kinds = [p["event"] for p in out]
    assert kinds == ["onset", "update", "offset"]
    onset, update, offset = out
    assert onset["start"] == 0.5 and onset["start_wall"] == 1000.5 and onset["end"] is None
    assert update["duration"] == pytest.approx(1.25)  # start 0.5 s, update at hop centre 1.75 s
    assert offset["end"] == 2.5 and offset["end_wall"] == 1002.5 and offset["reason"] == "score"
    assert offset["peak"] == 0.9 and offset["mean"] == pytest.approx(0.75)
    assert {p["event_id"] for p in out} == {0}


# --- config --------------------------------------------------------------------

def test_automatic_threads_and_hop_follow_the_number_of_live_streams() -> None:
    from detector.config import FEW_LIVE_STREAMS, LIVE_FINE_HOP_S, ListenConfig

    auto = ListenConfig()
    assert auto.threads_for(FEW_LIVE_STREAMS) == 0  # onnxruntime's choice: every core
    assert auto.threads_for(FEW_LIVE_STREAMS + 1) == 1
    assert auto.hop_for(True, FEW_LIVE_STREAMS) == LIVE_FINE_HOP_S
    assert auto.hop_for(True, FEW_LIVE_STREAMS + 1) == auto.patch_hop_s
    assert ListenConfig(threads=3).threads_for(1000) == 3  # a setting is kept



def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "sed.toml"
    path.write_text(
        '[listen]\npatch_hop_s = 0.24\ntop_k = 3\n[smoother]\nhold_s = 1\n'
        '[smoother.labels."Dog"]\non = 0.7\n'
    )
    cfg = load_config(path, {"top_k": 7, "device": None})
    assert cfg.listen.patch_hop_s == 0.24 and cfg.listen.top_k == 7
    assert cfg.smoother.default.hold_s == 1.0
    assert cfg.smoother.policy("Dog").on == 0.7 and cfg.smoother.policy("Cat").on is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[listen]\npatch_hop = 1\n", "unknown key"),
        ("[listen]\ntop_k = 'five'\n", "expected int"),
        ("[listn]\n", "unknown section"),
        ("[smoother]\nmethod = 'mean'\n", "accepted"),
        ('[smoother.labels."Dog"]\nonn = 0.5\n', "unknown key"),
        ('[smoother.labels."Dog"]\non = 1.5\n', "accepted: 0 to 1"),
        ("[listen\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_patcher_reset_to_a_later_frame_after_a_hole() -> None:
    frames = np.random.default_rng(1).standard_normal((96, CFG.n_mels)).astype(np.float32)
    p = Patcher(CFG, 48)
    p.process(frames[:50])
    p.reset(start_frame=1000)
    (patch,) = p.process(frames)
    assert patch.start_frame == 1000
    assert patch.start == pytest.approx(1000 * CFG.hop_length / CFG.sample_rate)
    np.testing.assert_array_equal(patch.data, frames)


def test_event_snapshot_reports_open_events_without_changing_them() -> None:
    sm = _smoother(LabelPolicy(method="none", hold_s=0.0, min_duration_s=0.0))
    eb = EventBuilder([Label("A", "/m/a")], update_interval_s=10.0, wall_of=lambda t: t)
    s, trs = sm.process(np.array([0.8]), 0.25)
    eb.process(trs, s, 0.25)
    (snap,) = eb.snapshot(s, now_s=3.0)
    assert snap["event"] == "update" and snap["label"] == "A" and snap["duration"] == 3.0
    assert snap["end"] is None and len(eb.open) == 1
    assert eb.snapshot(s, 3.0) == [snap]
