"""The one place that runs scheduler commands: timeouts, retries with backoff for transient
errors, and structured SchedulerError. Tests hand housekeeper a fake or recording runner."""
from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

import msgspec

from . import faults
from .errors import SchedulerError
from .jobscript import safe_umask
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
        program = program_name(argv)
        self.calls[program] += 1
        faults.point(f"{program}.call")
        start = time.monotonic()
        try:
            # Its own process group: on a timeout the whole group goes, so a site wrapper
            # around sbatch (a shell that runs the real one) cannot keep the pipes open and
            # hold this process long past the timeout.
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, errors="replace", env=self.env, start_new_session=True, umask=safe_umask(),
            )  # fmt: skip
        except OSError as exc:
            raise SchedulerError(argv, None, str(exc), transient=False, message=f"cannot run: {exc}") from None
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = _drain(proc)
            raise SchedulerError(argv, None, stderr, stdout, transient=True,
                                 message=f"no answer within {self.timeout:.0f} s") from None
        except BaseException:  # KeyboardInterrupt: leave no scheduler command behind
            _kill_group(proc)
            raise
        faults.point(f"{program}.answered")
        return CommandResult(list(argv), proc.returncode, stdout, stderr, time.monotonic() - start)

    def run(
        self,
        argv: Sequence[str],
        *,
        classify: Classifier | None = None,
        retry_transient: bool = True,
        ok_kinds: frozenset[ErrorKind] = frozenset(),
        whole_lines: bool = False,
    ) -> CommandResult:
        """Run argv; a non-zero exit raises SchedulerError unless its kind is in ok_kinds.
        Transient failures (and timeouts) are retried with backoff when retry_transient.
        `whole_lines`: the command prints whole lines only, so a successful reply whose last
        line has no newline was cut short and counts as a transient failure."""
        attempt = 0
        while True:
            try:
                result = self._once(argv)
            except SchedulerError as exc:
                if not (exc.transient and retry_transient and attempt < self.retries):
                    raise
                log.warning("%s; retrying", exc)
            else:
                kind = ErrorKind.OTHER
                if result.returncode != 0 and classify is not None:
                    kind = classify(argv, result.returncode, result.stdout, result.stderr)
                accepted = result.returncode == 0 or kind in ok_kinds
                if accepted and not (whole_lines and not _whole_lines(result.stdout)):
                    return result
                if accepted:
                    # A reply cut short (a broken connection, a killed client) is never read
                    # as a complete answer: a cut "12345\n" would be job 12.
                    error = SchedulerError(argv, result.returncode, result.stderr, result.stdout, transient=True,
                                           message=f"output cut short: ...{result.stdout[-80:]!r}")  # fmt: skip
                else:
                    error = SchedulerError(argv, result.returncode, result.stderr, result.stdout,
                                           transient=kind is ErrorKind.TRANSIENT, kind=kind.value)  # fmt: skip
                if not (error.transient and retry_transient and attempt < self.retries):
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


def _whole_lines(text: str) -> bool:
    """Empty, or ending at the end of a line."""
    return not text or text.endswith("\n")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _drain(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """What a killed command printed; gives up on pipes that something else still holds."""
    try:
        stdout, stderr = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return "", ""
    return stdout or "", stderr or ""
