"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from detector.model.contract import ContractError

__all__ = ["EXPECTED_ERRORS", "run_cli", "setup_logging", "signals_set", "stop_on_signals"]

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


def _install(stop: threading.Event, log: logging.Logger, what: str) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; returns what puts the previous handlers back.

    The handler never touches the event. Python runs a handler on the main thread between
    two bytecodes, which may be inside ``stop.wait()`` while it holds the event's lock (not
    reentrant): ``stop.set()`` there waits for that lock forever, and the process never
    exits. The handler only writes the signal's number to a pipe; a thread reads it, logs
    it and sets the event.
    """
    r, w = os.pipe()

    def watch() -> None:
        while data := os.read(r, 1):  # b"" once the write end is closed
            log.info("%s: %s", signal.Signals(data[0]).name, what)
            stop.set()
        os.close(r)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        try:
            os.write(w, bytes([signum]))
        except OSError:  # the pipe was closed as the handlers were put back
            pass

    threading.Thread(target=watch, name="sed-signals", daemon=True).start()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(w)

    return restore


@contextlib.contextmanager
def signals_set(stop: threading.Event, log: logging.Logger, what: str) -> Iterator[threading.Event]:
    """While inside, SIGINT or SIGTERM sets ``stop`` (logged as ``SIGNAME: what``)."""
    restore = _install(stop, log, what)
    try:
        yield stop
    finally:
        restore()


def stop_on_signals(log: logging.Logger, what: str) -> threading.Event:
    """An event set by SIGINT or SIGTERM, which are logged as ``SIGNAME: what``.

    Call it before anything connects, so a stop asked for during start-up is a clean exit.
    """
    stop = threading.Event()
    _install(stop, log, what)  # for the rest of the process
    return stop
