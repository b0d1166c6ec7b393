"""Operating a running detector: the local control socket and persisted sequence numbers.

**Control socket.** A ZeroMQ REP socket, bound only to a local endpoint
(``tcp://127.0.0.1:PORT``, ``ipc://PATH`` or ``inproc://NAME``). One request is one
frame of JSON ``{"cmd": ..., ...}``; the reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Requests are validated here (size, JSON object,
known command, known argument names and types) before the daemon sees them. The
daemon polls the socket from its own loop (:meth:`ControlServer.poll`), so a
command never races the pipeline. Commands (see ``docs/wire.md``):

    ping                                  -> {"session": ...}
    status     [stream]                   -> per-stream state and counters
    snapshot   [stream]                   -> open events as "update" event payloads
    pause      [stream] / resume [stream] -> streams paused / resumed
    thresholds label on off [stream]      -> set one label's hysteresis thresholds
    reload                                -> re-read --config's [smoother] section

**Sequence store.** With ``sed-listen --state-dir DIR`` each stream's ``seq``
continues across restarts. Sequence numbers are *reserved* in blocks of
:data:`SEQ_BLOCK` (hi/lo allocation): the file is rewritten only when a block is
used up, and after a crash (SIGKILL, power loss) the next run starts after the
reserved block, so a number is never reused and the jump shows the gap.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import zmq

from detector.io.endpoint import check_endpoint
from detector.io.publisher import is_loopback_endpoint

__all__ = [
    "COMMANDS",
    "DEFAULT_CONTROL_ENDPOINT",
    "MAX_REQUEST_BYTES",
    "SEQ_BLOCK",
    "Commands",
    "ControlError",
    "ControlServer",
    "Controllable",
    "SeqStore",
    "parse_request",
    "request",
]

log = logging.getLogger(__name__)

DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5558"
MAX_REQUEST_BYTES = 4096
"""Larger requests are refused by ZeroMQ itself (``MAXMSGSIZE``: the peer is disconnected)."""
SEQ_BLOCK = 1000
"""Sequence numbers reserved per write of the state file."""
MAX_NAME_CHARS = 200
"""Longest stream id or label accepted in a request."""

#: command -> {argument: accepted type}; every argument is optional unless listed in _REQUIRED.
COMMANDS: dict[str, dict[str, type]] = {
    "ping": {},
    "status": {"stream": str},
    "snapshot": {"stream": str},
    "pause": {"stream": str},
    "resume": {"stream": str},
    "thresholds": {"label": str, "on": float, "off": float, "stream": str},
    "reload": {},
}
_REQUIRED: dict[str, tuple[str, ...]] = {"thresholds": ("label", "on", "off")}


class ControlError(ValueError):
    """A control request that is malformed or cannot be carried out; the reply says why."""


def _check_arg(cmd: str, name: str, value: Any, kind: type) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ControlError(f"{cmd}: {name}={value!r}; expected a finite number")
        return float(value)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise ControlError(f"{cmd}: {name}={value!r}; expected a string of 1..{MAX_NAME_CHARS} chars")
    return value


def parse_request(frames: list[bytes]) -> dict[str, Any]:
    """Validate one request: ``[json]`` -> ``{"cmd": str, **args}`` with checked types."""
    if len(frames) != 1:
        raise ControlError(f"expected 1 frame of JSON; got {len(frames)} frames")
    raw = frames[0]
    if len(raw) > MAX_REQUEST_BYTES:
        raise ControlError(f"request of {len(raw)} bytes; accepted: at most {MAX_REQUEST_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError(f"request is not UTF-8 JSON ({e}); expected {{\"cmd\": ...}}") from e
    if not isinstance(doc, dict):
        raise ControlError(f"request is a JSON {type(doc).__name__}; expected an object {{\"cmd\": ...}}")
    cmd = doc.get("cmd")
    if cmd not in COMMANDS:
        raise ControlError(f"unknown command {cmd!r}; accepted: {sorted(COMMANDS)}")
    spec = COMMANDS[cmd]
    unknown = sorted(set(doc) - {"cmd"} - set(spec))
    if unknown:
        raise ControlError(f"{cmd}: unknown argument(s) {unknown}; accepted: {sorted(spec)}")
    missing = [k for k in _REQUIRED.get(cmd, ()) if k not in doc]
    if missing:
        raise ControlError(f"{cmd}: missing argument(s) {missing}")
    out: dict[str, Any] = {"cmd": cmd}
    for name, kind in spec.items():
        if name in doc:
            out[name] = _check_arg(cmd, name, doc[name], kind)
    return out


class ControlServer:
    """REP socket on a local endpoint; :meth:`poll` answers pending requests with ``handler``.

    ``handler(request) -> result`` receives a validated request (see
    :func:`parse_request`) and returns a JSON-ready result; a :class:`ControlError`
    or ``ValueError`` it raises becomes ``{"ok": false, "error": ...}``.
    """

    def __init__(
        self,
        endpoint: str,
        handler: Callable[[dict[str, Any]], Any],
        context: zmq.Context | None = None,
    ) -> None:
        check_endpoint(endpoint, "control endpoint", bind=True)
        if not is_loopback_endpoint(endpoint):
            raise ValueError(
                f"control endpoint {endpoint!r}: the control socket is local only; accepted: "
                "tcp://127.0.0.1:PORT, tcp://localhost:PORT, ipc://PATH or inproc://NAME"
            )
        self.handler = handler
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise OSError(f"cannot bind the control socket to {endpoint}: {e}") from e
        self.bound = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://"):], 0o600)  # only this user may connect
        self.handled = 0
        self.refused = 0

    def _answer(self, frames: list[bytes]) -> dict[str, Any]:
        try:
            req = parse_request(frames)
            return {"ok": True, "result": self.handler(req)}
        except ValueError as e:  # ControlError and the handler's validation errors
            self.refused += 1
            log.warning("control: refused request: %s", e)
            return {"ok": False, "error": str(e)}

    def waiting(self) -> bool:
        """Whether a request is waiting to be answered (does not answer it)."""
        return bool(self._sock.poll(0, zmq.POLLIN))

    def poll(self, timeout_ms: int = 0) -> int:
        """Answer every request waiting (waiting at most ``timeout_ms`` for the first)."""
        n = 0
        while self._sock.poll(timeout_ms if n == 0 else 0, zmq.POLLIN):
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
            reply = self._answer(frames)
            try:
                self._sock.send(json.dumps(reply, separators=(",", ":")).encode(), zmq.NOBLOCK)
            except zmq.Again:
                log.debug("control: requester gone before the reply")
            self.handled += 1
            n += 1
        return n

    def close(self) -> None:
        self._sock.close(0)


class Controllable(Protocol):
    """What the control commands need from a running detector.

    :class:`detector.pipeline.Listener` implements it; this module never imports the
    pipeline (the pipeline imports it), so the dependency runs one way. Streams are named
    by id; :class:`Commands` checks an id exists before it passes one on.
    """

    session: str

    def stream_ids(self) -> list[str]:
        """Ids of every stream, in order."""
        ...

    def stream_status(self, stream_id: str) -> dict[str, Any]:
        """State, seq, stream time, patches, open events and loss counters of one stream."""
        ...

    def open_events(self, stream_id: str) -> list[dict[str, Any]]:
        """One stream's open events as ``update`` event messages."""
        ...

    def set_paused(self, stream_id: str, paused: bool, reason: str) -> bool:
        """Pause or resume one stream, publishing ``reason`` in its status; False if unchanged."""
        ...

    def label_names(self) -> Sequence[str]:
        """The model's labels, in score order."""
        ...

    def set_thresholds(self, stream_id: str, label_index: int, on: float, off: float) -> None:
        """Set one label's hysteresis thresholds (0 <= off <= on <= 1, checked) on one stream."""
        ...

    def reload_smoother(self) -> str:
        """Re-read the config file's ``[smoother]`` section; returns the file's path.

        Raises :class:`ControlError` (or ``ValueError``) when there is none or it is invalid.
        """
        ...


class Commands:
    """Carries out validated requests on a :class:`Controllable` (the running listener).

    Called from the listener's own loop (through :meth:`ControlServer.poll`), so the
    target may change stream state directly. Raises :class:`ControlError` for a request
    that names an unknown stream or label or asks for something impossible.
    """

    def __init__(self, target: Controllable) -> None:
        self.target = target

    def _select(self, stream: str | None) -> list[str]:
        ids = self.target.stream_ids()
        if stream is None:
            return ids
        if stream not in ids:
            raise ControlError(f"no stream {stream!r}; streams: {ids}")
        return [stream]

    def __call__(self, req: dict[str, Any]) -> Any:
        cmd = req["cmd"]
        tgt = self.target
        sel = self._select(req.get("stream"))
        if cmd == "ping":
            return {"session": tgt.session, "streams": tgt.stream_ids()}
        if cmd == "status":
            return {sid: tgt.stream_status(sid) for sid in sel}
        if cmd == "snapshot":
            return {"session": tgt.session, "events": [m for sid in sel for m in tgt.open_events(sid)]}
        if cmd in ("pause", "resume"):
            return self._pause(sel, cmd == "pause")
        if cmd == "thresholds":
            return self._thresholds(sel, req["label"], req["on"], req["off"])
        if cmd == "reload":
            path = tgt.reload_smoother()
            log.info("reloaded [smoother] from %s", path)
            return {"reloaded": path}
        raise ControlError(f"unknown command {cmd!r}; accepted: {sorted(COMMANDS)}")

    def _pause(self, sel: list[str], pause: bool) -> Any:
        word = "paused" if pause else "resumed"
        changed = []
        for sid in sel:
            if self.target.set_paused(sid, pause, f"{word} by control request"):
                log.info("%s: %s by control request", sid, word)
                changed.append(sid)
        return {"changed": changed}

    def _thresholds(self, sel: list[str], label: str, on: float, off: float) -> Any:
        names = list(self.target.label_names())
        if label not in names:
            raise ControlError(f"thresholds: label {label!r} is not in the model ({len(names)} labels)")
        if not 0.0 <= off <= on <= 1.0:
            raise ControlError(f"thresholds: on={on}, off={off}; need 0 <= off <= on <= 1")
        i = names.index(label)
        for sid in sel:
            self.target.set_thresholds(sid, i, on, off)
        log.info("thresholds of %r set to on=%g off=%g by control request", label, on, off)
        return {"label": label, "on": on, "off": off, "streams": sel}


def request(
    endpoint: str, cmd: str, timeout_s: float = 2.0, context: zmq.Context | None = None, **args: Any
) -> dict[str, Any]:
    """Send one control request and return the reply ``{"ok": ..., ...}``.

    Raises ``TimeoutError`` when no reply comes within ``timeout_s`` (daemon not running).
    """
    check_endpoint(endpoint, "control endpoint")
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"cmd": cmd, **args}).encode())
        if not sock.poll(round(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply from the control socket {endpoint} within {timeout_s} s")
        reply: dict[str, Any] = json.loads(sock.recv())
        return reply
    finally:
        sock.close(0)


class SeqStore:
    """Per-stream sequence numbers kept in ``DIR/seq.json`` across daemon runs.

    ``first(stream)`` gives the first ``seq`` of this run; ``reserve(stream, seq)``
    must be called before ``seq`` reaches the reserved limit and returns the new
    limit; ``close(next_seq)`` records the exact next numbers (a clean stop, no gap).
    """

    FILE = "seq.json"

    def __init__(self, directory: str | os.PathLike[str], session: str, block: int = SEQ_BLOCK) -> None:
        if block < 1:
            raise ValueError(f"block={block}; must be >= 1")
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"--state-dir {self.dir}: exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILE
        self.session = session
        self.block = block
        self.previous: dict[str, Any] = self._load()
        self.limits: dict[str, int] = {}

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
            streams = doc["streams"]
            if not isinstance(streams, dict) or not all(
                isinstance(v, int) and v >= 0 for v in streams.values()
            ):
                raise ValueError("streams must map stream ids to seq >= 0")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"state file {self.path} is unreadable ({e}); expected the JSON that sed-listen "
                "writes there. Move it away to start the sequence numbers from 0."
            ) from e
        if not doc.get("clean", False):
            log.warning(
                "previous run %s did not stop cleanly; sequence numbers continue after its "
                "reserved block, so subscribers see the gap",
                doc.get("session"),
            )
        return dict(doc)

    @property
    def unclean(self) -> bool:
        """True when the previous run ended without a clean stop (crash, SIGKILL)."""
        return bool(self.previous) and not self.previous.get("clean", False)

    def first(self, stream: str) -> int:
        start = int(self.previous.get("streams", {}).get(stream, 0))
        self.limits[stream] = start
        return start

    def reserve(self, stream: str, seq: int) -> int:
        self.limits[stream] = seq + self.block
        self._write(self.limits, clean=False)
        return self.limits[stream]

    def close(self, next_seq: dict[str, int]) -> None:
        self._write(next_seq, clean=True)

    def _write(self, streams: dict[str, int], clean: bool) -> None:
        merged = dict(self.previous.get("streams", {}))
        merged.update(streams)
        doc = {"session": self.session, "clean": clean, "streams": merged}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".seq-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new file


def main(argv: list[str] | None = None) -> int:
    """``python -m detector.io.control [--endpoint E] CMD [name=value ...]``: one request, reply on stdout."""
    p = argparse.ArgumentParser(prog="sed-control", description="Send one command to sed-listen --control.")
    p.add_argument("--endpoint", default=DEFAULT_CONTROL_ENDPOINT)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the reply")
    p.add_argument("cmd", choices=sorted(COMMANDS))
    p.add_argument("args", nargs="*", metavar="NAME=VALUE", help="e.g. label=Dog on=0.6 off=0.4")
    a = p.parse_args(argv)
    try:
        check_endpoint(a.endpoint, "--endpoint")
    except ValueError as e:
        print(f"sed-control: error: {e}", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {}
    for item in a.args:
        name, sep, value = item.partition("=")
        if not sep:
            p.error(f"argument {item!r}; expected NAME=VALUE")
        kind = COMMANDS[a.cmd].get(name, str)
        try:
            kwargs[name] = float(value) if kind is float else value
        except ValueError:
            p.error(f"{name}={value!r}: expected a number")
    try:
        reply = request(a.endpoint, a.cmd, a.timeout, **kwargs)
    except TimeoutError as e:
        print(f"sed-control: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
