"""Backends: a scheduler dialect (pure) joined to the runner (I/O), and scheduler detection."""
from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from .errors import InvalidArgumentError, SchedulerError
from .jobscript import RUNNING_FILE, STATUS_FILE
from .models import JobStatus, Reason
from .runner import Runner
from .schedulers.base import STATUS_SCHEMA, ErrorKind, Limits, SubmitRequest
from .schedulers.pbs import PbsJsonError, array_task

log = logging.getLogger("housekeeper")

SCHEDULERS = ("slurm", "pbs", "local")
_NO_ACCOUNTING_RECHECK = 600.0  # seconds before asking a cluster without accounting again
_LIMITS_TTL = 600.0  # seconds a reading of the queues' limits is trusted
_TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
_USAGE = ("elapsed_s", "cpu_time_s", "max_rss_mb")


class CommandBackend:
    """Talks to a batch scheduler through its commands: one status query per poll."""

    @property
    def accounting_lags(self) -> bool:
        """Accounting (sacct) answers here, and may record a job's usage seconds after the
        queue shows the job ended: worth asking again."""
        return time.time() >= self._no_accounting_until

    def __init__(self, dialect: Any, runner: Runner, default_array_size: int = 1000) -> None:
        self.dialect = dialect
        self.runner = runner
        self.name: str = dialect.name
        self.native_dependencies: bool = dialect.native_dependencies
        self._max_array_size: int | None = None
        self._default_array_size = default_array_size
        self._no_accounting_until = 0.0
        self._limits: tuple[float, dict[str | None, Limits]] | None = None

    def limits(self, queue: str | None) -> Limits | None:
        """What `queue` (None: the default) allows, read once per _LIMITS_TTL; None when the
        scheduler cannot tell."""
        if not hasattr(self.dialect, "limits_argv"):
            return None
        if self._limits is None or time.time() - self._limits[0] > _LIMITS_TTL:
            result = self.runner.run(self.dialect.limits_argv(), classify=self.dialect.classify_error)
            self._limits = (time.time(), self.dialect.parse_limits(result.stdout))
        return self._limits[1].get(queue)

    @property
    def max_array_size(self) -> int:
        if self._max_array_size is None:
            self._max_array_size = self._read_max_array_size()
        return self._max_array_size

    def _read_max_array_size(self) -> int:
        config_argv = getattr(self.dialect, "config_argv", None)
        if config_argv is None:
            return self._default_array_size
        try:
            result = self.runner.run(config_argv(), classify=self.dialect.classify_error, whole_lines=True)
            config = self.dialect.parse_config(result.stdout)
        except (SchedulerError, ValueError) as exc:
            log.warning("could not read the cluster's array size limit (%s); using %d", exc, self._default_array_size)
            return self._default_array_size
        size = config.get("max_array_size") or self._default_array_size
        log.info("cluster allows arrays of up to %d tasks", size)
        return int(size)

    def directives(self, req: SubmitRequest) -> list[str]:
        return list(self.dialect.directives(req))

    def submit(self, req: SubmitRequest) -> list[str]:
        """Submit; returns the scheduler ids (an array's tasks in index order).

        Never retried blindly: a submission that timed out, failed in transit or whose reply
        was cut short may have created the job anyway. Its tag (``req.comment``) tells: the
        jobs found with it are the answer; when none exist the error goes up (transient: the
        caller may submit again without doubling anything)."""
        argv = self.dialect.submit_argv(req)
        since = time.time() - 60
        try:
            result = self.runner.run(argv, classify=self.dialect.classify_error, retry_transient=False,
                                     whole_lines=True)  # fmt: skip
            base = self.dialect.parse_submit(result.stdout)
        except SchedulerError as exc:
            if not exc.transient:
                raise
            found = self._submitted_anyway(req, since, exc)
            if found:
                return found
            raise
        except ValueError as exc:  # a reply that is not an id: did the job go in?
            found = self._submitted_anyway(req, since, exc)
            if found:
                return found
            raise SchedulerError(argv, result.returncode, result.stderr, result.stdout, transient=True,
                                 message=f"unreadable reply ({exc})") from None  # fmt: skip
        if req.array_size:
            return list(self.dialect.task_ids(base, req.array_size))
        return [base]

    def _submitted_anyway(self, req: SubmitRequest, since: float, error: Exception) -> list[str] | None:
        """The ids of the jobs an uncertain submission created, found by its tag; None or []
        when there are none (or the scheduler cannot tell)."""
        if not req.comment:
            return None
        try:
            found = self.lookup(req.comment, since)
        except SchedulerError as exc:
            log.warning("submission %s failed (%s) and cannot be checked now (%s)", req.comment, error, exc)
            return None
        expected = req.array_size or 1
        if found and len(found) != expected:
            log.warning("submission %s: the scheduler shows %d of its %d jobs", req.comment, len(found), expected)
            if req.array_size:
                return list(self.dialect.task_ids(found[0].split("_")[0], req.array_size))
        if found:
            log.warning("submission %s did reach the scheduler despite: %s", req.comment, error)
        return found

    def _status_argv(self, ids: list[str]) -> list[str]:
        dialect = self.dialect
        if hasattr(dialect, "needs_user_query") and dialect.needs_user_query(ids):
            return list(dialect.status_argv_all(getpass.getuser()))
        return list(dialect.status_argv(ids))

    def poll(
        self, scheduler_ids: Sequence[str], since: float | None = None, folders: dict[str, str] | None = None,
        usage_ids: Sequence[str] = (),
    ) -> pl.DataFrame:
        """One status query for all ids (plus one accounting query for those that left the
        queue). `since`: the earliest submission among them, to skip recycled ids. `usage_ids`:
        finished jobs whose usage accounting had not recorded yet, asked in the same query;
        their rows come back too."""
        if not scheduler_ids:
            accounted = self.usage(usage_ids, since)
            return accounted if accounted is not None else pl.DataFrame(schema=STATUS_SCHEMA)
        wanted = pl.DataFrame({"scheduler_id": scheduler_ids}, schema={"scheduler_id": pl.Utf8}).unique(
            maintain_order=True
        )
        ids = wanted.get_column("scheduler_id")
        result = self.runner.run(
            self._status_argv(sorted(ids) if ids.len() <= 10_000 else ids.to_list()),
            classify=self.dialect.classify_error,
            ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB}),
            whole_lines=True,
        )
        # Some schedulers (PBS) print the jobs they know even when others are unknown.
        frame = self.dialect.parse_status(result.stdout) if result.stdout.strip() else pl.DataFrame(schema=STATUS_SCHEMA)
        frame = frame.join(wanted, on="scheduler_id", how="semi", maintain_order="left")
        missing = set(wanted.join(frame, on="scheduler_id", how="anti").get_column("scheduler_id").to_list())
        # Jobs the queue shows as ended are asked of accounting too: it alone knows what they used.
        ended = set(frame.filter(pl.col("status").is_in(_TERMINAL)).get_column("scheduler_id").to_list())
        extra = set(usage_ids) - set(scheduler_ids) if usage_ids else set()
        accounted = self._accounting(missing | ended | extra, since)
        if accounted is not None and not accounted.is_empty():
            frame = _merge_accounting(frame, accounted, missing | extra)
        return frame

    def usage(self, scheduler_ids: Sequence[str], since: float | None = None) -> pl.DataFrame | None:
        """Accounting's rows (state and usage) for finished jobs: one query, no queue query;
        None when there is no accounting to ask."""
        return self._accounting(set(scheduler_ids), since)

    def _accounting(self, ids: set[str], since: float | None) -> pl.DataFrame | None:
        """One accounting query for these ids; None when there is none to ask (no ids, no
        accounting on this cluster)."""
        if not ids or time.time() < self._no_accounting_until:
            return None
        argv = self._accounting_argv(sorted(ids), since)
        if argv is None:
            return None
        result = self.runner.run(
            argv, classify=self.dialect.classify_error, ok_kinds=frozenset({ErrorKind.NO_ACCOUNTING, ErrorKind.UNKNOWN_JOB})
        )
        if result.returncode == 0:
            accounted = self._parse_accounting(result.stdout, since)
            return accounted.filter(pl.col("scheduler_id").is_in(list(ids))).unique("scheduler_id", keep="last")
        if self.dialect.classify_error(argv, result.returncode, result.stdout, result.stderr) is ErrorKind.NO_ACCOUNTING:
            log.info("the cluster keeps no accounting; exit records decide")
            self._no_accounting_until = time.time() + _NO_ACCOUNTING_RECHECK
        return None

    def _accounting_argv(self, ids: list[str], since: float | None) -> list[str] | None:
        try:
            return self.dialect.accounting_argv(ids, since=since)  # type: ignore[no-any-return]
        except TypeError:  # a dialect without the recycled-id guard
            return self.dialect.accounting_argv(ids)  # type: ignore[no-any-return]

    def _parse_accounting(self, text: str, since: float | None) -> pl.DataFrame:
        try:
            return self.dialect.parse_accounting(text, submitted_after=since)  # type: ignore[no-any-return]
        except TypeError:
            return self.dialect.parse_accounting(text)  # type: ignore[no-any-return]

    def lookup(self, token: str, since: float) -> list[str] | None:
        """Scheduler ids of the jobs submitted with this tag (array tasks in index order),
        from the queue and, for jobs that already left it, from accounting. None when the
        dialect cannot search by tag."""
        dialect = self.dialect
        if not (hasattr(dialect, "status_argv_all") and hasattr(dialect, "parse_status_details")):
            return None
        user = getpass.getuser()
        result = self.runner.run(dialect.status_argv_all(user), classify=dialect.classify_error, whole_lines=True)
        details = dialect.parse_status_details(result.stdout)
        found = details.filter(pl.col("comment") == token)
        if found.is_empty() and hasattr(dialect, "accounting_argv_all") and time.time() >= self._no_accounting_until:
            argv = dialect.accounting_argv_all(user, since)
            result = self.runner.run(argv, classify=dialect.classify_error, ok_kinds=frozenset({ErrorKind.NO_ACCOUNTING}),
                                     whole_lines=True)  # fmt: skip
            if result.returncode == 0:
                found = dialect.parse_accounting_details(result.stdout).filter(pl.col("comment") == token)
        ids = found.get_column("scheduler_id").unique().to_list()
        return sorted(ids, key=_task_order)

    def release(self, scheduler_ids: Sequence[str]) -> None:
        """Let held jobs run again (SLURM holds a job whose launch failed)."""
        release_argv = getattr(self.dialect, "release_argv", None)
        if release_argv is not None and scheduler_ids:
            self.runner.run(release_argv(list(scheduler_ids)), classify=self.dialect.classify_error)

    def cancel(self, scheduler_ids: Sequence[str]) -> None:
        if scheduler_ids:
            self.runner.run(
                self.dialect.cancel_argv(list(scheduler_ids)),
                classify=self.dialect.classify_error,
                ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB}),
            )


_PBS_MAX_IDS = 200  # more ids than this: one qstat of every job instead (the SLURM wrappers'
# qstat matches every job against every id it was given, and argv stays short)
_RECORD_GRACE = 60.0  # seconds a wrapper job shown finished may take to show its exit record


class PbsBackend(CommandBackend):
    """PBS Professional / OpenPBS, Torque and Debian's Torque wrappers over SLURM.

    Every poll costs one ``qstat`` (``-f -F json -x -t`` for PBS Pro, ``-f -1 -t`` for Torque,
    ``-f`` for the wrappers) whatever the number of jobs; PBS has no accounting query, so a job
    the server no longer shows is judged from its exit record by the engine. When PBS Pro
    prints JSON that cannot be read even after repair, the same poll asks again in text form,
    and every later poll asks for text straight away.

    The wrappers show an array's tasks under raw SLURM ids that nothing in qstat links to the
    array; each task names its raw id in its start marker (``running.json``: ``scheduler_id``
    ``<array>_<index>``, ``raw_id``). A poll reads the markers of tasks whose raw id it has not
    learned yet, asks qstat for the array ids plus the learned raw ids, and reports: a started
    task gets its raw row; a task that has not started is QUEUED while the array's own row is
    the pending remainder (``Q``), CANCELLED when that remainder was cancelled before it got a
    node, and left out otherwise (the engine then goes by the markers and exit records).
    """

    @property
    def accounting_lags(self) -> bool:
        """qstat shows a job's usage with its end; there is no other query to ask again."""
        return False

    def __init__(
        self,
        dialect: Any,
        runner: Runner,
        default_array_size: int = 1000,
        *,
        record_grace: float = _RECORD_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(dialect, runner, default_array_size)
        self.record_grace = record_grace
        self._clock = clock
        self._text_only = False  # PBS Pro printed unreadable JSON once: ask for text from now on
        self._raw_ids: dict[str, str] = {}  # wrapper array task id -> its raw SLURM job id

    @property
    def wrapper(self) -> bool:
        return bool(getattr(self.dialect, "wrapper", False))

    @property
    def wants_folders(self) -> bool:
        """poll() needs each id's job folder (its wrapper's markers name the raw ids)."""
        return self.wrapper

    def can_depend_on(self, scheduler_id: str) -> bool:
        """False where the dialect cannot express a native dependency on this id (PBS Pro: one
        subjob); the engine then holds the dependant until the parent has ended."""
        return bool(self.dialect.can_depend_on(scheduler_id))

    # ------------------------------------------------------------------------------- poll
    def poll(
        self, scheduler_ids: Sequence[str], since: float | None = None, folders: dict[str, str] | None = None,
        usage_ids: Sequence[str] = (),
    ) -> pl.DataFrame:
        """One qstat for all ids (see the class docstring); `since` is not needed here: PBS
        ids are not recycled within the history the server keeps, and qstat reports a job's
        usage with its end (`usage_ids` is never needed)."""
        wanted = list(dict.fromkeys(scheduler_ids))
        if not wanted:
            return pl.DataFrame(schema=STATUS_SCHEMA)
        if self.wrapper:
            return self._poll_wrapper(wanted, folders or {})
        frame = self._qstat(wanted)
        return frame.filter(pl.col("scheduler_id").is_in(wanted)).unique(
            "scheduler_id", keep="last", maintain_order=True
        )

    def _qstat_argv(self, ids: list[str], text: bool) -> list[str]:
        """qstat for these ids (arrays asked for through their array id), or for every job when
        they are too many; `text`: the text form (PBS Pro, after unreadable JSON)."""
        dialect = self.dialect
        if text and hasattr(dialect, "status_argv_text"):
            argv, every_job = dialect.status_argv_text(ids), dialect.status_argv_text([])
        else:
            argv, every_job = dialect.status_argv(ids), dialect.status_argv_all()
        return list(every_job if len(argv) - len(every_job) > _PBS_MAX_IDS else argv)

    def _qstat(self, ids: list[str]) -> pl.DataFrame:
        dialect = self.dialect
        ok = frozenset({ErrorKind.UNKNOWN_JOB})
        # PBS prints the jobs it knows even when it exits 153 for others it does not.
        result = self.runner.run(self._qstat_argv(ids, self._text_only), classify=dialect.classify_error, ok_kinds=ok)
        if not result.stdout.strip():
            return pl.DataFrame(schema=STATUS_SCHEMA)
        try:
            return dialect.parse_status(result.stdout)  # type: ignore[no-any-return]
        except PbsJsonError as exc:
            log.warning("PBS: %s; asking for the text form from now on", exc)
            self._text_only = True
            result = self.runner.run(self._qstat_argv(ids, True), classify=dialect.classify_error, ok_kinds=ok)
            if not result.stdout.strip():
                return pl.DataFrame(schema=STATUS_SCHEMA)
            return dialect.parse_status(result.stdout)  # type: ignore[no-any-return]

    def _poll_wrapper(self, wanted: list[str], folders: dict[str, str]) -> pl.DataFrame:
        tasks = {sid: task for sid in wanted if (task := array_task(sid)) is not None}
        raw_of: dict[str, str] = {}
        for sid in tasks:
            raw = self._raw_ids.get(sid) or _raw_id_from_marker(folders.get(sid), _slurm_id(sid))
            if raw:
                raw_of[sid] = raw
        self._raw_ids = raw_of  # forget the tasks nobody asks about any more
        query = [sid for sid in wanted if sid not in tasks]
        query += [base for base, _ in tasks.values()] + list(raw_of.values())
        frame = self._qstat(list(dict.fromkeys(query)))
        rows = {row["scheduler_id"]: row for row in frame.iter_rows(named=True)}
        started = set(raw_of.values())
        out: list[dict[str, Any]] = []
        for sid in wanted:
            task = tasks.get(sid)
            if task is None:
                row = rows.get(sid)
            elif sid in raw_of:
                row = rows.get(raw_of[sid])
            else:
                base = task[0]
                row = _unstarted_task(rows.get(base), base in started)
            if row is None:
                continue
            out.append(self._confirm_finished(dict(row, scheduler_id=sid), folders.get(sid)))
        if not out:
            return pl.DataFrame(schema=STATUS_SCHEMA)
        return pl.DataFrame({col: [r[col] for r in out] for col in STATUS_SCHEMA}, schema=STATUS_SCHEMA)

    def _confirm_finished(self, row: dict[str, Any], folder: str | None) -> dict[str, Any]:
        """The wrappers show every finished SLURM state as ``C`` without an exit status; a run
        that got a node is "COMPLETED, exit unknown" and only the job's exit record can confirm
        it. Until that record shows up (or ``record_grace`` has passed) the row says nothing
        (status null: the engine waits); after that, the job is FAILED/lost: it was killed
        without a chance to write its record (qdel sends SIGKILL) or never reached its script."""
        if row["status"] != JobStatus.COMPLETED.value or row["exit_code"] is not None:
            return row
        if folder is not None and _has_exit_record(folder, _slurm_id(row["scheduler_id"])):
            return row
        ended = row.get("ended_at") or self._clock()
        if self._clock() - ended < self.record_grace:
            return dict(row, status=None)
        return dict(row, status=JobStatus.FAILED.value, reason=Reason.LOST.value)

    # ----------------------------------------------------------------------------- cancel
    def cancel(self, scheduler_ids: Sequence[str]) -> None:
        """``qdel`` for jobs; for the wrappers' array tasks SLURM's ``scancel <array>_<index>``:
        the wrappers' qdel cannot stop one task (``qdel <raw id>`` of a task fails silently with
        exit 1, and ``qdel <array id>`` stops every task of the array)."""
        if not self.wrapper:
            super().cancel(scheduler_ids)
            return
        ids = list(dict.fromkeys(scheduler_ids))
        tasks = [sid for sid in ids if array_task(sid) is not None]
        jobs = [sid for sid in ids if array_task(sid) is None]
        ok = frozenset({ErrorKind.UNKNOWN_JOB})
        if jobs:
            self.runner.run(self.dialect.cancel_argv(jobs), classify=self.dialect.classify_error, ok_kinds=ok)
        if tasks:
            self.runner.run(self.dialect.task_cancel_argv(tasks), classify=self.dialect.classify_error, ok_kinds=ok)

    # ----------------------------------------------------------------------------- lookup
    def lookup(self, token: str, since: float) -> list[str] | None:
        """Ids of the jobs submitted with this tag (``-v HK_COMMENT=<tag>``), from one qstat
        of every job; None for the wrappers, which carry no tag (a claim left by a driver that
        died stays for a human rather than risk submitting twice)."""
        dialect = self.dialect
        if self.wrapper or not hasattr(dialect, "parse_tagged"):
            return None
        argv = dialect.status_argv_text([]) if self._text_only and hasattr(dialect, "status_argv_text") else (
            dialect.status_argv_all()
        )
        result = self.runner.run(argv, classify=dialect.classify_error, ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB}))
        try:
            return list(dialect.parse_tagged(result.stdout, token))
        except PbsJsonError:
            self._text_only = True
            result = self.runner.run(
                dialect.status_argv_text([]), classify=dialect.classify_error, ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB})
            )
            return list(dialect.parse_tagged(result.stdout, token))


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _raw_id_from_marker(folder: str | None, slurm_task_id: str) -> str | None:
    """The raw SLURM id a wrapper array task recorded in its start marker, if the marker is
    this task's (its scheduler_id is ``<array>_<index>``)."""
    if folder is None:
        return None
    marker = _read_json(os.path.join(folder, RUNNING_FILE))
    if marker is None or str(marker.get("scheduler_id")) != slurm_task_id:
        return None
    raw = str(marker.get("raw_id") or "")
    return raw if raw.isdigit() else None


def _has_exit_record(folder: str, slurm_id: str) -> bool:
    """The job's folder holds the exit record of the run the scheduler calls `slurm_id`: the
    start marker names that id and the record has the marker's attempt (a folder can still hold
    an older attempt's files while the new attempt has not started)."""
    marker = _read_json(os.path.join(folder, RUNNING_FILE))
    if marker is None or str(marker.get("scheduler_id")) != slurm_id:
        return False
    record = _read_json(os.path.join(folder, STATUS_FILE))
    return record is not None and record.get("attempt") == marker.get("attempt")


def _slurm_id(scheduler_id: str) -> str:
    """How a job names itself in its start marker under the wrappers: ``1673_2`` for the task
    ``1673[2]`` (SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID), the id itself for a single job."""
    task = array_task(scheduler_id)
    return f"{task[0]}_{task[1]}" if task else scheduler_id


def _unstarted_task(base_row: dict[str, Any] | None, base_is_a_task: bool) -> dict[str, Any] | None:
    """What a wrapper array task with no start marker is, from the row of the array's own id:
    while that row is the pending remainder (``Q``) the task waits in it; once the remainder
    was cancelled before getting a node (``C`` without a node) the task was cancelled with it.
    Otherwise the row is the last task to start (all have started): nothing to say here."""
    if base_row is None or base_is_a_task:
        return None
    if base_row["native_state"] == "Q":
        return dict(base_row, started_at=None, ended_at=None, node=None)
    if base_row["status"] == JobStatus.CANCELLED.value and base_row["node"] is None:
        return dict(base_row, started_at=None)
    return None


def _task_order(scheduler_id: str) -> tuple[int, int]:
    base, _, index = scheduler_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(index) if index.isdigit() else -1)


def _answers(argv: list[str], runner: Runner) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        runner.run(argv, retry_transient=False)
    except SchedulerError:
        return False
    return True


def _merge_accounting(frame: pl.DataFrame, accounted: pl.DataFrame, missing: set[str]) -> pl.DataFrame:
    """The queue's rows, with accounting's row in place of a job the queue shows as ended
    (when accounting agrees it ended; it may lag behind), plus accounting's rows for the jobs
    that left the queue."""
    if accounted.is_empty():
        return frame
    settled = accounted.filter(pl.col("scheduler_id").is_in(list(missing)) | pl.col("status").is_in(_TERMINAL))
    # SLURM's queue alone says why it cancelled a job whose dependency can never be met
    # (DependencyNeverSatisfied); accounting shows a plain cancel that "started" at its end.
    never = frame.filter(pl.col("reason") == Reason.DEPENDENCY_NEVER_SATISFIED.value).select(
        "scheduler_id", pl.col("status").alias("_queue_status"), pl.col("reason").alias("_queue_reason")
    )
    if not never.is_empty():
        settled = (
            settled.join(never, on="scheduler_id", how="left")
            .with_columns(
                pl.coalesce("_queue_status", "status").alias("status"),
                pl.coalesce("_queue_reason", "reason").alias("reason"),
                pl.when(pl.col("_queue_reason").is_null()).then(pl.col("started_at")).alias("started_at"),
            )
            .select(list(STATUS_SCHEMA))
        )
    kept = frame.filter(~pl.col("scheduler_id").is_in(settled.get_column("scheduler_id").to_list()))
    return pl.concat([kept, settled])


def detect_scheduler(runner: Runner) -> str:
    """SLURM if sbatch and squeue answer, else PBS if qsub and qstat answer, else local."""
    if _answers(["sbatch", "--version"], runner) and _answers(["squeue", "--version"], runner):
        return "slurm"
    if shutil.which("qsub") and shutil.which("qstat"):
        return "pbs"
    return "local"


def make_command_backend(scheduler: str, runner: Runner, dialect: str | None = None) -> CommandBackend:
    if scheduler == "slurm":
        from .schedulers.slurm import SlurmDialect

        return CommandBackend(SlurmDialect(), runner)
    if scheduler == "pbs":
        from .schedulers import pbs

        return PbsBackend(pbs.make_dialect(runner, dialect), runner)
    raise InvalidArgumentError("scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)} or None")
