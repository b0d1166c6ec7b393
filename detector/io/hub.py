"""``sed-hub``: fan many ``sed-listen`` daemons into one ZeroMQ stream.

    sed-hub --listen tcp://0.0.0.0:5558 --publish tcp://0.0.0.0:5559 \\
            --connect tcp://mic-host-1:5557 --connect tcp://mic-host-2:5557

A thin forwarder on ZeroMQ's own XSUB/XPUB proxy (``zmq.proxy``): the XSUB side
*connects* to each daemon's PUB endpoint (``--connect``) and/or *binds* an endpoint
that daemons connect their PUB sockets to (``--listen``); the XPUB side binds
``--publish``, where ``sed-monitor`` and other consumers subscribe. Subscriptions
travel upstream, so a consumer that asks only for ``event.`` makes each daemon
send only events. Messages are forwarded untouched (the wire format's ``stream``
and ``session`` fields already say where each came from); nothing is decoded.

The hub keeps no state and adds no delivery guarantee: like any PUB/SUB hop, a
slow consumer loses its own messages once the high-water mark fills.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import zmq

from detector.io.endpoint import check_endpoint
from detector.io.publisher import is_loopback_endpoint

__all__ = ["Hub", "HubConfig", "build_parser", "main"]

log = logging.getLogger("sed-hub")

DEFAULT_PUBLISH = "tcp://127.0.0.1:5559"


@dataclass(frozen=True)
class HubConfig:
    """Endpoints and queue sizes of one hub.

    ``upstream``: daemon PUB endpoints the hub connects to; ``listen``: endpoints the
    hub binds for daemons to connect to; ``publish``: endpoints consumers subscribe
    to. ``hwm`` is the per-socket high-water mark in messages.
    """

    publish: tuple[str, ...] = (DEFAULT_PUBLISH,)
    upstream: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()
    hwm: int = 100_000

    def __post_init__(self) -> None:
        if not self.upstream and not self.listen:
            raise ValueError(
                "a hub needs at least one upstream: --connect ENDPOINT (a sed-listen PUB "
                "endpoint) or --listen ENDPOINT (daemons connect to it)"
            )
        if not self.publish:
            raise ValueError("a hub needs at least one --publish endpoint for consumers")
        for ep in self.publish:
            check_endpoint(ep, "--publish", bind=True)
        for ep in self.listen:
            check_endpoint(ep, "--listen", bind=True)
        for ep in self.upstream:
            check_endpoint(ep, "--connect")
        if self.hwm < 1:
            raise ValueError(f"hwm={self.hwm}; must be >= 1")


class Hub:
    """XSUB (upstream) -> XPUB (downstream) proxy, run in a thread or in the foreground.

    Sockets are created and bound in ``__init__`` so bind errors surface at once, and
    ``bound`` lists the actual endpoints (useful with ``tcp://127.0.0.1:*``).
    """

    def __init__(self, config: HubConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self._ctx = context or zmq.Context.instance()
        self._xsub = self._ctx.socket(zmq.XSUB)
        self._xpub = self._ctx.socket(zmq.XPUB)
        self._ctrl_addr = f"inproc://sed-hub-control-{id(self)}"
        self._ctrl = self._ctx.socket(zmq.PAIR)
        self._ctrl.bind(self._ctrl_addr)
        self._thread: threading.Thread | None = None
        self.bound_publish: list[str] = []
        self.bound_listen: list[str] = []
        try:
            self._xsub.setsockopt(zmq.RCVHWM, config.hwm)
            self._xpub.setsockopt(zmq.SNDHWM, config.hwm)
            self._xsub.setsockopt(zmq.LINGER, 0)
            self._xpub.setsockopt(zmq.LINGER, 0)
            for ep in config.publish:
                self.bound_publish.append(self._bind(self._xpub, ep, "publish"))
            for ep in config.listen:
                self.bound_listen.append(self._bind(self._xsub, ep, "listen"))
            for ep in config.upstream:
                self._xsub.connect(ep)
        except (zmq.ZMQError, OSError):
            self.close()
            raise

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str, role: str) -> str:
        if not is_loopback_endpoint(endpoint):
            log.warning(
                "%s endpoint %s is reachable beyond this machine, unencrypted and "
                "unauthenticated",
                role,
                endpoint,
            )
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            raise OSError(f"cannot bind the hub's {role} socket to {endpoint}: {e}") from e
        return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def run(self) -> None:
        """Forward until :meth:`stop` (blocks)."""
        ctrl = self._ctx.socket(zmq.PAIR)
        ctrl.connect(self._ctrl_addr)
        log.info(
            "forwarding %s -> %s",
            ", ".join([*self.config.upstream, *self.bound_listen]),
            ", ".join(self.bound_publish),
        )
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, ctrl)
        except zmq.ContextTerminated:
            pass
        finally:
            ctrl.close(0)

    def start(self) -> Hub:
        """Run in a daemon thread; returns ``self``."""
        self._thread = threading.Thread(target=self.run, name="sed-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Terminate the proxy (from any thread) and close the sockets."""
        if self._thread is not None:
            try:
                self._ctrl.send(b"TERMINATE", flags=zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.debug("hub control: %s", e)
            self._thread.join(timeout=5.0)
            self._thread = None
        self.close()

    def close(self) -> None:
        for sock in (self._xsub, self._xpub, self._ctrl):
            if not sock.closed:
                sock.close(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sed-hub",
        description="Fan many sed-listen daemons into one ZeroMQ stream (XSUB/XPUB proxy).",
    )
    p.add_argument(
        "--connect", action="append", default=[], metavar="ENDPOINT",
        help="a sed-listen PUB endpoint to pull from (repeatable)",
    )
    p.add_argument(
        "--listen", action="append", default=[], metavar="ENDPOINT",
        help="bind this endpoint for daemons that connect to the hub (repeatable)",
    )
    p.add_argument(
        "--publish", action="append", default=[], metavar="ENDPOINT",
        help=f"endpoint consumers subscribe to (repeatable; default {DEFAULT_PUBLISH})",
    )
    p.add_argument("--hwm", type=int, default=HubConfig.hwm, help="high-water mark per socket (messages)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (stderr)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from detector.cli.common import run_cli, setup_logging, stop_on_signals

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)

    def run() -> int:
        config = HubConfig(
            publish=tuple(args.publish) or (DEFAULT_PUBLISH,),
            upstream=tuple(args.connect),
            listen=tuple(args.listen),
            hwm=args.hwm,
        )
        hub = Hub(config)
        stop = stop_on_signals(log, "stopping")
        hub.start()
        while not stop.wait(0.2):
            pass
        hub.stop()
        return 0

    return run_cli("sed-hub", run)


if __name__ == "__main__":
    sys.exit(main())
