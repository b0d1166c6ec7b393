"""``sed-monitor --demo``: watch ``sed-listen`` play a bundled clip, no microphone needed.

The detector runs in a **subprocess**
(``python -m detector.cli.listen <clip> --realtime --publish <endpoint>``), so the
monitor process still imports no inference code. When the clip ends the daemon
is started again, which also shows how the monitor follows a restart (new
session). The daemon's log goes to a temporary file; if it fails, the monitor
shows the last lines as a notification and the demo stops restarting it.

This module only manages the daemon; :func:`detector.monitor.app.run_demo` runs the
monitor against it (the app imports this module, never the other way round).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["DEMO_CLIP", "DemoDaemon", "free_endpoint", "listen_command"]

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The directory that holds the ``detector`` package."""
DEMO_CLIP = PACKAGE_ROOT / "detector" / "data" / "demo.flac"
RESTART_PAUSE_S = 2.0
"""Pause between the end of the clip and the next run of the daemon."""
STOP_TIMEOUT_S = 5.0
"""How long the daemon gets to close its events after SIGTERM before it is killed."""
LOG_TAIL_LINES = 6


def free_endpoint(host: str = "127.0.0.1") -> str:
    """``tcp://HOST:PORT`` with a port the OS just reported free."""
    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


def listen_command(
    clip: Path, endpoint: str, model: Path | None = None, realtime: bool = True
) -> list[str]:
    """The ``sed-listen`` command line the demo runs (current interpreter).

    ``python -m detector.cli.listen CLIP --realtime --publish ENDPOINT [--model M]``
    """
    cmd = [sys.executable, "-m", "detector.cli.listen", str(clip)]
    if realtime:
        cmd.append("--realtime")
    cmd += ["--publish", endpoint, "--log-level", "WARNING"]
    if model is not None:
        cmd += ["--model", str(model)]
    return cmd


class DemoDaemon:
    """Runs ``sed-listen`` on ``clip`` in a subprocess, again each time the clip ends.

    ``notify(text, error)`` is called from the supervisor thread on each restart
    and on failure.
    """

    def __init__(
        self,
        clip: Path,
        endpoint: str,
        notify: Callable[[str, bool], object] | None = None,
        loop: bool = True,
        model: Path | None = None,
        realtime: bool = True,
    ) -> None:
        if not clip.is_file():
            raise FileNotFoundError(
                f"demo clip {clip} not found; accepted: an audio file sed-listen can read "
                "(the package ships detector/data/demo.flac)"
            )
        self.command = listen_command(clip, endpoint, model, realtime)
        self.endpoint = endpoint
        self._notify = notify or (lambda text, error: None)
        self._loop = loop
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._log = tempfile.NamedTemporaryFile(
            prefix="sed-monitor-demo-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self.runs = 0
        self.failed = False
        """The daemon exited with an error (not because :meth:`stop` ended it)."""
        self.returncode: int | None = None
        self._thread = threading.Thread(target=self._supervise, name="demo-daemon", daemon=True)

    def start(self) -> None:
        """Start the supervisor thread (which starts the daemon)."""
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        log.info("demo: %s", " ".join(self.command))
        return subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = proc = self._spawn()
            self.runs += 1
            self.returncode = rc = proc.wait()
            if self._stop.is_set():
                return
            if rc != 0:
                self.failed = True
                self._notify(
                    f"demo: sed-listen exited with {rc}: {self.log_tail(1)}\n{self.log_tail()}",
                    True,
                )
                return
            if not self._loop:
                return
            self._notify("demo clip ended; starting sed-listen again (new session)", False)
            self._stop.wait(RESTART_PAUSE_S)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the daemon wrote."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the supervisor is done (``loop=False``); True if it is."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``)."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("sed-listen did not stop in %s s; killing it", STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)
        self._log.close()
