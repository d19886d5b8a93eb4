"""Issue 7 on the live SLURM cluster: two drivers on one jobs_dir, and an overloaded cluster
that loses launches (NODE_FAIL, requeues, `launch failed requeued held`)."""
from __future__ import annotations

import collections
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.runner import Runner

from .conftest import SLURM_DIR, cluster_script
from .pipeline import check_run, start_driver

pytestmark = pytest.mark.slurm


def test_two_drivers_submit_and_monitor_one_jobs_dir_at_once(accounting: None, slurm: Path) -> None:
    """Both drivers submit the same pipeline (shared) plus one of their own, at the same
    moment, and both monitor to the end: no write lost, no `database is locked` reaching the
    user, no job submitted twice, every job ends as it should."""
    procs = {tag: start_driver(slurm, "slurm", ["", tag], log_name=f"driver_{tag}.log") for tag in ("a", "b")}
    for tag, proc in procs.items():
        assert proc.wait(420) == 0, (slurm / f"driver_{tag}.log").read_text()[-3000:]
        log = (slurm / f"driver_{tag}.log").read_text()
        assert "locked" not in log and "Traceback" not in log, log[-3000:]
    check_run(slurm, "slurm", ["", "a", "b"])


@pytest.fixture
def overloaded(accounting: None, slurm_cluster: Path) -> Iterator[int]:
    """The test node claims far more CPUs than the machine has (2 real cores)."""
    cpus = 512
    cluster_script("--accounting", env={"HK_SLURM_CPUS": str(cpus)})
    try:
        yield cpus
    finally:
        cluster_script("--accounting")  # back to the default node


def test_an_overloaded_cluster_that_loses_launches_still_completes_every_job(overloaded: int, slurm: Path) -> None:
    """Hundreds of Python tasks started at once on 2 cores: slurmd fails launches, SLURM
    marks them NODE_FAIL and requeues them, some end held. Every job must still end
    COMPLETED, and the launches the cluster lost show in job_info."""
    runner = Runner(backoff=(0.5, 1.0, 2.0, 5.0), retries=8, timeout=120)
    hk = housekeeper(slurm / "run", scheduler="slurm", runner=runner, file_grace=30, lost_after=300)
    ids = [hk.submit(f"python3 -c 'import time; time.sleep(0.5); print({i})'", name="sweep",
                     job_subdir=f"t{i:04d}", memory=50, walltime="00:10:00") for i in range(1000)]  # fmt: skip
    started = time.time()
    results = hk.monitor(ids, poll_interval=5, timeout=1800, progress=False)
    elapsed = time.time() - started
    counts = collections.Counter(results.values())
    assert counts == {JobStatus.COMPLETED: 1000}, {
        j: hk.failure_info(j) for j, s in results.items() if s is not JobStatus.COMPLETED
    }
    lost: dict[int, list[str]] = {}
    for job in ids:
        notes = [str(e["note"]) for e in hk.job_info(job)["events"] if e.get("note")]
        if any(re.search(r"lost|failed to launch", note) for note in notes):
            lost[job] = notes
    requeued = sorted(p.name for p in (slurm / "run").glob("t*/stdout.1.requeue*.log"))
    print(f"overload: 1000 tasks in {elapsed:.0f} s on {overloaded} claimed CPUs; {len(lost)} jobs with lost "
          f"launches, {len(requeued)} requeued runs' logs kept; sbatch {runner.calls['sbatch']}, "
          f"scontrol {runner.calls['scontrol']}")
    # What SLURM itself says it requeued, from its log: each of those must show in job_info.
    bases = {str(j["scheduler_id"]).partition("_")[0] for j in hk.list_jobs().iter_rows(named=True)}
    log = (SLURM_DIR / "log" / "slurmctld.log").read_text(errors="replace")
    requeued_by_slurm = {f"{base}_{task}" for base, task in re.findall(r"Requeuing JobId=(\d+)_(\d+)\(", log)
                         if base in bases}  # fmt: skip
    by_scheduler_id = {str(j["scheduler_id"]): j["job_id"] for j in hk.list_jobs().iter_rows(named=True)}
    print(f"overload: SLURM requeued {len(requeued_by_slurm)} of these tasks")
    unseen = {sid for sid in requeued_by_slurm if by_scheduler_id.get(sid) not in lost}
    assert not unseen, f"requeued by SLURM but not shown in job_info: {sorted(unseen)[:10]}"
    # Each job's own log holds its one successful run; a lost run's output was set aside.
    for i in range(1000):
        assert (slurm / "run" / f"t{i:04d}" / "stdout.log").read_text() == f"{i}\n"
    hk.close()


@pytest.mark.parametrize("how", ["single", "array"])
def test_logs_planted_as_links_are_never_written_through_on_slurm(accounting: None, slurm: Path, how: str) -> None:
    """Job folders made by hand with stdout.log/stderr.log already there as links outside
    jobs_dir: SLURM (--output, for a single job) and the array task's script both write the
    job's own files; the files outside stay as they were."""
    outside = slurm / "outside"
    outside.mkdir()
    for name in ("stdout.log", "stderr.log"):
        (outside / name).write_text(f"outside {name}\n")
    count = 1 if how == "single" else 4
    hk = housekeeper(jobs_dir=slurm / "run", scheduler="slurm", runner=Runner(backoff=(0.5, 1.0, 2.0), retries=8))
    jobs = []
    for i in range(count):
        folder = slurm / "run" / f"ready_{i}"
        folder.mkdir(parents=True)
        (folder / "stdout.log").symlink_to(outside / "stdout.log")
        (folder / "stderr.log").symlink_to(outside / "missing.log")  # dangling: never created
        jobs.append(hk.submit(f"echo out {i}; echo err {i} >&2", name="ready", job_subdir=f"ready_{i}"))
    statuses = hk.monitor(jobs, poll_interval=0.5, timeout=300)
    assert set(statuses.values()) == {JobStatus.COMPLETED}, [hk.failure_info(j) for j in jobs]
    if how == "array":
        assert "array" in (slurm / "run" / "ready_0" / "ready.sh").read_text()
    assert sorted(p.name for p in outside.iterdir()) == ["stderr.log", "stdout.log"]
    assert (outside / "stdout.log").read_text() == "outside stdout.log\n"
    for i in range(count):
        folder = slurm / "run" / f"ready_{i}"
        assert not (folder / "stdout.log").is_symlink() and (folder / "stdout.log").read_text() == f"out {i}\n"
        assert (folder / "stderr.log").read_text() == f"err {i}\n"
    hk.close()
