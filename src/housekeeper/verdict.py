"""Deciding a finished job's outcome from the scheduler's word and the job's own exit record.

A job is COMPLETED only if the scheduler reports it finished without error, its command exited
0, its logs hold no unexcused error line and its expected files exist (SPEC §4). Otherwise it
is FAILED with the first reason that applies, in that order.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from .checks import Rules, check_logs, missing_files
from .models import ExitRecord, JobStatus, Reason

# Reasons only the scheduler can know; they win over whatever the exit record says.
SCHEDULER_REASONS = frozenset(
    {Reason.TIMEOUT.value, Reason.OOM.value, Reason.NODE_FAIL.value, Reason.PREEMPTED.value,
     Reason.SCHEDULER_ERROR.value, Reason.LOST.value}
)  # fmt: skip


# What schedulers write into a job's output when they end it, and what it means. Matched only
# on lines the scheduler itself writes (slurmstepd's, PBS's "=>> PBS:"), never the user's.
SCHEDULER_MESSAGES: tuple[tuple[re.Pattern[str], Reason], ...] = (
    # slurmstepd: error: *** JOB 123 ON node1 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT ***
    (re.compile(r"slurmstepd.*\*\*\* .*DUE TO TIME LIMIT"), Reason.TIMEOUT),
    # slurmstepd: error: *** JOB 123 ON node1 CANCELLED AT ... DUE TO PREEMPTION ***
    (re.compile(r"slurmstepd.*\*\*\* .*DUE TO PREEMPTION"), Reason.PREEMPTED),
    # slurmstepd: error: *** JOB 123 ON node1 CANCELLED AT ... DUE TO NODE FAILURE ***
    (re.compile(r"slurmstepd.*\*\*\* .*DUE TO NODE FAIL"), Reason.NODE_FAIL),
    # slurmstepd: error: Detected 1 oom-kill event(s) in StepId=123.batch. Some of your processes ...
    (re.compile(r"slurmstepd.*(oom-kill event|out-of-memory handler)", re.IGNORECASE), Reason.OOM),
    # slurmstepd: error: Exceeded job memory limit (jobacct_gather's OverMemoryKill, no cgroups)
    (re.compile(r"slurmstepd.*Exceeded (job|step) memory limit"), Reason.OOM),
    # slurmstepd: error: *** JOB 123 ON node1 CANCELLED AT 2024-01-01T00:00:00 *** (scancel)
    (re.compile(r"slurmstepd.*\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT \S+( by \S+)? \*\*\*"),
     Reason.CANCELLED_BY_USER),
    # =>> PBS: job killed: walltime 152 exceeded limit 120 (PBS Pro and Torque)
    (re.compile(r"PBS: job killed: (walltime|cput)"), Reason.TIMEOUT),
    # =>> PBS: job killed: mem 4194304kb exceeded limit 2097152kb (also vmem)
    (re.compile(r"PBS: job killed: v?mem"), Reason.OOM),
)  # fmt: skip
_TAIL_BYTES = 64 * 1024


def reason_from_messages(paths: Iterable[str]) -> tuple[Reason, str] | None:
    """The reason a scheduler wrote into these files when it ended the job (the last one found
    in each file's last 64 KB wins), with the line that says so."""
    found: tuple[Reason, str] | None = None
    for path in paths:
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - _TAIL_BYTES))
                tail = handle.read().decode(errors="replace")
        except OSError:
            continue
        for line in tail.splitlines():
            if "slurmstepd" not in line and "PBS:" not in line:
                continue
            for pattern, reason in SCHEDULER_MESSAGES:
                if pattern.search(line):
                    found = (reason, line.strip())
                    break
    return found


class Outcome(msgspec.Struct, kw_only=True):
    status: JobStatus
    reason: Reason | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    detail: dict[str, Any] = {}


def read_record(folder: str, attempt: int) -> ExitRecord | None:
    """The exit record of this attempt, or None (absent, half-written, or another attempt's)."""
    try:
        with open(os.path.join(folder, "status.json"), "rb") as handle:
            record = msgspec.json.decode(handle.read(), type=ExitRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return record if record.attempt == attempt else None


def read_running(folder: str, attempt: int) -> dict[str, Any] | None:
    """The start marker of this attempt (written by the batch script when it starts), or None."""
    try:
        with open(os.path.join(folder, "running.json"), "rb") as handle:
            marker = msgspec.json.decode(handle.read())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("attempt") != attempt:
        return None
    return marker


def complete_record(record: ExitRecord, folder: str, workdir: str, expected: list[str], rules: Rules) -> ExitRecord:
    """Do the checks the job could not do itself (no Python on the node, or no record at all)."""
    if record.checked:
        return record
    record.log_errors, record.log_excused, record.log_lines, record.log_patterns = check_logs(folder, rules)
    record.missing_files = missing_files(expected, workdir)
    record.checked = True
    record.ok = record.exit_code == 0 and record.signal is None and not record.log_lines and not record.missing_files
    return record


def _detail(record: ExitRecord | None, sched: dict[str, Any] | None) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if record is not None:
        detail["log_lines"] = [[line.file, line.line, line.text] for line in record.log_lines]
        detail["log_patterns"] = list(record.log_patterns)
        detail["log_errors"] = record.log_errors
        detail["log_excused"] = record.log_excused
        detail["missing_files"] = list(record.missing_files)
        detail["host"] = record.host
        if record.restarts:
            detail["requeued"] = record.restarts
    if sched is not None:
        for key in ("native_state", "pending_reason", "node", "elapsed_s", "cpu_time_s", "max_rss_mb"):
            if sched.get(key) is not None:
                detail[key] = sched[key]
    return detail


def decide(
    *,
    sched: dict[str, Any] | None,
    record: ExitRecord | None,
    walltime_s: int | None,
    dependency_impossible: bool = False,
) -> Outcome | None:
    """The outcome of a job whose scheduler row or exit record says it ended; None if it has not.

    `sched` is a row of the scheduler's status frame (or None when the scheduler no longer knows
    the job); `record` is this attempt's exit record, already completed by complete_record."""
    sched_status = JobStatus(sched["status"]) if sched and sched.get("status") else None
    if sched_status is not None and not sched_status.is_terminal:
        return None
    if sched_status is None and record is None:
        return None
    detail = _detail(record, sched)
    started = (record.started_at if record else None) or (sched.get("started_at") if sched else None)
    ended = (sched.get("ended_at") if sched else None) or (record.ended_at if record else None)

    def outcome(status: JobStatus, reason: Reason | None, exit_code: int | None, signal: int | None) -> Outcome:
        return Outcome(status=status, reason=reason, exit_code=exit_code, signal=signal,
                       started_at=started, ended_at=ended, detail=detail)  # fmt: skip

    rec_exit = record.exit_code if record else None
    rec_signal = record.signal if record else None
    sched_exit = sched.get("exit_code") if sched else None
    sched_signal = sched.get("signal") if sched else None

    if sched_status is JobStatus.CANCELLED:
        never_started = started is None
        reason = Reason.DEPENDENCY_NEVER_SATISFIED if dependency_impossible and never_started else Reason(
            sched.get("reason") or Reason.CANCELLED_BY_USER.value  # type: ignore[union-attr]
        )
        return outcome(JobStatus.CANCELLED, reason, rec_exit, rec_signal or sched_signal)
    sched_reason = sched.get("reason") if sched else None
    if (sched_reason == Reason.SCHEDULER_ERROR.value and sched and sched.get("native_state") == "FAILED"
            and (rec_exit not in (0, None) or rec_signal is not None)):  # fmt: skip
        # SLURM's FAILED with exit 0:0 is read as "failed for its own reasons" only for want of
        # a better one (seen live: an array task that exited 3, briefly shown as 0:0); the
        # job's own record of a non-zero exit or a signal is that better reason.
        sched_reason = None
    if sched_status is JobStatus.FAILED and sched_reason in SCHEDULER_REASONS:
        return outcome(JobStatus.FAILED, Reason(sched_reason), rec_exit if record else sched_exit,
                       rec_signal or sched_signal)  # fmt: skip
    if record is not None:
        exit_code, signal = record.exit_code, record.signal
        if record.ok and sched_status in (None, JobStatus.COMPLETED):
            return outcome(JobStatus.COMPLETED, None, 0, None)
        if signal is not None:
            elapsed = (record.ended_at or 0) - (record.started_at or 0)
            timed_out = record.terminated == 15 and walltime_s and elapsed >= 0.95 * walltime_s
            return outcome(JobStatus.FAILED, Reason.TIMEOUT if timed_out else Reason.SIGNAL, None, signal)
        if exit_code not in (0, None):
            return outcome(JobStatus.FAILED, Reason.EXIT_CODE, exit_code, None)
        if record.log_lines:
            return outcome(JobStatus.FAILED, Reason.LOG_ERROR, exit_code, None)
        if record.missing_files:
            return outcome(JobStatus.FAILED, Reason.MISSING_FILES, exit_code, None)
        # The job itself found nothing wrong, but the scheduler failed it (e.g. an epilog).
        return outcome(JobStatus.FAILED, Reason.EXIT_CODE, sched_exit or exit_code, sched_signal)
    # No exit record: the scheduler's word is all we have.
    if sched_status is JobStatus.COMPLETED:
        return outcome(JobStatus.COMPLETED, None, sched_exit or 0, None)
    reason = Reason(sched["reason"]) if sched and sched.get("reason") else Reason.EXIT_CODE
    if reason is Reason.EXIT_CODE and sched_signal:
        reason = Reason.SIGNAL
    return outcome(JobStatus.FAILED, reason, sched_exit, sched_signal)
