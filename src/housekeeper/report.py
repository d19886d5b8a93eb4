"""Reading a run without touching its scheduler, grouping its failures, and the HTML report.

`write_report(jobs_dir, path)` writes one self-contained HTML page (inline CSS and SVG, no
script, no network) showing the run at a glance: status counts, a timeline of the jobs (queue
wait and run time), the number of jobs queued and running over time, run-time and wait-time
histograms, failures by reason and by first error line, and the table of failed jobs.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import html
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import polars as pl

from .api import Housekeeper
from .checks import Rules, load_rules
from .errors import StateError
from .progress import STATUS_ORDER, format_duration
from .scan import DEFAULT_ERROR_PATTERNS
from .store import Store

log = logging.getLogger("housekeeper")

__all__ = [
    "NotARunError",
    "RunReader",
    "failed_jobs",
    "failure_groups",
    "normalise_line",
    "open_run",
    "run_rules",
    "write_report",
]

_COLOURS = {
    "COMPLETED": "#2e9d4f", "FAILED": "#d9453d", "CANCELLED": "#e0a030",
    "RUNNING": "#2a8fc4", "QUEUED": "#7b68c8", "PENDING": "#a0a0a0",
}  # fmt: skip
_WAIT_COLOUR = "#c8d0dc"
_GANTT_MAX_JOBS = 300  # more than this: an evenly spaced sample (plus the queued/running curve)
_TABLE_MAX_ROWS = 1000


# --------------------------------------------------------------------------- reading
class NotARunError(StateError):
    """The folder is not a housekeeper run (no database in it)."""


class RunReader(Housekeeper):
    """A read-only view of a run: never contacts the scheduler, never writes to the run.

    It reuses `Housekeeper`'s readers (`list_jobs`, `job_info`, `failure_info`, `export_state`)
    with the two steps that send work to the scheduler (`_commit`, `_sync`) turned into no-ops.
    `Housekeeper.__init__` is deliberately not called: it creates folders, writes the log rules
    and registers an at-exit flush, none of which a reader may do. Anything that would need the
    scheduler raises StateError."""

    def __init__(self, jobs_dir: str | os.PathLike[str], db_path: str | os.PathLike[str] | None = None) -> None:
        self.jobs_dir = os.path.abspath(os.fspath(jobs_dir))
        self.db_path = os.path.abspath(os.fspath(db_path)) if db_path else os.path.join(self.jobs_dir, "housekeeper.db")
        if not os.path.isdir(self.jobs_dir):
            raise NotARunError(f"{self.jobs_dir}: no such folder")
        if not os.path.isfile(self.db_path):
            raise NotARunError(f"{self.jobs_dir} is not a housekeeper run (no {os.path.basename(self.db_path)} in it)")
        self.store = Store(self.db_path, create=False)
        self.rules = run_rules(self.jobs_dir) or Rules(list(DEFAULT_ERROR_PATTERNS), [], 3)
        self._lock = threading.RLock()
        self._buffer = []
        self._buffer_deps = []
        self._buffer_keys = {}
        self._engine = None
        self._closed = True  # nothing to flush, ever

    def _commit(self) -> None:
        return None

    def _sync(self) -> None:
        return None

    @property
    def engine(self) -> Any:  # type: ignore[override]
        raise StateError("this is a read-only view of the run; open it with housekeeper(jobs_dir) to act on it")

    @property
    def scheduler(self) -> str:
        row = self.store.conn.execute("SELECT value FROM meta WHERE key='scheduler'").fetchone()
        return row[0] if row else "unknown"

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"RunReader(jobs_dir={self.jobs_dir!r})"


def run_rules(jobs_dir: str) -> Rules | None:
    """The log rules the run's driver last wrote (`.housekeeper/rules-*.json`), or None.

    The rules are not in the database: a driver writes the ones it was given to a file named
    by their hash when it first talks to the scheduler, and its jobs read that file. The newest
    such file is the best guess at the rules now in force."""
    db = os.path.join(jobs_dir, "housekeeper.db")
    if os.path.isfile(db):  # since they are stored in the run itself, prefer those
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key='rules'").fetchone()
            if row:
                return msgspec.json.decode(row[0], type=Rules)
        except (sqlite3.Error, msgspec.DecodeError, msgspec.ValidationError):
            pass
    files = glob.glob(os.path.join(jobs_dir, ".housekeeper", "rules-*.json"))
    if not files:
        return None
    newest = max(files, key=os.path.getmtime)
    try:
        return load_rules(newest)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("could not read the run's log rules %s (%s); using the default rules", newest, exc)
        return None


def open_run(jobs_dir: str | os.PathLike[str], db_path: str | os.PathLike[str] | None = None) -> RunReader:
    """A read-only view of an existing run; NotARunError when `jobs_dir` is not one."""
    return RunReader(jobs_dir, db_path)


def attempts_frame(reader: Housekeeper) -> pl.DataFrame:
    """Every attempt of every job, with times as epoch seconds (Float64)."""
    cursor = reader.store.conn.execute(
        "SELECT a.job_id, a.attempt, a.status, a.reason, a.scheduler_id, a.submitted_at, a.started_at,"
        " a.ended_at, j.name FROM attempts a JOIN jobs j ON j.job_id = a.job_id ORDER BY a.job_id, a.attempt"
    )
    schema = {
        "job_id": pl.Int64, "attempt": pl.Int32, "status": pl.Utf8, "reason": pl.Utf8, "scheduler_id": pl.Utf8,
        "submitted_at": pl.Float64, "started_at": pl.Float64, "ended_at": pl.Float64, "name": pl.Utf8,
    }  # fmt: skip
    return pl.DataFrame(cursor.fetchall(), schema=schema, orient="row")


# --------------------------------------------------------------------------- failures
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:/|\\)?(?:[\w.+\-@]+[/\\])+[\w.+\-@]*")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACE = re.compile(r"\s+")


def normalise_line(text: str) -> str:
    """An error line with what varies between jobs taken out: paths become <path>, hex ids
    <hex>, numbers <N>, runs of spaces one space. So 'bad value 3 in /data/spw_003/x.fits' and
    'bad value 7 in /data/spw_007/x.fits' read as one line."""
    text = _UUID.sub("<id>", text)
    text = _PATH.sub("<path>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<N>", text)
    return _SPACE.sub(" ", text).strip()[:300]


def failed_jobs(reader: Housekeeper, reasons: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """FAILED jobs with what their current attempt left: the first error line (file relative to
    the jobs_dir, line number, text), missing files, the scheduler's or submitter's message."""
    where = "j.status = 'FAILED'"
    params: list[Any] = []
    if reasons:
        where += f" AND j.reason IN ({','.join('?' * len(reasons))})"
        params = list(reasons)
    cursor = reader.store.conn.execute(
        "SELECT j.job_id, j.name, j.reason, j.exit_code, j.signal, j.attempt, j.scheduler_id, j.job_subdir,"
        " j.native_state, a.detail FROM jobs j LEFT JOIN attempts a ON a.job_id = j.job_id AND a.attempt = j.attempt"
        f" WHERE {where} ORDER BY j.job_id",
        params,
    )
    out = []
    for job_id, name, reason, exit_code, signal, attempt, scheduler_id, subdir, native, detail_text in cursor:
        try:
            detail = json.loads(detail_text) if detail_text else {}
        except ValueError:
            detail = {}
        first = None
        lines = detail.get("log_lines") or []
        if lines and isinstance(lines[0], (list, tuple)) and len(lines[0]) == 3:
            filename, number, text = lines[0]
            first = {"file": f"{subdir}/{filename}", "line": number, "text": str(text)}
        out.append({
            "job_id": job_id, "name": name, "reason": reason, "exit_code": exit_code, "signal": signal,
            "attempt": attempt, "scheduler_id": scheduler_id, "job_subdir": subdir, "native_state": native,
            "first_error": first, "log_errors": detail.get("log_errors"),
            "missing_files": detail.get("missing_files") or [],
            "message": detail.get("submit_error") or detail.get("scheduler_message"),
        })  # fmt: skip
    return out


def failure_line(job: dict[str, Any]) -> str:
    """What a failed job's first sign of trouble reads like, for display."""
    if job["first_error"]:
        return job["first_error"]["text"]
    if job["message"]:
        return str(job["message"])
    if job["missing_files"]:
        return "missing: " + ", ".join(job["missing_files"][:3]) + (" …" if len(job["missing_files"]) > 3 else "")
    if job["signal"] is not None:
        return f"killed by signal {job['signal']}"
    if job["exit_code"] is not None:
        return f"exit code {job['exit_code']}"
    return f"({job['reason'] or 'no reason recorded'}{', ' + job['native_state'] if job['native_state'] else ''})"


def failure_groups(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed jobs grouped by reason and normalised first error line, biggest group first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        line = failure_line(job)
        # Exit codes and signals are the message itself: never generalised.
        verbatim = not (job["first_error"] or job["message"] or job["missing_files"])
        key = (job["reason"] or "unknown", line if verbatim else normalise_line(line))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"reason": key[0], "line": key[1], "example": line, "count": 0, "job_ids": []}
            if job["first_error"]:
                first = job["first_error"]
                group["example_at"] = f"{first['file']}:{first['line']}"
        group["count"] += 1
        group["job_ids"].append(job["job_id"])
    return sorted(groups.values(), key=lambda g: (-g["count"], g["reason"], g["line"]))


# ------------------------------------------------------------------------------ SVG
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _nice_step(span: float, ticks: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _count_ticks(peak: float) -> tuple[float, list[int]]:
    """A top for a count axis and whole-number ticks up to it."""
    step = max(1, math.ceil(_nice_step(max(peak, 1), 4)))
    top = step * math.ceil(max(peak, 1) / step)
    return float(top), list(range(0, int(top) + 1, step))


def _time_ticks(span: float) -> list[float]:
    """Tick positions in seconds that read well as durations."""
    if span <= 0:
        return [0.0]
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    step: float
    if span < 1:
        step = _nice_step(span)
    else:
        step = next((float(s) for s in steps if span / s <= 8), _nice_step(span / 86400) * 86400)
    count = int(span / step)
    return [i * step for i in range(count + 1)]


def _tick_label(seconds: float) -> str:
    """Axis labels: '0', '30s', '10m', '1h30m', '2d' rather than '10m00s'."""
    if seconds <= 0:
        return "0"
    whole = round(seconds)
    if abs(seconds - whole) > 1e-6 or whole < 60:
        return format_duration(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    if whole % 60 == 0 and whole > 3600:
        return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"
    return format_duration(seconds)


def _svg_open(chart_id: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="100%" role="img" aria-label="{_esc(label)}" preserveAspectRatio="xMinYMin meet">'
    )


def _status_bar(counts: dict[str, int], total: int) -> str:
    width, height = 1000, 34
    parts = [_svg_open("status-bar", width, height, "jobs by status")]
    x = 0.0
    for status in [s for s in STATUS_ORDER if counts.get(s)]:
        w = width * counts[status] / total if total else 0
        parts.append(
            f'<rect class="bar" x="{x:.2f}" y="4" width="{max(w, 0.5):.2f}" height="26" fill="{_COLOURS[status]}">'
            f"<title>{_esc(status)}: {counts[status]} ({100 * counts[status] / total:.1f}%)</title></rect>"
        )
        if w > 70:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="22" text-anchor="middle" class="inbar">{counts[status]}</text>'
            )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def _hbar_chart(chart_id: str, items: list[tuple[str, int]], colour: str, label: str) -> str:
    if not items:
        return f'<p class="empty" id="{chart_id}-empty">none</p>'
    width, row = 1000, 26
    height = row * len(items) + 10
    top = max(n for _, n in items)
    parts = [_svg_open(chart_id, width, height, label)]
    for i, (name, count) in enumerate(items):
        y = 5 + i * row
        w = 650 * count / top if top else 0
        parts.append(f'<text x="215" y="{y + 17}" text-anchor="end" class="label">{_esc(name[:32])}</text>')
        parts.append(
            f'<rect class="bar" x="225" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{_esc(name)}: {count}</title></rect>"
        )
        parts.append(f'<text x="{232 + w:.1f}" y="{y + 17}" class="label">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(chart_id: str, values: pl.Series, label: str, colour: str) -> str:
    values = values.drop_nulls().filter(values.drop_nulls() >= 0) if len(values) else values
    if len(values) == 0:
        return f'<p class="empty" id="{chart_id}-empty">no {label.lower()} recorded yet</p>'
    width, height, left, bottom = 560, 240, 50, 40
    low = 0.0
    high = float(values.max())  # type: ignore[arg-type]
    p99 = float(values.quantile(0.99) or high)
    clipped = high > 2 * p99 > 0  # a few outliers: they go in the last bar, marked ≥
    top_value = p99 if clipped else high
    bins = 30 if len(values) >= 30 else max(5, len(values))
    step = (top_value - low) / bins if top_value > low else 1.0
    index = ((values - low) / step).floor().clip(0, bins - 1).cast(pl.Int64)
    counts = [0] * bins
    for i, n in index.value_counts().iter_rows():
        counts[int(i)] = int(n)
    most, ticks = _count_ticks(max(counts))
    plot_w, plot_h = width - left - 20, height - bottom - 15
    bar_w = plot_w / bins
    parts = [_svg_open(chart_id, width, height, label)]
    parts.append(f'<line class="axis" x1="{left}" y1="{15 + plot_h}" x2="{left + plot_w}" y2="{15 + plot_h}"/>')
    for tick in ticks:
        y = 15 + plot_h - plot_h * tick / most
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick}</text>')
    for i, n in enumerate(counts):
        if not n:
            continue
        h = plot_h * n / most
        lo, hi = low + i * step, low + (i + 1) * step
        upper = "and more" if clipped and i == bins - 1 else f"to {format_duration(hi)}"
        parts.append(
            f'<rect class="bar" x="{left + i * bar_w + 1:.1f}" y="{15 + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}"'
            f' height="{h:.1f}" fill="{colour}"><title>{format_duration(lo)} {upper}: {n} job'
            f'{"s" if n != 1 else ""}</title></rect>'
        )
    for i in range(0, bins + 1, max(1, bins // 5)):
        x = left + i * bar_w
        text = format_duration(low + i * step) + ("+" if clipped and i == bins else "")
        parts.append(f'<text x="{x:.1f}" y="{15 + plot_h + 18}" text-anchor="middle" class="tick">{text}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" class="label">{_esc(label)}'
        f'{" (last bar: everything above the 99th percentile)" if clipped else ""}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _timeline(attempts: pl.DataFrame, now: float) -> tuple[str, str]:
    """A row per job (a sample when there are many), a segment per attempt: the queue wait in
    grey, the run in the attempt's status colour. Returns (svg, caption)."""
    timed = attempts.filter(pl.col("submitted_at").is_not_null() | pl.col("started_at").is_not_null())
    if timed.is_empty():
        return '<p class="empty" id="timeline-empty">no job has reached the scheduler yet</p>', ""
    job_ids = timed.get_column("job_id").unique(maintain_order=True).to_list()
    caption = f"all {len(job_ids)} jobs"
    if len(job_ids) > _GANTT_MAX_JOBS:
        stride = len(job_ids) / _GANTT_MAX_JOBS
        job_ids = [job_ids[int(i * stride)] for i in range(_GANTT_MAX_JOBS)]
        caption = f"an evenly spaced sample of {len(job_ids)} of {timed.get_column('job_id').n_unique()} jobs"
        timed = timed.filter(pl.col("job_id").is_in(job_ids))
    start_col = pl.coalesce("submitted_at", "started_at")
    t0 = float(timed.select(start_col.min()).item())
    t1 = float(timed.select(pl.max_horizontal(pl.col("ended_at").max(), start_col.max())).item() or t0)
    if timed.select((pl.col("ended_at").is_null()).any()).item():
        t1 = max(t1, now)
    span = max(t1 - t0, 1e-3)
    rows = {job_id: i for i, job_id in enumerate(job_ids)}
    row_h = max(2.0, min(16.0, 560 / len(rows)))
    left, width, top = 170, 1000, 10
    plot_w = width - left - 20
    height = int(top + row_h * len(rows) + 40)
    labels = row_h >= 11

    def x(t: float) -> float:
        return left + plot_w * (t - t0) / span

    parts = [_svg_open("timeline", width, height, "timeline of jobs")]
    for tick in _time_ticks(span):
        parts.append(f'<line class="grid" x1="{x(t0 + tick):.1f}" y1="{top}" x2="{x(t0 + tick):.1f}"'
                     f' y2="{top + row_h * len(rows):.1f}"/>')  # fmt: skip
        parts.append(f'<text x="{x(t0 + tick):.1f}" y="{top + row_h * len(rows) + 16:.1f}" text-anchor="middle"'
                     f' class="tick">{_tick_label(tick)}</text>')  # fmt: skip
    seen_label: set[int] = set()
    for a in timed.iter_rows(named=True):
        y = top + rows[a["job_id"]] * row_h
        h = max(row_h - (2 if row_h > 4 else 0), 1)
        submitted = a["submitted_at"] if a["submitted_at"] is not None else a["started_at"]
        started, ended = a["started_at"], a["ended_at"]
        tip = (f"job {a['job_id']} {a['name']} attempt {a['attempt']}: {a['status']}"
               f"{' (' + a['reason'] + ')' if a['reason'] else ''}")  # fmt: skip
        wait_end = started if started is not None else (ended if ended is not None else now)
        if wait_end > submitted:
            parts.append(
                f'<rect class="wait" x="{x(submitted):.2f}" y="{y:.2f}" width="{max(x(wait_end) - x(submitted), 0.5):.2f}"'
                f' height="{h:.2f}" fill="{_WAIT_COLOUR}"><title>{_esc(tip)}, waited'
                f" {format_duration(wait_end - submitted)}</title></rect>"
            )
        if started is not None:
            run_end = ended if ended is not None else now
            parts.append(
                f'<rect class="run" x="{x(started):.2f}" y="{y:.2f}" width="{max(x(run_end) - x(started), 0.8):.2f}"'
                f' height="{h:.2f}" fill="{_COLOURS.get(a["status"], "#888")}"><title>{_esc(tip)}, ran'
                f" {format_duration(run_end - started)}</title></rect>"
            )
        if labels and a["job_id"] not in seen_label:
            seen_label.add(a["job_id"])
            parts.append(f'<text x="{left - 6}" y="{y + h - 2:.1f}" text-anchor="end" class="rowlabel">'
                         f"{_esc(str(a['job_id']) + ' ' + a['name'])[:40]}</text>")  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" class="label">time since the'
                 f" first submission ({_dt.datetime.fromtimestamp(t0).strftime('%Y-%m-%d %H:%M:%S')})</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts), caption


def _concurrency(attempts: pl.DataFrame, now: float) -> str:
    """How many jobs were queued and running over time (stacked), from every attempt."""
    a = attempts.with_columns(pl.coalesce("submitted_at", "started_at").alias("s")).filter(pl.col("s").is_not_null())
    if a.is_empty():
        return '<p class="empty" id="concurrency-empty">no job has reached the scheduler yet</p>'
    started = pl.col("started_at").is_not_null()
    events = pl.concat([
        a.select(pl.col("s").alias("t"), pl.lit(1).alias("dq"), pl.lit(0).alias("dr")),
        a.filter(started).select(pl.col("started_at").alias("t"), pl.lit(-1).alias("dq"), pl.lit(1).alias("dr")),
        a.filter(pl.col("ended_at").is_not_null()).select(
            pl.col("ended_at").alias("t"),
            pl.when(started).then(0).otherwise(-1).alias("dq"),
            pl.when(started).then(-1).otherwise(0).alias("dr"),
        ),
    ], how="vertical_relaxed")  # fmt: skip
    steps = (
        events.group_by("t").agg(pl.col("dq").sum(), pl.col("dr").sum()).sort("t")
        .with_columns(pl.col("dq").cum_sum().alias("queued"), pl.col("dr").cum_sum().alias("running"))
    )  # fmt: skip
    t0 = float(steps["t"][0])
    t1 = float(steps["t"][-1])
    if a.select(pl.col("ended_at").is_null().any()).item():
        t1 = max(t1, now)
    span = max(t1 - t0, 1e-3)
    samples = 400
    grid = pl.DataFrame({"t": [t0 + span * i / samples for i in range(samples + 1)]})
    sampled = grid.join_asof(steps.select("t", "queued", "running"), on="t", strategy="backward").fill_null(0)
    queued = sampled["queued"].to_list()
    running = sampled["running"].to_list()
    peak_jobs = max((q + r for q, r in zip(queued, running)), default=0)
    peak, ticks = _count_ticks(peak_jobs)
    width, height, left, bottom = 1000, 240, 60, 40
    plot_w, plot_h = width - left - 20, height - bottom - 15

    def point(i: int, value: float) -> str:
        return f"{left + plot_w * i / samples:.1f},{15 + plot_h - plot_h * value / peak:.1f}"

    base = f"{left + plot_w:.1f},{15 + plot_h:.1f} {left:.1f},{15 + plot_h:.1f}"
    run_line = " ".join(point(i, r) for i, r in enumerate(running))
    all_line = " ".join(point(i, q + r) for i, (q, r) in enumerate(zip(queued, running)))
    parts = [_svg_open("concurrency", width, height, "jobs queued and running over time")]
    for tick in ticks:
        y = 15 + plot_h - plot_h * tick / peak
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick}</text>')
    parts.append(f'<polygon class="area-queued" points="{all_line} {base}" fill="{_COLOURS["QUEUED"]}"'
                 ' fill-opacity="0.45"><title>queued</title></polygon>')  # fmt: skip
    parts.append(f'<polygon class="area-running" points="{run_line} {base}" fill="{_COLOURS["RUNNING"]}"'
                 ' fill-opacity="0.85"><title>running</title></polygon>')  # fmt: skip
    for offset in _time_ticks(span):
        xt = left + plot_w * offset / span
        parts.append(f'<text x="{xt:.1f}" y="{15 + plot_h + 18}" text-anchor="middle" class="tick">'
                     f"{_tick_label(offset)}</text>")  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" class="label">time since the'
                 f" first submission; peak {peak_jobs} job{'s' if peak_jobs != 1 else ''} in the scheduler</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- the page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5b6475;font-size:13px} .meta code{font-size:12px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px;margin-top:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border-radius:6px;padding:8px 14px;min-width:96px;color:#fff}
.card b{display:block;font-size:22px} .card span{font-size:12px;text-transform:lowercase}
.chart{display:block;max-width:100%;height:auto}
.chart text{font-size:12px;fill:#394152} .chart .tick{font-size:11px;fill:#6b7385}
.chart .rowlabel{font-size:10px;fill:#394152} .chart .inbar{fill:#fff;font-weight:600}
.chart .grid{stroke:#eceef2;stroke-width:1} .chart .axis{stroke:#9aa1ae;stroke-width:1}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f1f3f6;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
td code{white-space:pre-wrap;word-break:break-all;font-size:12px}
.empty{color:#6b7385;font-style:italic} .caption{color:#5b6475;font-size:12.5px;margin:2px 0 8px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px} @media(max-width:900px){.grid2{grid-template-columns:1fr}}
"""


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{colour}"></i>{_esc(name)}</span>' for name, colour in items
    ) + "</div>"  # fmt: skip


def render_report(reader: Housekeeper, now: float | None = None) -> str:
    """The HTML page for a run, as a string."""
    now = time.time() if now is None else now
    frame = reader._frame()
    counts = {s: int(n) for s, n in frame.group_by("status").len().iter_rows()} if frame.height else {}
    counts = {str(k): v for k, v in counts.items()}
    total = frame.height
    attempts = attempts_frame(reader)
    failed = failed_jobs(reader)
    groups = failure_groups(failed)
    scheduler = reader.scheduler
    ran = attempts.filter(pl.col("started_at").is_not_null() & pl.col("ended_at").is_not_null())
    run_times = (ran["ended_at"] - ran["started_at"]) if ran.height else pl.Series([], dtype=pl.Float64)
    waited = attempts.filter(pl.col("started_at").is_not_null() & pl.col("submitted_at").is_not_null())
    wait_times = (waited["started_at"] - waited["submitted_at"]) if waited.height else pl.Series([], dtype=pl.Float64)
    finished = sum(counts.get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED"))

    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>housekeeper report: {_esc(os.path.basename(reader.jobs_dir) or reader.jobs_dir)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>housekeeper run <code>{_esc(os.path.basename(reader.jobs_dir))}</code></h1>",
        (f'<div class="meta">folder <code>{_esc(reader.jobs_dir)}</code> · scheduler {_esc(scheduler)} · '
         f"{total} job{'s' if total != 1 else ''}, {attempts.height} attempt{'s' if attempts.height != 1 else ''} · "
         f"{finished} finished · report written {_dt.datetime.fromtimestamp(now).strftime('%Y-%m-%d %H:%M:%S')}</div>"),
    ]
    # Status counts
    out.append('<section id="status"><h2>Status</h2><div class="cards">')
    for status in STATUS_ORDER:
        out.append(f'<div class="card" style="background:{_COLOURS[status]}"><b>{counts.get(status, 0)}</b>'
                   f"<span>{status}</span></div>")  # fmt: skip
    out.append("</div>")
    out.append(_status_bar(counts, total) if total else '<p class="empty">this run has no jobs</p>')
    out.append("</section>")
    # Timeline
    svg, caption = _timeline(attempts, now)
    out.append('<section id="timeline-section"><h2>Timeline</h2>')
    out.append(f'<p class="caption">One row per job ({_esc(caption)}); one bar per attempt: the wait in the queue, '
               "then the run, coloured by how it ended.</p>" if caption else "")  # fmt: skip
    out.append(_legend([("waiting in the queue", _WAIT_COLOUR)] + [(s.lower(), _COLOURS[s]) for s in
                                                                   ("COMPLETED", "FAILED", "CANCELLED", "RUNNING")]))
    out.append(svg)
    out.append("<h2>Jobs in the scheduler over time</h2>")
    out.append(_legend([("running", _COLOURS["RUNNING"]), ("queued", _COLOURS["QUEUED"])]))
    out.append(_concurrency(attempts, now))
    out.append("</section>")
    # Histograms
    out.append('<section id="histograms"><div class="grid2"><div><h2>Run time</h2>')
    out.append(_histogram("runtime-hist", run_times, "Run time per attempt", _COLOURS["RUNNING"]))
    out.append("</div><div><h2>Wait time in the queue</h2>")
    out.append(_histogram("wait-hist", wait_times, "Wait time per attempt", _COLOURS["QUEUED"]))
    out.append("</div></div></section>")
    # Failures
    by_reason: dict[str, int] = {}
    for job in failed:
        by_reason[job["reason"] or "unknown"] = by_reason.get(job["reason"] or "unknown", 0) + 1
    out.append(f'<section id="failures"><h2>Failures by reason ({len(failed)} failed job'
               f"{'s' if len(failed) != 1 else ''})</h2>")  # fmt: skip
    out.append(_hbar_chart("failure-reasons", sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])),
                           _COLOURS["FAILED"], "failed jobs by reason"))  # fmt: skip
    if groups:
        out.append("<h2>Failures by first error line</h2>")
        out.append('<table id="failure-groups"><thead><tr><th>jobs</th><th>reason</th><th>first error line'
                   " (numbers and paths generalised)</th><th>example</th><th>job ids</th></tr></thead><tbody>")  # fmt: skip
        for group in groups[:200]:
            ids = group["job_ids"]
            shown = ", ".join(map(str, ids[:8])) + (f" … (+{len(ids) - 8})" if len(ids) > 8 else "")
            out.append(f'<tr><td class="num">{group["count"]}</td><td>{_esc(group["reason"])}</td>'
                       f'<td><code>{_esc(group["line"])}</code></td><td><code>{_esc(group["example"][:300])}</code>'
                       f"</td><td>{_esc(shown)}</td></tr>")  # fmt: skip
        out.append("</tbody></table>")
        if len(groups) > 200:
            out.append(f'<p class="caption">and {len(groups) - 200} smaller groups: <code>hk failures</code></p>')
        out.append("<h2>Failed jobs</h2>")
        out.append('<table id="failed-jobs"><thead><tr><th>id</th><th>name</th><th>reason</th><th>exit</th>'
                   "<th>attempt</th><th>scheduler id</th><th>first error line</th></tr></thead><tbody>")  # fmt: skip
        for job in failed[:_TABLE_MAX_ROWS]:
            first = job["first_error"]
            where = f"{first['file']}:{first['line']}: " if first else ""
            code = job["exit_code"] if job["exit_code"] is not None else (
                f"signal {job['signal']}" if job["signal"] is not None else "")  # fmt: skip
            out.append(
                f'<tr><td class="num">{job["job_id"]}</td><td>{_esc(job["name"])}</td><td>{_esc(job["reason"])}</td>'
                f'<td class="num">{_esc(code)}</td><td class="num">{job["attempt"]}</td>'
                f'<td>{_esc(job["scheduler_id"] or "")}</td><td><code>{_esc(where + failure_line(job)[:500])}</code></td></tr>'
            )
        out.append("</tbody></table>")
        if len(failed) > _TABLE_MAX_ROWS:
            out.append(f'<p class="caption">the first {_TABLE_MAX_ROWS} of {len(failed)} failed jobs; all of them:'
                       " <code>hk ls DIR --status failed</code></p>")  # fmt: skip
    out.append("</section>")
    out.append('<p class="meta">Written by housekeeper. This page is self-contained: no script, no network.</p>')
    out.append("</main></body></html>")
    return "\n".join(out)


def write_report(
    jobs_dir: str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    *,
    db_path: str | os.PathLike[str] | None = None,
) -> str:
    """Write the run's HTML report to `path` (default: `<jobs_dir>/report.html`); returns the
    path written. Reads the run only: the scheduler is not contacted."""
    reader = open_run(jobs_dir, db_path)
    try:
        page = render_report(reader)
    finally:
        reader.close()
    target = os.path.abspath(os.fspath(path)) if path else os.path.join(reader.jobs_dir, "report.html")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.replace(temporary, target)
    return target
