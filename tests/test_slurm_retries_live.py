"""Retries that learn, and what jobs used, on the real SLURM cluster (accounting on)."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.runner import CommandResult, Runner, program_name

from .conftest import cluster_script

pytestmark = pytest.mark.slurm
FAST = 0.5
FIRST_TRY = '[ ! -e "$HK_JOB_DIR/status.1.json" ]'  # true only in a job's first attempt


class SbatchLog(Runner):
    """The real commands, with every sbatch argv kept for the asserts."""

    def __init__(self) -> None:
        super().__init__(backoff=(0.5, 1.0, 2.0, 5.0, 10.0), retries=8)
        self.sbatch: list[list[str]] = []

    def _once(self, argv: Sequence[str]) -> CommandResult:  # type: ignore[override]
        if program_name(argv) == "sbatch":
            self.sbatch.append(list(argv))
        return super()._once(argv)


@pytest.fixture
def accounting(slurm_cluster: Path) -> Iterator[None]:
    cluster_script("--accounting")  # a no-op when it is on already
    yield


def make(workdir: Path, **kwargs: object) -> tuple[housekeeper, SbatchLog]:
    runner = SbatchLog()
    return housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=5, **kwargs), runner


def _array(argv: list[str]) -> str | None:
    found = [a.split("=", 1)[1] for a in argv if a.startswith("--array=")]
    return found[0] if found else None


def test_timeout_heals_with_a_doubled_walltime(accounting: None, slurm: Path) -> None:
    hk, runner = make(slurm)
    job = hk.submit("sleep 110", name="slow", walltime="00:01:00", max_retries=1, escalate={"timeout": 2})
    assert hk.monitor([job], poll_interval=2, timeout=600)[job] is JobStatus.COMPLETED
    info = hk.job_info(job)
    attempts = [(a["status"], a["reason"], a["walltime_s"], a["native_state"]) for a in info["attempts"]]
    assert attempts == [("FAILED", "timeout", 60, "TIMEOUT"), ("COMPLETED", None, 120, "COMPLETED")]
    assert [a for a in runner.sbatch[-1] if a.startswith("--time=")] == ["--time=0-00:02:00"]
    assert "#SBATCH --time=0-00:02:00" in (slurm / "run" / str(job) / "slow.sh").read_text()
    assert info["attempts"][1]["elapsed_s"] >= 110
    hk.close()


def test_oom_heals_with_more_memory(accounting: None, slurm: Path) -> None:
    hk, runner = make(slurm)
    hog = "python3 -c 'import time; b = bytearray(300 * 1024 * 1024); time.sleep(2)'"
    job = hk.submit(hog, name="hog", memory="100MB", max_retries=2, escalate={"oom": 4})
    assert hk.monitor([job], poll_interval=FAST, timeout=300)[job] is JobStatus.COMPLETED
    info = hk.job_info(job)
    assert [(a["reason"], a["memory_mb"]) for a in info["attempts"]] == [("oom", 100), (None, 400)]
    assert info["attempts"][0]["native_state"] == "OUT_OF_MEMORY"
    assert [a for a in runner.sbatch[-1] if a.startswith("--mem=")] == ["--mem=400M"]
    hk.close()


def test_only_the_failed_tasks_of_an_array_go_again(accounting: None, slurm: Path) -> None:
    hk, runner = make(slurm)
    failing = {3, 11, 20, 34, 47}
    ids = [
        hk.submit(f"{FIRST_TRY} && exit 1; echo {i}" if i in failing else f"echo {i}", name="task", job_subdir=f"t_{i:02d}")
        for i in range(50)
    ]  # fmt: skip
    results = hk.monitor(ids, poll_interval=FAST, timeout=300)
    assert len(runner.sbatch) == 1 and _array(runner.sbatch[0]) == "0-49"
    assert {i for i, job in enumerate(ids) if results[job] is JobStatus.FAILED} == failing
    retried = hk.retry_failed()
    assert sorted(retried) == sorted(ids[i] for i in failing)
    assert len(runner.sbatch) == 2 and _array(runner.sbatch[1]) == "0-4"  # one new array of just those five
    script = runner.sbatch[1][-1]
    tasks = Path(script[: -len(".sh")] + ".tasks").read_text()
    for i in range(50):
        assert (f"t_{i:02d}" in tasks) == (i in failing)
    results = hk.monitor(ids, poll_interval=FAST, timeout=300)
    assert set(results.values()) == {JobStatus.COMPLETED}
    frame = hk.list_jobs()
    assert sorted(frame.filter(pl.col("attempt") == 2)["job_id"].to_list()) == sorted(retried)
    hk.close()


def test_automatic_retries_send_only_the_failed_tasks(accounting: None, slurm: Path) -> None:
    hk, runner = make(slurm)
    failing = {0, 7, 19}
    ids = [
        hk.submit(f"{FIRST_TRY} && exit 1; echo {i}" if i in failing else f"echo {i}", name="auto",
                  job_subdir=f"a_{i:02d}", max_retries=1)
        for i in range(20)
    ]  # fmt: skip
    assert set(hk.monitor(ids, poll_interval=FAST, timeout=300).values()) == {JobStatus.COMPLETED}
    sizes = []
    for argv in runner.sbatch[1:]:
        spec = _array(argv)
        sizes.append(1 if spec is None else int(spec.split("-")[1]) + 1)
    assert sum(sizes) == len(failing)  # retries carried the three failed tasks and nothing else
    assert {i for i, job in enumerate(ids) if hk.job_info(job)["attempt"] == 2} == failing
    hk.close()


def test_usage_from_sacct(accounting: None, slurm: Path) -> None:
    hk, _ = make(slurm)
    # 400 MB held for 12 s: the cluster samples memory every 5 s (JobAcctGatherFrequency=task=5)
    hold = "python3 -c 'import time; b = bytearray(400 * 1024 * 1024); time.sleep(12)'"
    job = hk.submit(hold, name="hold", memory="1GB", walltime="00:10:00", cpus=2)
    assert hk.monitor([job], poll_interval=FAST, timeout=300)[job] is JobStatus.COMPLETED
    row = hk.list_jobs().filter(pl.col("job_id") == job).row(0, named=True)
    assert 380 <= row["max_rss_mb"] <= 520, row
    assert 12 <= row["elapsed_s"] <= 60 and row["cpu_time_s"] is not None and row["cpu_time_s"] < 6
    assert row["nodelist"] == "vm"
    assert row["memory_efficiency"] == pytest.approx(row["max_rss_mb"] / 1024)
    assert row["time_efficiency"] == pytest.approx(row["elapsed_s"] / 600)
    assert row["cpu_efficiency"] < 0.25  # it slept, on 2 cpus
    summary = hk.efficiency().row(0, named=True)
    assert summary["name"] == "hold" and summary["suggested_memory_mb"] >= row["max_rss_mb"] * 1.2
    assert summary["suggested_memory_mb"] < 1024 and summary["suggested_cpus"] == 1
    hk.close()


def test_usage_without_accounting_keeps_what_the_job_itself_knows(slurm_cluster: Path, slurm: Path) -> None:
    cluster_script("--no-accounting")
    try:
        hk, _ = make(slurm)
        job = hk.submit("sleep 2", name="nap")
        assert hk.monitor([job], poll_interval=FAST, timeout=300)[job] is JobStatus.COMPLETED
        row = hk.list_jobs().filter(pl.col("job_id") == job).row(0, named=True)
        assert row["elapsed_s"] >= 2 and row["nodelist"] == os.uname().nodename
        assert row["max_rss_mb"] is None  # only accounting knows it; nothing is made up
        hk.close()
    finally:
        cluster_script("--accounting")
