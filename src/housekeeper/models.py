"""Statuses, failure reasons and the records that flow between layers."""
from __future__ import annotations

import enum

import msgspec


class JobStatus(str, enum.Enum):
    """Where a job is in its life. Terminal: COMPLETED, FAILED, CANCELLED."""

    PENDING = "PENDING"  # recorded by housekeeper, not yet accepted by the scheduler
    QUEUED = "QUEUED"  # accepted by the scheduler, waiting to start
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
TERMINAL_NAMES = frozenset(s.value for s in _TERMINAL)
ACTIVE_NAMES = frozenset({"QUEUED", "RUNNING"})


class Reason(str, enum.Enum):
    """Why a job is FAILED or CANCELLED (SPEC §3)."""

    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    OOM = "oom"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LOG_ERROR = "log_error"
    MISSING_FILES = "missing_files"
    SUBMIT_ERROR = "submit_error"
    DEPENDENCY_NEVER_SATISFIED = "dependency_never_satisfied"
    CANCELLED_BY_USER = "cancelled_by_user"
    LOST = "lost"
    SCHEDULER_ERROR = "scheduler_error"  # the scheduler failed the job for its own reasons (deadline, ...)

    def __str__(self) -> str:
        return self.value


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """What a job asks the scheduler for. Jobs with equal Resources may share an array."""

    nodes: int = 1
    cpus: int = 1
    gpus: int = 0
    memory_mb: int | None = None
    walltime_s: int | None = None
    queue: str | None = None
    account: str | None = None
    exclude: str | None = None  # nodes not to run on (comma-separated; grown by node_fail retries)


# Failure reasons that are not the job's fault: retried without counting against max_retries.
FREE_RETRY_REASONS = frozenset({"node_fail", "preempted"})
# Reasons a retry can be asked for (FAILED jobs only; cancelled jobs are never retried by themselves).
RETRYABLE_REASONS = (
    "exit_code", "signal", "timeout", "oom", "node_fail", "preempted", "log_error", "missing_files",
    "lost", "scheduler_error",
)  # fmt: skip


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which failures are retried and how each retry's request grows.

    retry_on: the reasons retried (None: all of RETRYABLE_REASONS). timeout / oom: factors the
    walltime / memory are multiplied by after that failure (None: unchanged), capped by
    max_walltime_s / max_memory_mb and by what the queue allows. node_fail: exclude the nodes
    an attempt failed on from the next one."""

    retry_on: tuple[str, ...] | None = None
    timeout: float | None = None
    oom: float | None = None
    node_fail: bool = False
    max_walltime_s: int | None = None
    max_memory_mb: int | None = None

    def retries(self, reason: str | None) -> bool:
        return reason in (self.retry_on if self.retry_on is not None else RETRYABLE_REASONS)


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A validated, normalised submit() call."""

    command: str
    name: str
    job_subdir: str | None
    resources: Resources
    workdir: str
    expected_files: tuple[str, ...] = ()
    after_ok: tuple[int, ...] = ()
    after_fail: tuple[int, ...] = ()
    after_any: tuple[int, ...] = ()
    max_retries: int = 0
    env: dict[str, str] = {}
    retry_policy: RetryPolicy | None = None


class LogLine(msgspec.Struct, frozen=True):
    """One offending log line."""

    file: str
    line: int
    text: str


class ExitRecord(msgspec.Struct, kw_only=True):
    """What a job's batch script writes into `status.json` in its folder when it ends."""

    job_id: int
    attempt: int
    exit_code: int | None  # the command's exit code; None if it died of a signal
    signal: int | None = None
    scheduler_id: str | None = None
    host: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    checked: bool = False  # True when logs and expected files were checked inside the job
    log_errors: int = 0
    log_excused: int = 0
    log_lines: list[LogLine] = []
    log_patterns: list[str] = []  # parallel to log_lines: the error pattern that hit
    missing_files: list[str] = []
    terminated: int = 0  # the signal the batch script itself received (15: time limit or cancel)
    restarts: int = 0  # runs of this attempt the scheduler lost and started again (SLURM requeue)
    ok: bool = False
