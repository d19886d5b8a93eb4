"""Supervises one local job: runs its batch script in its own session, enforces the wall time,
handles cancel (SIGTERM to this process), and records the outcome like a scheduler's accounting.

    python -m housekeeper._supervisor RUNNING_JSON DONE_DIR
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

KILL_WAIT = 5.0


def _write_json(path: str, data: dict[str, object]) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    running_path, done_dir = argv[0], argv[1]
    with open(running_path) as handle:
        entry = json.load(handle)
    scheduler_id = str(entry["scheduler_id"])
    cancelled = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal cancelled
        cancelled = True
        if child is not None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = dict(os.environ)
    env["HK_LOCAL_ID"] = scheduler_id
    started = time.time()
    os.makedirs(os.path.dirname(entry["stdout"]), exist_ok=True)
    with open(entry["stdout"], "ab") as out, open(entry["stderr"], "ab") as err:
        child = subprocess.Popen(
            ["/bin/bash", entry["script"]], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, cwd=entry.get("workdir") or None, env=env,
        )  # fmt: skip
    walltime = entry.get("walltime_s")
    deadline = started + walltime if walltime else None
    timed_out = False
    killed_at: float | None = None
    while True:
        try:
            rc = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if deadline is not None and now >= deadline and not timed_out and not cancelled:
            timed_out = True
            killed_at = now
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if cancelled and killed_at is None:
            killed_at = now
        if killed_at is not None and now - killed_at > KILL_WAIT:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    ended = time.time()
    # Whatever is left of the job's process group goes with it.
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    exit_code, sig = (rc, None) if rc >= 0 else (None, -rc)
    if cancelled:
        state = "CANCELLED"
    elif timed_out:
        state = "TIMEOUT"
    elif rc == 0:
        state = "COMPLETED"
    else:
        state = "FAILED"
    _write_json(
        os.path.join(done_dir, f"{scheduler_id}.json"),
        {
            "scheduler_id": scheduler_id, "state": state, "exit_code": exit_code, "signal": sig,
            "started_at": started, "ended_at": ended, "cpu_time_s": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024.0, "host": os.uname().nodename,
            "comment": entry.get("comment"),
        },
    )  # fmt: skip
    for leftover in (running_path, running_path[: -len(".json")] + ".pid"):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
