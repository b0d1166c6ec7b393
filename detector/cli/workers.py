"""``sed-listen --workers N``: one command's streams shared out over N processes.

    sed-listen --workers 2 rtsp://cam1/audio rtsp://cam2/audio ...   # one per core

One :class:`~detector.pipeline.Listener` batches every stream's front end and inference,
but its loop (reading, patching, decisions, messages) is Python and runs on one core at a
time. Past about 1,500 live streams on a 2-core machine that loop, not the cores, is the
limit: one process then uses ~1.5 of its 2 cores and still falls behind, while two
processes of 1,008 streams each keep up (``docs/benchmarks.md``). So, like a web server's
worker processes:

- the sources are split into ``N`` shards (sources that would share a stream id stay in
  one shard, in their order, so every stream keeps the id it has in one process);
- each shard runs in a worker process: the same ``sed-listen``, with the same options,
  publishing on an ``ipc://`` socket in a private directory;
- this process joins the workers' sockets into the one ``--publish`` endpoint with
  ``sed-hub``'s proxy (:class:`detector.io.hub.Hub`), so subscribers see one daemon
  whose streams say which ``session`` (worker) they come from; ``--json`` lines come
  from every worker on the shared stdout, a whole line per write;
- SIGINT/SIGTERM are passed on: each worker closes its open events and exits.

A worker whose streams all fail exits 2, as ``sed-listen`` does, and the others go on. A
worker that dies otherwise (killed, out of memory) stops the rest and the command exits 1,
so that a supervisor restarts the whole daemon instead of running without those streams.
If the command itself is killed outright, each worker sees it gone, closes its open
events and exits: no orphan keeps a microphone open.

``--clips DIR``: every worker writes its streams' clips into ``DIR`` (a clip's name holds
its stream and session, so none collide) and applies the retention to the whole directory,
so the size and age limits hold for all of them together. ``--metrics HOST:PORT``: worker
``i`` serves ``/metrics`` for its streams on ``PORT + i`` (a scrape target each; the log
names them). Options that hold one state for the whole daemon (``--control``, ``--mqtt``,
``--state-dir``, CURVE) and stdin (one process can read it) are refused with ``--workers``:
run one ``sed-listen`` per such group instead.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from detector.cli.common import run_cli, setup_logging, signals_set
from detector.config import Config
from detector.io.hub import Hub, HubConfig
from detector.sources.net import is_url, redact_url

__all__ = ["WORKER_STOP_S", "check_metrics_ports", "refused_with_workers", "run_workers", "shard", "worker_main",
           "worker_metrics"]

log = logging.getLogger("sed-listen")

WORKER_STOP_S = 10.0
"""How long a stopping worker may take to close its events before it is killed."""

DRAIN_S = 0.3
"""After the last worker exits, how long the proxy keeps forwarding its final messages."""


def refused_with_workers(args: argparse.Namespace) -> list[str]:
    """The given options that ``--workers`` cannot share out (empty: none)."""
    given = {
        "--control": args.control is not None,
        "--mqtt": bool(args.mqtt),
        "--state-dir": args.state_dir is not None,
        "--curve-secret-key/--curve-allow-dir": bool(args.curve_secret_key or args.curve_allow_dir),
    }
    return [name for name, on in given.items() if on]


def worker_metrics(address: str, index: int) -> str:
    """Worker ``index``'s metrics address: ``address``'s port plus ``index``."""
    from detector.io.metrics import parse_metrics_address

    host, port = parse_metrics_address(address)
    return f"[{host}]:{port + index}" if ":" in host else f"{host}:{port + index}"


def check_metrics_ports(address: str, workers: int) -> None:
    """Every worker's metrics port exists (``PORT + workers - 1`` <= 65535)."""
    from detector.io.metrics import parse_metrics_address

    _host, port = parse_metrics_address(address)
    if port + workers - 1 > 65535:
        raise ValueError(f"--metrics {address} with --workers {workers} needs ports {port}-{port + workers - 1}; "
                         "accepted: a port of at most 65536 - workers")


def shard(specs: Sequence[str], ids: Sequence[str], n: int) -> list[list[str]]:
    """``specs`` into at most ``n`` non-empty shards of near-equal size.

    Specs with the same stream id (``ids[i]``) go to the same shard, in their order, so
    the ``#1``/``#2`` suffixes that tell them apart come out as in one process. Groups go,
    largest first, to the shard with the fewest specs; each shard keeps the command's order.
    """
    if n < 1:
        raise ValueError(f"--workers {n}; accepted: 1 or more")
    groups: dict[str, list[int]] = {}
    for i, sid in enumerate(ids):
        groups.setdefault(sid, []).append(i)
    n = min(n, len(groups))
    shards: list[list[int]] = [[] for _ in range(n)]
    for idx in sorted(groups.values(), key=len, reverse=True):
        min(shards, key=len).extend(idx)
    return [[specs[i] for i in sorted(s)] for s in shards if s]


def worker_main(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, index: int) -> None:
    """A worker process: ``run(args)`` (``sed-listen`` on the shard ``args`` name) as its
    whole program, with the command's logging and exit statuses."""
    setup_logging(args.log_level)
    _stop_with_parent(index)
    sys.exit(run_cli(f"sed-listen worker {index}", lambda: run(args)))


def _stop_with_parent(index: int) -> None:
    """A worker whose command is gone (killed with SIGKILL, say) stops as on SIGTERM,
    closing its events, instead of holding its microphones as an orphan."""
    parent = mp.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel  # readable once the parent has exited

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        log.warning("worker %d: the sed-listen command is gone; stopping", index)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sed-parent-watch", daemon=True).start()


def _child_args(args: argparse.Namespace, specs: list[str], endpoint: str | None, index: int) -> argparse.Namespace:
    child = argparse.Namespace(**vars(args))
    child.sources, child.file, child.mic, child.workers = specs, [], None, 1
    child.in_worker = True  # a source that fails is reported on the wire, as one of several
    if endpoint is not None:
        child.publish = endpoint
    if args.metrics:
        child.metrics = worker_metrics(args.metrics, index)
    return child


def run_workers(args: argparse.Namespace, config: Config, shards: list[list[str]],
                run: Callable[[argparse.Namespace], int]) -> int:
    """Run ``shards`` in worker processes behind one publish endpoint; the exit status.

    Each worker calls ``run`` (``sed-listen``'s own body, a module-level function so that
    a spawned process can find it) on the command's options with its shard as sources."""
    lc = config.listen
    ipc_dir = Path(tempfile.mkdtemp(prefix="sed-workers-"))  # 0700: only this user connects
    endpoints = [f"ipc://{ipc_dir}/w{i}" for i in range(len(shards))]
    hub: Hub | None = None
    procs: list[mp.process.BaseProcess] = []
    try:
        if not args.no_publish:
            # Bound before any worker starts, so a taken port is an error at once.
            hub = Hub(HubConfig(publish=(lc.endpoint,), upstream=tuple(endpoints), hwm=lc.hwm)).start()
            log.info("publishing on %s (%d worker processes)", ", ".join(hub.bound_publish), len(shards))
        ctx = mp.get_context("spawn")  # never fork a process that holds threads and sockets
        for i, specs in enumerate(shards):
            child = _child_args(args, specs, None if args.no_publish else endpoints[i], i)
            p = ctx.Process(target=worker_main, args=(run, child, i), name=f"sed-listen-worker-{i}")
            p.start()
            procs.append(p)
            log.info("worker %d (pid %s): %d stream(s)%s", i, p.pid, len(specs),
                     f"; metrics on http://{child.metrics}/metrics" if args.metrics else "")
        return _supervise(procs, shards)
    finally:
        for q in procs:
            if q.is_alive():
                q.kill()
                q.join()
        if hub is not None:
            time.sleep(DRAIN_S)
            hub.stop()
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _worker_name(i: int, specs: list[str]) -> str:
    """``worker 1 (3 stream(s): a.wav, rtsp://cam/..., ...)``, without URL credentials."""
    shown = [redact_url(s) if is_url(s) else s for s in specs[:3]]
    return f"worker {i} ({len(specs)} stream(s): {', '.join(shown)}{', ...' if len(specs) > 3 else ''})"


def _supervise(procs: list[mp.process.BaseProcess], shards: list[list[str]]) -> int:
    stop = threading.Event()
    failed: list[str] = []
    died = False
    with signals_set(stop, log, "stopping the workers"):
        running = {p.sentinel: (i, p) for i, p in enumerate(procs)}
        while running and not stop.is_set():
            for s in multiprocessing.connection.wait(list(running), timeout=0.2):
                i, p = running.pop(s)  # type: ignore[arg-type]  # a sentinel is an int
                p.join()
                if p.exitcode == 0:
                    continue
                what = _worker_name(i, shards[i])
                if p.exitcode == 2:  # its streams failed; sed-listen said why on stderr
                    log.error("%s exited with status 2; the other workers go on", what)
                    failed.append(what)
                else:
                    log.error("%s died (exit code %s); stopping the others", what, p.exitcode)
                    died = True
                    stop.set()
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker closes its open events and exits
        deadline = time.monotonic() + WORKER_STOP_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.error("worker pid %s did not stop within %.0f s; killed", p.pid, WORKER_STOP_S)
                p.kill()
                p.join()
    if died:
        return 1
    if failed and len(failed) == len(procs):
        raise RuntimeError("every worker's streams failed: " + "; ".join(failed))
    return 0
