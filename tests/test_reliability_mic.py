"""Microphone lost and found, end to end: ``sed-listen`` on the default device of a private
PulseAudio server (``tests/pulse.py``) while the server is killed or its null sink unloaded.

``status.<stream>`` must say ``reconnecting`` at once, open events are closed
(``reason: "gap"``), the stream is ``running`` again within 2 s of the device's
return, and the gap is reported (``gaps``, ``gap_seconds``, a hole in stream time),
never filled with audio.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulse import SINK, PulseServer, pulse_mic  # noqa: F401  (pulse_mic is a fixture)

pytestmark = [pytest.mark.live]

REPO = Path(__file__).resolve().parents[1]
RESUME_LIMIT_S = 2.0
DOWN_S = 1.5


class Listen:
    """``sed-listen --json-all`` on the default microphone; its messages on a queue."""

    def __init__(self, server: PulseServer, model: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "detector.cli.listen", "--model", str(model), "--no-publish",
             "--json-all", "--log-level", "WARNING"],
            env={**server.env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._q: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        # stderr is read as it comes too: a pipe nobody reads blocks the process once full
        # (ALSA prints a few lines per failed reopen).
        self._stderr: list[str] = []
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_thread.start()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put((time.monotonic(), json.loads(line)))

    def wait_for(self, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                t, m = self._q.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.messages.append((t, m))
            if pred(m):
                return t, m
        if self.proc.poll() is not None:
            self._stderr_thread.join(timeout=5)
        err = "".join(self._stderr)
        raise AssertionError(f"no {what} within {timeout} s; last {[m for _, m in self.messages[-3:]]} {err}")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Where it hangs: every thread's stack (run_cli's SIGUSR1), then kill it.
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.proc.kill()
            self.proc.wait(timeout=5)
            self._stderr_thread.join(timeout=5)
            stacks = "".join(self._stderr)
            raise AssertionError(f"sed-listen did not exit within 10 s of SIGTERM; its threads:\n{stacks[-6000:]}") from None
        # The pump thread owns stdout: let it read to EOF (communicate() would race it
        # for the last lines, e.g. the final "ended" status).
        self._pump_thread.join(timeout=5)
        self._stderr_thread.join(timeout=5)
        err = "".join(self._stderr)
        while not self._q.empty():
            self.messages.append(self._q.get())
        return self.proc.returncode, err


def _status(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "status" and m["stream"] == "mic:default" and m["state"] == state


@pytest.mark.parametrize("how", ["kill pulseaudio", "unload the null sink"])
def test_microphone_lost_is_reported_and_resumes_within_2s(
    how: str, pulse_mic: PulseServer, toy_model: Path  # noqa: F811
) -> None:
    pulse_mic.start()  # the previous case may have left it stopped
    listen = Listen(pulse_mic, toy_model)
    try:
        listen.wait_for("running status", _status("running"), timeout=30)
        listen.wait_for("scores", lambda m: m["type"] == "scores", timeout=10)
        t_cut = time.monotonic()
        module = ""
        if how == "kill pulseaudio":
            pulse_mic.stop(signal.SIGKILL)
        else:
            mods = pulse_mic.pactl("list", "short", "modules").stdout.splitlines()
            module = next(line.split()[0] for line in mods if "module-null-sink" in line)
            pulse_mic.pactl("unload-module", module)
        t_lost, lost = listen.wait_for("reconnecting status", _status("reconnecting"), timeout=5)
        assert lost["gaps"] == 1 and "lost" in lost.get("message", "")
        time.sleep(DOWN_S)
        if how == "kill pulseaudio":
            pulse_mic.start()
        else:
            pulse_mic.pactl("load-module", "module-null-sink", f"sink_name={SINK}", "rate=48000")
            pulse_mic.pactl("set-default-source", f"{SINK}.monitor")
        t_back = time.monotonic()
        t_run, _ = listen.wait_for("running again", _status("running"), timeout=10)
        t_audio, resumed = listen.wait_for(
            "gap report", lambda m: m["type"] == "status" and "after a gap" in m.get("message", ""), 15
        )
        _, after = listen.wait_for("scores after the gap", lambda m: m["type"] == "scores", timeout=10)
    finally:
        rc, err = listen.stop()
        if not pulse_mic.running:
            pulse_mic.start()
    print(f"\n{how}: reconnecting reported {t_lost - t_cut:.2f} s after the loss; running "
          f"{t_run - t_back:.2f} s after the device returned, audio {t_audio - t_back:.2f} s after; "
          f"gap_seconds={resumed['gap_seconds']}")
    assert rc == 0, err
    assert t_run - t_back <= RESUME_LIMIT_S
    assert resumed["gaps"] == 1 and resumed["gap_seconds"] >= DOWN_S
    # The hole is in stream time: the first patch after it starts past the gap.
    before = [m for _, m in listen.messages if m["type"] == "scores" and m["seq"] < lost["seq"]]
    assert after["patch_start"] - before[-1]["patch_start"] >= resumed["gap_seconds"]


def test_sigterm_while_the_microphone_is_gone_exits_0_within_1s(
    pulse_mic: PulseServer, toy_model: Path  # noqa: F811
) -> None:
    pulse_mic.start()
    listen = Listen(pulse_mic, toy_model)
    try:
        listen.wait_for("running status", _status("running"), timeout=30)
        pulse_mic.stop(signal.SIGKILL)
        listen.wait_for("reconnecting status", _status("reconnecting"), timeout=5)
        time.sleep(0.5)  # inside the reconnect backoff
        t0 = time.monotonic()
        rc, err = listen.stop()
        elapsed = time.monotonic() - t0
    finally:
        if listen.proc.poll() is None:
            listen.proc.kill()
        pulse_mic.start()
    assert rc == 0, err
    assert elapsed < 1.0, f"exit took {elapsed:.2f} s"
    final = [m for _, m in listen.messages if m["type"] == "status"][-1]
    assert final["state"] == "ended" and final["gaps"] == 1
