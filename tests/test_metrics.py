"""Prometheus metrics (issue 22): ``/metrics`` scraped over HTTP on 127.0.0.1 and parsed
with prometheus_client's own text parser; bad addresses give one line."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.io import metrics as metrics_mod
from detector.io.metrics import LATENCY_BUCKETS, MetricsServer, parse_metrics_address
from detector.io.publisher import ListSink
from detector.model.resolve import resolve_model
from detector.model.scorer import OnnxScorer
from detector.pipeline import Listener
from detector.sources.parse import FileSource

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "detector" / "data" / "demo.flac"
CRY = REPO / "tests" / "data" / "baby_cry.flac"
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> dict[str, Any]:
    """name -> family, parsed by prometheus_client's parser (a format error raises)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    fam = fams[name]
    found = [s.value for s in fam.samples
             if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, fam.samples)
    return float(found[0])


def test_scrape_after_a_file(tmp_path: Path) -> None:
    scorer = OnnxScorer(resolve_model(None), "cpu", 1)
    server = MetricsServer(f"127.0.0.1:{_free_port()}")
    sink = ListSink()
    try:
        Listener([FileSource(DEMO, 16000)], [sink, server], scorer=scorer,
                 latency_observer=server.observe_latency).run()
        fams = _scrape(server.url)
    finally:
        server.close()
    status = [m for m in sink.messages if m["type"] == "status"][-1]
    onsets = [m for m in sink.messages if m["type"] == "event" and m["event"] == "onset"]
    s = {"stream": "demo.flac"}
    assert fams["sed_patches"].type == "counter"
    assert _value(fams, "sed_patches", "sed_patches_total", **s) == status["patches"] > 50
    for name in ("dropped_samples", "overruns", "gaps", "reconnects", "nonfinite_samples"):
        assert _value(fams, f"sed_{name}", f"sed_{name}_total", **s) == status[name] == 0
    dog = sum(m["label"] == "Dog" for m in onsets)
    assert dog >= 1 and _value(fams, "sed_events", "sed_events_total", label="Dog", **s) == dog
    total = sum(f.value for f in fams["sed_events"].samples if f.name == "sed_events_total")
    assert total == len(onsets)
    assert fams["sed_realtime_factor"].type == "gauge"
    assert 0 < _value(fams, "sed_realtime_factor", **s) < 1
    assert _value(fams, "sed_stream_state", state="ended", **s) == 1
    assert _value(fams, "sed_stream_state", state="running", **s) == 0
    hist = fams["sed_hop_latency_seconds"]
    assert hist.type == "histogram"
    count = _value(fams, "sed_hop_latency_seconds", "sed_hop_latency_seconds_count", **s)
    assert count == status["patches"]
    buckets = [b for b in hist.samples if b.name.endswith("_bucket")]
    assert [float(b.labels["le"]) for b in buckets][:-1] == list(LATENCY_BUCKETS)
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
    assert "sed_clips_written" in fams and not fams["sed_clips_written"].samples  # no --clips


def test_scrape_while_sed_listen_runs(tmp_path: Path) -> None:
    """A user's run: sed-listen --realtime --metrics, scraped while it listens."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", str(CRY), "--realtime", "--no-publish",
         "--metrics", f"127.0.0.1:{port}", "--clips", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    fams: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                fams = _scrape(url)
            except (urllib.error.URLError, ConnectionError):
                fams = {}
            s = {"stream": "baby_cry.flac"}
            if fams and any(x.labels.get("state") == "running" and x.value == 1
                            for x in fams["sed_stream_state"].samples) and \
                    _value(fams, "sed_patches", "sed_patches_total", **s) >= 2:
                break
            time.sleep(0.2)
        assert fams, "never scraped"
        assert _value(fams, "sed_stream_state", state="running", **s) == 1
        assert _value(fams, "sed_hop_latency_seconds", "sed_hop_latency_seconds_count", **s) >= 2
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)  # closed with the daemon


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)),
    ("9108", ("127.0.0.1", 9108)),
    ("localhost:1", ("localhost", 1)),
    ("[::1]:65535", ("::1", 65535)),
])
def test_parse_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:0", "port 0 is out of range"),
    ("0", "port 0 is out of range"),
    ("127.0.0.1:99999", "port 99999 is out of range"),
    ("127.0.0.1:http", "port 'http' is not a number"),
    (":9108", "has no host"),
    ("tcp://127.0.0.1:9108", "accepted: HOST:PORT"),
    ("no-such-host.invalid:9108", "cannot resolve host 'no-such-host.invalid'"),
])
def test_bad_metrics_address(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match="metrics address") as e:
        parse_metrics_address(text)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            MetricsServer(f"127.0.0.1:{port}")


@pytest.mark.parametrize("address", [
    "99999", "127.0.0.1:0", "no-such-host.invalid:9108", "busy",
])
def test_cli_bad_metrics_address_one_line(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli.listen import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        if address == "busy":
            address = f"127.0.0.1:{s.getsockname()[1]}"
        assert main([str(CRY), "--no-publish", "--metrics", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sed-listen: error: ") and address in err[0], err


def test_non_loopback_address_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The event socket's rule: beyond loopback is a warning (no socket is opened here)."""
    opened: list[tuple[int, str]] = []

    class _Fake:
        server_port = 9108

        def shutdown(self) -> None: ...
        def server_close(self) -> None: ...

    class _Thread:
        def join(self, timeout: float) -> None: ...

    def fake_start(port: int, addr: str, registry: Any) -> tuple[_Fake, _Thread]:
        opened.append((port, addr))
        return _Fake(), _Thread()

    monkeypatch.setattr(metrics_mod, "start_http_server", fake_start)
    with caplog.at_level(logging.WARNING, logger="detector.io.metrics"):
        for address in ("127.0.0.1:9108", "localhost:9108", "[::1]:9108"):
            MetricsServer(address).close()
        assert not caplog.records
        MetricsServer("0.0.0.0:9108").close()
    assert opened[-1] == (9108, "0.0.0.0")
    assert len(caplog.records) == 1 and "reachable beyond this machine" in caplog.text


def test_clip_counters_are_exported() -> None:
    server = MetricsServer(f"127.0.0.1:{_free_port()}")
    try:
        server.send({"type": "status", "stream": "mic:default", "state": "running", "wall_time": 1.0,
                     "patches": 3, "clips": 2, "clip_errors": 1, "clips_dropped": 0, "load": 0.1})
        server.send({"type": "event", "stream": "mic:default", "event": "onset", "label": "Dog, bark"})
        server.send({"type": "event", "stream": "mic:default", "event": "offset", "label": "Dog, bark"})
        fams = _scrape(server.url)
    finally:
        server.close()
    s = {"stream": "mic:default"}
    assert _value(fams, "sed_clips_written", "sed_clips_written_total", **s) == 2
    assert _value(fams, "sed_clip_errors", "sed_clip_errors_total", **s) == 1
    assert _value(fams, "sed_events", "sed_events_total", label="Dog, bark", **s) == 1  # onsets only
    assert _value(fams, "sed_last_status_timestamp_seconds", **s) == 1.0
    assert json.dumps(_value(fams, "sed_realtime_factor", **s)) == "0.1"
