"""The work: flushing held jobs to the scheduler (as arrays), one poll, verdicts, retries.

flush: PENDING jobs -> ready? (dependencies, max_queued) -> groups of equal settings -> claim in
       the store -> scripts on disk -> one scheduler submission per group -> QUEUED with ids
poll:  active jobs -> one scheduler status query -> exit records of the finished -> verdicts ->
       store (changed rows only) -> retries -> dependants that can never run are cancelled
"""
from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

import msgspec
import polars as pl

from . import faults, jobscript
from .checks import Rules
from .errors import SchedulerError, StateError
from .models import FREE_RETRY_REASONS, ExitRecord, JobStatus, Reason, Resources, RetryPolicy
from .scan import scan_file
from .schedulers.base import ErrorKind, Limits, SubmitRequest
from .store import Store, Update, storage_problem
from .verdict import SCHEDULER_REASONS, complete_record, decide, read_record, read_running, reason_from_messages

log = logging.getLogger("housekeeper")

DEP_NATIVE = {"ok": "afterok", "fail": "afternotok", "any": "afterany"}
# Holds that someone put on purpose: reported in the job's state, never undone by housekeeper.
_LEFT_TO_HUMANS = frozenset({"JobHeldUser", "JobHeldAdmin"})
# Dependencies are judged by housekeeper itself; unavailable nodes come back after maintenance.
_WAITED_OUT = ("Dependency", "ReqNodeNotAvail")
USAGE_WAIT_SECONDS = 300.0  # how long accounting may lag behind a job's end before its usage is given up
STALE_CLAIM_SECONDS = 600.0  # a claim this old is abandoned even if its owner's pid still exists
_IN_FLIGHT: set[str] = set()  # tokens of the submissions this process is sending now
# What a poll reads of every active job (the rest only for the few it judges one by one).
_ACTIVE: dict[str, Any] = {
    "job_id": pl.Int64, "attempt": pl.Int64, "status": pl.Utf8, "scheduler_id": pl.Utf8, "started_at": pl.Float64,
    "submitted_at": pl.Float64,
}  # fmt: skip


class Backend(Protocol):
    name: str
    native_dependencies: bool

    @property
    def max_array_size(self) -> int:
        """The most jobs one submission may carry (1: no arrays)."""

    def directives(self, req: SubmitRequest) -> list[str]: ...

    def submit(self, req: SubmitRequest) -> list[str]: ...

    def poll(
        self, scheduler_ids: Sequence[str], since: float | None = None, folders: dict[str, str] | None = None,
        usage_ids: Sequence[str] = (),
    ) -> pl.DataFrame:
        """One status frame for these ids. `since`: earliest submission (recycled-id guard);
        `folders`: each id's job folder (its running.json names the scheduler's own ids);
        `usage_ids`: finished jobs whose usage accounting is still asked for (rows come back)."""

    def cancel(self, scheduler_ids: Sequence[str]) -> None: ...

    def lookup(self, token: str, since: float) -> list[str] | None:
        """Scheduler ids of the jobs submitted with this tag (array tasks in index order);
        [] when the scheduler has none; None when it cannot tell right now."""


def dependency_state(kind: str, parent_status: str) -> bool | None:
    """True: satisfied; False: can never be; None: not decided yet (parent not finished)."""
    if parent_status not in ("COMPLETED", "FAILED", "CANCELLED"):
        return None
    if kind == "ok":
        return parent_status == "COMPLETED"
    if kind == "fail":
        return parent_status in ("FAILED", "CANCELLED")
    return True


class Engine:
    """Moves jobs forward. Holds no job state of its own: everything lives in the store."""

    def __init__(
        self,
        *,
        store: Store,
        backend: Backend,
        jobs_dir: str,
        rules: Rules,
        rules_path: str,
        max_queued: int | None = None,
        file_grace: float = 30.0,
        lost_after: float = 120.0,
        fail_fast: bool = False,
        free_retries: int = 3,
    ) -> None:
        self.store = store
        self.backend = backend
        self.jobs_dir = jobs_dir
        self.rules = rules
        self.rules_path = rules_path
        self.max_queued = max_queued
        self.file_grace = file_grace
        self.lost_after = lost_after
        self.fail_fast = fail_fast
        self.free_retries = free_retries
        # fail_fast: where the last look at each running job's logs stopped (offset, line)
        self._scan_from: dict[tuple[int, int, str], tuple[int, int]] = {}
        self._retries_resumed = False  # see _pay_owed_retries
        # finished attempts whose usage accounting has not recorded yet: id -> (job, attempt, give up at)
        self._usage_due: dict[str, tuple[int, int, float]] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.spool_dir = os.path.join(jobs_dir, jobscript.HK_DIR, "spool")
        self.array_dir = os.path.join(jobs_dir, jobscript.HK_DIR, "arrays")

    # ---------------------------------------------------------------------------- flush
    @faults.staged("flush")
    def flush(self) -> int:
        """Send every ready PENDING job to the scheduler; returns how many were sent."""
        self.recover()
        total = 0
        for _ in range(100):  # waves: parents sent in one wave free their children for the next
            sent, progressed = self._flush_wave()
            total += sent
            if not progressed:
                break
        return total

    def _room(self) -> int | None:
        if self.max_queued is None:
            return None
        counts = self.store.status_counts()
        return max(0, self.max_queued - counts.get("QUEUED", 0) - counts.get("RUNNING", 0))

    def _flush_wave(self) -> tuple[int, bool]:
        pending = self.store.pending_rows()
        if not pending:
            return 0, False
        room = self._room()
        with_deps = [j["job_id"] for j in pending if j["has_deps"]]
        parents = self.store.parents(with_deps) if with_deps else {}
        parent_rows = {
            p["job_id"]: p for p in self.store.jobs_by_ids(list({pid for deps in parents.values() for pid, _ in deps}))
        }
        ready: list[tuple[Any, tuple[tuple[str, tuple[str, ...]], ...]]] = []
        never: list[Update] = []
        for job in pending:
            if not job["has_deps"]:
                ready.append((job, ()))
                continue
            native: dict[str, list[str]] = {}
            blocked = impossible = False
            for parent_id, kind in parents.get(job["job_id"], []):
                parent = parent_rows.get(parent_id)
                if parent is None:
                    impossible = True
                    break
                state = dependency_state(kind, self._outcome_so_far(parent))
                if state is False:
                    impossible = True
                    break
                if state is True:
                    continue
                # Native dependencies only on a last attempt: the scheduler would judge an earlier
                # one, which a retry replaces. (A free retry after node failure or preemption
                # still can; _retry then takes the children back, see _withdraw_children.)
                final_attempt = parent["retries_used"] >= parent["max_retries"]
                if (
                    self.backend.native_dependencies
                    and parent["status"] in ("QUEUED", "RUNNING")
                    and parent["scheduler_id"]
                    and final_attempt
                    and getattr(self.backend, "can_depend_on", lambda _sid: True)(parent["scheduler_id"])
                ):
                    native.setdefault(DEP_NATIVE[kind], []).append(parent["scheduler_id"])
                else:
                    blocked = True
            if impossible:
                never.append(Update(job_id=job["job_id"], attempt=job["attempt"], status="CANCELLED",
                                    reason=Reason.DEPENDENCY_NEVER_SATISFIED.value,
                                    note="a job it depends on ended the wrong way"))  # fmt: skip
                continue
            if blocked:
                continue
            deps = tuple((kind, tuple(ids)) for kind, ids in sorted(native.items()))
            ready.append((job, deps))
        applied = self.store.apply(never) if never else []
        if room is not None:
            ready = ready[:room]
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for job, deps in ready:
            key = (job["nodes"], job["cpus"], job["gpus"], job["memory_mb"], job["walltime_s"], job["queue"],
                   job["account"], job["exclude"], job["workdir"], deps)  # fmt: skip
            groups.setdefault(key, []).append(job)
        sent = 0
        for key, jobs in groups.items():
            size = max(1, self.backend.max_array_size)
            for start in range(0, len(jobs), size):
                sent += self._submit_group(jobs[start : start + size], key[-1])
        return sent, bool(sent or applied)

    def _request(self, job: Any, deps: tuple[tuple[str, tuple[str, ...]], ...], script: str,
                 comment: str, array_size: int | None = None) -> SubmitRequest:  # fmt: skip
        folder = jobscript.job_dir(self.jobs_dir, job["job_subdir"])
        resources = Resources(
            nodes=job["nodes"], cpus=job["cpus"], gpus=job["gpus"], memory_mb=job["memory_mb"],
            walltime_s=job["walltime_s"], queue=job["queue"], account=job["account"], exclude=job["exclude"],
        )  # fmt: skip
        return SubmitRequest(
            script_path=script, name=job["name"], resources=resources, workdir=job["workdir"],
            array_size=array_size, dependencies=deps,
            stdout_path=None if array_size else os.path.join(folder, jobscript.STDOUT),
            stderr_path=None if array_size else os.path.join(folder, jobscript.STDERR),
            spool_dir=self.spool_dir if array_size else None, comment=comment,
        )  # fmt: skip

    def _script(self, job: Any, directives: list[str]) -> tuple[str, str]:
        """(path, text) of a job's whole script for its current attempt: header + body."""
        path, header = self._header(job, directives)
        return path, header + self._body()

    def _body(self) -> str:
        """The part of every job script of this run that is the same (see jobscript)."""
        return jobscript.job_script_body(sys.executable, self.rules_path, self.file_grace)

    def _header(self, job: Any, directives: list[str]) -> tuple[str, str]:
        """(path, header) of a job's script: the part that is its own (see _script)."""
        folder = f"{self.jobs_dir}/{job['job_subdir']}"  # both parts checked: no separators, no '..'
        text = jobscript.render_job_header(
            job_id=job["job_id"], attempt=job["attempt"], name=job["name"], command=job["command"],
            folder=folder, workdir=job["workdir"], env=_decode_json(job["env"]),
            expected_files=_decode_json(job["expected_files"]), directives=directives,
        )  # fmt: skip
        return f"{folder}/{job['name']}.sh", text

    def _submit_group(self, jobs: list[Any], deps: tuple[tuple[str, tuple[str, ...]], ...]) -> int:
        token = f"hk:{uuid.uuid4().hex[:16]}"
        _IN_FLIGHT.add(token)  # recover() leaves the claim alone while this process is sending it
        try:
            return self._send_group(jobs, deps, token)
        finally:
            _IN_FLIGHT.discard(token)

    def _send_group(self, jobs: list[Any], deps: tuple[tuple[str, tuple[str, ...]], ...], token: str) -> int:
        pairs = [(j["job_id"], j["attempt"]) for j in jobs]
        submission_id = self.store.try_claim(pairs, token, self.owner, "")
        if submission_id is None:
            return 0  # another driver is submitting these
        faults.point("after_claim")
        target = self.jobs_dir  # what was being written, for the error
        try:
            if len(jobs) == 1:
                job = jobs[0]
                request = self._request(job, deps, jobscript.script_path(self.jobs_dir, job["job_subdir"], job["name"]),
                                        token)  # fmt: skip
                path, text = self._script(job, self.backend.directives(request))
                target = path
                jobscript.install_script(path, text, job["attempt"] - 1)
            else:
                # Array tasks install their own folder and (ready-made) script when they start,
                # so this does not wait on a mkdir per job (see jobscript.render_array_script).
                jobscript.make_dirs(self.array_dir)
                jobscript.make_dirs(self.spool_dir)
                base = os.path.join(self.array_dir, str(submission_id))
                target = f"{base}.tasks"
                note = [f"# sent as one task of the array in {base}.sh"]
                width = jobscript.write_array_manifest(base, (self._header(job, note) for job in jobs), self._body())
                request = self._request(jobs[0], deps, base + ".sh", token, array_size=len(jobs))
                request.name = jobs[0]["name"] if len({j["name"] for j in jobs}) == 1 else "hk-array"
                text = jobscript.render_array_script(
                    directives=self.backend.directives(request), manifest=base, width=width, count=len(jobs)
                )
                _write_text(base + ".sh", text, executable=True)
        except OSError as exc:
            self._files_failed(submission_id, jobs, exc, target)
        try:
            ids = self.backend.submit(request)
        except SchedulerError as exc:
            return self._submit_failed(submission_id, jobs, exc)
        except OSError as exc:  # the local backend's queue lives in jobs_dir; nothing was queued
            self._files_failed(submission_id, jobs, exc, exc.filename or self.jobs_dir)
        if len(ids) != len(jobs):
            raise RuntimeError(f"scheduler returned {len(ids)} ids for {len(jobs)} jobs")
        faults.point("after_submit")
        now = time.time()
        self.store.record_submitted(
            submission_id, ids[0].split("_")[0], [(j, a, sid) for (j, a), sid in zip(pairs, ids)], now
        )
        log.info("submitted %d job(s) as %s", len(jobs), ids[0] if len(ids) == 1 else f"array {ids[0]}..")
        return len(jobs)

    def _files_failed(self, submission_id: int, jobs: list[Any], exc: OSError, target: str) -> NoReturn:
        """Writing a submission's files failed (e.g. a full or read-only disk): nothing reached
        the scheduler, so the jobs are given back, still PENDING, for a later flush."""
        ids = f"job {jobs[0]['job_id']}" if len(jobs) == 1 else f"{len(jobs)} jobs ({jobs[0]['job_id']}..)"
        message = f"cannot write the files of {ids} at {target}: {storage_problem(exc) or exc}"
        try:
            self.store.release_claim(submission_id, message)
        except StateError as release_exc:  # the database is on the same full disk: the next
            log.error("housekeeper: %s", release_exc)  # flush's recover() gives them back
        raise StateError(f"{message}; nothing was sent, the jobs stay PENDING and a later flush sends them") from exc

    def _submit_failed(self, submission_id: int, jobs: list[dict[str, Any]], exc: SchedulerError) -> int:
        kind = exc.kind
        if exc.transient or kind == ErrorKind.TRANSIENT.value:
            log.warning("submission deferred, the scheduler is not answering: %s", exc)
            self.store.release_claim(submission_id, str(exc))
            return 0
        active = self.store.status_counts()
        if kind == ErrorKind.POLICY.value and (active.get("QUEUED", 0) + active.get("RUNNING", 0)) > 0:
            log.warning("submission held back until running jobs make room: %s", exc)
            self.store.release_claim(submission_id, str(exc))
            return 0
        self.store.release_claim(submission_id, str(exc))
        message = (exc.stderr or exc.stdout or str(exc)).strip()
        self.store.apply([
            Update(job_id=j["job_id"], attempt=j["attempt"], status="FAILED", reason=Reason.SUBMIT_ERROR.value,
                   detail={"submit_error": message, "command": exc.command}, note=message[:500])
            for j in jobs
        ])  # fmt: skip
        log.error("submission refused by the scheduler: %s", message)
        return 0

    # -------------------------------------------------------------------------- recover
    def _owner_gone(self, submission: dict[str, Any]) -> bool:
        host, _, pid = str(submission["owner"]).rpartition(":")
        if time.time() - float(submission["created_at"]) > STALE_CLAIM_SECONDS:
            return True
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            # Ours: abandoned unless being sent right now (e.g. a claim a full disk kept us
            # from giving back, or one whose accepted submission we could not record).
            return submission["token"] not in _IN_FLIGHT
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def recover(self) -> int:
        """Finish the submissions of drivers that died between claiming jobs and recording
        what the scheduler answered: adopt what the scheduler has, release the rest.
        Returns how many jobs were adopted."""
        if not self._retries_resumed:
            self._pay_owed_retries()
        adopted = 0
        for submission in self.store.submissions_in_state("claimed"):
            if not self._owner_gone(submission):
                continue
            submission_id = submission["submission_id"]
            jobs = self.store.jobs_where(
                "submission_id=? AND status='PENDING' ORDER BY job_id", (submission_id,)
            )
            try:
                found = self.backend.lookup(submission["token"], float(submission["created_at"]) - 60)
            except SchedulerError as exc:
                log.warning("cannot check submission %s yet: %s", submission["token"], exc)
                continue
            if found is None:
                continue
            if not found or not jobs:
                self.store.release_claim(submission_id, "its driver died before the scheduler took it")
                log.warning("driver %s died before submitting %d job(s); they will be submitted again",
                            submission["owner"], len(jobs))  # fmt: skip
                continue
            if len(found) != len(jobs):
                log.error("submission %s: the scheduler has %d jobs for %d claimed; leaving it for a human",
                          submission["token"], len(found), len(jobs))  # fmt: skip
                continue
            self.store.record_submitted(
                submission_id, found[0].split("_")[0],
                [(j["job_id"], j["attempt"], sid) for j, sid in zip(jobs, found)], time.time(),
            )  # fmt: skip
            adopted += len(jobs)
            log.warning("adopted %d job(s) submitted by a driver that died (%s)", len(jobs), submission["owner"])
        return adopted

    # ----------------------------------------------------------------------------- poll
    @faults.staged("poll")
    def poll(self) -> int:
        """One look at the scheduler for all active jobs; returns how many jobs changed."""
        active = self.store.read_frame(", ".join(_ACTIVE), "FROM jobs WHERE status IN ('QUEUED', 'RUNNING')", _ACTIVE, [])
        applied: list[Update] = []
        moved = 0
        if active.height:
            try:
                since = float(active.get_column("submitted_at").fill_null(time.time()).min()) - 300  # type: ignore[arg-type]
                folders = None
                if getattr(self.backend, "wants_folders", False):  # PBS through its wrapper
                    folders = {sid: jobscript.job_dir(self.jobs_dir, sub) for sid, sub in self.store.conn.execute(
                        "SELECT scheduler_id, job_subdir FROM jobs WHERE status IN ('QUEUED', 'RUNNING')")}  # fmt: skip
                frame = self.backend.poll(active.get_column("scheduler_id").to_list(), since=since, folders=folders,
                                          usage_ids=list(self._usage_due))  # fmt: skip
            except SchedulerError as exc:
                if not exc.transient:
                    raise
                log.warning("scheduler not answering, no change recorded this time: %s", exc)
                return 0
            if self._usage_due:
                due = frame.filter(pl.col("scheduler_id").is_in(list(self._usage_due)))
                self._fill_usage({r["scheduler_id"]: r for r in due.iter_rows(named=True)})
            moved, applied = self._judge(active, frame)
            if self.fail_fast:
                applied += self.check_running_logs()
        elif self._usage_due:
            self.settle_usage(0)
        self._retry(applied)
        self._cancel_impossible()
        self.flush()
        return moved + len(applied)

    def _want_usage(self, updates: Sequence[tuple[str | None, Update]], now: float) -> None:
        """Finished attempts that ran but whose usage accounting did not know yet (it lags the
        queue by seconds): asked again with the next polls' accounting query, for a while."""
        if not getattr(self.backend, "accounting_lags", False):
            return
        for scheduler_id, update in updates:
            if (scheduler_id and update.status in ("COMPLETED", "FAILED") and update.cpu_time_s is None
                    and update.started_at is not None):  # fmt: skip
                self._usage_due[scheduler_id] = (update.job_id, update.attempt, now + USAGE_WAIT_SECONDS)

    def _fill_usage(self, rows: dict[str, dict[str, Any]]) -> None:
        if not self._usage_due:
            return
        now = time.time()
        found: list[Update] = []
        for scheduler_id, (job_id, attempt, give_up) in list(self._usage_due.items()):
            row = rows.get(scheduler_id)
            if row is not None and row.get("cpu_time_s") is not None:
                found.append(Update(job_id=job_id, attempt=attempt, status="", elapsed_s=row.get("elapsed_s"),
                                    cpu_time_s=row.get("cpu_time_s"), max_rss_mb=row.get("max_rss_mb"),
                                    nodelist=row.get("node")))  # fmt: skip
                del self._usage_due[scheduler_id]
            elif now > give_up:
                del self._usage_due[scheduler_id]
        if found:
            self.store.record_usage(found)

    def settle_usage(self, wait: float) -> None:
        """Ask accounting for the usage of finished attempts it had not recorded yet, again
        every 2 s for up to `wait` seconds (0: once)."""
        usage = getattr(self.backend, "usage", None)
        deadline = time.time() + wait
        while self._usage_due and usage is not None:
            try:
                frame = usage(list(self._usage_due), time.time() - 7 * 86400)
            except SchedulerError as exc:
                log.info("usage of finished jobs not read yet: %s", exc)
                return
            if frame is None:  # no accounting to ask (any more)
                self._usage_due.clear()
                return
            self._fill_usage({r["scheduler_id"]: r for r in frame.iter_rows(named=True)})
            if not self._usage_due or time.time() + 2 > deadline:
                return
            time.sleep(2)

    def _pay_owed_retries(self) -> None:
        """Failures whose retry was due but never made: a driver killed between recording a
        failure and the new attempt leaves the job FAILED with a retry owed. Paid once per
        driver, before anything judges its dependants (new_attempt checks the attempt, so two
        drivers cannot both pay it)."""
        free = ",".join(f"'{r}'" for r in sorted(FREE_RETRY_REASONS))
        rows = self.store.jobs_where(
            f"status='FAILED' AND reason IS NOT NULL AND reason != '{Reason.SUBMIT_ERROR.value}' "
            f"AND (retries_used < max_retries OR reason IN ({free}))"
        )
        if rows:
            self._retry([Update(job_id=j["job_id"], attempt=j["attempt"], status="FAILED", reason=j["reason"],
                                nodelist=j["nodelist"]) for j in rows])  # fmt: skip
        self._retries_resumed = True

    def _judge(self, active: pl.DataFrame, frame: pl.DataFrame) -> tuple[int, list[Update]]:
        """Verdicts for one poll: (routine moves applied, other changes applied).

        In columns first: the jobs the scheduler shows queued or running (nearly all of a big
        run) only change state, written in one statement for those that did. The rest (ended,
        gone from the queue, stuck, held) are few and judged one by one, with their files."""
        if frame.get_column("scheduler_id").n_unique() < frame.height:
            frame = frame.unique("scheduler_id", keep="last", maintain_order=True)
        joined = active.join(frame.with_columns(pl.lit(True).alias("_seen")), on="scheduler_id", how="left", suffix="_q")
        seen, queue_status = pl.col("_seen").fill_null(False), pl.col("status_q")
        live = seen & queue_status.is_in(["QUEUED", "RUNNING"]) & ~(
            (queue_status == "QUEUED") & pl.col("never_runs").fill_null(False)
        )
        unread = seen & queue_status.is_null()  # a state we could not read: left as it is
        running = queue_status == "RUNNING"
        moves = joined.filter(live & (
            (queue_status != pl.col("status"))
            | (running & pl.col("started_at").is_null() & pl.col("started_at_q").is_not_null())
        )).select(
            "job_id", "attempt", queue_status.alias("status"), "native_state",
            pl.when(running).then(pl.col("started_at_q")).otherwise(None).alias("started_at"),
        )  # fmt: skip
        moved = self.store.apply_moves(moves.rows()) if moves.height else 0
        rest = joined.filter(~live & ~unread).get_column("job_id").to_list()
        if not rest:
            return moved, []
        jobs = self.store.jobs_by_ids(rest)
        wanted = [j["scheduler_id"] for j in jobs]
        rows = {r["scheduler_id"]: r for r in frame.filter(pl.col("scheduler_id").is_in(wanted)).iter_rows(named=True)}
        return moved, self._judge_each(jobs, rows)

    def _judge_each(self, active: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> list[Update]:
        now = time.time()
        updates: list[Update] = []
        missing: list[int] = []
        lost: list[Update] = []
        stuck: list[tuple[dict[str, Any], str]] = []
        held: list[dict[str, Any]] = []
        dep_jobs = [j["job_id"] for j in active if j["has_deps"]]
        impossible = self._impossible(dep_jobs) if dep_jobs else set()
        waiting_on_parents = self._parents_ending_now(dep_jobs, active, rows) if dep_jobs else set()
        for job in active:
            sched = rows.get(job["scheduler_id"])
            status = sched.get("status") if sched else None
            if sched is not None and status is None:
                continue  # a state we could not read: leave the job as it is
            if status == "CANCELLED" and job["job_id"] in waiting_on_parents and job["job_id"] not in impossible:
                # SLURM cancels a dependant whose parent just failed (kill-on-invalid-dep) in the
                # same breath; judged next poll, after its parent, it gets the right reason.
                continue
            folder = jobscript.job_dir(self.jobs_dir, job["job_subdir"])
            if sched is not None and status == "QUEUED" and sched.get("never_runs"):
                pending = str(sched.get("pending_reason") or "")
                if "launch failed" in pending.lower():
                    held.append(job)  # SLURM held it after a failed launch: let it go again
                elif not pending.startswith(_WAITED_OUT) and pending not in _LEFT_TO_HUMANS:
                    stuck.append((job, pending))
            if sched is not None and status in ("QUEUED", "RUNNING"):
                if status != job["status"] or (status == "RUNNING" and job["started_at"] is None):
                    updates.append(Update(job_id=job["job_id"], attempt=job["attempt"], status=status,
                                          native_state=sched.get("native_state"),
                                          started_at=sched.get("started_at") if status == "RUNNING" else None))
                continue  # fmt: skip
            record = read_record(folder, job["attempt"])
            if record is None and sched is None:
                marker = read_running(folder, job["attempt"])
                limit = (job["walltime_s"] or float("inf")) + self.lost_after
                if marker is not None and now - float(marker.get("started_at") or now) > limit:
                    marker = None  # past its wall time and still no exit record: not alive any more
                if marker is not None:  # it started and has not ended: alive, whatever the queue says
                    if job["status"] != "RUNNING" or job["missing_since"] is not None:
                        updates.append(Update(job_id=job["job_id"], attempt=job["attempt"], status="RUNNING",
                                              started_at=marker.get("started_at"), note="seen running by its marker"))
                    continue  # fmt: skip
                if job["missing_since"] is None:
                    missing.append(job["job_id"])
                elif now - job["missing_since"] > self.lost_after:
                    lost.append(Update(job_id=job["job_id"], attempt=job["attempt"], status="FAILED",
                                       reason=Reason.LOST.value, ended_at=now,
                                       note="the scheduler forgot the job and it left no exit record"))  # fmt: skip
                continue
            # Ended by its own exit (not killed by the scheduler): the job wrote an exit record,
            # which may not be visible here yet (NFS/Lustre lag).
            if record is None and sched is not None and (status == "COMPLETED" or (
                status == "FAILED" and sched.get("reason") in (None, Reason.EXIT_CODE.value)
            )):
                ended = sched.get("ended_at") or now
                if now - ended < self.file_grace:
                    continue
                if status == "COMPLETED":
                    record = ExitRecord(job_id=job["job_id"], attempt=job["attempt"],
                                        exit_code=sched.get("exit_code") or 0)  # fmt: skip
            if record is not None and not record.checked:
                record = complete_record(record, folder, job["workdir"],
                                         msgspec.json.decode(job["expected_files"]), self.rules)  # fmt: skip
            outcome = decide(sched=sched, record=record, walltime_s=job["walltime_s"],
                             dependency_impossible=job["job_id"] in impossible)  # fmt: skip
            if outcome is None:
                continue
            if outcome.reason is not None and outcome.reason.value not in SCHEDULER_REASONS and (
                outcome.reason.value != "dependency_never_satisfied"
            ):
                # The scheduler may have said why in the job's output where accounting can't.
                message = reason_from_messages(self._output_files(folder, job["scheduler_id"]))
                if message is not None and message[0] != outcome.reason:
                    reason, line = message
                    outcome.status = JobStatus.CANCELLED if reason is Reason.CANCELLED_BY_USER else JobStatus.FAILED
                    outcome.reason = reason
                    outcome.detail["scheduler_message"] = line
            updates.append(Update(
                job_id=job["job_id"], attempt=job["attempt"], status=outcome.status.value,
                reason=outcome.reason.value if outcome.reason else None,
                native_state=sched.get("native_state") if sched else None, exit_code=outcome.exit_code,
                signal=outcome.signal, started_at=outcome.started_at, ended_at=outcome.ended_at or now,
                detail=outcome.detail, **_usage(sched, record, outcome.started_at, outcome.ended_at),
                note=(f"the scheduler lost {outcome.detail['requeued']} run(s) of this attempt and started it again"
                      if outcome.detail.get("requeued") else None),
            ))  # fmt: skip
        if missing:
            self.store.mark_missing(missing, now)
        if held:
            self._release(held)
        if stuck:
            updates += self._end_stuck(stuck, now)
        applied = self.store.apply(updates + lost)
        scheduler_ids = {j["job_id"]: j["scheduler_id"] for j in active}
        self._want_usage([(scheduler_ids[u.job_id], u) for u in applied], now)
        return applied

    def _release(self, jobs: list[dict[str, Any]]) -> None:
        release = getattr(self.backend, "release", None)
        if release is None:
            return
        try:
            release([j["scheduler_id"] for j in jobs])
        except SchedulerError as exc:
            log.warning("could not release held jobs: %s", exc)
            return
        log.warning("released %d job(s) the scheduler held after a failed launch", len(jobs))
        self.store.add_events([(j["job_id"], j["attempt"], "the scheduler failed to launch it and held it; released")
                               for j in jobs])  # fmt: skip

    def _end_stuck(self, stuck: list[tuple[dict[str, Any], str]], now: float) -> list[Update]:
        """Jobs the scheduler accepted but will never start (e.g. more nodes than the partition
        has): take them out of the queue and fail them with the scheduler's reason."""
        try:
            self.backend.cancel([job["scheduler_id"] for job, _ in stuck])
        except SchedulerError as exc:
            log.warning("could not cancel jobs that can never start: %s", exc)
            return []
        updates = []
        for job, pending in stuck:
            message = f"the scheduler will never start this job as asked: {pending}"
            log.error("job %d: %s", job["job_id"], message)
            updates.append(Update(job_id=job["job_id"], attempt=job["attempt"], status="FAILED",
                                  reason=Reason.SUBMIT_ERROR.value, ended_at=now, native_state="PENDING",
                                  detail={"submit_error": message, "pending_reason": pending}, note=message))
        return updates  # fmt: skip

    def _output_files(self, folder: str, scheduler_id: str | None) -> list[str]:
        files = [os.path.join(folder, jobscript.STDERR), os.path.join(folder, jobscript.STDOUT)]
        if scheduler_id:
            safe = scheduler_id.replace("/", "_")
            files += [os.path.join(self.spool_dir, f"{safe}.err"), os.path.join(self.spool_dir, f"{safe}.out")]
        return files

    def check_running_logs(self) -> list[Update]:
        """fail_fast: scan only what running jobs wrote since the last look; a job with an
        unexcused error line is cancelled and FAILED (log_error) at once."""
        running = self.store.jobs_where("status='RUNNING'")
        alive = {(j["job_id"], j["attempt"]) for j in running}
        self._scan_from = {k: v for k, v in self._scan_from.items() if (k[0], k[1]) in alive}
        doomed: list[tuple[dict[str, Any], list[list[Any]], list[str]]] = []
        for job in running:
            folder = jobscript.job_dir(self.jobs_dir, job["job_subdir"])
            lines: list[list[Any]] = []
            patterns: list[str] = []
            for filename in (jobscript.STDOUT, jobscript.STDERR):
                key = (job["job_id"], job["attempt"], filename)
                offset, first_line = self._scan_from.get(key, (0, 1))
                result = scan_file(
                    os.path.join(folder, filename), error_patterns=self.rules.error_patterns,
                    error_whitelist=self.rules.error_whitelist, whitelist_threshold=self.rules.whitelist_threshold,
                    offset=offset, first_line=first_line, complete=False,
                )  # fmt: skip
                if not result.missing:
                    self._scan_from[key] = (result.end_offset, result.end_line)
                lines += [[filename, n, text] for n, text in result.lines]
                patterns += result.patterns
            if lines:
                doomed.append((job, lines[:20], patterns[:20]))
        if not doomed:
            return []
        ids = [j["scheduler_id"] for j, _, _ in doomed if j["scheduler_id"]]
        try:
            self.backend.cancel(ids)
        except SchedulerError as exc:
            log.warning("fail_fast: could not cancel jobs with errors in their logs yet: %s", exc)
            return []
        now = time.time()
        return self.store.apply([
            Update(job_id=j["job_id"], attempt=j["attempt"], status="FAILED", reason=Reason.LOG_ERROR.value,
                   ended_at=now, detail={"log_lines": lines, "log_patterns": patterns, "fail_fast": True},
                   note=f"fail_fast: {lines[0][2][:200]}")
            for j, lines, patterns in doomed
        ])  # fmt: skip

    def _parents_ending_now(self, job_ids: Sequence[int], active: list[dict[str, Any]],
                            rows: dict[str, dict[str, Any]]) -> set[int]:  # fmt: skip
        """Jobs with a parent that this poll sees end (still active in the store, finished in
        the scheduler's frame): their own verdict waits for the parent's."""
        ending = {j["job_id"] for j in active
                  if (rows.get(j["scheduler_id"]) or {}).get("status") in ("COMPLETED", "FAILED", "CANCELLED")}  # fmt: skip
        if not ending:
            return set()
        return {job_id for job_id, deps in self.store.parents(job_ids).items() if any(p in ending for p, _ in deps)}

    def _outcome_so_far(self, parent: dict[str, Any]) -> str:
        """A parent's status as its dependants see it: a failure whose retry is still to be
        made (by this driver later in this poll, by another driver, or by the next driver after
        a crash) is not its final outcome yet."""
        if parent["status"] == "FAILED" and parent["reason"] != Reason.SUBMIT_ERROR.value and retry_kind(
            parent, parent["reason"], decode_policy(parent["retry_policy"]), self.free_retries
        ):
            return "PENDING"
        return str(parent["status"])

    def _impossible(self, job_ids: Sequence[int]) -> set[int]:
        """Jobs whose dependency condition can no longer hold."""
        parents = self.store.parents(job_ids)
        status = {p["job_id"]: self._outcome_so_far(p) for p in self.store.jobs_by_ids(
            list({pid for deps in parents.values() for pid, _ in deps}))}  # fmt: skip
        return {
            job_id for job_id, deps in parents.items()
            if any(dependency_state(kind, status.get(pid, "CANCELLED")) is False for pid, kind in deps)
        }  # fmt: skip

    @faults.staged("retry")
    def _retry(self, applied: Sequence[Update]) -> None:
        """Failed jobs go again when their policy says so: preemption and node failure first
        from the free budget, everything else from max_retries; the request grows as the
        policy's escalation asks."""
        failed = [u for u in applied if u.status == "FAILED" and u.reason != Reason.SUBMIT_ERROR.value]
        if not failed:
            return
        jobs = {j["job_id"]: j for j in self.store.jobs_by_ids([u.job_id for u in failed])}
        retried: list[int] = []
        for update in failed:
            job = jobs.get(update.job_id)
            if job is None or job["attempt"] != update.attempt:
                continue
            policy = decode_policy(job["retry_policy"])
            kind = retry_kind(job, update.reason, policy, self.free_retries)
            if kind is None:
                continue
            change = escalation(job, update.reason, update.nodelist, policy, self._limits(job["queue"]))
            note = f"automatic retry after {update.reason}" + (f" ({change.note})" if change.note else "")
            if self.store.new_attempt(job["job_id"], job["attempt"], note, kind=kind, memory_mb=change.memory_mb,
                                      walltime_s=change.walltime_s, exclude=change.exclude):  # fmt: skip
                retried.append(job["job_id"])
                left = (f"{job['max_retries'] - job['retries_used'] - 1} of max_retries left" if kind == "retry"
                        else "not counted against max_retries")  # fmt: skip
                log.info("job %d failed (%s); attempt %d (%s)%s", job["job_id"], update.reason, job["attempt"] + 1,
                         left, f"; {change.note}" if change.note else "")  # fmt: skip
        if retried:
            self._withdraw_children(retried)

    def _limits(self, queue: str | None) -> Limits | None:
        limits = getattr(self.backend, "limits", None)
        if limits is None:
            return None
        try:
            return limits(queue)  # type: ignore[no-any-return]
        except SchedulerError as exc:
            log.warning("cannot read the queue's limits (%s); escalating without them", exc)
            return None

    def _withdraw_children(self, parent_ids: list[int]) -> None:
        """Children already in the scheduler with a native dependency on an attempt that is
        being replaced would be judged against the wrong attempt: take them back out, to be
        sent again once the new attempt is known."""
        waiting = self.store.children_in_state(parent_ids, "QUEUED")
        if not waiting:
            return
        try:
            self.backend.cancel([j["scheduler_id"] for j in waiting if j["scheduler_id"]])
        except SchedulerError as exc:
            log.warning("could not take back jobs waiting on a retried job: %s", exc)
            return
        done = self.store.withdraw([(j["job_id"], j["attempt"]) for j in waiting],
                                   "taken back from the scheduler: a job it waits on is being retried")  # fmt: skip
        if done:
            log.info("took %d waiting job(s) back from the scheduler: a job they depend on is retried", len(done))

    def _cancel_impossible(self) -> None:
        """Dependants still waiting (in the scheduler or here) whose condition can no longer hold."""
        waiting = self.store.jobs_where("has_deps=1 AND status IN ('PENDING', 'QUEUED')")
        if not waiting:
            return
        impossible = self._impossible([j["job_id"] for j in waiting])
        doomed = [j for j in waiting if j["job_id"] in impossible]
        if not doomed:
            return
        in_scheduler = [j["scheduler_id"] for j in doomed if j["status"] == "QUEUED" and j["scheduler_id"]]
        if in_scheduler:
            try:
                self.backend.cancel(in_scheduler)
            except SchedulerError as exc:
                log.warning("could not cancel jobs whose dependencies failed: %s", exc)
                return
        self.store.apply([
            Update(job_id=j["job_id"], attempt=j["attempt"], status="CANCELLED",
                   reason=Reason.DEPENDENCY_NEVER_SATISFIED.value, ended_at=time.time(),
                   note="a job it depends on ended the wrong way")
            for j in doomed
        ])  # fmt: skip

    # --------------------------------------------------------------------------- cancel
    def cancel(self, jobs: Sequence[dict[str, Any]]) -> list[int]:
        """Cancel jobs (any state but finished); returns the ids cancelled."""
        live = [j for j in jobs if j["status"] not in ("COMPLETED", "FAILED", "CANCELLED")]
        in_scheduler = [j["scheduler_id"] for j in live if j["scheduler_id"] and j["status"] != "PENDING"]
        if in_scheduler:
            self.backend.cancel(in_scheduler)
        now = time.time()
        applied = self.store.apply([
            Update(job_id=j["job_id"], attempt=j["attempt"], status="CANCELLED",
                   reason=Reason.CANCELLED_BY_USER.value, ended_at=now, note="cancelled through housekeeper")
            for j in live
        ])  # fmt: skip
        return [u.job_id for u in applied]


class Change(msgspec.Struct, kw_only=True):
    """How the next attempt's request differs from the last (None: unchanged)."""

    memory_mb: int | None = None
    walltime_s: int | None = None
    exclude: str | None = None
    note: str = ""


_POLICIES: dict[str, RetryPolicy] = {}
_DEFAULT_POLICY = RetryPolicy()


def decode_policy(text: str | None) -> RetryPolicy | None:
    if not text:
        return None
    policy = _POLICIES.get(text)
    if policy is None:
        policy = _POLICIES[text] = msgspec.json.decode(text, type=RetryPolicy)
    return policy


def retry_kind(job: dict[str, Any], reason: str | None, policy: RetryPolicy | None, free_budget: int) -> str | None:
    """'free', 'retry' or None (no retry) for a job whose current attempt failed with `reason`."""
    if not (policy or _DEFAULT_POLICY).retries(reason):
        return None
    if reason in FREE_RETRY_REASONS and job["free_retries_used"] < free_budget:
        return "free"
    if job["retries_used"] < job["max_retries"]:
        return "retry"
    return None


def escalation(
    job: dict[str, Any], reason: str | None, nodelist: str | None, policy: RetryPolicy | None, limits: Limits | None
) -> Change:
    """The next attempt's request under the job's policy, capped by the policy and the queue."""
    change = Change()
    if policy is None:
        return change
    if reason == Reason.TIMEOUT.value and policy.timeout and job["walltime_s"]:
        caps = [c for c in (policy.max_walltime_s, limits.max_walltime_s if limits else None) if c]
        grown = math.ceil(job["walltime_s"] * policy.timeout / 60) * 60
        new = min([grown, *caps])
        if new > job["walltime_s"]:
            change.walltime_s = new
            change.note = f"walltime {_hms(job['walltime_s'])} -> {_hms(new)}"
        else:
            change.note = f"walltime stays {_hms(job['walltime_s'])}: at its cap"
    elif reason == Reason.OOM.value and policy.oom and job["memory_mb"]:
        caps = [c for c in (policy.max_memory_mb, limits.max_memory_mb if limits else None) if c]
        new = min([math.ceil(job["memory_mb"] * policy.oom), *caps])
        if new > job["memory_mb"]:
            change.memory_mb = new
            change.note = f"memory {job['memory_mb']} MB -> {new} MB"
        else:
            change.note = f"memory stays {job['memory_mb']} MB: at its cap"
    elif reason == Reason.NODE_FAIL.value and policy.node_fail and nodelist:
        excluded = set(filter(None, (job["exclude"] or "").split(",")))
        failed = set(expand_hostlist(nodelist))
        if not failed - excluded:
            pass
        elif limits is None or limits.nodes is None:
            change.note = f"not excluding {nodelist}: this scheduler does not tell which nodes the queue has"
        elif not set(limits.nodes) - excluded - failed:
            change.note = f"not excluding {nodelist}: no other node would be left"
        else:
            change.exclude = ",".join(sorted(excluded | failed))
            change.note = f"excluding {','.join(sorted(failed - excluded))}"
    return change


def expand_hostlist(text: str) -> list[str]:
    """'n[01-03,07],gpu1' -> ['n01', 'n02', 'n03', 'n07', 'gpu1'] (one bracket group per name)."""
    names: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,]*)?", text):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if match is None:
            names.append(item)
            continue
        prefix, ranges, suffix = match.groups()
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not last:
                names.append(f"{prefix}{first}{suffix}")
                continue
            if not (first.isdigit() and last.isdigit()) or int(last) - int(first) > 100000:
                names.append(item)
                break
            names.extend(f"{prefix}{n:0{len(first)}d}{suffix}" for n in range(int(first), int(last) + 1))
    return names


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _usage(sched: dict[str, Any] | None, record: ExitRecord | None, started: float | None,
           ended: float | None) -> dict[str, Any]:  # fmt: skip
    """What the attempt used: the scheduler's accounting first, the exit record's times after."""
    usage: dict[str, Any] = {}
    if sched is not None:
        usage = {"elapsed_s": sched.get("elapsed_s"), "cpu_time_s": sched.get("cpu_time_s"),
                 "max_rss_mb": sched.get("max_rss_mb"), "nodelist": sched.get("node")}  # fmt: skip
    if usage.get("elapsed_s") is None:
        # The exit record's own times are precise and of one clock; the scheduler's end time is
        # whole seconds (truncated), so mixing the two can come out shorter than the job ran.
        if record is not None and record.started_at and record.ended_at and record.ended_at >= record.started_at:
            usage["elapsed_s"] = record.ended_at - record.started_at
        elif started and ended and ended >= started:
            usage["elapsed_s"] = ended - started
    if usage.get("nodelist") is None and record is not None and record.host:
        usage["nodelist"] = record.host
    return usage


def _decode_json(text: str) -> Any:
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    return msgspec.json.decode(text)


def _write_text(path: str, text: str, executable: bool = False) -> None:
    _write_bytes(path, text.encode(), executable)


def _write_bytes(path: str, data: bytes, executable: bool = False) -> None:
    jobscript.write_file(path, data, executable)
