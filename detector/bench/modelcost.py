"""What a model costs: MACs and parameters from its ONNX graph, ms per patch, peak FLOP/s.

:func:`graph_cost` walks any ONNX graph (ours, or a QDQ-quantised YAMNet) with ONNX
shape inference and counts the multiply-accumulates of its Conv, Gemm and MatMul
nodes for one input of batch 1. It needs the ``onnx`` package (the train extra);
the detector itself does not.

:func:`peak_flops` measures the machine's float32 matrix-multiply rate (numpy sgemm)
in a subprocess, so the BLAS can use ``threads`` cores even though ``detector``
pins its own BLAS to one thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GraphCost", "graph_cost", "ms_per_patch", "peak_flops"]

log = logging.getLogger(__name__)

#: Ops whose MACs are counted; everything else (activations, pooling, norms) is element-wise.
COUNTED_OPS = ("Conv", "Gemm", "MatMul")
#: Inputs of (De)QuantizeLinear that are quantisation parameters, not weights.
_QUANT_PARAM_INPUTS = (1, 2)
SGEMM_SIZE = 2048  # n of the n x n float32 matmul used to measure peak FLOP/s


@dataclass(frozen=True)
class GraphCost:
    """MACs for one batch-1 input, and parameter count, of an ONNX graph.

    ``params`` counts the elements of weight initializers (quantisation scales and
    zero points excluded); ``macs_by_op`` splits ``macs`` by op type.
    """

    macs: int
    params: int
    macs_by_op: dict[str, int] = field(default_factory=dict)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ImportError(
            "counting MACs from an ONNX graph needs the onnx package: pip install onnx "
            "(or pip install 'sed[train]')"
        ) from e
    return onnx


def _shape(vi: Any) -> list[int] | None:
    dims = vi.type.tensor_type.shape.dim
    if not dims:
        return None
    out = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    return out if all(d > 0 for d in out) else None


def graph_cost(path: str | Path) -> GraphCost:
    """Count MACs (batch 1) and parameters of the ONNX model at ``path``.

    A Conv output element costs ``in_channels / groups * kh * kw`` MACs (the weight's
    dims after the first); a Gemm or MatMul output element costs the shared inner
    dimension. Symbolic input dims (the batch) are fixed to 1 first. External weight
    data is not loaded: only shapes are needed.
    """
    onnx = _onnx()
    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        s = _shape(vi)
        if s is not None:
            shapes[vi.name] = s
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    quant_params = {
        n.input[i]
        for n in g.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for i in _QUANT_PARAM_INPUTS
        if i < len(n.input)
    }
    params = sum(
        math.prod(i.dims) for i in g.initializer if i.name not in quant_params and math.prod(i.dims) > 1
    )
    by_op: dict[str, int] = {}
    for node in g.node:
        if node.op_type not in COUNTED_OPS:
            continue
        out = shapes.get(node.output[0])
        a = shapes.get(node.input[0])
        b = shapes.get(node.input[1])
        if out is None or a is None or b is None:
            raise ValueError(
                f"{path}: cannot infer the shapes of {node.op_type} node {node.name!r} "
                f"(input {a}, weight {b}, output {out}); MACs need a shape-inferable graph"
            )
        if node.op_type == "Conv":
            per_out = math.prod(b[1:])
        elif node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            per_out = a[0] if trans_a else a[-1]
        else:  # MatMul
            per_out = a[-1]
        by_op[node.op_type] = by_op.get(node.op_type, 0) + math.prod(out) * per_out
    return GraphCost(sum(by_op.values()), int(params), by_op)


_SGEMM_CODE = """
import json, sys, time
import numpy as np
n, seconds = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best, end = float("inf"), time.perf_counter() + seconds
while time.perf_counter() < end:
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(json.dumps({"flops": 2 * n ** 3 / best}))
"""


def peak_flops(threads: int, seconds: float = 2.0, n: int = SGEMM_SIZE) -> float:
    """Best float32 FLOP/s of an ``n x n`` numpy matmul on ``threads`` BLAS threads.

    Runs in a subprocess with ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set, for
    ``seconds`` of repeats; returns the fastest (least disturbed) repeat.
    """
    if threads < 1:
        raise ValueError(f"threads={threads}; must be >= 1")
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", _SGEMM_CODE, str(n), str(seconds)],
        env=env, capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout)["flops"])


def ms_per_patch(
    run: Callable[[np.ndarray], Any],
    batch: int,
    patch_shape: tuple[int, int],
    seconds: float = 1.0,
    low: float = -6.9,
    high: float = 3.0,
) -> float:
    """Median milliseconds per patch of ``run(patches (batch, *patch_shape))``.

    Patches are uniform random log-mel values in ``[low, high]``; one warm-up call,
    then repeats for at least ``seconds`` (and at least 3 calls).
    """
    if batch < 1:
        raise ValueError(f"batch={batch}; must be >= 1")
    rng = np.random.default_rng(0)
    x = rng.uniform(low, high, size=(batch, *patch_shape)).astype(np.float32)
    run(x)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / batch
