"""CURVE encryption and authentication for the event socket (pyzmq ``zmq.auth``).

Without CURVE, ``sed-listen`` binds to ``tcp://127.0.0.1`` and anyone who can reach
the port can read the events. With ``--curve-secret-key server.key_secret
--curve-allow-dir clients/`` the PUB socket is a CURVE server: traffic is encrypted,
and only subscribers whose *public* key file is in ``clients/`` complete the
handshake (a ZAP authenticator thread checks them). Keys are made with::

    python -m detector.io.security keygen keys/ --name server   # keys/server.key, keys/server.key_secret
    python -m detector.io.security keygen keys/ --name monitor  # one pair per subscriber
    mkdir clients && cp keys/monitor.key clients/             # allow that subscriber

A subscriber sets its own key pair and the server's public key
(:func:`configure_client`). See ``docs/security.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["CurveServerConfig", "configure_client", "keygen", "load_keypair", "load_public", "main",
           "start_server"]

log = logging.getLogger(__name__)

SECRET_SUFFIX = ".key_secret"
PUBLIC_SUFFIX = ".key"


def keygen(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(d), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_keypair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``.key_secret`` file made by :func:`keygen`."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"CURVE key {p}: no such file; make one with 'python -m detector.io.security keygen DIR'")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as e:
        raise ValueError(f"CURVE key {p}: not a ZeroMQ certificate ({e})") from e
    if not secret:
        raise ValueError(
            f"CURVE key {p}: holds only a public key; give the {SECRET_SUFFIX} file of the pair"
        )
    return public, secret


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The public key from a ``.key`` (or ``.key_secret``) certificate file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"CURVE public key {p}: no such file")
    try:
        public, _ = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as e:
        raise ValueError(f"CURVE public key {p}: not a ZeroMQ certificate ({e})") from e
    return bytes(public)


@dataclass(frozen=True)
class CurveServerConfig:
    """The server's key pair (``.key_secret`` file) and a directory of allowed client ``.key`` files."""

    secret_key: Path
    allow_dir: Path

    def __post_init__(self) -> None:
        load_keypair(self.secret_key)
        if not self.allow_dir.is_dir():
            raise ValueError(
                f"--curve-allow-dir {self.allow_dir}: not a directory; expected a directory of "
                f"subscribers' public {PUBLIC_SUFFIX} files"
            )
        if not self.allowed():
            raise ValueError(
                f"--curve-allow-dir {self.allow_dir}: no {PUBLIC_SUFFIX} files, so no subscriber "
                "could connect; copy each subscriber's public key there"
            )

    def allowed(self) -> list[Path]:
        return sorted(self.allow_dir.glob(f"*{PUBLIC_SUFFIX}"))


def start_server(sock: zmq.Socket[Any], ctx: zmq.Context[Any], curve: CurveServerConfig) -> ThreadAuthenticator:
    """Make ``sock`` (not yet bound) a CURVE server; returns the running authenticator.

    ``ctx`` must be a context of its own: ZeroMQ allows one authenticator per context.
    Stop the authenticator after closing the socket.
    """
    public, secret = load_keypair(curve.secret_key)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(curve.allow_dir))
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    log.info(
        "CURVE on: encrypted, %d allowed subscriber key(s) in %s",
        len(curve.allowed()), curve.allow_dir,
    )
    return auth


def configure_client(sock: zmq.Socket[Any], client_secret_key: str | os.PathLike[str],
                     server_public_key: str | os.PathLike[str]) -> None:
    """Set a subscriber's key pair and the server's public key (before ``connect``)."""
    public, secret = load_keypair(client_secret_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, load_public(server_public_key))


def main(argv: list[str] | None = None) -> int:
    """``python -m detector.io.security keygen DIR [--name NAME]``."""
    p = argparse.ArgumentParser(prog="sed-keys", description="CURVE key pairs for sed-listen and its subscribers.")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write NAME.key (public) and NAME.key_secret (secret) in DIR")
    k.add_argument("directory", type=Path)
    k.add_argument("--name", default="server", help="file name stem (default: server)")
    a = p.parse_args(argv)
    try:
        public, secret = keygen(a.directory, a.name)
    except OSError as e:
        print(f"sed-keys: error: cannot write keys in {a.directory}: {e}", file=sys.stderr)
        return 2
    print(f"public key: {public}\nsecret key: {secret} (keep it private; mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
