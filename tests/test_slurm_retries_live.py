"""Retries that learn, and what jobs used, on the real SLURM cluster (accounting on)."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
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


def make(workdir: Path, **kwargs: object) -> tuple[housekeeper, SbatchLog]:
    runner = SbatchLog()
    return housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=5, **kwargs), runner


def _array(argv: list[str]) -> str | None:
    found = [a.split("=", 1)[1] for a in argv if a.startswith("--array=")]
    return found[0] if found else None


def test_a_sweep_with_time_and_memory_failures_heals_itself(accounting: None, slurm: Path) -> None:
    """The issue's promise: time-limit and memory failures heal under an escalation policy,
    and efficiency() then says what the next sweep should ask for."""
    hk, runner = make(slurm)
    hold = "python3 -c 'import time; b = bytearray(300 * 1024 * 1024); time.sleep(8)'"  # > one 5 s sample
    slow = [hk.submit("sleep 110", name=f"slow_{i}", walltime="00:01:00", memory="1GB", max_retries=2,
                      escalate=True) for i in range(2)]  # fmt: skip
    hogs = [hk.submit(hold, name=f"hog_{i}", memory="250MB", walltime="00:10:00", max_retries=2, escalate=True)
            for i in range(2)]  # fmt: skip
    fine = [hk.submit(f"echo {i}", name=f"fine_{i}", memory="1GB", max_retries=2, escalate=True) for i in range(2)]
    results = hk.monitor(poll_interval=2, timeout=900)
    assert set(results.values()) == {JobStatus.COMPLETED}, {j: hk.failure_info(j)["attempts"] for j in results}
    for job in slow:
        attempts = [(a["reason"], a["walltime_s"], a["native_state"]) for a in hk.job_info(job)["attempts"]]
        assert attempts == [("timeout", 60, "TIMEOUT"), (None, 120, "COMPLETED")]
    for job in hogs:
        attempts = [(a["reason"], a["memory_mb"], a["native_state"]) for a in hk.job_info(job)["attempts"]]
        assert attempts == [("oom", 250, "OUT_OF_MEMORY"), (None, 375, "COMPLETED")]
    assert all(hk.job_info(job)["attempt"] == 1 for job in fine)
    time_args = {a for argv in runner.sbatch for a in argv if a.startswith(("--time=", "--mem="))}
    assert {"--time=0-00:02:00", "--mem=375M"} <= time_args
    script = (slurm / "run" / str(slow[0]) / "slow_0.sh").read_text()
    array = re.search(r"# sent as one task of the array in (\S+)", script)  # both retried at once: one array
    assert "#SBATCH --time=0-00:02:00" in (Path(array.group(1)).read_text() if array else script)
    advice = {g["pattern"]: g for g in hk.efficiency(by="pattern").iter_rows(named=True)}
    assert advice["slow_*"]["timeout"] == 2 and advice["slow_*"]["suggested_walltime"] == "00:03:00"  # 110 s x 1.5
    assert advice["hog_*"]["oom"] == 2 and 300 <= advice["hog_*"]["max_rss_mb_p95"] <= 400
    assert 320 < advice["hog_*"]["suggested_memory_mb"] <= 512  # above the 250 MB that ran out
    assert advice["fine_*"]["suggested_memory_mb"] <= 128  # asked 1 GB to echo
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
