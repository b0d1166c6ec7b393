"""The monitor's panels: connection header, stream tabs, top-k scores, status, event log.

Each panel renders from a :class:`~detector.monitor.state.MonitorState`; none of
them holds data of its own beyond what it last drew (``plain``, for tests). The
pure helpers :func:`bar`, :func:`sparkline` and :func:`level_meter` draw one
line of text and are unit-testable without a running app.
"""

from __future__ import annotations

import io
import math
import time
from typing import ClassVar

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from .state import ConnState, EventRow, MonitorState, StatusView, StreamView, matches

__all__ = [
    "BAR_WIDTH",
    "ConnectionHeader",
    "EventLog",
    "HelpScreen",
    "ScoresPanel",
    "StatusPanel",
    "StreamTabs",
    "bar",
    "level_meter",
    "sparkline",
]

BAR_WIDTH = 30
"""Character cells of a score bar (score 0..1)."""
SPARK_WIDTH = 24
"""Character cells of a label's history sparkline."""
METER_WIDTH = 20
"""Character cells of the input level meter."""
METER_FLOOR_DBFS = -60.0
"""Level shown as an empty meter; 0 dBFS is full."""
PLAIN_WIDTH = 200
"""Width of the plain-text copy a panel keeps of what it drew."""
_BLOCKS = " ▏▎▍▌▋▊▉█"
_SPARKS = "▁▂▃▄▅▆▇█"
STALE_HINT_S = 2.0
"""Age of the last message beyond which it is drawn in yellow (status comes ~1/s)."""
ON_MARK = "┃"
OFF_MARK = "╎"

_STATE_STYLE = {
    ConnState.WAITING: ("○", "yellow"),
    ConnState.CONNECTED: ("◐", "cyan"),
    ConnState.RECEIVING: ("●", "green"),
    ConnState.STALE: ("◌", "yellow"),
    ConnState.DISCONNECTED: ("✕", "red"),
    ConnState.REFUSED: ("⊘", "bold red"),
    ConnState.STOPPED: ("■", "red"),
}


def _cells(fraction: float, width: int) -> str:
    """A left-aligned block bar ``width`` cells wide, filled to ``fraction`` (clipped to 0..1)."""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_BLOCKS[part] if part and full < width else "")
    return text.ljust(width)


def bar(score: float, on: float, off: float, width: int = BAR_WIDTH, active: bool = False) -> Text:
    """A score bar with the on (``┃``) and off (``╎``) thresholds marked.

    ``score``, ``on`` and ``off`` are probabilities in 0..1; a threshold that is
    NaN (publisher did not send it) is not drawn.
    """
    chars = list(_cells(score, width))
    text = Text("".join(chars), style="green" if active else "cyan")
    for threshold, mark, style in ((off, OFF_MARK, "yellow"), (on, ON_MARK, "bold red")):
        if math.isnan(threshold):
            continue
        i = min(width - 1, max(0, int(threshold * width)))
        filled = chars[i] != " "
        text = text[:i] + Text(mark, style=f"{style} reverse" if filled else style) + text[i + 1 :]
    return text


def sparkline(values: list[float] | tuple[float, ...], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values (probabilities 0..1) as block characters, right-aligned."""
    tail = list(values)[-width:]
    top = len(_SPARKS) - 1
    chars = [_SPARKS[min(top, max(0, int(v * len(_SPARKS))))] for v in tail]
    return "".join(chars).rjust(width)


def level_meter(dbfs: float, width: int = METER_WIDTH, floor: float = METER_FLOOR_DBFS) -> str:
    """An input level meter: ``floor`` dBFS is empty, 0 dBFS is full."""
    if math.isnan(dbfs):
        return "?" * width
    return _cells((dbfs - floor) / -floor, width).replace(" ", "░")


def _fmt(value: float, spec: str, missing: str = "–") -> str:
    return missing if math.isnan(value) else format(value, spec)


def _clock(wall: float | None) -> str:
    """Unix seconds as local ``HH:MM:SS.s``."""
    if wall is None or math.isnan(wall):
        return "…"
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 10) % 10}"


def _age(seconds: float) -> str:
    if math.isnan(seconds):
        return "never"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms ago"
    return f"{seconds:.1f} s ago"


class _Panel(Static):
    """A Static that keeps what it drew last, so tests and tools can read it as text."""

    _drawn: Text | Table | Group | str = ""

    def show(self, content: Text | Table | Group | str) -> None:
        """Draw ``content``."""
        self._drawn = content
        # Every panel has a fixed height (app CSS), so a redraw needs no new layout.
        self.update(content, layout=False)

    @property
    def plain(self) -> str:
        """The last drawn content as plain text (rendered on demand)."""
        content = self._drawn
        if isinstance(content, Text):
            return content.plain
        if isinstance(content, str):
            return content
        buffer = io.StringIO()
        Console(file=buffer, width=PLAIN_WIDTH, color_system=None).print(content)
        return buffer.getvalue()


class ConnectionHeader(_Panel):
    """One line: connection state, endpoint, streams, lost messages, pause."""

    def refresh_from(
        self,
        state: MonitorState,
        now: float,
        paused: bool,
        held: int,
        label_filter: str,
        notice: str = "",
    ) -> None:
        """Redraw from ``state`` at monotonic time ``now``; ``notice`` is shown in red."""
        c = state.connection
        mark, style = _STATE_STYLE[c.state]
        t = Text.assemble((" sed-monitor ", "bold"), (f"{mark} ", style))
        for_s = now - c.since
        if c.state == ConnState.WAITING:
            t.append(f"waiting for {c.endpoint}", style)
            t.append(f" ({for_s:.0f} s; is sed-listen running?)", "dim")
        elif c.state == ConnState.DISCONNECTED:
            t.append(f"disconnected from {c.endpoint}; reconnecting", style)
            t.append(f" ({for_s:.0f} s)", "dim")
        elif c.state == ConnState.STALE:
            t.append(f"{c.endpoint} silent", style)
        elif c.state == ConnState.CONNECTED:
            t.append(f"connected to {c.endpoint}; waiting for messages", style)
        elif c.state == ConnState.REFUSED:
            t.append(f"refused by {c.endpoint}: {c.detail}", style)
        elif c.state == ConnState.STOPPED:
            t.append(f"stopped ({c.endpoint})", style)
        else:
            t.append(f"receiving {c.endpoint}", style)
        if c.connects > 1:
            t.append(f"  reconnects {c.connects - 1}", "yellow")
        lost, restarts = state.totals()
        t.append(f"  │ streams {len(state.streams)}")
        t.append(f"  lost {lost}", "red" if lost else "")
        if restarts:
            t.append(f"  restarts {restarts}", "yellow")
        if state.invalid:
            t.append(f"  bad msgs {state.invalid}", "red")
        if state.snapshot_error:
            t.append("  no snapshot", "yellow")
        if label_filter:
            t.append(f"  │ filter: {label_filter!r}", "magenta")
        if paused:
            t.append(f"  │ PAUSED ({held} updates held)", "bold black on yellow")
        if notice:
            t.append(f"  │ {notice}", "bold red")
        self.show(t)


class StreamTabs(_Panel):
    """One line listing the streams; the selected one is highlighted."""

    def refresh_from(self, state: MonitorState, selected: str | None) -> None:
        """Redraw the stream list with ``selected`` highlighted."""
        ids = state.stream_ids()
        if not ids:
            self.show(Text(" streams: none yet", style="dim"))
            return
        t = Text(" streams: ")
        for i, sid in enumerate(ids, start=1):
            view = state.streams[sid]
            st = view.status.state if view.status is not None else "?"
            label = f" {i} {sid} [{st}] "
            t.append(label, "bold reverse" if sid == selected else "")
            t.append(" ")
        t.append("  (n/b or 1-9 to switch)", "dim")
        self.show(t)


class ScoresPanel(_Panel):
    """Top-k labels of one stream: bar with thresholds, score, history sparkline."""

    def refresh_from(self, view: StreamView | None, state: MonitorState, label_filter: str) -> None:
        """Redraw the top-k of ``view`` (None: no stream yet)."""
        if view is None:
            c = state.connection
            if c.state == ConnState.REFUSED:
                what = f"refused by {c.endpoint}: {c.detail}"
            elif c.state in (ConnState.WAITING, ConnState.DISCONNECTED):
                what = f"waiting for {c.endpoint}"
            else:
                what = "waiting for the first scores message"
            self.show(Text(f"Top labels\n\n  {what}…", style="dim"))
            return
        labels = view.top_labels()
        table = Table.grid(padding=(0, 1))
        table.add_column("label", width=24, no_wrap=True)
        table.add_column("bar", width=BAR_WIDTH, no_wrap=True)
        table.add_column("score", width=5, justify="right")
        table.add_column("history", width=SPARK_WIDTH, no_wrap=True)
        for lv in labels:
            name_style = "bold green" if lv.active else ""
            if label_filter and matches(lv.label, label_filter):
                name_style += " underline"
            table.add_row(
                Text(("● " if lv.active else "  ") + lv.label, style=name_style.strip()),
                bar(lv.score, lv.on, lv.off, active=lv.active),
                f"{lv.score:.2f}",
                Text(sparkline(list(lv.history)), style="green" if lv.active else "blue"),
            )
        title = Text.assemble(
            ("Top labels ", "bold"),
            (view.stream, "bold cyan"),
            f"   patch ends {_fmt(view.patch_end, '.2f')} s",
            (f"   {ON_MARK} on  {OFF_MARK} off threshold", "dim"),
        )
        if not labels:
            body: Text | Table = Text("  waiting for the next scores message…", style="dim")
        else:
            body = table
        self.show(Group(title, body))


class StatusPanel(_Panel):
    """Health of one stream: level, real-time factor, latency, drops, seq gaps, age."""

    def refresh_from(self, view: StreamView | None, now: float) -> None:
        """Redraw the status of ``view`` at monotonic time ``now``."""
        if view is None:
            self.show(Text("Stream status\n\n  no stream yet", style="dim"))
            return
        s: StatusView | None = view.status
        grid = Table.grid(padding=(0, 1))
        grid.add_column("key", style="dim", no_wrap=True)
        grid.add_column("value", no_wrap=True)
        if s is None:
            grid.add_row("state", Text("waiting for status…", style="dim"))
        else:
            state_style = {"running": "green", "error": "red", "ended": "yellow"}.get(
                s.state, "yellow"
            )
            grid.add_row("state", Text(s.state, style=state_style))
            grid.add_row(
                "level",
                Text.assemble(
                    (level_meter(s.level_dbfs), "green"),
                    f" {_fmt(s.level_dbfs, '.1f')} dBFS",
                ),
            )
            grid.add_row("peak", f"{_fmt(s.peak_dbfs, '.1f')} dBFS")
            grid.add_row("speed", f"{_fmt(s.speed, '.2f')}× real time")
            grid.add_row("load", f"{_fmt(s.load * 100, '.1f')} % of real time")
            grid.add_row(
                "latency",
                f"{_fmt(s.latency_last_ms, '.1f')} ms  p50 {_fmt(s.latency_p50_ms, '.1f')}"
                f"  p99 {_fmt(s.latency_p99_ms, '.1f')}",
            )
            drops = Text(
                f"{s.dropped_samples} samples  overruns {s.overruns}  gaps {s.gaps}",
                style="red" if s.dropped_samples or s.overruns or s.gaps else "",
            )
            grid.add_row("dropped", drops)
            grid.add_row("patches", f"{s.patches}  open events {s.open_events}")
        seq = view.seq
        if seq is not None:
            grid.add_row(
                "messages",
                Text.assemble(
                    f"{seq.received}  ",
                    (f"lost {seq.lost}", "bold red" if seq.lost else ""),
                    (f"  restarts {seq.restarts}", "yellow" if seq.restarts else ""),
                ),
            )
        age = view.age_s(now)
        grid.add_row(
            "last msg", Text(_age(age), style="yellow" if not age < STALE_HINT_S else "")
        )
        grid.add_row("stream", f"{view.stream_time:.1f} s  session {view.session[:12]}")
        if s is not None and s.message:
            grid.add_row("message", Text(s.message, style="yellow"))
        self.show(Group(Text("Stream status", style="bold"), grid))

EVENT_COLUMNS = ("onset", "offset", "stream", "label", "state", "duration", "peak", "reason")
_CLOCK_WIDTH = len("00:00:00.0")


class EventLog(DataTable[str]):
    """Scrollable event log, one row per event, updated in place; newest at the bottom."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.events_version = 0
        """``MonitorState.events_version`` at the last refresh."""
        self.label_filter = ""

    def on_mount(self) -> None:
        """Set up the columns."""
        for name in EVENT_COLUMNS:
            # Rows change in place (open -> closed): fixed-format columns get their
            # final width now, the others grow with their content.
            width = _CLOCK_WIDTH if name in ("onset", "offset") else None
            self.add_column(name, key=name, width=width)

    @staticmethod
    def cells(row: EventRow) -> tuple[str, ...]:
        """The cells of one event, in :data:`EVENT_COLUMNS` order."""
        phase = {"open": "● open", "closed": "closed", "orphaned": "✕ lost"}.get(
            row.phase, row.phase
        )
        return (
            _clock(row.start_wall),
            _clock(row.end_wall),
            row.stream,
            row.label,
            phase,
            f"{row.duration:.2f} s",
            f"{row.peak:.2f}",
            row.reason,
        )

    def refresh_from(self, state: MonitorState, label_filter: str) -> None:
        """Add and update rows changed since the last call; rebuild on a new filter."""
        follow = self.is_vertical_scroll_end or self.row_count == 0
        if label_filter != self.label_filter:
            self.clear()
            self.label_filter = label_filter
            rows = state.event_rows(label_filter)
        else:
            rows = state.rows_changed_since(self.events_version, label_filter)
        for row in rows:
            cells = self.cells(row)
            if row.key in self.rows:
                old = self.get_row(row.key)
                for name, value, before in zip(EVENT_COLUMNS, cells, old, strict=True):
                    if value != before:
                        self.update_cell(row.key, name, value, update_width=True)
            else:
                self.add_row(*cells, key=row.key)
        if self.row_count > len(state.events):
            for key in [k for k in self.rows if k.value not in state.events]:
                self.remove_row(key)
        self.events_version = state.events_version
        if follow and rows:
            self.scroll_end(animate=False)


HELP = """\
[b]sed-monitor[/b] — live view of a sed-listen stream

[b]p[/b] / [b]space[/b]   pause / resume the display (data keeps coming in)
[b]/[/b]           filter the event log by label (substring, any case)
[b]escape[/b]      clear the filter
[b]n[/b] / [b]b[/b]       next / previous stream;  [b]1[/b]–[b]9[/b] pick a stream
[b]↑ ↓ PgUp PgDn[/b]  scroll the event log
[b]?[/b] / [b]h[/b]       this help
[b]q[/b]           quit

Bars: score 0..1, [b red]┃[/b red] on threshold, [yellow]╎[/yellow] off threshold,
[green]green[/green] while an event is open. The sparkline shows recent scores.
Status: level in dBFS (meter from -60 to 0), speed = audio seconds per
wall second, load = processing time / audio time, lost = seq gaps.

Press escape, q or ? to close."""


class HelpScreen(ModalScreen[None]):
    """The key reference."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,h", "app.pop_screen", "Close")
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: 80; height: auto; border: round $accent; padding: 1 2;
                          background: $panel; }
    """

    def compose(self) -> ComposeResult:
        """One Static with the key list."""
        yield Static(HELP, id="help-text")
