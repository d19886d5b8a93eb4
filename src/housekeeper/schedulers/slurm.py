"""The SLURM dialect: builds sbatch/squeue/sacct/scancel/scontrol argv and parses their text.

Pure code (no subprocess, no files, no sleeping): the core runs the argv through its runner
and hands the output back here. Facts behind every choice are in
``/work/shared/reference/schedulers.md``; recorded outputs are in ``tests/fixtures/slurm``.

Query commands (squeue, sacct) are prefixed with ``env`` to pin three variables, so that a
user's shell settings cannot change what we parse:

* ``SLURM_TIME_FORMAT=standard``: times as ``2024-01-02T03:04:05`` (a site or a user may set
  ``relative`` or a strftime format, which we could not parse);
* ``TZ=UTC0``: those times in UTC, so parsing them needs neither the local zone nor guesses
  around daylight-saving changes (``SlurmDialect(pin_env=False)`` parses local time instead);
* ``SLURM_BITSTR_LEN=0``: array index expressions in full. Without it sacct cuts a pending
  array record at 64 bytes (``123_[0,2,4,...,42...]``, seen on 22.05.8) and squeue without
  ``-r`` cuts ``%i`` as well, so tasks would silently go missing.
"""
from __future__ import annotations

import calendar
import logging
import operator
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import polars as pl

from ..models import JobStatus, Reason
from .base import STATUS_SCHEMA, ErrorKind, Limits, SubmitRequest

__all__ = [
    "DETAILS_SCHEMA",
    "DIALECT",
    "MAX_ID_ARG_CHARS",
    "MAX_STATUS_BASE_IDS",
    "PartitionInfo",
    "SlurmDialect",
    "base_id",
    "compress_task_ids",
    "expand_array_indices",
    "format_time",
    "never_runs",
    "parse_exit_pair",
    "parse_size_mb",
    "parse_slurm_duration",
    "parse_slurm_time",
    "state_mapping",
]

log = logging.getLogger("housekeeper")

# --------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------

# Above this many distinct base ids the core should query the user's whole queue instead
# (status_argv_all / accounting_argv_all): one short command beats one huge id list.
MAX_STATUS_BASE_IDS = 2000
# Linux refuses any single argv string longer than 128 KiB (MAX_ARG_STRLEN): stay well below.
MAX_ID_ARG_CHARS = 100_000
# sacct: an array with more wanted tasks than this is asked for by its base id (all tasks).
_TASKS_PER_BASE_FOR_ACCOUNTING = 64

_PINNED_ENV = ("env", "SLURM_BITSTR_LEN=0", "SLURM_TIME_FORMAT=standard", "TZ=UTC0")
# -j with an explicit early start: without -S sacct's window can start at midnight today.
_EPOCH_START = "2000-01-01T00:00:00"

# --------------------------------------------------------------------------------------
# The state table: every SLURM job state -> (JobStatus, Reason | None)
# --------------------------------------------------------------------------------------

# ONE literal table. FAILED's reason is refined from the exit code / signal, CANCELLED's
# from SLURM's reason (see _refine); everything else is taken as it stands.
_STATE_TABLE: dict[str, tuple[JobStatus, Reason | None]] = {
    # waiting for resources, priority, a dependency, a hold ...
    "PENDING": (JobStatus.QUEUED, None),
    # nodes allocated but still booting / being configured: the command has not started
    "CONFIGURING": (JobStatus.QUEUED, None),
    # requeued (node failure, preemption, scontrol requeue): will run again by itself
    "REQUEUED": (JobStatus.QUEUED, None),
    # requeued and held: pends until someone runs `scontrol release` (never_runs)
    "REQUEUE_HOLD": (JobStatus.QUEUED, None),
    # federation: requeued to be sent to a sibling cluster
    "REQUEUE_FED": (JobStatus.QUEUED, None),
    # its reservation was deleted, held until released (never_runs)
    "RESV_DEL_HOLD": (JobStatus.QUEUED, None),
    # requeued in a held "special exit" state (RequeueExitHold / epilog decision): SLURM keeps
    # the job and will run it again once released, so it is not terminal for us; resubmitting
    # it as well could run the work twice (never_runs, the core releases or cancels it)
    "SPECIAL_EXIT": (JobStatus.QUEUED, None),
    # the command is running
    "RUNNING": (JobStatus.RUNNING, None),
    # the command ended, SLURM is still cleaning up (epilog, processes being killed)
    "COMPLETING": (JobStatus.RUNNING, None),
    # suspended by an admin or gang scheduling: resumes later, still allocated
    "SUSPENDED": (JobStatus.RUNNING, None),
    # stopped (SIGSTOP) with its CPUs kept
    "STOPPED": (JobStatus.RUNNING, None),
    # its allocation is changing size
    "RESIZING": (JobStatus.RUNNING, None),
    # being signalled (e.g. before a time limit)
    "SIGNALING": (JobStatus.RUNNING, None),
    # burst buffer stage-out after the command ended
    "STAGE_OUT": (JobStatus.RUNNING, None),
    # the batch script exited 0
    "COMPLETED": (JobStatus.COMPLETED, None),
    # non-zero exit or killed by a signal: reason exit_code or signal (refined)
    "FAILED": (JobStatus.FAILED, Reason.EXIT_CODE),
    # hit its time limit (ExitCode 0:15, reason TimeLimit)
    "TIMEOUT": (JobStatus.FAILED, Reason.TIMEOUT),
    # killed by the cgroup OOM handling (ExitCode 0:125)
    "OUT_OF_MEMORY": (JobStatus.FAILED, Reason.OOM),
    # one of its nodes failed (when SLURM did not requeue it)
    "NODE_FAIL": (JobStatus.FAILED, Reason.NODE_FAIL),
    # a node failed to boot for it: an infrastructure failure like NODE_FAIL, worth a retry
    "BOOT_FAIL": (JobStatus.FAILED, Reason.NODE_FAIL),
    # preempted and not requeued
    "PREEMPTED": (JobStatus.FAILED, Reason.PREEMPTED),
    # could not finish before its --deadline: the scheduler's decision, not the job's own
    # walltime, and a retry does not help once the deadline has passed
    "DEADLINE": (JobStatus.FAILED, Reason.SCHEDULER_ERROR),
    # scancel (user or admin; sacct says "CANCELLED by <uid>"); refined for never-satisfied deps
    "CANCELLED": (JobStatus.CANCELLED, Reason.CANCELLED_BY_USER),
    # federation: this sibling's copy was revoked because another cluster runs the job; the
    # row for the running copy wins when both appear (see _merge_rows and _parse_squeue_frame)
    "REVOKED": (JobStatus.CANCELLED, Reason.SCHEDULER_ERROR),
}

# States in which the job waits for someone to act whatever its reason says.
_HELD_STATES = frozenset({"REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"})

# Compact codes (squeue %t / StateCompact) to long names.
_COMPACT_STATES: dict[str, str] = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "RQ": "REQUEUED",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "RD": "RESV_DEL_HOLD",
    "SE": "SPECIAL_EXIT",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "S": "SUSPENDED",
    "ST": "STOPPED",
    "RS": "RESIZING",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "CD": "COMPLETED",
    "F": "FAILED",
    "TO": "TIMEOUT",
    "OOM": "OUT_OF_MEMORY",
    "NF": "NODE_FAIL",
    "BF": "BOOT_FAIL",
    "PR": "PREEMPTED",
    "DL": "DEADLINE",
    "CA": "CANCELLED",
    "RV": "REVOKED",
}

# --------------------------------------------------------------------------------------
# Pending reasons that need a human: the job will not start by itself
# --------------------------------------------------------------------------------------

_NEVER_RUNS_REASONS = frozenset(
    {
        "DependencyNeverSatisfied",  # an afterok parent failed (and no kill_invalid_depend)
        "PartitionNodeLimit",  # more nodes than the partition allows (-N 5 on 1 node)
        "PartitionTimeLimit",  # --time above the partition's MaxTime
        "PartitionConfig",  # requested resources fit no partition configuration
        "BadConstraints",  # constraints no node satisfies (also refused --mem)
        "InvalidAccount",
        "InvalidQOS",
        "QOSNotAllowed",  # QOS not allowed on the partition
        "AccountNotAllowed",  # account not allowed on the partition
        "MaxMemPerLimit",  # asks more memory per node/CPU than MaxMemPer* allows
        "JobHeldAdmin",  # scontrol hold by an admin
        # held by the user (scontrol hold / sbatch --hold): housekeeper never holds, so
        # someone did it on purpose; flagged so the core can report it, never cancel it blindly
        "JobHeldUser",
        "JobHoldMaxRequeue",  # requeued too often (MaxBatchRequeue), now held
        "ReservationDeleted",  # its reservation is gone
    }
)
# Per-job / per-node maxima and QOS minima: one job's own size breaks the rule, so waiting
# does not help (per-user or group limits, by contrast, clear when other jobs end).
_NEVER_RUNS_PATTERN = re.compile(r"^(?:(?:QOS|Assoc)Max\w*Per(?:Job|Node)\w*|QOSMin\w+)$")


def never_runs(reason: str | None, state: str | None = None) -> bool:
    """True when a pending job with this SLURM reason (and state) will not start unaided.

    Free-text reasons seen live: ``launch failed requeued held`` (slurmd could not launch the
    batch script under load: the job was requeued and held, ``scontrol release`` revives it)
    and ``job requeued in held state``; any reason mentioning "held" counts.
    ``ReqNodeNotAvail, UnavailableNodes:node[1-2]`` counts when nodes are named.
    """
    if state in _HELD_STATES:
        return True
    if not reason:
        return False
    if reason in _NEVER_RUNS_REASONS or _NEVER_RUNS_PATTERN.match(reason):
        return True
    if reason.startswith("ReqNodeNotAvail"):
        _, _, nodes = reason.partition("UnavailableNodes:")
        return bool(nodes.strip())
    lowered = reason.lower()
    return "held" in lowered or "hold" in lowered


def state_mapping(native_state: str) -> tuple[JobStatus, Reason | None] | None:
    """The table entry for a long or compact SLURM state, or None when the state is unknown.

    Accepts sacct's decorations: ``CANCELLED by 1000`` and the fixed-width ``CANCELLED+``.
    """
    name = _normalise_state(native_state)
    return _STATE_TABLE.get(name) if name else None


def _normalise_state(native_state: str) -> str:
    token = native_state.strip().split(" ", 1)[0].rstrip("+").upper()
    return _COMPACT_STATES.get(token, token)


# --------------------------------------------------------------------------------------
# Small parsers and formatters
# --------------------------------------------------------------------------------------

_NULLS = frozenset({"", "N/A", "n/a", "NONE", "None", "none", "(null)", "Unknown", "UNKNOWN",
                    "None assigned", "INVALID"})

_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$")


def parse_slurm_time(text: str, *, utc: bool = True) -> float | None:
    """``2024-01-02T03:04:05`` -> epoch seconds; N/A, Unknown, None, (null) -> None.

    ``utc`` says how the text was printed: True when the command ran with ``TZ=UTC0`` (our
    pinned argv), False for the local zone of this process.
    """
    match = _TIME_RE.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if utc:
        return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def format_time(seconds: float) -> str:
    """Walltime for ``--time``: ``D-HH:MM:SS`` (whole seconds, rounded up)."""
    if seconds <= 0:
        raise ValueError(f"walltime must be positive, got {seconds!r} seconds")
    total = int(-(-seconds // 1))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


_DURATION_RE = re.compile(r"^(?:(\d+)-)?(\d+(?:\.\d+)?)(?::(\d+(?:\.\d+)?))?(?::(\d+(?:\.\d+)?))?$")


def parse_slurm_duration(text: str) -> float | None:
    """A SLURM duration in seconds; None for UNLIMITED, INFINITE, INVALID, NONE, N/A, ''.

    Output forms: ``MM:SS``, ``MM:SS.mmm`` (TotalCPU), ``HH:MM:SS``, ``D-HH:MM:SS``.
    Input forms as sbatch reads them: ``M`` (minutes), ``D-HH``, ``D-HH:MM``.
    """
    text = text.strip()
    if not text or text.upper() in {"UNLIMITED", "INFINITE", "INVALID", "NONE", "N/A",
                                     "PARTITION_LIMIT", "NOT_SET"}:
        return None
    match = _DURATION_RE.match(text)
    if match is None:
        return None
    days_s, first, second, third = match.groups()
    parts = [float(p) for p in (first, second, third) if p is not None]
    days = int(days_s) if days_s is not None else 0
    if days_s is not None:
        # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, secs = (parts + [0.0, 0.0])[:3]
    elif len(parts) == 1:
        hours, minutes, secs = 0.0, parts[0], 0.0  # bare number: minutes (sbatch --time)
    elif len(parts) == 2:
        hours, minutes, secs = 0.0, parts[0], parts[1]
    else:
        hours, minutes, secs = parts
    return days * 86400 + hours * 3600 + minutes * 60 + secs


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPkmgtp]?)([nc]?)$")
_SIZE_FACTORS_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_size_mb(text: str, *, bare_unit: str = "M") -> float | None:
    """``1234K``, ``2.5M``, ``3G``, ``1T`` -> megabytes; ReqMem's trailing n/c is ignored.

    A number without a unit is taken in ``bare_unit`` (sacct prints MaxRSS 0 as ``0``).
    """
    match = _SIZE_RE.match(text.strip())
    if match is None:
        return None
    number, unit, _per = match.groups()
    return float(number) * _SIZE_FACTORS_MB[(unit or bare_unit).upper()]


def parse_exit_pair(text: str) -> tuple[int | None, int | None]:
    """sacct's ``exit:signal`` -> (exit_code, signal); signal 0 -> None; junk -> (None, None)."""
    code, sep, sig = text.strip().partition(":")
    if not sep or not code.isdigit() or not sig.isdigit():
        return None, None
    return int(code), (int(sig) or None)


def _decode_wait_status(text: str) -> tuple[int | None, int | None]:
    """squeue's exit_code is the raw wait status (768 = exit 3, 9 = SIGKILL)."""
    text = text.strip()
    if not text.lstrip("-").isdigit():
        return None, None
    raw = int(text)
    if raw < 0 or raw > 0xFFFF:  # NO_VAL and friends printed as signed ints
        return None, None
    signal = raw & 0x7F
    return (raw >> 8) & 0xFF, (signal or None)


def _base_ids(ids: list[str]) -> list[str]:
    """Distinct base ids, in order (``123_4`` -> ``123``)."""
    if len(ids) > 10_000:
        return pl.Series(ids, dtype=pl.Utf8).str.split("_").list.first().unique(maintain_order=True).to_list()
    return list(dict.fromkeys(base_id(i) for i in ids))


_ID_RE = re.compile(r"^\d+(?:_\d+)?$")


def base_id(scheduler_id: str) -> str:
    """``123_4`` -> ``123``; ``123`` -> ``123``."""
    return scheduler_id.split("_", 1)[0]


def _check_ids(scheduler_ids: Iterable[str], parameter: str = "scheduler_ids") -> list[str]:
    if isinstance(scheduler_ids, list) and len(scheduler_ids) > 10_000:
        return _check_ids_columnar(scheduler_ids, parameter)
    seen: dict[str, None] = {}
    for scheduler_id in scheduler_ids:
        if not isinstance(scheduler_id, str) or not _ID_RE.match(scheduler_id):
            raise ValueError(
                f"{parameter}: {scheduler_id!r} is not a SLURM job id (123) or array task id (123_4)"
            )
        seen[scheduler_id] = None
    if not seen:
        raise ValueError(f"{parameter}: at least one scheduler id is needed")
    return list(seen)


def _check_ids_columnar(scheduler_ids: list[str], parameter: str) -> list[str]:
    """_check_ids for a long list, in polars (a million ids in a fraction of a second)."""
    try:
        ids = pl.Series(scheduler_ids, dtype=pl.Utf8, strict=True)
    except (TypeError, pl.exceptions.PolarsError):  # something that is not a string
        return _check_ids(iter(scheduler_ids), parameter)
    bad = ids.is_null() | ~ids.str.contains(r"^\d+(?:_\d+)?$")
    if bad.any():
        raise ValueError(f"{parameter}: {ids.filter(bad)[0]!r} is not a SLURM job id (123) or array task id (123_4)")
    return ids.unique(maintain_order=True).to_list()


def _id_list_arg(ids: Sequence[str], option: str) -> str:
    joined = ",".join(ids)
    if len(joined) > MAX_ID_ARG_CHARS:
        raise ValueError(
            f"{len(ids)} ids make a {len(joined)}-character {option} argument (limit "
            f"{MAX_ID_ARG_CHARS}); query the user's jobs with status_argv_all/accounting_argv_all"
        )
    return f"{option}={joined}"


def expand_array_indices(expression: str) -> tuple[list[int], bool]:
    """``1,3,5-7``, ``0-15:4``, ``4-9%2`` -> (indices, complete).

    ``complete`` is False when the expression was cut (``...`` or a missing ``]``): the
    indices read before the cut are returned, the rest are unknown.
    """
    text = expression.strip().removeprefix("[")
    complete = True
    if text.endswith("]"):
        text = text[:-1]
    elif expression.strip().startswith("["):
        complete = False
    text = text.split("%", 1)[0]  # throttle, not an index
    if "..." in text:
        complete = False
        text = text.split("...", 1)[0]
    indices: list[int] = []
    items = text.split(",")
    for position, item in enumerate(items):
        item = item.strip()
        if not item:
            continue
        match = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", item)
        if match is None:
            complete = False
            break
        if not complete and position == len(items) - 1:
            break  # the last item before a cut may itself be cut (``4`` of ``42``)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        step = int(match.group(3)) if match.group(3) else 1
        if step <= 0 or last < first:
            complete = False
            break
        indices.extend(range(first, last + 1, step))
    return indices, complete


def compress_task_ids(scheduler_ids: Sequence[str]) -> list[str]:
    """Plain ids as they are; each array's tasks as one ``123_[0-9,12]`` expression."""
    ids = _check_ids(scheduler_ids)
    plain = [i for i in ids if "_" not in i]
    plain_set = set(plain)
    tasks: dict[str, list[int]] = {}
    for scheduler_id in ids:
        if "_" in scheduler_id:
            base, _, index = scheduler_id.partition("_")
            if base not in plain_set:  # the whole array is already named
                tasks.setdefault(base, []).append(int(index))
    out = list(plain)
    for base, indices in tasks.items():
        if len(indices) == 1:
            out.append(f"{base}_{indices[0]}")
        else:
            out.append(f"{base}_[{_ranges(sorted(set(indices)))}]")
    return out


def _ranges(indices: list[int]) -> str:
    parts: list[str] = []
    start = prev = indices[0]
    for index in indices[1:]:
        if index == prev + 1:
            prev = index
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = index
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)


def _null(text: str) -> str | None:
    text = text.strip()
    return None if text in _NULLS else text


# --------------------------------------------------------------------------------------
# Config and partitions
# --------------------------------------------------------------------------------------


class PartitionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One partition from ``scontrol --oneliner show partition``."""

    name: str
    max_time_s: float | None  # None: UNLIMITED
    default_time_s: float | None
    max_nodes: int | None  # None: UNLIMITED
    max_cpus_per_node: int | None
    max_mem_per_node_mb: float | None
    total_cpus: int | None
    total_nodes: int | None
    is_default: bool
    state: str | None


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip().split(" ", 1)[0]
    return int(text) if text.isdigit() else None


def parse_config(text: str) -> dict[str, Any]:
    """``scontrol show config`` -> the settings housekeeper needs, plus ``raw`` (every key).

    Keys: max_array_size (int), max_array_tasks (int | None, SchedulerParameters),
    max_job_count, max_job_id, min_job_age (seconds), message_timeout (seconds),
    accounting_enabled (AccountingStorageType is not none), kill_invalid_depend (bool),
    version (e.g. "22.05.8"), cluster_name.
    """
    raw: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            continue
        raw.setdefault(key, value.strip())
    storage = raw.get("AccountingStorageType", "").strip()
    scheduler_parameters = _comma_options(raw.get("SchedulerParameters", ""))
    dependency_parameters = _comma_options(raw.get("DependencyParameters", ""))
    max_array_tasks = scheduler_parameters.get("max_array_tasks")
    return {
        # SLURM's own default when the line is missing
        "max_array_size": _int_or_none(raw.get("MaxArraySize")) or 1001,
        "max_array_tasks": _int_or_none(max_array_tasks) if max_array_tasks else None,
        "max_job_count": _int_or_none(raw.get("MaxJobCount")),
        "max_job_id": _int_or_none(raw.get("MaxJobId")),
        "min_job_age": _int_or_none(raw.get("MinJobAge")),
        "message_timeout": _int_or_none(raw.get("MessageTimeout")),
        "accounting_enabled": bool(storage)
        and storage not in {"(null)", "none"}
        and not storage.endswith("/none"),
        "kill_invalid_depend": "kill_invalid_depend" in dependency_parameters
        or "kill_invalid_depend" in scheduler_parameters,
        "version": raw.get("SLURM_VERSION"),
        "cluster_name": _null(raw.get("ClusterName", "")),
        "raw": raw,
    }


def _comma_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key and key != "(null)":
            options[key] = value
    return options


_KV_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.\-]*)=")


def _key_values(line: str) -> dict[str, str]:
    """``A=1 B=x y C=2`` -> {A: 1, B: "x y", C: 2} (a value runs to the next ``Key=``)."""
    matches = list(_KV_RE.finditer(line))
    values: dict[str, str] = {}
    for position, match in enumerate(matches):
        end = matches[position + 1].start() if position + 1 < len(matches) else len(line)
        values.setdefault(match.group(1), line[match.end() : end].strip())
    return values


def parse_partitions(text: str) -> dict[str, PartitionInfo]:
    """``scontrol --oneliner show partition`` -> {name: PartitionInfo}; odd lines are skipped."""
    partitions: dict[str, PartitionInfo] = {}
    for line in text.splitlines():
        if not line.strip().startswith("PartitionName="):
            if line.strip():
                log.warning("slurm: skipping a partition line without PartitionName: %r", line)
            continue
        values = _key_values(line.strip())
        name = values["PartitionName"]
        mem = values.get("MaxMemPerNode", "")
        partitions[name] = PartitionInfo(
            name=name,
            max_time_s=parse_slurm_duration(values.get("MaxTime", "")),
            default_time_s=parse_slurm_duration(values.get("DefaultTime", "")),
            max_nodes=_int_or_none(values.get("MaxNodes")),
            max_cpus_per_node=_int_or_none(values.get("MaxCPUsPerNode")),
            max_mem_per_node_mb=parse_size_mb(mem) if mem.upper() != "UNLIMITED" else None,
            total_cpus=_int_or_none(values.get("TotalCPUs")),
            total_nodes=_int_or_none(values.get("TotalNodes")),
            is_default=values.get("Default", "NO").upper() == "YES",
            state=values.get("State"),
        )
    return partitions


def parse_limits(text: str) -> dict[str | None, Limits]:
    """``sinfo --Node --format=%P|%N|%m|%l`` -> {partition: Limits(max_walltime_s, the largest
    node's memory, node names)}; the default partition (``debug*``) is also under None."""
    found: dict[str, dict[str, Any]] = {}
    default: str | None = None
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[0]:
            if line.strip():
                log.warning("slurm: skipping an sinfo line: %r", line)
            continue
        partition, node, memory, limit = (f.strip() for f in fields)
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        entry = found.setdefault(partition, {"nodes": [], "memory": None, "time": parse_slurm_duration(limit)})
        if node and node not in entry["nodes"]:
            entry["nodes"].append(node)
        mb = parse_size_mb(memory.rstrip("+"))
        if mb is not None and (entry["memory"] is None or mb > entry["memory"]):
            entry["memory"] = mb
    limits: dict[str | None, Limits] = {
        name: Limits(
            max_walltime_s=int(e["time"]) if e["time"] is not None else None,
            max_memory_mb=int(e["memory"]) if e["memory"] else None,
            nodes=tuple(e["nodes"]) or None,
        )
        for name, e in found.items()
    }
    if default is not None:
        limits[None] = limits[default]
    return limits


# --------------------------------------------------------------------------------------
# Error classification
# --------------------------------------------------------------------------------------

# ONE literal table, checked in order, case-insensitively, against stderr then stdout.
_ERROR_TABLE: tuple[tuple[str, ErrorKind], ...] = (
    # sacct on a cluster without slurmdbd: every call, exit 1, empty stdout
    ("accounting storage is disabled", ErrorKind.NO_ACCOUNTING),
    # squeue/scontrol/scancel on an id the controller does not know (any more)
    ("invalid job id specified", ErrorKind.UNKNOWN_JOB),
    # scontrol release on a job that already ended (seen live): nothing left to release
    ("job has already finished", ErrorKind.UNKNOWN_JOB),
    # the same for a job that is ending (ESLURM_ALREADY_DONE)
    ("already completing or completed", ErrorKind.UNKNOWN_JOB),
    # controller busy or unreachable: the job MAY have been created (ids seen skipped)
    ("socket timed out on send/recv operation", ErrorKind.TRANSIENT),
    ("unable to contact slurm controller", ErrorKind.TRANSIENT),
    ("resource temporarily unavailable", ErrorKind.TRANSIENT),
    ("slurm temporarily unable to accept job", ErrorKind.TRANSIENT),
    ("job creation temporarily disabled", ErrorKind.TRANSIENT),
    # slurmctld fail-over in progress
    ("backup controller in standby mode", ErrorKind.TRANSIENT),
    ("connection refused", ErrorKind.TRANSIENT),
    ("zero bytes were transmitted or received", ErrorKind.TRANSIENT),
    ("communication connection failure", ErrorKind.TRANSIENT),
    # submit limits: the site refuses more jobs now, fewer later will pass
    ("qosmaxsubmitjobperuserlimit", ErrorKind.POLICY),
    ("assocmaxsubmitjoblimit", ErrorKind.POLICY),
    ("job violates accounting/qos policy", ErrorKind.POLICY),
    ("slurm job queue full", ErrorKind.POLICY),  # MaxJobCount reached
    ("qosgrp", ErrorKind.POLICY),  # QOSGrpGRES, QOSGrpSubmitJobsLimit, ...
    ("assocgrp", ErrorKind.POLICY),  # AssocGrpSubmitJobsLimit, ...
    # the request itself is wrong: retrying the same request cannot help
    ("invalid partition name specified", ErrorKind.INVALID),
    ("invalid account or account/partition combination specified", ErrorKind.INVALID),
    ("invalid qos specification", ErrorKind.INVALID),
    ("requested node configuration is not available", ErrorKind.INVALID),
    ("invalid generic resource (gres) specification", ErrorKind.INVALID),
    ("invalid trackable resource (tres) specification", ErrorKind.INVALID),
    ("invalid job array specification", ErrorKind.INVALID),
    ("job dependency problem", ErrorKind.INVALID),  # 23.02+: dependency on an unknown job
    ("invalid --time specification", ErrorKind.INVALID),  # refused by sbatch itself, exit 255
    ("requested time limit is invalid", ErrorKind.INVALID),
    ("more processors requested than permitted", ErrorKind.INVALID),
    ("memory required by task is not available", ErrorKind.INVALID),
    ("memory specification can not be satisfied", ErrorKind.INVALID),
    ("invalid feature specification", ErrorKind.INVALID),
    ("node count specification invalid", ErrorKind.INVALID),
)


def _classify(argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> ErrorKind:
    text = f"{stderr}\n{stdout}".lower()
    for needle, kind in _ERROR_TABLE:
        if needle in text:
            return kind
    # sbatch refuses bad options before contacting the controller with exit 255
    if returncode == 255 and "sbatch" in argv[:5]:
        return ErrorKind.INVALID
    return ErrorKind.OTHER


# --------------------------------------------------------------------------------------
# Parsing squeue and sacct into STATUS_SCHEMA frames
# --------------------------------------------------------------------------------------

# squeue -O fields, in output order. `:|` = no width limit, then a `|`; the last field has no
# suffix. Comment (free text) is last so a `|` in it cannot shift other fields.
_SQUEUE_FIELDS = (
    "JobArrayID",  # %i: 123 or 123_4 (or 123_[4-9%2] for a pending record without -r)
    "ArrayJobID",  # %F: the array's base id (the job's own id for plain jobs)
    "ArrayTaskID",  # %K: task index, N/A for plain jobs
    "JobID",  # %A: the task's own raw id
    "State",  # %T: long state
    "exit_code",  # raw wait status (768 = exit 3, 9 = SIGKILL); no %-letter exists for it
    "NodeList",
    "SubmitTime",
    "StartTime",  # for a pending job: the scheduler's estimate (ignored)
    "EndTime",  # for a running job: the expected end (ignored)
    "Reason",  # %r: may contain spaces ("launch failed requeued held")
    "Comment",
)
_SQUEUE_FORMAT = ",".join(f"{f}:|" for f in _SQUEUE_FIELDS[:-1]) + f",{_SQUEUE_FIELDS[-1]}:"

_SACCT_FIELDS = (
    "JobID",  # 123, 123_4, 123_[5-9], plus .batch/.extern/.0 step rows
    "JobIDRaw",  # the task's own id (1672171 for 1672169_1)
    "State",  # "CANCELLED by 0" on job rows
    "ExitCode",  # exit:signal of the batch script
    "DerivedExitCode",
    "Submit",
    "Start",
    "End",
    "Elapsed",
    "TotalCPU",
    "MaxRSS",  # on step rows only
    "NodeList",
    "Reason",  # why it waited / was cancelled (kill-on-invalid-dep: "Dependency" here)
    "Comment",  # last: free text (stored only with AccountingStoreFlags=job_comment)
)
_SACCT_FORMAT = ",".join(_SACCT_FIELDS)

_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# Non-schema columns for the core's guards: recycled ids (submitted_at) and crash recovery
# (comment = the submission's tag).
DETAILS_SCHEMA: dict[str, pl.DataType] = {
    "scheduler_id": pl.Utf8(),
    "raw_id": pl.Utf8(),  # SLURM's own numeric id of this job or task
    "array_base_id": pl.Utf8(),
    "submitted_at": pl.Float64(),
    "comment": pl.Utf8(),
}


class _Row(msgspec.Struct):
    scheduler_id: str
    native_state: str | None
    status: str | None
    reason: str | None
    exit_code: int | None
    signal: int | None
    pending_reason: str | None
    never_runs: bool
    node: str | None
    started_at: float | None
    ended_at: float | None
    elapsed_s: float | None = None
    cpu_time_s: float | None = None
    max_rss_mb: float | None = None
    # details, not in STATUS_SCHEMA
    raw_id: str | None = None
    array_base_id: str | None = None
    submitted_at: float | None = None
    comment: str | None = None


def _classify_row(
    native_state: str,
    slurm_reason: str | None,
    exit_code: int | None,
    signal: int | None,
    started: bool,
) -> tuple[str | None, str | None, bool]:
    """(status, reason, never_runs) for one row; an unknown state gives a null status."""
    name = _normalise_state(native_state)
    entry = _STATE_TABLE.get(name)
    if entry is None:
        return None, None, False
    status, reason = entry
    if status is JobStatus.FAILED and name == "FAILED":
        reason = _failed_reason(exit_code, signal)
    elif status is JobStatus.CANCELLED and not started and slurm_reason in _DEPENDENCY_REASONS:
        # Seen live (22.05.8): a --kill-on-invalid-dep child is CANCELLED with reason
        # DependencyNeverSatisfied in squeue but "Dependency" in sacct; a job scancel'd while
        # never-satisfiable keeps DependencyNeverSatisfied in both. A job scancel'd while its
        # parent still ran would also say "Dependency": the core knows its own cancels.
        # Only for jobs that never started: sacct keeps a stale reason after a job ran.
        reason = Reason.DEPENDENCY_NEVER_SATISFIED
    pending = status is JobStatus.QUEUED and never_runs(slurm_reason, name)
    return status.value, (reason.value if reason else None), pending


_DEPENDENCY_REASONS = frozenset({"DependencyNeverSatisfied", "Dependency"})


def _failed_reason(exit_code: int | None, signal: int | None) -> Reason:
    # 0:9 = the script died of SIGKILL; 3:0 = it exited 3. Before 25.11 sacct showed an exit
    # code >= 128 minus 128 (exit 137 as 9:0); the core cross-checks with the exit record.
    if signal:
        return Reason.SIGNAL
    if exit_code:
        return Reason.EXIT_CODE
    # FAILED with 0:0: SLURM failed it without a status of its own (launch/prolog failure)
    return Reason.SCHEDULER_ERROR


def _warn_unknown(unknown: dict[str, int], source: str) -> None:
    for name, count in unknown.items():
        log.warning(
            "slurm: unknown %s state %r on %d row(s): status left null, the job is left as it was",
            source,
            name,
            count,
        )


def _merge_rows(rows: dict[str, _Row], row: _Row) -> None:
    """Keep one row per id; a REVOKED federation copy never hides the live one."""
    previous = rows.get(row.scheduler_id)
    if previous is not None and row.native_state == "REVOKED" and previous.native_state != "REVOKED":
        return
    rows[row.scheduler_id] = row


def _frame(rows: Sequence[_Row], schema: dict[str, pl.DataType] = STATUS_SCHEMA) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=schema)
    getter = operator.attrgetter(*schema)
    columns = zip(*map(getter, rows))  # polars builds columns much faster than rows
    return pl.DataFrame(dict(zip(schema, map(list, columns))), schema=schema)


def _task_keys(job_field: str, base: str | None) -> list[str] | None:
    """``123`` / ``123_4`` -> itself; ``123_[4-9%2]`` -> every task; None when unreadable."""
    if _ID_RE.match(job_field):
        return [job_field]
    array_base, sep, expression = job_field.partition("_")
    if not sep or not array_base.isdigit() or not expression.startswith("["):
        return None
    indices, complete = expand_array_indices(expression)
    if not complete:
        log.warning(
            "slurm: array expression %r was cut short; %d task(s) read, the rest unknown "
            "(is SLURM_BITSTR_LEN set?)",
            job_field,
            len(indices),
        )
    return [f"{base or array_base}_{i}" for i in indices]


class _Memo:
    """Per-parse caches: a million rows carry only a handful of distinct times and states."""

    def __init__(self, utc: bool, unknown: dict[str, int]) -> None:
        self.utc = utc
        self.unknown = unknown
        self._times: dict[str, float | None] = {}
        self._durations: dict[str, float | None] = {}
        self._sizes: dict[str, float | None] = {}
        self._rows: dict[tuple[Any, ...], tuple[str | None, str | None, bool]] = {}

    def time(self, text: str) -> float | None:
        try:
            return self._times[text]
        except KeyError:
            value = self._times[text] = parse_slurm_time(text, utc=self.utc)
            return value

    def duration(self, text: str) -> float | None:
        try:
            return self._durations[text]
        except KeyError:
            value = self._durations[text] = parse_slurm_duration(text)
            return value

    def rss_mb(self, text: str) -> float | None:
        try:
            return self._sizes[text]
        except KeyError:
            value = self._sizes[text] = parse_size_mb(text, bare_unit="K")
            return value

    def classify(
        self,
        state: str,
        reason: str | None,
        exit_code: int | None,
        signal: int | None,
        started: bool,
    ) -> tuple[str | None, str | None, bool]:
        key = (state, reason, exit_code, signal, started)
        result = self._rows.get(key)
        if result is None:
            result = self._rows[key] = _classify_row(
                state, reason, exit_code, signal, started=started
            )
        if result[0] is None:
            name = _normalise_state(state)
            self.unknown[name] = self.unknown.get(name, 0) + 1
        return result


_SQUEUE_COLUMNS = ("job_field", "array_job", "task", "raw_id", "state", "exit_raw", "nodes", "submit",
                   "start", "end", "slurm_reason", "comment")  # fmt: skip
_PARSED_SCHEMA: dict[str, pl.DataType] = {**STATUS_SCHEMA, **{k: v for k, v in DETAILS_SCHEMA.items() if k != "scheduler_id"}}


def _null_expr(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    return pl.when(text.is_in(list(_NULLS))).then(None).otherwise(text)


def _lookup(column: pl.Expr, table: dict[str, Any], dtype: pl.DataType) -> pl.Expr:
    """Map a string column through a Python dict (filled for its distinct values); null when
    absent."""
    if not table:
        return pl.lit(None, dtype=dtype)
    return column.replace_strict(list(table), list(table.values()), default=None, return_dtype=dtype)


def _parse_squeue_frame(text: str, utc: bool) -> pl.DataFrame:
    """squeue text -> STATUS_SCHEMA plus DETAILS_SCHEMA columns, in columns: a million lines
    are split and decoded by polars; Python sees only the distinct states, reasons and times
    (a handful) and the rare pending-array expressions."""
    lines = pl.DataFrame({"line": text.splitlines()}, schema={"line": pl.Utf8})
    lines = lines.filter(pl.col("line").str.strip_chars() != "")
    if lines.is_empty():
        return pl.DataFrame(schema=_PARSED_SCHEMA)
    n_fields = len(_SQUEUE_FIELDS)
    split = lines.with_columns(pl.col("line").str.splitn("|", n_fields).alias("f")).unnest("f")
    split = split.rename({f"field_{i}": name for i, name in enumerate(_SQUEUE_COLUMNS)})
    malformed = split.filter(pl.col("comment").is_null())
    for line in malformed.get_column("line").head(20):
        log.warning("slurm: skipping malformed squeue line: %r", line)
    if malformed.height > 20:
        log.warning("slurm: ... and %d more malformed squeue line(s)", malformed.height - 20)
    df = split.with_row_index("line_no").filter(pl.col("comment").is_not_null()).with_columns(
        pl.col("job_field").str.strip_chars(), pl.col("array_job").str.strip_chars(), pl.col("state").str.strip_chars(),
    )  # fmt: skip

    # Keys: a plain id or task id is its own key; a pending-array expression is expanded.
    plain = pl.col("job_field").str.contains(r"^\d+(?:_\d+)?$") & (pl.col("state") != "")
    simple = df.filter(plain).with_columns(pl.col("job_field").alias("scheduler_id"), pl.lit(True).alias("single"))
    rest = df.filter(~plain)
    if not rest.is_empty():
        keys: list[list[str]] = []
        keep: list[bool] = []
        for line, job_field, array_job, state in rest.select("line", "job_field", "array_job", "state").iter_rows():
            found = _task_keys(job_field, array_job if array_job.isdigit() else None)
            if found is None or not state:
                log.warning("slurm: skipping squeue line with an unreadable job id or state: %r", line)
            keys.append(found or [])
            keep.append(bool(found) and bool(state))
        rest = (
            rest.with_columns(pl.Series("scheduler_id", keys, dtype=pl.List(pl.Utf8)), pl.Series("keep", keep))
            .filter(pl.col("keep")).drop("keep")
            .with_columns((pl.col("scheduler_id").list.len() == 1).alias("single"))
            .explode("scheduler_id")
        )  # fmt: skip
        df = pl.concat([simple, rest.select(simple.columns)]).sort("line_no", maintain_order=True)
    else:
        df = simple

    raw = pl.col("exit_raw").str.strip_chars().cast(pl.Int64, strict=False)
    raw = pl.when((raw >= 0) & (raw <= 0xFFFF)).then(raw).otherwise(None)
    df = df.with_columns(
        ((raw // 256) % 256).cast(pl.Int32).alias("code"),
        pl.when(raw % 128 != 0).then(raw % 128).otherwise(None).cast(pl.Int32).alias("sig"),
        _null_expr("slurm_reason").alias("pending_reason"),
        _null_expr("nodes").alias("node"),
        _null_expr("comment").alias("comment"),
    )

    # Classification per distinct (state, reason, exit code, signal, started): a handful.
    combo_columns = ["state", "pending_reason", "code", "sig"]
    df = df.with_columns(
        pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("\x00") for c in combo_columns]
                      + [pl.col("node").is_not_null().cast(pl.Utf8)], separator="\x1f").alias("combo")
    )  # fmt: skip
    combos = df.group_by("combo").agg(*[pl.col(c).first() for c in combo_columns],
                                      pl.col("node").first(), pl.len().alias("n"))  # fmt: skip
    unknown: dict[str, int] = {}
    classified: dict[str, tuple[str | None, str | None, bool, str]] = {}
    for combo, state, reason_text, code, sig, node, count in combos.iter_rows():
        status, reason, stuck = _classify_row(state, reason_text, code, sig, started=node is not None)
        if status is None:
            name = _normalise_state(state)
            unknown[name] = unknown.get(name, 0) + count
        native = _normalise_state(state) if state.split(" ", 1)[0] in _COMPACT_STATES else state
        classified[combo] = (status, reason, stuck, native)
    _warn_unknown(unknown, "squeue")
    combo = pl.col("combo")
    df = df.with_columns(
        _lookup(combo, {k: v[0] for k, v in classified.items()}, pl.Utf8()).alias("status"),
        _lookup(combo, {k: v[1] for k, v in classified.items()}, pl.Utf8()).alias("reason"),
        _lookup(combo, {k: v[2] for k, v in classified.items()}, pl.Boolean()).alias("never_runs"),
        _lookup(combo, {k: v[3] for k, v in classified.items()}, pl.Utf8()).alias("native_state"),
    )
    terminal = pl.col("status").is_in([s.value for s in _TERMINAL])
    # squeue's StartTime of a pending job is an estimate, EndTime of a running one the
    # expected end, and a job cancelled while pending shows start == end with no node
    ran = pl.col("node").is_not_null() & pl.col("status").ne_missing(JobStatus.QUEUED.value)
    times = pl.concat([df.get_column(c) for c in ("submit", "start", "end")]).unique().to_list()
    parsed = {t: parse_slurm_time(t, utc=utc) for t in times}
    df = df.with_columns(
        pl.when(terminal).then(pl.col("code")).otherwise(None).alias("exit_code"),
        pl.when(terminal).then(pl.col("sig")).otherwise(None).alias("signal"),
        pl.when(ran).then(_lookup(pl.col("start"), parsed, pl.Float64())).otherwise(None).alias("started_at"),
        pl.when(terminal).then(_lookup(pl.col("end"), parsed, pl.Float64())).otherwise(None).alias("ended_at"),
        _lookup(pl.col("submit"), parsed, pl.Float64()).alias("submitted_at"),
        pl.when(pl.col("single")).then(pl.col("raw_id")).otherwise(None).alias("raw_id"),
        pl.when(pl.col("scheduler_id").str.contains("_", literal=True)).then(pl.col("array_job"))
        .otherwise(None).alias("array_base_id"),
        pl.lit(None, dtype=pl.Float64).alias("elapsed_s"),
        pl.lit(None, dtype=pl.Float64).alias("cpu_time_s"),
        pl.lit(None, dtype=pl.Float64).alias("max_rss_mb"),
    )  # fmt: skip
    if df.get_column("scheduler_id").n_unique() < df.height:
        # One row per id, the last; a REVOKED federation copy never hides a live one.
        df = (
            df.with_row_index("i")
            .with_columns(pl.col("i").min().over("scheduler_id").alias("first"),
                          (pl.col("native_state") != "REVOKED").fill_null(True).alias("live"))
            .sort(["live", "i"]).unique("scheduler_id", keep="last").sort("first")
        )  # fmt: skip
    return df.select([pl.col(name).cast(dtype) for name, dtype in _PARSED_SCHEMA.items()])


def _parse_sacct(text: str, utc: bool, submitted_after: float | None) -> list[_Row]:
    # Pass 1: split job rows from step rows, keyed by the job's id (123 or 123_4 or 123_[..]).
    n_fields = len(_SACCT_FIELDS)
    jobs: dict[str, list[str]] = {}
    steps: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        # --parsable2 does not pad; the key fields are stripped anyway
        fields = line.rstrip("\r").split("|", n_fields - 1)
        fields[0] = fields[0].strip()
        if len(fields) != n_fields or not fields[0] or not fields[2].strip():
            log.warning("slurm: skipping malformed sacct line: %r", line)
            continue
        job_key, dot, _step = fields[0].partition(".")
        if dot:
            steps.setdefault(job_key, []).append(fields)
        else:
            jobs[job_key] = fields  # without -D the newest record of an id is the one shown
    for job_key, step_rows in steps.items():
        if job_key not in jobs:  # no allocation row (should not happen): the batch step stands in
            batch = next((s for s in step_rows if s[0].endswith(".batch")), step_rows[0])
            jobs[job_key] = [job_key, batch[1].partition(".")[0], *batch[2:]]

    # Pass 2: one row per job or task, steps folded in.
    rows: dict[str, _Row] = {}
    unknown: dict[str, int] = {}
    memo = _Memo(utc, unknown)
    for job_key, fields in jobs.items():
        (_jid, raw_id, state, exit_text, _derived, submit, start, end, elapsed, total_cpu,
         _max_rss, nodes, slurm_reason, comment) = fields
        submitted_at = memo.time(submit)
        if submitted_after is not None and submitted_at is not None and submitted_at < submitted_after:
            log.debug("slurm: ignoring sacct record %s submitted before the guard", job_key)
            continue
        keys = _task_keys(job_key, None)
        if keys is None:
            log.warning("slurm: skipping sacct record with an unreadable job id: %r", job_key)
            continue
        step_rows = steps.get(job_key, [])
        exit_code, signal = parse_exit_pair(exit_text)
        reason_text = _null(slurm_reason)
        started_at = memo.time(start)
        status, reason, stuck = memo.classify(
            state, reason_text, exit_code, signal, started_at is not None
        )
        if status == JobStatus.FAILED.value and any(
            _normalise_state(s[2]) == "OUT_OF_MEMORY" for s in step_rows
        ):
            # some versions mark only the step OUT_OF_MEMORY and the job FAILED
            reason = Reason.OOM.value
        terminal = status is not None and JobStatus(status) in _TERMINAL
        rss_known = [r for r in (memo.rss_mb(s[10]) for s in step_rows) if r is not None]
        cpu = memo.duration(total_cpu)
        if not cpu:
            step_cpu = [memo.duration(s[9]) for s in step_rows]
            known_cpu = [c for c in step_cpu if c is not None]
            cpu = sum(known_cpu) if known_cpu else cpu
        for key in keys:
            _merge_rows(
                rows,
                _Row(
                    scheduler_id=key,
                    native_state=state,
                    status=status,
                    reason=reason,
                    exit_code=exit_code if terminal else None,
                    signal=signal if terminal else None,
                    pending_reason=reason_text,
                    never_runs=stuck,
                    node=_null(nodes),
                    started_at=started_at,
                    ended_at=memo.time(end) if terminal else None,
                    elapsed_s=memo.duration(elapsed),
                    cpu_time_s=cpu,
                    max_rss_mb=max(rss_known) if rss_known else None,
                    raw_id=raw_id if len(keys) == 1 else None,
                    array_base_id=base_id(key) if "_" in key else None,
                    submitted_at=submitted_at,
                    comment=_null(comment),
                ),
            )
    _warn_unknown(unknown, "sacct")
    return list(rows.values())


# --------------------------------------------------------------------------------------
# Directives and submission
# --------------------------------------------------------------------------------------

_DEPENDENCY_KINDS = ("afterok", "afternotok", "afterany")
_HEADER_UNSAFE = re.compile(r"[\s\"'\\#]")


def _refuse_control(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"{what}={value!r}: a newline or NUL cannot go into a #SBATCH line")
    return value


def _refuse_percent(path: str, what: str) -> str:
    if "%" in path:
        raise ValueError(f"{what}={path!r}: sbatch would expand '%' in an output path")
    return path


def _header_arg(option: str) -> str:
    """One option as sbatch's header parser reads it back: quote values with blanks or quotes.

    sbatch splits a #SBATCH line at whitespace (a backslash does not protect it), drops an
    unquoted `#` and everything after it, and inside "..." honours \\" and \\\\.
    """
    name, sep, value = option.partition("=")
    if sep and not _HEADER_UNSAFE.search(name):
        if not _HEADER_UNSAFE.search(value):
            return option
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{escaped}"'
    if not _HEADER_UNSAFE.search(option):
        return option
    escaped = option.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _options(req: SubmitRequest, kill_on_invalid_dep: bool) -> list[str]:
    res = req.resources
    if res.nodes < 1 or res.cpus < 1 or res.gpus < 0:
        raise ValueError(f"resources={res!r}: nodes and cpus must be >= 1, gpus >= 0")
    options = [
        f"--job-name={req.name}",
        f"--nodes={res.nodes}",
        "--ntasks-per-node=1",  # cpus are per node: one task per node with all of them (--ntasks=1 would shrink --nodes)
        f"--cpus-per-task={res.cpus}",
    ]
    if res.gpus > 0:
        options.append(f"--gres=gpu:{res.gpus}")
    if res.memory_mb is not None:
        if res.memory_mb <= 0:  # --mem=0 would mean "all the node's memory"
            raise ValueError(f"memory_mb={res.memory_mb!r}: must be positive")
        options.append(f"--mem={res.memory_mb}M")
    if res.walltime_s is not None:
        options.append(f"--time={format_time(res.walltime_s)}")
    if res.queue:
        options.append(f"--partition={res.queue}")
    if res.account:
        options.append(f"--account={res.account}")
    if res.exclude:
        options.append(f"--exclude={res.exclude}")
    if req.array_size is None:
        if req.stdout_path:
            options.append(f"--output={_refuse_percent(req.stdout_path, 'stdout_path')}")
        if req.stderr_path:
            options.append(f"--error={_refuse_percent(req.stderr_path, 'stderr_path')}")
    elif req.spool_dir:
        spool = _refuse_percent(req.spool_dir.rstrip("/") or "/", "spool_dir")
        options.append(f"--output={spool}/%A_%a.out")
        options.append(f"--error={spool}/%A_%a.err")
    options.append("--open-mode=append")
    if req.array_size is not None:
        if req.array_size < 1:
            raise ValueError(f"array_size={req.array_size!r}: must be >= 1")
        array = f"0-{req.array_size - 1}"
        if req.max_running is not None:
            if req.max_running < 1:
                raise ValueError(f"max_running={req.max_running!r}: must be >= 1")
            array += f"%{req.max_running}"
        options.append(f"--array={array}")
    dependency = _dependency(req.dependencies)
    if dependency:
        options.append(f"--dependency={dependency}")
        if kill_on_invalid_dep:
            options.append("--kill-on-invalid-dep=yes")
    if req.comment:
        options.append(f"--comment={req.comment}")
    options.append(f"--chdir={req.workdir}")
    options.append("--export=ALL")
    options.extend(req.extra_args)
    for option in options:
        _refuse_control(option, "option")
    _refuse_control(req.script_path, "script_path")
    return options


def _dependency(dependencies: Sequence[tuple[str, Sequence[str]]]) -> str:
    """All conditions must hold: ``afterok:1:2,afternotok:3,afterany:4`` (`,` = AND)."""
    merged: dict[str, dict[str, None]] = {}
    for kind, ids in dependencies:
        if kind not in _DEPENDENCY_KINDS:
            raise ValueError(f"dependencies: {kind!r} is not one of {', '.join(_DEPENDENCY_KINDS)}")
        merged.setdefault(kind, {}).update(dict.fromkeys(_check_ids(list(ids), "dependencies") if ids else []))
    return ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in merged.items() if ids)


_SUBMIT_RE = re.compile(r"^(\d+)(?:;[A-Za-z0-9_.\-]+)?$")


# --------------------------------------------------------------------------------------
# The dialect
# --------------------------------------------------------------------------------------


class SlurmDialect:
    """SLURM for housekeeper's core (see base.Dialect).

    Submission puts every option both in the script header (``directives``: the script stays
    readable and re-runnable by hand with a bare ``sbatch script.sh``) and on the sbatch
    command line (``submit_argv``), which wins over the header in sbatch. The two lists are
    built by one function, so they cannot disagree.

    ``pin_env`` (default True) prefixes squeue and sacct with ``env SLURM_BITSTR_LEN=0
    SLURM_TIME_FORMAT=standard TZ=UTC0`` and parses their times as UTC; with False the argv
    start with the command itself and times are read in this process's local zone.
    ``kill_on_invalid_dep`` (default True) adds ``--kill-on-invalid-dep=yes`` to dependent jobs.
    """

    name = "slurm"
    native_dependencies = True

    def __init__(self, *, pin_env: bool = True, kill_on_invalid_dep: bool = True) -> None:
        self.pin_env = pin_env
        self.kill_on_invalid_dep = kill_on_invalid_dep

    def __repr__(self) -> str:
        return f"SlurmDialect(pin_env={self.pin_env}, kill_on_invalid_dep={self.kill_on_invalid_dep})"

    # -- submission --------------------------------------------------------------------

    def directives(self, req: SubmitRequest) -> list[str]:
        """``#SBATCH`` header lines for the request (values quoted for sbatch's parser)."""
        return [f"#SBATCH {_header_arg(o)}" for o in _options(req, self.kill_on_invalid_dep)]

    def submit_argv(self, req: SubmitRequest) -> list[str]:
        """``sbatch --parsable <options> <script>``: the header's options again, unquoted."""
        return ["sbatch", "--parsable", *_options(req, self.kill_on_invalid_dep), req.script_path]

    def parse_submit(self, stdout: str) -> str:
        """``12345`` or ``12345;cluster2`` -> ``"12345"`` (an array's base id).

        Other lines are tolerated only if exactly one line is a job id: refusing a success
        would make the core resubmit work that SLURM already accepted.
        """
        found = [m.group(1) for line in stdout.splitlines() if (m := _SUBMIT_RE.match(line.strip()))]
        if len(found) != 1:
            raise ValueError(
                f"sbatch --parsable printed {stdout.strip()[:200]!r}: expected one line "
                "'JOBID' or 'JOBID;CLUSTER'"
            )
        return found[0]

    def task_ids(self, base_id: str, array_size: int) -> list[str]:
        """``123``, 3 -> ``["123_0", "123_1", "123_2"]``."""
        _check_ids([base_id], "base_id")
        if "_" in base_id or array_size < 1:
            raise ValueError(f"task_ids({base_id!r}, {array_size!r}): need a base id and a size >= 1")
        return [f"{base_id}_{i}" for i in range(array_size)]

    # -- queue -------------------------------------------------------------------------

    def _query(self, *argv: str) -> list[str]:
        return [*_PINNED_ENV, *argv] if self.pin_env else list(argv)

    def status_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """ONE squeue for all ids: ``squeue --noheader --array --states=all --jobs=<base ids>
        --Format=...``.

        Only distinct base ids are sent (``123_4`` -> ``123``): an array of a million tasks
        is one id. ``--array`` prints every pending task on its own line, ``--states=all``
        keeps jobs that ended within MinJobAge. Raises ValueError past MAX_ID_ARG_CHARS; use
        ``needs_user_query`` first and ``status_argv_all`` then.
        """
        bases = _base_ids(_check_ids(scheduler_ids))
        return self._query(
            "squeue", "--noheader", "--array", "--states=all",
            _id_list_arg(bases, "--jobs"), f"--Format={_SQUEUE_FORMAT}",
        )

    def status_argv_all(self, user: str) -> list[str]:
        """Every job of ``user`` (for id lists past MAX_STATUS_BASE_IDS); parse_status reads it."""
        return self._query(
            "squeue", "--noheader", "--array", "--states=all",
            f"--user={_check_user(user)}", f"--Format={_SQUEUE_FORMAT}",
        )

    def needs_user_query(self, scheduler_ids: Sequence[str]) -> bool:
        """True when the ids are better asked as "all my jobs" than as one -j list."""
        ids = _check_ids(scheduler_ids)
        bases = _base_ids(ids)
        return (
            len(bases) > MAX_STATUS_BASE_IDS
            or sum(len(b) + 1 for b in bases) > MAX_ID_ARG_CHARS
            or sum(len(a) + 1 for a in _accounting_ids(ids)) > MAX_ID_ARG_CHARS
        )

    def parse_status(self, text: str) -> pl.DataFrame:
        """squeue text -> STATUS_SCHEMA frame, one row per job or task; pending array
        expressions (``123_[4-9%2]``, ``123_[1,3,5-7]``, ``0-15:4``) are expanded. Unknown
        states give a null status (warning logged); malformed lines are skipped (warning)."""
        return _parse_squeue_frame(text, self.pin_env).select(list(STATUS_SCHEMA))

    def parse_status_details(self, text: str) -> pl.DataFrame:
        """squeue text -> DETAILS_SCHEMA (raw id, submit time, comment) for the core's guards."""
        return _parse_squeue_frame(text, self.pin_env).select(list(DETAILS_SCHEMA))

    # -- accounting --------------------------------------------------------------------

    def accounting_argv(
        self, scheduler_ids: Sequence[str], *, since: float | None = None
    ) -> list[str]:
        """ONE sacct, steps included (MaxRSS lives on the .batch step): ``sacct --parsable2
        --noheader --starttime=<since or 2000-01-01> --jobs=<ids> --format=...``.

        Task ids go as ``123_4``; an array with many wanted tasks goes as its base id. Job ids
        are recycled: pass ``since`` (epoch, e.g. the first submission minus a margin) so
        records that ended before it are left out, and check ``parse_accounting_details``'s
        submitted_at.
        """
        ids = _accounting_ids(_check_ids(scheduler_ids))
        return self._query(
            "sacct", "--parsable2", "--noheader", f"--starttime={self._start(since)}",
            _id_list_arg(ids, "--jobs"), f"--format={_SACCT_FORMAT}",
        )

    def accounting_argv_all(self, user: str, since: float) -> list[str]:
        """Every job of ``user`` since ``since`` (epoch) in one sacct; parse_accounting reads it."""
        return self._query(
            "sacct", "--parsable2", "--noheader", f"--starttime={self._start(since)}",
            f"--user={_check_user(user)}", f"--format={_SACCT_FORMAT}",
        )

    def _start(self, since: float | None) -> str:
        if since is None:
            return _EPOCH_START
        moment = time.gmtime(since) if self.pin_env else time.localtime(since)
        return time.strftime("%Y-%m-%dT%H:%M:%S", moment)

    def parse_accounting(
        self, text: str, *, submitted_after: float | None = None
    ) -> pl.DataFrame:
        """sacct text -> STATUS_SCHEMA frame, one row per job or task (steps folded in:
        MaxRSS the largest of the steps, TotalCPU the job's or the steps' sum).

        ``submitted_after`` drops records submitted earlier (recycled ids)."""
        return _frame(_parse_sacct(text, self.pin_env, submitted_after))

    def parse_accounting_details(self, text: str) -> pl.DataFrame:
        """sacct text -> DETAILS_SCHEMA (raw id, submit time, comment)."""
        return _frame(_parse_sacct(text, self.pin_env, None), DETAILS_SCHEMA)

    # -- control -----------------------------------------------------------------------

    def cancel_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """ONE scancel; each array's tasks as one ``123_[1-5,9]`` expression (scancel is
        silent and exits 0 even for ids that ended or never existed)."""
        return ["scancel", *compress_task_ids(scheduler_ids)]

    def release_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """``scontrol release <ids>`` for held jobs and tasks (e.g. launch failed requeued held)."""
        ids = _check_ids(scheduler_ids)
        joined = ",".join(ids)
        if len(joined) > MAX_ID_ARG_CHARS:
            raise ValueError(f"{len(ids)} ids are too many for one scontrol release")
        return ["scontrol", "release", joined]

    def config_argv(self) -> list[str]:
        return ["scontrol", "show", "config"]

    def parse_config(self, text: str) -> dict[str, Any]:
        """See module-level ``parse_config``."""
        return parse_config(text)

    def partition_argv(self) -> list[str]:
        return ["scontrol", "--oneliner", "show", "partition"]

    def parse_partitions(self, text: str) -> dict[str, PartitionInfo]:
        return parse_partitions(text)

    def limits_argv(self) -> list[str]:
        """ONE sinfo, a line per (partition, node): name (default marked '*'), node, memory
        (MB), time limit."""
        return self._query("sinfo", "--noheader", "--Node", "--format=%P|%N|%m|%l")

    def parse_limits(self, text: str) -> dict[str | None, Limits]:
        """sinfo text -> {partition: Limits}; the default partition also under None."""
        return parse_limits(text)

    def classify_error(
        self, argv: Sequence[str], returncode: int, stdout: str, stderr: str
    ) -> ErrorKind:
        """What a failed command means: one table of (substring, kind), first match wins."""
        return _classify(argv, returncode, stdout, stderr)


def _accounting_ids(ids: Sequence[str]) -> list[str]:
    if len(ids) > 10_000:
        frame = pl.DataFrame({"id": ids}, schema={"id": pl.Utf8}).with_columns(
            pl.col("id").str.split("_").list.first().alias("base"), pl.col("id").str.contains("_", literal=True).alias("task")
        )  # fmt: skip
        many = pl.col("task") & (pl.col("task").sum().over("base") > _TASKS_PER_BASE_FOR_ACCOUNTING)
        chosen = frame.select(pl.when(many).then(pl.col("base")).otherwise(pl.col("id")).alias("id"))
        return chosen.get_column("id").unique(maintain_order=True).to_list()
    per_base: dict[str, int] = {}
    for scheduler_id in ids:
        if "_" in scheduler_id:
            per_base[base_id(scheduler_id)] = per_base.get(base_id(scheduler_id), 0) + 1
    out: dict[str, None] = {}
    for scheduler_id in ids:
        base = base_id(scheduler_id)
        if base in out:
            continue
        if "_" in scheduler_id and per_base[base] > _TASKS_PER_BASE_FOR_ACCOUNTING:
            out[base] = None
        else:
            out[scheduler_id] = None
    return list(out)


_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*\$?$")


def _check_user(user: str) -> str:
    if not _USER_RE.match(user):
        raise ValueError(f"user={user!r}: not a user name")
    return user


DIALECT = SlurmDialect()
