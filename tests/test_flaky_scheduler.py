"""SPEC §10 on the live cluster: a scheduler whose commands fail, hang and cut their output
short for 30% of the calls changes no outcome, fails no job and submits nothing twice.

The driver under test gets a runner whose PATH starts with tests/faults/slurm/, where sbatch,
squeue, sacct, scancel and scontrol are the wrapper tests/faults/flaky.sh around the real
commands (seeded, decided per call). The same pipeline then runs without faults, and every
job must end the same way (status, reason, attempt, exit code) in both runs.
"""
from __future__ import annotations

import collections
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from housekeeper import housekeeper
from housekeeper.runner import Runner

from .pipeline import assert_submitted_once

pytestmark = pytest.mark.slurm

FAULTS = Path(__file__).parent / "faults"
BLOCK = 100  # jobs in one copy of the pipeline
FAULTY_BLOCKS = 5  # the faulty run: 500 jobs
CLEAN_BLOCKS = 1  # the clean run: one copy (each copy is independent of the others)
SCHEDULER_REASONS = {"submit_error", "lost", "scheduler_error"}
RESOURCES: dict[str, Any] = {"memory": 100, "walltime": "00:05:00"}


def submit_block(hk: housekeeper, block: int, markers: Path) -> list[int]:
    """One copy of the pipeline: 100 jobs, roots that succeed, fail, fail once then succeed on
    their retry, or fail on every attempt, and dependants of each kind on each of them."""
    ids: list[int] = []

    def job(command: str, **kwargs: Any) -> int:
        position = len(ids)
        ids.append(hk.submit(command, name=f"p{position}", job_subdir=f"b{block}_p{position}", **RESOURCES, **kwargs))
        return ids[-1]

    ok = [job("true") for _ in range(18)]
    bad = [job("exit 1") for _ in range(10)]
    once = []
    for i in range(10):
        marker = markers / f"b{block}_once{i}"
        once.append(job(f"if [ -e {marker} ]; then true; else touch {marker}; exit 1; fi", max_retries=1))
    always = [job("exit 2", max_retries=1) for _ in range(5)]
    chain = [job("true", after_ok=[ok[i]]) for i in range(10)]
    for i in range(4):
        job("true", after_ok=[chain[i]])  # a second level
    for i in range(5):
        job("true", after_ok=[bad[i]])  # never runs
    for i in range(5):
        job("true", after_ok=[once[i]])  # waits for the retry, then runs
    for i in range(3):
        job("true", after_ok=[always[i]])  # never runs
    for i in range(5):
        job("true", after_fail=[bad[5 + i]])
    for i in range(5):
        job("true", after_fail=[ok[10 + i]])  # never runs
    for i in range(3):
        job("true", after_fail=[always[2 + i]])
    for i in range(2):
        job("true", after_fail=[once[5 + i]])  # never runs: the retry succeeds
    for i in range(4):
        job("true", after_any=[bad[i]])
    for i in range(4):
        job("true", after_any=[ok[i]])
    for i in range(2):
        job("true", after_any=[once[7 + i]])
    failing = [job("exit 3", after_ok=[ok[15 + i]]) for i in range(2)]
    for i in range(2):
        job("true", after_ok=[failing[i]])  # never runs
    job("true", after_ok=[ok[17]], after_any=[bad[9]])  # both conditions hold
    assert len(ids) == BLOCK
    return ids


def outcomes(hk: housekeeper, blocks: list[list[int]]) -> list[list[tuple[Any, ...]]]:
    by_id = {j["job_id"]: j for j in hk.list_jobs()}
    return [
        [(by_id[i]["status"], by_id[i]["reason"], by_id[i]["attempt"], by_id[i]["exit_code"]) for i in ids]
        for ids in blocks
    ]


def run_pipeline(workdir: Path, blocks: int, runner: Runner, timeout: float) -> tuple[housekeeper, list[list[int]]]:
    markers = workdir / "markers"
    markers.mkdir()
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner, file_grace=5)
    ids = [submit_block(hk, b, markers) for b in range(blocks)]
    hk.monitor(poll_interval=1, timeout=timeout, progress=False)
    return hk, ids


def test_a_flaky_scheduler_changes_no_outcome_and_submits_nothing_twice(
    accounting: None, slurm: Path, tmp_path: Path
) -> None:
    real_sbatch = shutil.which("sbatch")
    assert real_sbatch is not None
    fault_state = tmp_path / "fault-state"
    fault_state.mkdir()
    faulty_env = dict(os.environ)
    faulty_env.update(
        PATH=f"{FAULTS / 'slurm'}{os.pathsep}{os.environ['PATH']}",
        HK_FAULT_DIR=str(fault_state), HK_FAULT_RATE="30", HK_FAULT_SEED=os.environ.get("HK_FAULT_SEED", "7"),
        HK_FAULT_REAL_DIR=os.path.dirname(real_sbatch),
    )  # fmt: skip
    # Short timeouts: a hung command is given up on after 3 s, and retried soon after.
    faulty_runner = Runner(timeout=3, retries=6, backoff=(0.2, 0.5, 1.0), env=faulty_env)
    clean_runner = Runner(timeout=60, retries=6, backoff=(0.5, 1.0, 2.0))

    faulty_dir = slurm / "faulty"
    clean_dir = slurm / "clean"
    faulty_dir.mkdir()
    clean_dir.mkdir()
    started = time.time()
    clean: dict[str, Any] = {}
    clean["hk"], clean["ids"] = run_pipeline_in(clean_dir, CLEAN_BLOCKS, clean_runner, timeout=200)
    clean_seconds = time.time() - started
    faulty_started = time.time()
    hk, ids = run_pipeline_in(faulty_dir, FAULTY_BLOCKS, faulty_runner, timeout=240)
    faulty_seconds = time.time() - faulty_started

    calls = [line.split()[1:3] for line in (fault_state / "calls.log").read_text().splitlines()
             if len(line.split()) >= 3 and not line.split()[2].startswith("submitted")]  # fmt: skip
    by_fault = collections.Counter(fault for _, fault in calls)
    by_program = collections.Counter(program for program, fault in calls if fault != "none")
    print(f"clean {CLEAN_BLOCKS * BLOCK} jobs: {clean_seconds:.0f} s; faulty {FAULTY_BLOCKS * BLOCK} jobs: "
          f"{faulty_seconds:.0f} s; calls {len(calls)}, faults {dict(by_fault)}, faulty programs {dict(by_program)}")

    # The faults really happened, of every kind, to every program that was called often.
    for fault in ("fail", "hang", "late", "truncate"):
        assert by_fault[fault] > 0, f"no '{fault}' fault was injected: {dict(by_fault)}"
    assert by_program["sbatch"] >= 5 and by_program["squeue"] >= 5 and by_program["sacct"] >= 1

    expected = outcomes(clean["hk"], clean["ids"])[0]
    got = outcomes(hk, ids)
    # The clean run itself ended as the pipeline says (a few spot checks of the model).
    assert expected[0] == ("COMPLETED", None, 1, 0)
    assert expected[18] == ("FAILED", "exit_code", 1, 1)
    assert expected[28] == ("COMPLETED", None, 2, 0)  # failed once, retried, succeeded
    assert expected[38] == ("FAILED", "exit_code", 2, 2)
    assert collections.Counter(s for s, *_ in expected) == {"COMPLETED": 66, "FAILED": 17, "CANCELLED": 17}
    assert all(r == "dependency_never_satisfied" for s, r, *_ in expected if s == "CANCELLED")
    for block, result in enumerate(got):
        differences = [(k, e, g) for k, (e, g) in enumerate(zip(expected, result)) if e != g]
        assert not differences, f"block {block}: (position, clean, faulty) {differences[:10]}"
    failed_by_scheduler = [j["job_id"] for j in hk.list_jobs() if j["reason"] in SCHEDULER_REASONS]
    assert failed_by_scheduler == []

    # Nothing submitted twice, nothing left claimed, every attempt ran once.
    assert_submitted_once(faulty_dir, started)
    hk.close()
    clean["hk"].close()


def run_pipeline_in(folder: Path, blocks: int, runner: Runner, timeout: float) -> tuple[housekeeper, list[list[int]]]:
    """The pipeline, submitted from `folder` (jobs run where their driver was)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        return run_pipeline(folder, blocks, runner, timeout)
    finally:
        os.chdir(previous)

