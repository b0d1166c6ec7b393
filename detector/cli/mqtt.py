"""``sed-mqtt``: bridge sed's ZeroMQ stream to an MQTT broker, with Home Assistant discovery.

    sed-mqtt mqtt://broker:1883                               # from sed-listen on 127.0.0.1:5557
    sed-mqtt mqtts://user@broker --password-file pw --connect tcp://hub:5559 \\
             --curve-secret-key keys/mqtt.key_secret --curve-server-key keys/server.key
    sed-mqtt mqtt://broker --label "Doorbell,Smoke detector, smoke alarm" --model yamnet

A separate process, so the detector's audio path never waits on a broker, one bridge
serves several daemons or a sed-hub, and CURVE-secured streams work with the same
options as sed-monitor. ``sed-listen --mqtt URL`` runs the same bridge in-process.
Topics and payloads: ``docs/mqtt.md``. SIGINT/SIGTERM publish what is queued, mark the
bridge offline and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from detector.cli.common import stop_on_signals
from detector.io.endpoint import check_endpoint
from detector.io.mqtt import MqttBridge, MqttConfig, MqttUrl, parse_mqtt_url
from detector.io.security import configure_client
from detector.io.wire import DEFAULT_ENDPOINT, WireError, decode
from detector.model.labels import parse_labels
from detector.model.resolve import model_labels

__all__ = ["add_broker_options", "broker_url", "build_parser", "main"]

log = logging.getLogger("sed-mqtt")

PASSWORD_ENV = "SED_MQTT_PASSWORD"


def broker_url(url: str, username: str | None = None, password_file: Path | None = None) -> MqttUrl:
    """The broker URL with credentials from ``--username``, ``--password-file`` or
    ``$SED_MQTT_PASSWORD`` (these win over ``user:password@`` in the URL)."""
    u = parse_mqtt_url(url)
    user, password = username or u.username, u.password
    if password_file is not None:
        try:
            password = password_file.read_text().splitlines()[0] if password_file.stat().st_size else ""
        except OSError as e:
            raise ValueError(f"--password-file {password_file}: {e.strerror}") from e
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    if password is not None and user is None:
        raise ValueError("an MQTT password needs a user name: --username NAME or mqtt://NAME@host")
    return MqttUrl(u.scheme, u.host, u.port, user, password)


def add_broker_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the bridge's connection to the broker."""
    p.add_argument("--username", help="broker user name (or mqtt://USER@host)")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help=f"file whose first line is the broker password (or ${PASSWORD_ENV})")
    p.add_argument("--cafile", type=Path, help="CA certificate(s) for mqtts:// (default: the system's)")
    p.add_argument("--certfile", type=Path, help="client certificate for mqtts://")
    p.add_argument("--keyfile", type=Path, help="client certificate's private key")
    p.add_argument("--insecure", action="store_true",
                   help="mqtts:// without checking the broker's host name")
    p.add_argument("--node-id", default=MqttConfig.node_id,
                   help=f"names this bridge in topics and Home Assistant ids (default {MqttConfig.node_id})")
    p.add_argument("--prefix", default=MqttConfig.prefix, help="topic prefix (default sed)")
    p.add_argument("--discovery-prefix", default=MqttConfig.discovery_prefix,
                   help="Home Assistant discovery prefix (default homeassistant)")
    p.add_argument("--label", action="append", default=[], metavar="NAMES",
                   help="labels that get a sensor, announced when its stream is first heard, "
                   "read as sed-listen --labels ('Dog,Smoke detector, smoke alarm'; '|' also "
                   "separates; repeatable; default: every label, each at its first event)")
    p.add_argument("--model", metavar="PATH|yamnet",
                   help="the model the daemons run, whose labels --label names (default: "
                   "exports/default or $SED_MODEL)")
    p.add_argument("--qos", type=int, default=MqttConfig.qos, help="MQTT QoS 0, 1 or 2 (default 1)")
    p.add_argument("--stats-interval", type=float, default=MqttConfig.stats_interval_s,
                   metavar="SECONDS", help="log and publish the bridge's counters this often")


def _labels(args: argparse.Namespace) -> tuple[str, ...]:
    """``--label`` values read as ``sed-listen --labels`` reads them, against the labels of
    ``--model`` (the bridge sees no model; it names the one the daemons run)."""
    if not args.label:
        return ()
    return parse_labels(args.label, model_labels(args.model), "--label")


def config_from_args(args: argparse.Namespace) -> MqttConfig:
    return MqttConfig(
        url=broker_url(args.broker, args.username, args.password_file),
        prefix=args.prefix, discovery_prefix=args.discovery_prefix, node_id=args.node_id,
        labels=_labels(args), qos=args.qos, cafile=args.cafile, certfile=args.certfile,
        keyfile=args.keyfile, insecure=args.insecure, stats_interval_s=args.stats_interval,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sed-mqtt",
        description="Bridge sed's events to an MQTT broker, with Home Assistant discovery.",
    )
    p.add_argument("broker", help="mqtt://[USER@]HOST[:PORT] or mqtts://... (TLS)")
    p.add_argument("--connect", action="append", default=[], metavar="ENDPOINT",
                   help=f"a sed-listen or sed-hub PUB endpoint (repeatable; default {DEFAULT_ENDPOINT})")
    p.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                   help="this bridge's CURVE .key_secret file (with --curve-server-key)")
    p.add_argument("--curve-server-key", type=Path, metavar="FILE",
                   help="the publisher's public CURVE .key file")
    add_broker_options(p)
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (stderr)")
    return p


def _subscribe(ctx: zmq.Context[Any], args: argparse.Namespace) -> zmq.Socket[Any]:
    if (args.curve_secret_key is None) != (args.curve_server_key is None):
        raise ValueError("CURVE needs both --curve-secret-key FILE and --curve-server-key FILE")
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if args.curve_secret_key is not None:
        configure_client(sock, args.curve_secret_key, args.curve_server_key)
    for topic in (b"event.", b"status."):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    for ep in args.connect or [DEFAULT_ENDPOINT]:  # checked by _run before anything connects
        try:
            sock.connect(ep)
        except zmq.ZMQError as e:
            sock.close(0)
            raise ValueError(f"--connect {ep!r}: {e}; accepted: tcp://HOST:PORT, ipc://PATH") from e
    return sock


def _run(args: argparse.Namespace) -> int:
    for ep in args.connect:  # bad input is refused before anything connects
        check_endpoint(ep, "--connect")
    config = config_from_args(args)
    stop = stop_on_signals(log, "publishing what is queued and exiting")
    ctx: zmq.Context[Any] = zmq.Context()
    sock = _subscribe(ctx, args)
    try:
        bridge = MqttBridge(config).start()
    except BaseException:
        sock.close(0)
        ctx.term()
        raise
    log.info("bridging %s -> %s", ", ".join(args.connect or [DEFAULT_ENDPOINT]), config.url)
    try:
        while not stop.is_set():
            if not sock.poll(200):
                continue
            for _ in range(1000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    _, message = decode(frames)
                except WireError as e:
                    bridge.count_ignored()
                    log.warning("dropping bad message: %s", e)
                    continue
                bridge.send(message)
    finally:
        sock.close(0)
        ctx.term()
        bridge.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from detector.cli.common import run_cli, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("sed-mqtt", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
