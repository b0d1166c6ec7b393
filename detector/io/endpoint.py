"""Checking addresses before a socket sees them: ZeroMQ endpoints and ``HOST:PORT``.

libzmq does not refuse every bad address: ``tcp://127.0.0.1:99999`` binds port 34463
(the number wraps to 16 bits) without a word. Every endpoint given on a command line,
in a config file or in a URL goes through :func:`check_endpoint` (or
:func:`check_host_port` for plain ``HOST:PORT`` addresses such as a metrics server's),
which accepts:

- ``tcp://HOST:PORT``: a host (name, IPv4, ``[IPv6]``, an interface, or ``*`` to bind
  every interface) and a port 1-65535 (``*`` or ``0``: any free port, when binding;
  the bound address is logged);
- ``ipc://PATH`` and ``inproc://NAME``: a path or name that is not empty.

Anything else raises ``ValueError`` with one line that says what was received and
what is accepted.
"""

from __future__ import annotations

__all__ = ["ACCEPTED", "SCHEMES", "check_endpoint", "check_host_port"]

SCHEMES = ("tcp", "ipc", "inproc")
ACCEPTED = "accepted: tcp://HOST:PORT (port 1-65535), ipc://PATH or inproc://NAME"
MAX_PORT = 65535


def _host_port(text: str, what: str, accepted: str, any_port: bool) -> tuple[str, int | None]:
    """``HOST:PORT`` (``[V6]:PORT``) -> ``(host, port)``; port None for ``*``."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"{what}: IPv6 host needs [ADDRESS]:PORT; {accepted}")
        host, port_text = text[1:close], text[close + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{what}: no port; {accepted}")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{what}: {'no host' if not host else f'bad host {host!r}'}; {accepted}")
    if port_text in ("*", "0") and any_port:
        return host, None
    if not port_text.isdigit():
        raise ValueError(f"{what}: port {port_text!r} is not a number; {accepted}")
    port = int(port_text)
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"{what}: port {port} is out of range; {accepted}")
    return host, port


def check_endpoint(endpoint: str, what: str = "endpoint", *, bind: bool = False) -> str:
    """``endpoint`` unchanged if ZeroMQ can use it as meant, else ``ValueError``.

    ``what`` names the option or key in the message (``"--publish"``). ``bind``: the
    endpoint is bound, so ``tcp://HOST:*`` and ``tcp://HOST:0`` (any free port) are accepted.
    """
    label = f"{what} {endpoint!r}"
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"{label}: no scheme; {ACCEPTED}")
    scheme, rest = endpoint.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError(f"{label}: scheme {scheme!r}; {ACCEPTED}")
    if not rest.strip():
        raise ValueError(f"{label}: nothing after {scheme}://; {ACCEPTED}")
    if scheme == "tcp":
        _host_port(rest, label, ACCEPTED, any_port=bind)
    return endpoint


def check_host_port(address: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) -> ``(host, port)`` with port 1-65535, else
    ``ValueError``."""
    accepted = "accepted: HOST:PORT with a port 1-65535 (e.g. 127.0.0.1:9108)"
    label = f"{what} {address!r}"
    host, port = _host_port(str(address), label, accepted, any_port=False)
    if port is None:  # not reached: '*' is refused without any_port
        raise ValueError(f"{label}: no port; {accepted}")
    return host, port
