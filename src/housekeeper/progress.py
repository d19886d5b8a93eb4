"""A progress display for waiting on jobs: counts per status, finished/total, rate, time left.

On a terminal it redraws itself in place (carriage return and ANSI erase codes); in a Jupyter
notebook it updates one HTML output cell (when IPython is importable); anywhere else it draws
nothing, and the caller logs a summary line per poll instead (:func:`summary` formats one).
This module and the command line are the only places in housekeeper that write to a stream.
"""
from __future__ import annotations

import html
import math
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

# Display order; anything else a caller passes comes after these.
STATUS_ORDER = ("COMPLETED", "FAILED", "CANCELLED", "RUNNING", "QUEUED", "PENDING")
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_COLOURS = {"COMPLETED": "32", "FAILED": "31", "CANCELLED": "33", "RUNNING": "36", "QUEUED": "34", "PENDING": "90"}
_HTML_COLOURS = {
    "COMPLETED": "#2e9d4f", "FAILED": "#d9453d", "CANCELLED": "#e0a030",
    "RUNNING": "#2a8fc4", "QUEUED": "#7b68c8", "PENDING": "#a0a0a0",
}  # fmt: skip
_RATE_WINDOW = 600.0  # seconds of history the rate is measured over


def format_duration(seconds: float | None) -> str:
    """'4.2s', '3m05s', '1h02m', '2d03h'; '-' for None."""
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(status, count) pairs in display order, zero counts left out."""
    names = [s for s in STATUS_ORDER if counts.get(s)] + sorted(s for s in counts if s not in STATUS_ORDER)
    return [(s, int(counts[s])) for s in names if counts.get(s)]


def summary(counts: Mapping[str, int], total: int | None = None) -> str:
    """One plain line: '7/12 finished: 5 completed, 2 failed, 3 running, 2 queued'."""
    total = sum(counts.values()) if total is None else total
    finished = sum(n for s, n in counts.items() if s in TERMINAL)
    parts = ", ".join(f"{n} {s.lower()}" for s, n in ordered(counts)) or "no jobs"
    return f"{finished}/{total} finished: {parts}"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get_ipython = getattr(shell, "get_ipython", None)  # absent while IPython is half-imported
    ipython = get_ipython() if callable(get_ipython) else None
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """Shows how far a set of jobs has come.

    ``Progress(total, enabled=None, stream=None)``: ``enabled=None`` draws only when ``stream``
    (default ``sys.stderr``) is a terminal or the code runs in a Jupyter notebook; ``True``
    forces a display (plain carriage-return redraws when the stream is not a terminal);
    ``False`` draws nothing. Call ``update(counts)`` after each poll with the number of jobs
    per status, and ``close()`` at the end (it leaves the last state on screen). ``enabled``
    tells the caller whether to log its own summary line instead.
    """

    def __init__(self, total: int, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.total = max(0, int(total))
        self.stream: TextIO = stream if stream is not None else sys.stderr
        tty = _is_tty(self.stream)
        notebook = stream is None and not tty and _in_notebook()
        self.enabled = bool(tty or notebook) if enabled is None else bool(enabled)
        self._mode = "off" if not self.enabled else "notebook" if notebook else "terminal"
        self._ansi = tty and os.environ.get("TERM") != "dumb"
        self._colour = self._ansi and not os.environ.get("NO_COLOR")
        self._history: deque[tuple[float, int]] = deque()
        self._drawn_lines = 0  # lines of the last drawing still on screen (terminal)
        self._width = 0  # length of the last single-line drawing (no ANSI)
        self._handle: Any = None  # IPython DisplayHandle
        self._closed = False
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ measurements
    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s in TERMINAL)

    def rate(self) -> float | None:
        """Jobs finished per second over the last few minutes, or None before it is known."""
        if len(self._history) < 2:
            return None
        (t0, f0), (t1, f1) = self._history[0], self._history[-1]
        if t1 - t0 <= 0 or f1 <= f0:
            return None
        return (f1 - f0) / (t1 - t0)

    def time_left(self) -> float | None:
        rate = self.rate()
        left = self.total - self.finished
        if left <= 0:
            return 0.0
        return left / rate if rate else None

    # ---------------------------------------------------------------------- drawing
    def update(self, counts: Mapping[str, int], lines: Sequence[str] = ()) -> None:
        """Record the latest counts per status (e.g. {'RUNNING': 3, 'COMPLETED': 5}) and redraw.
        ``lines`` are extra lines drawn below the bar (the command line's live view uses them)."""
        self.counts = {str(getattr(k, "value", k)): int(v) for k, v in counts.items()}
        now = time.monotonic()
        self._history.append((now, self.finished))
        while len(self._history) > 2 and now - self._history[1][0] > _RATE_WINDOW:
            self._history.popleft()
        if self._closed or self._mode == "off":
            return
        if self._mode == "notebook":
            self._draw_notebook(lines)
        else:
            self._draw_terminal(lines)

    def text(self, colour: bool = False, bar: bool = True) -> str:
        """The one-line state: bar, finished/total, counts, rate and time left."""
        total = self.total or sum(self.counts.values())
        finished = self.finished
        width = 20
        filled = int(width * finished / total) if total else width
        gauge = f"[{'#' * filled}{'-' * (width - filled)}] " if bar else ""
        parts = []
        for status, count in ordered(self.counts):
            word = f"{count} {status.lower()}"
            if colour:
                word = f"\x1b[{_COLOURS.get(status, '0')}m{word}\x1b[0m"
            parts.append(word)
        rate = self.rate()
        pace = ""
        if rate:
            pace = f" | {rate * 60:.1f}/min" if rate * 60 < 100 else f" | {rate:.1f}/s"
        left = self.time_left()
        eta = ""
        if finished < total:
            eta = f" | ~{format_duration(left)} left" if left is not None else " | time left: -"
        return f"{gauge}{finished}/{total} | {', '.join(parts) or 'no jobs'}{pace}{eta}"

    def _draw_terminal(self, lines: Sequence[str]) -> None:
        out = []
        if self._ansi:
            # Lines wider than the terminal would wrap and break the cursor arithmetic.
            columns = max(20, shutil.get_terminal_size().columns - 1)
            bar = len(self.text()) <= columns  # drop the bar before cutting the text
            plain = self.text(bar=bar)
            text = self.text(colour=self._colour, bar=bar) if len(plain) <= columns else plain[:columns]
            lines = [line[:columns] for line in lines]
            if self._drawn_lines > 1:
                out.append(f"\x1b[{self._drawn_lines - 1}F")  # up to the first line drawn
            out.append("\r\x1b[J")  # erase from here to the end of the screen
            out.append("\n".join([text, *lines]))
            self._drawn_lines = 1 + len(lines)
        else:
            # No cursor control: one line, overwritten with carriage returns and padding.
            plain = self.text()
            out.append("\r" + plain + " " * max(0, self._width - len(plain)))
            self._width = len(plain)
            self._drawn_lines = 1
        self._write("".join(out))

    def _draw_notebook(self, lines: Sequence[str]) -> None:
        try:
            from IPython.display import HTML, display
        except ImportError:
            self._mode = "off"
            return
        page = self._html(lines)
        if self._handle is None:
            self._handle = display(HTML(page), display_id=True)
        else:
            self._handle.update(HTML(page))

    def _html(self, lines: Sequence[str]) -> str:
        total = self.total or sum(self.counts.values()) or 1
        segments = "".join(
            f'<div title="{n} {s.lower()}" style="width:{100 * n / total:.3f}%;'
            f'background:{_HTML_COLOURS.get(s, "#888")}"></div>'
            for s, n in ordered(self.counts)
            if s in TERMINAL or s == "RUNNING"
        )
        plain = html.escape(self.text())
        extra = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
        return (
            '<div style="font-family:monospace;font-size:12px">'
            '<div style="display:flex;height:10px;width:100%;max-width:600px;background:#eee;'
            f'border-radius:3px;overflow:hidden">{segments}</div><div>{plain}</div>{extra}</div>'
        )

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must never stop monitoring
            self._mode = "off"

    def close(self) -> None:
        """End the display, leaving its last state visible. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._mode == "terminal" and self._drawn_lines:
            self._write("\n")

    def __enter__(self) -> Progress:  # noqa: PYI034  (Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
