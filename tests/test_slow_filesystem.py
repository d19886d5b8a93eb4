"""A slow shared file system (NFS/Lustre lag), on the local backend: files and exit records
that become visible seconds after the job ended are waited for, up to `file_grace`, before a
verdict; after that the verdict is made without them."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.checks import wait_for_files

# A file the command's own detached child writes 3 s after the command exited.
LATE_FILE = "setsid bash -c 'sleep 3; echo done > late.txt' </dev/null >/dev/null 2>&1 & exit 0"


def _finish(hk: housekeeper, job: int, timeout: float = 30.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hk.poll()
        status = JobStatus(hk.store.job(job)["status"])
        if status.is_terminal:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish within {timeout} s")


# ------------------------------------------------------------ expected files, in the job
def test_expected_file_written_late_is_waited_for_within_file_grace(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", file_grace=10)
    job = hk.submit(LATE_FILE, name="late", job_subdir="late", expected_files=["late.txt"])
    hk.flush()
    script = Path(hk.job_info(job)["script"]).read_text()
    assert "HK_FILE_GRACE=10 " in script  # the grace the user set reaches the job
    started = time.monotonic()
    assert _finish(hk, job) is JobStatus.COMPLETED
    assert time.monotonic() - started >= 2.5  # the finisher waited for the file
    info = hk.failure_info(job)
    assert info["missing_files"] == [] and info["reason"] is None
    assert (workdir / "late.txt").read_text() == "done\n"
    hk.close()


def test_expected_file_later_than_file_grace_is_missing(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", file_grace=0.5)
    job = hk.submit(LATE_FILE, name="late", job_subdir="late", expected_files=["late.txt", "never.txt"])
    hk.flush()
    started = time.monotonic()
    assert _finish(hk, job) is JobStatus.FAILED
    assert time.monotonic() - started < 2.8  # gave up after the grace, did not wait for the file
    info = hk.failure_info(job)
    assert info["reason"] == "missing_files"
    assert info["missing_files"] == ["late.txt", "never.txt"]
    hk.close()


def test_wait_for_files_lists_folders_and_returns_what_is_still_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "here.txt").write_text("x")
    timer = threading.Timer(0.4, lambda: (tmp_path / "sub" / "soon.txt").write_text("y"))
    timer.start()
    started = time.monotonic()
    missing = wait_for_files(["here.txt", "sub/soon.txt", "sub/never.txt"], str(tmp_path), 1.5)
    took = time.monotonic() - started
    timer.join()
    assert missing == ["sub/never.txt"]
    assert 1.4 <= took < 3.0
    assert wait_for_files(["here.txt"], str(tmp_path), 5.0) == []  # nothing missing: no wait
    started = time.monotonic()
    assert wait_for_files(["gone.txt"], str(tmp_path), 0.0) == ["gone.txt"]
    assert time.monotonic() - started < 0.5


# --------------------------------------------------------- the exit record, in the driver
CASES = {
    # command: (expected files, verdict from the record, verdict without it)
    "ok": ("echo result > out.txt", ["out.txt"], (JobStatus.COMPLETED, None, 0), (JobStatus.COMPLETED, None, 0)),
    "log_error": ("echo 'Traceback: bad input' >&2", [], (JobStatus.FAILED, "log_error", 0),
                  (JobStatus.FAILED, "exit_code", 1)),
    "exit_3": ("exit 3", [], (JobStatus.FAILED, "exit_code", 3), (JobStatus.FAILED, "exit_code", 3)),
}  # fmt: skip


def _hide_exit_record_after_the_end(hk: housekeeper, job: int, hidden: Path) -> Path:
    """Wait (without polling) until the local backend has recorded the job's end, then take
    its status.json out of sight, as a file system that has not caught up yet would."""
    record = Path(hk.job_info(job)["job_dir"]) / "status.json"
    done = Path(hk.jobs_dir) / ".housekeeper" / "local" / "done" / f"{hk.store.job(job)['scheduler_id']}.json"
    deadline = time.monotonic() + 20
    while not done.exists():
        assert time.monotonic() < deadline, "the local job did not end"
        time.sleep(0.05)
    assert record.exists()  # written by the job before the backend recorded its end
    shutil.move(record, hidden)
    return record


def _run_with_exit_record_back_after_3_s(
    workdir: Path, case: str, file_grace: float
) -> tuple[housekeeper, int, threading.Timer]:
    """Run CASES[case]; once it has ended, hide its exit record and put it back 3 s later
    (a file system that shows it late). Returns the run, the job and the timer to join."""
    command, expected, _, _ = CASES[case]
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", file_grace=file_grace)
    job = hk.submit(command, name=case, job_subdir=case, expected_files=expected)
    hk.flush()
    hidden = workdir / "status.json.hidden"
    record = _hide_exit_record_after_the_end(hk, job, hidden)
    moved_back = threading.Timer(3.0, lambda: os.replace(hidden, record))
    moved_back.start()
    return hk, job, moved_back


@pytest.mark.parametrize("case", ["ok", "log_error", "exit_3"])
def test_exit_record_visible_late_is_waited_for(workdir: Path, case: str) -> None:
    verdict = CASES[case][2]
    hk, job, moved_back = _run_with_exit_record_back_after_3_s(workdir, case, file_grace=10)
    hidden_at = time.monotonic()
    try:
        while time.monotonic() - hidden_at < 2.5:
            hk.poll()
            assert not JobStatus(hk.store.job(job)["status"]).is_terminal, "decided without the exit record"
            time.sleep(0.2)
        status = _finish(hk, job)
    finally:
        moved_back.join()
    assert time.monotonic() - hidden_at < 10  # within file_grace
    info = hk.failure_info(job)
    assert (status, info["reason"], info["exit_code"]) == verdict
    assert hk.job_info(job)["attempts"][-1]["detail"]["host"] == socket.gethostname()  # from the record
    hk.close()


@pytest.mark.parametrize("case", ["ok", "log_error", "exit_3"])
def test_exit_record_later_than_file_grace_gives_the_fallback_verdict(workdir: Path, case: str) -> None:
    fallback = CASES[case][3]
    hk, job, moved_back = _run_with_exit_record_back_after_3_s(workdir, case, file_grace=1)
    hidden_at = time.monotonic()
    try:
        status = _finish(hk, job)
        decided_after = time.monotonic() - hidden_at
    finally:
        moved_back.join()
    assert decided_after < 2.8  # the grace ran out before the record came back
    info = hk.failure_info(job)
    assert (status, info["reason"], info["exit_code"]) == fallback
    assert hk.job_info(job)["attempts"][-1]["detail"].get("host") is None  # judged without the record
    hk.close()
