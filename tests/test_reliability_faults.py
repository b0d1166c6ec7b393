"""Faults a long-running detector meets: a model too slow for real time (overruns),
slow, dead and late subscribers, control commands, SIGTERM, and SIGKILL + restart."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from detector.config import Config
from detector.io.control import SEQ_BLOCK, request
from detector.io.publisher import ListSink, ZmqPublisher
from detector.io.wire import decode
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
RATE = 16000


class SlowScorer(OnnxScorer):
    """The real toy model, made deliberately slower than real time: ``delay_s`` per patch."""

    def __init__(self, path: Path, delay_s: float) -> None:
        super().__init__(path, threads=1)
        self.delay_s = delay_s

    def score(self, patches: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s * patches.shape[0])
        return super().score(patches)


def _config(**listen: Any) -> Config:
    c = Config()
    return replace(c, listen=replace(c.listen, **listen))


def test_slow_model_overruns_are_counted_published_logged_and_bounded(
    toy_model: Path, toy_scene: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hop = Config().listen.patch_hop_s
    scorer = SlowScorer(toy_model, delay_s=3 * hop)  # 3x slower than real time
    backlog_s = 1.0
    sink = ListSink()
    cfg = _config(max_backlog_s=backlog_s, status_interval_s=0.5)
    listener = Listener([FileSource(toy_scene, RATE, realtime=True)], [sink], cfg, scorer=scorer)
    stop = threading.Event()
    t0 = time.monotonic()
    timer = threading.Timer(6.0, stop.set)
    timer.start()
    with caplog.at_level(logging.WARNING, logger="detector.pipeline"):
        listener.run(stop)
    wall = time.monotonic() - t0
    timer.cancel()
    st = listener.streams[0]
    assert st.overruns > 0 and st.dropped_samples > RATE
    assert "overrun" in caplog.text
    statuses = [m for m in sink.messages if m["type"] == "status"]
    assert max(m["overruns"] for m in statuses) > 0
    assert max(m["dropped_samples"] for m in statuses) > 0
    # Bounded: no iteration ever scored more than the backlog's worth of patches.
    assert max(listener.batch_sizes) <= int(backlog_s / hop) + 2
    # Stream time keeps up with the wall clock (dropped audio is a hole, not a lag).
    assert abs(st.stream_time - wall) < backlog_s + 2 * scorer.delay_s * max(listener.batch_sizes)
    # The process never deadlocked: it stopped within one slow iteration.
    assert wall < 6.0 + 2 * scorer.delay_s * max(listener.batch_sizes)


def test_patch_times_stay_true_after_an_overrun(toy_model: Path, toy_scene: Path) -> None:
    """After a drop, patches restart on frame boundaries at the right stream time."""
    scorer = SlowScorer(toy_model, delay_s=0.8)
    sink = ListSink()
    listener = Listener([FileSource(toy_scene, RATE, realtime=True)], [sink],
                        _config(max_backlog_s=0.5), scorer=scorer)
    stop = threading.Event()
    threading.Timer(4.0, stop.set).start()
    listener.run(stop)
    starts = [m["patch_start"] for m in sink.messages if m["type"] == "scores"]
    assert len(starts) >= 3
    assert listener.streams[0].overruns > 0
    assert all(b > a for a, b in itertools.pairwise(starts))
    frame = 160 / RATE
    assert all(abs(s / frame - round(s / frame)) < 1e-3 for s in starts)


# ---------------------------------------------------------------------------- subscribers


def test_slow_and_dead_subscribers_never_block_the_publisher() -> None:
    pub = ZmqPublisher("tcp://127.0.0.1:*", hwm=100)
    ctx = zmq.Context()
    try:
        stuck = ctx.socket(zmq.SUB)  # connected, subscribed, never reads
        stuck.setsockopt(zmq.RCVHWM, 10)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(pub.bound)
        dead = ctx.socket(zmq.SUB)
        dead.setsockopt(zmq.SUBSCRIBE, b"")
        dead.connect(pub.bound)
        live = ctx.socket(zmq.SUB)
        live.setsockopt(zmq.SUBSCRIBE, b"status.")
        live.connect(pub.bound)
        time.sleep(0.3)  # let the subscriptions arrive
        dead.close(0)  # a subscriber that vanished
        msg = {"schema": 1, "type": "status", "stream": "s", "seq": 0, "session": "x",
               "wall_time": 0.0, "stream_time": 0.0, "payload": "x" * 500}
        n = 50_000
        t0 = time.monotonic()
        for i in range(n):
            msg["seq"] = i
            pub.send(msg)
        elapsed = time.monotonic() - t0
        assert elapsed < 10.0, f"{n} sends took {elapsed:.1f} s: the publisher blocked"
        assert pub.sent == n
        got = 0
        while live.poll(200):
            decode(live.recv_multipart())
            got += 1
        assert got > 0  # the reading subscriber still gets messages
    finally:
        ctx.destroy(linger=0)
        pub.close()


def test_late_subscriber_gets_open_events_by_snapshot_and_updates(
    toy_model: Path, toy_scene: Path, tmp_path: Path
) -> None:
    """The scene's Sine wave is open from 2 s to 4 s; a client joining at ~3 s sees it."""
    scorer = OnnxScorer(toy_model, threads=1)
    endpoint = f"ipc://{tmp_path}/ctl"
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    listener = Listener([FileSource(toy_scene, RATE, realtime=True)], [pub], scorer=scorer,
                        control_endpoint=endpoint)
    stop = threading.Event()
    t = threading.Thread(target=listener.run, args=(stop,))
    t.start()
    ctx = zmq.Context()
    try:
        time.sleep(3.2)
        late = ctx.socket(zmq.SUB)
        late.setsockopt(zmq.SUBSCRIBE, b"event.")
        late.connect(pub.bound)
        snap = request(endpoint, "snapshot", context=ctx)
        assert snap["ok"], snap
        open_now = snap["result"]["events"]
        assert [e["label"] for e in open_now] == ["Sine wave"]
        assert open_now[0]["event"] == "update" and open_now[0]["end"] is None
        assert open_now[0]["session"] == listener.session
        assert abs(open_now[0]["start"] + open_now[0]["duration"] - open_now[0]["stream_time"]) < 1e-3
        # ...and without the control socket: periodic updates of the open event.
        got = []
        deadline = time.time() + 2.0
        while time.time() < deadline and not got:
            if late.poll(100):
                _, m = decode(late.recv_multipart())
                got.append(m)
        assert got and got[0]["label"] == "Sine wave" and got[0]["event"] in ("update", "offset")
        status = request(endpoint, "status", context=ctx)["result"]["scene.wav"]
        assert status["state"] == "running" and status["open_events"] <= 1
    finally:
        stop.set()
        t.join(5)
        ctx.destroy(linger=0)
        pub.close()
    assert not t.is_alive()


# ---------------------------------------------------------------------------- control


def test_pause_and_resume_over_the_control_socket(toy_model: Path, toy_scene: Path, tmp_path: Path) -> None:
    scorer = OnnxScorer(toy_model, threads=1)
    endpoint = f"ipc://{tmp_path}/ctl"
    sink = ListSink()
    listener = Listener([FileSource(toy_scene, RATE, realtime=True)], [sink], scorer=scorer,
                        control_endpoint=endpoint)
    stop = threading.Event()
    t = threading.Thread(target=listener.run, args=(stop,))
    t.start()
    try:
        time.sleep(1.5)
        assert request(endpoint, "pause")["result"] == {"changed": ["scene.wav"]}
        assert request(endpoint, "pause")["result"] == {"changed": []}  # idempotent
        time.sleep(2.0)  # the Sine wave (2-4 s) starts while paused
        assert request(endpoint, "resume")["result"] == {"changed": ["scene.wav"]}
        bad = request(endpoint, "pause", stream="nope")
        assert bad["ok"] is False and "no stream 'nope'" in bad["error"]
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(5)
    st = listener.streams[0]
    states = [m["state"] for m in sink.messages if m["type"] == "status"]
    assert "paused" in states and states[-1] == "ended"
    assert 1.5 < st.counters()["paused_seconds"] < 2.6
    assert abs(st.stream_time - 4.5) < 0.6  # pause is a hole in stream time, not a lag
    patch_starts = [m["patch_start"] for m in sink.messages if m["type"] == "scores"]
    assert not [s for s in patch_starts if 1.6 < s < 3.2], "patches analysed during the pause"


def test_thresholds_and_reload_change_decisions(toy_model: Path, toy_scene: Path, tmp_path: Path) -> None:
    from detector.io.control import ControlError

    scorer = OnnxScorer(toy_model, threads=1)
    cfg_path = tmp_path / "sed.toml"
    cfg_path.write_text("")
    listener = Listener([FileSource(toy_scene, RATE)], [ListSink()], scorer=scorer, config_path=cfg_path)
    with pytest.raises(ControlError, match="not in the model"):
        listener.handle({"cmd": "thresholds", "label": "Dog", "on": 0.5, "off": 0.4})
    with pytest.raises(ControlError, match="0 <= off <= on <= 1"):
        listener.handle({"cmd": "thresholds", "label": "Sine wave", "on": 0.3, "off": 0.4})
    cfg_path.write_text('[smoother.labels."Sine wave"]\nenabled = false\n')
    assert listener.handle({"cmd": "reload"}) == {"reloaded": str(cfg_path)}
    listener.handle({"cmd": "thresholds", "label": "White noise", "on": 1.0, "off": 1.0})
    cfg_path.write_text('[smoother]\nmethod = "median"\n')
    with pytest.raises(ControlError, match="needs a restart"):
        listener.handle({"cmd": "reload"})
    cfg_path.write_text("[smoother]\nbogus = 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        listener.handle({"cmd": "reload"})
    sink = listener.sinks[0]
    listener.run()
    assert isinstance(sink, ListSink)
    onsets = [m["label"] for m in sink.messages if m["type"] == "event" and m["event"] == "onset"]
    assert "Sine wave" not in onsets and "Beep, bleep" in onsets
    assert "White noise" not in onsets or all(
        m["score"] >= 1.0 for m in sink.messages if m.get("label") == "White noise" and m["event"] == "onset"
    )


# ---------------------------------------------------------------------------- signals


def _listen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
    )


def test_sigterm_with_control_publishing_and_state_exits_zero_within_1s(
    toy_model: Path, toy_scene: Path, tmp_path: Path
) -> None:
    proc = _listen(str(toy_scene), "--model", str(toy_model), "--json", "--realtime",
                   "--publish", "tcp://127.0.0.1:0", "--control", f"ipc://{tmp_path}/ctl",
                   "--state-dir", str(tmp_path / "state"))
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the Sine wave onset, ~2.5 s in
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in proc.stdout]
    rc = proc.wait(5)
    assert time.monotonic() - t0 < 1.0
    assert rc == 0
    assert any(m["event"] == "offset" and m["event_id"] == first["event_id"] for m in rest)
    state = json.loads((tmp_path / "state" / "seq.json").read_text())
    assert state["clean"] is True


def test_sigkill_then_restart_resumes_and_seq_shows_the_gap(
    toy_model: Path, toy_scene: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    common = ["--model", str(toy_model), "--json-all", "--no-publish", "--state-dir", str(state)]
    proc = _listen(str(toy_scene), "--realtime", *common)
    assert proc.stdout is not None
    seen = [json.loads(proc.stdout.readline()) for _ in range(5)]
    proc.kill()
    proc.wait(5)
    assert not json.loads((state / "seq.json").read_text())["clean"]
    last = seen[-1]["seq"]

    second = subprocess.run([sys.executable, "-m", "detector.cli.listen", str(toy_scene), *common],
                            capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)
    assert second.returncode == 0, second.stderr
    msgs = [json.loads(line) for line in second.stdout.splitlines()]
    assert msgs[0]["session"] != seen[0]["session"]
    assert msgs[0]["seq"] == SEQ_BLOCK > last + 1  # the jump shows messages may be lost
    assert [m["seq"] for m in msgs] == list(range(SEQ_BLOCK, SEQ_BLOCK + len(msgs)))
    assert "did not stop cleanly" in second.stderr
    assert sum(m["type"] == "event" and m["event"] == "onset" for m in msgs) == 3  # resumed cleanly

    third = subprocess.run([sys.executable, "-m", "detector.cli.listen", str(toy_scene), *common],
                           capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)
    msgs3 = [json.loads(line) for line in third.stdout.splitlines()]
    assert msgs3[0]["seq"] == msgs[-1]["seq"] + 1  # after a clean stop: no gap


def test_sigterm_within_1s_with_a_stuck_subscriber(toy_model: Path) -> None:
    """Full speed silence from stdin floods a subscriber that never reads; SIGTERM still
    exits 0 within 1 s (closing the socket does not wait on that subscriber)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = zmq.Context()
    with open("/dev/zero", "rb") as zeros:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector.cli.listen", "-", "--model", str(toy_model),
             "--publish", endpoint, "--hop", "0.01", "--log-level", "WARNING"],
            stdin=zeros, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
        )
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(endpoint)
    try:
        time.sleep(6.0)  # thousands of messages queue up for the stuck subscriber
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(linger=0)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert elapsed < 1.0, f"exit took {elapsed:.2f} s"


def test_sigterm_offsets_reach_zmq_subscribers(toy_model: Path, toy_scene: Path) -> None:
    """The closing offsets are flushed to a reading subscriber before the process exits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    proc = _listen(str(toy_scene), "--model", str(toy_model), "--realtime", "--publish", endpoint,
                   "--log-level", "WARNING")
    got: list[dict[str, Any]] = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not any(m.get("event") == "onset" for m in got):
            if sub.poll(100):
                got.append(decode(sub.recv_multipart())[1])
        onset = next(m for m in got if m.get("event") == "onset")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        while sub.poll(300):
            got.append(decode(sub.recv_multipart())[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(linger=0)
    closing = [m for m in got if m.get("event") == "offset" and m["event_id"] == onset["event_id"]]
    assert len(closing) == 1
    final = [m for m in got if m["type"] == "status"][-1]
    assert final["state"] == "ended" and final.get("message") == "shutdown"
