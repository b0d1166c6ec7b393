"""A scripted sed-listen stand-in for the monitor's tests, screenshot and tmux check.

:func:`scripted_stream` builds a deterministic, self-consistent message sequence
for one stream (scores that rise and fall, onsets/offsets from thresholds with
hysteresis, a status about once a second) with :mod:`detector.io.wire`;
:class:`ScriptedPublisher` sends such messages on a real ZeroMQ PUB socket.

Run it by hand to feed a monitor::

    python tests/monitor_scenario.py --endpoint tcp://127.0.0.1:5557 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import sys
import time
from itertools import groupby
from typing import Any

import zmq

from detector.io.wire import encode, envelope

__all__ = ["LABELS", "ScriptedPublisher", "free_endpoint", "publish_load", "scripted_stream"]

# (label, mid, on, off, period in hops, phase): a score curve per label.
LABELS: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("Speech", "/m/09x0r", 0.5, 0.3, 23.0, 0.0),
    ("Dog", "/m/0bt9lr", 0.45, 0.25, 17.0, 1.0),
    ("Music", "/m/04rlf", 0.5, 0.35, 41.0, 2.0),
    ("Door", "/m/02dgv", 0.4, 0.2, 13.0, 3.5),
    ("Vacuum cleaner", "/m/0d31p", 0.5, 0.3, 31.0, 4.2),
    ("Water tap, faucet", "/m/02jz0l", 0.5, 0.3, 19.0, 5.1),
    ("Knock", "/m/07r4wb8", 0.4, 0.2, 11.0, 0.7),
)
TOP_K = 5
HOP_S = 0.48
STATUS_EVERY = 2
"""A status message every this many hops (~1 s at HOP_S)."""
PATCH_S = 0.96


def free_endpoint() -> str:
    """``tcp://127.0.0.1:<port>`` with a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _score(i: int, hop: int, salt: int, period_scale: float) -> float:
    _, _, _, _, period, phase = LABELS[i]
    x = math.sin(2 * math.pi * hop / (period * period_scale) + phase + salt)
    floor = 0.06 + 0.03 * math.sin(hop / period_scale * 0.7 + i)
    amplitude = 0.5 + 0.45 * ((i * 0.37 + salt * 0.11) % 1.0)
    return round(max(0.0, min(1.0, floor + amplitude * max(0.0, x) ** 2)), 4)


def scripted_stream(
    stream: str,
    session: str,
    hops: int,
    wall0: float,
    salt: int = 0,
    seq0: int = 0,
    hop0: int = 0,
    hop_s: float = HOP_S,
) -> list[dict[str, Any]]:
    """Messages of ``hops`` patch hops of one stream, in publish order.

    ``seq0``/``hop0`` continue an earlier call (late join, seq gaps); ``salt``
    varies the curves between streams. Wall times are ``wall0 + stream time``.
    ``hop_s`` is the patch hop in seconds; the score curves keep their speed in
    seconds whatever the hop, so a short hop gives more scores, not more events.
    """
    period_scale = HOP_S / hop_s
    update_every = max(1, round(STATUS_EVERY * period_scale))
    out: list[dict[str, Any]] = []
    seq = seq0
    open_events: dict[str, dict[str, Any]] = {}
    next_id = 0

    def env(kind: str, t: float) -> dict[str, Any]:
        nonlocal seq
        m = envelope(kind, stream, seq, session, wall0 + t, t)
        seq += 1
        return m

    for hop in range(hop0, hop0 + hops):
        t = PATCH_S + hop * hop_s
        scores = {
            LABELS[i][0]: _score(i, hop, salt, period_scale) for i in range(len(LABELS))
        }
        for label, mid, on, off, _, _ in LABELS:
            s = scores[label]
            ev = open_events.get(label)
            if ev is None and s >= on:
                ev = {"event_id": next_id, "start": t, "peak": s, "sum": s, "n": 1, "mid": mid}
                next_id += 1
                open_events[label] = ev
                out.append(_event(env("event", t), "onset", label, ev, t, s, wall0))
            elif ev is not None:
                ev["peak"] = max(ev["peak"], s)
                ev["sum"] += s
                ev["n"] += 1
                if s < off:
                    out.append(_event(env("event", t), "offset", label, ev, t, s, wall0))
                    del open_events[label]
                elif (hop - hop0) % update_every == 0:
                    out.append(_event(env("event", t), "update", label, ev, t, s, wall0))
        ranked = sorted(LABELS, key=lambda row: -scores[row[0]])[:TOP_K]
        m = env("scores", t)
        m["patch_start"] = round(t - PATCH_S, 6)
        m["patch_end"] = round(t, 6)
        m["top"] = [
            {
                "label": label,
                "score": scores[label],
                "on": on,
                "off": off,
                "active": label in open_events,
            }
            for label, _, on, off, _, _ in ranked
        ]
        out.append(m)
        if hop % update_every == 0:
            st = env("status", t)
            level = -32.0 + 8.0 * math.sin(hop / 5.0 + salt)
            st.update(
                state="running",
                level_dbfs=round(level, 2),
                peak_dbfs=round(level + 11.0, 2),
                speed=1.0,
                load=0.06 + 0.01 * salt,
                latency_ms={"last": 3.2, "p50": 3.0, "p99": 7.5},
                dropped_samples=0,
                overruns=0,
                gaps=0,
                patches=hop + 1,
                open_events=len(open_events),
            )
            out.append(st)
    return out


def _event(
    m: dict[str, Any],
    phase: str,
    label: str,
    ev: dict[str, Any],
    t: float,
    score: float,
    wall0: float,
) -> dict[str, Any]:
    closed = phase == "offset"
    m.update(
        event=phase,
        label=label,
        mid=ev["mid"],
        event_id=ev["event_id"],
        start=round(ev["start"], 6),
        end=round(t, 6) if closed else None,
        start_wall=round(wall0 + ev["start"], 6),
        end_wall=round(wall0 + t, 6) if closed else None,
        duration=round(t - ev["start"], 6),
        peak=ev["peak"],
        mean=round(ev["sum"] / ev["n"], 4),
        score=score,
    )
    if closed:
        m["reason"] = "score"
    return m


class ScriptedPublisher:
    """A real ZeroMQ PUB bound to ``endpoint`` that sends wire messages."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.bind(endpoint)
        self.sent = 0

    def send(self, message: dict[str, Any]) -> None:
        """Publish one message."""
        self._sock.send_multipart(encode(message))
        self.sent += 1

    def send_all(self, messages: list[dict[str, Any]], interval_s: float = 0.0) -> None:
        """Publish ``messages``, sleeping ``interval_s`` after each."""
        for m in messages:
            self.send(m)
            if interval_s:
                time.sleep(interval_s)

    def close(self) -> None:
        """Unbind and close the socket."""
        self._sock.close(linger=0)


def publish_load(
    pub: ScriptedPublisher, streams: int, rate_hz: float, seconds: float
) -> dict[str, Any]:
    """Publish ``streams`` scripted streams at ``rate_hz`` patch hops a second each.

    Each hop sends the stream's events, scores and status (about 1/s), so
    ``rate_hz`` scores messages a second per stream plus the rest. Returns what
    was sent: counts, measured rate and the last seq of every stream.
    """
    hops = int(seconds * rate_hz)
    ids = [f"s{i}" for i in range(streams)]
    wall0 = time.time()
    per_stream = {
        sid: scripted_stream(sid, "load", hops, wall0, salt=i, hop_s=1 / rate_hz)
        for i, sid in enumerate(ids)
    }
    grouped = [
        [list(g) for _, g in groupby(per_stream[sid], key=lambda m: m["stream_time"])]
        for sid in ids
    ]
    t0 = time.perf_counter()
    for k in range(hops):
        for groups in grouped:
            for m in groups[k]:
                pub.send(m)
        delay = t0 + (k + 1) / rate_hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    took = time.perf_counter() - t0
    last_send_wall = time.time()
    last_scores = {
        sid: [m for m in per_stream[sid] if m["type"] == "scores"][-1] for sid in ids
    }
    return {
        "sent": pub.sent,
        "seconds": took,
        "scores_per_s": streams * hops / took,
        "last_seq": {sid: per_stream[sid][-1]["seq"] for sid in ids},
        "last_top": {sid: last_scores[sid]["top"][0] for sid in ids},
        "last_patch_end": {sid: last_scores[sid]["patch_end"] for sid in ids},
        "last_send_wall": last_send_wall,
    }


async def _screenshot(path: str, hops: int, size: tuple[int, int]) -> None:
    """Run the monitor against two scripted streams and save an SVG screenshot."""
    from detector.monitor.app import MonitorApp
    from detector.monitor.subscriber import SubscriberConfig

    endpoint = "tcp://127.0.0.1:5557"  # the default, as a user would see it
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5557)) == 0:
            endpoint = free_endpoint()  # taken (a real sed-listen?): use another
    app = MonitorApp(SubscriberConfig(endpoint=endpoint, post_interval_s=0.02))
    async with app.run_test(size=size) as pilot:
        pub = ScriptedPublisher(endpoint)
        while app.state.connection.connects == 0:
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        wall0 = time.time() - PATCH_S - hops * HOP_S
        streams = [
            scripted_stream("mic:default", "3f9c2a", hops, wall0, salt=0),
            scripted_stream("kitchen.wav", "3f9c2a", hops, wall0, salt=2),
        ]
        merged = sorted((m for s in streams for m in s), key=lambda m: m["stream_time"])
        t = merged[0]["stream_time"]
        for m in merged:
            if m["stream_time"] != t:
                t = m["stream_time"]
                await pilot.pause(0.03)
            pub.send(m)
        await pilot.pause(1.0)
        app.save_screenshot(path)
        pub.close()


def main() -> None:
    """Publish two scripted streams in real time (for a manual or tmux check), or a load."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5557")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--load", type=int, metavar="STREAMS", help="publish STREAMS at --rate")
    p.add_argument("--rate", type=float, default=50.0, help="hops per second per stream (--load)")
    p.add_argument("--start-after", type=float, default=0.0, help="wait before publishing (s)")
    p.add_argument("--screenshot", metavar="SVG", help="save a monitor screenshot and exit")
    args = p.parse_args()
    if args.screenshot:
        asyncio.run(_screenshot(args.screenshot, hops=90, size=(140, 42)))
        return
    pub = ScriptedPublisher(args.endpoint)
    time.sleep(args.start_after)
    if args.load:
        result = publish_load(pub, args.load, args.rate, args.seconds)
        time.sleep(0.2)
        pub.close()
        sys.stdout.write(json.dumps(result) + "\n")
        return
    hops = int(args.seconds / HOP_S)
    wall0 = time.time()
    streams = [
        scripted_stream("mic:default", "demo-a", hops, wall0, salt=0),
        scripted_stream("kitchen.wav", "demo-b", hops, wall0, salt=2),
    ]
    merged = sorted((m for s in streams for m in s), key=lambda m: m["stream_time"])
    for m in merged:
        delay = m["wall_time"] - time.time()
        if delay > 0:
            time.sleep(delay)
        m["wall_time"] = time.time()
        pub.send(m)
    pub.close()


if __name__ == "__main__":
    main()
