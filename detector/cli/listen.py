"""``sed-listen``: detect sound events on microphones, files and stdin; publish them.

    sed-listen                          # default microphone
    sed-listen mic:USB --json | jq .    # a named input device, events as JSON lines
    sed-listen a.wav b.flac mic:default # several streams, one batched model
    arecord -f S16_LE -r 16000 | sed-listen -   # raw PCM on stdin
    sed-listen rtsp://cam.local/stream  # a network stream via ffmpeg (rtsp, rtmp, http, srt, udp)
    sed-listen --workers 2 SOURCE...    # many streams: one process per core, one endpoint

SIGINT/SIGTERM close every open event with an offset, flush the sockets and exit 0.

Reliability and security (``docs/reliability.md``, ``docs/security.md``):

    sed-listen --control                      # local REQ/REP control socket (pause, snapshot, ...)
    sed-listen --state-dir /var/lib/sed       # seq continues across restarts; a crash shows as a gap
    sed-listen --publish tcp://0.0.0.0:5557 --curve-secret-key keys/server.key_secret \
               --curve-allow-dir keys/allowed # encrypted, only allowed subscribers

Clips and metrics (``docs/wire.md``, ``docs/metrics.md``):

    sed-listen --clips clips/ --clips-max-mb 500 --clips-max-age 7d  # each event as FLAC + JSON
    sed-listen --metrics                      # Prometheus /metrics on 127.0.0.1:9108
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.cli.common import run_cli, setup_logging, signals_set
from detector.config import SecurityConfig, load_config
from detector.io.clips import ClipConfig, ClipWriter, parse_age
from detector.io.control import DEFAULT_CONTROL_ENDPOINT
from detector.io.endpoint import check_endpoint
from detector.io.publisher import JsonLinesSink, Sink, ZmqPublisher
from detector.io.security import CurveServerConfig
from detector.model.labels import choose_event_labels, parse_labels
from detector.model.resolve import load_scorer
from detector.model.scorer import DEVICES
from detector.pipeline import FailedSource, Listener, hop_frames_for
from detector.sources import parse as sources_mod
from detector.sources.net import is_url, redact_url
from detector.sources.parse import Source

if TYPE_CHECKING:
    from detector.io.metrics import MetricsServer

__all__ = ["build_parser", "main"]

log = logging.getLogger("sed-listen")

MANY_LIVE_FOR_WORKERS = 1000
"""Live streams past which one process suggests ``--workers`` (docs/benchmarks.md: one process
sustains 1,260-1,764 on two cores, two processes 2,016)."""

SHUTDOWN_LINGER_MS = 200
"""How long closing the PUB socket may wait to deliver the final offsets: plenty on a
working link (< 1 ms on loopback), short enough that a stuck subscriber cannot hold
SIGTERM past its 1-s budget (it loses those messages instead)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sed-listen",
        description="Streaming sound event detection; events over ZeroMQ and as JSON lines.",
    )
    p.add_argument(
        "sources", nargs="*", metavar="SOURCE",
        help="audio file, 'mic', 'mic:NAME_OR_INDEX', '-' for raw PCM on stdin, or a network URL "
        "read with ffmpeg (rtsp://, rtmp://, http(s)://, srt://, udp://) (default: the default microphone)",
    )
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="an audio file (repeatable)")
    p.add_argument("--mic", metavar="NAME", help="input device name or index (see --list-devices)")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    add_model_options(p)
    p.add_argument("--device", choices=DEVICES, help="inference device: cpu, cuda or auto (default cpu)")
    p.set_defaults(in_worker=False)  # True in a --workers worker (detector/cli/workers.py), never a flag
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="share the streams out over N processes, one per core, behind one publish endpoint "
                   "(for more than ~1,000 live streams; default 1)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: onnxruntime's choice with up to 8 live streams, 1 with more)")
    p.add_argument("--config", type=Path, help="TOML config ([listen], [smoother] sections)")
    p.add_argument("--publish", metavar="ENDPOINT", help="ZeroMQ PUB endpoint (default tcp://127.0.0.1:5557)")
    p.add_argument("--no-publish", action="store_true", help="do not open a ZeroMQ socket")
    p.add_argument("--json", action="store_true", help="write events as JSON lines on stdout")
    p.add_argument("--json-all", action="store_true", help="write every message (scores, status too)")
    p.add_argument("--hop", type=float, dest="patch_hop_s", metavar="SECONDS", help="patch hop, for every source (default 0.48 s for files and stdin, 0.24 s for live sources)")
    p.add_argument("--top-k", type=int, help="labels per scores message (default 5)")
    p.add_argument("--realtime", action="store_true", default=None, help="pace files to the wall clock")
    p.add_argument("--allow-truncated", action="store_true",
                   help="read the audio that is there in a WAV cut short (default: refuse it)")
    p.add_argument("--stdin-rate", type=int, default=16000, help="sample rate of raw PCM on stdin")
    p.add_argument("--stdin-channels", type=int, default=1, help="channels of raw PCM on stdin")
    p.add_argument("--stdin-format", choices=("s16le", "f32le"), default="s16le", help="raw PCM sample format")
    p.add_argument(
        "--control", nargs="?", const=DEFAULT_CONTROL_ENDPOINT, metavar="ENDPOINT",
        help=f"open the local control socket (default endpoint {DEFAULT_CONTROL_ENDPOINT}; "
        "loopback, ipc:// or inproc:// only)",
    )
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="keep per-stream sequence numbers here across restarts")
    p.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                   help="server .key_secret file: encrypt and authenticate the event socket (CURVE)")
    p.add_argument("--curve-allow-dir", type=Path, metavar="DIR",
                   help="directory of allowed subscribers' public .key files (with --curve-secret-key)")
    p.add_argument("--mqtt", metavar="URL",
                   help="also publish events and Home Assistant sensors to this MQTT broker "
                   "(mqtt://[USER@]HOST[:PORT] or mqtts://; password in $SED_MQTT_PASSWORD; "
                   "docs/mqtt.md; sed-mqtt has every option)")
    p.add_argument("--mqtt-label", action="append", default=[], metavar="NAMES",
                   help="with --mqtt: labels that get a sensor, read as --labels (repeatable; "
                   "default: each label at its first event)")
    p.add_argument("--mqtt-node-id", default="sed", metavar="ID",
                   help="with --mqtt: names this daemon in topics and Home Assistant ids")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (stderr)")
    _add_recording_args(p)
    return p


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The model and which of its labels raise events (grouped: other options go elsewhere)."""
    p.add_argument("--model", metavar="PATH|yamnet",
                   help="ONNX model from sed-export (default: exports/default), or 'yamnet' for "
                   "the cached YAMNet (521 classes; fetch it with sed-bench fetch-yamnet)")
    p.add_argument("--labels", action="append", metavar="NAMES",
                   help="labels that raise events, e.g. 'Dog,Glass,Smoke detector, smoke alarm' "
                   "(names contain commas, so they are matched against the model's labels, longest "
                   "first; '|' also separates; repeatable). Default: [listen] labels, else the "
                   "model's default set. Scores are still published for every label")
    p.add_argument("--list-labels", action="store_true",
                   help="print the model's labels, one a line, with a tab and 'events' after "
                   "each that raises events, and exit")


def _add_recording_args(p: argparse.ArgumentParser) -> None:
    """Event clips and Prometheus metrics (issue 22), kept in one group."""
    g = p.add_argument_group("event clips and metrics")
    d = ClipConfig(Path("."))  # the defaults, stated once in ClipConfig
    g.add_argument("--clips", type=Path, metavar="DIR",
                   help="write each event's audio here as FLAC with a JSON sidecar; the offset "
                   "message carries the clip's path")
    g.add_argument("--clip-pre", type=float, metavar="SECONDS",
                   help=f"audio kept before the onset (default {d.pre_s:g})")
    g.add_argument("--clip-post", type=float, metavar="SECONDS",
                   help=f"audio kept after the offset (default {d.post_s:g})")
    g.add_argument("--clip-max", type=float, metavar="SECONDS",
                   help=f"longest event part of a clip; longer events are cut (default {d.max_s:g})")
    g.add_argument("--clips-max-mb", type=float, metavar="MB",
                   help=f"delete the oldest clips beyond this total size (default {(d.max_bytes or 0) / 2**20:g})")
    g.add_argument("--clips-max-age", metavar="AGE",
                   help="delete clips older than this: 7d, 12h, 30m, or seconds (default: keep)")
    g.add_argument("--metrics", nargs="?", const="", metavar="HOST:PORT",
                   help="serve Prometheus /metrics (on 127.0.0.1:9108 when no address is given; "
                   "docs/metrics.md)")


def _clip_config(args: argparse.Namespace) -> ClipConfig | None:
    if args.clips is None:
        stray = [f for f, v in (("--clip-pre", args.clip_pre), ("--clip-post", args.clip_post),
                                ("--clip-max", args.clip_max), ("--clips-max-mb", args.clips_max_mb),
                                ("--clips-max-age", args.clips_max_age)) if v is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} set(s) how clips are kept, but --clips DIR is not given")
        return None
    given: dict[str, Any] = {"pre_s": args.clip_pre, "post_s": args.clip_post, "max_s": args.clip_max}
    if args.clips_max_mb is not None:
        if not 0 < args.clips_max_mb < 2**40:
            raise ValueError(f"--clips-max-mb {args.clips_max_mb:g}; accepted: a size > 0 MB")
        given["max_bytes"] = round(args.clips_max_mb * 2**20)
    if args.clips_max_age is not None:
        given["max_age_s"] = parse_age(args.clips_max_age)
    return ClipConfig(args.clips, **{k: v for k, v in given.items() if v is not None})


def _unique_ids(srcs: list[Source]) -> None:
    counts = Counter(s.stream_id for s in srcs)
    seen: Counter[str] = Counter()
    for s in srcs:
        if counts[s.stream_id] > 1:
            seen[s.stream_id] += 1
            s.stream_id = f"{s.stream_id}#{seen[s.stream_id]}"


def _spec_id(spec: str) -> str:
    """The stream id a source would have had (for reporting one that failed to open)."""
    text = spec.strip()
    if text == "mic" or text.startswith("mic:"):
        return f"mic:{text[4:] or 'default'}"
    if text in ("-", "stdin"):
        return "stdin"
    if is_url(text):
        return redact_url(text)
    return os.path.basename(text) or text


def _specs(args: argparse.Namespace) -> list[str]:
    """The source specs given (a microphone when none)."""
    specs = list(args.sources) + list(args.file)
    if args.mic is not None:
        specs.append(f"mic:{args.mic}")
    return specs or ["mic"]


def _make_sources(args: argparse.Namespace, rate: int, realtime: bool) -> list[Source]:
    """One source per spec. With several, one that fails to open becomes a
    :class:`FailedSource` (reported on its ``status.<stream>``) and the others go on;
    a single failing source, or all failing, is an error. A ``--workers`` worker's sources
    are some of the command's, so even its only one fails as one of several."""
    specs = _specs(args)
    one_of_several = len(specs) > 1 or args.in_worker
    srcs: list[Source] = []
    errors: list[ValueError] = []
    for spec in specs:
        try:
            srcs.append(
                sources_mod.parse_source(
                    spec, rate, realtime=realtime, stdin_rate=args.stdin_rate,
                    stdin_channels=args.stdin_channels, stdin_format=args.stdin_format,
                    allow_truncated=args.allow_truncated,
                )
            )
        except sources_mod.SourceError as e:
            if not one_of_several:
                raise
            log.error("%s: %s (this stream is closed; the others go on)", spec, e)
            errors.append(e)
            srcs.append(FailedSource(_spec_id(spec), rate, e))
    if len(errors) == len(specs) and not args.in_worker:
        raise errors[0]
    _unique_ids(srcs)
    return srcs


def _check_workers(args: argparse.Namespace) -> None:
    """``--workers N``: N >= 1, and none of the options a worker process cannot share."""
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}; accepted: 1 or more processes")
    if args.workers == 1:
        return
    from detector.cli.workers import refused_with_workers

    refused = refused_with_workers(args)
    if refused:
        raise ValueError(
            f"--workers {args.workers} cannot be combined with {', '.join(refused)}: each worker process "
            "holds its own streams, so these would each exist once per worker; run one sed-listen "
            "per process instead (accepted with --workers: sources, --publish, --json, --json-all, "
            "--clips, --metrics, --model, --labels, --config, --hop, --device, --threads)"
        )
    stdin = [s for s in _specs(args) if s.strip() in ("-", "stdin")]
    if stdin:
        raise ValueError(f"--workers {args.workers} cannot read stdin ('{stdin[0]}'): only one process can; "
                         "run it in a sed-listen of its own")


def _curve(args: argparse.Namespace, sec: SecurityConfig) -> CurveServerConfig | None:
    """CURVE settings from the flags, else from the config's [security] section."""
    key = args.curve_secret_key or (Path(sec.curve_secret_key) if sec.curve_secret_key else None)
    allow = args.curve_allow_dir or (Path(sec.curve_allow_dir) if sec.curve_allow_dir else None)
    if (key is None) != (allow is None):
        raise ValueError(
            "CURVE needs both --curve-secret-key FILE and --curve-allow-dir DIR (or curve_secret_key "
            "and curve_allow_dir in [security]); got only "
            + ("the secret key" if key else "the allow directory")
        )
    if key is None or allow is None:
        return None
    if args.no_publish:
        raise ValueError("--curve-* secures the event socket, but --no-publish turns it off")
    return CurveServerConfig(key, allow)


def _mqtt_sink(args: argparse.Namespace, names: list[str]) -> Sink:
    """The MQTT bridge in-process: its own threads and bounded queue, so a slow or absent
    broker never holds up the audio path (drops are counted and logged)."""
    from detector.cli.mqtt import broker_url
    from detector.io.mqtt import MqttBridge, MqttConfig

    labels = parse_labels(args.mqtt_label, names, "--mqtt-label") if args.mqtt_label else ()
    config = MqttConfig(url=broker_url(args.mqtt), node_id=args.mqtt_node_id, labels=labels)
    bridge = MqttBridge(config).start()
    log.info("MQTT to %s (Home Assistant discovery under %s/)", config.url, config.discovery_prefix)
    return bridge


def _run(args: argparse.Namespace) -> int:
    if args.list_devices:
        print(sources_mod.list_devices())
        return 0
    # Addresses are checked before any model or device is opened (libzmq would wrap
    # tcp://127.0.0.1:99999 to port 34463 without a word).
    if args.publish is not None:
        check_endpoint(args.publish, "--publish", bind=True)
    if args.control is not None:
        check_endpoint(args.control, "--control", bind=True)
    _check_workers(args)
    config = load_config(
        args.config,
        {
            "patch_hop_s": args.patch_hop_s, "live_patch_hop_s": args.patch_hop_s, "device": args.device,
            "threads": args.threads,
            "top_k": args.top_k, "realtime": args.realtime, "endpoint": args.publish,
            "labels": args.labels,
        },
    )
    lc = config.listen
    curve = _curve(args, config.security)
    if curve is not None and args.workers > 1:
        raise ValueError(f"--workers {args.workers} with CURVE (the config's [security] section) is not "
                         "supported: run one sed-listen per process, each with its own keys")
    if args.mqtt:  # a bad URL is refused before any model or device is opened
        from detector.io.mqtt import parse_mqtt_url

        parse_mqtt_url(args.mqtt)
    clip_config = _clip_config(args)  # bad clip settings or metrics address: refused here too
    if args.metrics is not None:
        from detector.io.metrics import DEFAULT_METRICS_ADDRESS, parse_metrics_address

        args.metrics = args.metrics or DEFAULT_METRICS_ADDRESS
        parse_metrics_address(args.metrics)
        if args.workers > 1:
            from detector.cli.workers import check_metrics_ports

            check_metrics_ports(args.metrics, args.workers)
    n_live = sum(sources_mod.is_live_spec(spec, lc.realtime) for spec in _specs(args))
    cores = os.cpu_count() or 1
    if args.workers == 1 and n_live > MANY_LIVE_FOR_WORKERS and cores > 1:
        log.info("%d live streams in one process: past ~%d its Python loop, not the cores, is the limit; "
                 "--workers %d shares them out over one process per core", n_live, MANY_LIVE_FOR_WORKERS, cores)
    scorer = load_scorer(args.model, lc.device, lc.threads_for(n_live), lc.max_batch)
    for hop in {lc.hop_for(False), lc.hop_for(True)}:
        hop_frames_for(hop, scorer)  # reject a bad hop before opening any device
    c = scorer.contract  # reject unknown label names before opening any device
    what = "--labels" if args.labels else "[listen] labels"
    events = choose_event_labels(c.names, c.event_labels, lc.labels, what)
    if args.mqtt_label:
        parse_labels(args.mqtt_label, c.names, "--mqtt-label")
    if args.list_labels:
        chosen = set(events)
        print("\n".join(n + ("\tevents" if n in chosen else "") for n in c.names))
        return 0
    log.info("events for %d of %d labels%s", len(events), len(c.names),
             f" ({', '.join(events)})" if len(events) <= 10 else "")
    if args.workers > 1 and len(_specs(args)) == 1:
        log.info("--workers %d with one source: it runs in this process", args.workers)
    if args.workers > 1 and len(_specs(args)) > 1:
        from detector.cli.workers import run_workers, shard

        specs = _specs(args)
        del scorer  # each worker loads its own
        return run_workers(args, config, shard(specs, [_spec_id(s) for s in specs], args.workers), _run)
    srcs = _make_sources(args, scorer.contract.features.sample_rate, lc.realtime)
    sinks: list[Sink] = []
    clips: ClipWriter | None = None
    if args.json or args.json_all:
        kinds = ("event", "scores", "status") if args.json_all else ("event",)
        sinks.append(JsonLinesSink(sys.stdout, kinds))
    try:
        metrics: MetricsServer | None = None
        if args.metrics:
            from detector.io.metrics import MetricsServer

            metrics = MetricsServer(args.metrics)
            sinks.append(metrics)
            log.info("metrics on %s", metrics.url)
        if clip_config is not None:
            clips = ClipWriter(clip_config)
            log.info("event clips in %s", clips.directory)
        if args.mqtt:
            sinks.append(_mqtt_sink(args, scorer.contract.names))
        if not args.no_publish:
            pub = ZmqPublisher(lc.endpoint, hwm=lc.hwm, linger_ms=SHUTDOWN_LINGER_MS, curve=curve)
            log.info("publishing on %s%s", pub.bound, " (CURVE)" if curve else "")
            sinks.append(pub)
        listener = Listener(
            srcs, sinks, config, scorer=scorer, control_endpoint=args.control,
            state_dir=args.state_dir, config_path=args.config, clips=clips,
            latency_observer=metrics.observe_latency if metrics is not None else None,
        )
    except BaseException:
        if clips is not None:
            clips.close()
        for sink in sinks:
            sink.close()
        for src in srcs:
            src.close()
        raise
    if listener.control is not None:
        log.info("control socket on %s", listener.control.bound)
    stop = threading.Event()
    try:
        with signals_set(stop, log, "closing open events and exiting"):
            listener.run(stop)
    finally:
        if clips is not None:
            clips.close()  # writes the clips still queued (the final offsets' too)
        for sink in sinks:
            sink.close()
    failed = [st for st in listener.streams if st.error]
    if failed and len(failed) == len(listener.streams):
        if len(failed) == 1:
            raise RuntimeError(failed[0].error)
        raise RuntimeError("every stream failed: " + "; ".join(f"{st.id}: {st.error}" for st in failed))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("sed-listen", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
