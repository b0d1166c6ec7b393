"""MicSource on a real (PulseAudio null-sink) default device: capture, device loss, reconnect.

The capture runs in a child process (``tests/pulse.py capture``) started with the
private server's env, because PortAudio reads the ALSA config when it initialises.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pulse import PulseServer, pulse_mic  # noqa: F401  (pulse_mic is a fixture)

from detector.frontend.features import FeatureConfig

pytestmark = [pytest.mark.live]

RATE = FeatureConfig().sample_rate
REPO = Path(__file__).resolve().parents[1]
PULSE_PY = Path(__file__).resolve().parent / "pulse.py"
TONE_HZ = 1234.0
RESUME_LIMIT_S = 2.0
FRESH_SERVER_LAG_S = 2.5


class Capture:
    """The capture child and the JSON lines it prints, stamped with this process's clock."""

    def __init__(self, server: PulseServer, seconds: float, out: Path, *opts: str) -> None:
        env = {**server.env, "PYTHONPATH": str(REPO)}
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, str(PULSE_PY), "capture", str(seconds), str(out), *opts],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                self.ready.set()
            elif line.startswith("{"):
                self.lines.append((time.monotonic(), json.loads(line)))

    def wait_for(self, what: str, pred: Any, timeout: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for stamp, obj in self.lines[seen:]:
                if pred(obj):
                    return stamp, obj
            seen = max(0, len(self.lines) - 1)
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"capture child never reported {what}; last: {self.last()}")

    def last(self) -> dict[str, Any] | str:
        return self.lines[-1][1] if self.lines else self.stderr_tail()

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(child still running)"
        assert self.proc.stderr is not None
        return " | ".join(self.proc.stderr.read().splitlines()[-5:])

    def finish(self, timeout: float = 60) -> tuple[np.ndarray, dict[str, Any]]:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.proc.returncode == 0, self.stderr_tail()
        final = self.lines[-1][1]
        assert final.get("done"), final
        return np.load(self.out), final


def _tone_file(tmp: Path, seconds: float) -> Path:
    rate = 48000
    t = np.arange(round(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    path = tmp / "tone.wav"
    sf.write(path, np.stack([x, x], axis=1).astype(np.float32), rate, subtype="PCM_16")
    return path


def _dominant(audio: np.ndarray) -> tuple[float, float]:
    """Dominant frequency (Hz) and rms of the loudest half second."""
    win = RATE // 2
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(win), mode="valid")
    start = int(np.argmax(energy))
    seg = audio[start : start + win]
    spec = np.abs(np.fft.rfft(seg * np.hanning(win)))
    return float(np.fft.rfftfreq(win, 1 / RATE)[int(np.argmax(spec))]), float(
        np.sqrt(np.mean(seg**2))
    )


@pytest.mark.parametrize("device_rate", [None, 44100])
def test_mic_captures_played_tone(
    pulse_mic: PulseServer,  # noqa: F811
    tmp_path: Path,
    device_rate: int | None,
) -> None:
    opts = [] if device_rate is None else ["--device-rate", str(device_rate)]
    cap = Capture(pulse_mic, 5.0, tmp_path / "cap.npy", *opts)
    assert cap.ready.wait(30), cap.stderr_tail()
    pulse_mic.play(_tone_file(tmp_path, 2.0))
    audio, final = cap.finish()
    assert final["state"] == "ended" and final["gaps"] == 0
    assert final["device_rate"] == (device_rate or RATE)
    assert audio.dtype == np.float32 and audio.shape[0] > 2 * RATE
    peak_hz, rms = _dominant(audio)
    print(
        f"\ncaptured {audio.shape[0] / RATE:.2f} s at {final['device_rate']} Hz; "
        f"dominant {peak_hz:.1f} Hz, rms {rms:.3f}"
    )
    assert abs(peak_hz - TONE_HZ) <= 4.0  # 2 Hz bins
    assert rms > 0.1  # 0.5 amplitude sine = 0.354 rms; well above silence


def test_slow_reader_overruns_are_counted(pulse_mic: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    """A reader that stalls longer than the ring holds loses samples, and says so."""
    cap = Capture(
        pulse_mic, 6.0, tmp_path / "cap.npy", "--ring-seconds", "0.25", "--pause", "0.5", "1.5"
    )
    assert cap.ready.wait(30), cap.stderr_tail()
    _, final = cap.finish()
    print(f"\nstalled reader: {final['overruns']} overruns, {final['dropped_samples']} dropped")
    assert final["overruns"] >= 1
    # 1.5 s without reading, 0.25 s of ring: about 1.25 s is lost; at least 0.5 s counted.
    assert final["dropped_samples"] >= RATE // 2
    assert final["gaps"] == 0


def test_mic_survives_server_loss(pulse_mic: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    cap = Capture(pulse_mic, 14.0, tmp_path / "cap.npy")
    assert cap.ready.wait(30), cap.stderr_tail()
    cap.wait_for("audio flowing", lambda o: o.get("n", 0) > 0, timeout=8)
    pulse_mic.stop(signal.SIGKILL)  # the device disappears abruptly
    _, lost = cap.wait_for("reconnecting", lambda o: o.get("state") == "reconnecting", timeout=5)
    assert lost["gaps"] == 1, lost
    time.sleep(1.0)
    n_during = cap.lines[-1][1]["n"]
    pulse_mic.start()
    t_restored = time.monotonic()
    t_back, back = cap.wait_for(
        "running again", lambda o: o.get("state") == "running" and o.get("gaps") == 1, timeout=8
    )
    resume_s = t_back - t_restored
    t_flow, _ = cap.wait_for("audio after reconnect", lambda o: o.get("n", 0) > n_during, 8)
    audio, final = cap.finish()
    print(
        f"\nreconnected {resume_s:.2f} s after the server came back; audio flowing "
        f"{t_flow - t_restored:.2f} s after; gap_seconds={final['gap_seconds']}"
    )
    assert resume_s <= RESUME_LIMIT_S
    # A freshly started PulseAudio takes ~1.9 s to deliver its first capture block
    # (measured with plain sounddevice too), so audio itself may lag the reopen.
    assert t_flow - t_restored <= RESUME_LIMIT_S + FRESH_SERVER_LAG_S
    assert final["gaps"] == 1
    # The gap spans at least the second the server was down.
    assert final["gap_seconds"] >= 1.0
    assert "reconnected" in (back.get("message") or "")
    assert audio.shape[0] == final_samples(cap)


def final_samples(cap: Capture) -> int:
    """Samples the child counted before saving (all reads, empty or not)."""
    counted = [obj["n"] for _, obj in cap.lines if "n" in obj]
    return counted[-1]
