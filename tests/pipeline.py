"""A small pipeline whose every outcome is known, for the tests that break things on purpose
(tests/test_kill_suite.py, tests/test_reliability_live.py).

`DRIVER` is a driver script: `python driver.py <scheduler> [prefix ...]` submits one copy of
the pipeline per prefix (default: one, unprefixed) and monitors it to the end. Every job
appends a line to ran/<name> each time it runs, so a line count is how often it really ran.
`check_run` asserts the invariants afterwards.
"""
from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from housekeeper.schedulers.slurm import expand_array_indices

from .conftest import write

DRIVER = textwrap.dedent("""\
    import sys
    from housekeeper import housekeeper
    from housekeeper.runner import Runner

    scheduler, prefixes = sys.argv[1], sys.argv[2:] or [""]
    extra = {"runner": Runner(backoff=(0.2, 0.5, 1.0, 2.0), retries=8)} if scheduler == "slurm" else {}
    hk = housekeeper(jobs_dir="run", scheduler=scheduler, file_grace=5, lost_after=60, **extra)
    res = dict(memory=100, walltime="00:05:00")

    def job(name, command, **kwargs):
        return hk.submit(f"echo x >> ran/{name}; {command}", name=name, job_subdir=name, **res, **kwargs)

    later = []
    for p in prefixes:
        ok = [job(f"{p}ok{i}", "true") for i in range(4)]
        once = [job(f"{p}once{i}", f"[ $(wc -l < ran/{p}once{i}) -ge 2 ]", max_retries=1) for i in range(2)]
        bad = job(f"{p}bad", "exit 3", max_retries=1)
        later.append((p, ok, once, bad))
    hk.flush()
    for p, ok, once, bad in later:
        job(f"{p}dep_ok", "true", after_ok=ok[:2])
        job(f"{p}dep_once", "true", after_ok=[once[0]])
        job(f"{p}dep_fail", "true", after_fail=[bad])
        job(f"{p}never", "true", after_ok=[bad])
        job(f"{p}dep_any", "true", after_any=[once[1], ok[3]])
    hk.monitor(poll_interval=0.5, timeout=400, progress=False)
    hk.close()
""")

# name: (status, reason, attempt, times it ran)
EXPECTED: dict[str, tuple[str, str | None, int, int]] = {
    **{f"ok{i}": ("COMPLETED", None, 1, 1) for i in range(4)},
    **{f"once{i}": ("COMPLETED", None, 2, 2) for i in range(2)},
    "bad": ("FAILED", "exit_code", 2, 2),
    "dep_ok": ("COMPLETED", None, 1, 1),
    "dep_once": ("COMPLETED", None, 1, 1),
    "dep_fail": ("COMPLETED", None, 1, 1),
    "never": ("CANCELLED", "dependency_never_satisfied", 1, 0),
    "dep_any": ("COMPLETED", None, 1, 1),
}


def expected(prefixes: Sequence[str] = ("",)) -> dict[str, tuple[str, str | None, int, int]]:
    return {f"{p}{name}": want for p in prefixes for name, want in EXPECTED.items()}


def start_driver(folder: Path, scheduler: str, prefixes: Sequence[str] = (), env_extra: dict[str, str] | None = None,
                 log_name: str = "driver.log") -> subprocess.Popen[bytes]:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ran").mkdir(exist_ok=True)
    write(folder / "driver.py", DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOUSEKEEPER_")}
    env.update(env_extra or {})
    with open(folder / log_name, "ab") as log:
        return subprocess.Popen([sys.executable, "driver.py", scheduler, *prefixes], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip


def run_driver(folder: Path, scheduler: str, env_extra: dict[str, str] | None = None, timeout: float = 420) -> int:
    proc = start_driver(folder, scheduler, env_extra=env_extra)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def check_run(folder: Path, scheduler: str, prefixes: Sequence[str] = ("",)) -> None:
    """The invariants after a run: right end states, each attempt ran once, sound database,
    no claim left open, and (SLURM) each submission reached the scheduler exactly once."""
    want = expected(prefixes)
    with sqlite3.connect(folder / "run" / "housekeeper.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT name, status, reason, attempt FROM jobs").fetchall()
        claimed = conn.execute("SELECT count(*) FROM submissions WHERE state='claimed'").fetchone()[0]
    got = {name: (status, reason, attempt) for name, status, reason, attempt in rows}
    assert got == {name: w[:3] for name, w in want.items()}, folder
    ran = {name: len((folder / "ran" / name).read_text().splitlines()) if (folder / "ran" / name).exists() else 0
           for name in want}  # fmt: skip
    assert ran == {name: w[3] for name, w in want.items()}, f"{folder}: times each job ran"
    assert claimed == 0
    if scheduler == "slurm":
        assert_submitted_once(folder, (folder / "driver.py").stat().st_mtime - 60)


def assert_submitted_once(folder: Path, since: float) -> None:
    """Nothing submitted twice (SLURM): every SLURM job started from `folder` is one the store
    recorded, each submission tag went to exactly one SLURM job, every attempt with a scheduler
    id is one SLURM job or task, and no claim is left open."""
    with sqlite3.connect(folder / "run" / "housekeeper.db") as conn:
        recorded = dict(conn.execute("SELECT base_id, token FROM submissions WHERE state='submitted'").fetchall())
        attempts = conn.execute("SELECT count(*) FROM attempts WHERE scheduler_id IS NOT NULL").fetchone()[0]
        claimed = conn.execute("SELECT count(*) FROM submissions WHERE state='claimed'").fetchone()[0]
    assert claimed == 0
    in_slurm: dict[str, set[str]] = {}

    def accounted() -> bool:
        in_slurm.clear()
        in_slurm.update(sacct_jobs(folder, since, recorded))
        return set(in_slurm) >= set(recorded)

    assert wait_for(accounted, 30), f"{folder}: {len(set(recorded) - set(in_slurm))} submissions missing from accounting"
    assert set(in_slurm) == set(recorded), f"{folder}: SLURM jobs the store does not know: {sorted(set(in_slurm) - set(recorded))}"
    assert all(in_slurm[base] == {token} for base, token in recorded.items())
    # accounting lags behind: wait for every attempt to show, then insist on no more
    wait_for(lambda: sacct_task_count(folder, since, recorded) >= attempts, 30)
    assert sacct_task_count(folder, since, recorded) == attempts


def _sacct_rows(workdir: Path, since: float, known: Collection[str]) -> list[tuple[str, str]]:
    """(JobID, Comment) of every SLURM job (array tasks included) that ran or waited in
    `workdir`, from accounting, asked with the real sacct. A time window finds the jobs
    nobody told us about; SLURM 22.05 leaves out of it jobs cancelled before they were
    eligible (a dependency that can never be met), so the `known` ids are asked by id too."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 5))
    queries = [[f"--starttime={start}", "--allusers"]]
    if known:
        queries.append([f"--jobs={','.join(sorted(known))}"])
    rows: dict[str, str] = {}
    for query in queries:
        out = subprocess.run(
            ["sacct", "-X", "--parsable2", "--noheader", *query, "--format=JobID,WorkDir,Comment"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            job, _, rest = line.partition("|")
            folder, _, comment = rest.partition("|")
            if folder.rstrip("/") == str(workdir):
                rows[job] = comment
    return list(rows.items())


def sacct_jobs(workdir: Path, since: float, known: Collection[str] = ()) -> dict[str, set[str]]:
    """{base id: comments} of every SLURM job that ran or waited in `workdir`."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for job, comment in _sacct_rows(workdir, since, known):
        found[job.partition("_")[0]].add(comment)
    return found


def sacct_task_count(workdir: Path, since: float, known: Collection[str] = ()) -> int:
    """How many jobs and array tasks SLURM holds for `workdir` (pending ranges expanded)."""
    count = 0
    for job, _ in _sacct_rows(workdir, since, known):
        base, _, task = job.partition("_")
        count += len(expand_array_indices(task)[0]) if task.startswith("[") else 1
    return count


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(1)
    return condition()


