"""Bad input, as a matrix: every case through ``sed-listen`` and ``sed-tag`` (and, where it
applies, ``sed-train``/``sed-eval``). A rejected case exits non-zero with one line
``PROG: error: ...`` that names what was received and what is accepted, never a
traceback; an accepted odd case (8-bit, 192 kHz, NaN, clipping, ...) exits 0 with
valid JSON. The list is mirrored in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from detector.cli import listen as cli_listen
from detector.cli import tag as cli_tag

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))
RATE = 16000


def wav_header(tag: int = 1, channels: int = 1, rate: int = RATE, bits: int = 16, data_bytes: int = 0) -> bytes:
    """A canonical 44-byte RIFF/WAVE header; every field as given, true or not."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    riff = 4 + 8 + len(fmt) + 8 + data_bytes
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )


def _tone(seconds: float = 2.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _write(path: Path, x: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    sf.write(path, x, rate, subtype=subtype)
    return path


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data)
        return p

    return make


def _truncated(d: Path) -> Path:
    whole = _write(d / "whole.wav", _tone()).read_bytes()
    return _bytes("truncated.wav", whole[:30])(d)  # cut inside the header


def _header_lies(d: Path) -> Path:
    whole = _write(d / "whole2.wav", _tone()).read_bytes()
    return _bytes("lies.wav", whole[: len(whole) // 2])(d)  # data chunk says 2 s, holds 1 s


def _directory(d: Path) -> Path:
    p = d / "a_directory.wav"
    p.mkdir()
    return p


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path]
    ok: bool  # accepted (exit 0) or rejected with one clear line
    says: tuple[str, ...] = ()  # words the error line must contain (what was received / accepted)


AUDIO_CASES = [
    Case("empty file", _bytes("empty.wav", b""), False, ("empty", "0 bytes", "WAV")),
    Case("truncated WAV", _truncated, False, ("30 bytes", "RIFF", "Accepted")),
    Case("header lies about length", _header_lies, False, ("truncated WAV", "declares", "holds")),
    Case("random bytes named .wav", _bytes("noise.wav", np.random.default_rng(0).bytes(3000)), False,
         ("no known audio header", "not a WAV", "Accepted")),
    Case("unsupported codec (MP3-in-WAV tag)", _bytes("mp3.wav", wav_header(tag=0x55, data_bytes=3200) + bytes(3200)),
         False, ("RIFF/WAV header", "fmt", "Accepted")),
    Case("directory passed as a file", _directory, False, ("is a directory", "audio file")),
    Case("missing file", lambda d: d / "does_not_exist.wav", False, ("no such file",)),
    Case("8-bit WAV", lambda d: _write(d / "u8.wav", _tone(), subtype="PCM_U8"), True),
    Case("24-bit WAV", lambda d: _write(d / "s24.wav", _tone(), subtype="PCM_24"), True),
    Case("32-bit float WAV", lambda d: _write(d / "f32.wav", _tone(), subtype="FLOAT"), True),
    Case("192 kHz", lambda d: _write(d / "r192k.wav", _tone(rate=192000), 192000), True),
    Case("1 Hz header", _bytes("r1.wav", wav_header(rate=1, data_bytes=4) + bytes(4)), False,
         ("1 Hz", "1000..384000 Hz")),
    Case("0-channel header", _bytes("ch0.wav", wav_header(channels=0, data_bytes=3200) + bytes(3200)), False,
         ("Channel count is zero", "RIFF/WAV")),
    Case("8-channel audio", lambda d: _write(d / "ch8.wav", _tone(channels=8)), True),
    Case("all silence", lambda d: _write(d / "silence.wav", np.zeros(2 * RATE)), True),
    Case("full-scale clipping", lambda d: _write(d / "clip.wav", np.sign(_tone()) * 1.0, subtype="FLOAT"), True),
    Case("NaN and Inf samples",
         lambda d: _write(d / "nan.wav", np.where(np.arange(2 * RATE) % 7 == 0, np.nan,
                                                  np.where(np.arange(2 * RATE) % 11 == 0, np.inf, _tone())),
                          subtype="FLOAT"), True),
    Case("DC offset", lambda d: _write(d / "dc.wav", 0.5 + 0.1 * _tone()), True),
]


def _corrupt_middle(d: Path) -> Path:
    """A FLAC that opens and plays for ~5 s, then loses sync (decode error mid-stream)."""
    flac = _write(d / "whole.flac", _tone(10.0)).read_bytes()
    n = len(flac)
    bad = flac[: n // 2] + b"\xff" * 2000 + flac[n // 2 + 2000 :]
    return _bytes("corrupt_middle.flac", bad)(d)


MID_STREAM = Case("corrupt in the middle (FLAC)", _corrupt_middle, False, ("decode error after", "corrupt"))
AUDIO_CASES.append(MID_STREAM)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_input")
    return {c.name: c.make(d) for c in AUDIO_CASES}


def _last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _check_rejected(prog: str, rc: int, err: str, case: Case, path: Path) -> None:
    assert rc != 0, f"{case.name}: accepted by {prog}"
    assert "Traceback" not in err
    last = _last_line(err)
    assert last.startswith(f"{prog}: error:"), err
    assert path.name in last, f"the error does not name the input: {last}"
    for word in case.says:
        assert word in last, f"{case.name}: {word!r} not in {last!r}"


@pytest.mark.parametrize("case", AUDIO_CASES, ids=lambda c: c.name)
def test_audio_case_through_sed_listen(
    case: Case, inputs: dict[str, Path], toy_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inputs[case.name]
    rc = cli_listen.main([str(path), "--model", str(toy_model), "--no-publish", "--json", "--log-level", "ERROR"])
    out, err = capsys.readouterr()
    if not case.ok:
        _check_rejected("sed-listen", rc, err, case, path)
        return
    assert rc == 0, err
    assert "Traceback" not in err
    events = [json.loads(line) for line in out.splitlines()]
    assert all(e["type"] == "event" and np.isfinite(e["score"]) for e in events)
    if case.name == "all silence":
        assert events == []


@pytest.mark.parametrize("case", AUDIO_CASES, ids=lambda c: c.name)
def test_audio_case_through_sed_tag(
    case: Case, inputs: dict[str, Path], toy_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inputs[case.name]
    rc = cli_tag.main([str(path), "--model", str(toy_model)])
    out, err = capsys.readouterr()
    if not case.ok:
        _check_rejected("sed-tag", rc, err, case, path)
        return
    assert rc == 0, err
    (doc,) = [json.loads(line) for line in out.splitlines()]
    scores = np.array(list(doc["scores"].values()))
    assert scores.size and np.all((scores >= 0) & (scores <= 1))


def test_nan_samples_are_counted_and_logged(
    inputs: dict[str, Path], toy_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from detector.io.publisher import ListSink
    from detector.pipeline import Listener
    from detector.sources.parse import FileSource

    sink = ListSink()
    with caplog.at_level(logging.WARNING):
        Listener([FileSource(inputs["NaN and Inf samples"], RATE)], [sink], model=toy_model).run()
    assert "NaN/Inf" in caplog.text
    final = [m for m in sink.messages if m["type"] == "status"][-1]
    n = 2 * RATE
    expected = sum(1 for i in range(n) if i % 7 == 0 or i % 11 == 0)
    assert final["nonfinite_samples"] == expected
    assert all(np.isfinite(m["level_dbfs"]) for m in sink.messages if m["type"] == "status")


def _setpriv() -> list[str]:
    """A command prefix that drops the capabilities letting root read any file."""
    tool = shutil.which("setpriv")
    if tool is None:
        pytest.skip("setpriv (util-linux) not installed: cannot drop root's file-read override")
    probe = subprocess.run([tool, "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return [tool, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("prog", ["detector.cli.listen", "detector.cli.tag"])
def test_file_without_read_permission(prog: str, tmp_path: Path, toy_model: Path) -> None:
    path = _write(tmp_path / "locked.wav", _tone())
    path.chmod(0)
    prefix = _setpriv() if os.geteuid() == 0 else []
    extra = ["--no-publish"] if prog.endswith("listen") else []
    r = subprocess.run(
        [*prefix, sys.executable, "-m", prog, str(path), "--model", str(toy_model), *extra],
        capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    last = _last_line(r.stderr)
    assert "no permission to read" in last and "locked.wav" in last


# ---------------------------------------------------------------------------- models


def _edit_contract(toy_model: Path, out: Path, edit: Callable[[dict[str, object]], None]) -> Path:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(toy_model))
    for prop in m.metadata_props:
        if prop.key == "sed.contract":
            doc = json.loads(prop.value)
            edit(doc)
            prop.value = json.dumps(doc)
    onnx.save(m, str(out))
    return out


def _wrong_shape_model(toy_model: Path, out: Path) -> Path:
    """A valid ONNX model with the toy contract but input (batch, 50, 64)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    src = onnx.load(str(toy_model))
    n_labels = len(json.loads(next(p.value for p in src.metadata_props if p.key == "sed.contract"))["labels"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, n_labels], np.zeros(64 * n_labels, np.float32).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["patches", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["scores"]),
        ],
        "wrong_shape",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["batch", 50, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_labels])],
        initializer=[w, axes],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = src.ir_version
    for p in src.metadata_props:
        m.metadata_props.add(key=p.key, value=p.value)
    onnx.save(m, str(out))
    return out


MODEL_CASES: list[tuple[str, Callable[[Path, Path], Path], tuple[str, ...]]] = [
    ("corrupt ONNX", lambda tm, d: _bytes("corrupt.onnx", b"\x08\x07 not a protobuf" * 20)(d),
     ("cannot load it", "expected an ONNX model")),
    ("metadata lacks labels",
     lambda tm, d: _edit_contract(tm, d / "nolabels.onnx", lambda doc: doc.pop("labels")),
     ("lacks", "labels")),
    ("metadata lacks features",
     lambda tm, d: _edit_contract(tm, d / "nofeatures.onnx", lambda doc: doc.pop("features")),
     ("lacks", "features")),
    ("no sed metadata at all",
     lambda tm, d: _edit_contract(tm, d / "nometa.onnx", lambda doc: doc.clear()),
     ("contract_version",)),
    ("input shape does not match", lambda tm, d: _wrong_shape_model(tm, d / "shape.onnx"),
     ("shape", "50", "96, 64")),
    ("event_labels names an unknown label",
     lambda tm, d: _edit_contract(tm, d / "events.onnx", lambda doc: doc.update(event_labels=["Sine wav"])),
     ("event_labels", "'Sine wav' (did you mean 'Sine wave'?)")),
]


@pytest.mark.parametrize(("name", "make", "says"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
@pytest.mark.parametrize("prog", ["sed-listen", "sed-tag"])
def test_bad_model(
    prog: str, name: str, make: Callable[[Path, Path], Path], says: tuple[str, ...],
    toy_model: Path, toy_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    model = make(toy_model, tmp_path)
    if prog == "sed-listen":
        rc = cli_listen.main([str(toy_scene), "--model", str(model), "--no-publish", "--log-level", "ERROR"])
    else:
        rc = cli_tag.main([str(toy_scene), "--model", str(model)])
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    last = _last_line(err)
    assert last.startswith(f"{prog}: error:") and model.name in last
    for word in says:
        assert word in last, f"{word!r} not in {last!r}"


# ---------------------------------------------------------------------------- config

CONFIG_CASES = [
    ("unknown key", "[listen]\nbogus = 1\n", ("unknown key(s) ['bogus']", "accepted")),
    ("wrong type", '[listen]\ntop_k = "five"\n', ("top_k", "'five'", "expected int")),
    ("unknown section", "[lisen]\ntop_k = 3\n", ("unknown section(s) ['lisen']",)),
    ("not TOML", "[listen\n", ("not valid TOML",)),
    ("bad smoother value", "[smoother]\non = 1.5\n", ("on threshold 1.5", "0 to 1")),
    ("endpoint port out of range", '[listen]\nendpoint = "tcp://127.0.0.1:99999"\n',
     ("[listen] endpoint", "port 99999 is out of range", "1-65535")),
    ("unknown event label", '[listen]\nlabels = ["Sine wav"]\n',
     ("[listen] labels", "did you mean 'Sine wave'")),
    ("labels not strings", "[listen]\nlabels = [1]\n", ("[listen] labels", "list of strings")),
]


@pytest.mark.parametrize(("name", "text", "says"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(
    name: str, text: str, says: tuple[str, ...], toy_model: Path, toy_scene: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "sed.toml"
    cfg.write_text(text)
    rc = cli_listen.main([str(toy_scene), "--model", str(toy_model), "--no-publish", "--config", str(cfg)])
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    last = _last_line(err)
    assert last.startswith("sed-listen: error:")
    for word in says:
        assert word in last, f"{word!r} not in {last!r}"


# ---------------------------------------------------------------------------- multi-stream


def test_one_bad_stream_among_good_ones(
    inputs: dict[str, Path], toy_model: Path, toy_scene: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad files next to a good one: each bad stream is reported on its status and closed."""
    bad = [inputs["random bytes named .wav"], inputs["missing file"], inputs["header lies about length"],
           inputs[MID_STREAM.name]]
    rc = cli_listen.main(
        [str(toy_scene), *map(str, bad), "--model", str(toy_model), "--no-publish", "--json-all",
         "--log-level", "ERROR"]
    )
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    msgs = [json.loads(line) for line in out.splitlines()]
    for p in bad:
        status = [m for m in msgs if m["stream"] == p.name and m["type"] == "status"]
        assert status and status[-1]["state"] == "error", status
        assert p.name in status[-1]["message"]
        if p.suffix != ".flac":
            assert len(status) == 1  # failed to open: one status, no audio
    mid = [m for m in msgs if m["stream"] == inputs[MID_STREAM.name].name]
    assert any(m["type"] == "scores" for m in mid)  # it ran ~5 s before the decode error
    assert "decode error after" in mid[-1]["message"]
    good = [m for m in msgs if m["stream"] == toy_scene.name]
    assert sum(m["type"] == "event" and m["event"] == "onset" for m in good) == 3
    assert good[-1]["type"] == "status" and good[-1]["state"] == "ended"


def test_every_stream_bad_is_an_error(inputs: dict[str, Path], toy_model: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = [inputs["empty file"], inputs["random bytes named .wav"]]
    rc = cli_listen.main([*map(str, bad), "--model", str(toy_model), "--no-publish"])
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert _last_line(err).startswith("sed-listen: error:") and "empty.wav" in _last_line(err)


# ---------------------------------------------------------------------------- long files

TEN_HOURS_S = 10 * 3600


def _sparse_long_wav(path: Path, seconds: int, rate: int = RATE) -> Path:
    """A real 16-bit WAV of ``seconds`` of silence, written as a sparse file (no disk used)."""
    data = seconds * rate * 2
    with open(path, "wb") as f:
        f.write(wav_header(rate=rate, data_bytes=data))
        f.truncate(len(wav_header()) + data)
    return path


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_ten_hour_file_streams_in_constant_memory(tmp_path: Path, toy_model: Path) -> None:
    """10 h (1.15 GB) of audio: opening and streaming it holds a few blocks, not the file."""
    import threading

    from detector.io.publisher import Sink
    from detector.pipeline import Listener
    from detector.sources.parse import FileSource

    path = _sparse_long_wav(tmp_path / "ten_hours.wav", TEN_HOURS_S)
    src = FileSource(path, RATE)
    assert src.duration == TEN_HOURS_S
    stop = threading.Event()
    samples: list[int] = []

    class Meter:  # a sink that samples RSS at every status and stops after 10 min of audio
        def send(self, m: dict[str, object]) -> None:
            if m["type"] == "scores":
                if len(samples) < 1 or int(float(str(m["patch_end"]))) % 60 == 0:
                    samples.append(_rss_kb())
                if float(str(m["patch_end"])) > 600:
                    stop.set()

        def close(self) -> None:
            pass

    meter: Sink = Meter()
    before = _rss_kb()
    Listener([src], [meter], model=toy_model).run(stop)
    assert len(samples) > 10
    growth_mb = (max(samples[len(samples) // 4:]) - samples[len(samples) // 4]) / 1024
    file_mb = path.stat().st_size / 2**20
    assert file_mb > 1000
    assert growth_mb < 20, f"RSS grew {growth_mb:.1f} MB over 7.5 min of a {file_mb:.0f} MB file"
    assert (max(samples) - before) / 1024 < file_mb / 10, "the file was loaded, not streamed"


# ---------------------------------------------------------------------------- training CLIs


@pytest.fixture(scope="module")
def toy_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from training.toy import make_toy_clips

    d = tmp_path_factory.mktemp("toy_clips")
    return Path(make_toy_clips(d, n_per_label=1, seed=0))


def _manifest_cases(clips_manifest: Path, bad_audio: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = clips_manifest.read_text().splitlines()
    header, first = rows[0], rows[1]
    cols = header.split(",")
    cells = first.split(",")

    def row(**over: str) -> str:
        return ",".join(over.get(c, cells[i]) for i, c in enumerate(cols))

    return {
        "unknown label": (row(labels="Not A Real Label"), ("Not A Real Label",)),
        "missing file": (row(path=str(clips_manifest.parent / "gone.flac")), ("gone.flac",)),
        "bad onset/offset": (row(onset="3.0", offset="1.0"), ("offset", "onset")),
        "onset not a number": (row(onset="soon", offset="1.0"), ("soon",)),
        "undecodable audio": (row(path=str(bad_audio)), (bad_audio.name,)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown label", "missing file", "bad onset/offset",
                                  "onset not a number", "undecodable audio"])
@pytest.mark.parametrize("prog", ["training.evaluate", "training.train"])
def test_bad_manifest_row(prog: str, case: str, toy_clips: Path, toy_model: Path,
                          inputs: dict[str, Path], tmp_path: Path) -> None:
    if "onset" not in toy_clips.read_text().splitlines()[0]:
        pytest.skip("the toy manifest has no onset/offset columns")
    text, says = _manifest_cases(toy_clips, inputs["random bytes named .wav"])[case]
    slug = "".join(ch if ch.isalnum() else "_" for ch in f"{prog}_{case}")
    manifest = toy_clips.parent / f"bad_{slug}.csv"  # beside the clips: relative paths resolve
    manifest.write_text(toy_clips.read_text().splitlines()[0] + "\n" + text + "\n")
    if prog == "training.evaluate":
        args = [str(toy_model), "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--no-plots"]
    else:
        args = ["--train", str(manifest), "--val", str(manifest), "--out", str(tmp_path / "ckpt"),
                "--epochs", "1", "--samples-per-epoch", "8", "--batch-size", "4", "--device", "cpu",
                "--num-workers", "0", "--cache", str(tmp_path / "cache")]
    r = subprocess.run([sys.executable, "-m", prog, *args], capture_output=True, text=True,
                       env=dict(ENV, OMP_NUM_THREADS="1"), cwd=REPO, timeout=120)
    assert r.returncode != 0, f"{prog} accepted a manifest with {case}"
    assert "Traceback" not in r.stderr, f"{prog} / {case}: traceback\n{r.stderr[-1500:]}"
    last = _last_line(r.stderr)
    for word in says:
        assert word in last, f"{word!r} not in {last!r}"


def test_stdin_f32le_with_nan_inf_and_huge_values(toy_model: Path) -> None:
    """Random bytes read as ``f32le`` hold NaN, Inf and values near 3e38: they are counted in
    ``nonfinite_samples``, replaced by 0 and reported once on status, with no numpy warning."""
    x = _tone(3.0).astype("<f4")
    bad = np.arange(x.size) % 97 == 0
    x[bad] = np.resize(np.array([np.nan, np.inf, -np.inf, 1e38, -3e38, 2e3], dtype="<f4"), int(bad.sum()))
    noise = np.frombuffer(np.random.default_rng(1).bytes(4 * RATE), dtype="<f4")
    data = np.concatenate([x, noise]).astype("<f4")
    with np.errstate(invalid="ignore", over="ignore"):
        expected = int(np.count_nonzero(~(np.abs(data) <= 1000.0)))
    r = subprocess.run(
        [sys.executable, "-W", "default", "-m", "detector.cli.listen", "-", "--stdin-format", "f32le",
         "--model", str(toy_model), "--no-publish", "--json-all"],
        input=data.tobytes(), capture_output=True, env=ENV, cwd=REPO, timeout=120,
    )
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "Warning:" not in err and "overflow" not in err and "invalid value" not in err, err
    assert err.count("out-of-range") == 1, err  # one log line, not one per chunk
    msgs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    status = [m for m in msgs if m["type"] == "status"]
    assert status[-1]["nonfinite_samples"] == expected > int(bad.sum())
    notes = [m for m in status if "out-of-range" in m.get("message", "")]
    assert len(notes) == 1 and "replaced by 0" in notes[0]["message"]
    assert all(np.isfinite(m["level_dbfs"]) and m["level_dbfs"] <= 60.0 for m in status)
    assert all(np.isfinite(m["score"]) for m in msgs if m["type"] == "event")
