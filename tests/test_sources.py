"""FileSource / StdinSource / parse_source on real files written with soundfile."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from detector.frontend.features import FeatureConfig
from detector.sources.parse import (
    FileSource,
    MicSource,
    Source,
    SourceError,
    StdinSource,
    describe_format,
    is_live_spec,
    list_devices,
    parse_source,
)

RATE = FeatureConfig().sample_rate
REPO = Path(__file__).resolve().parents[1]


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def read_all(src: FileSource, max_samples: int = 1600) -> np.ndarray:
    parts = []
    while (x := src.read(max_samples)) is not None:
        assert x.dtype == np.float32 and x.ndim == 1 and x.shape[0] <= max_samples
        parts.append(x)
    src.close()
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.fft.rfftfreq(x.shape[0], 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("in_rate", [8000, 16000, 22050, 44100, 48000])
def test_rates_resampled_to_output_rate(tmp_path: Path, in_rate: int) -> None:
    path = tmp_path / f"tone_{in_rate}.wav"
    sf.write(path, tone(1000.0, in_rate, 1.0), in_rate, subtype="PCM_16")
    src = FileSource(path, RATE)
    assert (src.in_rate, src.channels, src.stream_id) == (in_rate, 1, path.name)
    y = read_all(src, max_samples=777)
    assert y.shape[0] == RATE
    assert src.state == "ended"
    assert src.read(100) is None
    ref = tone(1000.0, RATE, 1.0)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 2e-3  # 16-bit quantisation + filter


@pytest.mark.parametrize(
    ("fmt", "subtype", "tol"),
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 1e-6),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
        ("OGG", "VORBIS", None),
    ],
)
def test_subtypes_and_stereo_downmix(
    tmp_path: Path, fmt: str, subtype: str, tol: float | None
) -> None:
    left, right = tone(440.0, RATE, 0.5, 0.4), tone(440.0, RATE, 0.5, 0.2)
    path = tmp_path / f"st.{fmt.lower()}"
    sf.write(path, np.stack([left, right], axis=1), RATE, format=fmt, subtype=subtype)
    y = read_all(FileSource(path, RATE))
    expected = (left + right) / 2
    assert y.shape == expected.shape
    if tol is not None:
        assert np.abs(y - expected).max() < tol
    else:  # lossy: the tone is there at the right level
        assert dominant_hz(y, RATE) == pytest.approx(440.0, abs=3)
        assert np.sqrt(np.mean(y**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_decodes_bit_for_bit_as_libsndfile(tmp_path: Path, channels: int) -> None:
    """16-bit PCM takes a faster path (int16 into a reused buffer, scaled by numpy); the
    samples are exactly libsndfile's float32 ones, full scale and the last block included."""
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32768, size=(3 * RATE + 123, channels)).astype(np.int16)
    pcm[:3, 0] = [-32768, 32767, 1]
    path = tmp_path / "pcm16.wav"
    sf.write(path, pcm, RATE, subtype="PCM_16")
    src = FileSource(path, RATE, chunk_seconds=1.0)
    assert src._pcm16 and src._direct is not None  # WAV: read with os.preadv, not libsndfile
    assert src._file.closed  # one file descriptor a stream, as before
    got = read_all(src, max_samples=7000)
    ref = sf.read(path, dtype="float32", always_2d=True)[0]
    ref = ref[:, 0] if channels == 1 else ref.mean(axis=1, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    src.close()
    assert src._direct_fd == -1


def test_pcm16_wav_read_directly_finds_its_data_chunk(tmp_path: Path) -> None:
    """The direct WAV read walks the chunks (an odd-sized one before the data is padded) and
    gives libsndfile's samples; a file whose data chunk is cut short is left to libsndfile."""
    pcm = (np.arange(-5000, 5000) * 3).astype("<i2")
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + RATE.to_bytes(4, "little")
    fmt += (2 * RATE).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"junk" + (3).to_bytes(4, "little") + b"abc\x00"  # odd size: one pad byte
    body += b"data" + (pcm.nbytes).to_bytes(4, "little") + pcm.tobytes()
    path = tmp_path / "chunks.wav"
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    src = FileSource(path, RATE)
    assert src._direct is not None and src._direct[1] == pcm.size
    np.testing.assert_array_equal(read_all(src), sf.read(path, dtype="float32")[0])
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:-1000])
    src = FileSource(cut, RATE, allow_truncated=True)
    np.testing.assert_array_equal(read_all(src), sf.read(cut, dtype="float32")[0])


def test_pcm16_wav_read_error_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    path = tmp_path / "disk.wav"
    sf.write(path, np.zeros(RATE, dtype=np.int16), RATE, subtype="PCM_16")
    src = FileSource(path, RATE)

    def failing(*_args: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(SourceError, match=r"disk\.wav: read error after 0\.000 s: Input/output error"):
        src.read(1000)
    assert src.state == "error"


def test_chunking_does_not_change_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (44100, 3)).astype(np.float32), 44100, subtype="FLOAT")
    a = read_all(FileSource(path, RATE, chunk_seconds=0.01), max_samples=1)
    b = read_all(FileSource(path, RATE, chunk_seconds=3.0), max_samples=100000)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert a.shape[0] == RATE


def test_reads_of_any_size_across_decoded_blocks_are_the_file_bit_for_bit(tmp_path: Path) -> None:
    """Reads of any size, within one decoded block or across blocks, give the file bit for bit."""
    rng = np.random.default_rng(3)
    path = tmp_path / "pcm.wav"
    sf.write(path, rng.integers(-32768, 32767, 10 * RATE, dtype=np.int16), RATE, subtype="PCM_16")
    want, _ = sf.read(path, dtype="float32")
    for chunk_s in (0.5, 6.0):  # blocks of 4 and 6 s
        source = FileSource(path, RATE, chunk_seconds=chunk_s)
        got, sizes = [], iter([1, 7, 9000, 3, 70000, 25000, 100001, 5])
        while (x := source.read(next(sizes, 4096))) is not None:
            got.append(x.copy())
        np.testing.assert_array_equal(np.concatenate(got), want)
        assert [g.shape[0] for g in got] == [1, 7, 9000, 3, 70000, 25000, 160000 - 104011]


def test_info_log_says_what_it_got(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cd.wav"
    sf.write(path, np.zeros((4410, 2), np.float32), 44100)
    with caplog.at_level(logging.INFO, logger="detector.sources.file"):
        FileSource(path, RATE).close()
    assert "got 44.1 kHz stereo; resampling to 16 kHz mono" in caplog.text
    assert describe_format(16000, 2, 16000) == "got 16 kHz stereo; downmixing to mono"
    assert describe_format(8000, 1, 16000) == "got 8 kHz mono; resampling to 16 kHz"
    assert describe_format(16000, 1, 16000) == "got 16 kHz mono; no conversion needed"


def test_header_only_wav_ends_at_once(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, np.float32), RATE)
    src = FileSource(path, RATE)
    assert src.frames == 0
    assert src.read(100) is None and src.state == "ended"


def test_nonfinite_samples_replaced_and_counted(tmp_path: Path) -> None:
    x = tone(300.0, RATE, 0.5)
    x[100] = np.nan
    x[200:203] = np.inf
    x[5000] = -np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    src = FileSource(path, RATE)
    y = read_all(src)
    assert src.nonfinite_samples == 5
    assert np.isfinite(y).all()
    assert y[100] == 0.0 and y[201] == 0.0


def test_realtime_paces_to_wall_clock(tmp_path: Path) -> None:
    import time

    path = tmp_path / "rt.wav"
    sf.write(path, tone(500.0, RATE, 0.3), RATE)
    src = FileSource(path, RATE, realtime=True)
    assert src.is_live
    t0 = time.monotonic()
    first = src.read(RATE)
    assert first is not None and first.shape[0] < RATE // 10  # nothing is due yet
    got = first.shape[0]
    while (x := src.read(RATE)) is not None:
        got += x.shape[0]
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    assert got == round(0.3 * RATE)
    assert 0.28 <= elapsed < 1.5


# ------------------------------------------------------------------ bad input


def _wav_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good.wav"
    sf.write(path, tone(440.0, RATE, 0.5), RATE, subtype="PCM_16")
    return path.read_bytes()


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no such file.*'mic"):
        FileSource(tmp_path / "nope.wav", RATE)
    with pytest.raises(SourceError, match="is a directory"):
        FileSource(tmp_path, RATE)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads any file; permission check runs as nobody below"
)
def test_no_permission(tmp_path: Path) -> None:
    path = tmp_path / "secret.wav"
    path.write_bytes(_wav_bytes(tmp_path))
    path.chmod(0)
    with pytest.raises(SourceError, match="no permission"):
        FileSource(path, RATE)


def test_no_permission_as_unprivileged_user(tmp_path: Path) -> None:
    """As root, check the permission error in a child process that drops to 'nobody'."""
    if os.geteuid() != 0:
        pytest.skip("covered by test_no_permission")
    path = Path("/tmp") / f"sed_perm_{os.getpid()}.wav"
    path.write_bytes(_wav_bytes(tmp_path))
    path.chmod(0o600)
    code = (
        "import os, sys\n"
        "from detector.sources.parse import FileSource, SourceError\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n FileSource(sys.argv[1], 16000)\n"
        "except SourceError as e:\n print('ERR', e)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        path.unlink()
    assert "ERR" in out.stdout and "no permission" in out.stdout, out.stdout + out.stderr


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty \(0 bytes\).*WAV"):
        FileSource(path, RATE)


def test_random_bytes_and_text(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 312, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"ends after 312 bytes.*not a WAV.*Accepted: .*FLAC"):
        FileSource(path, RATE)
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 10)
    with pytest.raises(SourceError, match=r"ends after 60 bytes.*b'hello"):
        FileSource(path, RATE)


def test_truncated_files(tmp_path: Path) -> None:
    wav = _wav_bytes(tmp_path)
    path = tmp_path / "cut_header.wav"
    path.write_bytes(wav[:30])
    with pytest.raises(SourceError, match=r"30 bytes.*RIFF/WAV header.*data"):
        FileSource(path, RATE)
    path = tmp_path / "cut_data.wav"
    path.write_bytes(wav[:5000])
    with pytest.raises(SourceError, match=r"truncated WAV: header declares 16000 data bytes"):
        FileSource(path, RATE)
    src = FileSource(path, RATE, allow_truncated=True)
    assert read_all(src).shape[0] == (5000 - 44) // 2
    flac = tmp_path / "good.flac"
    sf.write(flac, np.random.default_rng(2).uniform(-0.5, 0.5, RATE * 2), RATE)
    path = tmp_path / "cut.flac"
    path.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    src = FileSource(path, RATE)
    with pytest.raises(SourceError, match=r"decode error after .*truncated or corrupt"):
        read_all(src)
    assert src.state == "error"


def test_zero_channels_unsupported_codec_and_absurd_rate(tmp_path: Path) -> None:
    wav = bytearray(_wav_bytes(tmp_path))
    zero = bytearray(wav)
    zero[22:24] = (0).to_bytes(2, "little")
    (tmp_path / "zero.wav").write_bytes(zero)
    with pytest.raises(SourceError, match="Channel count is zero"):
        FileSource(tmp_path / "zero.wav", RATE)
    codec = bytearray(wav)
    codec[20:22] = (0x55).to_bytes(2, "little")  # MPEG layer 3 inside WAV
    (tmp_path / "codec.wav").write_bytes(codec)
    with pytest.raises(SourceError, match=r"RIFF/WAV header.*fmt"):
        FileSource(tmp_path / "codec.wav", RATE)
    for rate in (500, 400000):
        bad = bytearray(wav)
        bad[24:28] = rate.to_bytes(4, "little")
        (tmp_path / f"r{rate}.wav").write_bytes(bad)
        with pytest.raises(SourceError, match=f"{rate} Hz is outside the accepted 1000..384000"):
            FileSource(tmp_path / f"r{rate}.wav", RATE)


# ------------------------------------------------------------------ memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


@pytest.mark.slow
def test_one_hour_file_in_constant_memory(tmp_path: Path) -> None:
    """A 1-hour 8 kHz int16 file (57.6 MB) streams through with < 50 MB resident-size growth."""
    in_rate, seconds, block = 8000, 3600, 8000 * 60
    path = tmp_path / "hour.wav"
    x = tone(440.0, in_rate, block / in_rate, amp=0.3)
    with sf.SoundFile(path, "w", in_rate, 1, subtype="PCM_16") as f:
        for _ in range(seconds * in_rate // block):
            f.write(x)
    # Warm up (imports, filter tables, allocator) before measuring the peak.
    warm = FileSource(path, RATE)
    for _ in range(5):
        warm.read(RATE)
    warm.close()
    before = peak = _rss_mb()
    src = FileSource(path, RATE)
    total = 0
    while (y := src.read(RATE)) is not None:
        total += y.shape[0]
        if total % (RATE * 60) == 0:  # sample the resident size once a minute of audio
            peak = max(peak, _rss_mb())
    growth = peak - before
    print(f"\n1 h file: {total} samples out, peak RSS growth {growth:.1f} MB")
    assert total == seconds * RATE
    assert growth < 50


# ------------------------------------------------------------------ stdin and parsing


def _read_live(src: Source, max_samples: int = 800, timeout: float = 20.0) -> np.ndarray:
    import time

    parts, t0 = [], time.monotonic()
    while (x := src.read(max_samples)) is not None:
        assert x.dtype == np.float32 and x.shape[0] <= max_samples
        parts.append(x)
        if x.shape[0] == 0:
            time.sleep(0.005)
        assert time.monotonic() - t0 < timeout, "source never ended"
    src.close()
    return np.concatenate(parts)


@pytest.mark.parametrize(("fmt", "channels", "in_rate"), [("s16le", 1, 16000), ("f32le", 2, 44100)])
def test_stdin_source_from_a_real_pipe(fmt: str, channels: int, in_rate: int) -> None:
    x = tone(700.0, in_rate, 0.5)
    frames = np.repeat(x[:, None], channels, axis=1)
    if fmt == "s16le":
        data = np.round(frames * 32767).astype("<i2").tobytes()
    else:
        data = frames.astype("<f4").tobytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data + b"\x01")  # one stray byte: not a whole frame, ignored at EOF
    proc.stdin.close()
    src = StdinSource(RATE, in_rate=in_rate, channels=channels, fmt=fmt, stream=proc.stdout)
    y = _read_live(src)
    proc.wait(timeout=10)
    assert src.state == "ended" and src.trailing_bytes == 1
    assert y.shape[0] == round(x.shape[0] * RATE / in_rate)
    ref = tone(700.0, RATE, 0.5)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-3


def test_stdin_back_pressure_loses_nothing() -> None:
    """A ring far smaller than the input: the reader waits instead of dropping."""
    x = np.random.default_rng(3).uniform(-1, 1, RATE * 2).astype("<f4")
    src = StdinSource(RATE, fmt="f32le", stream=io.BytesIO(x.tobytes()), ring_seconds=0.01)
    y = _read_live(src, max_samples=97)
    np.testing.assert_array_equal(y, x)
    assert src.dropped_samples == 0
    with pytest.raises(SourceError, match="accepted"):
        StdinSource(RATE, fmt="mp3")
    with pytest.raises(SourceError, match="outside the accepted"):
        StdinSource(RATE, in_rate=100)


def test_parse_source(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, np.zeros(1600, np.float32), RATE)
    src = parse_source(str(path), RATE, realtime=True)
    assert isinstance(src, FileSource) and src.realtime and src.stream_id == "a.flac"
    src.close()
    for spec in ("-", "stdin"):
        s = parse_source(spec, RATE, stdin_rate=8000, stdin_format="f32le")
        assert isinstance(s, StdinSource) and s.stream_id == "stdin" and s.in_rate == 8000
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.wav"), RATE)
    # what is_live_spec says without opening anything is what parse_source makes
    for spec, realtime in ((str(path), False), (str(path), True), ("-", False)):
        made = parse_source(spec, RATE, realtime=realtime)
        assert is_live_spec(spec, realtime) == made.is_live
        made.close()
    assert is_live_spec("mic") and is_live_spec("mic:2") and is_live_spec("rtsp://cam/stream")


def test_unknown_microphone_names_the_way_out() -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("libportaudio2 not installed")
    with pytest.raises(SourceError, match=r"--list-devices.*--file"):
        parse_source("mic:no-such-device-xyz", RATE)
    with pytest.raises(SourceError, match=r"--list-devices.*--file"):
        MicSource(4242, RATE)
    assert isinstance(list_devices(), str)
