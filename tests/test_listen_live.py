"""sed-listen on a real capture path: PulseAudio null sink -> ALSA default -> PortAudio.

A private PulseAudio server plays the toy scene into a null sink whose monitor is the
default source; ``sed-listen`` (a subprocess, default device) must publish the scene's
events on ZeroMQ.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from conftest import SCENE_EVENTS
from pulse import PulseServer, pulse_mic  # noqa: F401  (pulse_mic is a fixture)

from detector.io.wire import decode

pytestmark = [pytest.mark.live]

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_running(sub: zmq.Socket, proc: subprocess.Popen[str], streams: set[str], messages: list[dict],
                  seconds: float) -> None:
    """Collect messages until every stream in ``streams`` reported itself running."""
    deadline = time.time() + seconds
    running: set[str] = set()
    while time.time() < deadline and running != streams:
        if sub.poll(200):
            _, m = decode(sub.recv_multipart())
            messages.append(m)
            if m["type"] == "status" and m["state"] == "running":
                running.add(m["stream"])
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    assert running == streams, f"running: {running}; last {messages[-3:]}"


def _play_scene(pulse: PulseServer, scene: Path, sub: zmq.Socket, messages: list[dict],
                streams: set[str], seconds: float) -> None:
    """Play ``scene`` into the null sink; collect messages until the player is done and
    every stream in ``streams`` closed the scene's last event (or ``seconds`` pass)."""
    player = pulse.play(scene, wait=False)
    last_label = SCENE_EVENTS[-1][0]

    def scene_done() -> bool:
        closed = {m["stream"] for m in messages if m.get("event") == "offset" and m["label"] == last_label}
        return player.poll() is not None and closed >= streams

    deadline = time.time() + seconds
    while time.time() < deadline and not scene_done():
        if sub.poll(200):
            messages.append(decode(sub.recv_multipart())[1])


def test_sed_listen_hears_the_default_microphone(
    pulse_mic: PulseServer, toy_model: Path, toy_scene: Path  # noqa: F811
) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", "--model", str(toy_model),
         "--publish", endpoint, "--log-level", "WARNING"],
        env={**pulse_mic.env, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
    )
    messages: list[dict] = []
    try:
        _wait_running(sub, proc, {"mic:default"}, messages, 20)
        _play_scene(pulse_mic, toy_scene, sub, messages, {"mic:default"}, 25)
    finally:
        proc.terminate()
        stderr = proc.communicate(timeout=10)[1]
        sub.close()
        ctx.term()
    assert proc.returncode == 0, stderr
    onsets = [m["label"] for m in messages if m.get("event") == "onset"]
    for label, _, _ in SCENE_EVENTS:
        assert label in onsets, f"{label} not heard; onsets {onsets}"
    assert all(m["stream"] == "mic:default" for m in messages)
    levels = [m["level_dbfs"] for m in messages if m["type"] == "status" and m["state"] == "running"]
    assert max(levels) > -60.0, levels  # the played scene reached the capture path


def test_workers_hear_the_microphone_in_two_processes(
    pulse_mic: PulseServer, toy_model: Path, toy_scene: Path  # noqa: F811
) -> None:
    """``--workers 2`` with the capture path opened twice (ALSA's ``default`` and ``pulse``
    devices, both PulseAudio's default source): each worker process captures its own
    stream, and one subscriber on the command's endpoint hears the scene on both."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    streams = {"mic:default", "mic:pulse"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", "--model", str(toy_model), "--workers", "2",
         "--publish", endpoint, "--log-level", "WARNING", "mic:default", "mic:pulse"],
        env={**pulse_mic.env, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
    )
    messages: list[dict] = []
    try:
        _wait_running(sub, proc, streams, messages, 30)
        _play_scene(pulse_mic, toy_scene, sub, messages, streams, 30)
    finally:
        proc.terminate()
        stderr = proc.communicate(timeout=15)[1]
        sub.close()
        ctx.term()
    assert proc.returncode == 0, stderr
    for stream in streams:
        onsets = [m["label"] for m in messages if m.get("event") == "onset" and m["stream"] == stream]
        for label, _, _ in SCENE_EVENTS:
            assert label in onsets, f"{stream}: {label} not heard; onsets {onsets}"
    sessions = {m["stream"]: m["session"] for m in messages}
    assert sessions["mic:default"] != sessions["mic:pulse"], "one worker process each"
