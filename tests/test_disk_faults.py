"""A full or read-only jobs_dir while submitting: a clear StateError naming the path, a database
that stays whole, nothing half-written claimed as submitted, and a run that finishes, every job
exactly once, once there is room again.

The jobs_dir lives on a small tmpfs mounted for the test (root only: chmod does not stop root
from writing, a mount does); "full" is reached by submitting, or with a filler file."""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from housekeeper import JobStatus, StateError, housekeeper
from housekeeper.runner import CommandResult, Runner, program_name

PAD = "x" * 900  # long commands fill the disk quickly


def _problem(message: str) -> None:
    # Mounting needs root; on a developer's own machine without it, say so (and never pass).
    if os.environ.get("CI") == "true" or os.geteuid() == 0:
        pytest.fail(f"the disk-fault tests need to mount a tmpfs, but {message}")
    pytest.skip(f"needs root to mount a tmpfs: {message}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a fresh tmpfs of that size; all unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        try:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
        except FileNotFoundError:
            _problem("there is no mount command")
        if proc.returncode != 0:
            _problem(f"`mount -t tmpfs` failed: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)  # files still open


def remount(point: Path, options: str) -> None:
    proc = subprocess.run(["mount", "-o", f"remount,{options}", str(point)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"remount,{options} {point}: {proc.stderr}"


def fill(point: Path, leave: int = 0) -> Path:
    """Take every free byte of the file system but `leave` with one file; returns it."""
    filler = point / "filler"
    with open(filler, "wb", buffering=0) as handle:
        block = b"\0" * 65536
        while True:
            try:
                handle.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    assert os.statvfs(point).f_bavail == 0
    if leave:
        os.truncate(filler, os.path.getsize(filler) - leave)
    return filler


def db_state(db: Path) -> dict[str, Any]:
    """The database as another process sees it: whole (integrity_check) and its rows."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {
            "jobs": conn.execute("SELECT * FROM jobs ORDER BY job_id").fetchall(),
            "attempts": conn.execute("SELECT * FROM attempts ORDER BY job_id, attempt").fetchall(),
            "submissions": conn.execute("SELECT submission_id, state, base_id FROM submissions").fetchall(),
        }
    finally:
        conn.close()


def rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


class FakeSlurm(Runner):
    """A SLURM that runs nothing: sbatch records each submission (base id, tasks, script);
    squeue knows no job; sacct says every submitted task COMPLETED."""

    def __init__(self) -> None:
        super().__init__(sleep=lambda _: None)
        self.next_id = 7000
        self.submitted: list[tuple[str, int, str]] = []

    def _once(self, argv):  # type: ignore[no-untyped-def]
        name = program_name(argv)
        self.calls[name] += 1
        out = ""
        if name == "sbatch":
            self.next_id += 1
            array = [a.split("=", 1)[1] for a in argv if a.startswith("--array=")]
            tasks = int(array[0].split("%")[0].split("-")[-1]) + 1 if array else 1
            self.submitted.append((str(self.next_id), tasks, argv[-1]))
            out = f"{self.next_id}\n"
        elif name == "scontrol":
            out = "MaxArraySize = 1001\n"
        elif name == "sacct":
            now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time()))
            ids = [(f"{base}_{i}" if "/.housekeeper/arrays/" in script else base, f"{base}{i:05d}")
                   for base, tasks, script in self.submitted for i in range(tasks)]  # fmt: skip
            out = "".join(f"{sid}|{raw}|COMPLETED|0:0|0:0|{now}|{now}|{now}|00:00:01|00:00.100||node1|None|\n"
                          for sid, raw in ids)  # fmt: skip
        return CommandResult(list(argv), 0, out, "", 0.0)


def sent_exactly_once(runner: FakeSlurm, db: Path) -> None:
    """Every QUEUED (or finished) job was handed to the scheduler in exactly one submission,
    whose ready-made script (array manifest or the job's own script) is this job's; no
    submission carried a job twice or a job the db does not hold as sent."""
    submissions = {base: (tasks, script) for base, tasks, script in runner.submitted}
    assert len(submissions) == len(runner.submitted)
    sent: dict[str, int] = {}
    for job_id, sid, status in rows(db, "SELECT job_id, scheduler_id, status FROM jobs"):
        if status == "PENDING":
            assert sid is None
            continue
        assert sid not in sent, f"job {job_id} and job {sent[sid]} share scheduler id {sid}"
        sent[sid] = job_id
        base, _, index = sid.partition("_")
        tasks, script = submissions[base]
        if not index:
            assert tasks == 1 and f"housekeeper job {job_id} " in Path(script).read_text()
            continue
        manifest = script[: -len(".sh")]
        with open(manifest + ".index", "rb") as handle:
            lines = handle.read().splitlines()
        assert len(lines) == tasks
        offset, length, _ = lines[int(index)].decode().split(" ", 2)
        with open(manifest + ".tasks", "rb") as handle:
            handle.seek(int(offset))
            assert f"housekeeper job {job_id} ".encode() in handle.read(int(length))
    assert len(sent) == sum(tasks for tasks, _ in submissions.values())  # nothing sent that the db lost


def no_temporaries(root: Path) -> None:
    leftovers = [str(p) for p in root.rglob("*.tmp")]
    assert leftovers == [], f"half-written files left behind: {leftovers[:5]}"


def finish_all(hk: housekeeper, timeout: float = 60.0) -> dict[int, JobStatus]:
    return hk.monitor(poll_interval=0.2, timeout=timeout, progress=False)


# =========================================================== full disk: submit, fake SLURM
def test_disk_fills_while_submitting_thousands_same_driver_goes_on(workdir: Path, tmpfs) -> None:
    disk = tmpfs("1m")
    jobs_dir = disk / "run"
    db = jobs_dir / "housekeeper.db"
    runner = FakeSlurm()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=runner, file_grace=0)
    ids: list[int] = []
    with pytest.raises(StateError) as caught:
        for i in range(20000):
            ids.append(hk.submit(f"echo {i} # {PAD}", name=f"sweep{i}", job_subdir=f"s{i:05d}"))
    message = str(caught.value)
    assert "disk is full" in message and str(db) in message
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert 100 < len(ids) < 20000
    state = db_state(db)
    assert all(job[JOB_STATUS] == "PENDING" for job in state["jobs"]) and state["submissions"] == []

    with pytest.raises(StateError, match="disk is full"):  # still full: flushing says so too
        hk.flush()
    assert db_state(db) == state  # unchanged, and nothing was handed to the scheduler
    assert runner.submitted == []

    remount(disk, "size=64m")  # room again: the same driver goes on with the ids it handed out
    hk.flush()
    recorded = rows(db, "SELECT job_id, status FROM jobs ORDER BY job_id")
    assert [job_id for job_id, _ in recorded] == ids  # the one whose submit() failed is not there
    assert {status for _, status in recorded} == {"QUEUED"}
    sent_exactly_once(runner, db)
    retried = hk.submit(f"echo {len(ids)} # {PAD}", name=f"sweep{len(ids)}", job_subdir=f"s{len(ids):05d}")
    assert retried not in ids
    statuses = finish_all(hk)
    assert set(statuses.values()) == {JobStatus.COMPLETED} and len(statuses) == len(ids) + 1
    sent_exactly_once(runner, db)
    assert runner.calls["sbatch"] == len(runner.submitted) == -(-len(ids) // 1001) + 1  # arrays of 1001
    hk.close()
    no_temporaries(jobs_dir)


JOB_STATUS = 17  # jobs.status, in schema order


def test_disk_fills_while_submitting_a_fresh_driver_finishes_the_run(workdir: Path, tmpfs) -> None:
    disk = tmpfs("1m")
    jobs_dir = disk / "run"
    db = jobs_dir / "housekeeper.db"
    sweep = 6000

    def run(hk: housekeeper) -> list[int]:
        return [hk.submit(f"echo {i} # {PAD}", name=f"sweep{i}", job_subdir=f"s{i:05d}") for i in range(sweep)]

    first = FakeSlurm()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=first, file_grace=0)
    with pytest.raises(StateError, match="disk is full"):
        run(hk)
    with pytest.raises(StateError, match="disk is full"):  # the driver ends with the disk still full
        hk.close()
    before = db_state(db)
    assert before["jobs"] and all(job[JOB_STATUS] == "PENDING" for job in before["jobs"])
    assert first.submitted == []

    remount(disk, "size=64m")
    second = FakeSlurm()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=second, file_grace=0)
    ids = run(hk)  # the user runs the same script again
    assert ids[: len(before["jobs"])] == [job[0] for job in before["jobs"]]  # recorded jobs keep their ids
    assert len(set(ids)) == sweep
    statuses = finish_all(hk)
    assert len(statuses) == sweep and set(statuses.values()) == {JobStatus.COMPLETED}
    assert rows(db, "SELECT count(*), max(attempt) FROM jobs") == [(sweep, 1)]
    sent_exactly_once(second, db)
    assert sum(tasks for _, tasks, _ in second.submitted) == sweep
    hk.close()
    no_temporaries(jobs_dir)


# ===================================================== full disk: flush, array manifests
def test_disk_fills_while_writing_array_manifests(workdir: Path, tmpfs) -> None:
    disk = tmpfs("2m")  # an array's manifest: about 1.3 kB per job here (the command is most of it)
    jobs_dir = disk / "run"
    db = workdir / "state.db"  # the database elsewhere: only the job files run out of room
    runner = FakeSlurm()
    hk = housekeeper(jobs_dir=jobs_dir, db_path=db, scheduler="slurm", runner=runner, file_grace=0)
    ids = [hk.submit(f"echo {i} # {PAD}", name=f"sweep{i}", job_subdir=f"s{i:05d}") for i in range(2500)]
    with pytest.raises(StateError) as caught:
        hk.flush()  # groups of 1001: the first fits, the second does not
    message = str(caught.value)
    assert "disk is full" in message and str(jobs_dir / ".housekeeper" / "arrays") in message
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    state = db_state(db)
    statuses = {job[0]: job[JOB_STATUS] for job in state["jobs"]}
    queued = [j for j in ids if statuses[j] == "QUEUED"]
    pending = [j for j in ids if statuses[j] == "PENDING"]
    assert len(queued) == 1001 and len(pending) == 1499
    assert rows(db, "SELECT count(*) FROM jobs WHERE status='PENDING' AND submission_id IS NOT NULL") == [(0,)]
    assert sorted(s for _, s, _ in state["submissions"]) == ["released", "submitted"]
    sent_exactly_once(runner, db)
    no_temporaries(jobs_dir)  # the half-written manifest is gone, its space is free again
    free = os.statvfs(disk)
    assert free.f_bavail * free.f_frsize > 256 * 1024  # left full, it would hold nothing more

    remount(disk, "size=64m")
    assert hk.flush() == 1499
    sent_exactly_once(runner, db)
    statuses_now = finish_all(hk)
    assert set(statuses_now.values()) == {JobStatus.COMPLETED} and len(statuses_now) == 2500
    assert runner.calls["sbatch"] == 3
    hk.close()


# =================================================== full disk: local backend, jobs run
@pytest.mark.parametrize("room", [0, 16 * 1024, 48 * 1024], ids=["full", "16k-left", "48k-left"])
def test_full_disk_at_flush_on_the_local_backend_then_every_job_runs_once(workdir: Path, tmpfs, room: int) -> None:
    """The disk fills up (leaving `room` bytes, so that it runs out at different steps of the
    flush: claim, script, the local queue entry, recording what was sent)."""
    disk = tmpfs("2m")
    jobs_dir = disk / "run"
    db = jobs_dir / "housekeeper.db"
    ran, go = workdir / "ran.txt", workdir / "go"  # outside the full disk
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="local", local_slots=4)
    assert hk.flush() == 0  # the driver is under way (its rules file written) when the disk fills
    # A job started while the disk is full waits for room before it does anything.
    command = f"while [ ! -e {go} ]; do sleep 0.05; done; echo {{i}} >> {ran}"
    ids = [hk.submit(command.format(i=i), name=f"job{i}", job_subdir=f"j{i:02d}") for i in range(12)]
    hk._commit()  # recorded (what any later call would do first)
    filler = fill(disk, leave=room)
    with pytest.raises(StateError) as caught:
        hk.flush()
    message = str(caught.value)
    assert "disk is full" in message and str(jobs_dir) in message
    state = db_state(db)
    assert {job[0] for job in state["jobs"]} == set(ids)
    local = jobs_dir / ".housekeeper" / "local"
    for job_id, sid, status, subdir, name in rows(db, "SELECT job_id, scheduler_id, status, job_subdir, name FROM jobs"):
        if status == "PENDING":
            assert sid is None
            continue
        # anything the db holds as sent has its whole script and is in the local scheduler's books
        script = (jobs_dir / subdir / f"{name}.sh").read_text()
        assert f"housekeeper job {job_id} " in script and script.endswith('exit "$hk_verdict"\n')
        assert any((local / where / f"{sid}.json").exists() for where in ("queue", "running", "done"))
    # A claim the full disk kept the driver from giving back holds only PENDING jobs (any
    # flush recovers it once there is room: its owner is not sending it any more).
    claimed = rows(db, "SELECT DISTINCT j.status FROM jobs j JOIN submissions s USING (submission_id)"
                       " WHERE s.state='claimed'")  # fmt: skip
    assert claimed in ([], [("PENDING",)])
    no_temporaries(jobs_dir)

    filler.unlink()  # room again; a fresh driver finishes the run
    go.touch()
    fresh = housekeeper(jobs_dir=jobs_dir, scheduler="local", local_slots=4)
    statuses = finish_all(fresh)
    assert statuses == {j: JobStatus.COMPLETED for j in ids}, fresh.list_jobs().select("job_id", "status", "reason")
    assert sorted(int(line) for line in ran.read_text().split()) == list(range(12))  # each ran exactly once
    assert rows(db, "SELECT max(attempt) FROM jobs") == [(1,)]
    fresh.close()
    hk.close()


# ============================================================================ read-only
def test_jobs_dir_read_only_between_submit_and_flush(workdir: Path, tmpfs) -> None:
    disk = tmpfs("8m")
    jobs_dir = disk / "run"
    db = workdir / "state.db"  # a local database, the jobs_dir on a shared disk that went read-only
    hk = housekeeper(jobs_dir=jobs_dir, db_path=db, scheduler="local")
    ids = [hk.submit(f"echo {i}", name=f"job{i}", job_subdir=f"j{i}") for i in range(5)]
    hk._commit()
    before = db_state(db)
    remount(disk, "ro")
    with pytest.raises(StateError) as caught:
        hk.flush()
    message = str(caught.value)
    assert "read-only" in message and str(jobs_dir) in message
    assert db_state(db) == before  # not even the scheduler's name was recorded
    assert not (jobs_dir / "j0").exists()

    # with the engine already running (its rules written), the job files are what fails
    remount(disk, "rw")
    assert hk.flush() == 5
    finish_all(hk)  # the first five end, so nothing holds the disk open for writing
    hk.engine.backend.wait_idle(30)
    more = [hk.submit(f"echo more {i}", name=f"more{i}", job_subdir=f"m{i}") for i in range(3)]
    hk._commit()
    before = db_state(db)
    remount(disk, "ro")
    with pytest.raises(StateError) as caught:
        hk.flush()
    message = str(caught.value)
    assert "read-only" in message and str(jobs_dir / "m0") in message
    after = db_state(db)
    assert after["jobs"] == before["jobs"] and after["attempts"] == before["attempts"]  # nothing claimed
    assert {state for _, state, _ in after["submissions"]} == {"submitted", "released"}
    assert rows(db, f"SELECT DISTINCT status FROM jobs WHERE job_id IN ({','.join(map(str, more))})") == [("PENDING",)]

    remount(disk, "rw")
    statuses = finish_all(hk)
    assert statuses == {j: JobStatus.COMPLETED for j in ids + more}
    hk.close()


def test_read_only_jobs_dir_at_construction(workdir: Path, tmpfs) -> None:
    disk = tmpfs("8m")
    hk = housekeeper(jobs_dir=disk / "run", scheduler="local")
    job = hk.submit("echo hello", name="hello", job_subdir="hello")
    assert finish_all(hk)[job] is JobStatus.COMPLETED
    hk.engine.backend.wait_idle(30)
    hk.close()
    before = db_state(disk / "run" / "housekeeper.db")
    remount(disk, "ro")

    with pytest.raises(StateError) as caught:  # a new run on a read-only disk
        housekeeper(jobs_dir=disk / "new", scheduler="local")
    assert "read-only" in str(caught.value) and str(disk / "new") in str(caught.value)
    assert not (disk / "new").exists()

    with pytest.raises(StateError) as caught:  # an existing run on a read-only disk
        housekeeper(jobs_dir=disk / "run", scheduler="local")
    assert "read-only" in str(caught.value) and f"jobs_dir {disk / 'run'} " in str(caught.value)

    with pytest.raises(StateError) as caught:  # a writable jobs_dir, its database on the read-only disk
        housekeeper(jobs_dir=workdir / "elsewhere", db_path=disk / "run" / "housekeeper.db", scheduler="local")
    assert "read-only" in str(caught.value) and f"db_path {disk / 'run' / 'housekeeper.db'} " in str(caught.value)
    assert db_state(disk / "run" / "housekeeper.db") == before
