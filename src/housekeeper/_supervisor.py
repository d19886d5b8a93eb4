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

from .jobscript import make_dirs, open_fresh, open_new

KILL_WAIT = 5.0
MEMORY_EVERY = 0.5  # seconds between looks at the job's memory
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def session_rss_mb(session: int) -> float:
    """Resident memory of every process in a session (the job's whole process tree), in MB."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == session:  # field 6 of stat: the session id
                total += int(fields[21])  # field 24: resident pages
        except (OSError, IndexError, ValueError):
            continue
    return total * _PAGE_MB


def _write_json(path: str, data: dict[str, object]) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open_new(temporary, text=True) as handle:
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
    make_dirs(os.path.dirname(entry["stdout"]))
    with open(open_fresh(entry["stdout"], append=True), "ab") as out, \
            open(open_fresh(entry["stderr"], append=True), "ab") as err:
        child = subprocess.Popen(
            ["/bin/bash", entry["script"]], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, cwd=entry.get("workdir") or None, env=env,
        )  # fmt: skip
    walltime = entry.get("walltime_s")
    deadline = started + walltime if walltime else None
    memory_mb = entry.get("memory_mb")
    timed_out = out_of_memory = False
    killed_at: float | None = None
    peak_mb = 0.0
    next_look = started
    while True:
        try:
            rc = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if now >= next_look:
            # Like a scheduler's memory accounting: the whole tree, sampled; over the request
            # and the job is killed at once (SIGKILL, as the kernel's OOM killer would).
            next_look = now + MEMORY_EVERY
            peak_mb = max(peak_mb, session_rss_mb(child.pid))
            if memory_mb and peak_mb > memory_mb and not out_of_memory and not cancelled:
                out_of_memory = True
                killed_at = now
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
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
    elif out_of_memory:
        state = "OUT_OF_MEMORY"
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
            "max_rss_mb": max(peak_mb, usage.ru_maxrss / 1024.0), "memory_mb": memory_mb, "host": os.uname().nodename,
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
