"""The `housekeeper` (alias `hk`) command line: look at a run, find its failures, act on them.

Read-only commands (status, ls, show, failures, export, report) read the run's database and
never contact the scheduler (`--refresh` makes them poll once first). Commands that act
(retry, cancel, cleanup, monitor) open the run with `housekeeper(jobs_dir)`, which reuses the
scheduler recorded in it and the log rules its driver wrote.

Exit codes: 0 ok; 1 some jobs failed (status, monitor); 2 a usage or user error (bad option,
unknown job, not a housekeeper run, an action that does not fit a job's state); 3 the
scheduler failed; 130 interrupted. See docs/cli.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import HousekeeperError, InvalidArgumentError, SchedulerError
from .models import JobStatus, Reason
from .progress import STATUS_ORDER, TERMINAL, Progress, format_duration, summary

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2
EXIT_SCHEDULER = 3
EXIT_INTERRUPTED = 130

log = logging.getLogger("housekeeper")


class UsageError(HousekeeperError):
    """A mistake on the command line that argparse cannot see (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ------------------------------------------------------------------------------ output
class _Out:
    """Where text goes, and whether it may be coloured."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def status(self, status: str, width: int = 0) -> str:
        text = status.ljust(width)
        if not self.colour:
            return text
        code = {"COMPLETED": "32", "FAILED": "31", "CANCELLED": "33", "RUNNING": "36", "QUEUED": "34",
                "PENDING": "90"}.get(status, "0")  # fmt: skip
        return f"\x1b[{code}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.colour else text


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Iterable[int] = (),
           status_col: int | None = None, out: _Out | None = None) -> list[str]:  # fmt: skip
    """Plain aligned columns (no borders), the way `squeue` and `mq ls` print."""
    right = set(right)
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.rjust(widths[i]) if i in right else h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        parts = []
        for i, value in enumerate(row):
            if out is not None and i == status_col:
                parts.append(out.status(value, widths[i]))
            else:
                parts.append(value.rjust(widths[i]) if i in right else value.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return lines


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _id_list(ids: Sequence[int], limit: int = 30) -> str:
    """'1-4, 7, 9-12' (ids sorted), shortened after `limit` runs."""
    runs: list[str] = []
    ordered_ids = sorted(set(ids))
    start = prev = None
    for i in [*ordered_ids, None]:
        if start is not None and (i is None or i != prev + 1):  # type: ignore[operator]
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    if len(runs) > limit:
        return ", ".join(runs[:limit]) + f", … ({len(ordered_ids)} in all)"
    return ", ".join(runs)


# ------------------------------------------------------------------------- opening runs
def _reader(args: argparse.Namespace) -> Any:
    """A read-only view of the run (no scheduler contact); polls once first with --refresh."""
    from .report import open_run

    if getattr(args, "refresh", False):
        hk = _actor(args)
        try:
            hk.poll()
        finally:
            hk.close()
    return open_run(args.dir, args.db)


def _run_rules(jobs_dir: str) -> dict[str, Any]:
    """The log rules the run's driver last wrote, so that jobs retried from here are judged
    like the rest (housekeeper(jobs_dir) alone would use the default rules)."""
    from .report import run_rules

    rules = run_rules(jobs_dir)
    if rules is None:
        return {}
    return {
        "error_patterns": rules.error_patterns or None,
        "error_whitelist": rules.error_whitelist or None,
        "whitelist_threshold": rules.whitelist_threshold,
    }


def _actor(args: argparse.Namespace) -> Any:
    """The run opened for acting on it: `housekeeper(jobs_dir)` with its stored scheduler."""
    from .api import housekeeper
    from .report import open_run

    open_run(args.dir, args.db).close()  # refuses a folder that is not a run, before creating anything
    return housekeeper(args.dir, db_path=args.db, **_run_rules(os.path.abspath(args.dir)))


_RANGE = re.compile(r"^(\d+)-(\d+)$")


def _resolve(store: Any, refs: Sequence[str]) -> list[int]:
    """Job ids for references: an id (`7`), a range (`3-9`), a job_subdir, a name, or a glob
    on names and subdirs (`'cal_spw*'`). Every reference must match at least one job."""
    ids: list[int] = []
    seen: set[int] = set()

    def add(found: Iterable[int]) -> None:
        for job_id in found:
            if job_id not in seen:
                seen.add(job_id)
                ids.append(job_id)

    conn = store.conn
    for ref in refs:
        ref = ref.strip()
        found: list[int] = []
        if ref.isdigit():
            found = [r[0] for r in conn.execute("SELECT job_id FROM jobs WHERE job_id=?", (int(ref),))]
        elif _RANGE.match(ref):
            low, high = (int(v) for v in _RANGE.match(ref).groups())  # type: ignore[union-attr]
            if low > high:
                raise UsageError(f"job range {ref!r} goes backwards")
            found = [r[0] for r in conn.execute(
                "SELECT job_id FROM jobs WHERE job_id BETWEEN ? AND ? ORDER BY job_id", (low, high))]  # fmt: skip
        elif any(c in ref for c in "*?["):
            found = [r[0] for r in conn.execute(
                "SELECT job_id FROM jobs WHERE name GLOB ? OR job_subdir GLOB ? ORDER BY job_id", (ref, ref))]  # fmt: skip
        else:
            found = [r[0] for r in conn.execute("SELECT job_id FROM jobs WHERE job_subdir=?", (ref,))]
            if not found:
                found = [r[0] for r in conn.execute("SELECT job_id FROM jobs WHERE name=? ORDER BY job_id", (ref,))]
        if not found:
            raise UsageError(f"no job matches {ref!r} in this run (give a job id, a range like 3-9, a job_subdir "
                             "or a name; `hk ls DIR` lists them)")  # fmt: skip
        add(found)
    return ids


def _ids_where(store: Any, where: str, params: Sequence[Any] = ()) -> list[int]:
    return [r[0] for r in store.conn.execute(f"SELECT job_id FROM jobs WHERE {where} ORDER BY job_id", params)]


def _statuses(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip().upper()
            if not item:
                continue
            if item not in JobStatus.__members__:
                raise UsageError(f"--status {item.lower()!r}: not one of {', '.join(s.lower() for s in STATUS_ORDER)}")
            out.append(item)
    return out or None


def _reasons(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    known = {r.value for r in Reason}
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item not in known:
                raise UsageError(f"--reason {item!r}: not one of {', '.join(sorted(known))}")
            out.append(item)
    return out or None


def _epoch_frame(frame: Any) -> Any:
    """The jobs frame with its datetime columns back as epoch seconds (floats)."""
    import polars as pl

    return frame.with_columns(
        pl.col("status").cast(pl.Utf8),
        *[(pl.col(c).dt.epoch("us") / 1e6).alias(c) for c in ("submitted_at", "started_at", "ended_at", "created_at")],
    )


# ---------------------------------------------------------------------------- commands
def cmd_status(args: argparse.Namespace, out: _Out) -> int:
    reader = _reader(args)
    try:
        store = reader.store
        now = time.time()
        counts = {s: 0 for s in STATUS_ORDER}
        counts.update(store.status_counts())
        total = sum(counts.values())
        finished = sum(counts[s] for s in TERMINAL)
        failures = dict(store.conn.execute(
            "SELECT reason, count(*) FROM jobs WHERE status='FAILED' GROUP BY reason ORDER BY count(*) DESC, reason"
        ).fetchall())  # fmt: skip
        cancelled = dict(store.conn.execute(
            "SELECT reason, count(*) FROM jobs WHERE status='CANCELLED' GROUP BY reason ORDER BY count(*) DESC, reason"
        ).fetchall())  # fmt: skip
        slowest = [
            {"job_id": j, "name": n, "status": s, "run_s": (e if e is not None else now) - b, "running": e is None}
            for j, n, s, b, e in store.conn.execute(
                "SELECT job_id, name, status, started_at, ended_at FROM jobs WHERE started_at IS NOT NULL"
                " ORDER BY coalesce(ended_at, ?) - started_at DESC LIMIT ?", (now, args.top))
        ]  # fmt: skip
        waiting = [
            {"job_id": j, "name": n, "status": s, "waiting_s": now - since, "since": since}
            for j, n, s, since in store.conn.execute(
                "SELECT job_id, name, status, coalesce(submitted_at, created_at) AS since FROM jobs"
                " WHERE status IN ('PENDING', 'QUEUED') ORDER BY since LIMIT ?", (args.top,))
        ]  # fmt: skip
        updated = store.conn.execute("SELECT max(updated_at) FROM jobs").fetchone()[0]
        scheduler = reader.scheduler
    finally:
        reader.close()
    code = EXIT_FAILED_JOBS if counts.get("FAILED") else EXIT_OK
    if args.json:
        _print_json({
            "jobs_dir": os.path.abspath(args.dir), "scheduler": scheduler, "total": total, "finished": finished,
            "all_finished": finished == total, "counts": counts, "failures_by_reason": failures,
            "cancelled_by_reason": cancelled, "slowest": slowest, "oldest_waiting": waiting,
            "updated_at": updated,
        })  # fmt: skip
        return code
    _print(out.bold(f"run {os.path.abspath(args.dir)}") + f"  (scheduler: {scheduler})")
    _print(f"{finished}/{total} finished")
    for status in STATUS_ORDER:
        if counts[status]:
            _print(f"  {out.status(status.lower(), 10)} {counts[status]:>8}")
    if total == 0:
        _print("  (no jobs yet)")
    if failures:
        _print()
        _print(out.bold("failures by reason"))
        for reason, count in failures.items():
            _print(f"  {reason or 'unknown':<28} {count:>8}")
        _print(f"  (hk failures {args.dir}: the error lines; hk retry {args.dir} --failed: run them again)")
    if cancelled:
        _print()
        _print(out.bold("cancelled, by reason"))
        for reason, count in cancelled.items():
            _print(f"  {reason or 'unknown':<28} {count:>8}")
    if slowest:
        _print()
        _print(out.bold("slowest jobs"))
        rows = [[j["job_id"], j["name"], j["status"], format_duration(j["run_s"]) + (" so far" if j["running"] else "")]
                for j in slowest]  # fmt: skip
        for line in _table(["ID", "NAME", "STATUS", "RUN TIME"], rows, right=[0], status_col=2, out=out):
            _print("  " + line)
    if waiting:
        _print()
        _print(out.bold("oldest waiting jobs"))
        rows = [[j["job_id"], j["name"], j["status"], format_duration(j["waiting_s"]), _clock(j["since"])]
                for j in waiting]  # fmt: skip
        for line in _table(["ID", "NAME", "STATUS", "WAITING", "SINCE"], rows, right=[0], status_col=2, out=out):
            _print("  " + line)
    if finished < total and updated:
        _print()
        _print(f"state as recorded {format_duration(now - updated)} ago; --refresh looks at the scheduler first")
    return code


def _glob_regex(pattern: str) -> str:
    """A shell glob as an anchored regular expression polars understands."""
    return "^" + fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z") + "$"


def cmd_ls(args: argparse.Namespace, out: _Out) -> int:
    import polars as pl

    statuses = _statuses(args.status)
    reasons = _reasons(args.reason)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    reader = _reader(args)
    try:
        frame = _epoch_frame(reader._frame(statuses))
    finally:
        reader.close()
    if args.name:
        frame = frame.filter(
            pl.col("name").str.contains(_glob_regex(args.name)) | pl.col("job_subdir").str.contains(_glob_regex(args.name))
        )
    if reasons:
        frame = frame.filter(pl.col("reason").is_in(reasons))
    matched = frame.height
    if args.limit is not None:
        frame = frame.head(args.limit)
    if args.json:
        _print_json(frame.to_dicts())
        return EXIT_OK
    now = time.time()
    rows = []
    for job in frame.iter_rows(named=True):
        submitted, started, ended = job["submitted_at"], job["started_at"], job["ended_at"]
        wait = (started if started is not None else (ended if ended is not None else now)) - submitted if submitted else None
        run = ((ended if ended is not None else now) - started) if started is not None else None
        code = job["exit_code"] if job["exit_code"] is not None else (f"sig{job['signal']}" if job["signal"] else "")
        rows.append([
            job["job_id"], job["name"], job["status"], job["reason"] or "", job["attempt"], job["scheduler_id"] or "",
            job["job_subdir"], code, _clock(submitted) if submitted else "-", format_duration(wait),
            format_duration(run),
        ])  # fmt: skip
    headers = ["ID", "NAME", "STATUS", "REASON", "TRY", "SCHED_ID", "SUBDIR", "EXIT", "SUBMITTED", "WAIT", "RUN"]
    for line in _table(headers, rows, right=[0, 4, 7, 9, 10], status_col=2, out=out):
        _print(line)
    if matched > frame.height:
        _print(f"({frame.height} of {matched} jobs shown; --limit to see more)")
    elif not rows:
        _print("(no jobs match)")
    return EXIT_OK


def cmd_efficiency(args: argparse.Namespace, out: _Out) -> int:
    by: Any = args.by
    if by not in ("name", "pattern", "resources"):
        by = [c.strip() for c in by.split(",") if c.strip()]
    reader = _reader(args)
    try:
        try:
            frame = reader.efficiency(by=by)
        except InvalidArgumentError as exc:
            raise UsageError(f"--by {args.by}: {exc.problem}") from None
    finally:
        reader.close()
    if args.json:
        _print_json(frame.to_dicts())
        return EXIT_OK
    keys = [c for c in frame.columns if c in ("name", "pattern", "queue", "account", "nodes", "cpus", "gpus",
                                               "memory_mb", "walltime_s")]  # fmt: skip
    p = next((c for c in frame.columns if c.startswith("max_rss_mb_p")), "max_rss_mb_p95")[len("max_rss_mb_"):]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.0f}%"

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}M"

    rows = []
    for g in frame.iter_rows(named=True):
        rows.append([
            " ".join(str(g[k]) for k in keys), g["jobs"], g["completed"], g["oom"], g["timeout"],
            mb(g["memory_mb_asked"]), mb(g[f"max_rss_mb_{p}"]), pct(g["memory_efficiency"]),
            format_duration(g["walltime_s_asked"]), format_duration(g[f"elapsed_s_{p}"]), pct(g["time_efficiency"]),
            g["cpus_asked"], pct(g["cpu_efficiency"]),
            " ".join(x for x in (g["suggested_memory"], g["suggested_walltime"],
                                 f"cpus={g['suggested_cpus']}" if g["suggested_cpus"] else None) if x) or "-",
        ])  # fmt: skip
    headers = ["GROUP", "JOBS", "OK", "OOM", "TIMEOUT", "MEM", f"RSS_{p.upper()}", "MEM_EFF", "TIME",
               f"RUN_{p.upper()}", "TIME_EFF", "CPUS", "CPU_EFF", "SUGGESTED"]  # fmt: skip
    for line in _table(headers, rows, right=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], out=out):
        _print(line)
    if not rows:
        _print("(no finished jobs yet)")
    return EXIT_OK


def _tail(path: str, lines: int = 10, max_bytes: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line was cut
    return [line.rstrip("\r") for line in text if line.strip()][-lines:]


def cmd_show(args: argparse.Namespace, out: _Out) -> int:
    reader = _reader(args)
    try:
        ids = _resolve(reader.store, [args.job])
        if len(ids) > 1:
            raise UsageError(f"{args.job!r} matches {len(ids)} jobs ({_id_list(ids, 10)}); give one job id")
        info = reader.job_info(ids[0])
        failure = reader.failure_info(ids[0], excused=True)  # also the lines the whitelist excused
    finally:
        reader.close()
    tail = _tail(info["stderr"], args.tail) if args.tail else []
    if args.json:
        _print_json({"job": info, "failure": failure, "stderr_tail": tail})
        return EXIT_OK
    status = str(info["status"])
    reason = f" ({info['reason']})" if info["reason"] else ""
    _print(out.bold(f"job {info['job_id']}  {info['name']}") + "  " + out.status(status) + reason)
    mem = f"{info['memory_mb']} MB" if info["memory_mb"] else "-"
    wall = format_duration(info["walltime_s"]) if info["walltime_s"] else "-"
    fields = [
        ("command", info["command"]),
        ("workdir", info["workdir"]),
        ("folder", info["job_dir"]),
        ("script", info["script"]),
        ("resources", (f"{info['nodes']} node(s), {info['cpus']} cpu(s), {info['gpus']} gpu(s), memory {mem}, "
                       f"walltime {wall}, queue {info['queue'] or '-'}, account {info['account'] or '-'}")),
        ("attempt", f"{info['attempt']} (max_retries {info['max_retries']})"),
        ("scheduler", f"id {info['scheduler_id'] or '-'}, state {info['native_state'] or '-'}"),
        ("exit code", ("-" if info["exit_code"] is None else str(info["exit_code"]))
                      + ("" if info["signal"] is None else f", signal {info['signal']}")),
        ("submitted", _clock(info["submitted_at"])),
        ("started", _clock(info["started_at"])),
        ("ended", _clock(info["ended_at"])),
    ]  # fmt: skip
    if info["submitted_at"] and info["started_at"]:
        fields.append(("waited", format_duration(info["started_at"] - info["submitted_at"])))
    if info["started_at"]:
        fields.append(("ran", format_duration((info["ended_at"] or time.time()) - info["started_at"])))
    current = info["attempts"][-1]["detail"] if info["attempts"] else {}
    if current.get("host") or current.get("node"):
        fields.append(("host", current.get("node") or current.get("host")))
    used = []
    if current.get("elapsed_s") is not None:
        used.append(f"elapsed {format_duration(current['elapsed_s'])}")
    if current.get("cpu_time_s") is not None:
        used.append(f"cpu time {format_duration(current['cpu_time_s'])}")
    if current.get("max_rss_mb") is not None:
        used.append(f"max memory {current['max_rss_mb']:.0f} MB")
    if used:
        fields.append(("used", ", ".join(used)))
    if info["expected_files"]:
        fields.append(("expects", ", ".join(info["expected_files"])))
    if info["env"]:
        fields.append(("env", " ".join(f"{k}={v}" for k, v in info["env"].items())))
    if info["dependencies"]:
        fields.append(("after", ", ".join(f"{d['kind']} {d['job_id']}" for d in info["dependencies"])))
    for key, value in fields:
        _print(f"  {key + ':':<11} {value}")
    if failure["submit_error"]:
        _print()
        _print(out.bold("the scheduler refused it"))
        _print(f"  {failure['submit_error']}")
    if failure.get("scheduler_message"):
        _print()
        _print(out.bold("the scheduler said"))
        _print(f"  {failure['scheduler_message']}")
    errors, excused = failure["log_errors"] or 0, failure["log_excused"] or 0
    if failure["log_lines"]:
        _print()
        note = f"; {excused} more excused by the whitelist" if excused else ""
        _print(out.bold(f"error lines ({len(failure['log_lines'])} shown of {errors - excused}{note})"))
        for line in failure["log_lines"]:
            _print(f"  {line['file']}:{line['line']}: {line['text']}")
    elif excused and not failure.get("excused_lines"):
        _print()
        _print(f"error lines: {excused} in the logs, all excused by the whitelist")
    if failure.get("excused_lines"):
        _print()
        _print(out.bold("excused by the whitelist"))
        for line in failure["excused_lines"]:
            _print(f"  {line['file']}:{line['line']}: {line['text']}  (by {line['excused_by']!r})")
    if failure["missing_files"]:
        _print()
        _print(out.bold("missing files"))
        for path in failure["missing_files"]:
            _print(f"  {path}")
    if info["attempts"]:
        _print()
        _print(out.bold("attempts"))
        rows = []
        for a, full in zip(failure["attempts"], info["attempts"]):
            code = a["exit_code"] if a["exit_code"] is not None else (f"sig{a['signal']}" if a["signal"] else "")
            ran = format_duration(a["ended_at"] - a["started_at"]) if a["started_at"] and a["ended_at"] else "-"
            asked = " ".join(x for x in (
                f"{full['memory_mb']}M" if full.get("memory_mb") else None,
                format_duration(full["walltime_s"]) if full.get("walltime_s") else None,
                f"-x {full['exclude']}" if full.get("exclude") else None,
            ) if x) or "-"  # fmt: skip
            rss = f"{full['max_rss_mb']:.0f}M" if full.get("max_rss_mb") is not None else "-"
            rows.append([a["attempt"], a["scheduler_id"] or "-", a["status"], a["reason"] or "", code,
                         _clock(a["submitted_at"]), ran, asked, rss, a["stderr"]])  # fmt: skip
        headers = ["TRY", "SCHED_ID", "STATUS", "REASON", "EXIT", "SUBMITTED", "RAN", "ASKED", "MAX_RSS", "STDERR"]
        for line in _table(headers, rows, right=[0, 8], status_col=2, out=out):
            _print("  " + line)
    if tail:
        _print()
        _print(out.bold(f"last lines of {info['stderr']}"))
        for line in tail:
            _print(f"  {line}")
    return EXIT_OK


def cmd_failures(args: argparse.Namespace, out: _Out) -> int:
    from .report import failed_jobs, failure_groups

    reasons = _reasons(args.reason)
    reader = _reader(args)
    try:
        failed = failed_jobs(reader, reasons)
    finally:
        reader.close()
    groups = failure_groups(failed)
    by_reason: dict[str, int] = {}
    for job in failed:
        by_reason[job["reason"] or "unknown"] = by_reason.get(job["reason"] or "unknown", 0) + 1
    if args.json:
        _print_json({"total": len(failed), "by_reason": by_reason, "groups": groups})
        return EXIT_OK
    if not failed:
        _print("no failed jobs")
        return EXIT_OK
    _print(out.bold(f"{len(failed)} failed job{'s' if len(failed) != 1 else ''}"))
    for reason, count in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        _print(f"  {reason:<28} {count:>8}")
    _print()
    _print(out.bold("by first error line") + " (numbers and paths generalised)")
    for group in groups:
        _print(f"  {group['count']:>6}  {group['reason']:<14} {group['line']}")
        example = f"e.g. {group['example_at']}: {group['example']}" if group.get("example_at") else ""
        if example and group["example"] != group["line"]:
            _print(f"{'':24}{example}")
        _print(f"{'':24}jobs {_id_list(group['job_ids'], 8)}")
    _print()
    _print(f"hk show {args.dir} JOB: everything about one job; hk retry {args.dir} --failed [--reason R]: run again")
    return EXIT_OK


def _check_choice(args: argparse.Namespace, flag: str, flag_value: bool) -> None:
    if flag_value and args.jobs:
        raise UsageError(f"give job ids or {flag}, not both")
    if not flag_value and not args.jobs:
        raise UsageError(f"give job ids (or a range like 3-9, a name, a glob) or {flag}")


def _report_action(args: argparse.Namespace, verb: str, done: list[int], extra: dict[str, Any], note: str = "") -> None:
    if args.json:
        _print_json({verb.replace(" ", "_"): done, **extra})
        return
    if done:
        _print(f"{verb} {len(done)} job{'s' if len(done) != 1 else ''}: {_id_list(done)}{note}")
    else:
        _print(f"nothing {verb}{note}")


def cmd_retry(args: argparse.Namespace, out: _Out) -> int:
    _check_choice(args, "--failed", args.failed)
    reasons = _reasons(args.reason)
    if reasons and not args.failed:
        raise UsageError("--reason goes with --failed")
    hk = _actor(args)
    try:
        if args.failed:
            where, params = "status='FAILED'", []
            if reasons:
                where += f" AND reason IN ({','.join('?' * len(reasons))})"
                params = reasons
            ids = _ids_where(hk.store, where, params)
        else:
            ids = _resolve(hk.store, args.jobs)
            states = {j["job_id"]: j["status"] for j in hk.store.jobs_by_ids(ids)}
            wrong = [i for i in ids if states[i] not in ("FAILED", "CANCELLED")]
            if wrong:
                raise UsageError(f"job(s) {_id_list(wrong)} are not FAILED or CANCELLED "
                                 f"({', '.join(sorted({states[i] for i in wrong}))}); only those can be retried")  # fmt: skip
        if args.dry_run:
            _report_action(args, "would retry", ids, {})
            return EXIT_OK
        new = hk.retry(list(ids)) if ids else []  # one call: retried jobs go out together, as arrays
        attempts = dict(zip(ids, new))  # type: ignore[arg-type]
    finally:
        hk.close()
    _report_action(args, "retried", ids, {"attempts": {str(k): v for k, v in attempts.items()}},
                   f" (hk monitor {args.dir} to follow them)" if ids and not args.json else "")  # fmt: skip
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: _Out) -> int:
    _check_choice(args, "--all", args.all)
    hk = _actor(args)
    try:
        ids = _ids_where(hk.store, "status IN ('PENDING', 'QUEUED', 'RUNNING')") if args.all else _resolve(
            hk.store, args.jobs)  # fmt: skip
        if args.dry_run:
            _report_action(args, "would cancel", ids, {})
            return EXIT_OK
        cancelled = hk.cancel(ids) if ids else []
    finally:
        hk.close()
    skipped = sorted(set(ids) - set(cancelled))
    note = f" ({len(skipped)} had already finished)" if skipped and not args.json else ""
    _report_action(args, "cancelled", sorted(cancelled), {"already_finished": skipped}, note)
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace, out: _Out) -> int:
    _check_choice(args, "--completed", args.completed)
    hk = _actor(args)
    try:
        ids = _ids_where(hk.store, "status='COMPLETED'") if args.completed else _resolve(hk.store, args.jobs)
        if args.dry_run:
            _report_action(args, "would clean up", ids, {})
            return EXIT_OK
        removed = hk.cleanup(ids) if ids else []
    finally:
        hk.close()
    _report_action(args, "cleaned up", removed, {}, " (folders deleted; the records stay)" if removed else "")
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace, out: _Out) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    hk = _actor(args)
    progress: Progress | None = None
    counts: dict[str, int] = {}
    try:
        total = sum(hk.store.status_counts().values())
        progress = Progress(total, enabled=False if args.plain else None, stream=sys.stdout)
        if progress.enabled:
            progress._colour = progress._colour and out.colour
        while True:
            hk.poll()
            counts = hk.store.status_counts()
            progress.total = sum(counts.values())
            done = all(s in TERMINAL for s in counts)
            if progress.enabled:
                progress.update(counts, lines=_live_lines(hk.store, final=done or args.once))
            else:
                progress.update(counts)  # keeps the rate for the plain line
                pace = ""
                rate, left = progress.rate(), progress.time_left()
                if rate and not done:
                    pace = f"; {rate * 60:.1f}/min, ~{format_duration(left)} left"
                _print(f"{_clock(time.time())}  {summary(counts)}{pace}")
                sys.stdout.flush()
            if done or args.once:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        sys.stderr.write(f"hk: interrupted; the jobs go on (hk monitor {args.dir} to watch again)\n")
        return EXIT_INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
        hk.close()
    failed = counts.get("FAILED", 0)
    if failed and (not args.once or all(s in TERMINAL for s in counts)):
        sys.stderr.write(f"hk: {failed} job{'s' if failed != 1 else ''} failed (hk failures {args.dir})\n")
    return EXIT_FAILED_JOBS if failed else EXIT_OK


def _live_lines(store: Any, final: bool) -> list[str]:
    lines = []
    failures = store.conn.execute(
        "SELECT reason, count(*) FROM jobs WHERE status='FAILED' GROUP BY reason ORDER BY count(*) DESC LIMIT 6"
    ).fetchall()
    if failures:
        lines.append("failed: " + ", ".join(f"{n} {r or 'unknown'}" for r, n in failures))
    running = store.conn.execute(
        "SELECT job_id, name, started_at FROM jobs WHERE status='RUNNING' AND started_at IS NOT NULL"
        " ORDER BY started_at LIMIT 3"
    ).fetchall()
    if running:
        now = time.time()
        lines.append("longest running: " + ", ".join(f"{j} {n} ({format_duration(now - s)})" for j, n, s in running))
    lines.append(_clock(time.time()) + ("" if final else "  (Ctrl-C stops watching; the jobs go on)"))
    return lines


def cmd_export(args: argparse.Namespace, out: _Out) -> int:
    reader = _reader(args)
    try:
        path = reader.export_state(args.path)
    finally:
        reader.close()
    _print(path)
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: _Out) -> int:
    from .report import write_report

    if args.refresh:
        _reader(args).close()
    path = write_report(args.dir, args.output, db_path=args.db)
    _print(path)
    return EXIT_OK


# ------------------------------------------------------------------------------ parser
def build_parser(prog: str = "hk") -> argparse.ArgumentParser:
    """The whole command line (subcommands included), e.g. for generating documentation."""
    return _build(prog)[0]


def _build(prog: str) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", help="the run's database, when it is not DIR/housekeeper.db")
    common.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR in the environment)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    dir_arg = argparse.ArgumentParser(add_help=False)
    dir_arg.add_argument("dir", metavar="DIR", help="the run's jobs_dir")
    read = argparse.ArgumentParser(add_help=False)
    read.add_argument("--refresh", action="store_true", help="look at the scheduler once first (default: read only)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument("-n", "--dry-run", action="store_true", help="say what would be done, do nothing")

    parser = _Parser(
        prog=prog,
        description="Look at a housekeeper run, find its failures and act on them.",
        epilog="Exit codes: 0 ok; 1 some jobs failed (status, monitor); 2 usage or user error; "
        "3 scheduler error; 130 interrupted. Docs: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"housekeeper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, func: Any, help_text: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        everything: list[Any] = [dir_arg, *parents, common]
        p = sub.add_parser(name, help=help_text, description=help_text, parents=everything)
        p.set_defaults(func=func, command=name)
        commands[name] = p
        return p

    p = add("status", cmd_status, "counts by status, failures by reason, the slowest and oldest waiting jobs "
            "(exit 1 if any job failed)", [read, as_json])  # fmt: skip
    p.add_argument("--top", type=int, default=5, metavar="N", help="how many slowest/oldest jobs to list (default 5)")

    p = add("ls", cmd_ls, "a table of jobs", [read, as_json])
    p.add_argument("-s", "--status", action="append", metavar="S",
                   help="only these statuses (pending, queued, running, completed, failed, cancelled; comma-separated"
                        " or repeated)")  # fmt: skip
    p.add_argument("--name", metavar="GLOB", help="only jobs whose name or job_subdir matches, e.g. 'cal_spw*'")
    p.add_argument("--reason", action="append", metavar="R", help="only jobs with this failure reason")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows")

    p = add("show", cmd_show, "everything known about one job, with its offending log lines", [read, as_json])
    p.add_argument("job", metavar="JOB", help="a job id, or its job_subdir or name")
    p.add_argument("--tail", type=int, default=10, metavar="N", help="last N lines of stderr.log (default 10; 0: none)")

    p = add("failures", cmd_failures, "failed jobs grouped by reason and first error line", [read, as_json])
    p.add_argument("--reason", action="append", metavar="R", help="only this failure reason")

    p = add("retry", cmd_retry, "run failed or cancelled jobs again", [as_json, dry])
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids, ranges (3-9), job_subdirs, names or globs")
    p.add_argument("--failed", action="store_true", help="every FAILED job")
    p.add_argument("--reason", action="append", metavar="R", help="with --failed: only jobs failed for this reason")

    p = add("efficiency", cmd_efficiency, "what each group of jobs asked for, what it used, and what to ask for"
            " next time", [read, as_json])  # fmt: skip
    p.add_argument("--by", default="name", metavar="BY",
                   help="name (default), pattern (digits as *), resources, or columns such as queue,cpus")

    p = add("cancel", cmd_cancel, "cancel jobs that have not finished", [as_json, dry])
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids, ranges (3-9), job_subdirs, names or globs")
    p.add_argument("--all", action="store_true", help="every job that has not finished")

    p = add("cleanup", cmd_cleanup, "delete finished jobs' folders (the records stay)", [as_json, dry])
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids, ranges (3-9), job_subdirs, names or globs")
    p.add_argument("--completed", action="store_true", help="every COMPLETED job")

    p = add("monitor", cmd_monitor, "watch the run until every job has finished (exit 1 if any failed)", [])
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between looks (default 5)")
    p.add_argument("--once", action="store_true", help="look once, show, and exit")
    p.add_argument("--plain", action="store_true", help="a plain line per look, even on a terminal")

    p = add("export", cmd_export, "write every job and attempt to PATH (.json or .parquet)", [read])
    p.add_argument("path", metavar="PATH")

    p = add("report", cmd_report, "write a self-contained HTML report of the run", [read])
    p.add_argument("-o", "--output", metavar="PATH", help="where to write it (default: DIR/report.html)")
    return parser, commands


def _parse(parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser],
           argv: list[str]) -> argparse.Namespace:  # fmt: skip
    """Parse with options and job ids in any order (`hk retry DIR --reason R 3 4`), which a plain
    argparse parse cannot do for a subcommand's list of positionals."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is None or argv[first] not in commands:
        return parser.parse_args(argv)  # --help, --version, no or unknown command
    if first:
        parser.parse_args(argv[:first])  # options before the command: --version, --help, or an error
    return commands[argv[first]].parse_intermixed_args(argv[first + 1 :])


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hk: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hk` and `housekeeper`; returns the exit code."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "hk"
    prog = name if name in ("hk", "housekeeper") else "hk"
    parser, commands = _build(prog)
    args = _parse(parser, commands, list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose)
    colour = sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR") and (
        os.environ.get("TERM") != "dumb")  # fmt: skip
    try:
        return int(args.func(args, _Out(colour)))
    except SchedulerError as exc:
        sys.stderr.write(f"{prog}: scheduler error: {exc}\n")
        return EXIT_SCHEDULER
    except HousekeeperError as exc:  # bad arguments, unknown jobs, not a run, a job in the wrong state
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `hk ls DIR | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
