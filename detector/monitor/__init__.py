"""sed-monitor: a Textual dashboard for the ``sed-listen`` ZeroMQ stream.

The monitor only reads the wire format (:mod:`detector.io.wire`, standard library
only); it never imports inference code (numpy, onnxruntime, torch), so it starts
fast and can run on a machine that has no model.

Modules:
    ``state``       pure-Python model of streams, labels, events and status
    ``link``        what the subscriber hands the UI: connection state, seq tracking, batches
    ``subscriber``  the ZeroMQ SUB loop: connection tracking, seq gaps, coalescing
    ``widgets``     the panels (scores, status, event log, header)
    ``app``         the Textual app and the ``sed-monitor`` entry point
    ``demo``        ``--demo``: runs ``sed-listen`` on a bundled clip in a subprocess
"""

__all__: list[str] = []
