"""Fault-injection points, for the tests that kill a driver on purpose (SPEC §10).

Named points sit where a crash matters: around every store commit and every scheduler
command, and between claiming jobs and recording what the scheduler answered. Each point
is counted per stage of the driver's work (`submit`, `flush`, `poll`, `retry`, ...), so a
test can name one precise moment:

    HOUSEKEEPER_CRASH_AT=poll:store.commit#3   the 3rd store commit made while polling
    HOUSEKEEPER_CRASH_AT=after_claim           the first time that point is reached

and kill the driver there with SIGKILL, exactly as `kill -9` would. With
HOUSEKEEPER_TRACE_POINTS=<file> every point reached is appended to that file
(`stage:name#n`), which is how a test lists the moments a run goes through. With neither
variable set a point costs one dictionary lookup.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

_counts: collections.Counter[str] = collections.Counter()
_stage = "open"


def point(name: str) -> None:
    """A place where a test may kill this process."""
    crash_at = os.environ.get("HOUSEKEEPER_CRASH_AT")
    trace = os.environ.get("HOUSEKEEPER_TRACE_POINTS")
    if not crash_at and not trace:
        return
    key = f"{_stage}:{name}"
    _counts[key] += 1
    moment = f"{key}#{_counts[key]}"
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(moment + "\n")
    if crash_at in (name, moment):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the points reached inside this block under `name` (the innermost stage wins)."""
    global _stage
    previous, _stage = _stage, name
    try:
        yield
    finally:
        _stage = previous


def staged(name: str) -> Callable[[_F], _F]:
    """Run the decorated function inside stage `name`."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with stage(name):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
