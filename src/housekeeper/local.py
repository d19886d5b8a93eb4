"""The local backend: a small, persistent scheduler on this machine.

Jobs are queued as files under `<jobs_dir>/.housekeeper/local/` (queue/ -> running/ -> done/),
so any driver process that opens the jobs_dir sees and advances the same queue. Each job runs
under a detached supervisor (its own session, so it outlives the driver) that enforces the wall
time, handles cancel and writes a done record like a scheduler's accounting. `cpus` are slots
out of the machine's cores; a job asking for more than the machine has runs alone.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import polars as pl

from .jobscript import PACKAGE_PARENT, make_dirs, safe_umask, write_file
from .models import JobStatus, Reason
from .schedulers.base import STATUS_SCHEMA, Limits, SubmitRequest

log = logging.getLogger("housekeeper")

# The supervisor's done states, mapped once: (status, reason).
_DONE_STATES: dict[str, tuple[JobStatus, Reason | None]] = {
    "COMPLETED": (JobStatus.COMPLETED, None),
    "FAILED": (JobStatus.FAILED, Reason.EXIT_CODE),
    "TIMEOUT": (JobStatus.FAILED, Reason.TIMEOUT),
    "OUT_OF_MEMORY": (JobStatus.FAILED, Reason.OOM),  # over its memory request: killed by the supervisor
    "CANCELLED": (JobStatus.CANCELLED, Reason.CANCELLED_BY_USER),
    "LOST": (JobStatus.FAILED, Reason.LOST),  # the supervisor vanished without a record
}
_LAUNCH_GRACE = 30.0  # a running entry without a live pid yet is being launched by someone
_COUNTER_WIDTH = 20


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process, to tell a live pid from a recycled one."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class LocalBackend:
    """Runs jobs on this machine. Persistent: its queue lives in the jobs_dir."""

    name = "local"
    native_dependencies = False
    max_array_size = 1  # each job is its own entry; arrays buy nothing here

    def __init__(self, state_dir: str, slots: int | None = None) -> None:
        self.state_dir = state_dir
        self.slots = slots or int(os.environ.get("HOUSEKEEPER_LOCAL_SLOTS", "0") or 0) or (os.cpu_count() or 1)
        for sub in ("queue", "running", "done"):
            make_dirs(os.path.join(state_dir, sub))
        self._children: list[subprocess.Popen[bytes]] = []

    def _path(self, where: str, scheduler_id: str) -> str:
        return os.path.join(self.state_dir, where, f"{scheduler_id}.json")

    def _next_ids(self, count: int) -> list[int]:
        counter = os.path.join(self.state_dir, "counter")
        with os.fdopen(os.open(counter, os.O_RDWR | os.O_CREAT, 0o644), "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            first = int(handle.read().strip() or "1")
            # Overwritten in place at a fixed width, never truncated: on a full disk a
            # truncate-and-write would leave the counter empty and hand out used ids again.
            handle.seek(0)
            handle.write(str(first + count).ljust(_COUNTER_WIDTH))
            handle.flush()
        return list(range(first, first + count))

    def directives(self, req: SubmitRequest) -> list[str]:
        return []

    def limits(self, queue: str | None) -> Limits:
        """This machine: its memory is the cap; no wall-time limit; one node."""
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return Limits(max_memory_mb=pages * page_size // (1024 * 1024), nodes=(os.uname().nodename,))

    def submit(self, req: SubmitRequest) -> list[str]:
        if req.array_size:
            raise ValueError("the local backend takes one job per submission")
        if req.resources.cpus > self.slots:
            log.warning(
                "job %s asks for %d cpus; this machine has %d: it will run alone",
                req.name, req.resources.cpus, self.slots,
            )
        (number,) = self._next_ids(1)
        scheduler_id = str(number)
        entry = {
            "scheduler_id": scheduler_id, "script": req.script_path, "name": req.name,
            "cpus": req.resources.cpus, "walltime_s": req.resources.walltime_s, "workdir": req.workdir,
            "memory_mb": req.resources.memory_mb,
            "stdout": req.stdout_path, "stderr": req.stderr_path, "comment": req.comment,
            "submitted_at": time.time(),
        }  # fmt: skip
        _write_json(self._path("queue", scheduler_id), entry)
        try:
            self.schedule()
        except OSError as exc:  # it is queued: the next poll starts it
            log.warning("housekeeper: local job %s queued, not started yet: %s", scheduler_id, exc)
        return [scheduler_id]

    # -- scheduling ---------------------------------------------------------------------
    def _alive(self, entry_path: str) -> bool:
        """Is the supervisor of this running entry alive? An entry whose launcher has not yet
        written the pid file counts as alive for a grace period after it was claimed (rename
        sets ctime, not mtime, so ctime says when)."""
        launch = _read_json(entry_path[: -len(".json")] + ".pid")
        if launch is None or not launch.get("pid"):
            try:
                return time.time() - os.stat(entry_path).st_ctime < _LAUNCH_GRACE
            except OSError:
                return False
        start = _process_start(int(launch["pid"]))
        return start is not None and start == launch.get("pid_start")

    def _running(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        folder = os.path.join(self.state_dir, "running")
        for filename in os.listdir(folder):
            if not filename.endswith(".json"):
                continue
            path = os.path.join(folder, filename)
            entry = _read_json(path)
            if entry is None:
                continue
            done = self._path("done", entry["scheduler_id"])
            if os.path.exists(done):  # finished; the supervisor's own clean-up raced with us
                _remove(path, path[: -len(".json")] + ".pid")
                continue
            if not self._alive(path):
                # The supervisor died without a record (killed, or the machine restarted).
                _write_json(done, {"scheduler_id": entry["scheduler_id"], "state": "LOST", "ended_at": time.time(),
                                   "comment": entry.get("comment")})  # fmt: skip
                _remove(path, path[: -len(".json")] + ".pid")
                continue
            out.append((path, entry))
        return out

    def schedule(self) -> None:
        """Start queued jobs while slots are free (FIFO)."""
        self._children = [c for c in self._children if c.poll() is None]
        used = sum(min(int(e.get("cpus", 1)), self.slots) for _, e in self._running())
        queue_dir = os.path.join(self.state_dir, "queue")
        waiting = sorted(
            (f for f in os.listdir(queue_dir) if f.endswith(".json")), key=lambda f: int(f.split(".")[0])
        )
        for filename in waiting:
            entry = _read_json(os.path.join(queue_dir, filename))
            if entry is None:
                continue
            need = min(int(entry.get("cpus", 1)), self.slots)
            if used + need > self.slots:
                break  # FIFO: the head of the queue waits for room, nobody jumps it
            running_path = self._path("running", entry["scheduler_id"])
            try:
                os.rename(os.path.join(queue_dir, filename), running_path)  # claim: one driver wins
            except FileNotFoundError:
                continue
            self._launch(running_path, entry)
            used += need

    def _launch(self, running_path: str, entry: dict[str, Any]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        child = subprocess.Popen(
            [sys.executable, "-m", "housekeeper._supervisor", running_path, os.path.join(self.state_dir, "done")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env, close_fds=True, umask=safe_umask(),
        )  # fmt: skip
        self._children.append(child)
        # The entry itself is never rewritten (its supervisor may already be removing it).
        _write_json(running_path[: -len(".json")] + ".pid",
                    {"pid": child.pid, "pid_start": _process_start(child.pid), "started_at": time.time()})

    # -- queries ------------------------------------------------------------------------
    def poll(
        self, scheduler_ids: Sequence[str], since: float | None = None, folders: dict[str, str] | None = None,
        usage_ids: Sequence[str] = (),
    ) -> pl.DataFrame:
        """The local queue's view (usage comes with a job's end: `usage_ids` is never needed)."""
        self.schedule()
        rows: list[dict[str, Any]] = []
        for scheduler_id in scheduler_ids:
            done = _read_json(self._path("done", scheduler_id))
            if done is not None:
                status, reason = _DONE_STATES.get(str(done.get("state")), (JobStatus.FAILED, Reason.LOST))
                signal_number = done.get("signal")
                if status is JobStatus.FAILED and reason is Reason.EXIT_CODE and signal_number:
                    reason = Reason.SIGNAL
                rows.append({
                    "scheduler_id": scheduler_id, "native_state": done.get("state"), "status": status.value,
                    "reason": reason.value if reason else None, "exit_code": done.get("exit_code"),
                    "signal": signal_number, "node": done.get("host"), "started_at": done.get("started_at"),
                    "ended_at": done.get("ended_at"), "elapsed_s": _elapsed(done),
                    "cpu_time_s": done.get("cpu_time_s"), "max_rss_mb": done.get("max_rss_mb"),
                })  # fmt: skip
                continue
            if os.path.exists(self._path("running", scheduler_id)):
                launch = _read_json(self._path("running", scheduler_id)[: -len(".json")] + ".pid") or {}
                rows.append({
                    "scheduler_id": scheduler_id, "native_state": "RUNNING", "status": "RUNNING",
                    "started_at": launch.get("started_at"), "node": os.uname().nodename,
                })  # fmt: skip
                continue
            if os.path.exists(self._path("queue", scheduler_id)):
                rows.append({"scheduler_id": scheduler_id, "native_state": "QUEUED", "status": "QUEUED"})
        return pl.DataFrame(rows, schema=STATUS_SCHEMA) if rows else pl.DataFrame(schema=STATUS_SCHEMA)

    def cancel(self, scheduler_ids: Sequence[str]) -> None:
        for scheduler_id in scheduler_ids:
            queued = self._path("queue", scheduler_id)
            try:
                entry = _read_json(queued)
                os.unlink(queued)
            except FileNotFoundError:
                entry = None
            if entry is not None:
                _write_json(
                    self._path("done", scheduler_id),
                    {"scheduler_id": scheduler_id, "state": "CANCELLED", "ended_at": time.time(),
                     "comment": entry.get("comment")},
                )
                continue
            launch = _read_json(self._path("running", scheduler_id)[: -len(".json")] + ".pid")
            if launch and launch.get("pid") and _process_start(int(launch["pid"])) == launch.get("pid_start"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(launch["pid"]), signal.SIGTERM)

    def lookup(self, token: str, since: float) -> list[str]:
        """Local job ids submitted with this tag (each local submission is one job)."""
        found: list[tuple[int, str]] = []
        for where in ("queue", "running", "done"):
            folder = os.path.join(self.state_dir, where)
            for filename in os.listdir(folder):
                if not filename.endswith(".json") or os.path.getmtime(os.path.join(folder, filename)) < since:
                    continue
                entry = _read_json(os.path.join(folder, filename))
                if entry and entry.get("comment") == token:
                    found.append((int(entry["scheduler_id"]), str(entry["scheduler_id"])))
        return [sid for _, sid in sorted(set(found))]

    def wait_idle(self, timeout: float) -> None:
        """Reap our own supervisors (tests and clean shutdowns)."""
        deadline = time.time() + timeout
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.0, deadline - time.time()))


def _elapsed(done: dict[str, Any]) -> float | None:
    if done.get("started_at") and done.get("ended_at"):
        return float(done["ended_at"]) - float(done["started_at"])
    return None


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: str, data: dict[str, Any]) -> None:
    write_file(path, json.dumps(data).encode())
