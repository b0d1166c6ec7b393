"""The front end is defined once: incremental == offline == torchaudio (training)."""

from __future__ import annotations

import numpy as np
import pytest

from detector.frontend.features import FeatureConfig, frame_count, log_mel, mel_filterbank
from detector.frontend.logmel import LogMelKernel, LogMelStage

CFG = FeatureConfig()


def _incremental(x: np.ndarray, chunk: int) -> np.ndarray:
    stage = LogMelStage(CFG)
    out = [stage.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    assert stage.frames_done == frame_count(len(x), CFG)
    return np.concatenate(out) if out else np.zeros((0, CFG.n_mels), np.float32)


@pytest.mark.parametrize("chunk", [1, 7, 160, 399, 400, 401, 1024, 16000, 160000])
def test_incremental_equals_offline_for_any_chunk_size(real_clip: np.ndarray, chunk: int) -> None:
    x = real_clip if chunk > 1 else real_clip[:8000]  # 1-sample chunks: half a second is plenty
    ref = log_mel(x, CFG)
    got = _incremental(x, chunk)
    assert got.shape == ref.shape == (frame_count(len(x), CFG), CFG.n_mels)
    np.testing.assert_array_equal(got, ref)


def test_a_frame_does_not_depend_on_the_frames_computed_with_it(real_clip: np.ndarray) -> None:
    """The mel product is float32 on fixed tiles: a frame lands at any position of a tile
    (other streams' frames before it, a short or a long call) and gets the same bits."""
    frames = LogMelStage(CFG).frames(real_clip[:16000])  # 98 frames
    kernel = LogMelKernel(CFG, block=128)
    ref = kernel(frames)
    other = LogMelStage(CFG).frames(np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32))
    for shift in (1, 37, 63, 64, 65, 127):  # frames of another stream before these
        got = kernel.many([other[:0], np.tile(other, (3, 1))[:shift], frames])[shift:]
        np.testing.assert_array_equal(got, ref)
    one_by_one = np.concatenate([kernel(frames[i : i + 1]) for i in range(len(frames))])
    np.testing.assert_array_equal(one_by_one, ref)
    assert not np.array_equal(ref[:49], kernel(other)[:49])  # the check can tell frames apart


def test_one_kernel_called_from_two_threads_at_once_gives_each_its_own_rows(real_clip: np.ndarray) -> None:
    # The Listener runs one kernel on its front-end thread (large reads) and on its loop
    # thread (small ones) at the same time; a shared scratch buffer once mixed their rows.
    import threading

    cfg = FeatureConfig()
    kernel = LogMelKernel(cfg)
    frames = LogMelStage(cfg).frames(real_clip)  # (k, win_length)
    inputs = [frames, frames[::-1].copy(), frames * 0.25, frames[: len(frames) // 3]]
    expected = [LogMelKernel(cfg).many([x]) for x in inputs]
    bad: list[int] = []

    def work(offset: int) -> None:
        for i in range(40):
            j = (i + offset) % len(inputs)
            if not np.array_equal(kernel.many([inputs[j]]), expected[j]):
                bad.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_torchaudio_frontend_matches_numpy_on_real_audio(real_clip: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    from training.frontend import LogMel

    ref = log_mel(real_clip, CFG)
    got = LogMel(CFG)(torch.from_numpy(real_clip)).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_torchaudio_filterbank_is_ours() -> None:
    torchaudio = pytest.importorskip("torchaudio")
    fb = torchaudio.functional.melscale_fbanks(
        CFG.n_freqs, CFG.f_min, CFG.f_max, CFG.n_mels, CFG.sample_rate, norm=None, mel_scale="htk"
    ).double().numpy()
    # torchaudio builds its filters in float32; ours are float64.
    np.testing.assert_allclose(mel_filterbank(CFG), fb, atol=1e-5)


def test_frame_geometry() -> None:
    assert frame_count(399, CFG) == 0
    assert frame_count(400, CFG) == 1
    assert frame_count(560, CFG) == 2
    assert CFG.patch_samples == 95 * 160 + 400
    assert CFG.patch_seconds == pytest.approx(0.96)
    assert log_mel(np.zeros(100), CFG).shape == (0, CFG.n_mels)


def test_silence_is_log_offset_and_tone_lands_in_its_band() -> None:
    silent = log_mel(np.zeros(CFG.sample_rate), CFG)
    assert np.allclose(silent, np.log(CFG.log_offset))
    t = np.arange(CFG.sample_rate) / CFG.sample_rate
    tone = log_mel(0.5 * np.sin(2 * np.pi * 1000.0 * t), CFG)
    centres = np.argmax(mel_filterbank(CFG), axis=0) * CFG.sample_rate / CFG.n_fft
    assert abs(centres[int(np.argmax(tone.mean(axis=0)))] - 1000.0) < 100.0


def test_config_round_trip_and_errors() -> None:
    assert FeatureConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown feature key"):
        FeatureConfig.from_dict({"n_mel": 64})
    with pytest.raises(ValueError, match="expected a number"):
        FeatureConfig.from_dict({"n_mels": "64"})
    with pytest.raises(ValueError, match="f_max"):
        FeatureConfig(f_max=9000.0)


def test_incremental_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="mono"):
        LogMelStage(CFG).process(np.zeros((100, 2)))
