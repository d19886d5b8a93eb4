"""Big runs through the columnar paths (a poll, list_jobs, id lists past 10,000), against a
SLURM that answers from memory. The figures themselves are in benchmarks/; here, the outcomes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.models import ExitRecord
from housekeeper.runner import CommandResult, Runner, program_name
from housekeeper.schedulers import slurm

N = 12_000  # past the 10,000 where id lists go through polars


class AnsweringSlurm(Runner):
    """sbatch hands out ids, squeue answers with `queue`, sacct with nothing; argv is kept."""

    def __init__(self) -> None:
        super().__init__(sleep=lambda _: None)
        self.next_id = 700
        self.queue = ""
        self.argv: list[list[str]] = []

    def _once(self, argv: list[str]) -> CommandResult:
        self.argv.append(list(argv))
        name = program_name(argv)
        self.calls[name] += 1
        out = ""
        if name == "sbatch":
            self.next_id += 1
            out = f"{self.next_id}\n"
        elif name == "scontrol":
            out = "MaxArraySize = 100001\n"
        elif name == "squeue":
            out = self.queue
        return CommandResult(list(argv), 0, out, "", 0.0)


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _line(scheduler_id: str, state: str, started: float | None = None, code: int = 0) -> str:
    base, _, index = scheduler_id.partition("_")
    submit = _stamp(time.time() - 600)
    if state == "PENDING":
        return f"{scheduler_id}|{base}|{index}|{base}|PENDING|0||{submit}|N/A|N/A|Priority|(null)"
    start = _stamp(started or time.time() - 60)
    end = _stamp(time.time() - 5) if state in ("COMPLETED", "FAILED") else _stamp(time.time() + 3600)
    return f"{scheduler_id}|{base}|{index}|9{index}|{state}|{code}|node01|{submit}|{start}|{end}|None|(null)"


@pytest.fixture
def big_run(tmp_path: Path) -> tuple[Any, AnsweringSlurm, dict[int, dict[str, Any]]]:
    runner = AnsweringSlurm()
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="slurm", runner=runner, file_grace=0)
    ids = [hk.submit(f"work {i}", name="w", job_subdir=f"w{i:05d}") for i in range(N)]
    hk.flush()
    conn = sqlite3.connect(tmp_path / "run" / "housekeeper.db")
    jobs = {j: {"scheduler_id": s, "subdir": d} for j, s, d in conn.execute(
        "SELECT job_id, scheduler_id, job_subdir FROM jobs")}  # fmt: skip
    conn.close()
    assert sorted(jobs) == ids and runner.calls["sbatch"] == 1
    yield hk, runner, jobs
    hk.close()


def _db(hk: Any) -> sqlite3.Connection:
    return sqlite3.connect(Path(hk.jobs_dir) / "housekeeper.db")


def test_a_poll_of_many_jobs_moves_only_what_changed_and_judges_the_rest(big_run: Any) -> None:
    hk, runner, jobs = big_run
    order = sorted(jobs)
    started = time.time() - 120
    running, finished, failed, gone, unreadable = order[:5000], order[5000:5010], order[5010:5013], order[5013:5015], order[5015]
    lines = []
    for job_id in order:
        sid = jobs[job_id]["scheduler_id"]
        if job_id in gone:
            continue
        if job_id == unreadable:
            lines.append(_line(sid, "PENDING").replace("|PENDING|", "|SOME_NEW_STATE|"))
        elif job_id in running:
            lines.append(_line(sid, "RUNNING", started))
        elif job_id in finished or job_id in failed:
            code = 0 if job_id in finished else 3
            lines.append(_line(sid, "COMPLETED" if code == 0 else "FAILED", started, code << 8))
            folder = Path(hk.jobs_dir) / jobs[job_id]["subdir"]
            folder.mkdir(exist_ok=True)
            record = ExitRecord(job_id=job_id, attempt=1, exit_code=code, scheduler_id=sid, started_at=started,
                                ended_at=time.time() - 5, checked=True, ok=code == 0)  # fmt: skip
            (folder / "status.json").write_bytes(msgspec.json.encode(record))
        else:
            lines.append(_line(sid, "PENDING"))
    runner.queue = "\n".join(lines) + "\n"
    runner.argv.clear()

    changed = hk.poll()

    assert changed == len(running) + len(finished) + len(failed)
    squeue = [a for a in runner.argv if program_name(a) == "squeue"]
    assert len(squeue) == 1 and "--jobs=701" in squeue[0]  # one array: one base id
    sacct = [a for a in runner.argv if program_name(a) == "sacct"]
    assert len(sacct) == 1  # the finished and the gone, in one query
    asked = next(a for a in sacct[0] if a.startswith("--jobs="))
    assert all(jobs[j]["scheduler_id"] in asked for j in finished + failed + gone)
    with _db(hk) as conn:
        status = dict(conn.execute("SELECT job_id, status FROM jobs"))
        start = dict(conn.execute("SELECT job_id, started_at FROM jobs"))
        attempt = dict(conn.execute("SELECT job_id, status FROM attempts"))
        missing = dict(conn.execute("SELECT job_id, missing_since FROM jobs"))
        events = conn.execute("SELECT count(*) FROM events WHERE status IN ('COMPLETED', 'FAILED')").fetchone()[0]
    assert {status[j] for j in running} == {"RUNNING"} and {attempt[j] for j in running} == {"RUNNING"}
    assert all(abs(start[j] - started) < 2 for j in running)
    assert {status[j] for j in finished} == {"COMPLETED"} and {status[j] for j in failed} == {"FAILED"}
    assert events == len(finished) + len(failed)
    assert all(missing[j] is not None and status[j] == "QUEUED" for j in gone)  # not lost yet: remembered
    assert status[unreadable] == "QUEUED" and missing[unreadable] is None
    assert sum(1 for s in status.values() if s == "QUEUED") == N - len(running) - len(finished) - len(failed)
    assert hk.failure_info(failed[0])["reason"] == "exit_code"

    # The same answer again changes nothing.
    assert hk.poll() == 0


def test_a_bulk_move_never_undoes_what_another_driver_wrote(big_run: Any) -> None:
    hk, runner, jobs = big_run
    order = sorted(jobs)
    runner.queue = "".join(_line(jobs[j]["scheduler_id"], "RUNNING") + "\n" for j in order)
    assert hk.poll() == N
    ended, retried = order[0], order[1]
    with _db(hk) as conn:  # another driver, meanwhile: one job judged, one sent again
        conn.execute("UPDATE jobs SET status='FAILED', reason='exit_code' WHERE job_id=?", (ended,))
        conn.execute("UPDATE jobs SET status='QUEUED', attempt=2 WHERE job_id=?", (retried,))
    # The queue, a moment behind: everything pending again (a requeue it shows as PENDING).
    runner.queue = "".join(_line(jobs[j]["scheduler_id"], "PENDING") + "\n" for j in order)
    assert hk.poll() == 0
    with _db(hk) as conn:
        status = dict(conn.execute("SELECT job_id, status FROM jobs"))
    assert status[ended] == "FAILED" and status[retried] == "QUEUED"
    assert sum(1 for s in status.values() if s == "RUNNING") == N - 2  # never back to QUEUED


def test_list_jobs_reads_columns_that_are_empty_in_their_first_thousands_of_rows(big_run: Any) -> None:
    hk, runner, jobs = big_run
    order = sorted(jobs)
    late = order[-3:]
    with _db(hk) as conn:  # Arrow's reader guesses a column's type from its first rows
        conn.executemany("UPDATE jobs SET status='FAILED', reason='exit_code', exit_code=3, cpu_time_s=1.5,"
                         " nodelist='node01' WHERE job_id=?", [(j,) for j in late])  # fmt: skip
    table = hk.list_jobs()
    assert table.height == N and table.get_column("job_id").to_list() == order
    tail = table.filter(table.get_column("job_id").is_in(late))
    assert tail.get_column("reason").to_list() == ["exit_code"] * 3
    assert tail.get_column("cpu_time_s").to_list() == [1.5] * 3
    assert hk.list_jobs(status=JobStatus.FAILED).get_column("job_id").to_list() == late
    target = Path(hk.jobs_dir).parent / "state.parquet"
    hk.export_state(target)
    import polars as pl

    exported = pl.read_parquet(target)
    assert exported.height == N and exported.filter(pl.col("job_id") == late[0])["reason"][0] == "exit_code"
    assert exported.get_column("command").to_list()[:2] == ["work 0", "work 1"]


def test_long_id_lists_are_checked_and_grouped_like_short_ones() -> None:
    arrays = [f"{base}_{i}" for base in (10, 11) for i in range(6000)]
    few = [f"12_{i}" for i in range(3)]
    plain = [str(20 + i) for i in range(100)]
    ids = arrays + few + plain + arrays[:50]  # repeats are dropped, order kept
    assert len(ids) > 10_000
    assert slurm._check_ids(ids) == list(dict.fromkeys(ids))
    assert slurm._accounting_ids(slurm._check_ids(ids)) == ["10", "11", *few, *plain]
    assert slurm._base_ids(slurm._check_ids(ids)) == ["10", "11", "12", *plain]
    with pytest.raises(ValueError, match=r"scheduler_ids: '10_x' is not a SLURM job id"):
        slurm._check_ids([*arrays, "10_x"])
    with pytest.raises(ValueError, match="is not a SLURM job id"):
        slurm._check_ids([*arrays, None])  # type: ignore[list-item]
    argv = slurm.SlurmDialect().status_argv(ids)
    assert "--jobs=10,11,12," + ",".join(plain) in argv


def test_monitor_of_a_big_run_reads_states_in_one_pass(big_run: Any) -> None:
    hk, runner, jobs = big_run
    order = sorted(jobs)
    runner.queue = "".join(_line(jobs[j]["scheduler_id"], "PENDING") + "\n" for j in order)
    statuses = hk.monitor(poll_interval=0.01, timeout=0.2, progress=False)
    assert len(statuses) == N and set(statuses.values()) == {JobStatus.QUEUED}


def test_a_fast_submit_loop_still_finds_what_another_process_recorded(tmp_path: Path) -> None:
    """The submit loop skips the per-job lookup while its store is its own; a write by another
    process ends that, and its jobs are found again."""
    first = housekeeper(jobs_dir=tmp_path / "run", scheduler="slurm", runner=AnsweringSlurm())
    mine = [first.submit(f"work {i}", name="w", job_subdir=f"w{i}") for i in range(100)]
    first.flush()
    assert first.submit("work 5", name="w", job_subdir="w5") == mine[5]  # its own, recorded: found
    other = housekeeper(jobs_dir=tmp_path / "run", scheduler="slurm", runner=AnsweringSlurm())
    theirs = other.submit("their work", name="t", job_subdir="theirs")
    other.flush()
    time.sleep(0.3)
    assert first.submit("their work", name="t", job_subdir="theirs") == theirs
    with pytest.raises(Exception, match="already used by job"):
        first.submit("something else", name="t", job_subdir="theirs")
    assert first.submit("work 7", name="w", job_subdir="w7") == mine[7]
    assert first.list_jobs().height == 101
    first.close()
    other.close()


def test_ten_thousand_children_of_one_job_and_one_job_of_ten_thousand_parents(tmp_path: Path) -> None:
    runner = AnsweringSlurm()
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="slurm", runner=runner, file_grace=0)
    parent = hk.submit("prepare", name="prep", job_subdir="prep")
    children = [hk.submit(f"work {i}", name="w", job_subdir=f"w{i:05d}", after_ok=[parent]) for i in range(10_000)]
    gather = hk.submit("gather", name="gather", job_subdir="gather", after_ok=children)
    hk.flush()
    sbatch = [a for a in runner.argv if program_name(a) == "sbatch"]
    assert len(sbatch) == 3  # the parent, one array of its children, the gatherer
    with _db(hk) as conn:
        sid = dict(conn.execute("SELECT job_id, scheduler_id FROM jobs"))
    assert f"--dependency=afterok:{sid[parent]}" in sbatch[1]
    dependency = next(a for a in sbatch[2] if a.startswith("--dependency="))
    assert dependency == "--dependency=afterok:" + ":".join(sid[c] for c in children)
    # All children run and end well, one poll: the gatherer is left to SLURM's own dependency.
    runner.queue = "".join(_line(sid[j], "COMPLETED", code=0) + "\n" for j in [parent, *children])
    for job_id, subdir in [(parent, "prep"), *((c, f"w{i:05d}") for i, c in enumerate(children))]:
        folder = Path(hk.jobs_dir) / subdir
        folder.mkdir(exist_ok=True)
        (folder / "status.json").write_bytes(msgspec.json.encode(ExitRecord(
            job_id=job_id, attempt=1, exit_code=0, scheduler_id=sid[job_id], checked=True, ok=True)))
    runner.queue += _line(sid[gather], "PENDING").replace("|Priority|", "|Dependency|") + "\n"
    assert hk.poll() == 10_001
    assert hk.job_info(gather)["status"] is JobStatus.QUEUED
    assert hk.list_jobs(status="COMPLETED").height == 10_001
    hk.close()
