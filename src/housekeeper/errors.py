"""The exceptions housekeeper raises: one root, a few meaningful children."""
from __future__ import annotations

from collections.abc import Sequence


class HousekeeperError(Exception):
    """Root of every error housekeeper raises on purpose."""


class InvalidArgumentError(HousekeeperError, ValueError):
    """A bad argument: names the parameter and the value it was given."""

    def __init__(self, parameter: str, value: object, problem: str) -> None:
        self.parameter = parameter
        self.value = value
        self.problem = problem
        super().__init__(f"{parameter}={value!r}: {problem}")


class UnknownJobError(HousekeeperError, KeyError):
    """A job id that this jobs_dir does not know."""

    def __init__(self, job_id: object, parameter: str = "job_id") -> None:
        self.job_id = job_id
        self.parameter = parameter
        super().__init__(f"{parameter}={job_id!r}: no such job in this jobs_dir")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class SchedulerError(HousekeeperError):
    """A scheduler command failed: carries the command, its exit code and its stderr."""

    def __init__(
        self,
        command: Sequence[str],
        returncode: int | None,
        stderr: str,
        stdout: str = "",
        transient: bool = False,
        message: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.command = list(command)
        self.kind = kind  # an ErrorKind value when the scheduler dialect could classify it
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        self.transient = transient
        what = message or (stderr.strip() or stdout.strip() or "no output")
        code = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(self.command[:3])}{' …' if len(self.command) > 3 else ''} ({code}): {what}")


class StateError(HousekeeperError):
    """The jobs_dir or its database cannot be used (damaged, foreign, newer schema, read-only)."""


class JobStateError(HousekeeperError):
    """The operation does not fit the job's current state (e.g. cleanup of a running job)."""
