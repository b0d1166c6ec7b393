"""A real, private PulseAudio server for live-microphone tests.

:class:`PulseServer` starts ``pulseaudio`` (as the current user, root included)
with a runtime directory, home and ALSA config of its own in a temp dir, loads a
null sink ``sedtest`` and makes its monitor the default source. Sound played
with :meth:`PulseServer.play` (``paplay --device=sedtest``) is what a program
recording from the *default ALSA/PortAudio device* hears, as long as it runs
with :attr:`PulseServer.env` (PortAudio reads the ALSA config when it
initialises, so start such programs as subprocesses with that env).

The ``pulse_mic`` fixture yields a running server and skips, with the reason,
when ``pulseaudio``, ``pactl``, ``paplay``, the ALSA pulse plugin or PortAudio
are not installed (Debian: ``pulseaudio pulseaudio-utils libasound2-plugins
libportaudio2``).

Run as a script (``python tests/pulse.py capture SECONDS OUT.npy [--device-rate HZ]
[--ring-seconds S] [--pause AFTER FOR]``) it is the
capture child used by ``tests/test_sources_live.py``: it opens
``MicSource(None)``, prints ``ready``, then one JSON line of state per read
interval, and saves the audio.
"""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PulseServer", "missing_pulse_parts", "pulse_mic"]

SINK = "sedtest"
START_TIMEOUT_S = 15.0

_ALSA_RC = """\
# Route ALSA's default PCM and mixer to the private PulseAudio server (see tests/pulse.py).
pcm.!default { type pulse }
ctl.!default { type pulse }
"""


def missing_pulse_parts() -> str | None:
    """Why the live harness cannot run here (``None`` when everything is installed)."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") and not glob.glob(
        "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"
    ):
        missing.append("ALSA pulse plugin (libasound2-plugins)")
    if ctypes.util.find_library("portaudio") is None:
        missing.append("PortAudio (libportaudio2)")
    if not missing:
        return None
    return (
        "live audio harness needs "
        + ", ".join(missing)
        + ("; apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2")
    )


class PulseServer:
    """A private PulseAudio daemon with a null sink whose monitor is the default source."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "runtime"
        self.home = root / "home"
        self.config_home = root / "config"
        for d in (self.runtime, self.home, self.config_home / "alsa"):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime.chmod(0o700)
        (self.config_home / "alsa" / "asoundrc").write_text(_ALSA_RC)
        self.socket = self.runtime / "native"
        self.script = root / "default.pa"
        self.script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK} rate=48000\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        self.log_path = root / "pulseaudio.log"
        self.env = {
            **os.environ,
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.config_home),
            "HOME": str(self.home),
            "PULSE_SERVER": f"unix:{self.socket}",
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the daemon and wait until it answers (``pactl info``)."""
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "--system=false",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "-n",
                "-F",
                str(self.script),
                "--log-target=stderr",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"pulseaudio exited with {self._proc.returncode}: {self.log_tail()}"
                )
            if self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer in {START_TIMEOUT_S} s: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the daemon (``SIGKILL`` simulates a crash) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=check
        )

    def play(self, path: str | os.PathLike[str], wait: bool = True) -> subprocess.Popen[bytes]:
        """Play an audio file into the null sink (heard on the default source)."""
        proc = subprocess.Popen(
            ["paplay", f"--device={SINK}", os.fspath(path)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if wait:
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"paplay {path} failed: {err.decode(errors='replace')}")
        return proc

    def log_tail(self, n: int = 10) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="module")
def pulse_mic() -> Iterator[PulseServer]:
    """A running private PulseAudio server whose default source hears :meth:`PulseServer.play`."""
    reason = missing_pulse_parts()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="sed-pulse-") as tmp:
        server = PulseServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def capture_main(argv: list[str]) -> None:
    """Capture child: MicSource on the default device; JSON lines of state on stdout."""
    import argparse

    import numpy as np

    from detector.frontend.features import FeatureConfig
    from detector.sources.parse import MicSource

    p = argparse.ArgumentParser(prog="python tests/pulse.py capture")
    p.add_argument("seconds", type=float)
    p.add_argument("out")
    p.add_argument("--device-rate", type=int, default=None)
    p.add_argument("--ring-seconds", type=float, default=10.0)
    p.add_argument(
        "--pause",
        type=float,
        nargs=2,
        default=None,
        metavar=("AFTER", "FOR"),
        help="stop reading AFTER seconds past the first audio, FOR seconds",
    )
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args(argv)
    src = MicSource(
        None,
        FeatureConfig().sample_rate,
        ring_seconds=args.ring_seconds,
        device_rate=args.device_rate,
    )
    src.start()
    print("ready", flush=True)
    parts = []
    t0 = time.monotonic()
    first_audio: float | None = None
    n = 0
    while (now := time.monotonic() - t0) < args.seconds:
        paused = (
            args.pause is not None
            and first_audio is not None
            and 0 <= now - first_audio - args.pause[0] < args.pause[1]
        )
        if not paused:
            x = src.read(src.sample_rate)
            if x is not None:
                parts.append(x)
                n += x.shape[0]
                if first_audio is None and n:
                    first_audio = now
        info = {"t": round(now, 3), "n": n, "device_rate": src.device_rate, **src.stats()}
        print(json.dumps(info), flush=True)
        time.sleep(args.interval)
    src.close()
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    np.save(args.out, audio)
    print(json.dumps({"done": True, "device_rate": src.device_rate, **src.stats()}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "capture":
        sys.exit("usage: python tests/pulse.py capture SECONDS OUT.npy [options]")
    capture_main(sys.argv[2:])
