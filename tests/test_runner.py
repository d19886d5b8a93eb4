"""The runner: real commands that fail the way schedulers do."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from housekeeper.errors import SchedulerError
from housekeeper.runner import Runner, program_name
from housekeeper.schedulers.base import ErrorKind
from housekeeper.schedulers.slurm import SlurmDialect


def flaky_command(tmp_path: Path, failures: int, message: str, code: int = 1) -> Path:
    """A script that fails `failures` times with `message` on stderr, then prints 'ok'."""
    script = tmp_path / "flaky"
    script.write_text(
        "#!/bin/bash\n"
        f'n=$(cat {tmp_path}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {tmp_path}/count\n'
        f'if [ $n -le {failures} ]; then echo "{message}" >&2; exit {code}; fi\n'
        "echo ok\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_transient_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    waits: list[float] = []
    runner = Runner(backoff=(1, 2, 4), retries=4, sleep=waits.append)
    script = flaky_command(tmp_path, 3, "squeue: error: Socket timed out on send/recv operation")
    result = runner.run([str(script)], classify=SlurmDialect().classify_error)
    assert result.stdout == "ok\n"
    assert waits == [1, 2, 4]
    assert runner.calls["flaky"] == 4


def test_transient_errors_give_up_with_a_transient_error(tmp_path: Path) -> None:
    runner = Runner(backoff=(0,), retries=2, sleep=lambda _: None)
    script = flaky_command(tmp_path, 10, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(SchedulerError) as caught:
        runner.run([str(script)], classify=SlurmDialect().classify_error)
    assert caught.value.transient is True
    assert caught.value.returncode == 1
    assert "Unable to contact" in caught.value.stderr
    assert runner.calls["flaky"] == 3


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    runner = Runner(sleep=lambda _: None)
    script = flaky_command(tmp_path, 10, "sbatch: error: Batch job submission failed: Invalid partition name specified")
    with pytest.raises(SchedulerError) as caught:
        runner.run([str(script)], classify=SlurmDialect().classify_error)
    assert caught.value.transient is False
    assert caught.value.kind == ErrorKind.INVALID.value
    assert str(script) in caught.value.command
    assert runner.calls["flaky"] == 1


def test_submissions_are_never_retried_blindly(tmp_path: Path) -> None:
    runner = Runner(sleep=lambda _: None)
    script = flaky_command(tmp_path, 1, "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
    with pytest.raises(SchedulerError) as caught:
        runner.run([str(script)], classify=SlurmDialect().classify_error, retry_transient=False)
    assert caught.value.transient is True
    assert runner.calls["flaky"] == 1  # the job may exist already: the engine checks before resubmitting


def test_a_hanging_command_times_out_as_transient(tmp_path: Path) -> None:
    runner = Runner(timeout=0.5, retries=0, sleep=lambda _: None)
    with pytest.raises(SchedulerError) as caught:
        runner.run(["sleep", "10"])
    assert caught.value.transient is True and caught.value.returncode is None


def test_a_missing_command_is_a_clear_error() -> None:
    with pytest.raises(SchedulerError, match="cannot run"):
        Runner().run(["/no/such/sbatch"])


def test_program_name_sees_through_env() -> None:
    assert program_name(["env", "TZ=UTC0", "SLURM_TIME_FORMAT=standard", "squeue", "-h"]) == "squeue"
    assert program_name(["/usr/bin/sbatch", "--parsable"]) == "sbatch"
