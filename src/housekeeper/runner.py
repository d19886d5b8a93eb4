"""The one place that runs scheduler commands: timeouts, retries with backoff for transient
errors, and structured SchedulerError. Tests hand housekeeper a fake or recording runner."""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence

import msgspec

from .errors import SchedulerError
from .schedulers.base import ErrorKind

log = logging.getLogger("housekeeper")

Classifier = Callable[[Sequence[str], int, str, str], ErrorKind]


class CommandResult(msgspec.Struct):
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Runner:
    """Runs argv lists. `calls` counts commands by program name (for benchmarks and tests)."""

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: Sequence[float] = (1.0, 3.0, 10.0, 30.0),
        env: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = tuple(backoff)
        self.env = env
        self.sleep = sleep
        self.calls: collections.Counter[str] = collections.Counter()

    def _once(self, argv: Sequence[str]) -> CommandResult:
        self.calls[program_name(argv)] += 1
        start = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, errors="replace", timeout=self.timeout,
                env=self.env, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise SchedulerError(argv, None, _text(exc.stderr), _text(exc.stdout), transient=True,
                                 message=f"no answer within {self.timeout:.0f} s") from None
        except OSError as exc:
            raise SchedulerError(argv, None, str(exc), transient=False, message=f"cannot run: {exc}") from None
        return CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)

    def run(
        self,
        argv: Sequence[str],
        *,
        classify: Classifier | None = None,
        retry_transient: bool = True,
        ok_kinds: frozenset[ErrorKind] = frozenset(),
    ) -> CommandResult:
        """Run argv; a non-zero exit raises SchedulerError unless its kind is in ok_kinds.
        Transient failures (and timeouts) are retried with backoff when retry_transient."""
        attempt = 0
        while True:
            try:
                result = self._once(argv)
            except SchedulerError as exc:
                if not (exc.transient and retry_transient and attempt < self.retries):
                    raise
                log.warning("%s; retrying", exc)
            else:
                if result.returncode == 0:
                    return result
                kind = classify(argv, result.returncode, result.stdout, result.stderr) if classify else ErrorKind.OTHER
                if kind in ok_kinds:
                    return result
                transient = kind is ErrorKind.TRANSIENT
                error = SchedulerError(
                    argv, result.returncode, result.stderr, result.stdout, transient=transient, kind=kind.value
                )
                if not (transient and retry_transient and attempt < self.retries):
                    raise error
                log.warning("%s; retrying", error)
            self.sleep(self.backoff[min(attempt, len(self.backoff) - 1)])
            attempt += 1


def program_name(argv: Sequence[str]) -> str:
    """The program an argv runs, looking through an `env VAR=value ...` prefix."""
    items = list(argv)
    if items and os.path.basename(items[0]) == "env":
        items = [a for a in items[1:] if "=" not in a or a.startswith("-")]
    return os.path.basename(items[0]) if items else ""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""
