"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from detector.model.contract import ContractError

__all__ = ["EXPECTED_ERRORS", "run_cli", "setup_logging", "stop_on_signals"]

#: Errors that mean "bad input or environment": reported in one line, exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ContractError, ValueError, FileNotFoundError, PermissionError, OSError, RuntimeError, ImportError,
)


def setup_logging(level: str) -> None:
    """Log to stderr (stdout is for JSON)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; expected errors become ``prog: error: ...`` on stderr and exit 2.

    ``kill -USR1 <pid>`` prints every thread's Python stack to stderr and the program goes
    on: what a process that will not stop is doing, without a debugger.
    """
    err = sys.__stderr__  # the process's own stderr (sys.stderr may be a capture without a descriptor)
    if hasattr(signal, "SIGUSR1") and err is not None:
        try:
            faulthandler.register(signal.SIGUSR1, file=err, all_threads=True)
        except (OSError, ValueError):  # no file descriptor behind it (an embedding host's stream)
            pass
    try:
        return body()
    except EXPECTED_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def stop_on_signals(log: logging.Logger, what: str) -> threading.Event:
    """An event set by SIGINT or SIGTERM, which are logged as ``SIGNAME: what``.

    Call it before anything connects, so a stop asked for during start-up is a clean exit.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop
