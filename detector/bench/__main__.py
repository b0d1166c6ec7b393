"""``python -m detector.bench ...``: the sed-bench command (see :mod:`detector.bench.run`)."""

import sys

from detector.bench.run import main

sys.exit(main())
