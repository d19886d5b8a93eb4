"""`housekeeper`: the face users touch."""
from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from . import faults, jobscript
from .backends import SCHEDULERS, detect_scheduler, make_command_backend
from .checks import Rules
from .engine import Backend, Engine
from .errors import InvalidArgumentError, JobStateError, StateError, UnknownJobError
from .local import LocalBackend
from .models import RETRYABLE_REASONS, JobSpec, JobStatus, RetryPolicy
from .runner import Runner
from .scan import DEFAULT_ERROR_PATTERNS
from .spec import build_spec
from .store import Store, read_only_file_system, storage_problem

log = logging.getLogger("housekeeper")

_STATUS_ENUM = pl.Enum([s.value for s in JobStatus])
_BUFFER_ROWS = 5000
_BUFFER_SECONDS = 0.5
USAGE_SETTLE_SECONDS = 15.0  # monitor() waits at most this long for accounting to record the last jobs' usage


class JobTable(pl.DataFrame):
    """A polars DataFrame of jobs whose iteration yields one dict per job (row), so that
    `for job in hk.list_jobs(): print(job['name'], job['status'])` works as the README shows."""

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        return self.iter_rows(named=True)


def _check_str_list(parameter: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidArgumentError(parameter, value, "must be a list of strings")
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InvalidArgumentError(parameter, value, f"contains {item!r}; every entry must be a non-empty string")
    return items


class Housekeeper:
    """Submits, tracks, checks and retries batch jobs; all state lives in `jobs_dir`."""

    def __init__(
        self,
        jobs_dir: str | os.PathLike[str],
        scheduler: str | None = None,
        db_path: str | os.PathLike[str] | None = None,
        error_whitelist: Sequence[str] | None = None,
        whitelist_threshold: int = 3,
        *,
        error_patterns: Sequence[str] | None = None,
        max_queued: int | None = None,
        file_grace: float = 30.0,
        lost_after: float = 120.0,
        local_slots: int | None = None,
        fail_fast: bool = False,
        free_retries: int = 3,
        runner: Runner | None = None,
    ) -> None:
        if not isinstance(jobs_dir, (str, os.PathLike)) or not str(jobs_dir):
            raise InvalidArgumentError("jobs_dir", jobs_dir, "must be a folder path")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise InvalidArgumentError("scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)} or None")
        whitelist = _check_str_list("error_whitelist", error_whitelist) or []
        patterns = _check_str_list("error_patterns", error_patterns)
        if patterns is not None and not patterns:
            raise InvalidArgumentError("error_patterns", error_patterns, "must not be empty")
        if isinstance(whitelist_threshold, bool) or not isinstance(whitelist_threshold, int) or whitelist_threshold < 1:
            raise InvalidArgumentError("whitelist_threshold", whitelist_threshold, "must be a whole number >= 1")
        if max_queued is not None and (isinstance(max_queued, bool) or not isinstance(max_queued, int) or max_queued < 1):
            raise InvalidArgumentError("max_queued", max_queued, "must be a whole number >= 1 or None")
        for parameter, value in (("file_grace", file_grace), ("lost_after", lost_after)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError(parameter, value, "must be a number of seconds >= 0")
        if isinstance(free_retries, bool) or not isinstance(free_retries, int) or free_retries < 0:
            raise InvalidArgumentError("free_retries", free_retries, "must be a whole number >= 0")
        if local_slots is not None and (isinstance(local_slots, bool) or not isinstance(local_slots, int) or local_slots < 1):
            raise InvalidArgumentError("local_slots", local_slots, "must be a whole number >= 1")
        self.jobs_dir = os.path.abspath(os.fspath(jobs_dir))
        if os.path.exists(self.jobs_dir) and not os.path.isdir(self.jobs_dir):
            raise InvalidArgumentError("jobs_dir", jobs_dir, "exists and is not a folder")
        try:
            jobscript.make_dirs(os.path.join(self.jobs_dir, jobscript.HK_DIR))
        except OSError as exc:
            raise StateError(f"jobs_dir {self.jobs_dir} cannot be created or written: "
                             f"{storage_problem(exc) or exc}") from exc
        self.db_path = os.path.abspath(os.fspath(db_path)) if db_path else os.path.join(self.jobs_dir, "housekeeper.db")
        for what, path, inside in (("jobs_dir", self.jobs_dir, os.path.join(self.jobs_dir, jobscript.HK_DIR)),
                                   ("db_path", self.db_path, self.db_path)):  # fmt: skip
            if read_only_file_system(inside):
                raise StateError(f"{what} {path} is on a read-only file system; housekeeper needs to write there")
        self.store = Store(self.db_path)
        self.rules = Rules(
            error_patterns=list(patterns) if patterns else list(DEFAULT_ERROR_PATTERNS),
            error_whitelist=whitelist,
            whitelist_threshold=whitelist_threshold,
        )
        self._rules_given = error_whitelist is not None or error_patterns is not None or whitelist_threshold != 3
        if not self._rules_given:  # reopening a run: judge with the rules it was started with
            stored = self.store.conn.execute("SELECT value FROM meta WHERE key='rules'").fetchone()
            if stored:
                self.rules = msgspec.json.decode(stored[0], type=Rules)
        self._requested_scheduler = scheduler
        self._runner = runner or Runner()
        self._local_slots = local_slots
        if not isinstance(fail_fast, bool):
            raise InvalidArgumentError("fail_fast", fail_fast, "must be True or False")
        self._options = {"max_queued": max_queued, "file_grace": float(file_grace), "lost_after": float(lost_after),
                         "fail_fast": fail_fast, "free_retries": free_retries}  # fmt: skip
        self._engine: Engine | None = None
        self._lock = threading.RLock()
        self._buffer: list[tuple[Any, ...]] = []
        self._buffer_deps: list[tuple[int, int, str]] = []
        self._buffer_keys: dict[str, tuple[int, str]] = {}
        # Keys this process recorded into a store that held no job when it first looked, while no
        # other connection wrote to it (SQLite's data_version): a key outside it needs no lookup.
        self._own_keys: set[int] | None = None
        self._own_version: int | None = None
        self._own_checked = 0.0
        self._buffer_ids: set[int] = set()  # ids in the buffer, for dependency checks
        self._last_commit = 0.0
        self._ids: Iterator[int] = iter(())
        self._ids_left = 0
        self._closed = False
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    # ---------------------------------------------------------------------- machinery
    @property
    def scheduler(self) -> str:
        """The scheduler in use ('slurm', 'pbs' or 'local'), detected on first need."""
        return self.engine.backend.name

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        rules_path = self._write_rules()  # first: a jobs_dir that cannot be written changes nothing
        stored = self.store.conn.execute("SELECT value FROM meta WHERE key='scheduler'").fetchone()
        name = self._requested_scheduler or (stored[0] if stored else None)
        if name is None:
            name = detect_scheduler(self._runner)
            log.info("housekeeper: no scheduler named; detected %s", name)
        backend: Backend
        if name == "local":
            backend = LocalBackend(os.path.join(self.jobs_dir, jobscript.HK_DIR, "local"), self._local_slots)
        else:
            backend = make_command_backend(name, self._runner)
        if not stored:
            with self.store.transaction() as cur:
                cur.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('scheduler', ?)", (name,))
        elif stored[0] != name:
            log.warning("jobs_dir %s was started with %s; now using %s", self.jobs_dir, stored[0], name)
        with self.store.transaction() as cur:  # the rules in force, for any process that opens the run
            verb = "INSERT OR REPLACE" if self._rules_given else "INSERT OR IGNORE"
            cur.execute(f"{verb} INTO meta(key, value) VALUES ('rules', ?)", (msgspec.json.encode(self.rules).decode(),))
        return Engine(store=self.store, backend=backend, jobs_dir=self.jobs_dir, rules=self.rules,
                      rules_path=rules_path, **self._options)  # type: ignore[arg-type]  # fmt: skip

    def _write_rules(self) -> str:
        data = msgspec.json.encode(self.rules)
        path = os.path.join(self.jobs_dir, jobscript.HK_DIR, f"rules-{hashlib.sha1(data).hexdigest()[:12]}.json")
        patterns = jobscript.rules_patterns_path(path)
        for target, content in ((path, data), (patterns, "".join(f"{p}\n" for p in self.rules.error_patterns).encode())):
            if not os.path.exists(target):
                try:
                    jobscript.write_file(target, content)
                except OSError as exc:
                    raise StateError(f"cannot write {target}: {storage_problem(exc) or exc}") from exc
        return path

    def _next_id(self) -> int:
        if self._ids_left == 0:
            block = min(10000, max(16, len(self._buffer) * 2 or 16))
            with faults.stage("submit"):
                self._ids = iter(self.store.reserve_ids(block))
            self._ids_left = block
        self._ids_left -= 1
        return next(self._ids)

    def _commit(self) -> None:
        """Write buffered submissions to the store in one transaction."""
        with self._lock:
            if not self._buffer:
                return
            rows, deps = self._buffer, self._buffer_deps
            clashes = self.store.insert_jobs(rows, deps)
            if self._own_keys is not None:
                self._own_keys.update(hash(key) for key in self._buffer_keys)
            self._buffer, self._buffer_deps, self._buffer_keys = [], [], {}
            self._buffer_ids = set()
            self._last_commit = time.monotonic()
            for message in clashes:
                log.error("housekeeper: %s", message)

    @faults.staged("flush")
    def _sync(self) -> None:
        """Before any read or action: buffered jobs to the store, held jobs to the scheduler."""
        self._commit()
        self.engine.flush()

    def _job(self, job_id: Any) -> dict[str, Any]:
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise InvalidArgumentError("job_id", job_id, "must be a job id (int) returned by submit()")
        self._commit()
        job = self.store.job(job_id)
        if job is None:
            real = self.store.resolve([job_id]).get(job_id)  # submitted by two drivers at once
            job = self.store.job(real) if real is not None else None
            if job is None:
                raise UnknownJobError(job_id)
        return job

    # --------------------------------------------------------------------------- submit
    def submit(
        self,
        command: str,
        name: str | None = None,
        job_subdir: str | None = None,
        nodes: int = 1,
        cpus: int = 1,
        gpus: int = 0,
        memory: str | int | None = "4GB",
        walltime: str | int | _dt.timedelta | None = "01:00:00",
        queue: str | None = None,
        account: str | None = None,
        expected_files: Sequence[str | os.PathLike[str]] | None = None,
        after_ok: Sequence[int] | int | None = None,
        after_fail: Sequence[int] | int | None = None,
        after_any: Sequence[int] | int | None = None,
        max_retries: int = 0,
        env: dict[str, str] | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        retry_on: str | Sequence[str] | None = None,
        escalate: bool | dict[str, Any] | None = None,
    ) -> int:
        """Record a job and return its housekeeper id. The job reaches the scheduler at the
        latest on the next monitor/track/list_jobs/job_info/cancel/flush call or at exit.

        `retry_on`: the failure reasons max_retries applies to (default: all). `escalate`:
        True (walltime x2 after a timeout, memory x1.5 after oom, the failed node excluded
        after node_fail) or a dict choosing factors and caps (see docs/retries.md).

        Submitting the same job again (same job_subdir, or same name and command) returns the
        existing id and does nothing else."""
        spec = build_spec(
            command=command, name=name, job_subdir=job_subdir, nodes=nodes, cpus=cpus, gpus=gpus, memory=memory,
            walltime=walltime, queue=queue, account=account, expected_files=expected_files, after_ok=after_ok,
            after_fail=after_fail, after_any=after_any, max_retries=max_retries, env=env, workdir=workdir,
            retry_on=retry_on, escalate=escalate,
        )  # fmt: skip
        with self._lock:
            if self._closed:
                raise JobStateError("this housekeeper was closed")
            key = f"dir:{spec.job_subdir}" if spec.job_subdir else f"cmd:{spec.name}\0{spec.command}"
            existing = self._buffer_keys.get(key)
            if existing is None and self._maybe_recorded(key):
                existing = self.store.find_dedup(key)
            if existing is not None:
                job_id, old_command = existing
                if old_command != spec.command:
                    raise InvalidArgumentError(
                        "job_subdir", spec.job_subdir,
                        f"is already used by job {job_id} with a different command ({old_command!r})",
                    )  # fmt: skip
                return job_id
            self._check_parents(spec)
            if spec.job_subdir:
                self._check_folder_free(spec.job_subdir)
            job_id = self._next_id()
            deps_before = len(self._buffer_deps)
            self._buffer.append(self._row(job_id, key, spec))
            self._buffer_ids.add(job_id)
            for parameter, kind in (("after_ok", "ok"), ("after_fail", "fail"), ("after_any", "any")):
                self._buffer_deps.extend((job_id, parent, kind) for parent in getattr(spec, parameter))
            self._buffer_keys[key] = (job_id, spec.command)
            # A lone submit is written at once; a tight loop is written in batches, at most
            # _BUFFER_SECONDS apart (a re-run after a crash re-submits the rest idempotently).
            if len(self._buffer) >= _BUFFER_ROWS or time.monotonic() - self._last_commit > _BUFFER_SECONDS:
                try:
                    with faults.stage("submit"):
                        self._commit()
                except BaseException:
                    # This job was not recorded and its id is not handed out; the jobs before it
                    # (whose ids were) stay held here and are written by the next call.
                    self._forget_last(job_id, key, deps_before)
                    raise
            return job_id

    def _maybe_recorded(self, key: str) -> bool:
        """False when `key` is surely not in the store: a million-job loop then costs no query
        per job. Another process writing meanwhile ends the shortcut (checked every 0.2 s; a
        key it recorded inside that window becomes an alias at commit, as in any race)."""
        now = time.monotonic()
        if self._own_keys is None:
            if self._own_version is not None:  # the shortcut ended for good
                return True
            self._own_version = self.store.data_version()
            self._own_checked = now
            if self.store.conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone() is not None:
                return True
            self._own_keys = set()
            return False
        if now - self._own_checked > 0.2:
            self._own_checked = now
            if self.store.data_version() != self._own_version:
                self._own_keys = None
                return True
        return hash(key) in self._own_keys

    def _forget_last(self, job_id: int, key: str, deps_before: int) -> None:
        """Take the newest job back out of the buffer (its submit() failed)."""
        if self._buffer and self._buffer[-1][0] == job_id:
            self._buffer.pop()
            del self._buffer_deps[deps_before:]
            self._buffer_keys.pop(key, None)
            self._buffer_ids.discard(job_id)

    def _check_folder_free(self, job_subdir: str) -> None:
        """A new job's folder may exist already (made by hand), but only as a real folder: a
        symbolic link or a file there would take the job's files outside jobs_dir or fail later."""
        folder = os.path.join(self.jobs_dir, job_subdir)
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise InvalidArgumentError("job_subdir", job_subdir,
                                       f"{folder} is a symbolic link; a job folder must be a real folder inside jobs_dir")  # fmt: skip
        if not stat.S_ISDIR(mode):
            raise InvalidArgumentError("job_subdir", job_subdir, f"{folder} exists and is not a folder")

    def _check_parents(self, spec: JobSpec) -> None:
        if not (spec.after_ok or spec.after_fail or spec.after_any):
            return
        for parameter in ("after_ok", "after_fail", "after_any"):
            ids = [i for i in getattr(spec, parameter) if i not in self._buffer_ids]
            if ids:
                unknown = set(ids) - self.store.existing_ids(ids)
                if unknown:
                    raise InvalidArgumentError(parameter, list(getattr(spec, parameter)),
                                               f"unknown job id(s) {sorted(unknown)}")  # fmt: skip

    def _row(self, job_id: int, key: str, spec: JobSpec) -> tuple[Any, ...]:
        now = time.time()
        r = spec.resources
        # In JOB_INSERT_COLUMNS order.
        return (
            job_id, spec.name, spec.command, spec.job_subdir or str(job_id), key, spec.workdir,
            r.nodes, r.cpus, r.gpus, r.memory_mb, r.walltime_s, r.queue, r.account,
            json.dumps(list(spec.expected_files)) if spec.expected_files else "[]",
            json.dumps(spec.env) if spec.env else "{}", spec.max_retries,
            int(bool(spec.after_ok or spec.after_fail or spec.after_any)), "PENDING", 1, now, now,
            _encode_policy(spec.retry_policy),
        )  # fmt: skip

    @faults.staged("flush")
    def flush(self) -> int:
        """Send held jobs to the scheduler now; returns how many were sent."""
        self._commit()
        return self.engine.flush()

    # ---------------------------------------------------------------------- following
    def track(self, job_id: int) -> JobStatus:
        """The job's status after one look at the scheduler."""
        self._job(job_id)
        self._sync()
        self.engine.poll()
        return JobStatus(self._job(job_id)["status"])

    def poll(self) -> int:
        """One look at the scheduler for every active job; returns how many jobs changed."""
        self._sync()
        return self.engine.poll()

    def monitor(
        self,
        job_ids: Sequence[int] | int | None = None,
        poll_interval: float = 30,
        *,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> dict[int, JobStatus]:
        """Poll until every given job (default: all) has finished, retries included.

        Polls start quick and grow to `poll_interval` while nothing changes (the local backend
        looks every second). Returns {job_id: final status}. With `timeout` (seconds), returns
        when it runs out, with the statuses as they are then. `progress`: draw counts, rate and
        time left on a terminal or notebook (None: when attached to one; False: never); without
        it a summary line per poll goes to the log."""
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise InvalidArgumentError("poll_interval", poll_interval, "must be a positive number of seconds")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidArgumentError("timeout", timeout, "must be a number of seconds >= 0 or None")
        if progress is not None and not isinstance(progress, bool):
            raise InvalidArgumentError("progress", progress, "must be True, False or None")
        from .progress import Progress, summary

        ids = self._monitored_ids(job_ids)
        self._sync()
        started = time.monotonic()
        local = self.engine.backend.name == "local"
        interval = min(1.0, float(poll_interval))
        display = Progress(len(ids), enabled=progress)
        try:
            while True:
                changed = self.engine.poll()
                statuses = self._statuses(ids)
                counts: dict[str, int] = {}
                for status in statuses.values():
                    counts[status] = counts.get(status, 0) + 1
                display.update(counts)
                if not display.enabled:
                    log.info("housekeeper: %s", summary(counts, len(ids)))
                if all(JobStatus(s).is_terminal for s in statuses.values()):
                    left = USAGE_SETTLE_SECONDS if timeout is None else timeout - (time.monotonic() - started)
                    self.engine.settle_usage(min(USAGE_SETTLE_SECONDS, left))  # the last jobs' usage (sacct lags)
                    return {i: JobStatus(s) for i, s in statuses.items()}
                if timeout is not None and time.monotonic() - started >= timeout:
                    return {i: JobStatus(s) for i, s in statuses.items()}
                interval = 1.0 if changed else min(float(poll_interval), interval * 1.5)
                if local:
                    interval = min(interval, 1.0)
                if timeout is not None:
                    interval = min(interval, max(0.0, timeout - (time.monotonic() - started)))
                time.sleep(interval)
        finally:
            display.close()

    def _monitored_ids(self, job_ids: Sequence[int] | int | None) -> list[int]:
        self._commit()
        if job_ids is None:
            return [r[0] for r in self.store.conn.execute("SELECT job_id FROM jobs ORDER BY job_id")]
        if isinstance(job_ids, int) and not isinstance(job_ids, bool):
            job_ids = [job_ids]
        if isinstance(job_ids, (str, bytes)) or not isinstance(job_ids, Iterable):
            raise InvalidArgumentError("job_ids", job_ids, "must be a list of job ids")
        ids = list(job_ids)
        for item in ids:
            if isinstance(item, bool) or not isinstance(item, int):
                raise InvalidArgumentError("job_ids", job_ids, f"contains {item!r}, which is not a job id")
        unknown = set(ids) - self.store.existing_ids(ids)
        if unknown:
            raise InvalidArgumentError("job_ids", job_ids, f"unknown job id(s) {sorted(unknown)}")
        return ids

    def _statuses(self, ids: list[int]) -> dict[int, str]:
        aliases = self.store.resolve(ids) if self.store.has_aliases() else {}
        found = self.store.statuses([aliases.get(i, i) for i in ids])
        return {i: found[aliases.get(i, i)] for i in ids}

    # ------------------------------------------------------------------------ actions
    @faults.staged("cancel")
    def cancel(self, job_id: int | Sequence[int]) -> list[int]:
        """Cancel jobs that have not finished; returns the ids actually cancelled."""
        ids = [job_id] if isinstance(job_id, int) and not isinstance(job_id, bool) else job_id
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidArgumentError("job_id", job_id, "must be a job id or a list of job ids")
        jobs = [self._job(i) for i in ids]
        self._sync()
        jobs = [self._job(j["job_id"]) for j in jobs]
        return self.engine.cancel(jobs)

    @faults.staged("retry")
    def retry(self, job_id: int | Sequence[int]) -> int | list[int]:
        """Run FAILED or CANCELLED jobs again (a new attempt, same id); dependants that were
        cancelled because of them get another chance too. Jobs retried together go out
        together (as arrays). A job submitted with `escalate` gets the grown request its last
        failure calls for. Returns the new attempt number (a list of them for a list)."""
        single = isinstance(job_id, int) and not isinstance(job_id, bool)
        ids = [job_id] if single else job_id
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidArgumentError("job_id", job_id, "must be a job id or a list of job ids")
        jobs = [self._job(i) for i in ids]  # type: ignore[union-attr]
        wrong = [j["job_id"] for j in jobs if j["status"] not in ("FAILED", "CANCELLED")]
        if wrong:
            raise JobStateError(f"job(s) {wrong} are not FAILED or CANCELLED; only those can be retried")
        attempts = [self._retry_one(job) for job in jobs]
        self._sync()
        return attempts[0] if single else attempts

    def _retry_one(self, job: dict[str, Any]) -> int:
        from .engine import decode_policy, escalation

        policy = decode_policy(job["retry_policy"])
        change = escalation(job, job["reason"], job["nodelist"], policy,
                            self.engine._limits(job["queue"]) if policy else None)  # fmt: skip
        note = "retried by hand" + (f" ({change.note})" if change.note else "")
        if not self.store.new_attempt(job["job_id"], job["attempt"], note, kind="manual", memory_mb=change.memory_mb,
                                      walltime_s=change.walltime_s, exclude=change.exclude):  # fmt: skip
            raise JobStateError(f"job {job['job_id']} changed while retrying it; look again")
        self._revive_dependants(job["job_id"])
        return int(job["attempt"]) + 1

    @faults.staged("retry")
    def retry_failed(self, reason: str | Sequence[str] | None = None) -> list[int]:
        """Retry every FAILED job (only those that failed with `reason`, a reason or a list of
        them, when given), all at once: jobs with equal settings go out as one array. Jobs
        cancelled because of them get another chance too. Returns the ids retried."""
        wanted: list[str] | None = None
        if reason is not None:
            items = [reason] if isinstance(reason, str) else reason
            if not isinstance(items, Iterable):
                raise InvalidArgumentError("reason", reason, "must be a failure reason or a list of them")
            wanted = []
            for item in items:
                name = str(getattr(item, "value", item))
                if name not in RETRYABLE_REASONS and name != "submit_error":
                    raise InvalidArgumentError(
                        "reason", reason, f"{item!r} is not a failure reason ({', '.join(RETRYABLE_REASONS)}, submit_error)"
                    )
                wanted.append(name)
        self._sync()
        where, params = "status='FAILED'", []
        if wanted is not None:
            where += f" AND reason IN ({','.join('?' * len(wanted))})"
            params = wanted
        jobs = self.store.jobs_where(where + " ORDER BY job_id", params)
        done = []
        for job in jobs:
            try:
                self._retry_one(job)
            except JobStateError:  # another process got there first
                continue
            done.append(job["job_id"])
        self._sync()
        return done

    def _revive_dependants(self, job_id: int) -> None:
        todo = [job_id]
        seen = {job_id}
        while todo:
            for child_id in self.store.children(todo.pop()):
                if child_id in seen:
                    continue
                seen.add(child_id)
                child = self.store.job(child_id)
                if child and child["status"] == "CANCELLED" and child["reason"] == "dependency_never_satisfied":
                    if self.store.new_attempt(child_id, child["attempt"], f"its parent {job_id} was retried"):
                        todo.append(child_id)

    def cleanup(self, job_id: int | Sequence[int]) -> list[int]:
        """Delete finished jobs' folders (never anything outside jobs_dir); the records stay."""
        ids = [job_id] if isinstance(job_id, int) and not isinstance(job_id, bool) else job_id
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidArgumentError("job_id", job_id, "must be a job id or a list of job ids")
        jobs = [self._job(i) for i in ids]
        busy = [j["job_id"] for j in jobs if not JobStatus(j["status"]).is_terminal]
        if busy:
            raise JobStateError(f"job(s) {busy} have not finished; cancel them or wait before cleanup")
        root = os.path.realpath(self.jobs_dir)
        for job in jobs:
            folder = os.path.join(self.jobs_dir, job["job_subdir"])
            if os.path.islink(folder):
                os.unlink(folder)  # the link goes, never what it points to
            elif os.path.isdir(folder):
                if os.path.dirname(os.path.realpath(folder)) != root:
                    raise StateError(f"{folder} is not directly inside {self.jobs_dir}; not deleting it")
                shutil.rmtree(folder)
        return [j["job_id"] for j in jobs]

    # ------------------------------------------------------------------------ reading
    def list_jobs(self, status: str | JobStatus | Sequence[str | JobStatus] | None = None) -> JobTable:
        """A polars DataFrame with one row per job (iterating it yields dicts)."""
        wanted: list[str] | None = None
        if status is not None:
            items = [status] if isinstance(status, (str, JobStatus)) else status
            if not isinstance(items, Iterable):
                raise InvalidArgumentError("status", status, "must be a JobStatus, its name, or a list of them")
            wanted = []
            for item in items:
                try:
                    wanted.append(JobStatus(str(item).upper()).value)
                except ValueError:
                    raise InvalidArgumentError(
                        "status", status, f"{item!r} is not one of {', '.join(s.value for s in JobStatus)}"
                    ) from None
        self._sync()
        return JobTable(self._frame(wanted))

    _FRAME_SCHEMA: dict[str, Any] = {
        "job_id": pl.Int64, "name": pl.Utf8, "status": pl.Utf8, "reason": pl.Utf8, "attempt": pl.Int32,
        "scheduler_id": pl.Utf8, "job_subdir": pl.Utf8, "exit_code": pl.Int32, "signal": pl.Int32,
        "submitted_at": pl.Float64, "started_at": pl.Float64, "ended_at": pl.Float64, "created_at": pl.Float64,
        "nodes": pl.Int32, "cpus": pl.Int32, "gpus": pl.Int32, "memory_mb": pl.Int64, "walltime_s": pl.Int64,
        "queue": pl.Utf8, "account": pl.Utf8, "max_retries": pl.Int32, "native_state": pl.Utf8,
        "retries_used": pl.Int32, "exclude": pl.Utf8, "nodelist": pl.Utf8,
        "elapsed_s": pl.Float64, "cpu_time_s": pl.Float64, "max_rss_mb": pl.Float64,
    }  # fmt: skip

    def _frame(self, statuses: list[str] | None = None) -> pl.DataFrame:
        where = "1"
        if statuses is not None:  # values are JobStatus names, checked by the caller
            where = "status IN (" + ",".join(f"'{s}'" for s in statuses) + ")"
        frame = self.store.read_frame(", ".join(self._FRAME_SCHEMA), f"FROM jobs WHERE {where}", self._FRAME_SCHEMA,
                                      ["job_id"])  # fmt: skip
        times = ["submitted_at", "started_at", "ended_at", "created_at"]
        return frame.with_columns(
            pl.col("status").cast(_STATUS_ENUM),
            *[(pl.col(c) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias(c) for c in times],
            *efficiency_columns(),
        )

    _ATTEMPT_USAGE_SCHEMA: dict[str, Any] = {
        "job_id": pl.Int64, "attempt": pl.Int32, "status": pl.Utf8, "reason": pl.Utf8, "name": pl.Utf8,
        "queue": pl.Utf8, "account": pl.Utf8, "nodes": pl.Int32, "cpus": pl.Int32, "gpus": pl.Int32,
        "memory_mb": pl.Int64, "walltime_s": pl.Int64, "elapsed_s": pl.Float64, "cpu_time_s": pl.Float64,
        "max_rss_mb": pl.Float64,
    }  # fmt: skip

    def efficiency(
        self,
        by: str | Sequence[str] = "name",
        *,
        percentile: float = 0.95,
        memory_margin: float = 1.2,
        time_margin: float = 1.5,
    ) -> pl.DataFrame:
        """What each group of jobs asked for and what it used, with a request to make next time.

        `by`: "name", "pattern" (the name with runs of digits as '*': sim_001, sim_002 -> sim_*),
        "resources" (equal requests), or a list of columns among name, queue, account, nodes,
        cpus, gpus, memory_mb, walltime_s. Every finished attempt with usage counts (so a
        timeout or oom tells how much was not enough). The suggestion is the `percentile` of
        the successful attempts' peak memory times `memory_margin` (and above any request that
        ran out of memory), their elapsed time times `time_margin` (above any that timed
        out), and the cores they kept busy; rounded up, in the forms submit() takes."""
        groups = _efficiency_groups(by)
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 1:
            raise InvalidArgumentError("percentile", percentile, "must be a fraction in (0, 1], e.g. 0.95")
        for parameter, value in (("memory_margin", memory_margin), ("time_margin", time_margin)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 100:
                raise InvalidArgumentError(parameter, value, "must be a factor >= 1, e.g. 1.2")
        self._sync()
        frame = self.store.read_frame(
            "a.job_id, a.attempt, a.status, a.reason, j.name, j.queue, j.account, j.nodes, j.cpus, j.gpus,"
            " COALESCE(a.memory_mb, j.memory_mb), COALESCE(a.walltime_s, j.walltime_s),"
            " a.elapsed_s, a.cpu_time_s, a.max_rss_mb",
            "FROM attempts a JOIN jobs j ON j.job_id = a.job_id WHERE a.status IN ('COMPLETED', 'FAILED', 'CANCELLED')",
            self._ATTEMPT_USAGE_SCHEMA, ["job_id", "attempt"],
        )  # fmt: skip
        return efficiency_table(frame, groups, percentile, memory_margin, time_margin)

    def job_info(self, job_id: int) -> dict[str, Any]:
        """Everything known about a job: its settings, state, files, dependencies and attempts."""
        job_id = self._job(job_id)["job_id"]  # an alias names its job
        self._sync()
        job = self._job(job_id)
        folder = os.path.join(self.jobs_dir, job["job_subdir"])
        info = dict(job)
        info["status"] = JobStatus(job["status"])
        info["expected_files"] = json.loads(job["expected_files"])
        info["env"] = json.loads(job["env"])
        info["job_dir"] = folder
        info["script"] = jobscript.script_path(self.jobs_dir, job["job_subdir"], job["name"])
        info["stdout"] = os.path.join(folder, jobscript.STDOUT)
        info["stderr"] = os.path.join(folder, jobscript.STDERR)
        info["dependencies"] = [
            {"job_id": parent, "kind": kind} for parent, kind in self.store.parents([job_id]).get(job_id, [])
        ]
        info["attempts"] = [self._attempt_view(a, folder, job["attempt"]) for a in self.store.attempts(job_id)]
        info["events"] = self.store.events(job_id)
        return info

    @staticmethod
    def _attempt_view(attempt: dict[str, Any], folder: str, current: int) -> dict[str, Any]:
        view = {k: v for k, v in attempt.items() if k != "detail"}
        view["detail"] = json.loads(attempt["detail"]) if attempt.get("detail") else {}
        number = attempt["attempt"]
        if number == current:
            view["stdout"] = os.path.join(folder, jobscript.STDOUT)
            view["stderr"] = os.path.join(folder, jobscript.STDERR)
        else:
            view["stdout"] = jobscript.attempt_file(folder, jobscript.STDOUT, number)
            view["stderr"] = jobscript.attempt_file(folder, jobscript.STDERR, number)
        return view

    def failure_info(self, job_id: int, *, excused: bool = False) -> dict[str, Any]:
        """Why the job failed: reason, exit code, signal, scheduler state, offending log lines
        (file, line, text, pattern; the first 20), missing files and every attempt.

        `excused=True` also lists the error lines the whitelist excused, each with the entry
        that excused it (read from the logs now, so it costs a scan)."""
        if not isinstance(excused, bool):
            raise InvalidArgumentError("excused", excused, "must be True or False")
        info = self.job_info(job_id)
        attempts = info["attempts"]
        current = attempts[-1] if attempts else {"detail": {}}
        detail = current.get("detail") or {}
        patterns = detail.get("log_patterns") or []
        lines = [
            {"file": os.path.join(info["job_dir"], f), "line": n, "text": t,
             "pattern": patterns[i] if i < len(patterns) else None}
            for i, (f, n, t) in enumerate(detail.get("log_lines") or [])
        ]  # fmt: skip
        return {
            "job_id": job_id,
            "name": info["name"],
            "status": info["status"],
            "reason": info["reason"],
            "exit_code": info["exit_code"],
            "signal": info["signal"],
            "scheduler_state": info["native_state"],
            "scheduler_id": info["scheduler_id"],
            "log_lines": lines,
            "log_errors": detail.get("log_errors", 0),
            "log_excused": detail.get("log_excused", 0),
            "missing_files": detail.get("missing_files", []),
            "submit_error": detail.get("submit_error"),
            "scheduler_message": detail.get("scheduler_message"),
            **({"excused_lines": self._excused_lines(info["job_dir"])} if excused else {}),
            "attempts": [
                {k: a.get(k) for k in ("attempt", "scheduler_id", "status", "reason", "exit_code", "signal",
                                       "native_state", "submitted_at", "started_at", "ended_at", "stdout", "stderr")}
                for a in attempts
            ],  # fmt: skip
        }

    def _excused_lines(self, folder: str, limit: int = 20) -> list[dict[str, Any]]:
        from .scan import excusing_entry, scan_file

        out: list[dict[str, Any]] = []
        for filename in (jobscript.STDOUT, jobscript.STDERR):
            path = os.path.join(folder, filename)
            every = scan_file(path, error_patterns=self.rules.error_patterns, max_lines=1000)
            for (number, text), pattern in zip(every.lines, every.patterns):
                entry = excusing_entry(text, self.rules.error_whitelist, self.rules.whitelist_threshold)
                if entry is not None and len(out) < limit:
                    out.append({"file": path, "line": number, "text": text, "pattern": pattern, "excused_by": entry})
        return out

    def export_state(self, path: str | os.PathLike[str]) -> str:
        """Write every job and every attempt to `.json` or `.parquet`; returns the path."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgumentError("path", path, "must be a file path ending in .json or .parquet")
        target = os.fspath(path)
        suffix = Path(target).suffix.lower()
        if suffix not in (".json", ".parquet"):
            raise InvalidArgumentError("path", path, "must end in .json or .parquet")
        self._sync()
        extra = {"job_id": pl.Int64, "command": pl.Utf8, "workdir": pl.Utf8}
        jobs = self._frame().join(self.store.read_frame(", ".join(extra), "FROM jobs", extra, []), on="job_id", how="left")
        attempt_schema = {
            "job_id": pl.Int64, "attempt": pl.Int32, "scheduler_id": pl.Utf8, "status": pl.Utf8,
            "reason": pl.Utf8, "native_state": pl.Utf8, "exit_code": pl.Int32, "signal": pl.Int32,
            "submitted_at": pl.Float64, "started_at": pl.Float64, "ended_at": pl.Float64, "memory_mb": pl.Int64,
            "walltime_s": pl.Int64, "exclude": pl.Utf8, "counted": pl.Int32, "elapsed_s": pl.Float64,
            "cpu_time_s": pl.Float64, "max_rss_mb": pl.Float64, "nodelist": pl.Utf8, "detail": pl.Utf8,
        }  # fmt: skip
        attempts = self.store.read_frame(", ".join(attempt_schema), "FROM attempts", attempt_schema, ["job_id", "attempt"])
        nested = attempts.group_by("job_id", maintain_order=True).agg(
            pl.struct(pl.exclude("job_id")).alias("attempts")
        )
        table = jobs.join(nested, on="job_id", how="left").with_columns(pl.col("status").cast(pl.Utf8))
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        temporary = f"{target}.{os.getpid()}.tmp"
        if suffix == ".parquet":
            table.write_parquet(temporary)
        else:
            document = {
                "housekeeper_export": 1,
                "jobs_dir": self.jobs_dir,
                "scheduler": self.scheduler,
                "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "jobs": table.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%z")).to_dicts(),
            }
            with open(temporary, "w") as handle:
                json.dump(document, handle, indent=1, default=str)
        os.replace(temporary, target)
        return target

    # ---------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Commit and flush held jobs. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            try:
                self._commit()
                if self._engine is not None or self.store.conn.execute(
                    "SELECT 1 FROM jobs WHERE status='PENDING' LIMIT 1"
                ).fetchone():
                    self.engine.flush()
            finally:
                self._closed = True
                self.store.close()

    def __enter__(self) -> Housekeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            with self._lock:  # keep what was recorded, but send nothing on an error
                self._commit()

    def __repr__(self) -> str:
        return f"housekeeper(jobs_dir={self.jobs_dir!r})"


def efficiency_columns() -> list[pl.Expr]:
    """Used / requested, per job: cpu (cpu time over elapsed x cores), memory (peak over the
    request) and time (elapsed over the wall time); null where either side is unknown."""

    def ratio(used: pl.Expr, asked: pl.Expr) -> pl.Expr:
        return pl.when(asked > 0).then(used / asked).otherwise(None)

    return [
        ratio(pl.col("cpu_time_s"), pl.col("elapsed_s") * pl.col("cpus") * pl.col("nodes")).alias("cpu_efficiency"),
        ratio(pl.col("max_rss_mb"), pl.col("memory_mb").cast(pl.Float64)).alias("memory_efficiency"),
        ratio(pl.col("elapsed_s"), pl.col("walltime_s").cast(pl.Float64)).alias("time_efficiency"),
    ]


_GROUP_COLUMNS = ("name", "queue", "account", "nodes", "cpus", "gpus", "memory_mb", "walltime_s")


def _efficiency_groups(by: Any) -> list[str]:
    if by == "resources":
        return ["queue", "nodes", "cpus", "gpus", "memory_mb", "walltime_s"]
    if by in ("name", "pattern"):
        return [by]
    items = [by] if isinstance(by, str) else by
    if not isinstance(items, Iterable) or not items:
        raise InvalidArgumentError("by", by, "must be 'name', 'pattern', 'resources' or a list of columns")
    columns = list(items)
    for column in columns:
        if column not in _GROUP_COLUMNS:
            raise InvalidArgumentError(
                "by", by, f"{column!r} is not one of 'name', 'pattern', 'resources' or {', '.join(_GROUP_COLUMNS)}"
            )
    return columns


def efficiency_table(
    attempts: pl.DataFrame, groups: list[str], percentile: float, memory_margin: float, time_margin: float
) -> pl.DataFrame:
    """The efficiency() summary of finished attempts (see Housekeeper.efficiency)."""
    frame = attempts.with_columns(
        pl.col("name").str.replace_all(r"[0-9]+", "*").alias("pattern"),
        pl.when(pl.col("elapsed_s") > 0).then(pl.col("cpu_time_s") / pl.col("elapsed_s")).alias("cores_used"),
    )
    ok = pl.col("status") == "COMPLETED"
    q = percentile
    summary = frame.group_by(groups, maintain_order=True).agg(
        pl.col("job_id").n_unique().alias("jobs"),
        pl.len().alias("attempts"),
        ok.sum().alias("completed"),
        (pl.col("reason") == "oom").sum().alias("oom"),
        (pl.col("reason") == "timeout").sum().alias("timeout"),
        pl.col("cpus").max().alias("cpus_asked") if "cpus" not in groups else pl.col("cpus").first().alias("cpus_asked"),
        pl.col("memory_mb").max().alias("memory_mb_asked"),
        pl.col("walltime_s").max().alias("walltime_s_asked"),
        pl.col("max_rss_mb").filter(ok).median().alias("max_rss_mb_median"),
        pl.col("max_rss_mb").filter(ok).quantile(q, "higher").alias("max_rss_mb_p"),
        pl.col("max_rss_mb").max().alias("max_rss_mb_max"),
        pl.col("elapsed_s").filter(ok).median().alias("elapsed_s_median"),
        pl.col("elapsed_s").filter(ok).quantile(q, "higher").alias("elapsed_s_p"),
        pl.col("cores_used").filter(ok).quantile(q, "higher").alias("cores_used_p"),
        (pl.col("cpu_time_s") / (pl.col("elapsed_s") * pl.col("cpus") * pl.col("nodes"))).filter(ok & (pl.col("elapsed_s") > 0))
        .median().alias("cpu_efficiency"),
        (pl.col("max_rss_mb") / pl.col("memory_mb")).filter(ok).median().alias("memory_efficiency"),
        (pl.col("elapsed_s") / pl.col("walltime_s")).filter(ok).median().alias("time_efficiency"),
        pl.col("memory_mb").filter(pl.col("reason") == "oom").max().alias("_oom_floor"),
        pl.col("walltime_s").filter(pl.col("reason") == "timeout").max().alias("_timeout_floor"),
        (pl.col("cpus") * pl.col("nodes")).max().alias("_cores_asked"),
    )
    percent = f"p{round(q * 100)}"
    memory = pl.max_horizontal(pl.col("max_rss_mb_p") * memory_margin, pl.col("_oom_floor") * 1.25)
    walltime = pl.max_horizontal(pl.col("elapsed_s_p") * time_margin, pl.col("_timeout_floor") * 1.5, pl.lit(60.0))
    # With no success to measure, a group that only ran out of memory (time) gets 1.5x (2x) its
    # largest request as a start.
    memory = pl.when(pl.col("max_rss_mb_p").is_not_null()).then(memory).otherwise(pl.col("_oom_floor") * 1.5)
    walltime = pl.when(pl.col("elapsed_s_p").is_not_null()).then(walltime).otherwise(pl.col("_timeout_floor") * 2.0)
    summary = summary.with_columns(
        _round_memory(memory).alias("suggested_memory_mb"),
        ((walltime / 60).ceil().cast(pl.Int64) * 60).alias("suggested_walltime_s"),
        pl.when(pl.col("cores_used_p").is_not_null())
        .then(pl.min_horizontal(pl.max_horizontal(pl.col("cores_used_p").ceil(), pl.lit(1.0)), pl.col("_cores_asked")))
        .cast(pl.Int64).alias("suggested_cpus"),
    )
    summary = summary.with_columns(
        pl.col("suggested_memory_mb").map_elements(_memory_text, return_dtype=pl.Utf8).alias("suggested_memory"),
        pl.col("suggested_walltime_s").map_elements(_walltime_text, return_dtype=pl.Utf8).alias("suggested_walltime"),
    )
    return summary.drop("_oom_floor", "_timeout_floor", "_cores_asked").rename({
        "max_rss_mb_p": f"max_rss_mb_{percent}", "elapsed_s_p": f"elapsed_s_{percent}", "cores_used_p": f"cores_used_{percent}",
    })  # fmt: skip


def _round_memory(mb: pl.Expr) -> pl.Expr:
    """Up to 64 MB steps below 1 GB, 256 MB steps above."""
    step = pl.when(mb < 1024).then(64.0).otherwise(256.0)
    return ((mb / step).ceil() * step).cast(pl.Int64)


def _memory_text(mb: int) -> str:
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def _walltime_text(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_POLICY_TEXT: dict[RetryPolicy, str] = {}


def _encode_policy(policy: RetryPolicy | None) -> str | None:
    if policy is None:
        return None
    text = _POLICY_TEXT.get(policy)
    if text is None:
        text = _POLICY_TEXT[policy] = msgspec.json.encode(policy).decode()
    return text


def _close_at_exit(ref: weakref.ref[Housekeeper]) -> None:
    hk = ref()
    if hk is not None and not hk._closed:
        try:
            hk.close()
        except Exception as exc:  # noqa: BLE001 - at exit there is no one left to raise to
            log.error("housekeeper: could not flush at exit: %s", exc)


housekeeper = Housekeeper
