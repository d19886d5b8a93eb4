"""Verdict rules on their own: scheduler word + exit record -> status and reason."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.models import ExitRecord, LogLine, Reason
from housekeeper.verdict import decide, reason_from_messages

from .conftest import write


def record(**kwargs: object) -> ExitRecord:
    base: dict[str, object] = {"job_id": 1, "attempt": 1, "exit_code": 0, "checked": True, "ok": True}
    base.update(kwargs)
    if base.get("exit_code") not in (0, None) or base.get("log_lines") or base.get("missing_files") or base.get("signal"):
        base["ok"] = False
    return ExitRecord(**base)  # type: ignore[arg-type]


def sched(status: str, reason: str | None = None, **kwargs: object) -> dict[str, object]:
    return {"status": status, "reason": reason, "native_state": kwargs.get("native_state", status), **kwargs}


@pytest.mark.parametrize(
    ("scheduler_row", "exit_record", "status", "reason"),
    [
        (sched("COMPLETED"), record(), JobStatus.COMPLETED, None),
        (None, record(), JobStatus.COMPLETED, None),  # accounting off, queue forgot: the record decides
        (sched("FAILED", "exit_code", exit_code=3), record(exit_code=3), JobStatus.FAILED, Reason.EXIT_CODE),
        (sched("FAILED", "timeout"), record(exit_code=None, signal=15), JobStatus.FAILED, Reason.TIMEOUT),
        (sched("FAILED", "oom"), record(exit_code=None, signal=9), JobStatus.FAILED, Reason.OOM),
        (sched("FAILED", "node_fail"), None, JobStatus.FAILED, Reason.NODE_FAIL),
        (sched("FAILED", "preempted"), record(), JobStatus.FAILED, Reason.PREEMPTED),
        (sched("CANCELLED", "cancelled_by_user"), None, JobStatus.CANCELLED, Reason.CANCELLED_BY_USER),
        (sched("FAILED", "exit_code", exit_code=1), record(log_lines=[LogLine("stderr.log", 3, "Error: x")]),
         JobStatus.FAILED, Reason.LOG_ERROR),
        (sched("FAILED", "exit_code", exit_code=1), record(missing_files=["out.txt"]),
         JobStatus.FAILED, Reason.MISSING_FILES),
        # exit code first, then logs, then files (SPEC §4 order)
        (sched("FAILED"), record(exit_code=2, log_lines=[LogLine("stderr.log", 1, "error")], missing_files=["x"]),
         JobStatus.FAILED, Reason.EXIT_CODE),
        (None, record(exit_code=None, signal=11), JobStatus.FAILED, Reason.SIGNAL),
        # the scheduler failed it although the job found nothing wrong (an epilog, say)
        (sched("FAILED", "exit_code", exit_code=1), record(), JobStatus.FAILED, Reason.EXIT_CODE),
        (sched("FAILED", "signal", signal=9), None, JobStatus.FAILED, Reason.SIGNAL),
        # SLURM's FAILED 0:0 (no reason of its own): the job's record says why, when it knows
        (sched("FAILED", "scheduler_error"), record(exit_code=3), JobStatus.FAILED, Reason.EXIT_CODE),
        (sched("FAILED", "scheduler_error"), record(exit_code=None, signal=9), JobStatus.FAILED, Reason.SIGNAL),
        (sched("FAILED", "scheduler_error"), record(), JobStatus.FAILED, Reason.SCHEDULER_ERROR),
        (sched("FAILED", "scheduler_error"), None, JobStatus.FAILED, Reason.SCHEDULER_ERROR),
        (sched("FAILED", "scheduler_error", native_state="DEADLINE"), record(exit_code=3),
         JobStatus.FAILED, Reason.SCHEDULER_ERROR),  # a reason SLURM gave: it stands
        (sched("COMPLETED"), record(exit_code=0, log_lines=[LogLine("stdout.log", 9, "Traceback")]),
         JobStatus.FAILED, Reason.LOG_ERROR),
    ],
)  # fmt: skip
def test_decide(scheduler_row: dict[str, object] | None, exit_record: ExitRecord | None, status: JobStatus,
                reason: Reason | None) -> None:  # fmt: skip
    outcome = decide(sched=scheduler_row, record=exit_record, walltime_s=60)
    assert outcome is not None
    assert (outcome.status, outcome.reason) == (status, reason)


def test_decide_waits_while_the_scheduler_says_running() -> None:
    assert decide(sched=sched("RUNNING"), record=None, walltime_s=None) is None
    assert decide(sched=sched("QUEUED"), record=record(), walltime_s=None) is None
    assert decide(sched=None, record=None, walltime_s=None) is None


def test_sigterm_at_the_time_limit_without_accounting_is_a_timeout() -> None:
    now = time.time()
    killed = record(exit_code=None, signal=15, terminated=15, started_at=now - 62, ended_at=now)
    outcome = decide(sched=None, record=killed, walltime_s=60)
    assert outcome is not None and outcome.reason is Reason.TIMEOUT
    early = record(exit_code=None, signal=15, terminated=15, started_at=now - 5, ended_at=now)
    outcome = decide(sched=None, record=early, walltime_s=60)
    assert outcome is not None and outcome.reason is Reason.SIGNAL


def test_cancelled_child_of_a_failed_parent_is_dependency_never_satisfied() -> None:
    outcome = decide(sched=sched("CANCELLED", "cancelled_by_user"), record=None, walltime_s=None,
                     dependency_impossible=True)  # fmt: skip
    assert outcome is not None and outcome.reason is Reason.DEPENDENCY_NEVER_SATISFIED


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("slurmstepd: error: *** JOB 1234 ON node01 CANCELLED AT 2024-03-01T10:00:00 DUE TO TIME LIMIT ***",
         Reason.TIMEOUT),
        ("slurmstepd: error: *** STEP 1234.0 ON node01 CANCELLED AT 2024-03-01T10:00:00 DUE TO TIME LIMIT ***",
         Reason.TIMEOUT),
        ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=1234.batch. Some of your processes may have "
         "been killed by the cgroup out-of-memory handler.", Reason.OOM),
        ("slurmstepd: error: *** JOB 77 ON n1 CANCELLED AT 2024-03-01T10:00:00 DUE TO PREEMPTION ***",
         Reason.PREEMPTED),
        ("slurmstepd: error: *** JOB 77 ON n1 CANCELLED AT 2024-03-01T10:00:00 DUE TO NODE FAILURE, SEE SLURMCTLD LOG"
         " FOR DETAILS ***", Reason.NODE_FAIL),
        ("slurmstepd: error: *** JOB 77 ON n1 CANCELLED AT 2024-03-01T10:00:00 ***", Reason.CANCELLED_BY_USER),
        ("=>> PBS: job killed: walltime 152 exceeded limit 120", Reason.TIMEOUT),
        ("=>> PBS: job killed: mem 4194304kb exceeded limit 2097152kb", Reason.OOM),
        ("=>> PBS: job killed: vmem 9000000kb exceeded limit 8388608kb", Reason.OOM),
    ],
)  # fmt: skip
def test_scheduler_messages(tmp_path: Path, line: str, reason: Reason) -> None:
    log = write(tmp_path / "stderr.log", f"working\nError: something\n{line}\n")
    found = reason_from_messages([str(log), str(tmp_path / "absent.log")])
    assert found == (reason, line)


def test_user_text_is_not_taken_for_a_scheduler_message(tmp_path: Path) -> None:
    log = write(tmp_path / "stdout.log", "my job ran out of time DUE TO TIME LIMIT *** (quoting a manual)\n")
    assert reason_from_messages([str(log)]) is None


def test_fail_fast_cancels_at_the_first_error(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", fail_fast=True,
                     error_whitelist=["harmless"])  # fmt: skip
    job = hk.submit("echo 'error but harmless'; sleep 2; echo 'fatal: disk on fire' >&2; sleep 120",
                    name="ff", job_subdir="ff")  # fmt: skip
    quiet = hk.submit("sleep 1; echo fine", name="quiet", job_subdir="quiet")
    start = time.monotonic()
    results = hk.monitor([job, quiet], poll_interval=0.3, timeout=60)
    assert time.monotonic() - start < 30
    assert results == {job: JobStatus.FAILED, quiet: JobStatus.COMPLETED}
    info = hk.failure_info(job)
    assert info["reason"] == "log_error"
    assert info["log_lines"][0]["text"] == "fatal: disk on fire"
    assert info["log_lines"][0]["line"] == 1
    hk.close()


def test_failure_info_explains_excused_lines(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local",
                     error_whitelist=["WARN", "Leap second table TAI_UTC seems out-of-date"])  # fmt: skip
    job = hk.submit("echo 'WARNING: error rate high'; echo 'ERROR: leap second table out-of-date'; exit 2",
                    name="ex", job_subdir="ex")  # fmt: skip
    hk.monitor([job], poll_interval=0.3)
    info = hk.failure_info(job, excused=True)
    assert info["reason"] == "exit_code"
    assert [(e["line"], e["excused_by"]) for e in info["excused_lines"]] == [
        (1, "WARN"), (2, "Leap second table TAI_UTC seems out-of-date")]  # fmt: skip
    assert "excused_lines" not in hk.failure_info(job)
    hk.close()
