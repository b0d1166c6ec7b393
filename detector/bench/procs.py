"""``sed-bench``'s memory section: the RSS of real ``sed-listen`` and ``sed-monitor`` processes.

:func:`memory` starts them as the user would (the listener paced from a file and
publishing, the dashboard on a pseudo-terminal) and reads ``/proc``. For YAMNet the
listener is :func:`serve` (``python -m detector.bench serve``): the same
:class:`detector.pipeline.Listener` on :class:`detector.model.yamnet.YamnetScorer`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from detector.config import Config, ListenConfig
from detector.io.publisher import ZmqPublisher
from detector.pipeline import Listener
from detector.sources.parse import FileSource

__all__ = ["memory", "serve"]

REPO = Path(__file__).resolve().parents[2]


def _rss_mb(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    fields = dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def _process(cmd: list[str], env_extra: dict[str, str] | None = None, **kw: Any) -> Iterator[Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.Popen(cmd, env=env, **kw)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory(model: Path | None, yamnet: Path | None, audio: Path, settle_s: float = 4.0) -> dict[str, Any]:
    """RSS of a real ``sed-listen`` (paced file, publishing) and of ``sed-monitor`` watching it.

    With ``yamnet``, the same listener process is started on YAMNet instead
    (``python -m detector.bench serve --yamnet``) and only its RSS is reported.
    """
    import pty

    endpoint = _free_endpoint()
    if yamnet is None:
        cmd = [sys.executable, "-m", "detector.cli.listen", str(audio), "--model", str(model),
               "--publish", endpoint, "--realtime", "--log-level", "WARNING"]
    else:
        cmd = [sys.executable, "-m", "detector.bench", "serve", "--yamnet", str(yamnet), str(audio),
               "--publish", endpoint]
    out: dict[str, Any] = {}
    with _process(cmd, stdout=subprocess.DEVNULL) as listen:
        if yamnet is not None:
            time.sleep(settle_s)
            out["listen"] = _rss_mb(listen.pid)
            return out
        master, slave = pty.openpty()
        mon_cmd = [sys.executable, "-m", "detector.monitor.app", "--connect", endpoint]
        term = {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        with _process(mon_cmd, term, stdin=slave, stdout=slave, stderr=slave) as mon:
            drain = threading.Thread(target=_drain_fd, args=(master,), daemon=True)
            drain.start()
            time.sleep(settle_s)
            out["listen"] = _rss_mb(listen.pid)
            out["monitor"] = _rss_mb(mon.pid)
        os.close(slave)
        os.close(master)
    return out


def _drain_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def serve(argv: Sequence[str]) -> int:
    """``serve --yamnet PATH FILE --publish EP``: a sed-listen-like process on YAMNet (for RSS)."""
    import logging

    from detector.cli.common import stop_on_signals
    from detector.model.yamnet import YamnetScorer

    p = argparse.ArgumentParser(prog="python -m detector.bench serve")
    p.add_argument("file", type=Path)
    p.add_argument("--yamnet", type=Path, required=True)
    p.add_argument("--publish", required=True)
    a = p.parse_args(argv)
    scorer = YamnetScorer(a.yamnet)
    pub = ZmqPublisher(a.publish)
    stop = stop_on_signals(logging.getLogger("sed-bench"), "stopping")
    config = Config(listen=ListenConfig(realtime=True))
    sc: Any = scorer  # duck-typed OnnxScorer
    rate = scorer.contract.features.sample_rate
    Listener([FileSource(a.file, rate, realtime=True)], [pub], config, scorer=sc).run(stop)
    pub.close()
    return 0
