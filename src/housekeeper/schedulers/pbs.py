"""PBS dialects: PBS Professional / OpenPBS, Torque, and Debian's Torque wrappers over SLURM.

Pure code (no I/O): builds ``qsub``/``qstat``/``qdel`` argv lists and parses their text.

Three dialects share this module:

- :class:`PbsProDialect` -- PBS Professional and OpenPBS. Status comes from
  ``qstat -f -F json -x -t`` (``-x``: finished jobs too, where the server keeps history;
  ``-t``: array subjobs). There is no separate accounting query.
- :class:`TorqueDialect` -- Torque. ``qstat -f -1 -t`` (``-1``: no folding of long values;
  ``-x`` would mean XML there, not history). Finished jobs stay visible for
  ``keep_completed`` seconds only.
- :class:`SlurmTorqueDialect` -- Debian's ``slurm-wlm-torque`` Perl wrappers on top of SLURM
  (a :class:`TorqueDialect` with ``wrapper = True``). Bare numeric ids, ``qstat -f`` only
  (no ``-t``/``-x``/``-F``), every finished SLURM state shown as ``C`` without exit status,
  array tasks listed under their own raw SLURM ids (not derivable from the array id),
  ``qsub`` errors on stdout, only the last ``-l`` kept, no ``#PBS`` header read.

Job names: PBS wants a name that starts with a letter, and Torque (and PBS before 13) cut
names longer than 15 characters. :func:`pbs_job_name` keeps ``[A-Za-z0-9_.-]`` (anything else
becomes ``_``), puts a ``j`` in front of a name that does not start with a letter, and shortens
a name longer than the dialect's limit to its head, a ``-`` and 5 hex digits of the SHA-1 of
the whole name, so that two long names stay apart and the same name always gives the same
result. Limits: PBS Pro 236, Torque 15, the SLURM wrappers 64.

The submission tag (``SubmitRequest.comment``) travels as ``-v HK_COMMENT=<tag>`` for PBS Pro
and Torque (visible in ``Variable_List`` of ``qstat -f``); not for the SLURM wrappers, where
any ``-v`` turns into ``sbatch --export=none,...`` and would strip the job's environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import polars as pl

from ..errors import SchedulerError
from ..models import JobStatus, Reason, Resources
from .base import STATUS_SCHEMA, ErrorKind, SubmitRequest, empty_status_frame

__all__ = [
    "DIALECT_ENV",
    "ERROR_RULES",
    "PBSPRO_NEGATIVE_EXIT",
    "PBSPRO_STATES",
    "SLURM_TORQUE_STATES",
    "TORQUE_NEGATIVE_EXIT",
    "TORQUE_STATES",
    "PbsJsonError",
    "PbsProDialect",
    "PbsUnsupportedError",
    "SlurmTorqueDialect",
    "TorqueDialect",
    "array_task",
    "detect_argvs",
    "detect_dialect",
    "dialect_for",
    "exit_status_outcome",
    "format_walltime",
    "make_dialect",
    "parse_ctime",
    "parse_duration",
    "parse_qstat_json",
    "parse_qstat_text",
    "parse_size_mb",
    "pbs_job_name",
]

log = logging.getLogger("housekeeper")


class PbsJsonError(ValueError):
    """``qstat -F json`` printed JSON that could not be read even after repair.

    The caller should rerun the query in text form (``PbsProDialect.status_argv_text``) and
    hand that output to ``parse_status`` (which reads both forms).
    """


class PbsUnsupportedError(ValueError):
    """The request cannot be expressed in this dialect (e.g. one SLURM-wrapper array task)."""


# --------------------------------------------------------------------------------------------
# Small parsers and formatters
# --------------------------------------------------------------------------------------------


def format_walltime(seconds: float) -> str:
    """``HH:MM:SS`` for PBS ``walltime`` (rounded up to a whole second; hours may exceed 24)."""
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"walltime must be >= 0 seconds, got {seconds!r}")
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_duration(text: str | float | None) -> float | None:
    """PBS durations ``[[[D:]HH:]MM:]SS[.fff]`` (or a bare number of seconds) to seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    parts = text.strip().split(":")
    if not parts or len(parts) > 4 or any(p == "" for p in parts):
        return None
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    factors = (1.0, 60.0, 3600.0, 86400.0)
    return sum(n * f for n, f in zip(reversed(numbers), factors))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)([bw]?)\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_WORD_BYTES = 8  # PBS "w" units are words of the execution host: 8 bytes on 64-bit hosts


def parse_size_mb(text: str | float | None) -> float | None:
    """PBS sizes (``1234kb``, ``4gb``, ``512mb``, ``1tb``, ``100b``, ``16kw``, bare bytes) to MiB."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) / (1 << 20)
    match = _SIZE_RE.match(text)
    if not match:
        return None
    number, scale, unit = match.groups()
    size_bytes = float(number) * (1 << _SIZE_SHIFT[scale.lower()])
    if unit.lower() == "w":
        size_bytes *= _WORD_BYTES
    return size_bytes / (1 << 20)


def parse_ctime(text: str | float | None) -> float | None:
    """A ctime string (``Mon Jan  1 00:00:00 2024``, the server's local time) to epoch seconds.

    Read in this machine's local time zone (the driver runs on the cluster, like the server).
    Numbers are taken as epoch seconds already. Anything unreadable gives None.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    cleaned = " ".join(text.split())
    if not cleaned:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    try:
        return time.mktime(time.strptime(cleaned, "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def pbs_job_name(name: str, max_length: int = 15) -> str:
    """A name PBS accepts: starts with a letter, ``[A-Za-z0-9_.-]``, at most ``max_length``."""
    if max_length < 7:
        raise ValueError(f"max_length must be >= 7, got {max_length}")
    cleaned = _NAME_BAD.sub("_", name) or "hk"
    if not cleaned[0].isascii() or not cleaned[0].isalpha():
        cleaned = "j" + cleaned
    if len(cleaned) <= max_length:
        return cleaned
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:5]
    return f"{cleaned[: max_length - 6]}-{digest}"


# --------------------------------------------------------------------------------------------
# State tables: one literal table per dialect
# --------------------------------------------------------------------------------------------

FINISHED = "finished"  # table marker: the job left the run; the outcome comes from its exit status


class StateEntry(NamedTuple):
    """What a native state letter means: a JobStatus, or FINISHED (judge by exit status)."""

    status: JobStatus | str
    pending_reason: str | None = None
    never_runs: bool = False


PBSPRO_STATES: dict[str, StateEntry] = {
    "B": StateEntry(
        JobStatus.RUNNING
    ),  # array job begun: at least one subjob started (parents are skipped)
    "E": StateEntry(JobStatus.RUNNING),  # exiting after having run (epilogue, output staging)
    "F": StateEntry(FINISHED),  # finished (qstat -x history): Exit_status / substate decide
    "H": StateEntry(
        JobStatus.QUEUED, "Held"
    ),  # held: dependency (system hold) or user/operator hold
    "M": StateEntry(
        JobStatus.QUEUED, "Moved", True
    ),  # moved to another server (history): out of our sight
    "Q": StateEntry(JobStatus.QUEUED),  # queued, eligible to run
    "R": StateEntry(JobStatus.RUNNING),  # running
    "S": StateEntry(
        JobStatus.RUNNING, "Suspended"
    ),  # suspended by the server/admin (e.g. preemption)
    "T": StateEntry(JobStatus.QUEUED, "Transit"),  # being moved to a new location
    "U": StateEntry(
        JobStatus.RUNNING, "Suspended"
    ),  # suspended: workstation busy (cycle harvesting)
    "W": StateEntry(
        JobStatus.QUEUED, "Waiting"
    ),  # waiting for its execution time (-a) or a stage-in retry
    "X": StateEntry(FINISHED),  # subjob finished or deleted: Exit_status / substate decide
}

TORQUE_STATES: dict[str, StateEntry] = {
    "C": StateEntry(
        FINISHED
    ),  # completed, any outcome (kept keep_completed seconds): exit_status decides
    "E": StateEntry(JobStatus.RUNNING),  # exiting after having run
    "H": StateEntry(JobStatus.QUEUED, "Held"),  # held (dependency or hold)
    "Q": StateEntry(JobStatus.QUEUED),  # queued, eligible to run
    "R": StateEntry(JobStatus.RUNNING),  # running
    "T": StateEntry(JobStatus.QUEUED, "Transit"),  # being moved to a new location
    "W": StateEntry(JobStatus.QUEUED, "Waiting"),  # waiting for its execution time
    "S": StateEntry(JobStatus.RUNNING, "Suspended"),  # suspended
}

SLURM_TORQUE_STATES: dict[str, StateEntry] = {
    # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED, BOOT_FAIL: no exit status is
    # shown, so the outcome is unknown here; the job's own exit record must decide.
    "C": StateEntry(FINISHED),
    "R": StateEntry(JobStatus.RUNNING),  # RUNNING (a COMPLETING job keeps its base state)
    # PENDING, whatever the reason (resources, dependency, DependencyNeverSatisfied, held):
    # the wrapper hides the reason, so never_runs cannot be told from here.
    "Q": StateEntry(JobStatus.QUEUED),
    "S": StateEntry(JobStatus.RUNNING, "Suspended"),  # SUSPENDED
    # Any other base state: DEADLINE or OUT_OF_MEMORY (both final in SLURM 22.05).
    "U": StateEntry(JobStatus.FAILED),
}


# --------------------------------------------------------------------------------------------
# Exit status tables
# --------------------------------------------------------------------------------------------


class ExitEntry(NamedTuple):
    status: JobStatus
    reason: Reason
    meaning: str


# JOB_EXEC_* codes -1..-7, the same in PBS Pro/OpenPBS and Torque (their common OpenPBS root).
_JOB_EXEC_COMMON: dict[int, ExitEntry] = {
    -1: ExitEntry(
        JobStatus.FAILED,
        Reason.SCHEDULER_ERROR,
        "JOB_EXEC_FAIL1: exec failed before files, no retry",
    ),
    -2: ExitEntry(
        JobStatus.FAILED,
        Reason.SCHEDULER_ERROR,
        "JOB_EXEC_FAIL2: exec failed after files, no retry",
    ),
    -3: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_RETRY: exec failed on the node, retried"
    ),
    -4: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_INITABT: aborted when MOM restarted"
    ),
    -5: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_INITRST: aborted on MOM restart, checkpointed"
    ),
    -6: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_INITRMG: aborted on MOM restart, may migrate"
    ),
    -7: ExitEntry(
        JobStatus.FAILED,
        Reason.SCHEDULER_ERROR,
        "JOB_EXEC_BADRESRT: restart from checkpoint failed",
    ),
}

PBSPRO_NEGATIVE_EXIT: dict[int, ExitEntry] = {
    # JOB_EXEC_* codes set by MOM (OpenPBS src/include/job.h); the script never ran to its end.
    **_JOB_EXEC_COMMON,  # the codes both inherit
    -10: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_FAILUID: invalid uid/gid for the job"
    ),
    -11: ExitEntry(JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_RERUN: job rerun (node trouble)"),
    -12: ExitEntry(JobStatus.FAILED, Reason.PREEMPTED, "JOB_EXEC_CHKP: checkpointed and killed"),
    -13: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_FAIL_PASSWORD: bad password"
    ),
    -14: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_RERUN_SIS_FAIL: a sister node failed, rerun"
    ),
    -15: ExitEntry(
        JobStatus.FAILED, Reason.PREEMPTED, "JOB_EXEC_QUERST: requeued to restart from checkpoint"
    ),
    -16: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_FAILHOOK_RERUN: hook rejected, requeued"
    ),
    -17: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_FAILHOOK_DELETE: hook rejected, deleted"
    ),
    -18: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_HOOK_RERUN: a hook requeued the job"
    ),
    -19: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_HOOK_DELETE: a hook deleted the job"
    ),
    -20: ExitEntry(
        JobStatus.FAILED,
        Reason.NODE_FAIL,
        "JOB_EXEC_RERUN_MS_FAIL: mother superior connection lost",
    ),
    -21: ExitEntry(
        JobStatus.FAILED,
        Reason.SCHEDULER_ERROR,
        "JOB_EXEC_FAIL_SECURITY: security breach in PBS dir",
    ),
    -22: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_HOOKERROR: hook exception or timeout"
    ),
    -23: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_FAIL_KRB5: no kerberos credentials"
    ),
    # OpenPBS 22.05+: resource-limit kills get their own codes (comment "... exceeded resource X").
    -24: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_KILL_NCPUS_BURST: ncpus burst exceeded"
    ),
    -25: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_KILL_NCPUS_SUM: ncpus sum exceeded"
    ),
    -26: ExitEntry(JobStatus.FAILED, Reason.OOM, "JOB_EXEC_KILL_VMEM: vmem limit exceeded"),
    -27: ExitEntry(JobStatus.FAILED, Reason.OOM, "JOB_EXEC_KILL_MEM: mem limit exceeded"),
    -28: ExitEntry(JobStatus.FAILED, Reason.TIMEOUT, "JOB_EXEC_KILL_CPUT: cput limit exceeded"),
    -29: ExitEntry(
        JobStatus.FAILED, Reason.TIMEOUT, "JOB_EXEC_KILL_WALLTIME: walltime limit exceeded"
    ),
    -30: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_JOINJOB: sister nodes failed to join"
    ),
}

TORQUE_NEGATIVE_EXIT: dict[int, ExitEntry] = {
    # Torque's JOB_EXEC_* codes (4.2+).
    **_JOB_EXEC_COMMON,  # the codes both inherit
    -8: ExitEntry(
        JobStatus.FAILED,
        Reason.SCHEDULER_ERROR,
        "JOB_EXEC_CMDFAIL: exec() of the job command failed",
    ),
    -9: ExitEntry(
        JobStatus.FAILED, Reason.SCHEDULER_ERROR, "JOB_EXEC_STDOUTFAIL: cannot create stdout/stderr"
    ),
    -10: ExitEntry(JobStatus.FAILED, Reason.OOM, "JOB_EXEC_OVERLIMIT_MEM: over its memory limit"),
    -11: ExitEntry(
        JobStatus.FAILED, Reason.TIMEOUT, "JOB_EXEC_OVERLIMIT_WT: over its walltime limit"
    ),
    -12: ExitEntry(
        JobStatus.FAILED, Reason.TIMEOUT, "JOB_EXEC_OVERLIMIT_CPUT: over its cput limit"
    ),
    -13: ExitEntry(
        JobStatus.FAILED, Reason.NODE_FAIL, "JOB_EXEC_RETRY_CGROUP: cgroup setup failed, retried"
    ),
}


class Outcome(NamedTuple):
    status: JobStatus
    reason: Reason | None
    exit_code: int | None
    signal: int | None


_SIGKILL, _SIGTERM = 9, 15


def exit_status_outcome(
    exit_status: int,
    negative_table: Mapping[int, ExitEntry],
    *,
    walltime_exceeded: bool = False,
    memory_exceeded: bool = False,
) -> Outcome:
    """What a PBS ``Exit_status`` means.

    ``0`` completed; ``1..128`` the script's own code; ``129..255`` 128+n, its last command died
    of signal n; ``256`` and up: PBS killed the job shell with signal ``Exit_status - 256``
    (271 = SIGTERM, the classic walltime kill); negative: the dialect's ``JOB_EXEC_*`` table.
    A kill by SIGTERM/SIGKILL is a timeout (or oom) when the caller found evidence for it.
    """
    if exit_status == 0:
        return Outcome(JobStatus.COMPLETED, None, 0, None)
    if exit_status < 0:
        entry = negative_table.get(exit_status)
        if entry is None:
            log.warning(
                "PBS: unknown negative Exit_status %d, taken as a scheduler error", exit_status
            )
            return Outcome(JobStatus.FAILED, Reason.SCHEDULER_ERROR, exit_status, None)
        return Outcome(entry.status, entry.reason, exit_status, None)
    if exit_status <= 128:
        return Outcome(JobStatus.FAILED, Reason.EXIT_CODE, exit_status, None)
    signal = exit_status - 128 if exit_status < 256 else exit_status - 256
    if signal in (_SIGKILL, _SIGTERM):
        if walltime_exceeded:
            return Outcome(JobStatus.FAILED, Reason.TIMEOUT, exit_status, signal)
        if memory_exceeded:
            return Outcome(JobStatus.FAILED, Reason.OOM, exit_status, signal)
    return Outcome(JobStatus.FAILED, Reason.SIGNAL, exit_status, signal or None)


# --------------------------------------------------------------------------------------------
# Error classification: one literal table
# --------------------------------------------------------------------------------------------


class ErrorRule(NamedTuple):
    """``needle`` (lower case) found in stdout+stderr, or an empty output with ``returncode``."""

    needle: str | None
    kind: ErrorKind
    command: str | None = None  # only for this command (qsub / qstat / qdel), None: any
    returncode: int | None = None  # with needle None: silent failure with this exit code


ERROR_RULES: tuple[ErrorRule, ...] = (
    # qsub -W depend on an id the server does not know: the request can never succeed.
    ErrorRule("unknown job id", ErrorKind.INVALID, command="qsub"),
    # qstat/qdel: the id is not known any more (purged, history off, server restarted).
    ErrorRule("unknown job id", ErrorKind.UNKNOWN_JOB),
    # PBS Pro without -x: the job finished and history is off (exit 35); the exit record decides.
    ErrorRule("job has finished", ErrorKind.UNKNOWN_JOB),
    # Torque qdel on a completed job.
    ErrorRule("invalid state for job - complete", ErrorKind.UNKNOWN_JOB),
    # SLURM's own message when the wrappers pass an unknown id through.
    ErrorRule("invalid job id specified", ErrorKind.UNKNOWN_JOB),
    # PBS Pro qdel on a job that is exiting: it will be gone shortly, ask again.
    ErrorRule("request invalid for state of job", ErrorKind.TRANSIENT),
    # qsub -q with a queue the server does not have.
    ErrorRule("unknown queue", ErrorKind.INVALID),
    # PBS Pro: more resources than the queue/server allow for one job.
    ErrorRule("violates queue and/or server resource limits", ErrorKind.INVALID),
    ErrorRule("exceeds queue and/or server resource limits", ErrorKind.INVALID),
    # A resource name or value the server does not know.
    ErrorRule("unknown resource", ErrorKind.INVALID),
    ErrorRule("illegal attribute or resource value", ErrorKind.INVALID),
    # Routing queue found no destination that accepts the job.
    ErrorRule("job rejected by all possible destinations", ErrorKind.INVALID),
    # Not allowed to submit/run as this user or account.
    ErrorRule("bad uid for job execution", ErrorKind.INVALID),
    ErrorRule("unauthorized request", ErrorKind.INVALID),
    # Queue full for this user or at all: the site refuses now, may accept later.
    ErrorRule("maximum number of jobs already in queue", ErrorKind.POLICY),
    ErrorRule("would exceed", ErrorKind.POLICY),  # "... queue workq's per-user limit"
    ErrorRule("queue is not enabled", ErrorKind.POLICY),
    # The server cannot be reached or answered garbage: try again later.
    ErrorRule("connection refused", ErrorKind.TRANSIENT),
    ErrorRule("cannot connect to", ErrorKind.TRANSIENT),  # "... server", "... default server host"
    ErrorRule("end of file", ErrorKind.TRANSIENT),
    ErrorRule("pbs_iff: cannot read reply", ErrorKind.TRANSIENT),
    ErrorRule("communication failure", ErrorKind.TRANSIENT),
    ErrorRule("premature end of message", ErrorKind.TRANSIENT),
    ErrorRule("connection timed out", ErrorKind.TRANSIENT),
    # SLURM wrappers: the sbatch/slurmctld text is embedded in qsub's stdout.
    ErrorRule("socket timed out", ErrorKind.TRANSIENT),
    ErrorRule("unable to contact slurm controller", ErrorKind.TRANSIENT),
    ErrorRule("temporarily unable to accept job", ErrorKind.TRANSIENT),
    ErrorRule("job creation temporarily disabled", ErrorKind.TRANSIENT),
    ErrorRule("problem loading jobs", ErrorKind.TRANSIENT),  # wrapper qstat: controller unreachable
    ErrorRule("job violates accounting/qos policy", ErrorKind.POLICY),
    ErrorRule("invalid partition", ErrorKind.INVALID),
    ErrorRule("invalid account", ErrorKind.INVALID),
    ErrorRule("invalid qos", ErrorKind.INVALID),
    ErrorRule("requested node configuration is not available", ErrorKind.INVALID),
    ErrorRule("invalid job array specification", ErrorKind.INVALID),
    ErrorRule("job dependency problem", ErrorKind.INVALID),
    ErrorRule("invalid generic resource", ErrorKind.INVALID),
    ErrorRule("memory specification can not be satisfied", ErrorKind.INVALID),
    ErrorRule("invalid time limit", ErrorKind.INVALID),  # wrapper qsub -l walltime=abc (exit 255)
    ErrorRule("does not look like a batch script", ErrorKind.INVALID),  # script without #!
    ErrorRule("unknown option", ErrorKind.INVALID),  # wrapper qstat -x/-t/-F (exit 2)
    # Silent failures: qstat on unknown/purged ids prints nothing and exits 153 (PBS and the
    # wrappers); PBS Pro qstat exits 35 for a finished job; wrapper qdel exits 1 silently on a
    # finished or unknown id.
    ErrorRule(None, ErrorKind.UNKNOWN_JOB, command="qstat", returncode=153),
    ErrorRule(None, ErrorKind.UNKNOWN_JOB, command="qstat", returncode=35),
    ErrorRule(None, ErrorKind.UNKNOWN_JOB, command="qdel", returncode=1),
)


def _command_name(argv: Sequence[str]) -> str:
    return argv[0].rsplit("/", 1)[-1] if argv else ""


def classify_error(argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> ErrorKind:
    """ErrorKind of a failed qsub/qstat/qdel, by the first matching rule of ERROR_RULES."""
    command = _command_name(argv)
    text = f"{stdout}\n{stderr}".lower()
    silent = not text.strip()
    for rule in ERROR_RULES:
        if rule.command is not None and rule.command != command:
            continue
        if rule.needle is not None:
            if rule.needle in text:
                return rule.kind
        elif silent and rule.returncode == returncode:
            return rule.kind
    if command == "qstat" and returncode in (35, 153):
        # exit codes PBS uses for "finished" / "unknown id" even with an odd message
        return ErrorKind.UNKNOWN_JOB
    return ErrorKind.OTHER


# --------------------------------------------------------------------------------------------
# qstat output: text form and JSON
# --------------------------------------------------------------------------------------------

Record = tuple[str, dict[str, str]]

_JOB_ID_LINE = re.compile(r"^Job Id:\s*(\S+)\s*$")
_ATTR_LINE = re.compile(r"^(?P<indent>    |\t)(?P<key>[A-Za-z_][\w.\-]*) = ?(?P<value>.*)$")


def parse_qstat_text(text: str) -> list[Record]:
    """``qstat -f`` text into ``(job id, {attribute: value})`` records, in order.

    PBS Pro and Torque indent attributes by four spaces and fold long values at ~78 columns
    onto continuation lines that start with a tab: those are joined back without separator.
    The SLURM wrappers indent attributes with a tab and never fold.
    """
    records: list[Record] = []
    attrs: dict[str, str] | None = None
    indent: str | None = None
    last_key: str | None = None
    for raw_line in text.splitlines():
        line = raw_line.rstrip("\r")
        match = _JOB_ID_LINE.match(line)
        if match:
            attrs = {}
            records.append((match.group(1), attrs))
            indent, last_key = None, None
            continue
        if attrs is None or not line.strip():
            continue
        attr = _ATTR_LINE.match(line)
        if attr and indent is None:
            indent = attr.group("indent")
        if attr and attr.group("indent") == indent:
            last_key = attr.group("key")
            attrs[last_key] = attr.group("value").rstrip()
        elif line.startswith("\t") and last_key is not None:
            attrs[last_key] += line[1:].rstrip("\n")
        else:
            log.warning("PBS: unreadable qstat line ignored: %r", line[:120])
    return records


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list):
        out[prefix] = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        out[prefix] = "True" if value else "False"
    else:
        out[prefix] = str(value)


_VARIABLE_LIST_START = re.compile(r'^(?P<indent>[ \t]*)"Variable_List"\s*:\s*\{')
_CLOSING_LINE = re.compile(r"^(?P<indent>[ \t]*)\}\s*(?P<comma>,?)\s*$")
_SIBLING_KEY = re.compile(r'^(?P<indent>[ \t]*)"[^"]+"\s*:')
_LEADING_ZERO_NUMBER = re.compile(r"(:[ \t]*)(-?0\d+(?:\.\d+)?)([ \t]*(?:,|\}|$))", re.MULTILINE)
_BACKSLASH = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _drop_variable_lists(text: str) -> str:
    """Remove each job's ``Variable_List`` object (where raw env values break the JSON).

    The block ends at the first line indented like its key that closes it (``}``/``},``) or
    starts a sibling key; values of BASH_FUNC_* with raw newlines rarely sit at that indent.
    """
    lines = text.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        start = _VARIABLE_LIST_START.match(lines[i])
        if not start:
            kept.append(lines[i])
            i += 1
            continue
        indent = start.group("indent")
        if lines[i].rstrip().endswith("}") or lines[i].rstrip().endswith("},"):
            i += 1  # a one-line object
            continue
        j = i + 1
        end = None
        while j < len(lines):
            closing = _CLOSING_LINE.match(lines[j])
            if closing and closing.group("indent") == indent:
                end = j + 1
                break
            sibling = _SIBLING_KEY.match(lines[j])
            if sibling and sibling.group("indent") == indent:
                end = j
                break
            j += 1
        if end is None:
            kept.append(lines[i])  # cannot see the end: leave it for the error to surface
            i += 1
            continue
        i = end
    repaired = "\n".join(kept)
    # Variable_List may have been the last attribute: drop the comma that now dangles.
    return re.sub(r",(\s*\})", r"\1", repaired)


def _fix_backslash(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped in ('"', "\\", "/", "b", "f", "n", "r", "t") or (
        len(escaped) == 5 and escaped[0] == "u"
    ):
        return match.group(0)
    return "\\\\" + escaped


def _repair_json(text: str) -> str:
    repaired = _drop_variable_lists(text)
    repaired = _LEADING_ZERO_NUMBER.sub(r'\1"\2"\3', repaired)
    return _BACKSLASH.sub(_fix_backslash, repaired)


def parse_qstat_json(text: str) -> list[Record]:
    """``qstat -f -F json`` into records; repairs the known breakage or raises PbsJsonError.

    Known breakage: env values printed as bare numbers (``005``), unescaped ``BASH_FUNC_*``
    values (raw newlines and quotes) and bad backslash escapes. The repair drops
    ``Variable_List`` (housekeeper never reads it), quotes numbers with leading zeros and
    doubles stray backslashes.
    """
    try:
        document = json.loads(text, strict=False)
    except ValueError as first_error:
        try:
            document = json.loads(_repair_json(text), strict=False)
        except ValueError as second_error:
            raise PbsJsonError(
                f"qstat -F json output is not valid JSON ({first_error}); after repair: "
                f"{second_error}; rerun without -F json"
            ) from second_error
        log.info("PBS: qstat JSON was invalid (%s); read it after repair", first_error)
    if not isinstance(document, dict):
        raise PbsJsonError("qstat -F json output is not a JSON object")
    jobs = document.get("Jobs") or {}
    if not isinstance(jobs, dict):
        raise PbsJsonError("qstat -F json: 'Jobs' is not an object")
    records: list[Record] = []
    for job_id, body in jobs.items():
        attrs: dict[str, str] = {}
        if isinstance(body, dict):
            _flatten("", body, attrs)
        records.append((str(job_id), attrs))
    return records


# --------------------------------------------------------------------------------------------
# Records to the status frame
# --------------------------------------------------------------------------------------------


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        try:
            return int(float(text.strip()))
        except ValueError:
            return None


def _first_host(exec_host: str | None) -> str | None:
    if not exec_host:
        return None
    host = exec_host.split("+", 1)[0].split("/", 1)[0].strip()
    return host or None


_WALLTIME_WORDS = re.compile(r"walltime", re.IGNORECASE)
_KILL_WORDS = re.compile(r"exceed|killed|limit", re.IGNORECASE)
_MEM_KILL = re.compile(r"exceeded resource v?mem|\bv?mem\b[^,;]*exceeded limit", re.IGNORECASE)
_DEPENDENCY_WORDS = re.compile(r"depend", re.IGNORECASE)


class _Fields(NamedTuple):
    exit_status: str
    started: str
    ended: str


_PBSPRO_FIELDS = _Fields(exit_status="Exit_status", started="stime", ended="obittime")
_TORQUE_FIELDS = _Fields(exit_status="exit_status", started="start_time", ended="comp_time")
# The wrappers print SLURM's start time as mtime and its end time as ctime (the expected end
# while running, so ctime is only read for finished jobs).
_WRAPPER_FIELDS = _Fields(exit_status="exit_status", started="mtime", ended="ctime")


def _walltime_exceeded(attrs: Mapping[str, str]) -> bool:
    comment = attrs.get("comment", "")
    if _WALLTIME_WORDS.search(comment) and _KILL_WORDS.search(comment):
        return True
    used = parse_duration(attrs.get("resources_used.walltime"))
    limit = parse_duration(attrs.get("Resource_List.walltime"))
    return used is not None and limit is not None and limit > 0 and used >= limit


def _memory_exceeded(attrs: Mapping[str, str]) -> bool:
    if _MEM_KILL.search(attrs.get("comment", "")):
        return True
    used = parse_size_mb(attrs.get("resources_used.mem"))
    limit = parse_size_mb(attrs.get("Resource_List.mem"))
    return used is not None and limit is not None and limit > 0 and used >= limit


class _RowBuilder:
    """Turns one qstat record into one STATUS_SCHEMA row for a given dialect."""

    def __init__(
        self,
        states: Mapping[str, StateEntry],
        negative_exit: Mapping[int, ExitEntry],
        fields: _Fields,
        *,
        wrapper: bool = False,
    ) -> None:
        self.states = states
        self.negative_exit = negative_exit
        self.fields = fields
        self.wrapper = wrapper

    def row(self, job_id: str, attrs: Mapping[str, str]) -> dict[str, Any]:
        native = attrs.get("job_state", "").strip()
        entry = self.states.get(native)
        started = parse_ctime(attrs.get(self.fields.started))
        ended = None
        status: str | None = None
        reason: str | None = None
        exit_code: int | None = None
        signal: int | None = None
        pending_reason: str | None = None
        never_runs = False
        if entry is None:
            log.warning("PBS: job %s has unknown state %r; status left unknown", job_id, native)
        elif entry.status == FINISHED:
            ended = parse_ctime(attrs.get(self.fields.ended))
            outcome = self._finished(attrs, started)
            status = outcome.status.value
            reason = outcome.reason.value if outcome.reason else None
            exit_code, signal = outcome.exit_code, outcome.signal
        else:
            assert isinstance(entry.status, JobStatus)  # table invariant, not input validation
            status = entry.status.value
            pending_reason, never_runs = self._pending(entry, attrs)
            if entry.status is JobStatus.FAILED:  # wrapper "U": DEADLINE or OUT_OF_MEMORY
                reason = Reason.SCHEDULER_ERROR.value
            if status == JobStatus.QUEUED.value:
                started = None
        elapsed = parse_duration(attrs.get("resources_used.walltime"))
        if elapsed is None and self.wrapper and started is not None and ended is not None:
            elapsed = max(0.0, ended - started)
        return {
            "scheduler_id": job_id,
            "native_state": native or None,
            "status": status,
            "reason": reason,
            "exit_code": exit_code,
            "signal": signal,
            "pending_reason": pending_reason,
            "never_runs": never_runs,
            "node": _first_host(attrs.get("exec_host")),
            "started_at": started,
            "ended_at": ended,
            "elapsed_s": elapsed,
            "cpu_time_s": parse_duration(attrs.get("resources_used.cput")),
            "max_rss_mb": parse_size_mb(attrs.get("resources_used.mem")),
        }

    def _pending(self, entry: StateEntry, attrs: Mapping[str, str]) -> tuple[str | None, bool]:
        comment = attrs.get("comment", "")
        if entry.pending_reason == "Held":
            if attrs.get("depend"):
                return "Dependency", False
            return "Held", True  # a user/operator/system hold needs someone to release it
        if entry.status is JobStatus.QUEUED and comment:
            # PBS Pro scheduler comments: "Not Running: ...", "Can Never Run: ..."
            return comment, comment.lower().startswith("can never run") or entry.never_runs
        return entry.pending_reason, entry.never_runs

    def _finished(self, attrs: Mapping[str, str], started: float | None) -> Outcome:
        comment = attrs.get("comment", "")
        exit_status = _int_or_none(attrs.get(self.fields.exit_status))
        substate = _int_or_none(attrs.get("substate"))
        if exit_status is None:
            if self.wrapper:
                return self._wrapper_finished(attrs, started)
            # Deleted before it ran (no exit status): by its owner, or by the server because a
            # dependency can never be satisfied (PBS Pro and Torque delete such dependents).
            if _DEPENDENCY_WORDS.search(comment):
                return Outcome(JobStatus.CANCELLED, Reason.DEPENDENCY_NEVER_SATISFIED, None, None)
            return Outcome(JobStatus.CANCELLED, Reason.CANCELLED_BY_USER, None, None)
        outcome = exit_status_outcome(
            exit_status,
            self.negative_exit,
            walltime_exceeded=_walltime_exceeded(attrs),
            memory_exceeded=_memory_exceeded(attrs),
        )
        if substate == 91 and outcome.reason is Reason.SIGNAL:
            # PBS Pro substate 91 = terminated (qdel of a running job: SIGTERM, Exit_status 271)
            return Outcome(
                JobStatus.CANCELLED, Reason.CANCELLED_BY_USER, outcome.exit_code, outcome.signal
            )
        return outcome

    def _wrapper_finished(self, attrs: Mapping[str, str], started: float | None) -> Outcome:
        """Wrapper ``C``: SLURM's outcome is hidden. A job that never got a node was cancelled;
        a run that reached its time limit is a TIMEOUT; otherwise COMPLETED with exit_code
        null: the scheduler does not know, the job's exit record must confirm exit 0."""
        if not attrs.get("exec_host"):
            # never got a node: cancelled while pending (SLURM then sets start = end)
            return Outcome(JobStatus.CANCELLED, Reason.CANCELLED_BY_USER, None, None)
        ended = parse_ctime(attrs.get(self.fields.ended))
        limit = parse_duration(attrs.get("Resource_List.walltime"))
        if started is not None and ended is not None and limit and ended - started >= limit:
            return Outcome(JobStatus.FAILED, Reason.TIMEOUT, None, None)
        return Outcome(JobStatus.COMPLETED, None, None, None)


def _frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    rows = list(rows)
    if not rows:
        return empty_status_frame()
    return pl.DataFrame(
        {col: [r[col] for r in rows] for col in STATUS_SCHEMA}, schema=STATUS_SCHEMA
    )


def _is_array_parent(job_id: str) -> bool:
    return "[]" in job_id


def _index_range(spec: str) -> list[int] | None:
    """``0-3%2``, ``0-9:2``, ``1,4,7-8`` to the indices; None when unreadable or empty."""
    spec = spec.split("%", 1)[0].strip()
    indices: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match:
            return None
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        step = int(match.group(3)) if match.group(3) else 1
        indices += range(first, last + 1, max(1, step))
    return indices or None


# --------------------------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------------------------

_SUBMIT_ID = re.compile(r"^\d+(?:\[\])?(?:\.[A-Za-z0-9_.\-]+)?$")
_TASK_ID = re.compile(r"^(?P<seq>\d+)\[(?P<index>\d+)\](?P<server>\..*)?$")


def _parent_id(scheduler_id: str) -> str:
    """``1234[7].server`` -> ``1234[].server``; other ids unchanged."""
    match = _TASK_ID.match(scheduler_id)
    if not match:
        return scheduler_id
    return f"{match.group('seq')}[]{match.group('server') or ''}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# Dialects
# --------------------------------------------------------------------------------------------

_DEPENDENCY_KINDS = ("afterok", "afternotok", "afterany")


class _PbsDialect:
    """What PBS Pro, Torque and the SLURM wrappers share."""

    name = "pbs"
    dialect = ""
    native_dependencies = True
    max_name_length = 15
    wrapper = False

    def __init__(self, *, max_name_length: int | None = None) -> None:
        if max_name_length is not None:
            self.max_name_length = max_name_length

    # -- submission ---------------------------------------------------------------------

    def _options(self, req: SubmitRequest) -> list[tuple[str, str]]:
        raise NotImplementedError

    def directives(self, req: SubmitRequest) -> list[str]:
        """``#PBS`` header lines describing the request (the same options as submit_argv)."""
        lines = [f"#PBS {flag} {value}" for flag, value in self._options(req)]
        if req.extra_args:
            lines.append("#PBS " + " ".join(req.extra_args))
        return lines

    def submit_argv(self, req: SubmitRequest) -> list[str]:
        """``qsub <options> <script>``: every option on the command line as well as in the
        header, so that the SLURM wrappers (which never read ``#PBS`` lines) see them too."""
        argv = ["qsub"]
        for flag, value in self._options(req):
            argv += [flag, value]
        argv += list(req.extra_args)
        argv.append(req.script_path)
        return argv

    def parse_submit(self, stdout: str) -> str:
        """The id qsub printed (last non-empty line), kept exactly as qstat spells it."""
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if not lines or not _SUBMIT_ID.match(lines[-1]):
            raise ValueError(f"qsub printed no job id: {stdout.strip()[:200]!r}")
        return lines[-1]

    def task_ids(self, base_id: str, array_size: int) -> list[str]:
        """``1234[].server`` -> ``1234[0].server`` ... (the index goes inside the brackets)."""
        seq, _, server = base_id.partition(".")
        seq = seq.removesuffix("[]")
        suffix = f".{server}" if server else ""
        return [f"{seq}[{index}]{suffix}" for index in range(array_size)]

    def _name(self, req: SubmitRequest) -> str:
        return pbs_job_name(req.name, self.max_name_length)

    def _common_tail(self, req: SubmitRequest) -> list[tuple[str, str]]:
        options: list[tuple[str, str]] = []
        if req.resources.queue:
            options.append(("-q", req.resources.queue))
        if req.resources.account:
            options.append(("-A", req.resources.account))
        return options

    def _depend(self, req: SubmitRequest) -> list[tuple[str, str]]:
        clauses = []
        for kind in _DEPENDENCY_KINDS:
            ids = _unique(i for k, group in req.dependencies if k == kind for i in group)
            clauses += self._depend_clauses(kind, ids)
        unknown = {k for k, _ in req.dependencies} - set(_DEPENDENCY_KINDS)
        if unknown:
            raise ValueError(f"dependencies: unknown kind(s) {sorted(unknown)}")
        return [("-W", "depend=" + ",".join(clauses))] if clauses else []

    def _depend_clauses(self, kind: str, ids: list[str]) -> list[str]:
        return [kind + "".join(f":{i}" for i in ids)] if ids else []

    def can_depend_on(self, scheduler_id: str) -> bool:
        """Whether a native dependency on this job (or array task) can be expressed."""
        return True

    def _comment(self, req: SubmitRequest) -> list[tuple[str, str]]:
        if not req.comment:
            return []
        tag = re.sub(r"[^A-Za-z0-9_.:@/+-]", "_", req.comment)
        return [("-v", f"HK_COMMENT={tag}")]

    # -- status -------------------------------------------------------------------------

    def _builder(self) -> _RowBuilder:
        raise NotImplementedError

    def parse_status_text(self, text: str) -> pl.DataFrame:
        """Rows from ``qstat -f`` text; array parents (``1234[]``) are left out."""
        builder = self._builder()
        return _frame(
            builder.row(job_id, attrs)
            for job_id, attrs in parse_qstat_text(text)
            if not _is_array_parent(job_id)
        )

    def parse_status(self, text: str) -> pl.DataFrame:
        return self.parse_status_text(text)

    def parse_tagged(self, text: str, comment: str) -> list[str]:
        """Ids of the jobs a submission tagged ``comment`` created (``HK_COMMENT`` in their
        ``Variable_List``), from a qstat of every job: a single job's id, or an array's subjob
        ids in index order (from ``array_indices_submitted`` / ``job_array_request``, else from
        the subjobs listed). Reads JSON and text; raises PbsJsonError like parse_status."""
        tag = re.sub(r"[^A-Za-z0-9_.:@/+-]", "_", comment)
        records = (
            parse_qstat_json(text) if text.lstrip().startswith("{") else parse_qstat_text(text)
        )
        found: list[tuple[str, str]] = []  # (job id, array index spec or "")
        subjobs: dict[str, list[tuple[int, str]]] = {}
        for job_id, attrs in records:
            match = _TASK_ID.match(job_id)
            if match:
                subjobs.setdefault(_parent_id(job_id), []).append((int(match.group("index")), job_id))
                continue
            value = attrs.get("Variable_List.HK_COMMENT")
            if value is None:
                variables = re.search(r"(?:^|,)HK_COMMENT=([^,]*)", attrs.get("Variable_List", ""))
                value = variables.group(1) if variables else None
            if value is not None and value.strip() == tag:
                spec = attrs.get("array_indices_submitted") or attrs.get("job_array_request") or ""
                found.append((job_id, spec))
        ids: list[str] = []
        for job_id, spec in found:
            if not _is_array_parent(job_id):
                ids.append(job_id)
                continue
            indices = _index_range(spec)
            if indices is not None:
                seq, _, server = job_id.partition("[]")
                ids += [f"{seq}[{index}]{server}" for index in indices]
            else:
                ids += [i for _, i in sorted(subjobs.get(job_id, []))]
        return ids

    def accounting_argv(self, scheduler_ids: Sequence[str]) -> list[str] | None:
        """None: PBS has no accounting query a user can run; history comes from qstat."""
        return None

    def parse_accounting(self, text: str) -> pl.DataFrame:
        return self.parse_status(text)

    def cancel_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """One ``qdel`` with every id."""
        return ["qdel", *_unique(scheduler_ids)]

    def classify_error(
        self, argv: Sequence[str], returncode: int, stdout: str, stderr: str
    ) -> ErrorKind:
        return classify_error(argv, returncode, stdout, stderr)


class PbsProDialect(_PbsDialect):
    """PBS Professional / OpenPBS."""

    dialect = "pbspro"
    max_name_length = 236

    def _options(self, req: SubmitRequest) -> list[tuple[str, str]]:
        res = req.resources
        chunk = f"select={res.nodes}:ncpus={res.cpus}"
        if res.memory_mb is not None:
            chunk += f":mem={res.memory_mb}mb"  # per chunk = per node, like sbatch --mem
        if res.gpus:
            chunk += f":ngpus={res.gpus}"
        options = [("-N", self._name(req)), ("-l", chunk)]
        if res.nodes > 1:
            options.append(("-l", "place=scatter"))  # one chunk per node, as SLURM's -N
        if res.walltime_s is not None:
            options.append(("-l", f"walltime={format_walltime(res.walltime_s)}"))
        options += self._common_tail(req)
        if req.array_size is not None:
            if req.array_size < 2:
                raise ValueError(
                    f"array_size={req.array_size}: PBS Pro arrays need at least two subjobs; "
                    "submit a single job instead"
                )
            spec = f"0-{req.array_size - 1}"
            if req.max_running:
                spec += f"%{req.max_running}"  # max_run_subjobs (PBS Pro 2020.1 / OpenPBS 20+)
            options.append(("-J", spec))
            if req.spool_dir:
                base = req.spool_dir.rstrip("/")
                options.append(("-o", f"{base}/task.^array_index^.out"))
                options.append(("-e", f"{base}/task.^array_index^.err"))
        else:
            if req.stdout_path:
                options.append(("-o", req.stdout_path))
            if req.stderr_path:
                options.append(("-e", req.stderr_path))
        options += self._depend(req)
        options += self._comment(req)
        return options

    def can_depend_on(self, scheduler_id: str) -> bool:
        """PBS Pro cannot depend on one subjob (``1234[7].server``): such a dependant waits in
        housekeeper until its parent has ended."""
        return _TASK_ID.match(scheduler_id) is None

    def _depend_clauses(self, kind: str, ids: list[str]) -> list[str]:
        subjobs = [i for i in ids if _TASK_ID.match(i)]
        if subjobs:
            raise PbsUnsupportedError(
                f"dependencies: PBS Pro cannot depend on single subjobs ({subjobs[0]}); "
                "depend on the whole array (1234[].server) or wait for it in housekeeper"
            )
        return super()._depend_clauses(kind, ids)

    def task_ids(self, base_id: str, array_size: int) -> list[str]:
        return super().task_ids(base_id, array_size)

    def status_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """``qstat -f -F json -x -t <ids>``: subjobs are asked for through their array
        (``1234[].server`` with ``-t`` lists every subjob)."""
        return ["qstat", "-f", "-F", "json", "-x", "-t", *_unique(map(_parent_id, scheduler_ids))]

    def status_argv_text(self, scheduler_ids: Sequence[str]) -> list[str]:
        """The same query in text form, for when the JSON cannot be read (PbsJsonError)."""
        return ["qstat", "-f", "-x", "-t", *_unique(map(_parent_id, scheduler_ids))]

    def status_argv_all(self) -> list[str]:
        """Every job the server shows (no ids: for very many ids, or servers whose JSON with
        several ids is broken); the caller keeps the rows it knows."""
        return ["qstat", "-f", "-F", "json", "-x", "-t"]

    def _builder(self) -> _RowBuilder:
        return _RowBuilder(PBSPRO_STATES, PBSPRO_NEGATIVE_EXIT, _PBSPRO_FIELDS)

    def parse_status(self, text: str) -> pl.DataFrame:
        """Rows from ``qstat -f -F json`` or, if the text is not JSON, from ``qstat -f``.

        Raises PbsJsonError when the JSON stays unreadable after repair.
        """
        if not text.lstrip().startswith("{"):
            return self.parse_status_text(text)
        builder = self._builder()
        return _frame(
            builder.row(job_id, attrs)
            for job_id, attrs in parse_qstat_json(text)
            if not _is_array_parent(job_id)
        )


class TorqueDialect(_PbsDialect):
    """Torque (``dialect = "torque"``)."""

    dialect = "torque"
    max_name_length = 15

    def _nodes_spec(self, res: Resources) -> str:
        spec = f"nodes={res.nodes}:ppn={res.cpus}"
        if res.gpus:
            spec += f":gpus={res.gpus}"
        return spec

    def _resource_options(self, res: Resources) -> list[tuple[str, str]]:
        options = [("-l", self._nodes_spec(res))]
        if res.memory_mb is not None:
            # Torque's mem is for the whole job: per-node request times nodes
            options.append(("-l", f"mem={res.memory_mb * res.nodes}mb"))
        if res.walltime_s is not None:
            options.append(("-l", f"walltime={format_walltime(res.walltime_s)}"))
        return options

    def _output_options(self, req: SubmitRequest) -> list[tuple[str, str]]:
        if req.array_size is not None:
            if not req.spool_dir:
                return []
            # A directory: Torque names each subjob's files <name>.o<seq>-<index> inside it.
            base = req.spool_dir.rstrip("/") + "/"
            return [("-o", base), ("-e", base)]
        options = []
        if req.stdout_path:
            options.append(("-o", req.stdout_path))
        if req.stderr_path:
            options.append(("-e", req.stderr_path))
        return options

    def _options(self, req: SubmitRequest) -> list[tuple[str, str]]:
        options = [("-N", self._name(req))]
        options += self._resource_options(req.resources)
        options += self._common_tail(req)
        if req.array_size is not None:
            if req.array_size < 1:
                raise ValueError(f"array_size={req.array_size}: must be >= 1")
            spec = f"0-{req.array_size - 1}"
            if req.max_running:
                spec += f"%{req.max_running}"
            options.append(("-t", spec))
        options += self._output_options(req)
        options += self._depend(req)
        options += self._comment(req)
        return options

    def _depend_clauses(self, kind: str, ids: list[str]) -> list[str]:
        # Torque needs the *array variants for whole arrays (afterokarray:21[].host).
        singles = [i for i in ids if not _is_array_parent(i)]
        arrays = [i for i in ids if _is_array_parent(i)]
        clauses = super()._depend_clauses(kind, singles)
        clauses += super()._depend_clauses(kind + "array", arrays)
        return clauses

    def status_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """``qstat -f -1 -t <ids>`` (``-1``: no folding; ``-t``: subjobs of ``189[].host``)."""
        return ["qstat", "-f", "-1", "-t", *_unique(map(_parent_id, scheduler_ids))]

    def status_argv_all(self) -> list[str]:
        return ["qstat", "-f", "-1", "-t"]

    def _builder(self) -> _RowBuilder:
        return _RowBuilder(TORQUE_STATES, TORQUE_NEGATIVE_EXIT, _TORQUE_FIELDS)


class SlurmTorqueDialect(TorqueDialect):
    """Debian's ``slurm-wlm-torque`` wrappers on SLURM (``dialect = "slurm-torque"``).

    Array tasks: ``task_ids("782", n)`` gives ``782[0]`` ... but the wrappers' qstat lists a
    task under its own raw SLURM job id (e.g. ``1676`` for ``1673_0``) and nothing in its
    output names the array or the index; the row of the array id itself is the still-pending
    remainder (``Q``), later the last task to start. The rows come back under the raw ids;
    mapping them to tasks needs the raw id each task records itself (SLURM_JOB_ID in its exit
    record). A ``782[7]`` id is translated to SLURM's ``782_7`` in dependencies, where SLURM
    accepts it; qdel cannot address one task (it would kill the whole array) and refuses.
    """

    dialect = "slurm-torque"
    wrapper = True
    max_name_length = 64

    def _resource_options(self, res: Resources) -> list[tuple[str, str]]:
        # The wrapper keeps only the last -l: everything in one list.
        parts = [self._nodes_spec(res)]
        if res.memory_mb is not None:
            parts.append(f"mem={res.memory_mb}mb")  # becomes sbatch --mem (per node)
        if res.walltime_s is not None:
            parts.append(f"walltime={format_walltime(res.walltime_s)}")
        return [("-l", ",".join(parts))]

    def _output_options(self, req: SubmitRequest) -> list[tuple[str, str]]:
        if req.array_size is not None:
            if not req.spool_dir:
                return []
            # Passed to sbatch as is: %A = array id, %a = task index.
            base = req.spool_dir.rstrip("/")
            return [("-o", f"{base}/task.%A_%a.out"), ("-e", f"{base}/task.%A_%a.err")]
        return super()._output_options(req)

    def _comment(self, req: SubmitRequest) -> list[tuple[str, str]]:
        return []  # any -v becomes --export=none,...: the job would lose its environment

    def _depend_clauses(self, kind: str, ids: list[str]) -> list[str]:
        slurm_ids = []
        for scheduler_id in ids:
            match = _TASK_ID.match(scheduler_id)
            slurm_ids.append(
                f"{match.group('seq')}_{match.group('index')}" if match else scheduler_id
            )
        return [kind + "".join(f":{i}" for i in slurm_ids)] if slurm_ids else []

    def submit_argv(self, req: SubmitRequest) -> list[str]:
        """As Torque's, but each value shell-quoted: the wrapper joins its arguments into one
        shell command line for sbatch."""
        argv = super().submit_argv(req)
        return argv[:1] + [shlex.quote(arg) for arg in argv[1:]]

    def task_ids(self, base_id: str, array_size: int) -> list[str]:
        return [f"{base_id}[{index}]" for index in range(array_size)]

    def status_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """``qstat -f <ids>``: no -t/-x/-1 there; ids match exactly; task ids are asked for
        through their array id (whose row is the pending remainder)."""
        return ["qstat", "-f", *_unique(map(_wrapper_parent, scheduler_ids))]

    def status_argv_all(self) -> list[str]:
        return ["qstat", "-f"]

    def cancel_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        tasks = [i for i in scheduler_ids if _TASK_ID.match(i)]
        if tasks:
            raise PbsUnsupportedError(
                f"cancel: the SLURM wrappers' qdel cannot cancel one array task ({tasks[0]}): "
                "it would kill the whole array; pass the task's raw SLURM id or the array id"
            )
        return super().cancel_argv(scheduler_ids)

    def task_cancel_argv(self, scheduler_ids: Sequence[str]) -> list[str]:
        """``scancel 1673_2 ...`` for array tasks. The wrappers' qdel cannot stop one task: it
        reads ``1673_2`` as the number 1673 (the whole array), fails silently (exit 1) on a
        task's raw id, and a task's raw id can be the array's own id (the last task to start)."""
        tasks = []
        for scheduler_id in _unique(scheduler_ids):
            match = _TASK_ID.match(scheduler_id)
            if not match:
                raise ValueError(f"not an array task id: {scheduler_id!r}")
            tasks.append(f"{match.group('seq')}_{match.group('index')}")
        return ["scancel", *tasks]

    def _builder(self) -> _RowBuilder:
        return _RowBuilder(SLURM_TORQUE_STATES, TORQUE_NEGATIVE_EXIT, _WRAPPER_FIELDS, wrapper=True)


def array_task(scheduler_id: str) -> tuple[str, int] | None:
    """``("1673", 2)`` for an array task id ``1673[2]`` (any dialect; the server suffix is
    dropped), None for any other id."""
    match = _TASK_ID.match(scheduler_id)
    return (match.group("seq"), int(match.group("index"))) if match else None


def _wrapper_parent(scheduler_id: str) -> str:
    match = _TASK_ID.match(scheduler_id)
    return match.group("seq") if match else scheduler_id


# --------------------------------------------------------------------------------------------
# Telling the dialects apart
# --------------------------------------------------------------------------------------------


def detect_argvs() -> dict[str, list[str]]:
    """Probe commands for detect_dialect; none of them submits or changes anything.

    ``qsub --sbatchline`` only exists in the SLURM wrappers, where it prints the sbatch
    command it would run and exits; PBS Pro and Torque refuse the option (usage, exit 2).
    """
    return {
        "qstat_version": ["qstat", "--version"],
        "pbsnodes_version": ["pbsnodes", "--version"],
        "qsub_sbatchline": ["qsub", "--sbatchline", "/dev/null"],
    }


def detect_dialect(version_outputs: dict[str, tuple[int, str, str]]) -> str:
    """``"pbspro"``, ``"torque"`` or ``"slurm-torque"`` from the (rc, stdout, stderr) of the
    probes of detect_argvs (missing probes are allowed). Raises ValueError if none tells."""

    def output(key: str) -> tuple[int | None, str]:
        if key not in version_outputs:
            return None, ""
        rc, stdout, stderr = version_outputs[key]
        return rc, f"{stdout}\n{stderr}".lower()

    rc, text = output("qsub_sbatchline")
    if rc == 0 and "sbatch" in text:
        return "slurm-torque"
    for key in ("qstat_version", "pbsnodes_version"):
        rc, text = output(key)
        if "pbs_version" in text:
            return "pbspro"  # "pbs_version = 22.05.11"
        if "torque" in text or re.search(r"^\s*version:\s*\d", text, re.MULTILINE):
            return "torque"  # "Version: 6.1.3" (and "Commit: ...")
    rc, text = output("qstat_version")
    if "unknown option: version" in text:
        return "slurm-torque"  # Perl Getopt::Long's message: the wrappers' qstat
    raise ValueError(f"cannot tell the PBS dialect from the probes: {sorted(version_outputs)}")


def dialect_for(name: str) -> _PbsDialect:
    """The dialect object for a detect_dialect answer."""
    dialects: dict[str, type[_PbsDialect]] = {
        "pbspro": PbsProDialect,
        "torque": TorqueDialect,
        "slurm-torque": SlurmTorqueDialect,
    }
    if name not in dialects:
        raise ValueError(f"dialect={name!r}: expected one of {sorted(dialects)}")
    return dialects[name]()


DIALECT_ENV = "HOUSEKEEPER_PBS_DIALECT"


def make_dialect(runner: Any, dialect: str | None = None) -> _PbsDialect:
    """The dialect named (``"pbspro"``, ``"torque"``, ``"slurm-torque"``), else the one named by
    the environment variable ``HOUSEKEEPER_PBS_DIALECT``, else the one the probes of
    detect_argvs find, run through ``runner`` (the module itself still does no I/O)."""
    if dialect is None:
        dialect = os.environ.get(DIALECT_ENV) or None
        if dialect is not None:
            log.info("PBS dialect %s set by %s", dialect, DIALECT_ENV)
    if dialect is not None:
        return dialect_for(dialect)
    outputs: dict[str, tuple[int, str, str]] = {}
    for key, argv in detect_argvs().items():
        try:
            result = runner.run(argv, retry_transient=False, ok_kinds=frozenset(ErrorKind))
        except (SchedulerError, OSError) as exc:  # a probe that cannot run at all tells nothing
            log.debug("PBS probe %s failed: %s", argv, exc)
            continue
        outputs[key] = (result.returncode, result.stdout, result.stderr)
    name = detect_dialect(outputs)
    log.info("PBS dialect detected: %s", name)
    return dialect_for(name)
