"""housekeeper: submit, track, check and retry HPC batch jobs on SLURM, PBS or this machine.

Names are loaded on first use, so that the job-side helpers (`python -m housekeeper._finish`)
start without importing polars.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Housekeeper": "api", "JobTable": "api", "housekeeper": "api",
    "HousekeeperError": "errors", "InvalidArgumentError": "errors", "JobStateError": "errors",
    "SchedulerError": "errors", "StateError": "errors", "UnknownJobError": "errors",
    "JobStatus": "models", "Reason": "models", "scan_file": "scan",
}  # fmt: skip

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .api import Housekeeper, JobTable, housekeeper
    from .errors import (
        HousekeeperError,
        InvalidArgumentError,
        JobStateError,
        SchedulerError,
        StateError,
        UnknownJobError,
    )
    from .models import JobStatus, Reason
    from .scan import scan_file


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'housekeeper' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
