"""sed-listen and sed-tag as a user runs them: subprocesses, JSON on stdout, signals, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SCENE_EVENTS

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO
    )


def test_listen_json_on_a_file(toy_model: Path, toy_scene: Path) -> None:
    r = _run("detector.cli.listen", str(toy_scene), "--model", str(toy_model), "--json", "--no-publish")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines and all(m["type"] == "event" for m in lines)
    onsets = [m["label"] for m in lines if m["event"] == "onset"]
    assert onsets == [label for label, _, _ in SCENE_EVENTS]
    assert sum(m["event"] == "offset" for m in lines) == len(onsets)
    assert "torch" not in r.stderr


def test_listen_does_not_import_torch(toy_model: Path, toy_scene: Path) -> None:
    code = (
        "import sys, detector.cli.listen as c; "
        f"c.main([{str(toy_scene)!r}, '--model', {str(toy_model)!r}, '--no-publish']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'training')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def _listen_in_real_time(model: Path, scene: Path) -> subprocess.Popen[str]:
    """``sed-listen --json`` replaying ``scene`` at the wall clock's pace, as a daemon runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli.listen", str(scene), "--model", str(model),
         "--json", "--no-publish", "--realtime"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )


def test_sigterm_closes_open_events_and_exits_zero(toy_model: Path, toy_scene: Path) -> None:
    proc = _listen_in_real_time(toy_model, toy_scene)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # blocks until the first onset (~2.5 s in)
    assert first["event"] == "onset"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(5) == 0
    assert time.time() - t0 < 1.0
    closing = [m for m in rest if m["event"] == "offset" and m["event_id"] == first["event_id"]]
    assert len(closing) == 1 and closing[0]["reason"] in ("shutdown", "score")


def test_a_stop_signal_landing_inside_stop_wait_still_stops() -> None:
    """The handler runs on the thread that may be inside ``stop.wait()``, holding the event's
    lock: setting the event there would wait for that lock forever (sed-listen once hung on
    SIGTERM this way). Here a thread holds the lock and calls the handler, as the main thread
    would; it must return, and the event be set once the lock is let go."""
    import logging
    import threading

    from detector.cli.common import signals_set

    stop = threading.Event()
    with signals_set(stop, logging.getLogger("test"), "exiting"):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        returned = threading.Event()

        def land_inside_wait() -> None:
            with stop._cond:  # type: ignore[attr-defined]  # what Event.wait holds
                handler(signal.SIGTERM, None)
                returned.set()

        threading.Thread(target=land_inside_wait, daemon=True).start()
        assert returned.wait(5), "the signal handler blocked on the event's lock"
        assert stop.wait(5)
        # and a real signal, delivered by the kernel to this process
        stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is not handler  # the previous handlers are back


def test_sigusr1_prints_every_threads_stack_and_listening_goes_on(toy_model: Path, toy_scene: Path) -> None:
    """``kill -USR1`` shows what a process that will not stop is doing (run_cli's faulthandler)."""
    proc = _listen_in_real_time(toy_model, toy_scene)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["event"] == "onset"  # running
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    assert proc.poll() is None  # still listening
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "most recent call first" in err and "pipeline.py" in err and "in run" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mic:NoSuchMicrophone42"], "--list-devices"),
        (["/no/such/file.wav"], "no such file"),
        (["--model", "/no/such/model.onnx", "x.wav"], "model"),
        (["--hop", "5", "x.wav"], "patch_hop_s"),
    ],
)
def test_listen_bad_input_is_one_clear_line(toy_model: Path, args: list[str], message: str) -> None:
    if "--model" not in args:
        args = [*args, "--model", str(toy_model)]
    r = _run("detector.cli.listen", "--no-publish", *args, timeout=30)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("sed-listen: error:") and message in last


def test_corrupt_model_is_reported(tmp_path: Path, toy_scene: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    r = _run("detector.cli.listen", str(toy_scene), "--model", str(bad), "--no-publish")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot load it" in r.stderr


def test_tag_prints_one_json_line_per_file(toy_model: Path, toy_scene: Path, speech_clip_path: Path) -> None:
    # max pooling: each scene event lasts 1-3 s of the 12 s scene (the default mean would
    # dilute it; test_model_choice covers mean <= max)
    r = _run("detector.cli.tag", str(toy_scene), str(speech_clip_path), "--model", str(toy_model),
             "--mids", "--pool", "max")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(d["pooling"] == "max" for d in docs)
    assert [d["path"] for d in docs] == [str(toy_scene), str(speech_clip_path)]
    scene = docs[0]["scores"]
    for label, _, _ in SCENE_EVENTS:
        assert scene[label] > 0.8
    assert scene["Chirp tone"] < 0.5
    assert docs[0]["mids"]["Sine wave"] == "/m/01v_m0"
    assert docs[1]["scores"]  # a 0.49 s clip is padded to one patch and still tagged


def test_tag_reports_bad_files_and_continues(toy_model: Path, toy_scene: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(300))
    r = _run("detector.cli.tag", str(junk), str(toy_scene), "--model", str(toy_model))
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1 and "junk.wav" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
def test_cuda_provider_gives_cpu_scores(toy_model: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)")
    import numpy as np

    from detector.model.scorer import OnnxScorer

    x = np.random.default_rng(0).standard_normal((64, 96, 64)).astype(np.float32) - 4
    cpu = OnnxScorer(toy_model, "cpu").score(x)
    gpu = OnnxScorer(toy_model, "cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.score(x), cpu, atol=1e-4)


def test_truncated_wav_is_refused_then_read_with_allow_truncated(
    toy_model: Path, toy_scene: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.wav"
    data = toy_scene.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # header still declares the full length
    r = _run("detector.cli.tag", str(cut), "--model", str(toy_model))
    assert r.returncode == 1 and "--allow-truncated" in r.stderr and "Traceback" not in r.stderr
    r = _run("detector.cli.tag", str(cut), "--model", str(toy_model), "--allow-truncated",
             "--pool", "max")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scores"]["Sine wave"] > 0.8  # the first half holds the tone
