"""``sed-monitor``: a Textual dashboard for the ``sed-listen`` ZeroMQ stream.

Run ``sed-monitor`` (or ``python -m detector.monitor.app``) next to a running
``sed-listen``; ``--connect`` picks another endpoint, ``--demo`` starts
``sed-listen`` on a bundled clip in a subprocess and watches it.
``--curve-secret-key``/``--curve-server-key`` watch a daemon whose PUB socket is a
CURVE server (``docs/security.md``); ``--control`` asks the daemon's control socket
for the open events on every connection, so a late monitor shows them at once.

The ZeroMQ loop (:class:`~detector.monitor.subscriber.Subscriber`) runs in a
Textual thread worker and posts at most ``--ui-rate`` coalesced
:class:`BatchReceived` messages a second; the app applies them to a
:class:`~detector.monitor.state.MonitorState` and redraws only what changed.
This module imports no inference code (no numpy, onnxruntime or torch).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input

from detector.io.control import DEFAULT_CONTROL_ENDPOINT
from detector.io.wire import DEFAULT_ENDPOINT

from .demo import DEMO_CLIP, DemoDaemon, free_endpoint
from .state import Batch, MonitorState, StreamView
from .subscriber import Subscriber, SubscriberConfig
from .widgets import ConnectionHeader, EventLog, HelpScreen, ScoresPanel, StatusPanel, StreamTabs

__all__ = ["BatchReceived", "MonitorApp", "main", "run_demo"]

log = logging.getLogger(__name__)

TICK_S = 0.25
"""Redraw interval of the clock-driven parts (age of the last message, waiting time)."""
EVENT_LOG_INTERVAL_S = 0.5
"""Shortest time between two event-log redraws: a storm of events (each one adds or
changes a table row and may scroll) must not starve the key handling."""
MAX_STREAM_KEYS = 9
"""Streams reachable with the digit keys 1..9."""


class BatchReceived(Message):
    """A coalesced batch from the subscriber thread."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class MonitorApp(App[None]):
    """The dashboard: header, stream tabs, top-k scores, stream status, event log."""

    TITLE = "sed-monitor"
    CSS = """
    Screen { layout: vertical; }
    #header { height: 1; background: $boost; }
    #tabs { height: 1; }
    #panels { height: 15; }
    #scores { width: 2fr; height: 100%; padding: 0 1; border: round $primary-darken-2; }
    #status { width: 1fr; min-width: 44; height: 100%; padding: 0 1;
              border: round $primary-darken-2; }
    #events { height: 1fr; border: round $primary-darken-2; }
    #filter { dock: bottom; display: none; }
    #filter.visible { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p,space", "toggle_pause", "Pause"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("n", "next_stream(1)", "Next stream"),
        Binding("b", "next_stream(-1)", "Prev stream"),
        *[
            Binding(str(i), f"select_stream({i - 1})", show=False)
            for i in range(1, MAX_STREAM_KEYS + 1)
        ],
        Binding("question_mark,h", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        config: SubscriberConfig | None = None,
        *,
        subscribe: bool = True,
    ) -> None:
        """``subscribe=False`` starts no ZeroMQ worker (feed batches by hand in tests)."""
        super().__init__()
        self.config = config or SubscriberConfig()
        self.state = MonitorState(self.config.endpoint)
        self.selected: str | None = None
        self.paused = False
        self.held = 0
        """Batches received while paused."""
        self.label_filter = ""
        self.notice = ""
        """A standing line for the header (e.g. the demo daemon failed)."""
        self.batches = 0
        self._events_dirty = False
        self._events_drawn_at = -EVENT_LOG_INTERVAL_S
        self._subscribe_on_mount = subscribe
        self._stop = threading.Event()
        self.subscriber = Subscriber(self.config, self._deliver)
        # Held here, not queried: a modal screen (help) may be on top when data arrives.
        self.header = ConnectionHeader(id="header")
        self.tabs = StreamTabs(id="tabs")
        self.scores = ScoresPanel(id="scores")
        self.status = StatusPanel(id="status")
        self.event_log = EventLog(id="events")
        self.filter_box = Input(
            placeholder="filter events by label (enter: keep, escape: clear)", id="filter"
        )

    # ---- layout
    def compose(self) -> ComposeResult:
        """Header, stream tabs, scores | status, event log, filter input, footer."""
        yield self.header
        yield self.tabs
        with Horizontal(id="panels"):
            yield self.scores
            yield self.status
        yield self.event_log
        yield self.filter_box
        yield Footer()

    def on_mount(self) -> None:
        """Draw the empty state, start the clock and the subscriber."""
        self.redraw()
        self.set_interval(TICK_S, self._tick)
        self.event_log.focus()
        if self._subscribe_on_mount:
            self._subscribe()

    def on_unmount(self) -> None:
        """Stop the subscriber thread."""
        self._stop.set()

    @work(thread=True, exclusive=True, name="zmq-subscriber")
    def _subscribe(self) -> None:
        self.subscriber.run(self._stop)

    def _deliver(self, batch: Batch) -> None:
        """Called in the subscriber thread; ``post_message`` is thread-safe."""
        self.post_message(BatchReceived(batch))

    # ---- data
    def on_batch_received(self, message: BatchReceived) -> None:
        """Apply a batch to the state; redraw what changed unless paused."""
        self.apply_batch(message.batch)

    def apply_batch(self, batch: Batch) -> None:
        """Apply ``batch`` (also the entry point for tests without ZeroMQ)."""
        if not self.header.is_attached:
            return  # shutting down: the widgets are gone
        changes = self.state.apply_batch(batch)
        self.batches += 1
        if batch.snapshot:
            self.notify(batch.snapshot, title="sed-monitor", severity="warning")
        if self.selected is None and self.state.streams:
            self.selected = self.state.stream_ids()[0]
        if self.paused:
            self.held += 1
            self._draw_header()
            return
        self._draw_header()
        if changes.new_streams or changes.streams:
            self.tabs.refresh_from(self.state, self.selected)
        if self.selected in changes.streams or changes.connection:
            self._draw_stream()
        if changes.events:
            self._events_dirty = True
            self._draw_events()

    def _draw_events(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or (self._events_dirty and now - self._events_drawn_at >= EVENT_LOG_INTERVAL_S):
            self.event_log.refresh_from(self.state, self.label_filter)
            self._events_dirty = False
            self._events_drawn_at = now

    def _tick(self) -> None:
        self._draw_header()
        if not self.paused:
            self.status.refresh_from(self.current_view(), time.monotonic())
            self._draw_events()

    def current_view(self) -> StreamView | None:
        """The selected stream, or None before the first message."""
        return self.state.streams.get(self.selected) if self.selected is not None else None

    # ---- drawing
    def _draw_header(self) -> None:
        self.header.refresh_from(
            self.state, time.monotonic(), self.paused, self.held, self.label_filter, self.notice
        )

    def set_notice(self, text: str, error: bool = False) -> None:
        """Show ``text`` as a toast; an error also stays in the header."""
        if error:
            self.notice = text.splitlines()[0] if text else ""
            self._draw_header()
        self.notify(text, title="sed-monitor", severity="error" if error else "information")

    def _draw_stream(self) -> None:
        view = self.current_view()
        self.scores.refresh_from(view, self.state, self.label_filter)
        self.status.refresh_from(view, time.monotonic())

    def redraw(self) -> None:
        """Redraw every panel from the state."""
        self._draw_header()
        self.tabs.refresh_from(self.state, self.selected)
        self._draw_stream()
        self._draw_events(force=True)

    # ---- actions
    def action_toggle_pause(self) -> None:
        """Freeze or unfreeze the display; data keeps being collected."""
        self.paused = not self.paused
        if not self.paused:
            self.held = 0
            self.redraw()
        else:
            self._draw_header()

    def action_filter(self) -> None:
        """Show the label filter input."""
        box = self.filter_box
        box.add_class("visible")
        # Focus now, not later (Widget.focus defers): keys typed right after the
        # slash are already queued and must reach the input, not the app's bindings.
        self.screen.set_focus(box)

    def action_clear_filter(self) -> None:
        """Clear and hide the label filter."""
        box = self.filter_box
        box.value = ""
        self._close_filter()
        self.set_filter("")

    def set_filter(self, text: str) -> None:
        """Filter the event log (and underline matching labels) by ``text``."""
        self.label_filter = text.strip()
        if not self.paused:
            self.redraw()
        else:
            self._draw_header()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as you type."""
        if event.input.id == "filter":
            self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter keeps the filter and returns to the event log."""
        if event.input.id == "filter":
            self._close_filter()

    def _close_filter(self) -> None:
        self.filter_box.remove_class("visible")
        self.event_log.focus()

    def action_next_stream(self, step: int) -> None:
        """Select the next (``step`` 1) or previous (-1) stream."""
        ids = self.state.stream_ids()
        if not ids:
            return
        i = ids.index(self.selected) if self.selected in ids else 0
        self.select(ids[(i + step) % len(ids)])

    def action_select_stream(self, index: int) -> None:
        """Select the ``index``-th stream (0-based), if there is one."""
        ids = self.state.stream_ids()
        if 0 <= index < len(ids):
            self.select(ids[index])

    def select(self, stream: str) -> None:
        """Show ``stream`` in the scores and status panels."""
        self.selected = stream
        self.tabs.refresh_from(self.state, self.selected)
        self._draw_stream()

    def action_help(self) -> None:
        """Show the key reference."""
        self.push_screen(HelpScreen())


def run_demo(
    ui_rate: float,
    endpoint: str | None = None,
    clip: Path = DEMO_CLIP,
    model: Path | None = None,
) -> int:
    """Start the demo daemon, run the monitor against it, stop the daemon on exit.

    Raises ``SystemExit`` with the daemon's last log lines if it failed.
    """
    endpoint = endpoint or free_endpoint()
    app = MonitorApp(SubscriberConfig(endpoint=endpoint, post_interval_s=1 / ui_rate))

    def notify(text: str, error: bool) -> None:
        if app.is_running:
            app.call_from_thread(app.set_notice, text, error)

    daemon = DemoDaemon(clip, endpoint, notify, model=model)
    daemon.start()
    try:
        app.run()
    finally:
        daemon.stop()
    if daemon.failed:
        raise SystemExit(
            f"sed-listen (demo) exited with {daemon.returncode}; "
            f"log {daemon.log_path}:\n{daemon.log_tail()}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sed-monitor`` command line."""
    p = argparse.ArgumentParser(
        prog="sed-monitor", description="Live dashboard for a sed-listen ZeroMQ stream."
    )
    p.add_argument(
        "--connect",
        default=None,
        metavar="ENDPOINT",
        help=f"sed-listen's PUB endpoint (default {DEFAULT_ENDPOINT})",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run sed-listen on a bundled clip in a subprocess and watch it",
    )
    p.add_argument(
        "--demo-clip",
        type=Path,
        default=None,
        metavar="AUDIO",
        help="with --demo: play this file instead of the bundled clip",
    )
    p.add_argument(
        "--demo-model",
        type=Path,
        default=None,
        metavar="ONNX",
        help="with --demo: sed-listen's --model (default: its own default model)",
    )
    p.add_argument(
        "--curve-secret-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="this monitor's CURVE key pair (NAME.key_secret from sed-keys); "
        "with --curve-server-key, for a sed-listen started with --curve-secret-key",
    )
    p.add_argument(
        "--curve-server-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="sed-listen's public CURVE key (its server.key; never the .key_secret)",
    )
    p.add_argument(
        "--control",
        nargs="?",
        const=DEFAULT_CONTROL_ENDPOINT,
        default=None,
        metavar="ENDPOINT",
        help="sed-listen's control socket (local only; without a value "
        f"{DEFAULT_CONTROL_ENDPOINT}): fetch the open events on every connection",
    )
    p.add_argument(
        "--ui-rate",
        type=float,
        default=1 / SubscriberConfig.post_interval_s,
        metavar="HZ",
        help="most display updates per second (default %(default)g)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=SubscriberConfig.stale_after_s,
        metavar="S",
        help="call the publisher silent after this many seconds (default %(default)g)",
    )
    p.add_argument("--log-file", default=None, help="write logs here (the terminal is the UI)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (with --log-file)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sed-monitor``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_file:
        logging.basicConfig(
            filename=args.log_file,
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if not args.ui_rate > 0:
        raise SystemExit(f"--ui-rate {args.ui_rate}: must be > 0 updates per second")
    if args.demo and (args.curve_secret_key or args.curve_server_key or args.control):
        parser.error("--demo runs its own sed-listen without CURVE or a control socket; "
                     "drop --curve-secret-key, --curve-server-key and --control")
    if args.demo:
        try:
            return run_demo(
                ui_rate=args.ui_rate,
                endpoint=args.connect,
                clip=args.demo_clip or DEMO_CLIP,
                model=args.demo_model,
            )
        except FileNotFoundError as e:
            raise SystemExit(f"sed-monitor --demo: {e}") from e
    try:
        config = SubscriberConfig(
            endpoint=args.connect or DEFAULT_ENDPOINT,
            post_interval_s=1 / args.ui_rate,
            stale_after_s=args.stale_after,
            curve_secret_key=args.curve_secret_key,
            curve_server_key=args.curve_server_key,
            control=args.control,
        )
    except ValueError as e:
        raise SystemExit(f"sed-monitor: error: {e}") from e
    MonitorApp(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
