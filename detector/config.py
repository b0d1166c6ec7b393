"""Runtime configuration: frozen dataclasses filled from one TOML file.

Example ``sed.toml``::

    [listen]
    patch_hop_s = 0.48        # seconds between patch starts (files, stdin)
    # live_patch_hop_s = 0.24 # live sources; unset: 0.1 s for <= 8 live streams, else patch_hop_s
    # lead_in = false         # no patches before the first 0.96 s of a stream (README)
    endpoint = "tcp://127.0.0.1:5557"
    top_k = 5
    labels = ["Dog", "Glass", "Smoke detector, smoke alarm"]  # raise events for these only

    [smoother]                # defaults for every label (detector.decide.smoother.LabelPolicy)
    method = "ema"
    ema_tau_s = 0.25
    hold_s = 0.5

    [smoother.labels."Dog"]   # per-label overrides by AudioSet display name
    on = 0.6
    debounce_s = 0.2

    [security]                # CURVE on the event socket (docs/security.md)
    curve_secret_key = "keys/server.key_secret"
    curve_allow_dir = "keys/allowed"

Unknown keys and wrong types are errors that name them. Model-specific values
(labels, features, thresholds) come from the model, never from here.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.decide.smoother import LabelPolicy, SmootherConfig
from detector.io.endpoint import check_endpoint

__all__ = ["FEW_LIVE_STREAMS", "LIVE_FINE_HOP_S", "Config", "ListenConfig", "SecurityConfig", "load_config"]

LIVE_FINE_HOP_S = 0.1
"""Automatic live hop for a process with few live streams: onset latency p50 ~0.26 s
(0.12 s: ~0.30 s; 0.24 s: ~0.40 s) at ~2 % of a core per stream (docs/benchmarks.md)."""
FEW_LIVE_STREAMS = 8
"""Up to this many live streams get LIVE_FINE_HOP_S; more get patch_hop_s."""


@dataclass(frozen=True)
class ListenConfig:
    """Daemon settings. Times in seconds."""

    # 0.48 s: half-overlapping patches. See README "Choosing the patch hop" for the
    # latency/CPU trade-off measured on a 2-core machine.
    patch_hop_s: float = 0.48
    # Live sources (microphone, network streams, real-time replay). None = automatic:
    # LIVE_FINE_HOP_S when the process has at most FEW_LIVE_STREAMS live streams (an
    # onset waits on average half a hop for the patch that holds it, and one stream at
    # 0.1 s costs ~2 % of a core), else patch_hop_s (inference for thousands of
    # streams). docs/benchmarks.md has the figures. `sed-listen --hop` sets both.
    live_patch_hop_s: float | None = None
    # Lead-in patches (detector.frontend.patcher): every hop of a stream's first 0.96 s from
    # 0.4 s on is scored too, silence before the audio so far, so a sound already going on
    # when the stream starts is heard after ~0.4 s rather than after a whole patch.
    lead_in: bool = True
    endpoint: str = "tcp://127.0.0.1:5557"
    top_k: int = 5
    scores: bool = True  # publish scores.<stream> at every hop
    update_interval_s: float = 1.0
    status_interval_s: float = 1.0
    file_chunk_s: float = 2.0  # samples read per file per loop (bounds memory and latency)
    live_poll_s: float = 0.005  # idle wait between ring-buffer polls
    max_batch: int = 256
    device: str = "cpu"
    # onnxruntime intra-op threads; 0 = automatic: onnxruntime's choice (every core) with up
    # to FEW_LIVE_STREAMS live streams, batches under SMALL_BATCH on one thread
    # (detector.model.scorer), else 1 (the front end and the decisions of many streams keep
    # the other cores busy; one thread costs ~15 % less CPU a patch).
    threads: int = 0
    realtime: bool = False  # pace file sources to the wall clock
    hwm: int = 10000  # ZeroMQ send high-water mark (messages)
    # A live source (microphone, real-time replay) more than this far behind loses its
    # oldest audio, counted as an overrun: memory stays bounded when the model is slow.
    max_backlog_s: float = 5.0
    # The labels that raise events (names as detector.model.labels.parse_labels reads them:
    # a list, or one string "Dog,Glass" / "Dog|Glass"); None: the model's event_labels.
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.patch_hop_s <= 0:
            raise ValueError(f"patch_hop_s={self.patch_hop_s}; must be > 0")
        if self.live_patch_hop_s is not None and self.live_patch_hop_s <= 0:
            raise ValueError(f"live_patch_hop_s={self.live_patch_hop_s}; must be > 0")
        for name in ("update_interval_s", "status_interval_s", "file_chunk_s", "live_poll_s", "max_backlog_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}; must be > 0")
        check_endpoint(self.endpoint, "[listen] endpoint", bind=True)
        if self.top_k < 1 or self.max_batch < 1:
            raise ValueError(f"top_k={self.top_k}, max_batch={self.max_batch}; both must be >= 1")


    def hop_for(self, live: bool, live_streams: int = 1) -> float:
        """The patch hop (seconds) of a live or a file/stdin source, in a process with
        ``live_streams`` live streams."""
        if not live:
            return self.patch_hop_s
        if self.live_patch_hop_s is not None:
            return self.live_patch_hop_s
        return LIVE_FINE_HOP_S if live_streams <= FEW_LIVE_STREAMS else self.patch_hop_s

    def threads_for(self, live_streams: int) -> int:
        """onnxruntime intra-op threads in a process with ``live_streams`` live streams (0:
        onnxruntime's choice)."""
        if self.threads or live_streams <= FEW_LIVE_STREAMS:
            return self.threads
        return 1


@dataclass(frozen=True)
class SecurityConfig:
    """CURVE for the event socket (docs/security.md): both paths, or neither."""

    curve_secret_key: str | None = None  # the daemon's .key_secret file
    curve_allow_dir: str | None = None  # directory of allowed subscribers' public .key files


@dataclass(frozen=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def _check_type(section: str, name: str, value: Any, annotation: Any) -> Any:
    hint = annotation
    allowed: tuple[type, ...]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        allowed = tuple(a for a in typing.get_args(hint) if a is not type(None))
        if value is None:
            return None
    else:
        allowed = (hint,)
    if tuple[str, ...] in allowed and isinstance(value, str | list | tuple):
        items = [value] if isinstance(value, str) else list(value)
        if all(isinstance(v, str) for v in items):
            return tuple(items)
        raise ValueError(f"[{section}] {name} = {value!r}; expected a list of strings")
    if tuple[str, ...] in allowed:
        raise ValueError(
            f"[{section}] {name} = {value!r} ({type(value).__name__}); expected a list of strings"
        )
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed):
        return value
    names = " or ".join(t.__name__ for t in allowed)
    raise ValueError(f"[{section}] {name} = {value!r} ({type(value).__name__}); expected {names}")


def _build(cls: type, section: str, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"[{section}] unknown key(s) {unknown}; accepted: {sorted(known)}")
    return cls(**{k: _check_type(section, k, v, hints[k]) for k, v in data.items()})


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (TOML) if given, then apply ``overrides`` to ``[listen]``."""
    doc: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except FileNotFoundError as e:
            raise ValueError(f"config {p}: no such file") from e
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {p}: not valid TOML ({e})") from e
    sections = ["listen", "security", "smoother"]
    unknown = sorted(set(doc) - set(sections))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; accepted: {sections}")
    listen_doc = dict(doc.get("listen", {}))
    listen_doc.update({k: v for k, v in (overrides or {}).items() if v is not None})
    listen = _build(ListenConfig, "listen", listen_doc)
    smoother_doc = dict(doc.get("smoother", {}))
    per_label = smoother_doc.pop("labels", {})
    default = _build(LabelPolicy, "smoother", smoother_doc)
    hints = typing.get_type_hints(LabelPolicy)
    labels: dict[str, dict[str, Any]] = {}
    for name, over in per_label.items():
        if not isinstance(over, dict):
            raise ValueError(f"[smoother.labels.{name!r}] must be a table; got {over!r}")
        section = f"smoother.labels.{name!r}"
        known = set(hints)
        bad = sorted(set(over) - known)
        if bad:
            raise ValueError(f"[{section}] unknown key(s) {bad}; accepted: {sorted(known)}")
        labels[name] = {k: _check_type(section, k, v, hints[k]) for k, v in over.items()}
        dataclasses.replace(default, **labels[name])  # validate values now, not at start-up
    security = _build(SecurityConfig, "security", dict(doc.get("security", {})))
    return Config(
        listen=listen, smoother=SmootherConfig(default=default, labels=labels), security=security
    )
