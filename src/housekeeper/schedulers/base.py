"""The contract between housekeeper's core and a scheduler dialect.

A dialect builds argv lists and parses text; it never runs a command, opens a file or
sleeps. The core hands the argv to the runner, and the text back to the dialect.

Frames returned by ``parse_status`` and ``parse_accounting`` have exactly the columns of
``STATUS_SCHEMA`` (in that order, those dtypes), one row per job or array task, keyed by
``scheduler_id`` spelled exactly as ``task_ids`` / ``parse_submit`` spelled it at submission.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import msgspec
import polars as pl

from ..models import Resources

# status: a JobStatus value; reason: a Reason value or null (set for FAILED/CANCELLED when
# the scheduler alone knows why, e.g. timeout, oom, node_fail, preempted, cancelled_by_user).
STATUS_SCHEMA: dict[str, pl.DataType] = {
    "scheduler_id": pl.Utf8(),
    "native_state": pl.Utf8(),  # the scheduler's own state string, e.g. "OUT_OF_MEMORY"
    "status": pl.Utf8(),
    "reason": pl.Utf8(),
    "exit_code": pl.Int32(),  # null when unknown
    "signal": pl.Int32(),  # null when none / unknown
    "pending_reason": pl.Utf8(),  # e.g. "Dependency", "DependencyNeverSatisfied", "Resources"
    "never_runs": pl.Boolean(),  # pending in a way that needs a human (never satisfied dep, bad partition limit ...)
    "node": pl.Utf8(),
    "started_at": pl.Float64(),  # epoch seconds or null
    "ended_at": pl.Float64(),
    "elapsed_s": pl.Float64(),  # accounting only (null from queue queries)
    "cpu_time_s": pl.Float64(),
    "max_rss_mb": pl.Float64(),
}


def empty_status_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=STATUS_SCHEMA)


class ErrorKind(str, enum.Enum):
    """What a failed scheduler command means for whoever called it."""

    TRANSIENT = "transient"  # try again later (timeouts, controller unreachable, busy)
    POLICY = "policy"  # the site refuses this job now (QOS/association limits, queue full)
    INVALID = "invalid"  # the request can never succeed (bad partition, account, resources)
    NO_ACCOUNTING = "no_accounting"  # accounting disabled: not an error for the caller
    UNKNOWN_JOB = "unknown_job"  # the ids are not known (any more): empty answer, not an error
    OTHER = "other"


class SubmitRequest(msgspec.Struct, kw_only=True):
    """One scheduler submission: a single job, or an array of ``array_size`` tasks 0..N-1."""

    script_path: str  # absolute path of the script handed to the scheduler
    name: str  # job name, already restricted to [A-Za-z0-9_.+-]
    resources: Resources
    workdir: str  # absolute; the scripts also cd there themselves
    array_size: int | None = None  # None: one job; N: array indices 0..N-1
    max_running: int | None = None  # throttle for arrays (SLURM %N), None = no throttle
    # (kind, scheduler ids) with kind in {"afterok", "afternotok", "afterany"}; all must hold
    dependencies: tuple[tuple[str, tuple[str, ...]], ...] = ()
    stdout_path: str | None = None  # single job: where the scheduler writes the batch's stdout
    stderr_path: str | None = None
    spool_dir: str | None = None  # arrays: folder for the scheduler's own per-task output
    comment: str = ""  # opaque tag unique to this submission, to find it again after a crash
    extra_args: tuple[str, ...] = ()  # passed through verbatim (e.g. --exclude=node3)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What a queue allows, as far as the scheduler tells: None where it does not."""

    max_walltime_s: int | None = None
    max_memory_mb: int | None = None  # the largest node's memory
    nodes: tuple[str, ...] | None = None  # the queue's node names


class Dialect(Protocol):
    """What every scheduler dialect module provides (see schedulers/slurm.py)."""

    name: str
    native_dependencies: bool

    def directives(self, req: SubmitRequest) -> list[str]:
        """Header lines (e.g. '#SBATCH --mem=4096M') describing the request, for the script."""

    def submit_argv(self, req: SubmitRequest) -> list[str]: ...

    def parse_submit(self, stdout: str) -> str:
        """The scheduler id of a single job, or the base id of an array."""

    def task_ids(self, base_id: str, array_size: int) -> list[str]:
        """The scheduler ids of tasks 0..array_size-1 of an array submitted as base_id."""

    def status_argv(self, scheduler_ids: Sequence[str]) -> list[str]: ...

    def parse_status(self, text: str) -> pl.DataFrame: ...

    def accounting_argv(self, scheduler_ids: Sequence[str]) -> list[str] | None:
        """None when the scheduler has no separate accounting query."""

    def parse_accounting(self, text: str) -> pl.DataFrame: ...

    def cancel_argv(self, scheduler_ids: Sequence[str]) -> list[str]: ...

    def classify_error(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> ErrorKind: ...
