"""sed-monitor against a secured daemon (CURVE) and with the control socket's snapshot on join.

Real sockets throughout: a CURVE PUB made by :class:`detector.io.publisher.ZmqPublisher`
with keys from :func:`detector.io.security.keygen` (as ``tests/test_security.py``), a
:class:`detector.io.control.ControlServer` with a scripted snapshot, and an in-process
``sed-listen`` (:class:`detector.pipeline.Listener` with ``control_endpoint``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from detector.io import security
from detector.io.control import ControlServer
from detector.io.publisher import ZmqPublisher
from detector.io.security import CurveServerConfig
from detector.io.wire import envelope
from detector.monitor.app import MonitorApp, main
from detector.monitor.state import Batch, ConnState, MonitorState
from detector.monitor.subscriber import Subscriber, SubscriberConfig

sys.path.insert(0, str(Path(__file__).parent))
from monitor_scenario import ScriptedPublisher, free_endpoint

WALL0 = 1_760_000_000.0
MESSAGE_GAP_S = 0.02


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    """A server pair, an allowed monitor pair and a stranger's pair; ``allow`` holds the monitor's."""
    server_pub, server_sec = security.keygen(tmp_path / "keys", "server")
    good_pub, good_sec = security.keygen(tmp_path / "keys", "monitor")
    _, bad_sec = security.keygen(tmp_path / "keys", "stranger")
    allow = tmp_path / "allowed"
    allow.mkdir()
    (allow / good_pub.name).write_bytes(good_pub.read_bytes())
    return {"server_pub": server_pub, "server_sec": server_sec, "good": good_sec,
            "good_pub": good_pub, "bad": bad_sec, "allow": allow}


def status(stream: str, seq: int, session: str = "s1") -> dict[str, Any]:
    m = envelope("status", stream, seq, session, WALL0 + seq, float(seq))
    m["state"] = "running"
    return m


def open_event(stream: str, seq: int, label: str, eid: int, session: str = "s1") -> dict[str, Any]:
    """An ``update`` of an open event, as ``snapshot`` returns it."""
    m = envelope("event", stream, seq, session, WALL0 + seq, float(seq))
    m.update(event="update", label=label, mid="/m/x", event_id=eid, start=1.0, end=None,
             start_wall=WALL0 + 1, end_wall=None, duration=float(seq) - 1.0, peak=0.8,
             mean=0.6, score=0.7)
    return m


class Running:
    """A :class:`Subscriber` in a thread, collecting its batches."""

    def __init__(self, config: SubscriberConfig) -> None:
        self.batches: list[Batch] = []
        self.sub = Subscriber(config, self.batches.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sub.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def wait(self, cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what} ({self.sub.connection})")
            time.sleep(0.01)

    def received(self) -> list[dict[str, Any]]:
        return [m for b in list(self.batches) for m in b.messages]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@contextmanager
def running(config: SubscriberConfig) -> Iterator[Running]:
    r = Running(config)
    try:
        yield r
    finally:
        r.close()


@contextmanager
def control_server(endpoint: str, handler: Callable[[dict[str, Any]], Any]) -> Iterator[ControlServer]:
    server = ControlServer(endpoint, handler)
    stop = threading.Event()
    t = threading.Thread(target=lambda: [server.poll(20) for _ in iter(stop.is_set, True)], daemon=True)
    t.start()
    try:
        yield server
    finally:
        stop.set()
        t.join(2)
        server.close()


def fast(endpoint: str, **kw: Any) -> SubscriberConfig:
    return SubscriberConfig(endpoint=endpoint, post_interval_s=0.05, **kw)


# ---------------------------------------------------------------- CURVE: configuration
def test_curve_and_control_options_are_checked_with_one_line_errors(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"needs both --curve-secret-key FILE .* got only --curve-secret-key"):
        SubscriberConfig(curve_secret_key=keys["good"])
    with pytest.raises(ValueError, match=r"--curve-secret-key: CURVE key .*monitor\.key: holds only a public key"):
        SubscriberConfig(curve_secret_key=keys["good_pub"], curve_server_key=keys["server_pub"])
    with pytest.raises(ValueError, match=r"--curve-secret-key: CURVE key .*nope\.key_secret: no such file"):
        SubscriberConfig(curve_secret_key=tmp_path / "nope.key_secret", curve_server_key=keys["server_pub"])
    junk = tmp_path / "junk.key"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"--curve-server-key: CURVE public key .*junk\.key: .*expected sed-listen's public \.key"):
        SubscriberConfig(curve_secret_key=keys["good"], curve_server_key=junk)
    ok = SubscriberConfig(curve_secret_key=keys["good"], curve_server_key=keys["server_pub"])
    assert ok.curve_server_key == keys["server_pub"]
    with pytest.raises(ValueError, match="local only"):
        SubscriberConfig(control="tcp://0.0.0.0:5558")
    with pytest.raises(SystemExit) as e:
        main(["--curve-secret-key", str(tmp_path / "nope.key_secret"),
              "--curve-server-key", str(keys["server_pub"])])
    text = str(e.value)
    assert text.startswith("sed-monitor: error: --curve-secret-key: CURVE key") and "\n" not in text


# ---------------------------------------------------------------- CURVE: against a real CURVE PUB
def test_curve_monitor_receives_with_allowed_key_and_shows_refusal_otherwise(
    keys: dict[str, Path],
) -> None:
    pub = ZmqPublisher("tcp://0.0.0.0:*", curve=CurveServerConfig(keys["server_sec"], keys["allow"]))
    endpoint = f"tcp://127.0.0.1:{pub.bound.rsplit(':', 1)[1]}"
    good = fast(endpoint, curve_secret_key=keys["good"], curve_server_key=keys["server_pub"])
    stranger = replace(good, curve_secret_key=keys["bad"])
    plain = fast(endpoint)
    wrong_server = replace(good, curve_server_key=keys["good_pub"])  # not the daemon's key
    try:
        with running(good) as g, running(stranger) as s, running(plain) as p, \
                running(wrong_server) as w:
            deadline = time.monotonic() + 5.0
            seq = 0
            while time.monotonic() < deadline and len(g.received()) < 10:
                pub.send(status("mic", seq))
                seq += 1
                time.sleep(MESSAGE_GAP_S)
            s.wait(lambda: s.sub.connection.state == ConnState.REFUSED, what="stranger refused")
            p.wait(lambda: p.sub.connection.state == ConnState.REFUSED, what="plain refused")
            w.wait(lambda: w.sub.connection.state == ConnState.REFUSED, what="wrong key refused")
            time.sleep(0.3)  # more reconnect attempts: still refused, still nothing
            pub.send(status("mic", seq))
            time.sleep(0.1)
        assert len(g.received()) >= 10 and g.sub.connection.connects == 1
        assert s.received() == [] and p.received() == [] and w.received() == []
        # What the UI was told (the final STOPPED batch clears the detail):
        [stranger_said] = {b.connection.detail for b in s.batches if b.connection.state == ConnState.REFUSED}
        assert stranger_said.startswith("handshake refused (ZAP status 400)")
        assert "--curve-allow-dir" in stranger_said
        plain_said = [b.connection.detail for b in p.batches if b.connection.state == ConnState.REFUSED]
        assert plain_said and all("CURVE on one side only" in d for d in plain_said)
        wrong_said = {b.connection.detail for b in w.batches if b.connection.state == ConnState.REFUSED}
        assert wrong_said == {"handshake failed: wrong --curve-server-key, or CURVE on one side only?"}
        states = [b.connection.state for b in s.batches]
        assert set(states[states.index(ConnState.REFUSED):-1]) == {ConnState.REFUSED}  # no flapping
    finally:
        pub.close()


def test_app_header_says_the_handshake_was_refused(keys: dict[str, Path]) -> None:
    pub = ZmqPublisher("tcp://127.0.0.1:*", curve=CurveServerConfig(keys["server_sec"], keys["allow"]))
    config = fast(pub.bound, curve_secret_key=keys["bad"], curve_server_key=keys["server_pub"])

    async def scenario() -> tuple[str, str]:
        app = MonitorApp(config)
        async with app.run_test(size=(200, 30)) as pilot:
            t0 = time.monotonic()
            while app.state.connection.state != ConnState.REFUSED:
                assert time.monotonic() - t0 < 5.0, app.header.plain
                await pilot.pause(0.05)
            await pilot.pause(0.1)
            return app.header.plain, app.scores.plain

    try:
        header, scores = asyncio.run(scenario())
    finally:
        pub.close()
    assert f"refused by {pub.bound}: handshake refused (ZAP status 400)" in header
    assert "handshake refused" in scores


# ---------------------------------------------------------------- snapshot on join
def test_snapshot_on_every_connection_enters_state_without_seq_gaps(tmp_path: Path) -> None:
    """Snapshot events repeat the last sent seq: live messages up to and after it are no gap
    and no restart; after a daemon restart the new session's snapshot is kept, the old orphaned."""
    endpoint = free_endpoint()
    control = f"ipc://{tmp_path}/ctl"
    sessions = iter(["s1", "s2"])
    snapshot_seq = {"s1": 12, "s2": 3}

    def handler(req: dict[str, Any]) -> Any:
        assert req == {"cmd": "snapshot"}
        session = next(sessions)
        return {"session": session,
                "events": [open_event("mic", snapshot_seq[session], "Dog", 7, session=session)]}

    state = MonitorState(endpoint)
    pub = ScriptedPublisher(endpoint)
    with control_server(control, handler), running(fast(endpoint, control=control)) as r:
        r.wait(lambda: any(b.messages for b in r.batches), what="first snapshot posted")
        first = next(b for b in r.batches if b.messages)
        assert first.snapshot == "" and first.messages[0]["event"] == "update"
        time.sleep(0.2)  # let the subscription reach the publisher
        # 11 and 12 were "in flight" when the snapshot (seq 12) was taken; 13, 14 are new.
        pub.send_all([status("mic", 11), status("mic", 12), status("mic", 13), status("mic", 14)])
        r.wait(lambda: len(r.received()) == 5, what="live messages")
        for b in list(r.batches):
            state.apply_batch(b)
        [row] = state.event_rows()
        assert (row.label, row.phase, row.session) == ("Dog", "open", "s1")
        stats = state.streams["mic"].seq
        assert stats is not None and (stats.last_seq, stats.lost, stats.restarts, stats.received) == (14, 0, 0, 4)
        n_applied = len(r.batches)

        pub.close()  # the daemon restarts with a new session
        r.wait(lambda: r.sub.connection.state == ConnState.DISCONNECTED, what="disconnect")
        pub = ScriptedPublisher(endpoint)
        r.wait(lambda: r.sub.snapshots == 2, what="second snapshot")
        time.sleep(0.2)
        pub.send_all([status("mic", 3, session="s2"), status("mic", 4, session="s2")])
        r.wait(lambda: len(r.received()) == 8, what="live messages of s2")
        for b in list(r.batches)[n_applied:]:
            state.apply_batch(b)
    pub.close()
    rows = {row.session: row for row in state.event_rows()}
    assert rows["s1"].phase == "orphaned" and rows["s2"].phase == "open"
    stats = state.streams["mic"].seq
    assert stats is not None and (stats.session, stats.lost, stats.restarts) == ("s2", 0, 1)
    assert r.sub.snapshot_events == 2 and r.sub.connection.connects == 2


def test_missing_control_socket_is_reported_and_does_not_stop_the_loop(tmp_path: Path) -> None:
    endpoint = free_endpoint()
    config = fast(endpoint, control=f"ipc://{tmp_path}/nobody", snapshot_timeout_s=0.2)
    pub = ScriptedPublisher(endpoint)
    try:
        with running(config) as r:
            r.wait(lambda: any(b.snapshot for b in r.batches), what="snapshot failure")
            time.sleep(0.2)
            pub.send(status("mic", 0))
            r.wait(lambda: len(r.received()) == 1, what="live message")
    finally:
        pub.close()
    [failure] = [b.snapshot for b in r.batches if b.snapshot]
    assert failure.startswith(f"no snapshot from ipc://{tmp_path}/nobody: no reply") and "\n" not in failure
    state = MonitorState(endpoint)
    for b in r.batches:
        state.apply_batch(b)
    assert state.snapshot_error == failure and r.sub.snapshots == 0


def test_app_header_notes_a_failed_snapshot(tmp_path: Path) -> None:
    endpoint = free_endpoint()
    config = fast(endpoint, control=f"ipc://{tmp_path}/nobody", snapshot_timeout_s=0.2)
    pub = ScriptedPublisher(endpoint)

    async def scenario() -> str:
        app = MonitorApp(config)
        async with app.run_test(size=(200, 30)) as pilot:
            t0 = time.monotonic()
            while not app.state.snapshot_error:
                assert time.monotonic() - t0 < 5.0, app.header.plain
                await pilot.pause(0.05)
            await pilot.pause(0.1)
            return app.header.plain

    try:
        header = asyncio.run(scenario())
    finally:
        pub.close()
    assert "no snapshot" in header and "connected to" in header


def test_late_monitor_shows_the_open_event_of_a_real_listener_at_once(
    toy_model: Path, toy_scene: Path, tmp_path: Path
) -> None:
    """sed-listen's scene has a Sine wave from 2 s to 4 s. Periodic updates are set to every
    30 s, so a monitor joining while it is open can learn of it before its offset only from
    the snapshot; it must be in the state within moments of the connection."""
    from detector.config import Config
    from detector.model.scorer import OnnxScorer
    from detector.pipeline import Listener
    from detector.sources.parse import FileSource

    cfg = Config()
    cfg = replace(cfg, listen=replace(cfg.listen, update_interval_s=30.0))
    control = f"ipc://{tmp_path}/ctl"
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    listener = Listener([FileSource(toy_scene, 16000, realtime=True)], [pub], config=cfg,
                        scorer=OnnxScorer(toy_model, threads=1), control_endpoint=control)
    stop = threading.Event()
    daemon = threading.Thread(target=listener.run, args=(stop,))
    daemon.start()
    state = MonitorState(pub.bound)
    try:
        deadline = time.monotonic() + 8.0
        while not listener.streams or not listener.streams[0].events.open:
            assert time.monotonic() < deadline, "no event opened"
            time.sleep(0.02)
        with running(fast(pub.bound, control=control)) as r:
            r.wait(lambda: r.sub.connection.connects == 1, what="connection")
            connected_at = time.monotonic()
            r.wait(lambda: r.sub.snapshots == 1, timeout=1.0, what="snapshot")
            r.wait(lambda: any(b.snapshot == "" for b in r.batches), timeout=1.0, what="posted")
            shown_after = time.monotonic() - connected_at
            first = list(r.batches)
            for b in first:
                state.apply_batch(b)
            rows = state.event_rows()
            assert [(row.label, row.phase) for row in rows] == [("Sine wave", "open")]
            assert rows[0].start == pytest.approx(2.0, abs=0.6)
            assert shown_after < 1.0
            # Every event message so far came from the snapshot, none from the stream.
            assert sum(m["type"] == "event" for b in first for m in b.messages) == 1
            assert r.sub.snapshot_events == 1
            # Its live offset closes the same row; seq accounting saw no gap and no restart.
            r.wait(lambda: any(m.get("event") == "offset" for m in r.received()), timeout=6.0,
                   what="offset")
            for b in list(r.batches)[len(first):]:
                state.apply_batch(b)
    finally:
        stop.set()
        daemon.join(10)
        pub.close()
    sine = [row for row in state.event_rows() if row.label == "Sine wave"]
    assert len(sine) == 1 and sine[0].phase == "closed"
    stats = state.streams["scene.wav"].seq
    assert stats is not None and stats.lost == 0 and stats.restarts == 0
