"""Backends: a scheduler dialect (pure) joined to the runner (I/O), and scheduler detection."""
from __future__ import annotations

import getpass
import logging
import shutil
import time
from collections.abc import Sequence
from typing import Any

import polars as pl

from .errors import InvalidArgumentError, SchedulerError
from .runner import Runner
from .schedulers.base import STATUS_SCHEMA, ErrorKind, SubmitRequest

log = logging.getLogger("housekeeper")

SCHEDULERS = ("slurm", "pbs", "local")
_NO_ACCOUNTING_RECHECK = 600.0  # seconds before asking a cluster without accounting again


class CommandBackend:
    """Talks to a batch scheduler through its commands: one status query per poll."""

    def __init__(self, dialect: Any, runner: Runner, default_array_size: int = 1000) -> None:
        self.dialect = dialect
        self.runner = runner
        self.name: str = dialect.name
        self.native_dependencies: bool = dialect.native_dependencies
        self._max_array_size: int | None = None
        self._default_array_size = default_array_size
        self._no_accounting_until = 0.0

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
            result = self.runner.run(config_argv(), classify=self.dialect.classify_error)
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
        # Never retried blindly: a timed-out submission may have created the job anyway.
        result = self.runner.run(
            self.dialect.submit_argv(req), classify=self.dialect.classify_error, retry_transient=False
        )
        base = self.dialect.parse_submit(result.stdout)
        if req.array_size:
            return list(self.dialect.task_ids(base, req.array_size))
        return [base]

    def _status_argv(self, ids: list[str]) -> list[str]:
        dialect = self.dialect
        if hasattr(dialect, "needs_user_query") and dialect.needs_user_query(ids):
            return list(dialect.status_argv_all(getpass.getuser()))
        return list(dialect.status_argv(ids))

    def poll(
        self, scheduler_ids: Sequence[str], since: float | None = None, folders: dict[str, str] | None = None
    ) -> pl.DataFrame:
        """One status query for all ids (plus one accounting query for those that left the
        queue). `since`: the earliest submission among them, to skip recycled ids."""
        wanted = set(scheduler_ids)
        result = self.runner.run(
            self._status_argv(sorted(wanted)),
            classify=self.dialect.classify_error,
            ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB}),
        )
        # Some schedulers (PBS) print the jobs they know even when others are unknown.
        frame = self.dialect.parse_status(result.stdout) if result.stdout.strip() else pl.DataFrame(schema=STATUS_SCHEMA)
        frame = frame.filter(pl.col("scheduler_id").is_in(list(wanted)))
        missing = wanted - set(frame.get_column("scheduler_id").to_list())
        if missing and time.time() >= self._no_accounting_until:
            argv = self._accounting_argv(sorted(missing), since)
            if argv is not None:
                result = self.runner.run(
                    argv,
                    classify=self.dialect.classify_error,
                    ok_kinds=frozenset({ErrorKind.NO_ACCOUNTING, ErrorKind.UNKNOWN_JOB}),
                )
                if result.returncode == 0:
                    accounted = self._parse_accounting(result.stdout, since)
                    accounted = accounted.filter(pl.col("scheduler_id").is_in(list(missing)))
                    frame = pl.concat([frame, accounted.unique("scheduler_id", keep="last")])
                elif self.dialect.classify_error(argv, result.returncode, result.stdout, result.stderr) is ErrorKind.NO_ACCOUNTING:
                    log.info("the cluster keeps no accounting; exit records decide")
                    self._no_accounting_until = time.time() + _NO_ACCOUNTING_RECHECK
        return frame

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
        result = self.runner.run(dialect.status_argv_all(user), classify=dialect.classify_error)
        details = dialect.parse_status_details(result.stdout)
        found = details.filter(pl.col("comment") == token)
        if found.is_empty() and hasattr(dialect, "accounting_argv_all") and time.time() >= self._no_accounting_until:
            argv = dialect.accounting_argv_all(user, since)
            result = self.runner.run(argv, classify=dialect.classify_error, ok_kinds=frozenset({ErrorKind.NO_ACCOUNTING}))
            if result.returncode == 0:
                found = dialect.parse_accounting_details(result.stdout).filter(pl.col("comment") == token)
        ids = found.get_column("scheduler_id").unique().to_list()
        return sorted(ids, key=_task_order)

    def cancel(self, scheduler_ids: Sequence[str]) -> None:
        if scheduler_ids:
            self.runner.run(
                self.dialect.cancel_argv(list(scheduler_ids)),
                classify=self.dialect.classify_error,
                ok_kinds=frozenset({ErrorKind.UNKNOWN_JOB}),
            )


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

        return CommandBackend(pbs.make_dialect(runner, dialect), runner)
    raise InvalidArgumentError("scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)} or None")
