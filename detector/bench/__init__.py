"""sed-bench machinery: the benchmark (``run``, also ``python -m detector.bench``), its
subprocesses, report, scaling sweep, soak test and model-cost estimate."""
