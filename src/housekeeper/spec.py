"""Turning user arguments into a valid JobSpec. Every refusal names the parameter and value."""
from __future__ import annotations

import datetime as _dt
import functools
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .models import RETRYABLE_REASONS, JobSpec, Resources, RetryPolicy

# Names end up in file names, '#SBATCH' lines and shell words: keep them to a safe alphabet.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUEUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+,-]{0,127}\Z")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}\Z")
_MEMORY_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(I?B?)\s*\Z", re.IGNORECASE)
_UNIT_MB = {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024 * 1024}
# Folders housekeeper itself keeps in jobs_dir (SQLite keeps -wal, -shm and -journal beside the db).
RESERVED_SUBDIRS = frozenset(
    {".housekeeper", "housekeeper.db", "housekeeper.db-wal", "housekeeper.db-shm", "housekeeper.db-journal"}
)
# Counts, ids, megabytes and seconds are stored as SQLite integers (64-bit) and handed to schedulers
# that keep them in 32 bits: refuse what would overflow instead of failing later.
MAX_COUNT = 2**31 - 1
MAX_JOB_ID = 2**63 - 1
MAX_MEMORY_MB = 2**40  # an exabyte
MAX_WALLTIME_S = 2**31 - 1  # 68 years
MAX_ESCALATION_FACTOR = 100  # a larger one overflows the grown request (1e308 x 3600 s is inf)
# The batch script sets these itself; an env entry of the same name would change what it does.
_SCRIPT_VARIABLE_PREFIXES = ("HK_", "hk_")
# bash refuses to assign these, so the value could never arrive.
_BASH_READONLY = frozenset({"BASHOPTS", "BASH_VERSINFO", "EUID", "PPID", "SHELLOPTS", "UID"})


def _check_int(parameter: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(parameter, value, f"must be a whole number >= {minimum}")
    if value < minimum:
        raise InvalidArgumentError(parameter, value, f"must be >= {minimum}")
    if value > MAX_COUNT:
        raise InvalidArgumentError(parameter, value, f"must be at most {MAX_COUNT}")
    return value


def _check_text(parameter: str, value: Any, text: str, what: str = "") -> str:
    """Text that goes into the batch script and the database must be encodable as UTF-8:
    refuse lone surrogates (e.g. undecodable file names) and NUL bytes here, not at flush."""
    if "\0" in text:
        raise InvalidArgumentError(parameter, value, f"{what}contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(parameter, value, f"{what}is not valid text (it holds a lone surrogate)") from None
    return text


@functools.lru_cache(maxsize=256)
def _cached_memory(value: Any) -> int | None:
    return parse_memory(value)


@functools.lru_cache(maxsize=256)
def _cached_walltime(value: Any) -> int | None:
    return parse_walltime(value)


@functools.lru_cache(maxsize=64)
def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def parse_memory(value: Any, parameter: str = "memory") -> int | None:
    """Memory in MB. Accepts '32GB', '500MB', '1.5TB', '4G', '512K', plain integers (MB).

    Units are binary, as SLURM reads them: 1 GB = 1024 MB.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError(parameter, value, "must be a size such as '4GB' or an integer number of MB")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgumentError(parameter, value, "must be positive")
        if value > MAX_MEMORY_MB:
            raise InvalidArgumentError(parameter, value, f"is too large (at most {MAX_MEMORY_MB} MB)")
        return value
    if not isinstance(value, str):
        raise InvalidArgumentError(parameter, value, "must be a size such as '4GB' or an integer number of MB")
    match = _MEMORY_RE.match(value)
    if not match or (match.group(3) and not match.group(2) and match.group(3).upper() != "B"):
        raise InvalidArgumentError(
            parameter, value, "is not a size: use e.g. '500MB', '32GB', '1.5TB', '4G' or an integer (MB)"
        )
    number, unit, suffix = match.groups()
    if suffix.upper() == "I":  # "4Gi" without the B
        raise InvalidArgumentError(parameter, value, "is not a size: use e.g. '4GiB' or '4GB'")
    megabytes = float(number) * _UNIT_MB[unit.upper()]
    if suffix.upper() == "B" and not unit:
        megabytes = float(number) / (1024 * 1024)  # plain bytes
    if not megabytes <= MAX_MEMORY_MB:  # also catches inf from a thousand-digit number
        raise InvalidArgumentError(parameter, value, f"is too large (at most {MAX_MEMORY_MB} MB)")
    result = math.ceil(megabytes)
    if result <= 0:
        raise InvalidArgumentError(parameter, value, "must be positive")
    return result


def parse_walltime(value: Any, parameter: str = "walltime") -> int | None:
    """Wall time in seconds from 'HH:MM:SS', 'D-HH:MM:SS', 'D-HH:MM', 'D-HH', 'MM:SS',
    integer minutes or a timedelta."""
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
        if seconds <= 0:
            raise InvalidArgumentError(parameter, value, "must be positive")
        return _check_walltime_cap(parameter, value, math.ceil(seconds))
    if isinstance(value, bool):
        raise InvalidArgumentError(parameter, value, "must be 'HH:MM:SS', 'D-HH:MM:SS', minutes or a timedelta")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgumentError(parameter, value, "must be a positive number of minutes")
        return _check_walltime_cap(parameter, value, value * 60)
    if not isinstance(value, str):
        raise InvalidArgumentError(parameter, value, "must be 'HH:MM:SS', 'D-HH:MM:SS', minutes or a timedelta")
    text = value.strip()
    days = 0
    if "-" in text:
        day_text, _, text = text.partition("-")
        if not day_text.isdigit():
            raise InvalidArgumentError(parameter, value, "is not a duration like 'D-HH:MM:SS'")
        days = int(day_text)
        parts = text.split(":")
        if not 1 <= len(parts) <= 3:
            raise InvalidArgumentError(parameter, value, "is not a duration like 'D-HH:MM:SS'")
        parts += ["0"] * (3 - len(parts))  # D-HH, D-HH:MM
    else:
        parts = text.split(":")
        if len(parts) == 2:  # MM:SS
            parts = ["0", *parts]
        elif len(parts) != 3:
            raise InvalidArgumentError(parameter, value, "is not a duration: use 'HH:MM:SS', 'D-HH:MM:SS' or 'MM:SS'")
    if not all(p.isdigit() for p in parts):
        raise InvalidArgumentError(parameter, value, "is not a duration: use 'HH:MM:SS', 'D-HH:MM:SS' or 'MM:SS'")
    hours, minutes, seconds = (int(p) for p in parts)
    if minutes >= 60 or seconds >= 60 or (days and hours >= 24):
        raise InvalidArgumentError(parameter, value, "has a field out of range")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise InvalidArgumentError(parameter, value, "must be positive")
    return _check_walltime_cap(parameter, value, total)


def _check_walltime_cap(parameter: str, value: Any, seconds: int) -> int:
    if seconds > MAX_WALLTIME_S:
        raise InvalidArgumentError(parameter, value, f"is too long (at most {MAX_WALLTIME_S} seconds)")
    return seconds


def format_walltime(seconds: int) -> str:
    """'HH:MM:SS' (hours may exceed 24)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def check_name(value: Any, parameter: str = "name") -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidArgumentError(
            parameter,
            value,
            "must be 1-128 characters of letters, digits, '_', '.', '+', '-', not starting with '.', '+' or '-'",
        )
    return value


def check_subdir(value: Any) -> str | None:
    """A job's folder name: one safe path component, never numeric (numbers are the default folders)."""
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidArgumentError("job_subdir", value, "must be a string")
    if "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise InvalidArgumentError("job_subdir", value, "must be a single folder name inside jobs_dir (no '/', '..')")
    check_name(value, "job_subdir")
    if value.isdigit():
        raise InvalidArgumentError("job_subdir", value, "must not be all digits (reserved for default job folders)")
    if value in RESERVED_SUBDIRS:
        raise InvalidArgumentError("job_subdir", value, "is reserved by housekeeper")
    return value


def default_name(command: str) -> str:
    """A name derived from the command's first word (e.g. 'python' -> 'python')."""
    first = command.strip().split()[0] if command.strip() else "job"
    base = re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(first)).lstrip(".+-")[:64]
    return base or "job"


def _check_ids(parameter: str, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(parameter, value, "must be a list of job ids returned by submit()")
    ids: dict[int, None] = {}
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_JOB_ID:
            raise InvalidArgumentError(parameter, value, f"contains {item!r}, which is not a job id")
        ids[item] = None
    return tuple(ids)


def _check_env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError("env", value, "must be a dict of variable name to value")
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            raise InvalidArgumentError("env", value, f"key {key!r} is not a valid environment variable name")
        if key.startswith(_SCRIPT_VARIABLE_PREFIXES):
            raise InvalidArgumentError("env", value, f"key {key!r} is reserved: HK_* and hk_* belong to the batch script")
        if key in _BASH_READONLY:
            raise InvalidArgumentError("env", value, f"key {key!r} is read-only in bash and cannot be set")
        if isinstance(item, bool) or not isinstance(item, (str, int, float, Path)):
            raise InvalidArgumentError("env", value, f"value of {key!r} must be a string or a number")
        env[key] = _check_text("env", value, str(item), f"value of {key!r} ")
    return env


def _check_files(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Path)):
        value = [value]
    if not isinstance(value, Iterable):
        raise InvalidArgumentError("expected_files", value, "must be a list of paths")
    files: list[str] = []
    for item in value:
        if not isinstance(item, (str, Path)) or not str(item) or "\0" in str(item) or "\n" in str(item):
            raise InvalidArgumentError("expected_files", value, f"contains {item!r}, which is not a usable path")
        files.append(_check_text("expected_files", value, str(item), f"entry {item!r} "))
    return tuple(files)


def build_spec(
    *,
    command: Any,
    name: Any,
    job_subdir: Any,
    nodes: Any,
    cpus: Any,
    gpus: Any,
    memory: Any,
    walltime: Any,
    queue: Any,
    account: Any,
    expected_files: Any,
    after_ok: Any,
    after_fail: Any,
    after_any: Any,
    max_retries: Any,
    env: Any,
    workdir: Any,
    retry_on: Any = None,
    escalate: Any = None,
) -> JobSpec:
    """Validate every submit() argument; raises InvalidArgumentError naming the first bad one."""
    if not isinstance(command, str) or not command.strip():
        raise InvalidArgumentError("command", command, "must be a non-empty string")
    _check_text("command", command, command)
    name = default_name(command) if name is None else check_name(name)
    subdir = check_subdir(job_subdir)
    if queue is not None and (not isinstance(queue, str) or not _QUEUE_RE.match(queue)):
        raise InvalidArgumentError("queue", queue, "must be a queue/partition name (letters, digits, '_.+-,')")
    if account is not None and (not isinstance(account, str) or not _ACCOUNT_RE.match(account)):
        raise InvalidArgumentError("account", account, "must be an account name (letters, digits, '_.@+-')")
    if workdir is None:
        workdir_path = os.getcwd()
    elif isinstance(workdir, (str, Path)) and str(workdir):
        # A newline or carriage return cannot go into a '#SBATCH --chdir' or '#PBS' line.
        if "\n" in str(workdir) or "\r" in str(workdir):
            raise InvalidArgumentError("workdir", workdir, "contains a line break, which no scheduler accepts")
        workdir_path = os.path.abspath(_check_text("workdir", workdir, str(workdir)))
    else:
        raise InvalidArgumentError("workdir", workdir, "must be a directory path")
    # Sweeps submit from one folder a million times: ask the file system once per folder.
    if not _is_dir(workdir_path):
        _is_dir.cache_clear()
        if not os.path.isdir(workdir_path):
            raise InvalidArgumentError("workdir", workdir, "is not an existing directory")
    resources = Resources(
        nodes=_check_int("nodes", nodes, 1),
        cpus=_check_int("cpus", cpus, 1),
        gpus=_check_int("gpus", gpus, 0),
        memory_mb=_cached_memory(memory) if isinstance(memory, (str, int)) else parse_memory(memory),
        walltime_s=_cached_walltime(walltime) if isinstance(walltime, (str, int, _dt.timedelta)) else parse_walltime(walltime),
        queue=queue,
        account=account,
    )
    return JobSpec(
        command=command,
        name=name,
        job_subdir=subdir,
        resources=resources,
        workdir=workdir_path,
        expected_files=_check_files(expected_files),
        after_ok=_check_ids("after_ok", after_ok),
        after_fail=_check_ids("after_fail", after_fail),
        after_any=_check_ids("after_any", after_any),
        max_retries=_check_int("max_retries", max_retries, 0),
        env=_check_env(env),
        retry_policy=check_retry_policy(retry_on, escalate),
    )


DEFAULT_ESCALATION = {"timeout": 2.0, "oom": 1.5, "node_fail": True}
_ESCALATE_KEYS = ("timeout", "oom", "node_fail", "max_walltime", "max_memory")


def check_retry_policy(retry_on: Any, escalate: Any) -> RetryPolicy | None:
    """`retry_on` (a reason or list of reasons) and `escalate` (True, or a dict of
    timeout/oom factors, node_fail, max_walltime, max_memory) -> RetryPolicy; None for the
    default (retry every reason, never change the request)."""
    if retry_on is None and (escalate is None or escalate is False):
        return None
    if isinstance(retry_on, (str, type(None))) and isinstance(escalate, (bool, type(None))):
        return _cached_policy(retry_on, escalate)  # a sweep passes the same few policies a million times
    return _build_policy(retry_on, escalate)


@functools.lru_cache(maxsize=64)
def _cached_policy(retry_on: str | None, escalate: bool | None) -> RetryPolicy:
    return _build_policy(retry_on, escalate)


def _build_policy(retry_on: Any, escalate: Any) -> RetryPolicy:
    reasons: tuple[str, ...] | None = None
    if retry_on is not None:
        items = [retry_on] if isinstance(retry_on, str) else retry_on
        if not isinstance(items, Iterable) or isinstance(items, (bytes, Mapping)):
            raise InvalidArgumentError("retry_on", retry_on, "must be a failure reason or a list of them")
        found: list[str] = []
        for item in items:
            name = str(getattr(item, "value", item)) if not isinstance(item, str) else item
            if name not in RETRYABLE_REASONS:
                raise InvalidArgumentError(
                    "retry_on", retry_on, f"{item!r} is not a reason that can be retried ({', '.join(RETRYABLE_REASONS)})"
                )
            if name not in found:
                found.append(name)
        if not found:
            raise InvalidArgumentError("retry_on", retry_on, "must name at least one reason (or be None for all)")
        reasons = tuple(found)
    if escalate is None or escalate is False:
        return RetryPolicy(retry_on=reasons)
    if escalate is True:
        settings: Mapping[str, Any] = DEFAULT_ESCALATION
    elif isinstance(escalate, Mapping):
        settings = escalate
    else:
        raise InvalidArgumentError("escalate", escalate, "must be True, False/None, or a dict such as {'timeout': 2}")
    for key in settings:
        if key not in _ESCALATE_KEYS:
            raise InvalidArgumentError("escalate", escalate, f"has unknown key {key!r} (known: {', '.join(_ESCALATE_KEYS)})")
    factors: dict[str, float | None] = {}
    for key in ("timeout", "oom"):
        value = settings.get(key)
        if value is None or value is False:
            factors[key] = None
            continue
        if value is True:
            value = DEFAULT_ESCALATION[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 < value <= MAX_ESCALATION_FACTOR:
            raise InvalidArgumentError(
                "escalate", escalate, f"{key!r} must be a factor > 1 and <= {MAX_ESCALATION_FACTOR} (e.g. 2), got {value!r}"
            )
        factors[key] = float(value)
    node_fail = settings.get("node_fail", False)
    if not isinstance(node_fail, bool):
        raise InvalidArgumentError("escalate", escalate, f"'node_fail' must be True or False, got {node_fail!r}")
    try:
        max_walltime = parse_walltime(settings.get("max_walltime"), "escalate['max_walltime']")
        max_memory = parse_memory(settings.get("max_memory"), "escalate['max_memory']")
    except InvalidArgumentError as exc:
        raise InvalidArgumentError("escalate", escalate, str(exc)) from None
    return RetryPolicy(retry_on=reasons, timeout=factors["timeout"], oom=factors["oom"], node_fail=node_fail,
                       max_walltime_s=max_walltime, max_memory_mb=max_memory)  # fmt: skip
