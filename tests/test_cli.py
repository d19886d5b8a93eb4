"""The `hk` command line, run in subprocesses against runs made by real jobs on the local backend."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import housekeeper as housekeeper_package
from housekeeper import JobStatus, housekeeper
from housekeeper.progress import Progress, format_duration, summary

FAST = 0.3
# The subprocesses import the same housekeeper as this test process, wherever it lives.
PACKAGE_PARENT = str(Path(housekeeper_package.__file__).resolve().parents[1])


def hk_cli(*args: Any, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "housekeeper.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout


def make_run(root: Path) -> tuple[Path, dict[str, int]]:
    """A finished run with every kind of outcome: success (one with an excused warning),
    exit code, log errors (two with the same cause), missing files, an automatic retry, and
    a dependant that could never run."""
    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    hk = housekeeper(run, scheduler="local", error_whitelist=["WARN"], file_grace=2)

    def submit(command: str, name: str, **kw: Any) -> int:
        return hk.submit(command, name=name, job_subdir=name, workdir=root, **kw)

    ids = {
        "ok": submit("echo all good", "ok"),
        "warned": submit("echo 'WARN: error budget low' >&2; touch out.txt", "warned", expected_files=["out.txt"]),
        "exit3": submit("echo starting; exit 3", "exit3"),
        "log_a": submit("echo 'ValueError: bad value 17 in /data/spw_017/x.fits' >&2", "log_a"),
        "log_b": submit("echo step; echo 'ValueError: bad value 23 in /data/spw_023/x.fits' >&2", "log_b"),
        "missing": submit("touch other.txt", "missing", expected_files=["never.txt"]),
        "retried": submit("exit 1", "retried", max_retries=1),
    }
    ids["dep"] = submit("echo never", "dep", after_ok=[ids["exit3"]])
    results = hk.monitor(poll_interval=FAST, timeout=120)
    hk.close()
    assert all(status.is_terminal for status in results.values()), results
    return run, ids


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    return make_run(tmp_path_factory.mktemp("cli") / "work")


def db_snapshot(run_dir: Path) -> tuple[int, float, int]:
    with sqlite3.connect(run_dir / "housekeeper.db") as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        updated = conn.execute("SELECT max(updated_at) FROM jobs").fetchone()[0]
        attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
    return events, updated, attempts


# -------------------------------------------------------------------------- read-only
def test_the_run_came_out_as_planned(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, ids = run
    proc = hk_cli("ls", run_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["ok"]["status"] == rows["warned"]["status"] == "COMPLETED"
    assert (rows["exit3"]["reason"], rows["exit3"]["exit_code"]) == ("exit_code", 3)
    assert rows["log_a"]["reason"] == rows["log_b"]["reason"] == "log_error"
    assert rows["missing"]["reason"] == "missing_files"
    assert (rows["retried"]["status"], rows["retried"]["attempt"]) == ("FAILED", 2)
    assert (rows["dep"]["status"], rows["dep"]["reason"]) == ("CANCELLED", "dependency_never_satisfied")


def test_help_version_and_no_command() -> None:
    proc = hk_cli("--help")
    assert proc.returncode == 0
    for command in ("status", "ls", "show", "failures", "retry", "cancel", "cleanup", "monitor", "export", "report"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout
    assert hk_cli("--version").stdout.startswith("housekeeper ")
    proc = hk_cli()
    assert proc.returncode == 2
    assert_clean(proc)
    proc = hk_cli("ls", "--help")
    assert proc.returncode == 0 and "--status" in proc.stdout


def test_status_text_and_json(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, ids = run
    proc = hk_cli("status", run_dir)
    assert proc.returncode == 1, proc.stderr  # some jobs failed
    assert_clean(proc)
    text = proc.stdout
    assert "8/8 finished" in text
    assert "scheduler: local" in text
    assert "failures by reason" in text
    for reason in ("exit_code", "log_error", "missing_files", "dependency_never_satisfied"):
        assert reason in text
    assert "slowest jobs" in text
    proc = hk_cli("status", run_dir, "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["total"] == 8 and data["finished"] == 8 and data["all_finished"] is True
    assert data["counts"] == {"COMPLETED": 2, "FAILED": 5, "CANCELLED": 1, "RUNNING": 0, "QUEUED": 0, "PENDING": 0}
    assert data["failures_by_reason"] == {"exit_code": 2, "log_error": 2, "missing_files": 1}
    assert data["cancelled_by_reason"] == {"dependency_never_satisfied": 1}
    assert data["scheduler"] == "local"
    assert len(data["slowest"]) == 5 and data["oldest_waiting"] == []


def test_ls_table_and_filters(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, ids = run
    proc = hk_cli("ls", run_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "REASON", "TRY", "SCHED_ID", "SUBDIR", "EXIT", "SUBMITTED",
                                "WAIT", "RUN"]  # fmt: skip
    assert len(lines) == 1 + 8
    exit3 = next(line for line in lines if " exit3 " in line)
    assert "FAILED" in exit3 and "exit_code" in exit3 and " 3 " in exit3

    failed = json.loads(hk_cli("ls", run_dir, "--status", "failed", "--json").stdout)
    assert sorted(r["name"] for r in failed) == ["exit3", "log_a", "log_b", "missing", "retried"]
    both = json.loads(hk_cli("ls", run_dir, "--status", "completed,cancelled", "--json").stdout)
    assert sorted(r["name"] for r in both) == ["dep", "ok", "warned"]
    named = json.loads(hk_cli("ls", run_dir, "--name", "log_*", "--json").stdout)
    assert [r["job_id"] for r in named] == [ids["log_a"], ids["log_b"]]
    by_reason = json.loads(hk_cli("ls", run_dir, "--reason", "missing_files", "--json").stdout)
    assert [r["name"] for r in by_reason] == ["missing"]
    proc = hk_cli("ls", run_dir, "--limit", "2")
    assert len(proc.stdout.splitlines()) == 1 + 2 + 1
    assert "2 of 8 jobs shown" in proc.stdout
    record = failed[0]
    for column in ("job_id", "name", "status", "reason", "attempt", "scheduler_id", "job_subdir", "exit_code",
                   "submitted_at", "started_at", "ended_at"):  # fmt: skip
        assert column in record


def test_show_gives_the_offending_lines(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, ids = run
    proc = hk_cli("show", run_dir, ids["log_b"])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"job {ids['log_b']}  log_b" in text and "FAILED (log_error)" in text
    stderr_log = run_dir / "log_b" / "stderr.log"
    assert f"{stderr_log}:1: ValueError: bad value 23 in /data/spw_023/x.fits" in text
    assert "command:" in text and "attempts" in text
    # by job_subdir, and as JSON
    data = json.loads(hk_cli("show", run_dir, "missing", "--json").stdout)
    assert data["job"]["job_id"] == ids["missing"]
    assert data["failure"]["reason"] == "missing_files"
    assert data["failure"]["missing_files"] == ["never.txt"]
    assert "missing files" in hk_cli("show", run_dir, "missing").stdout
    retried = json.loads(hk_cli("show", run_dir, ids["retried"], "--json").stdout)
    assert [a["attempt"] for a in retried["failure"]["attempts"]] == [1, 2]
    assert retried["failure"]["attempts"][0]["stderr"].endswith("stderr.1.log")
    exit3 = hk_cli("show", run_dir, ids["exit3"]).stdout
    assert "exit code:  3" in exit3
    # a completed job shows too, with the excused line counted
    warned = json.loads(hk_cli("show", run_dir, "warned", "--json").stdout)
    assert warned["job"]["status"] == "COMPLETED"
    assert warned["stderr_tail"] == ["WARN: error budget low"]
    assert warned["failure"]["log_excused"] == 1
    text = hk_cli("show", run_dir, "warned").stdout
    assert f"{run_dir / 'warned' / 'stderr.log'}:1: WARN: error budget low  (by 'WARN')" in text


def test_failures_grouped_by_cause(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, ids = run
    proc = hk_cli("failures", run_dir)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "5 failed jobs" in text
    assert "ValueError: bad value <N> in <path>" in text  # the two log errors read as one line
    assert "exit code 3" in text and "exit code 1" in text
    data = json.loads(hk_cli("failures", run_dir, "--json").stdout)
    assert data["total"] == 5
    assert data["by_reason"] == {"exit_code": 2, "log_error": 2, "missing_files": 1}
    group = next(g for g in data["groups"] if g["reason"] == "log_error")
    assert group["count"] == 2
    assert sorted(group["job_ids"]) == sorted([ids["log_a"], ids["log_b"]])
    assert group["line"] == "ValueError: bad value <N> in <path>"
    assert data["groups"][0]["count"] == 2  # the biggest group first
    only = json.loads(hk_cli("failures", run_dir, "--reason", "missing_files", "--json").stdout)
    assert only["total"] == 1 and only["groups"][0]["job_ids"] == [ids["missing"]]


def test_export_json_and_parquet(run: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    run_dir, ids = run
    target = tmp_path / "state.json"
    proc = hk_cli("export", run_dir, target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    document = json.loads(target.read_text())
    assert len(document["jobs"]) == 8
    assert document["scheduler"] == "local"
    parquet = tmp_path / "state.parquet"
    assert hk_cli("export", run_dir, parquet).returncode == 0
    frame = pl.read_parquet(parquet)
    assert frame.height == 8
    assert frame.filter(pl.col("name") == "retried")["attempts"].to_list()[0][1]["attempt"] == 2


def test_read_only_commands_leave_the_run_alone(run: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    run_dir, ids = run
    before = db_snapshot(run_dir)
    local_state = sorted(str(p.relative_to(run_dir)) for p in (run_dir / ".housekeeper").rglob("*"))
    commands: list[list[Any]] = [["status"], ["ls"], ["show", ids["exit3"]], ["failures"],
                                 ["export", tmp_path / "x.json"], ["report", "-o", tmp_path / "r.html"]]  # fmt: skip
    for command, *rest in commands:
        proc = hk_cli(command, run_dir, *rest)
        assert proc.returncode in (0, 1), proc.stderr
        assert_clean(proc)
    assert db_snapshot(run_dir) == before
    assert sorted(str(p.relative_to(run_dir)) for p in (run_dir / ".housekeeper").rglob("*")) == local_state


@pytest.mark.parametrize(
    "args, message",
    [
        (("status", "{missing}"), "no such folder"),
        (("ls", "{empty}"), "not a housekeeper run"),
        (("show", "{foreign}", "1"), "refusing to touch it"),
        (("show", "{run}", "999"), "no job matches '999'"),
        (("show", "{run}", "log_*"), "matches 2 jobs"),
        (("ls", "{run}", "--status", "bogus"), "--status 'bogus'"),
        (("ls", "{run}", "--limit", "-1"), "--limit"),
        (("failures", "{run}", "--reason", "nope"), "--reason 'nope'"),
        (("retry", "{run}"), "give job ids"),
        (("retry", "{run}", "1", "--failed"), "not both"),
        (("retry", "{run}", "--reason", "log_error", "1"), "--reason goes with --failed"),
        (("retry", "{run}", "ok"), "not FAILED or CANCELLED"),
        (("retry", "{run}", "12345"), "no job matches"),
        (("cancel", "{run}"), "give job ids"),
        (("cleanup", "{run}"), "give job ids"),
        (("export", "{run}", "{tmp}/state.csv"), "must end in .json or .parquet"),
        (("monitor", "{run}", "--interval", "0"), "--interval"),
        (("ls", "{run}", "--limit", "many"), "invalid int value"),
        (("frobnicate", "{run}"), "invalid choice"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(
    run: tuple[Path, dict[str, int]], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run_dir, _ = run
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "housekeeper.db") as conn:
        conn.execute("CREATE TABLE stuff (x)")
    values = {"missing": tmp_path / "nope", "empty": empty, "foreign": foreign, "run": run_dir, "tmp": tmp_path}
    before = db_snapshot(run_dir)
    proc = hk_cli(*[a.format(**values) for a in args])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_clean(proc)
    assert message in proc.stderr
    assert "error" in proc.stderr
    assert proc.stderr.count("\n") <= 6  # a message (argparse adds the usage), not a dump
    assert db_snapshot(run_dir) == before  # nothing was done
    assert not (empty / ".housekeeper").exists() and not (empty / "housekeeper.db").exists()
    assert not (tmp_path / "nope").exists()


# ------------------------------------------------------------------------------ actions
def test_retry_failed_resubmits_with_the_runs_rules(tmp_path: Path) -> None:
    """`hk retry --failed` really runs the jobs again, judged with the run's own whitelist."""
    work = tmp_path / "work"
    work.mkdir()
    run_dir = work / "run"
    hk = housekeeper(run_dir, scheduler="local", error_whitelist=["WARN"])
    # Fails the first time; the second time succeeds, printing a line only the whitelist excuses.
    flaky = hk.submit("echo 'WARN: error budget low' >&2; test -e flag || { touch flag; exit 1; }",
                      name="flaky", job_subdir="flaky", workdir=work)  # fmt: skip
    broken = hk.submit("exit 4", name="broken", job_subdir="broken", workdir=work)
    noisy = hk.submit("echo 'Exception: boom' >&2", name="noisy", job_subdir="noisy", workdir=work)
    hk.monitor(poll_interval=FAST, timeout=120)
    hk.close()

    dry = hk_cli("retry", run_dir, "--failed", "--reason", "exit_code", "--dry-run")
    assert dry.returncode == 0 and f"would retry 2 jobs: {flaky}-{broken}" in dry.stdout
    proc = hk_cli("retry", run_dir, "--failed", "--reason", "exit_code", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(data["retried"]) == sorted([flaky, broken])
    assert data["attempts"] == {str(flaky): 2, str(broken): 2}
    proc = hk_cli("monitor", run_dir, "--interval", FAST)
    assert proc.returncode == 1, proc.stderr  # `broken` fails again (and `noisy` was left alone)
    assert_clean(proc)
    assert "finished" in proc.stdout
    assert "failed" in proc.stderr
    rows = {r["name"]: r for r in json.loads(hk_cli("ls", run_dir, "--json").stdout)}
    assert (rows["flaky"]["status"], rows["flaky"]["attempt"]) == ("COMPLETED", 2)
    assert (rows["broken"]["status"], rows["broken"]["attempt"]) == ("FAILED", 2)
    assert (rows["noisy"]["status"], rows["noisy"]["attempt"]) == ("FAILED", 1)
    assert (run_dir / "flaky" / "stderr.1.log").is_file()  # the first attempt's log is kept
    # by name, one job
    proc = hk_cli("retry", run_dir, "noisy")
    assert proc.returncode == 0 and f"retried 1 job: {noisy}" in proc.stdout
    hk = housekeeper(run_dir)
    assert hk.monitor([noisy], poll_interval=FAST, timeout=60)[noisy] is JobStatus.FAILED
    assert hk.job_info(noisy)["attempt"] == 2
    hk.close()


def test_cancel_and_cleanup(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run_dir = work / "run"
    hk = housekeeper(run_dir, scheduler="local")
    done = hk.submit("echo done", name="done", job_subdir="done", workdir=work)
    slow1 = hk.submit("sleep 60", name="slow1", job_subdir="slow1", workdir=work)
    slow2 = hk.submit("sleep 60", name="slow2", job_subdir="slow2", workdir=work)
    waiting = hk.submit("echo after", name="waiting", job_subdir="waiting", workdir=work, after_ok=[slow1])
    assert hk.monitor([done], poll_interval=FAST, timeout=60)[done] is JobStatus.COMPLETED
    hk.close()

    proc = hk_cli("cleanup", run_dir, "slow1")
    assert proc.returncode == 2 and "have not finished" in proc.stderr
    assert_clean(proc)
    proc = hk_cli("cancel", run_dir, slow1)
    assert proc.returncode == 0, proc.stderr
    assert f"cancelled 1 job: {slow1}" in proc.stdout
    proc = hk_cli("cancel", run_dir, "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data["cancelled"]) <= {slow2, waiting} and slow2 in data["cancelled"]
    status = json.loads(hk_cli("status", run_dir, "--json", "--refresh").stdout)
    assert status["counts"]["COMPLETED"] == 1
    assert status["counts"]["CANCELLED"] == 3
    assert status["counts"]["RUNNING"] == status["counts"]["QUEUED"] == status["counts"]["PENDING"] == 0
    proc = hk_cli("cancel", run_dir, "done")
    assert proc.returncode == 0 and "nothing cancelled" in proc.stdout and "already finished" in proc.stdout

    assert (run_dir / "done").is_dir()
    proc = hk_cli("cleanup", run_dir, "--completed")
    assert proc.returncode == 0, proc.stderr
    assert f"cleaned up 1 job: {done}" in proc.stdout
    assert not (run_dir / "done").exists()
    assert (run_dir / "slow1").is_dir()
    proc = hk_cli("cleanup", run_dir, f"{slow1}-{slow2}")
    assert proc.returncode == 0 and not (run_dir / "slow1").exists() and not (run_dir / "slow2").exists()
    # the records stay
    assert json.loads(hk_cli("show", run_dir, done, "--json").stdout)["job"]["status"] == "COMPLETED"


def test_monitor_exit_codes_and_plain_output(tmp_path: Path, run: tuple[Path, dict[str, int]]) -> None:
    run_dir, _ = run
    proc = hk_cli("monitor", run_dir, "--once")
    assert proc.returncode == 1
    assert "8/8 finished" in proc.stdout and "5 failed" in proc.stdout
    assert "\x1b[" not in proc.stdout  # not a terminal: plain lines
    work = tmp_path / "work"
    work.mkdir()
    good = work / "run"
    hk = housekeeper(good, scheduler="local")
    for i in range(3):
        hk.submit(f"sleep 0.{i + 3}; echo {i}", name=f"good{i}", job_subdir=f"good{i}", workdir=work)
    hk.flush()
    hk.close()
    proc = hk_cli("monitor", good, "--interval", FAST)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and lines[-1].endswith("3/3 finished: 3 completed")
    assert hk_cli("status", good).returncode == 0


# ----------------------------------------------------------------------------- Progress
class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = FakeTerminal()
    progress = Progress(10, stream=stream)
    assert progress.enabled
    progress.update({"RUNNING": 4, "QUEUED": 6})
    progress.update({"COMPLETED": 3, "FAILED": 1, "RUNNING": 4, "QUEUED": 2}, lines=["failed: 1 exit_code"])
    progress.update({"COMPLETED": 6, "FAILED": 1, "RUNNING": 3}, lines=["failed: 1 exit_code"])
    progress.close()
    progress.close()
    text = stream.getvalue()
    assert "\r\x1b[J" in text  # redrawn in place
    assert "7/10" in text and "failed: 1 exit_code" in text
    assert "\x1b[1F" in text  # back up over the extra line before drawing again
    assert "/min" in text or "/s" in text  # a rate once two polls saw jobs finish
    assert "left" in text
    assert text.endswith("\n")
    assert progress.rate() is not None and progress.time_left() is not None


def test_progress_is_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(5, stream=stream)
    assert not progress.enabled
    progress.update({"COMPLETED": 2, "RUNNING": 3})
    progress.close()
    assert stream.getvalue() == ""
    forced = io.StringIO()
    progress = Progress(5, enabled=True, stream=forced)
    progress.update({"COMPLETED": 5})
    progress.close()
    assert "5/5" in forced.getvalue() and "\x1b[" not in forced.getvalue()
    off = FakeTerminal()
    progress = Progress(5, enabled=False, stream=off)
    progress.update({"COMPLETED": 5})
    progress.close()
    assert off.getvalue() == ""


def test_progress_summary_and_durations() -> None:
    assert summary({"COMPLETED": 5, "FAILED": 2, "RUNNING": 3, "QUEUED": 2}) == (
        "7/12 finished: 5 completed, 2 failed, 3 running, 2 queued"
    )
    assert summary({}) == "0/0 finished: no jobs"
    assert summary({JobStatus.RUNNING: 1}, total=4) == "0/4 finished: 1 running"  # type: ignore[dict-item]
    assert [format_duration(s) for s in (None, 4.24, 42, 185, 3725, 3 * 86400 + 7200)] == [
        "-", "4.2s", "42s", "3m05s", "1h02m", "3d02h"
    ]  # fmt: skip
