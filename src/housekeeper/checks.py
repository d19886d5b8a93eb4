"""The checks of SPEC §4 that need no scheduler: exit code, log scan, expected files.

Shared by the finisher (inside the job) and the driver (when the job could not check itself).
Kept light: no polars, no pyarrow, so that the finisher starts fast on every job.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

import msgspec

from .jobscript import open_new
from .models import ExitRecord, LogLine

MAX_LINES = 20


class Rules(msgspec.Struct):
    """The log rules of a run, shared by its jobs through one file."""

    error_patterns: list[str]
    error_whitelist: list[str]
    whitelist_threshold: int


def load_rules(path: str) -> Rules:
    with open(path, "rb") as handle:
        return msgspec.json.decode(handle.read(), type=Rules)


def exit_and_signal(rc: int, term: int) -> tuple[int | None, int | None]:
    """bash reports a command killed by signal N as 128+N."""
    if 128 < rc < 160:
        return None, rc - 128
    if term and rc != 0:
        return None, term
    return rc, None


def check_logs(job_dir: str, rules: Rules) -> tuple[int, int, list[LogLine], list[str]]:
    """Scan stdout.log and stderr.log; returns (errors, excused, first lines, their patterns)."""
    from .scan import scan_file

    errors = excused = 0
    lines: list[LogLine] = []
    patterns: list[str] = []
    for filename in ("stdout.log", "stderr.log"):
        result = scan_file(
            os.path.join(job_dir, filename),
            error_patterns=rules.error_patterns,
            error_whitelist=rules.error_whitelist,
            whitelist_threshold=rules.whitelist_threshold,
            max_lines=MAX_LINES,
        )
        errors += result.errors
        excused += result.excused
        for (number, text), pattern in zip(result.lines, result.patterns):
            if len(lines) < MAX_LINES:
                lines.append(LogLine(filename, number, text))
                patterns.append(pattern)
    return errors, excused, lines, patterns


def missing_files(expected: list[str], workdir: str) -> list[str]:
    return [path for path in expected if not os.path.exists(os.path.join(workdir, path))]


def wait_for_files(expected: list[str], workdir: str, grace: float) -> list[str]:
    """The expected files still missing after waiting up to `grace` seconds for them: on a
    shared file system (NFS, Lustre) a file written on another node, or by a process the
    command left behind, can become visible here seconds late. Each look lists the missing
    files' folders first, which on NFS refreshes the cached attributes."""
    missing = missing_files(expected, workdir)
    deadline = time.monotonic() + grace
    delay = 0.1
    while missing and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 1.0)
        for folder in {os.path.dirname(os.path.join(workdir, path)) or "." for path in missing}:
            with contextlib.suppress(OSError):
                os.listdir(folder)
        missing = missing_files(missing, workdir)
    return missing


def write_record(job_dir: str, record: ExitRecord) -> None:
    data = msgspec.to_builtins(record)
    target = os.path.join(job_dir, "status.json")
    temporary = os.path.join(job_dir, f".status.json.{os.getpid()}.tmp")
    with open_new(temporary, text=True) as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def scheduler_id_from_env() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("PBS_JOBID") or env.get("HK_LOCAL_ID")


