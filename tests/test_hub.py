"""sed-hub: three daemons on 127.0.0.1 fanned into one stream by the XSUB/XPUB proxy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq

from detector.config import Config, ListenConfig
from detector.io.hub import Hub, HubConfig
from detector.io.publisher import ZmqPublisher
from detector.io.wire import decode
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource

RATE = 16000
REPO = Path(__file__).resolve().parent.parent
CLIP_SECONDS = 3.0
RECV_DEADLINE_S = 30.0
CLI_DEADLINE_S = 2 * RECV_DEADLINE_S  # three processes to start
LONG_CLIP_SECONDS = CLI_DEADLINE_S  # the daemons play for as long as the CLI test waits


def _tone(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, x.astype(np.float32), RATE)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tone(tmp_path_factory.mktemp("hub") / "tone.wav", CLIP_SECONDS)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outlasts a slow start: each daemon keeps publishing until the test has its scores.

    With the 3 s clip, a daemon that came up before the hub had connected to it could
    finish and exit unheard on a loaded machine (PUB drops what no subscriber asked for).
    """
    return _tone(tmp_path_factory.mktemp("hub") / "long_tone.wav", LONG_CLIP_SECONDS)


def _collect(sub: zmq.Socket, n: int, deadline_s: float, key: str = "stream") -> dict[str, list[dict]]:
    """Messages by ``key`` until ``n`` distinct keys each sent a scores message, or the deadline."""
    got: dict[str, list[dict]] = {}
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not sub.poll(100):
            continue
        _topic, msg = decode(sub.recv_multipart())
        got.setdefault(msg[key], []).append(msg)
        if sum(any(m["type"] == "scores" for m in msgs) for msgs in got.values()) >= n:
            break
    return got


def _check(got: dict[str, list[dict]], want: set[str]) -> None:
    assert set(got) == want
    sessions = {msgs[0]["session"] for msgs in got.values()}
    assert len(sessions) == len(want), "each daemon has its own session id"
    for msgs in got.values():
        seqs = [m["seq"] for m in msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert any(m["type"] == "scores" for m in msgs)


def test_hub_fans_three_listeners_into_one_subscriber(toy_model: Path, clip: Path) -> None:
    ctx = zmq.Context()
    scorer = OnnxScorer(toy_model, threads=1)
    config = Config(listen=ListenConfig(realtime=True))
    pubs = [ZmqPublisher("tcp://127.0.0.1:*", context=ctx) for _ in range(3)]
    hub = Hub(HubConfig(publish=("tcp://127.0.0.1:*",), upstream=tuple(p.bound for p in pubs)), ctx)
    hub.start()
    sub = ctx.socket(zmq.SUB)
    sub.connect(hub.bound_publish[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)  # let the subscription travel hub -> daemons
    stop = threading.Event()
    want = {f"mic-host-{i}" for i in range(3)}
    listeners = [
        Listener([FileSource(clip, RATE, realtime=True, stream_id=f"mic-host-{i}")], [pub], config, scorer=scorer)
        for i, pub in enumerate(pubs)
    ]
    threads = [threading.Thread(target=li.run, args=(stop,)) for li in listeners]
    try:
        for th in threads:
            th.start()
        got = _collect(sub, len(want), RECV_DEADLINE_S)
    finally:
        stop.set()
        for th in threads:
            th.join()
        for p in pubs:
            p.close()
        sub.close(0)
        hub.stop()
        ctx.term()
    _check(got, want)


def test_hub_subscription_filter_reaches_daemons(toy_model: Path, clip: Path) -> None:
    """A consumer subscribed to ``status.`` gets only status messages through the hub."""
    ctx = zmq.Context()
    pub = ZmqPublisher("tcp://127.0.0.1:*", context=ctx)
    hub = Hub(HubConfig(publish=("tcp://127.0.0.1:*",), upstream=(pub.bound,)), ctx).start()
    sub = ctx.socket(zmq.SUB)
    sub.connect(hub.bound_publish[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"status.")
    time.sleep(0.3)
    stop = threading.Event()
    li = Listener([FileSource(clip, RATE, realtime=True)], [pub], Config(listen=ListenConfig(realtime=True)),
                  scorer=OnnxScorer(toy_model, threads=1))
    th = threading.Thread(target=li.run, args=(stop,))
    types: list[str] = []
    try:
        th.start()
        end = time.monotonic() + RECV_DEADLINE_S
        while len(types) < 2 and time.monotonic() < end:
            if sub.poll(100):
                types.append(decode(sub.recv_multipart())[1]["type"])
    finally:
        stop.set()
        th.join()
        pub.close()
        sub.close(0)
        hub.stop()
        ctx.term()
    assert types and set(types) == {"status"}


def test_hub_config_rejects_missing_upstream_and_bad_endpoint() -> None:
    with pytest.raises(ValueError, match="--connect"):
        HubConfig()
    with pytest.raises(ValueError, match="no scheme; accepted"):
        HubConfig(upstream=("127.0.0.1:5557",))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_sed_hub_cli_with_three_sed_listen_daemons(toy_model: Path, long_clip: Path) -> None:
    """Real processes: three ``sed-listen`` daemons -> ``sed-hub`` -> one subscriber."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    ports = [_free_port() for _ in range(4)]
    ups = [f"tcp://127.0.0.1:{p}" for p in ports[:3]]
    out = f"tcp://127.0.0.1:{ports[3]}"
    hub_cmd = [sys.executable, "-m", "detector.io.hub", "--publish", out, "--log-level", "WARNING"]
    for ep in ups:
        hub_cmd += ["--connect", ep]
    procs: list[subprocess.Popen[bytes]] = []
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        hub = subprocess.Popen(hub_cmd, env=env)
        procs.append(hub)
        sub.connect(out)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        for ep in ups:
            cmd = [sys.executable, "-m", "detector.cli.listen", str(long_clip),
                   "--model", str(toy_model), "--publish", ep, "--realtime", "--threads", "1",
                   "--log-level", "WARNING"]
            procs.append(subprocess.Popen(cmd, env=env))
        got = _collect(sub, len(ups), CLI_DEADLINE_S, key="session")
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        sub.close(0)
        ctx.term()
    assert len(got) == len(ups), f"sessions seen: {sorted(got)}"
    for msgs in got.values():
        assert any(m["type"] == "scores" for m in msgs)
        seqs = [m["seq"] for m in msgs]
        assert seqs == sorted(seqs)
