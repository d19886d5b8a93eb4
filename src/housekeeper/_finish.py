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
    missing_files,
    scheduler_id_from_env,
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
    try:
        rules = load_rules(rules_path)
        record.log_errors, record.log_excused, record.log_lines, record.log_patterns = check_logs(job_dir, rules)
        record.missing_files = missing_files(expected, os.getcwd())
        record.checked = True
    except Exception as exc:  # noqa: BLE001 - a broken rules file must not lose the exit code
        print(f"housekeeper: could not check logs and files: {exc}", file=sys.stderr)
    record.ok = record.checked and rc == 0 and not record.log_lines and not record.missing_files
    write_record(job_dir, record)
    if record.ok:
        return 0
    return rc if 0 < rc < 256 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
