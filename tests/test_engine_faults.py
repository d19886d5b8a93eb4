"""The engine against a scheduler that refuses or stumbles (a scripted runner; the live cluster
tests cover the real thing)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from housekeeper import housekeeper
from housekeeper.runner import CommandResult, Runner, program_name


class ScriptedRunner(Runner):
    """Answers sbatch from a script of (returncode, stdout, stderr); squeue/sacct answer empty."""

    def __init__(self, sbatch: Callable[[int], tuple[int, str, str]]) -> None:
        super().__init__(sleep=lambda _: None)
        self.sbatch = sbatch

    def _once(self, argv):  # type: ignore[no-untyped-def]
        name = program_name(argv)
        self.calls[name] += 1
        if name == "sbatch":
            code, out, err = self.sbatch(self.calls[name])
            return CommandResult(list(argv), code, out, err, 0.0)
        if name == "scontrol":
            return CommandResult(list(argv), 0, "MaxArraySize = 1001\n", "", 0.0)
        if name == "squeue":
            return CommandResult(list(argv), 0, "", "", 0.0)
        return CommandResult(list(argv), 0, "", "", 0.0)


POLICY = (1, "", "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: "
                 "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n")


def test_invalid_request_fails_with_the_schedulers_message(workdir: Path) -> None:
    runner = ScriptedRunner(lambda n: (1, "", "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n"))
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner)
    job = hk.submit("true", name="a", job_subdir="a", account="nobody")
    hk.flush()
    info = hk.failure_info(job)
    assert info["status"].value == "FAILED" and info["reason"] == "submit_error"
    assert "Invalid account" in info["submit_error"]
    hk.close()


def test_policy_refusal_holds_jobs_back_while_others_run(workdir: Path) -> None:
    answers = {1: (0, "100\n", "")}
    runner = ScriptedRunner(lambda n: answers.get(n, POLICY))
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner)
    first = hk.submit("true", name="a", job_subdir="a")
    hk.flush()
    assert hk.store.job(first)["status"] == "QUEUED"
    second = hk.submit("true", name="b", job_subdir="b", cpus=2)  # other settings: its own sbatch
    hk.flush()
    assert hk.store.job(second)["status"] == "PENDING"  # held back: the QOS limit frees up as jobs end
    assert hk.store.job(second)["submission_id"] is None  # free to be sent by the next flush
    hk.close()


def test_policy_refusal_with_nothing_running_is_a_submit_error(workdir: Path) -> None:
    runner = ScriptedRunner(lambda n: POLICY)
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner)
    job = hk.submit("true", name="a", job_subdir="a")
    hk.flush()
    info = hk.failure_info(job)
    assert info["reason"] == "submit_error" and "QOSMaxSubmitJobPerUserLimit" in info["submit_error"]
    hk.close()


def test_transient_submit_error_defers_and_never_fails(workdir: Path) -> None:
    answers = {1: (1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n")}
    runner = ScriptedRunner(lambda n: answers.get(n, (0, "200\n", "")))
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner)
    job = hk.submit("true", name="a", job_subdir="a")
    hk.flush()
    assert hk.store.job(job)["status"] == "PENDING"
    hk.flush()
    assert hk.store.job(job)["status"] == "QUEUED"
    assert hk.store.job(job)["scheduler_id"] == "200"
    assert runner.calls["sbatch"] == 2
    hk.close()


def test_scheduler_outage_during_poll_changes_nothing(workdir: Path) -> None:
    class Down(ScriptedRunner):
        def _once(self, argv):  # type: ignore[no-untyped-def]
            if program_name(argv) in ("squeue", "sacct"):
                self.calls[program_name(argv)] += 1
                return CommandResult(list(argv), 1, "", "squeue: error: Unable to contact slurm controller (connect failure)\n", 0.0)
            return super()._once(argv)

    runner = Down(lambda n: (0, "300\n", ""))
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="slurm", runner=runner, lost_after=0)
    job = hk.submit("true", name="a", job_subdir="a")
    for _ in range(3):
        assert hk.poll() == 0
    assert hk.store.job(job)["status"] == "QUEUED"  # never FAILED, never lost, because nobody answered
    hk.close()
