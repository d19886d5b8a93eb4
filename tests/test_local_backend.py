"""The whole API end to end on the local backend: real processes, real files, real verdicts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.errors import InvalidArgumentError, JobStateError, UnknownJobError

from .conftest import write
from .seed import submit_quick_start, write_quick_start_programs

FAST = 0.3  # poll interval for tests


def test_quick_start_as_written(workdir: Path) -> None:
    write_quick_start_programs(workdir)
    write(workdir / "data.fits", "input")
    hk = housekeeper(jobs_dir="./my_pipeline_run", scheduler="local")
    job1, job2 = submit_quick_start(hk)
    results = hk.monitor([job1, job2], poll_interval=FAST)
    assert results == {job1: JobStatus.COMPLETED, job2: JobStatus.COMPLETED}
    rows = {job["name"]: job["status"] for job in hk.list_jobs()}
    assert rows == {"process": "COMPLETED", "analyze": "COMPLETED"}
    run = workdir / "my_pipeline_run"
    assert (run / "housekeeper.db").is_file()
    for folder, name in (("preprocessing", "process"), ("analysis", "analyze")):
        assert (run / folder / f"{name}.sh").is_file()
        assert (run / folder / "stdout.log").is_file()
        assert (run / folder / "stderr.log").is_file()
    assert "analysed x" in (run / "analysis" / "stdout.log").read_text()
    assert isinstance(job1, int) and job1 != job2
    hk.close()


def test_each_success_rule_fails_on_its_own(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    exit3 = hk.submit("echo starting; exit 3", name="exit3", job_subdir="exit3")
    logerr = hk.submit("echo step one; echo 'ValueError: bad input' >&2; echo done", name="logerr", job_subdir="logerr")
    missing = hk.submit("touch other.txt", name="missing", job_subdir="missing", expected_files=["made.txt"])
    good = hk.submit("touch made2.txt", name="good", job_subdir="good", expected_files=["made2.txt"])
    killed = hk.submit("kill -KILL $$", name="killed", job_subdir="killed")
    results = hk.monitor(poll_interval=FAST)
    assert results[good] is JobStatus.COMPLETED
    for job_id, reason in ((exit3, "exit_code"), (logerr, "log_error"), (missing, "missing_files"), (killed, "signal")):
        assert results[job_id] is JobStatus.FAILED, job_id
        assert hk.failure_info(job_id)["reason"] == reason
    assert hk.failure_info(exit3)["exit_code"] == 3
    assert hk.failure_info(killed)["signal"] == 9
    info = hk.failure_info(logerr)
    assert info["log_lines"][0]["text"] == "ValueError: bad input"
    assert info["log_lines"][0]["line"] == 1
    assert info["log_lines"][0]["file"].endswith("logerr/stderr.log")
    assert info["log_lines"][0]["pattern"] == "error"
    assert hk.failure_info(missing)["missing_files"] == ["made.txt"]
    assert hk.failure_info(good)["reason"] is None


def test_whitelist_excuses_error_lines(workdir: Path) -> None:
    hk = housekeeper(
        jobs_dir=workdir / "run",
        scheduler="local",
        error_whitelist=["WARN", "Leap second table TAI_UTC seems out-of-date"],
        whitelist_threshold=3,
    )
    excused = hk.submit(
        "echo 'WARNING: error budget low' >&2; echo 'Error: leap second table is out-of-date' >&2",
        name="excused",
        job_subdir="excused",
    )
    not_excused = hk.submit("echo 'Error: table corrupt' >&2", name="notexcused", job_subdir="notexcused")
    results = hk.monitor(poll_interval=FAST)
    assert results[excused] is JobStatus.COMPLETED
    assert results[not_excused] is JobStatus.FAILED
    info = hk.failure_info(not_excused)
    assert info["reason"] == "log_error"
    assert [line["text"] for line in info["log_lines"]] == ["Error: table corrupt"]
    assert hk.failure_info(excused)["log_excused"] == 2
    hk.close()


def test_custom_error_patterns(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", error_patterns=["BOOM"])
    job = hk.submit("echo 'an error that is not ours'; echo 'boom here'", name="p", job_subdir="p")
    assert hk.monitor([job], poll_interval=FAST)[job] is JobStatus.FAILED
    assert hk.failure_info(job)["log_lines"][0]["text"] == "boom here"
    hk.close()


@pytest.mark.parametrize(
    ("parent_cmd", "kind", "child_runs"),
    [
        ("true", "after_ok", True),
        ("false", "after_ok", False),
        ("false", "after_fail", True),
        ("true", "after_fail", False),
        ("true", "after_any", True),
        ("false", "after_any", True),
    ],
)
def test_dependencies(local_hk: housekeeper, parent_cmd: str, kind: str, child_runs: bool) -> None:
    hk = local_hk
    parent = hk.submit(parent_cmd, name="parent", job_subdir="parent")
    child = hk.submit("echo child ran", name="child", job_subdir="child", **{kind: [parent]})
    grandchild = hk.submit("echo grandchild", name="grandchild", job_subdir="grandchild", after_ok=[child])
    results = hk.monitor(poll_interval=FAST)
    if child_runs:
        assert results[child] is JobStatus.COMPLETED
        assert results[grandchild] is JobStatus.COMPLETED
        assert hk.job_info(child)["started_at"] >= hk.job_info(parent)["ended_at"] - 1
    else:
        assert results[child] is JobStatus.CANCELLED
        assert hk.failure_info(child)["reason"] == "dependency_never_satisfied"
        assert results[grandchild] is JobStatus.CANCELLED
        assert hk.failure_info(grandchild)["reason"] == "dependency_never_satisfied"
        assert not (Path(hk.jobs_dir) / "child" / "stdout.log").exists()


def test_all_dependency_lists_must_hold(local_hk: housekeeper) -> None:
    hk = local_hk
    good = hk.submit("true", name="good", job_subdir="good")
    bad = hk.submit("false", name="bad", job_subdir="bad")
    both = hk.submit("echo both", name="both", job_subdir="both", after_ok=[good], after_fail=[bad])
    wrong = hk.submit("echo wrong", name="wrong", job_subdir="wrong", after_ok=[good, bad])
    results = hk.monitor(poll_interval=FAST)
    assert results[both] is JobStatus.COMPLETED
    assert results[wrong] is JobStatus.CANCELLED


def test_retries_keep_every_attempts_logs(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    script = write(
        workdir / "flaky.sh",
        textwrap.dedent(
            """\
            n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
            echo "attempt $n"
            if [ $n -lt 3 ]; then echo "fatal: try $n failed" >&2; exit 1; fi
            """
        ),
    )
    job = hk.submit(f"bash {script}", name="flaky", job_subdir="flaky", max_retries=2)
    child = hk.submit("echo after flaky", name="after", job_subdir="after", after_ok=[job])
    results = hk.monitor(poll_interval=FAST)
    assert results[job] is JobStatus.COMPLETED
    assert results[child] is JobStatus.COMPLETED
    info = hk.job_info(job)
    assert info["attempt"] == 3
    assert [a["status"] for a in info["attempts"]] == ["FAILED", "FAILED", "COMPLETED"]
    assert [a["reason"] for a in info["attempts"]] == ["exit_code", "exit_code", None]
    folder = Path(info["job_dir"])
    assert (folder / "stdout.1.log").read_text() == "attempt 1\n"
    assert (folder / "stdout.2.log").read_text() == "attempt 2\n"
    assert (folder / "stdout.log").read_text() == "attempt 3\n"
    assert "try 1 failed" in (folder / "stderr.1.log").read_text()
    assert (folder / "status.1.json").exists() and (folder / "status.json").exists()
    # the dependant waited for the final outcome, not the first failure
    assert hk.job_info(child)["attempt"] == 1
    history = hk.failure_info(job)["attempts"]
    assert [a["attempt"] for a in history] == [1, 2, 3]


def test_retry_by_hand_revives_dependants(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    job = hk.submit("test -e ready", name="needs", job_subdir="needs")
    child = hk.submit("echo child", name="child", job_subdir="child", after_ok=[job])
    assert hk.monitor(poll_interval=FAST) == {job: JobStatus.FAILED, child: JobStatus.CANCELLED}
    done = hk.submit("true", name="t", job_subdir="t")
    hk.monitor([done], poll_interval=FAST)
    with pytest.raises(JobStateError):
        hk.retry(done)  # only FAILED or CANCELLED jobs can be retried
    (workdir / "ready").write_text("")
    assert hk.retry(job) == 2
    results = hk.monitor(poll_interval=FAST)
    assert results[job] is JobStatus.COMPLETED
    assert results[child] is JobStatus.COMPLETED


def test_walltime_kill_is_a_timeout(local_hk: housekeeper) -> None:
    hk = local_hk
    job = hk.submit("sleep 30", name="slow", job_subdir="slow", walltime="00:00:02")
    start = time.monotonic()
    assert hk.monitor([job], poll_interval=FAST)[job] is JobStatus.FAILED
    assert time.monotonic() - start < 20
    assert hk.failure_info(job)["reason"] == "timeout"


def test_cancel_running_and_queued(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", local_slots=1)
    running = hk.submit("sleep 60", name="running", job_subdir="running")
    queued = hk.submit("sleep 60", name="queued", job_subdir="queued")
    deadline = time.time() + 15
    while hk.track(running) is not JobStatus.RUNNING and time.time() < deadline:
        time.sleep(0.2)
    assert hk.track(running) is JobStatus.RUNNING
    assert hk.track(queued) is JobStatus.QUEUED  # one slot: it waits
    assert sorted(hk.cancel([running, queued])) == sorted([running, queued])
    results = hk.monitor(poll_interval=FAST, timeout=20)
    assert results == {running: JobStatus.CANCELLED, queued: JobStatus.CANCELLED}
    assert hk.failure_info(running)["reason"] == "cancelled_by_user"
    assert hk.cancel(running) == []  # already finished: nothing to do
    hk.close()


def test_env_and_workdir(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    other = workdir / "elsewhere"
    other.mkdir()
    job = hk.submit(
        'echo "$GREETING|$(pwd)"',
        name="env",
        job_subdir="env",
        env={"GREETING": "it's $HOME `x` \"q\""},
        workdir=other,
    )
    assert hk.monitor([job], poll_interval=FAST)[job] is JobStatus.COMPLETED
    out = (Path(hk.jobs_dir) / "env" / "stdout.log").read_text().strip()
    assert out == f"it's $HOME `x` \"q\"|{other}"


def test_resubmitting_the_same_script_submits_nothing_new(workdir: Path) -> None:
    driver = write(
        workdir / "driver.py",
        textwrap.dedent(
            """\
            from housekeeper import housekeeper
            hk = housekeeper(jobs_dir="run", scheduler="local")
            ids = [hk.submit(f"echo {i}", name=f"sweep{i}", job_subdir=f"spw_{i:03d}") for i in range(5)]
            ids.append(hk.submit("echo no subdir", name="plain"))
            hk.monitor(ids, poll_interval=0.3)
            print(ids)
            """
        ),
    )
    first = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout
    done = os.listdir(workdir / "run" / ".housekeeper" / "local" / "done")
    assert len(done) == 6  # six jobs ran once each
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    assert len(hk.list_jobs()) == 6
    with pytest.raises(InvalidArgumentError, match="job_subdir"):
        hk.submit("echo other", name="sweep0", job_subdir="spw_000")
    hk.close()


def test_export_state_json_and_parquet(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    ok = hk.submit("echo hi", name="ok", job_subdir="ok")
    bad = hk.submit("exit 4", name="bad", job_subdir="bad", max_retries=1)
    hk.monitor(poll_interval=FAST)
    json_path = hk.export_state(workdir / "state.json")
    data = json.loads(Path(json_path).read_text())
    jobs = {j["job_id"]: j for j in data["jobs"]}
    assert jobs[ok]["status"] == "COMPLETED"
    assert jobs[bad]["status"] == "FAILED" and jobs[bad]["exit_code"] == 4
    assert [a["attempt"] for a in jobs[bad]["attempts"]] == [1, 2]
    table = pq.read_table(hk.export_state(workdir / "state.parquet"))
    rows = {r["job_id"]: r for r in table.to_pylist()}
    assert rows[bad]["reason"] == "exit_code"
    assert [a["status"] for a in rows[bad]["attempts"]] == ["FAILED", "FAILED"]
    assert str(table.schema.field("exit_code").type) == "int32"
    assert str(table.schema.field("started_at").type).startswith("timestamp")
    with pytest.raises(InvalidArgumentError, match="path"):
        hk.export_state(workdir / "state.csv")


def test_list_jobs_filters_and_columns(local_hk: housekeeper) -> None:
    hk = local_hk
    a = hk.submit("true", name="a", job_subdir="a", memory="2GB", walltime=90)
    b = hk.submit("false", name="b", job_subdir="b")
    hk.monitor(poll_interval=FAST)
    frame = hk.list_jobs()
    for column in ("job_id", "name", "status", "reason", "attempt", "scheduler_id", "job_subdir", "exit_code",
                   "submitted_at", "started_at", "ended_at", "cpus", "memory_mb", "walltime_s"):  # fmt: skip
        assert column in frame.columns
    assert hk.list_jobs(status="FAILED")["job_id"].to_list() == [b]
    assert hk.list_jobs(status=JobStatus.COMPLETED)["job_id"].to_list() == [a]
    assert frame.filter(frame["job_id"] == a)["memory_mb"].item() == 2048
    assert frame.filter(frame["job_id"] == a)["walltime_s"].item() == 5400
    with pytest.raises(InvalidArgumentError, match="status"):
        hk.list_jobs(status="DONE")


def test_cleanup_refuses_running_and_stays_inside(local_hk: housekeeper, workdir: Path) -> None:
    hk = local_hk
    done = hk.submit("true", name="done", job_subdir="done")
    slow = hk.submit("sleep 30", name="slow", job_subdir="slow")
    hk.monitor([done], poll_interval=FAST)
    with pytest.raises(JobStateError):
        hk.cleanup(slow)
    outside = workdir / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    folder = Path(hk.jobs_dir) / "done"
    (folder / "link").symlink_to(outside)
    assert hk.cleanup(done) == [done]
    assert not folder.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert hk.job_info(done)["status"] is JobStatus.COMPLETED  # the record stays
    hk.cancel(slow)
    with pytest.raises(UnknownJobError):
        hk.cleanup(999)


def test_two_processes_share_one_jobs_dir(workdir: Path) -> None:
    driver = write(
        workdir / "driver.py",
        textwrap.dedent(
            """\
            import sys
            from housekeeper import housekeeper
            tag = sys.argv[1]
            hk = housekeeper(jobs_dir="run", scheduler="local")
            ids = [hk.submit(f"echo {tag} {i}", name=f"{tag}{i}", job_subdir=f"{tag}_{i}") for i in range(20)]
            shared = [hk.submit(f"echo shared {i}", name=f"shared{i}", job_subdir=f"shared_{i}") for i in range(10)]
            print(hk.monitor(ids + shared, poll_interval=0.3) and "ok")
            """
        ),
    )
    procs = [subprocess.Popen([sys.executable, str(driver), tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]  # fmt: skip
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
        assert "locked" not in err
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    frame = hk.list_jobs()
    assert len(frame) == 50
    failed = {j: hk.failure_info(j) for j in hk.list_jobs(status="FAILED")["job_id"].to_list()}
    assert not failed, {j: (i["reason"], i["exit_code"], i["signal"], i["scheduler_state"], i["log_lines"],
                            hk.job_info(j)["events"]) for j, i in failed.items()}  # fmt: skip
    assert set(frame["status"].to_list()) == {"COMPLETED"}
    done = os.listdir(workdir / "run" / ".housekeeper" / "local" / "done")
    assert len(done) == 50  # every job ran exactly once, the shared ones included
    assert hk.store.integrity_ok()
    hk.close()


def test_held_jobs_reach_the_scheduler_at_exit(workdir: Path) -> None:
    driver = write(
        workdir / "driver.py",
        "from housekeeper import housekeeper\n"
        "hk = housekeeper(jobs_dir='run', scheduler='local')\n"
        "print(hk.submit('echo from exit', name='atexit', job_subdir='atexit'))\n",
    )
    subprocess.run([sys.executable, str(driver)], check=True, capture_output=True)
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    assert hk.list_jobs()["status"].to_list() in (["QUEUED"], ["RUNNING"], ["COMPLETED"])
    assert hk.monitor(poll_interval=FAST, timeout=30) == {1: JobStatus.COMPLETED}
    hk.close()


def test_with_block_flushes(workdir: Path) -> None:
    with housekeeper(jobs_dir=workdir / "run", scheduler="local") as hk:
        job = hk.submit("true", name="w", job_subdir="w")
        # recorded at once (a lone submit is not buffered), but held back until the block ends
        from housekeeper.store import Store

        assert Store(str(workdir / "run" / "housekeeper.db")).job(job)["status"] == "PENDING"
    hk2 = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    assert hk2.store.job(job)["status"] in ("QUEUED", "RUNNING", "COMPLETED")
    hk2.monitor(poll_interval=FAST)
    hk2.close()


def test_max_queued_caps_jobs_in_the_scheduler(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", max_queued=2)
    for i in range(6):
        hk.submit(f"sleep 0.5; echo {i}", name=f"m{i}", job_subdir=f"m{i}")
    hk.flush()
    peak = 0
    deadline = time.time() + 120
    while time.time() < deadline:
        hk.poll()
        counts = hk.store.status_counts()
        peak = max(peak, counts.get("QUEUED", 0) + counts.get("RUNNING", 0))
        if counts.get("COMPLETED", 0) == 6:
            break
        time.sleep(0.2)
    assert hk.store.status_counts() == {"COMPLETED": 6}
    assert peak == 2
    hk.close()


def test_the_same_job_submitted_by_two_drivers_at_once(workdir: Path) -> None:
    """Both drivers pass the duplicate check before either commits: the second one's id
    becomes an alias of the first one's job, and dependencies on it still hold."""
    first = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    second = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    first._last_commit = second._last_commit = time.monotonic() + 3600  # hold both in their buffers
    a = first.submit("echo shared", name="shared", job_subdir="shared")
    b = second.submit("echo shared", name="shared", job_subdir="shared")
    child = second.submit("echo child", name="child", job_subdir="child", after_ok=[b])
    assert a != b
    first._commit()
    second._commit()  # the clash: b is recorded as an alias of a
    results = second.monitor([b, child], poll_interval=FAST)
    assert results == {b: JobStatus.COMPLETED, child: JobStatus.COMPLETED}
    assert second.job_info(b)["job_id"] == a
    assert second.track(b) is JobStatus.COMPLETED
    assert len(second.list_jobs()) == 2  # one shared job, one child
    assert len(os.listdir(workdir / "run" / ".housekeeper" / "local" / "done")) == 2  # it ran once
    first.close()
    second.close()
