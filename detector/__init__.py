"""sed: streaming real-time sound event detection (runtime; never imports torch)."""

import os
import sys

# The detector's matrix products are tiny (a few hundred frames x 257 x 64); a
# multi-threaded BLAS only contends with onnxruntime's threads for them. An explicit
# setting by the user wins. Must run before numpy is imported: OpenBLAS reads it once.
OPENBLAS_THREADS_LATE = "numpy" in sys.modules and "OPENBLAS_NUM_THREADS" not in os.environ
"""True when a program imported numpy before ``detector`` without setting
``OPENBLAS_NUM_THREADS``: OpenBLAS then runs the front end's mel product on every core,
where it fights the front end's other thread and onnxruntime for them (measured: file
mode 1,316x instead of 2,129x in the same minute on 2 cores). ``Listener`` logs a warning."""
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
