"""sed: streaming real-time sound event detection (runtime; never imports torch)."""

import os

# The detector's matrix products are tiny (a few hundred frames x 257 x 64); a
# multi-threaded BLAS only contends with onnxruntime's threads for them. An explicit
# setting by the user wins. Must run before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
