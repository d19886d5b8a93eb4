"""Deciding a finished job's outcome from the scheduler's word and the job's own exit record.

A job is COMPLETED only if the scheduler reports it finished without error, its command exited
0, its logs hold no unexcused error line and its expected files exist (SPEC §4). Otherwise it
is FAILED with the first reason that applies, in that order.
"""
from __future__ import annotations

import os
from typing import Any

import msgspec

from .checks import Rules, check_logs, missing_files
from .models import ExitRecord, JobStatus, Reason

# Reasons only the scheduler can know; they win over whatever the exit record says.
SCHEDULER_REASONS = frozenset(
    {Reason.TIMEOUT.value, Reason.OOM.value, Reason.NODE_FAIL.value, Reason.PREEMPTED.value,
     Reason.SCHEDULER_ERROR.value, Reason.LOST.value}
)  # fmt: skip


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
    if sched_status is JobStatus.FAILED and sched and sched.get("reason") in SCHEDULER_REASONS:
        return outcome(JobStatus.FAILED, Reason(sched["reason"]), rec_exit if record else sched_exit,
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
