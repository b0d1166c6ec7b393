"""Shared fixtures: a toy model of the real architecture, toy scenes, real clips.

The toy model (``training.toy.make_toy_model``) is trained once per test session
(~10 s on one core) and exported to ONNX with its contract, so runtime tests load
a real sed-export model rather than a stand-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DATA = Path(__file__).parent / "data"
RATE = 16000

#: The toy scene used by pipeline tests: (label, start s, duration s), 12 s long.
SCENE_EVENTS = [("Sine wave", 2.0, 2.0), ("White noise", 6.0, 1.0), ("Beep, bleep", 8.0, 3.0)]
SCENE_SECONDS = 12.0


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch", reason="building the toy model needs the train extra")
    torch.set_num_threads(1)
    from training.toy import make_toy_model

    return make_toy_model(tmp_path_factory.mktemp("toy_model"), seed=0)


@pytest.fixture(scope="session")
def toy_scene(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Path:
    from training.toy import make_toy_scene

    x = make_toy_scene(SCENE_EVENTS, SCENE_SECONDS, seed=1)
    path = tmp_path_factory.mktemp("scene") / "scene.wav"
    sf.write(path, x.astype(np.float32), RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="session")
def real_clip() -> np.ndarray:
    """4 s of a real baby cry, float64 at 16 kHz."""
    x, sr = sf.read(DATA / "baby_cry.flac", dtype="float64")
    assert sr == RATE
    return x


@pytest.fixture(scope="session")
def speech_clip_path() -> Path:
    return DATA / "speech_digit.flac"
