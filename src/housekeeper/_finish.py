"""The finisher: runs inside the job, after the command, and writes the exit record.

Usage (written into every batch script by jobscript.py):
    python -m housekeeper._finish JOB_DIR JOB_ID ATTEMPT RC STARTED TERM RULES -- [EXPECTED ...]

It exits 0 when the job succeeded by every rule (SPEC §4) and non-zero otherwise. Nothing in
the package imports this module, and it imports neither polars nor pyarrow, so it starts fast.
"""
from __future__ import annotations

import os
import socket
import sys
import time

from .checks import (
    check_logs,
    exit_and_signal,
    load_rules,
    scheduler_id_from_env,
    wait_for_files,
    write_record,
)
from .models import ExitRecord


def main(argv: list[str]) -> int:
    if len(argv) < 8 or argv[7] != "--":
        print("usage: python -m housekeeper._finish JOB_DIR JOB_ID ATTEMPT RC STARTED TERM RULES -- [FILES]",
              file=sys.stderr)
        return 2
    job_dir, job_id, attempt, rc_text, started, term_text, rules_path = argv[:7]
    expected = argv[8:]
    rc = int(rc_text)
    exit_code, signal = exit_and_signal(rc, int(term_text or 0))
    record = ExitRecord(
        job_id=int(job_id),
        attempt=int(attempt),
        exit_code=exit_code,
        signal=signal,
        scheduler_id=scheduler_id_from_env(),
        host=socket.gethostname(),
        started_at=float(started) if started else None,
        ended_at=time.time(),
    )
    record.terminated = int(term_text or 0)
    record.restarts = _restarts()
    try:
        rules = load_rules(rules_path)
        record.log_errors, record.log_excused, record.log_lines, record.log_patterns = check_logs(job_dir, rules)
        record.missing_files = wait_for_files(expected, os.getcwd(), _grace())
        record.checked = True
    except Exception as exc:  # noqa: BLE001 - a broken rules file must not lose the exit code
        print(f"housekeeper: could not check logs and files: {exc}", file=sys.stderr)
    record.ok = record.checked and rc == 0 and not record.log_lines and not record.missing_files
    write_record(job_dir, record)
    if record.ok:
        return 0
    return rc if 0 < rc < 256 else 1


def _restarts() -> int:
    """How often the scheduler started this run again after losing it (SLURM sets
    SLURM_RESTART_COUNT in a requeued job: node failure, a launch that failed under load)."""
    text = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(text) if text.isdigit() else 0


def _grace() -> float:
    """The driver's file_grace, which the batch script passes as HK_FILE_GRACE (0 if absent)."""
    try:
        return max(0.0, float(os.environ.get("HK_FILE_GRACE") or 0))
    except ValueError:
        return 0.0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
