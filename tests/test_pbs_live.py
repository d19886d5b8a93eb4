"""housekeeper's PBS backend against Debian's Torque-style wrappers (slurm-wlm-torque) on the
live SLURM cluster brought up by tests/cluster/slurm-up.sh.

Every scheduler command here is a wrapper (qsub, qstat, qdel), except SLURM's scancel to stop
one array task, which the wrappers' qdel cannot address. The dialect is detected by probing the
commands, as on a real site. Under CI=true these tests must run (slurm_cluster fails them when
the cluster is not there).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.backends import PbsBackend
from housekeeper.runner import Runner
from housekeeper.schedulers.pbs import SlurmTorqueDialect

from .conftest import write
from .seed import submit_quick_start, write_quick_start_programs

pytestmark = pytest.mark.slurm
FAST = 0.5


def queue_ids_under(folder: Path) -> list[str]:
    """Raw SLURM ids of the jobs (of any state still in the queue) that run in `folder`."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%A|%Z|%T"], capture_output=True, text=True,
                         timeout=60).stdout  # fmt: skip
    ids = []
    for line in out.splitlines():
        raw, _, rest = line.partition("|")
        workdir, _, state = rest.partition("|")
        if workdir.startswith(str(folder)) and state in ("PENDING", "RUNNING", "SUSPENDED", "COMPLETING"):
            ids.append(raw)
    return ids


@pytest.fixture
def pbs(slurm_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory the driver and its jobs run in; afterwards the jobs started
    from it (and only those) are deleted.

    Not under pytest's tmp_path: the SLURM tests' `slurm` fixture cancels every job running
    anywhere under pytest's base temp folder, which would kill these jobs whenever both suites
    share the cluster at the same time.
    """
    workdir = Path(tempfile.mkdtemp(prefix="hk-pbs-live-", dir=os.environ.get("HK_PBS_LIVE_DIR", "/tmp")))
    monkeypatch.chdir(workdir)
    yield workdir
    ids = queue_ids_under(workdir)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)  # raw ids: only ours
    deadline = time.time() + 60
    while ids and time.time() < deadline:
        time.sleep(0.5)
        ids = queue_ids_under(workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def make(workdir: Path, **kwargs: object) -> housekeeper:
    runner = Runner(backoff=(0.5, 1.0, 2.0, 5.0, 10.0), retries=8)
    return housekeeper(jobs_dir=workdir / "run", scheduler="pbs", runner=runner, file_grace=5, **kwargs)


def submissions(hk: housekeeper) -> int:
    """qsub calls that submitted something (the dialect probe `qsub --sbatchline` is one more)."""
    return hk._runner.calls["qsub"] - 1


def live_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_quick_start_verbatim(pbs: Path) -> None:
    workdir = pbs
    write_quick_start_programs(workdir)
    hk = housekeeper(jobs_dir="./my_pipeline_run", scheduler="pbs")
    job1, job2 = submit_quick_start(hk)
    results = hk.monitor([job1, job2], poll_interval=2)
    assert hk.scheduler == "pbs"
    assert isinstance(hk.engine.backend, PbsBackend)
    assert isinstance(hk.engine.backend.dialect, SlurmTorqueDialect)  # detected by probing
    assert results == {job1: JobStatus.COMPLETED, job2: JobStatus.COMPLETED}
    assert {j["name"]: j["status"] for j in hk.list_jobs()} == {"process": "COMPLETED", "analyze": "COMPLETED"}
    run = workdir / "my_pipeline_run"
    assert "#PBS -l nodes=1:ppn=8" in (run / "preprocessing" / "process.sh").read_text()
    assert "#PBS -W depend=afterok:" in (run / "analysis" / "analyze.sh").read_text()
    assert "analysed x" in (run / "analysis" / "stdout.log").read_text()
    assert hk.job_info(job1)["scheduler_id"].isdigit()
    assert submissions(hk) == 2
    hk.close()


def test_sweep_goes_out_as_one_array(pbs: Path) -> None:
    hk = make(pbs)
    ids = [hk.submit(f"echo task {i}", name=f"sweep{i}", job_subdir=f"sw_{i:03d}", memory="100MB")
           for i in range(50)]  # fmt: skip
    polls = 0
    original = hk.engine.poll

    def counting_poll():  # type: ignore[no-untyped-def]
        nonlocal polls
        polls += 1
        return original()

    hk.engine.poll = counting_poll  # type: ignore[method-assign]
    results = hk.monitor(ids, poll_interval=FAST, timeout=300)
    assert submissions(hk) == 1
    assert set(results.values()) == {JobStatus.COMPLETED}
    frame = hk.list_jobs()
    assert frame["scheduler_id"].str.contains(r"^\d+\[\d+\]$").all()
    assert (pbs / "run" / "sw_049" / "stdout.log").read_text() == "task 49\n"
    # one qstat per poll, whatever the number of jobs
    assert polls > 0 and hk._runner.calls["qstat"] <= polls + 2, (polls, dict(hk._runner.calls))
    assert hk._runner.calls["scancel"] == 0 and hk._runner.calls["qdel"] == 0
    hk.close()


def test_array_tasks_are_queued_then_running(pbs: Path) -> None:
    """Tasks that wait in the array's pending remainder are QUEUED, started ones RUNNING under
    their raw ids; nothing is reported lost while the wrapper cannot show a task."""
    hk = make(pbs)
    # at most 2 tasks of this array run at once: the other 4 wait in the pending remainder
    ids = [hk.submit(f"sleep 6; echo {i}", name=f"t{i}", job_subdir=f"t_{i}", cpus=16) for i in range(6)]
    hk.flush()
    seen: dict[int, set[str]] = {i: set() for i in ids}
    deadline = time.time() + 240
    while time.time() < deadline:
        hk.engine.poll()
        for row in hk.list_jobs().iter_rows(named=True):
            seen[row["job_id"]].add(row["status"])
        if all(s & {"COMPLETED", "FAILED", "CANCELLED"} for s in seen.values()):
            break
        time.sleep(FAST)
    assert all(s <= {"QUEUED", "RUNNING", "COMPLETED"} for s in seen.values()), seen
    assert all("COMPLETED" in s for s in seen.values()), seen
    assert sum("RUNNING" in s for s in seen.values()) >= 4
    hk.close()


@pytest.mark.parametrize(
    ("parent_cmd", "kind", "child_runs"),
    [("true", "after_ok", True), ("false", "after_ok", False), ("false", "after_fail", True),
     ("true", "after_fail", False), ("false", "after_any", True)],
)  # fmt: skip
def test_dependencies(pbs: Path, parent_cmd: str, kind: str, child_runs: bool) -> None:
    hk = make(pbs)
    parent = hk.submit(f"sleep 2; {parent_cmd}", name="parent", job_subdir="parent")
    child = hk.submit("echo child", name="child", job_subdir="child", **{kind: [parent]})
    hk.flush()
    # the child went to the scheduler at once, with a native dependency on its parent
    assert "#PBS -W depend=" in (pbs / "run" / "child" / "child.sh").read_text()
    results = hk.monitor(poll_interval=FAST, timeout=180)
    if child_runs:
        assert results[child] is JobStatus.COMPLETED
        assert (pbs / "run" / "child" / "stdout.log").read_text() == "child\n"
    else:
        assert results[child] is JobStatus.CANCELLED
        assert hk.failure_info(child)["reason"] == "dependency_never_satisfied"
        time.sleep(1)
        assert hk.job_info(child)["scheduler_id"] not in live_ids()  # nothing lingers in the queue
        assert not (pbs / "run" / "child" / "stdout.log").exists()
    hk.close()


def test_dependency_on_array_tasks(pbs: Path) -> None:
    """Children depending on single tasks of an array (SLURM's <array>_<index> through the
    wrapper); a child of a failed task is cancelled, the others run."""
    hk = make(pbs)
    parents = [hk.submit(f"sleep 2; exit {1 if i == 1 else 0}", name=f"p{i}", job_subdir=f"p_{i}")
               for i in range(3)]  # fmt: skip
    hk.flush()
    children = [hk.submit(f"echo child of {i}", name=f"c{i}", job_subdir=f"c_{i}", walltime="00:10:00",
                          after_ok=[parent]) for i, parent in enumerate(parents)]  # fmt: skip
    hk.flush()
    assert "afterok:" in (pbs / "run" / "c_0" / "c0.sh").read_text() or "afterok:" in (
        next((pbs / "run" / ".housekeeper" / "arrays").glob("*.sh")).read_text()
    )
    results = hk.monitor(poll_interval=FAST, timeout=240)
    assert [results[p] for p in parents] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert [results[c] for c in children] == [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.COMPLETED]
    assert hk.failure_info(children[1])["reason"] == "dependency_never_satisfied"
    assert not (pbs / "run" / "c_1" / "stdout.log").exists()
    time.sleep(1)
    assert not queue_ids_under(pbs)
    hk.close()


def test_failures(pbs: Path) -> None:
    hk = make(pbs)
    exit3 = hk.submit("exit 3", name="exit3", job_subdir="exit3")
    logerr = hk.submit("echo 'Traceback (most recent call last):' >&2", name="logerr", job_subdir="logerr")
    missing = hk.submit("true", name="missing", job_subdir="missing", expected_files=["nothing.here"])
    good = hk.submit("echo 'a FutureWarning' >&2; touch made", name="good", job_subdir="good",
                     expected_files=["made"])  # fmt: skip
    results = hk.monitor(poll_interval=FAST, timeout=240)
    assert submissions(hk) == 1  # one array: same settings
    assert results[exit3] is JobStatus.FAILED and hk.failure_info(exit3)["reason"] == "exit_code"
    assert hk.failure_info(exit3)["exit_code"] == 3
    assert results[logerr] is JobStatus.FAILED and hk.failure_info(logerr)["reason"] == "log_error"
    assert hk.failure_info(logerr)["log_lines"][0]["line"] == 1
    assert results[missing] is JobStatus.FAILED and hk.failure_info(missing)["missing_files"] == ["nothing.here"]
    assert results[good] is JobStatus.COMPLETED
    hk.close()


def test_retries_and_a_dependant_waiting_for_the_final_outcome(pbs: Path) -> None:
    hk = make(pbs)
    script = write(pbs / "flaky.sh", textwrap.dedent("""\
        n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
        echo "attempt $n"; [ $n -ge 3 ] || exit 1
        """))  # fmt: skip
    job = hk.submit(f"bash {script}", name="flaky", job_subdir="flaky", max_retries=2)
    child = hk.submit("echo child", name="child", job_subdir="child", after_ok=[job])
    results = hk.monitor(poll_interval=FAST, timeout=240)
    assert results == {job: JobStatus.COMPLETED, child: JobStatus.COMPLETED}
    info = hk.job_info(job)
    assert [a["status"] for a in info["attempts"]] == ["FAILED", "FAILED", "COMPLETED"]
    assert len({a["scheduler_id"] for a in info["attempts"]}) == 3
    assert hk.job_info(child)["attempt"] == 1
    folder = pbs / "run" / "flaky"
    assert [(folder / f).read_text() for f in ("stdout.1.log", "stdout.2.log", "stdout.log")] == [
        "attempt 1\n", "attempt 2\n", "attempt 3\n"]  # fmt: skip
    hk.close()


def test_cancel_array_tasks_running_and_waiting(pbs: Path) -> None:
    """Cancelling one running and one waiting task of an array (scancel <array>_<index>: the
    wrappers' qdel cannot address one task) leaves the other tasks alone."""
    hk = make(pbs)
    ids = [hk.submit(f"sleep {40 if i < 2 else 3}; echo {i}", name=f"k{i}", job_subdir=f"k_{i}", cpus=16)
           for i in range(4)]  # fmt: skip
    hk.flush()
    deadline = time.time() + 60
    while hk.track(ids[0]) is not JobStatus.RUNNING and time.time() < deadline:
        time.sleep(FAST)
    hk.engine.poll()  # learn the raw ids of the tasks that started
    assert hk.track(ids[0]) is JobStatus.RUNNING and hk.track(ids[2]) is JobStatus.QUEUED
    hk.cancel([ids[0], ids[2]])
    results = hk.monitor(poll_interval=FAST, timeout=180)
    assert results[ids[0]] is JobStatus.CANCELLED and results[ids[2]] is JobStatus.CANCELLED
    assert results[ids[1]] is JobStatus.COMPLETED and results[ids[3]] is JobStatus.COMPLETED
    assert not (pbs / "run" / "k_2" / "stdout.log").exists()  # never ran
    assert (pbs / "run" / "k_0" / "stdout.log").read_text() == ""  # killed before its echo
    assert hk._runner.calls["scancel"] == 1 and hk._runner.calls["qdel"] == 0
    hk.close()


def test_qdel_from_outside_is_not_completed(pbs: Path) -> None:
    """The wrappers' qdel sends SIGKILL: no exit record; the wrapper shows C without an exit
    status, which must not pass for success."""
    hk = make(pbs)
    hk.engine.backend.record_grace = 5  # type: ignore[attr-defined]
    job = hk.submit("sleep 600", name="victim", job_subdir="victim")
    deadline = time.time() + 60
    while hk.track(job) is not JobStatus.RUNNING and time.time() < deadline:
        time.sleep(FAST)
    subprocess.run(["qdel", hk.job_info(job)["scheduler_id"]], check=True)
    results = hk.monitor([job], poll_interval=FAST, timeout=120)
    assert results[job] is JobStatus.FAILED
    assert hk.failure_info(job)["reason"] == "lost"
    hk.close()
