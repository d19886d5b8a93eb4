"""housekeeper against the real SLURM cluster brought up by tests/cluster/slurm-up.sh.

Every test here talks to slurmctld through the real sbatch/squeue/sacct/scancel. Under CI=true
they must run; elsewhere they skip with the reason when the cluster is not there.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.runner import Runner

from .conftest import cluster_script, write
from .seed import submit_quick_start, write_quick_start_programs

pytestmark = pytest.mark.slurm
FAST = 0.5


def make(workdir: Path, **kwargs: object) -> housekeeper:
    runner = Runner(backoff=(0.5, 1.0, 2.0, 5.0, 10.0), retries=8)
    return housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner, file_grace=5, **kwargs)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


# ------------------------------------------------------------- in both accounting modes
def test_quick_start_verbatim(slurm_mode: str, slurm: Path) -> None:
    workdir = slurm
    write_quick_start_programs(workdir)
    hk = housekeeper(jobs_dir="./my_pipeline_run")  # auto-detects SLURM
    job1, job2 = submit_quick_start(hk)
    results = hk.monitor([job1, job2], poll_interval=2)
    assert hk.scheduler == "slurm"
    assert results == {job1: JobStatus.COMPLETED, job2: JobStatus.COMPLETED}
    assert {j["name"]: j["status"] for j in hk.list_jobs()} == {"process": "COMPLETED", "analyze": "COMPLETED"}
    run = workdir / "my_pipeline_run"
    assert "#SBATCH --cpus-per-task=8" in (run / "preprocessing" / "process.sh").read_text()
    assert "analysed x" in (run / "analysis" / "stdout.log").read_text()
    info = hk.job_info(job1)
    assert info["scheduler_id"].isdigit()
    hk.close()


def test_failures_by_each_rule(slurm_mode: str, slurm: Path) -> None:
    hk = make(slurm)
    exit3 = hk.submit("exit 3", name="exit3", job_subdir="exit3")
    killed = hk.submit("kill -KILL $$", name="killed", job_subdir="killed")
    logerr = hk.submit("echo 'Traceback (most recent call last):' >&2", name="logerr", job_subdir="logerr")
    missing = hk.submit("true", name="missing", job_subdir="missing", expected_files=["nothing.here"])
    good = hk.submit("echo 'a FutureWarning' >&2; touch made", name="good", job_subdir="good",
                     expected_files=["made"])  # fmt: skip
    results = hk.monitor(poll_interval=FAST, timeout=240)
    # all five went out in one array: same settings
    assert hk._runner.calls["sbatch"] == 1
    assert results[exit3] is JobStatus.FAILED and hk.failure_info(exit3)["reason"] == "exit_code"
    assert hk.failure_info(exit3)["exit_code"] == 3
    assert results[killed] is JobStatus.FAILED and hk.failure_info(killed)["reason"] == "signal"
    assert hk.failure_info(killed)["signal"] == 9
    assert results[logerr] is JobStatus.FAILED and hk.failure_info(logerr)["reason"] == "log_error"
    assert hk.failure_info(logerr)["log_lines"][0]["line"] == 1
    assert results[missing] is JobStatus.FAILED and hk.failure_info(missing)["missing_files"] == ["nothing.here"]
    assert results[good] is JobStatus.COMPLETED  # "FutureWarning" holds no error pattern
    hk.close()


def test_timeout_at_the_time_limit(slurm_mode: str, slurm: Path) -> None:
    hk = make(slurm)
    job = hk.submit("sleep 600", name="slow", job_subdir="slow", walltime="00:01:00")
    results = hk.monitor([job], poll_interval=2, timeout=300)
    assert results[job] is JobStatus.FAILED
    info = hk.failure_info(job)
    assert info["reason"] == "timeout"
    assert info["scheduler_state"] in ("TIMEOUT", None)
    hk.close()


def test_out_of_memory(slurm_mode: str, slurm: Path) -> None:
    hk = make(slurm)
    hog = "python -c 'import time; x = bytearray(1500 * 1024 * 1024); time.sleep(3)'"
    job = hk.submit(hog, name="hog", job_subdir="hog", memory="200MB")
    results = hk.monitor([job], poll_interval=1, timeout=180)
    assert results[job] is JobStatus.FAILED
    assert hk.failure_info(job)["reason"] == "oom"
    hk.close()


def test_scancel_from_outside_is_cancelled(slurm_mode: str, slurm: Path) -> None:
    hk = make(slurm)
    job = hk.submit("sleep 600", name="victim", job_subdir="victim")
    deadline = time.time() + 60
    while hk.track(job) is not JobStatus.RUNNING and time.time() < deadline:
        time.sleep(0.5)
    scheduler_id = hk.job_info(job)["scheduler_id"]
    subprocess.run(["scancel", scheduler_id], check=True)
    results = hk.monitor([job], poll_interval=FAST, timeout=120)
    assert results[job] is JobStatus.CANCELLED
    assert hk.failure_info(job)["reason"] == "cancelled_by_user"
    hk.close()


# ------------------------------------------------------------------ accounting on only
def test_sweep_goes_out_as_arrays(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    ids = [hk.submit(f"echo task {i}", name=f"sweep{i}", job_subdir=f"spw_{i:04d}", cpus=1, memory="100MB")
           for i in range(1000)]  # fmt: skip
    results = hk.monitor(ids, poll_interval=2, timeout=600)
    assert hk._runner.calls["sbatch"] == 1
    assert set(results.values()) == {JobStatus.COMPLETED}
    frame = hk.list_jobs()
    assert frame["scheduler_id"].str.contains("_").all()
    assert (slurm / "run" / "spw_0999" / "stdout.log").read_text() == "task 999\n"
    # polling never cost a command per job
    assert hk._runner.calls["squeue"] < 200
    hk.close()


def test_arrays_split_at_the_size_limit(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    hk.engine.backend._max_array_size = 30  # type: ignore[attr-defined]
    ids = [hk.submit(f"echo {i}", name=f"s{i}", job_subdir=f"s_{i:03d}") for i in range(100)]
    results = hk.monitor(ids, poll_interval=FAST, timeout=300)
    assert hk._runner.calls["sbatch"] == 4
    assert set(results.values()) == {JobStatus.COMPLETED}
    hk.close()


@pytest.mark.parametrize(
    ("parent_cmd", "kind", "child_runs"),
    [("true", "after_ok", True), ("false", "after_ok", False), ("false", "after_fail", True),
     ("true", "after_fail", False), ("false", "after_any", True)],
)  # fmt: skip
def test_dependencies(slurm_cluster: Path, slurm: Path, parent_cmd: str, kind: str, child_runs: bool) -> None:
    hk = make(slurm)
    parent = hk.submit(f"sleep 2; {parent_cmd}", name="parent", job_subdir="parent")
    child = hk.submit("echo child", name="child", job_subdir="child", **{kind: [parent]})
    hk.flush()
    # the child went to SLURM at once, with a native dependency on its parent
    assert "--dependency=" in (slurm / "run" / "child" / "child.sh").read_text()
    results = hk.monitor(poll_interval=FAST, timeout=180)
    if child_runs:
        assert results[child] is JobStatus.COMPLETED
    else:
        assert results[child] is JobStatus.CANCELLED
        assert hk.failure_info(child)["reason"] == "dependency_never_satisfied"
        time.sleep(1)
        assert hk.job_info(child)["scheduler_id"] not in squeue_ids()  # nothing lingers in the queue
    hk.close()


def test_retries_and_a_dependant_waiting_for_the_final_outcome(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    script = write(slurm / "flaky.sh", textwrap.dedent("""\
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
    folder = slurm / "run" / "flaky"
    assert [(folder / f).read_text() for f in ("stdout.1.log", "stdout.2.log", "stdout.log")] == [
        "attempt 1\n", "attempt 2\n", "attempt 3\n"]  # fmt: skip
    hk.close()


@pytest.mark.parametrize(
    ("crash_at", "sbatch_after"),
    [("after_submit", 0),  # SLURM took the jobs, the database never heard: the next driver adopts them
     ("after_claim", 1)],  # nothing reached SLURM: the next driver submits them, once
)  # fmt: skip
def test_driver_killed_around_sbatch(slurm_cluster: Path, slurm: Path, crash_at: str, sbatch_after: int) -> None:
    driver = write(slurm / "driver.py", textwrap.dedent("""\
        from housekeeper import housekeeper
        hk = housekeeper(jobs_dir="run", scheduler="slurm", file_grace=5)
        ids = [hk.submit(f"echo {i}", name=f"k{i}", job_subdir=f"k_{i:02d}") for i in range(20)]
        hk.flush()
        """))  # fmt: skip
    env = dict(os.environ, HOUSEKEEPER_CRASH_AT=crash_at)
    proc = subprocess.run([sys.executable, str(driver)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    hk = make(slurm)
    assert set(hk.store.status_counts()) == {"PENDING"}  # what SLURM answered never reached the database
    results = hk.monitor(poll_interval=FAST, timeout=240)  # a second driver finishes the run
    assert len(results) == 20 and set(results.values()) == {JobStatus.COMPLETED}
    assert hk._runner.calls["sbatch"] == sbatch_after
    for i in range(20):
        assert (slurm / "run" / f"k_{i:02d}" / "stdout.log").read_text() == f"{i}\n"  # each ran exactly once
    hk.close()


def test_controller_outage_marks_nothing_failed(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    ids = [hk.submit(f"sleep {5 + i % 3}; echo {i}", name=f"o{i}", job_subdir=f"o_{i}") for i in range(10)]
    hk.flush()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["results"] = hk.monitor(ids, poll_interval=1, timeout=400)
        except Exception as exc:  # the test reports it below
            outcome["error"] = exc

    watcher = threading.Thread(target=run)
    watcher.start()
    time.sleep(2)
    cluster_script("--stop-controller")
    try:
        time.sleep(60)  # issue 7: a minute without slurmctld
        assert watcher.is_alive()
        assert "FAILED" not in hk.store.status_counts()
    finally:
        cluster_script("--start-controller")
    watcher.join(400)
    assert "error" not in outcome, outcome.get("error")
    assert set(outcome["results"].values()) == {JobStatus.COMPLETED}  # type: ignore[union-attr]
    hk.close()


def test_export_after_a_live_run(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    job = hk.submit("echo hi", name="e", job_subdir="e")
    hk.monitor([job], poll_interval=FAST, timeout=120)
    data = json.loads(Path(hk.export_state(slurm / "state.json")).read_text())
    assert data["scheduler"] == "slurm"
    assert data["jobs"][0]["attempts"][0]["scheduler_id"] == hk.job_info(job)["scheduler_id"]
    hk.close()


def test_refused_and_never_starting_jobs_fail_with_the_reason(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    bad_partition = hk.submit("true", name="badq", job_subdir="badq", queue="nosuchpartition")
    too_big = hk.submit("true", name="big", job_subdir="big", nodes=5)
    fine = hk.submit("true", name="fine", job_subdir="fine")
    results = hk.monitor(poll_interval=FAST, timeout=120)
    assert results == {bad_partition: JobStatus.FAILED, too_big: JobStatus.FAILED, fine: JobStatus.COMPLETED}
    refused = hk.failure_info(bad_partition)
    assert refused["reason"] == "submit_error"
    assert "partition" in refused["submit_error"].lower()
    never = hk.failure_info(too_big)
    assert never["reason"] == "submit_error"
    assert any(r in never["submit_error"] for r in ("PartitionNodeLimit", "PartitionConfig"))
    assert hk.job_info(too_big)["scheduler_id"] not in squeue_ids()  # taken out of the queue
    hk.close()


def test_max_queued_feeds_jobs_in(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm, max_queued=4)
    ids = [hk.submit(f"sleep 1; echo {i}", name=f"q{i}", job_subdir=f"q_{i:02d}") for i in range(12)]
    hk.flush()
    assert hk.store.status_counts().get("PENDING") == 8  # the rest wait in housekeeper
    results = hk.monitor(ids, poll_interval=FAST, timeout=240)
    assert set(results.values()) == {JobStatus.COMPLETED}
    assert hk._runner.calls["sbatch"] >= 3  # fed in as others finished
    hk.close()


def test_dozens_of_jobs_really_run_at_once(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    ids = [hk.submit("sleep 4", name="par", job_subdir=f"p_{i:03d}", memory="100MB") for i in range(100)]
    results = hk.monitor(ids, poll_interval=1, timeout=400)
    assert set(results.values()) == {JobStatus.COMPLETED}
    spans = []
    for i in range(100):
        record = json.loads((slurm / "run" / f"p_{i:03d}" / "status.json").read_text())
        spans.append((record["started_at"], record["ended_at"]))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak >= 16, f"at most {peak} jobs ran at once"
    hk.close()


def test_retried_jobs_go_out_again_as_an_array_and_keep_their_logs(slurm_cluster: Path, slurm: Path) -> None:
    hk = make(slurm)
    flaky = 'if [ -e "$HK_JOB_DIR/status.1.json" ]; then echo second; else echo first; exit 1; fi'
    ids = [hk.submit(f"{flaky}; echo {i}", name=f"r{i}", job_subdir=f"r_{i}") for i in range(6)]
    assert set(hk.monitor(ids, poll_interval=FAST, timeout=240).values()) == {JobStatus.FAILED}
    assert hk._runner.calls["sbatch"] == 1
    assert hk.retry(ids) == [2] * 6
    assert hk._runner.calls["sbatch"] == 2  # retried together: one array, not six submissions
    results = hk.monitor(ids, poll_interval=FAST, timeout=240)
    assert set(results.values()) == {JobStatus.COMPLETED}
    for i in range(6):
        folder = slurm / "run" / f"r_{i}"
        assert (folder / "stdout.1.log").read_text() == "first\n"
        assert (folder / "stdout.log").read_text() == f"second\n{i}\n"
        assert hk.job_info(ids[i])["attempt"] == 2
    hk.close()
