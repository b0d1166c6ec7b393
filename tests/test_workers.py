"""``sed-listen --workers N``: streams shared out over worker processes behind one endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq
from conftest import SCENE_EVENTS

from detector.cli.workers import _worker_name, shard
from detector.io.wire import decode
from detector.monitor.link import SeqTracker
from detector.monitor.state import MonitorState

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _listen(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector.cli.listen", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=REPO)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory, toy_scene: Path) -> list[Path]:
    """Four copies of the toy scene under four names: four streams."""
    d = tmp_path_factory.mktemp("workers")
    out = []
    for name in ("a", "b", "c", "d"):
        shutil.copy(toy_scene, d / f"{name}.wav")
        out.append(d / f"{name}.wav")
    return out


def test_shard_balances_and_keeps_a_stream_ids_sources_together() -> None:
    specs = ["a.wav", "x/a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]
    ids = ["a.wav", "a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]
    shards = shard(specs, ids, 2)
    assert sorted(len(s) for s in shards) == [3, 3]
    assert sorted(x for s in shards for x in s) == sorted(specs)
    home = next(s for s in shards if "a.wav" in s)
    assert home.index("a.wav") < home.index("x/a.wav")  # same id: same worker, in order (a.wav#1, #2)
    for s in shards:
        assert s == [x for x in specs if x in s]  # each shard in the command's order
    assert len(shard(specs, ids, 16)) == 5  # never more workers than stream ids
    with pytest.raises(ValueError, match="--workers 0"):
        shard(specs, ids, 0)


def test_a_workers_name_in_the_log_never_shows_url_credentials() -> None:
    name = _worker_name(1, ["rtsp://admin:secret@cam.local/live", "a.wav", "b.wav", "c.wav"])
    assert "secret" not in name and "cam.local" in name
    assert name.startswith("worker 1 (4 stream(s): ") and name.endswith(", ...)")


def _events(stdout: str) -> dict[str, list[tuple]]:
    by_stream: dict[str, list[tuple]] = {}
    for line in stdout.splitlines():
        m = json.loads(line)
        by_stream.setdefault(m["stream"], []).append((m["event"], m["label"], m["stream_time"], m["seq"]))
    for rows in by_stream.values():  # seq also counts status messages, whose timing varies
        assert [r[3] for r in rows] == sorted({r[3] for r in rows})
    return {k: [r[:3] for r in rows] for k, rows in by_stream.items()}


def test_workers_give_every_stream_the_events_of_one_process(toy_model: Path, scenes: list[Path]) -> None:
    common = [*map(str, scenes), "--model", str(toy_model), "--json", "--no-publish"]
    one = _listen(*common)
    two = _listen(*common, "--workers", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert len(re.findall(r"worker \d \(pid \d+\): 2 stream", two.stderr)) == 2
    ev_one, ev_two = _events(one.stdout), _events(two.stdout)
    assert set(ev_two) == {p.name for p in scenes}
    assert ev_two == ev_one
    onsets = [label for e, label, _ in ev_two["a.wav"] if e == "onset"]
    assert onsets == [label for label, _, _ in SCENE_EVENTS]
    sessions = {json.loads(line)["session"] for line in two.stdout.splitlines()}
    assert len(sessions) == 2  # a session per worker process


def test_workers_publish_on_one_endpoint_and_stop_on_sigterm(toy_model: Path, scenes: list[Path]) -> None:
    """Real time, a subscriber on the one --publish endpoint: every worker's streams come
    through the proxy; SIGTERM to the command closes each worker's open events."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", *map(str, scenes), "--model", str(toy_model),
         "--workers", "2", "--realtime", "--publish", endpoint, "--json", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
    )
    got: dict[str, list[dict]] = {}
    try:
        time.sleep(0.3)  # the command binds the endpoint before it starts any worker
        sub.connect(endpoint)
        end = time.monotonic() + 60
        # until every stream has had its first onset (the scene's first event starts at 2 s)
        while time.monotonic() < end and not (
            len(got) == len(scenes) and all(any(m.get("event") == "onset" for m in v) for v in got.values())
        ):
            if sub.poll(100):
                _topic, msg = decode(sub.recv_multipart())
                got.setdefault(msg["stream"], []).append(msg)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close(0)
        ctx.term()
    assert proc.returncode == 0, err
    assert set(got) == {p.name for p in scenes}, f"streams seen: {sorted(got)}"
    assert len({m["session"] for msgs in got.values() for m in msgs}) == 2
    # The dashboard's view of it: one session per stream, so no stream looks restarted.
    tracker, state = SeqTracker(), MonitorState()
    for msgs in got.values():
        for m in msgs:
            assert tracker.observe(m, 0.0).restarts == 0
            state.apply(m)
    assert set(state.streams) == {p.name for p in scenes}
    assert not any(v.restarted for v in state.streams.values())
    lines = [json.loads(line) for line in out.splitlines()]
    for p in scenes:
        mine = [m for m in lines if m["stream"] == p.name]
        opened = {m["event_id"] for m in mine if m["event"] == "onset"}
        closed = {m["event_id"] for m in mine if m["event"] == "offset"}
        assert opened and opened == closed, f"{p.name}: every onset has its offset"
    assert "SIGTERM: stopping the workers" in err


def test_a_source_that_fails_in_a_worker_is_reported_and_the_others_go_on(
    toy_model: Path, scenes: list[Path], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.wav"
    r = _listen(str(scenes[0]), str(missing), "--model", str(toy_model), "--workers", "2",
                "--no-publish", "--json-all")
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(line) for line in r.stdout.splitlines()]
    errors = [m for m in msgs if m["type"] == "status" and m["state"] == "error"]
    assert [m["stream"] for m in errors] == ["gone.wav"], "on the wire, as in one process"
    assert "no such file" in errors[0]["message"]
    assert any(m["type"] == "event" and m["stream"] == "a.wav" for m in msgs)
    assert re.search(r"worker 1 \(1 stream\(s\): .*gone\.wav\) exited with status 2; the other workers go on",
                     r.stderr)
    every = _listen(str(missing), str(tmp_path / "also_gone.wav"), "--model", str(toy_model),
                    "--workers", "2", "--no-publish")
    assert every.returncode == 2
    assert every.stderr.strip().splitlines()[-1].startswith("sed-listen: error: every worker's streams failed")


def test_one_process_with_many_live_streams_suggests_workers(toy_model: Path, scenes: list[Path]) -> None:
    many = [str(scenes[0])] * 1001  # paced files are live streams; --list-labels opens none
    r = _listen("--model", str(toy_model), "--no-publish", "--realtime", "--list-labels", *many)
    assert r.returncode == 0, r.stderr
    hint = f"--workers {os.cpu_count()} shares them out"
    assert (hint in r.stderr) == ((os.cpu_count() or 1) > 1), r.stderr[-500:]
    few = _listen("--model", str(toy_model), "--no-publish", "--realtime", "--list-labels", *many[:10])
    assert "--workers" not in few.stderr


def _two_free_ports() -> int:
    """A port p with p + 1 free as well (worker 1's metrics)."""
    for _ in range(50):
        p = _free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports")


def test_workers_share_the_clips_directory_and_serve_metrics_each(toy_model: Path, scenes: list[Path],
                                                                   tmp_path: Path) -> None:
    """--clips: one directory for every worker; --metrics P: worker i on port P + i, each
    with its own streams."""
    from prometheus_client.parser import text_string_to_metric_families

    port = _two_free_ports()
    clips = tmp_path / "clips"
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", *map(str, scenes), "--model", str(toy_model),
         "--workers", "2", "--realtime", "--no-publish", "--threads", "1",
         "--metrics", f"127.0.0.1:{port}", "--clips", str(clips)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
    )
    running: dict[int, set[str]] = {}
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and sum(len(v) for v in running.values()) < len(scenes):
            for i in (0, 1):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port + i}/metrics", timeout=2) as r:
                        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
                except (urllib.error.URLError, ConnectionError):
                    continue
                running[i] = {x.labels["stream"] for x in fams["sed_stream_state"].samples
                              if x.labels.get("state") == "running" and x.value == 1}
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)  # the scenes end after 12 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert running.get(0, set()) | running.get(1, set()) == {p.name for p in scenes}, running
    assert not running[0] & running[1], "each stream is served by its own worker only"
    assert f"metrics on http://127.0.0.1:{port + 1}/metrics" in err
    flacs = sorted(clips.glob("*.flac"))
    for p in scenes:  # the scene's three events, as clips, for every stream
        assert len([f for f in flacs if f"Z_{p.name}_" in f.name]) == len(SCENE_EVENTS), [f.name for f in flacs]


def _running_workers(toy_model: Path, scenes: list[Path]) -> tuple[subprocess.Popen[str], list[int], dict]:
    """``--workers 2`` on the scenes in real time, JSON on stdout: the command, its two
    workers' pids (from its log) and the first onset (the workers are running)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", *map(str, scenes), "--model", str(toy_model),
         "--workers", "2", "--realtime", "--no-publish", "--json", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pids: list[int] = []
    try:
        end = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < end:
            pids += [int(p) for p in re.findall(r"worker \d \(pid (\d+)\)", proc.stderr.readline())]
        first = json.loads(proc.stdout.readline())
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, pids, first


def test_a_worker_that_dies_stops_the_others_and_the_command_fails(toy_model: Path, scenes: list[Path]) -> None:
    proc, pids, _first = _running_workers(toy_model, scenes)
    assert proc.stderr is not None
    try:
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        rc = proc.wait(30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 1
    assert re.search(r"worker 0 \(2 stream\(s\): .*a\.wav.*\) died \(exit code -9\); stopping the others", err)
    for pid in pids:  # neither worker is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _exited(pid: int) -> bool:
    """Gone, or a zombie (an orphan's exit that no init reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_workers_stop_when_the_command_is_killed(toy_model: Path, scenes: list[Path]) -> None:
    """SIGKILL to the command (no chance to pass anything on): each worker sees its parent
    gone, closes its open events and exits; none is left holding its sources."""
    proc, pids, first = _running_workers(toy_model, scenes)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert len(pids) == 2
        assert first["event"] == "onset"
        proc.kill()
        proc.wait(10)
        rest = [json.loads(line) for line in proc.stdout]  # EOF once both workers have exited
        err = proc.stderr.read()
        end = time.monotonic() + 10
        while time.monotonic() < end and not all(map(_exited, pids)):
            time.sleep(0.1)
        exited = [_exited(pid) for pid in pids]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:  # never leave one behind, whatever failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert exited == [True, True], err
    assert err.count("the sed-listen command is gone; stopping") == 2
    closing = [m for m in rest if m["event"] == "offset" and m["event_id"] == first["event_id"]
               and m["stream"] == first["stream"]]
    assert len(closing) == 1 and closing[0]["reason"] == "shutdown"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers 0; accepted: 1 or more"),
        (["--workers", "2", "--control", "ipc:///tmp/sed-test-control"], "cannot be combined with --control"),
        (["--workers", "2", "--mqtt", "mqtt://127.0.0.1:1883"], "cannot be combined with --mqtt"),
        (["--workers", "3", "--metrics", "127.0.0.1:65535"], "needs ports 65535-65537"),
        (["--workers", "2", "--", "-"], "cannot read stdin"),
    ],
)
def test_workers_refuse_what_they_cannot_share(toy_model: Path, scenes: list[Path], args: list[str],
                                               message: str) -> None:
    r = _listen("--model", str(toy_model), "--no-publish", *args, str(scenes[0]), str(scenes[1]), timeout=30)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("sed-listen: error:") and message in last
