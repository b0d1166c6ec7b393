"""The streaming pipeline: invariances, batching across streams, and a ZeroMQ round trip."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import zmq
from conftest import SCENE_EVENTS, SCENE_SECONDS

from detector.config import Config, ListenConfig
from detector.io.publisher import ListSink, ZmqPublisher
from detector.io.wire import decode
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener, detect_file
from detector.sources.parse import FileSource

STABLE = ("event", "label", "mid", "event_id", "start", "end", "duration", "peak", "mean", "score", "reason")


def _stable(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Event fields that do not depend on the wall clock."""
    return [(*tuple(e.get(k) for k in STABLE), e["stream_time"], e["seq"]) for e in events]


@pytest.fixture(scope="module")
def scorer(toy_model: Path) -> OnnxScorer:
    return OnnxScorer(toy_model, threads=1)


def test_events_match_the_scene(scorer: OnnxScorer, toy_scene: Path) -> None:
    events = detect_file(toy_scene, scorer=scorer)
    hop = Config().listen.patch_hop_s
    onsets = [e for e in events if e["event"] == "onset"]
    offsets = {e["event_id"]: e for e in events if e["event"] == "offset"}
    assert [e["label"] for e in onsets] == [label for label, _, _ in SCENE_EVENTS]
    for e, (_, start, dur) in zip(onsets, SCENE_EVENTS, strict=True):
        assert abs(e["start"] - start) <= hop
        assert abs(offsets[e["event_id"]]["end"] - min(start + dur, SCENE_SECONDS)) <= hop


@pytest.mark.parametrize("chunk", [1024, 16000])
def test_events_do_not_depend_on_chunk_size(scorer: OnnxScorer, toy_scene: Path, chunk: int) -> None:
    ref = detect_file(toy_scene, scorer=scorer, chunk_samples=160)
    got = detect_file(toy_scene, scorer=scorer, chunk_samples=chunk)
    assert len(ref) >= 6
    assert _stable(got) == _stable(ref)


def _by_stream(messages: list[dict[str, Any]], kind: str = "scores",
               keys: tuple[str, ...] = ("patch_start", "top")) -> dict[str, list[tuple[Any, ...]]]:
    """Each stream's messages of one type, in the order they were sent, as ``keys`` tuples."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for m in messages:
        if m["type"] == kind:
            out.setdefault(m["stream"], []).append(tuple(m[k] for k in keys))
    return out


def test_batching_with_other_streams_changes_nothing(
    scorer: OnnxScorer, toy_scene: Path, tmp_path: Path, real_clip: np.ndarray
) -> None:
    others = []
    for i in range(3):
        p = tmp_path / f"other{i}.wav"
        sf.write(p, np.roll(real_clip, 4000 * i), 16000)
        others.append(p)
    alone = ListSink()
    Listener([FileSource(toy_scene, 16000)], [alone], scorer=scorer).run()
    together = ListSink()
    listener = Listener(
        [FileSource(toy_scene, 16000)] + [FileSource(p, 16000) for p in others], [together], scorer=scorer
    )
    listener.run()
    assert max(listener.batch_sizes) > 1, "streams were not batched together"
    a = _by_stream(alone.messages)["scene.wav"]
    b = _by_stream(together.messages)["scene.wav"]
    assert len(a) == len(b) > 10
    assert a == b
    # raw network output too, not just the rounded top-k
    patches = np.random.default_rng(0).standard_normal((9, 96, 64)).astype(np.float32) - 4
    batched = scorer.score(patches)
    single = np.concatenate([scorer.score(patches[i : i + 1]) for i in range(9)])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_lead_in_scores_the_first_second_at_the_live_hop_and_never_before_the_stream(
    scorer: OnnxScorer, toy_scene: Path
) -> None:
    sink = ListSink()
    Listener([FileSource(toy_scene, 16000)], [sink], Config(listen=ListenConfig(patch_hop_s=0.1)),
             scorer=scorer).run()
    scores = [m for m in sink.messages if m["type"] == "scores"]
    ends = [m["patch_end"] for m in scores]
    # lead-in patches end at 0.4, 0.5, ..., 0.9 s of audio (+ one window), then whole patches
    assert ends[:7] == pytest.approx([0.415, 0.515, 0.615, 0.715, 0.815, 0.915, 0.975])
    assert [m["patch_start"] for m in scores[:7]] == [0.0] * 7  # the audio they hold starts at 0
    assert ends == sorted(ends)
    plain = ListSink()
    Listener([FileSource(toy_scene, 16000)], [plain],
             Config(listen=ListenConfig(patch_hop_s=0.1, lead_in=False)), scorer=scorer).run()
    assert [m["patch_end"] for m in plain.messages if m["type"] == "scores"] == ends[6:]
    assert all(m["start"] >= 0.0 for m in sink.messages if m["type"] == "event")


def test_every_message_has_envelope_and_per_stream_seq(scorer: OnnxScorer, toy_scene: Path) -> None:
    sink = ListSink()
    Listener([FileSource(toy_scene, 16000)], [sink], scorer=scorer).run()
    kinds = {m["type"] for m in sink.messages}
    assert kinds == {"event", "scores", "status"}
    assert [m["seq"] for m in sink.messages] == list(range(len(sink.messages)))
    assert sink.messages[-1]["type"] == "status" and sink.messages[-1]["state"] == "ended"
    for m in sink.messages:
        decode([b"t", __import__("json").dumps(m).encode()])  # validates the envelope


def test_zmq_round_trip_over_tcp(scorer: OnnxScorer, toy_scene: Path) -> None:
    ctx = zmq.Context()
    pub = ZmqPublisher("tcp://127.0.0.1:0", context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.bound)
    sub.setsockopt(zmq.SUBSCRIBE, b"event.")
    sub.setsockopt(zmq.SUBSCRIBE, b"status.")
    time.sleep(0.3)  # let the subscription reach the publisher (ZeroMQ slow joiner)
    config = Config(listen=ListenConfig(realtime=False))
    Listener([FileSource(toy_scene, 16000)], [pub], config, scorer=scorer).run()
    received = []
    while sub.poll(1000):
        topic, msg = decode(sub.recv_multipart())
        received.append((topic, msg))
        if msg["type"] == "status" and msg["state"] == "ended":
            break
    pub.close()
    sub.close()
    ctx.term()
    events = [m for t, m in received if t.startswith("event.")]
    hop = config.listen.patch_hop_s
    for label, start, dur in SCENE_EVENTS:
        mine = [m for m in events if m["label"] == label]
        assert next(m["event"] for m in mine) == "onset" and mine[-1]["event"] == "offset"
        assert all(t == f"event.{label}" for t, m in received if m in mine)
        assert abs(mine[0]["start"] - start) <= hop
        assert abs(mine[-1]["end"] - min(start + dur, SCENE_SECONDS)) <= hop
    assert any(m["event"] == "update" for m in events)
    assert any(t == "status.scene.wav" for t, _ in received)


def _subscribed(pub: ZmqPublisher, version: int) -> int:
    deadline = time.monotonic() + 5.0
    while pub.poll_subscriptions() == version and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pub.subscription_version != version, "the subscription never reached the publisher"
    return pub.subscription_version


def test_scores_are_built_only_for_streams_someone_subscribed_to(scorer: OnnxScorer, toy_scene: Path) -> None:
    ctx = zmq.Context()
    pub = ZmqPublisher("tcp://127.0.0.1:0", context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.bound)
    version = pub.poll_subscriptions()
    sub.setsockopt(zmq.SUBSCRIBE, b"event.")
    version = _subscribed(pub, version)
    assert pub.wants("event.Dog") and not pub.wants("scores.scene.wav") and not pub.wants("status.x")
    sub.setsockopt(zmq.SUBSCRIBE, b"scores.b")  # another stream's scores only
    version = _subscribed(pub, version)
    assert pub.wants("scores.b") and not pub.wants("scores.scene.wav")
    runs = {}
    for name, extra in (("events", None), ("scores", b"scores.scene")):
        if extra:
            sub.setsockopt(zmq.SUBSCRIBE, extra)
            version = _subscribed(pub, version)
        listener = Listener([FileSource(toy_scene, 16000, stream_id="scene.wav")], [pub], Config(), scorer=scorer)
        listener.run()
        runs[name] = listener.streams[0]
    got = []
    while sub.poll(1000):
        topic, _msg = decode(sub.recv_multipart())
        got.append(topic)
    pub.close()
    sub.close()
    ctx.term()
    hops = runs["events"].patches
    assert hops > 10 and runs["scores"].patches == hops
    # One scores message per hop only once someone asked for this stream's scores.
    assert runs["scores"].seq - runs["events"].seq == hops
    assert got.count("scores.scene.wav") == hops


def test_json_lines_and_in_process_sinks_say_what_they_take() -> None:
    import io

    from detector.io.publisher import JsonLinesSink, sink_wants

    assert sink_wants(ListSink(), "scores.a")
    assert not sink_wants(JsonLinesSink(io.StringIO()), "scores.a")
    assert sink_wants(JsonLinesSink(io.StringIO(), kinds=("event", "scores")), "scores.a")
    assert sink_wants(JsonLinesSink(io.StringIO()), "event.Dog")


def test_stop_closes_open_events_with_shutdown(scorer: OnnxScorer, toy_scene: Path) -> None:
    sink = ListSink()
    stop = threading.Event()
    config = Config(listen=dataclasses.replace(ListenConfig(), realtime=True, file_chunk_s=0.1))
    listener = Listener([FileSource(toy_scene, 16000, realtime=True)], [sink], config, scorer=scorer)
    thread = threading.Thread(target=listener.run, args=(stop,))
    thread.start()
    deadline = time.time() + 8
    while time.time() < deadline and not any(m.get("event") == "onset" for m in sink.messages):
        time.sleep(0.05)
    stop.set()
    t0 = time.time()
    thread.join(5)
    assert not thread.is_alive() and time.time() - t0 < 1.0
    onsets = [m for m in sink.messages if m.get("event") == "onset"]
    offsets = [m for m in sink.messages if m.get("event") == "offset"]
    assert len(onsets) == len(offsets) >= 1
    assert offsets[-1]["reason"] == "shutdown"


def test_stop_during_file_mode_analyses_every_frame_read(
    scorer: OnnxScorer, toy_scene: Path, tmp_path: Path
) -> None:
    """File mode takes a read's front end at the next iteration; a stop in between must
    still hand those frames to the patcher and score the patches they complete."""
    audio, rate = sf.read(str(toy_scene), dtype="float32")
    long = tmp_path / "long.wav"  # several read-ahead batches (~31 s each)
    sf.write(long, np.tile(audio, 15), rate, subtype="FLOAT")
    stop = threading.Event()

    class StopAtFirstScores(ListSink):
        def send(self, message: dict[str, Any]) -> None:
            super().send(message)
            if message["type"] == "scores":
                stop.set()

    sink = StopAtFirstScores()
    config = Config(listen=dataclasses.replace(ListenConfig(), file_chunk_s=0.5))
    listener = Listener([FileSource(long, 16000)], [sink], config, scorer=scorer)
    listener.run(stop)
    st = listener.streams[0]
    assert 0 < st.samples < sf.info(str(long)).frames  # stopped part-way through the file
    received = st.patcher.next_start_frame + st.patcher._len  # frames the patcher was given
    assert received == st.logmel.frames_done  # none left behind in the front end
    scored = [m for m in sink.messages if m["type"] == "scores"]
    assert len(scored) == st.patches > 1
    assert scored[-1]["patch_end"] * 16000 <= st.samples


def test_numpy_imported_first_is_detected_and_warned(
    scorer: OnnxScorer, toy_scene: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import subprocess
    import sys

    import detector
    import detector.pipeline as pipeline

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    probe = "import detector; print(detector.OPENBLAS_THREADS_LATE, __import__('os').environ['OPENBLAS_NUM_THREADS'])"
    first = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    late = subprocess.run([sys.executable, "-c", "import numpy; " + probe], env=env, capture_output=True,
                          text=True, check=True)
    assert first.stdout.split() == ["False", "1"]
    assert late.stdout.split() == ["True", "1"]  # set, but too late for OpenBLAS to read it
    monkeypatch.setattr(detector, "OPENBLAS_THREADS_LATE", True)
    monkeypatch.setattr(pipeline, "_BLAS_WARNED", False)
    with caplog.at_level("WARNING", logger="detector.pipeline"):
        Listener([FileSource(toy_scene, 16000)], [ListSink()], scorer=scorer)
        Listener([FileSource(toy_scene, 16000)], [ListSink()], scorer=scorer)
    warned = [r for r in caplog.records if "OPENBLAS_NUM_THREADS=1" in r.getMessage()]
    assert len(warned) == 1  # once per process


def _shifted_copies(scene: Path, where: Path, n: int, shift: int) -> list[Path]:
    """``n`` 4 s streams: the scene rolled by ``shift`` samples more each (s0.wav, s1.wav, ...)."""
    audio, rate = sf.read(str(scene), dtype="float32")
    paths = []
    for i in range(n):
        p = where / f"s{i}.wav"
        sf.write(p, np.roll(audio, shift * i)[: 4 * rate], rate, subtype="FLOAT")
        paths.append(p)
    return paths


def test_a_few_hops_of_each_stream_decided_round_by_round_on_the_bank_change_nothing(
    scorer: OnnxScorer, toy_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch holding 2 to BANK_ROUNDS hops of each stream (a live stream behind, or many
    files reading ahead) is decided on the SmootherBank one round of hops at a time; every
    stream's messages are those of deciding it alone on its own smoother."""
    import detector.pipeline as pipeline
    from detector.decide.smoother import SmootherBank

    paths = _shifted_copies(toy_scene, tmp_path, 16, 700)
    step, bank_init, collect = SmootherBank.step, SmootherBank.__init__, Listener._collect

    def run(bank: bool) -> tuple[dict[str, list[Any]], dict[str, list[Any]], int, int]:
        calls = {"step": 0, "collect": 0}

        def counted_step(self: SmootherBank, *a: Any) -> Any:
            calls["step"] += 1
            return step(self, *a)

        def counted_collect(self: Listener, job: Any) -> None:
            calls["collect"] += 1
            collect(self, job)

        def init(self: SmootherBank, smoothers: Any) -> None:
            bank_init(self, smoothers)
            self.steppable[:] = bank

        monkeypatch.setattr(SmootherBank, "step", counted_step)
        monkeypatch.setattr(SmootherBank, "__init__", init)
        monkeypatch.setattr(Listener, "_collect", counted_collect)
        sink = ListSink()
        Listener([FileSource(p, 16000, stream_id=p.name) for p in paths], [sink], scorer=scorer).run()
        events = _by_stream(sink.messages, "event", ("event", "label", "start", "stream_time"))
        return _by_stream(sink.messages), events, calls["step"], calls["collect"]

    assert 1 < pipeline.FILE_BATCH_PATCHES // len(paths) <= pipeline.BANK_ROUNDS  # a few hops a stream
    ref_scores, ref_events, ref_steps, _ = run(bank=False)
    scores, events, steps, collects = run(bank=True)
    assert ref_steps == 0 and steps > collects  # batches of several rounds
    assert sorted(scores) == sorted(p.name for p in paths) and all(len(v) >= 6 for v in scores.values())
    assert scores == ref_scores
    assert events == ref_events and sum(map(len, events.values())) > 0


@pytest.mark.parametrize("realtime", [False, True])
def test_front_end_in_slices_changes_nothing(
    scorer: OnnxScorer, toy_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, realtime: bool
) -> None:
    """With many streams the loop starts the front end on slices of the streams read so far
    and reads on; every stream's messages are the same as from one front-end call."""
    import detector.pipeline as pipeline

    paths = _shifted_copies(toy_scene, tmp_path, 6, 3000)
    config = Config(listen=dataclasses.replace(ListenConfig(), realtime=realtime, live_patch_hop_s=0.48))

    transform = Listener._transform

    def run(slice_frames: int) -> tuple[dict[str, list[Any]], list[tuple[Any, ...]], list[int]]:
        monkeypatch.setattr(pipeline, "FE_SLICE_FRAMES", slice_frames)
        calls: list[int] = []

        def counted(self: Listener, parts: list[np.ndarray]) -> tuple[np.ndarray, float]:
            calls.append(len(parts))
            return transform(self, parts)

        monkeypatch.setattr(Listener, "_transform", counted)
        sink = ListSink()
        Listener([FileSource(p, 16000, realtime=realtime, stream_id=p.name) for p in paths], [sink], config,
                 scorer=scorer).run()
        events = sorted((m["stream"], m["event"], m["label"], m["stream_time"]) for m in sink.messages
                        if m["type"] == "event")
        return _by_stream(sink.messages), events, calls

    whole_scores, whole_events, whole_calls = run(10**9)
    sliced_scores, sliced_events, sliced_calls = run(20)  # every stream's read starts a slice
    assert len(sliced_calls) > len(whole_calls)  # the slicing happened
    assert sorted(whole_scores) == [p.name for p in paths]
    assert sliced_scores == whole_scores
    assert sliced_events == whole_events


def test_many_paced_streams_read_in_parts_and_decided_together_change_nothing(
    scorer: OnnxScorer, toy_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many live streams due at once the loop reads them in parts (LIVE_ITER_FRAMES),
    takes each part's log-mel rows at the next iteration, lets the next batch grow while
    one is scored, and decides one hop of many streams at once (SmootherBank.step). Every
    stream's messages are those of reading all at once and deciding each stream alone."""
    import detector.pipeline as pipeline
    from detector.decide.smoother import SmootherBank

    paths = _shifted_copies(toy_scene, tmp_path, 6, 2500)
    config = Config(listen=dataclasses.replace(ListenConfig(), realtime=True, live_patch_hop_s=0.48))
    step, bank_init, update_wanted = SmootherBank.step, SmootherBank.__init__, Listener._update_wanted
    infer = Listener._infer

    def slow_infer(self: Listener, patches: list[np.ndarray]) -> tuple[np.ndarray, float]:
        time.sleep(0.05)  # a busy inference thread: the next batch grows meanwhile
        return infer(self, patches)

    read = Listener._read

    def run(iter_frames: int, together: bool) -> tuple[dict[str, list[Any]], dict[str, list[Any]], int, int]:
        monkeypatch.setattr(pipeline, "LIVE_ITER_FRAMES", iter_frames)
        monkeypatch.setattr(pipeline, "THREAD_MIN_PATCHES", 1)  # every batch on the inference thread
        monkeypatch.setattr(Listener, "_infer", slow_infer if together else infer)
        rows_stepped = [0]
        per_iteration = [0]  # streams whose read gave frames, this iteration
        most_read = [0]  # ... the most in one iteration

        def counted_read(self: Listener, st: Any, frames: list[Any], *a: Any) -> bool:
            had = len(frames)
            out = read(self, st, frames, *a)
            per_iteration[0] += len(frames) > had
            most_read[0] = max(most_read[0], per_iteration[0])
            return out

        def counted_step(self: SmootherBank, rows: np.ndarray, *a: Any) -> Any:
            rows_stepped[0] = max(rows_stepped[0], len(rows))
            return step(self, rows, *a)

        def init(self: SmootherBank, smoothers: Any) -> None:
            bank_init(self, smoothers)
            self.steppable[:] = together  # False: every stream through its own smoother

        def count_iterations(self: Listener) -> None:  # once an iteration, after the reads
            per_iteration[0] = 0
            update_wanted(self)

        monkeypatch.setattr(SmootherBank, "step", counted_step)
        monkeypatch.setattr(SmootherBank, "__init__", init)
        monkeypatch.setattr(Listener, "_update_wanted", count_iterations)
        monkeypatch.setattr(Listener, "_read", counted_read)
        sink = ListSink()
        Listener([FileSource(p, 16000, realtime=True, stream_id=p.name) for p in paths], [sink], config,
                 scorer=scorer).run()
        # Each stream's events in the order they were sent. Not their ``seq``: that also counts
        # the status messages, which come on the wall clock and so differ between two runs.
        events = _by_stream(sink.messages, "event", ("event", "label", "stream_time"))
        return _by_stream(sink.messages), events, rows_stepped[0], most_read[0]

    ref_scores, ref_events, ref_rows, ref_most_read = run(10**9, together=False)
    scores, events, rows, most_read = run(1, together=True)  # one stream read per iteration
    # One stream is read per iteration; batches of >= 3 streams grew while one was scored,
    # and the bank decided their hops at once.
    assert ref_rows == 0 and rows >= 3
    assert most_read == 1 and ref_most_read > 1  # read in parts, and all at once
    assert sorted(scores) == [p.name for p in paths]
    assert all(len(v) >= 6 for v in scores.values())
    assert scores == ref_scores
    assert events == ref_events and sum(map(len, events.values())) > 0


def test_wall_origin_is_set_only_after_its_samples_count(
    scorer: OnnxScorer, toy_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread computing a stream's lag (now - wall_origin - samples / rate, as
    sed-bench's scale monitor does) must never see the origin before the first samples are
    counted: it would read the whole first chunk as lag (a false "dropped" stream)."""
    from detector.stream import StreamState

    seen: list[int] = []
    setattr_ = StreamState.__setattr__

    def spy(self: StreamState, name: str, value: Any) -> None:
        if name == "wall_origin" and value is not None:
            seen.append(self.samples)
        setattr_(self, name, value)

    monkeypatch.setattr(StreamState, "__setattr__", spy)
    st = Listener([FileSource(toy_scene, 16000)], [ListSink()], scorer=scorer).streams[0]
    st.prepare(np.zeros(8000, np.float32))
    other = Listener([FileSource(toy_scene, 16000)], [ListSink()], scorer=scorer).streams[0]
    other.skip(4000)  # a hole before any audio sets the origin too
    assert seen == [8000, 4000]
    assert st.wall_origin is not None and abs(time.time() - st.wall_origin - 0.5) < 0.5


def test_status_messages_of_many_streams_are_spread_over_the_interval(
    scorer: OnnxScorer, toy_scene: Path
) -> None:
    """Every stream gets a status every status_interval_s, but not all at the same instant:
    thousands of them at once would hold up every stream's next read."""
    config = Config(listen=dataclasses.replace(ListenConfig(), realtime=True, status_interval_s=0.4))
    sink = ListSink()
    listener = Listener([FileSource(toy_scene, 16000, realtime=True, stream_id=f"s{i}") for i in range(4)],
                        [sink], config, scorer=scorer)
    stop = threading.Event()
    threading.Timer(2.2, stop.set).start()
    listener.run(stop)
    periodic: dict[str, list[float]] = {}
    for m in sink.messages:
        if m["type"] == "status" and m["state"] == "running":
            periodic.setdefault(m["stream"], []).append(m["wall_time"])
    assert sorted(periodic) == ["s0", "s1", "s2", "s3"]
    # the first "running" is the state change from "starting", reported at once
    periodic = {k: v[1:] for k, v in periodic.items()}
    for times in periodic.values():
        assert 3 <= len(times) <= 6  # one per 0.4 s of ~2.2 s
        assert np.all((np.diff(times) > 0.3) & (np.diff(times) < 0.5))
    firsts = sorted(t[0] for t in periodic.values())
    gaps = np.diff(firsts)
    assert np.all(gaps > 0.05) and firsts[-1] - firsts[0] > 0.2  # a quarter interval apart, not at once


def test_periodic_status_is_built_only_while_a_sink_takes_it(
    scorer: OnnxScorer, toy_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events-only consumers (the usual pipe, MQTT without status) cost no status message a
    second per stream; a state change is still sent, and a sink that takes status gets them."""
    from detector.stream import StreamState

    class EventsOnly(ListSink):
        def wants(self, topic: str) -> bool:
            return topic.startswith("event.")

    status = StreamState.status
    built: list[str] = []

    def counted(self: StreamState, state: str, *a: Any, **k: Any) -> dict[str, Any]:
        built.append(state)
        return status(self, state, *a, **k)

    monkeypatch.setattr(StreamState, "status", counted)
    config = Config(listen=dataclasses.replace(ListenConfig(), realtime=True, status_interval_s=0.3))
    running = {}
    for sink in (EventsOnly(), ListSink()):
        built.clear()
        listener = Listener([FileSource(toy_scene, 16000, realtime=True)], [sink], config, scorer=scorer)
        stop = threading.Event()
        threading.Timer(1.6, stop.set).start()
        listener.run(stop)
        running[type(sink).__name__] = built.count("running")
        assert built[0] == "starting" and built[-1] == "ended"  # state changes: always
    assert running["EventsOnly"] == 1  # starting -> running, at once; no periodic one
    assert running["ListSink"] >= 4  # that one, then one per 0.3 s of ~1.6 s


def test_latency_window_keeps_the_last_hops_in_order(scorer: OnnxScorer, toy_scene: Path) -> None:
    from detector.stream import LATENCY_WINDOW

    st = Listener([FileSource(toy_scene, 16000)], [ListSink()], scorer=scorer).streams[0]
    assert st.latencies().size == 0
    assert st.status("running", time.time())["latency_ms"] == {"last": 0.0, "p50": 0.0, "p99": 0.0}
    values = np.arange(1, LATENCY_WINDOW + 40) / 1000.0
    for i, v in enumerate(values):
        st.add_latency(float(v))
        if i == 2:
            np.testing.assert_array_equal(st.latencies(), values[:3])
    np.testing.assert_array_equal(st.latencies(), values[-LATENCY_WINDOW:])
    lat = st.status("running", time.time())["latency_ms"]
    assert lat["last"] == round(1000.0 * values[-1], 3)
    assert lat["p50"] == round(float(np.percentile(1000.0 * values[-LATENCY_WINDOW:], 50)), 3)
    assert lat["p99"] == round(float(np.percentile(1000.0 * values[-LATENCY_WINDOW:], 99)), 3)


def test_status_percentiles_are_numpys_in_any_order() -> None:
    from detector.stream import _percentiles

    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 100, 512):
        x = rng.exponential(size=n) * rng.choice([1.0, 1e3], size=n)  # unsorted and spread
        np.testing.assert_allclose(_percentiles(x, 50.0, 99.0), np.percentile(x, [50, 99]), rtol=1e-12)
        x[: n // 2] = x[0]  # ties
        np.testing.assert_allclose(_percentiles(x, 0.0, 50.0, 100.0), np.percentile(x, [0, 50, 100]), rtol=1e-12)
