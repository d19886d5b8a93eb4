"""Retry policies (retry_on, escalation, free retries after node failure or preemption), what
each attempt used, and efficiency(): pure parts, a scripted SLURM from recorded output, and the
local backend for real."""
from __future__ import annotations

import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from housekeeper import housekeeper
from housekeeper.api import efficiency_table
from housekeeper.engine import escalation, expand_hostlist, retry_kind
from housekeeper.errors import InvalidArgumentError
from housekeeper.models import RetryPolicy
from housekeeper.runner import CommandResult, Runner, program_name
from housekeeper.schedulers.base import Limits
from housekeeper.schedulers.slurm import SlurmDialect, parse_limits
from housekeeper.spec import check_retry_policy

from .conftest import db_rows, job_folders

FIXTURES = Path(__file__).parent / "fixtures"
SLURM = FIXTURES / "slurm"


# ------------------------------------------------------------------------ the policy itself
def test_policy_from_arguments() -> None:
    assert check_retry_policy(None, None) is None
    assert check_retry_policy(None, False) is None
    assert check_retry_policy(None, True) == RetryPolicy(timeout=2.0, oom=1.5, node_fail=True)
    assert check_retry_policy("timeout", None) == RetryPolicy(retry_on=("timeout",))
    policy = check_retry_policy(["oom", "timeout", "oom"], {"oom": 2, "max_memory": "8GB", "max_walltime": "12:00:00"})
    assert policy == RetryPolicy(retry_on=("oom", "timeout"), oom=2.0, max_memory_mb=8192, max_walltime_s=43200)
    assert check_retry_policy(None, {"timeout": True}) == RetryPolicy(timeout=2.0)


@pytest.mark.parametrize(
    ("retry_on", "escalate", "parameter"),
    [
        ("nonsense", None, "retry_on"),
        ([], None, "retry_on"),
        (["timeout", 3], None, "retry_on"),
        ("cancelled_by_user", None, "retry_on"),  # a cancel is never retried by itself
        (b"timeout", None, "retry_on"),
        (None, "yes", "escalate"),
        (None, 2, "escalate"),
        (None, {"walltime": 2}, "escalate"),
        (None, {"timeout": 1}, "escalate"),
        (None, {"timeout": 0.5}, "escalate"),
        (None, {"oom": float("inf")}, "escalate"),
        (None, {"oom": "2"}, "escalate"),
        (None, {"node_fail": "yes"}, "escalate"),
        (None, {"max_memory": "lots"}, "escalate"),
        (None, {"max_walltime": -5}, "escalate"),
    ],
)
def test_bad_policies_are_refused_and_nothing_is_written(
    workdir: Path, retry_on: Any, escalate: Any, parameter: str
) -> None:
    hk = housekeeper(workdir / "run", scheduler="local")
    with pytest.raises(InvalidArgumentError) as err:
        hk.submit("true", name="a", max_retries=2, retry_on=retry_on, escalate=escalate)
    assert err.value.parameter == parameter
    assert parameter in str(err.value)
    hk.close()
    assert db_rows(workdir / "run") == 0 and job_folders(workdir / "run") == []


def _job(**overrides: Any) -> dict[str, Any]:
    job = {"walltime_s": 3600, "memory_mb": 4096, "exclude": None, "retries_used": 0, "free_retries_used": 0,
           "max_retries": 2}  # fmt: skip
    job.update(overrides)
    return job


def test_retry_kind_counts_what_is_the_jobs_fault() -> None:
    default = None
    assert retry_kind(_job(), "exit_code", default, 3) == "retry"
    assert retry_kind(_job(retries_used=2), "exit_code", default, 3) is None
    # preemption and node failure come from their own budget first, then from max_retries
    assert retry_kind(_job(max_retries=0), "node_fail", default, 3) == "free"
    assert retry_kind(_job(max_retries=0), "preempted", default, 3) == "free"
    assert retry_kind(_job(max_retries=0, free_retries_used=3), "node_fail", default, 3) is None
    assert retry_kind(_job(max_retries=1, free_retries_used=3), "node_fail", default, 3) == "retry"
    # retry_on narrows which reasons are retried at all
    only_timeouts = RetryPolicy(retry_on=("timeout", "oom"))
    assert retry_kind(_job(), "timeout", only_timeouts, 3) == "retry"
    assert retry_kind(_job(), "exit_code", only_timeouts, 3) is None
    assert retry_kind(_job(), "node_fail", only_timeouts, 3) is None
    assert retry_kind(_job(), "submit_error", default, 3) is None


def test_escalation_grows_and_caps_the_request() -> None:
    policy = RetryPolicy(timeout=2.0, oom=1.5, node_fail=True)
    change = escalation(_job(walltime_s=3600), "timeout", "vm", policy, None)
    assert change.walltime_s == 7200 and change.memory_mb is None and "01:00:00 -> 02:00:00" in change.note
    # capped by the partition's MaxTime, and by the policy's own cap
    assert escalation(_job(walltime_s=240), "timeout", None, policy, Limits(max_walltime_s=300)).walltime_s == 300
    capped = RetryPolicy(timeout=2.0, max_walltime_s=5400)
    assert escalation(_job(walltime_s=3600), "timeout", None, capped, Limits(max_walltime_s=None)).walltime_s == 5400
    at_cap = escalation(_job(walltime_s=300), "timeout", None, policy, Limits(max_walltime_s=300))
    assert at_cap.walltime_s is None and "at its cap" in at_cap.note
    # rounded up to whole minutes (SLURM's unit)
    assert escalation(_job(walltime_s=61), "timeout", None, RetryPolicy(timeout=1.5), None).walltime_s == 120
    # memory: x1.5, capped by the largest node and the policy
    assert escalation(_job(memory_mb=1000), "oom", None, policy, None).memory_mb == 1500
    assert escalation(_job(memory_mb=60000), "oom", None, policy, Limits(max_memory_mb=64000)).memory_mb == 64000
    assert escalation(_job(memory_mb=1000), "oom", None, RetryPolicy(oom=4, max_memory_mb=2048), None).memory_mb == 2048
    # no request to grow, or no escalation asked for that reason: unchanged
    assert escalation(_job(memory_mb=None), "oom", None, policy, None).memory_mb is None
    assert escalation(_job(), "oom", None, RetryPolicy(timeout=2.0), None).memory_mb is None
    assert escalation(_job(), "exit_code", None, policy, None) == escalation(_job(), "exit_code", None, None, None)
    # node failure: the failed nodes are excluded, never the last node of the queue
    nodes = Limits(nodes=("n01", "n02", "n03", "n04"))
    change = escalation(_job(), "node_fail", "n[01-02]", policy, nodes)
    assert change.exclude == "n01,n02"
    assert escalation(_job(exclude="n01,n02"), "node_fail", "n03", policy, nodes).exclude == "n01,n02,n03"
    last = escalation(_job(exclude="n01,n02,n03"), "node_fail", "n04", policy, nodes)
    assert last.exclude is None and "no other node" in last.note
    assert escalation(_job(), "node_fail", "n01", RetryPolicy(timeout=2.0), nodes).exclude is None
    unknown = escalation(_job(), "node_fail", "n01", policy, None)  # PBS: no node list, no --exclude
    assert unknown.exclude is None and "does not tell" in unknown.note


def test_expand_hostlist() -> None:
    assert expand_hostlist("vm") == ["vm"]
    assert expand_hostlist("n[01-03,07],gpu1") == ["n01", "n02", "n03", "n07", "gpu1"]
    assert expand_hostlist("rack[1-2]-a") == ["rack1-a", "rack2-a"]


def test_limits_from_recorded_sinfo() -> None:
    limits = parse_limits((SLURM / "live_sinfo_limits_22.05.8.txt").read_text())
    assert limits["debug"] == Limits(max_walltime_s=None, max_memory_mb=64000, nodes=("vm",))
    assert limits["short"].max_walltime_s == 300
    assert limits[None] == limits["debug"]  # the default partition (marked debug*)
    text = "gpu|g1|128000|1-00:00:00\ngpu|g2|256000+|1-00:00:00\ncpu*|c1|64000|2:00:00\nodd line\n"
    more = parse_limits(text)
    assert more["gpu"] == Limits(max_walltime_s=86400, max_memory_mb=256000, nodes=("g1", "g2"))
    assert more[None].max_walltime_s == 7200


# ------------------------------------------------------------- SLURM, from recorded output
def _now_times(text: str) -> str:
    """Recorded accounting with its times moved to now (the poll skips records older than the job)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 1))
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", stamp, text)


class RecordedSlurm(Runner):
    """sbatch hands out ids; squeue says the jobs left the queue; sacct answers from recorded
    output (the first job's id rewritten per call); sinfo answers the recorded limits."""

    def __init__(self, sacct_text: str, sinfo_text: str | None = None) -> None:
        super().__init__(sleep=lambda _: None)
        self.sacct_text = sacct_text
        self.sinfo_text = sinfo_text or (SLURM / "live_sinfo_limits_22.05.8.txt").read_text()
        self.sbatch: list[list[str]] = []
        self.next_id = 5000

    def _once(self, argv):  # type: ignore[no-untyped-def]
        name = program_name(argv)
        self.calls[name] += 1
        if name == "sbatch":
            self.sbatch.append(list(argv))
            self.next_id += 1
            return CommandResult(list(argv), 0, f"{self.next_id}\n", "", 0.0)
        if name == "sacct":
            text = _now_times(self.sacct_text).replace("107308", str(self.next_id))
            return CommandResult(list(argv), 0, text, "", 0.0)
        if name == "sinfo":
            return CommandResult(list(argv), 0, self.sinfo_text, "", 0.0)
        if name == "scontrol":
            return CommandResult(list(argv), 0, "MaxArraySize = 1001\n", "", 0.0)
        return CommandResult(list(argv), 0, "", "", 0.0)


def _option(argv: list[str], option: str) -> str | None:
    found = [a.split("=", 1)[1] for a in argv if a.startswith(option + "=")]
    return found[-1] if found else None


def test_oom_on_slurm_escalates_memory_from_recorded_sacct(workdir: Path) -> None:
    runner = RecordedSlurm((SLURM / "live_sacct_oom_22.05.8.txt").read_text())
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("python3 big.py", name="big", memory="100MB", max_retries=2, escalate=True)
    hk.flush()
    assert _option(runner.sbatch[-1], "--mem") == "100M"
    hk.poll()  # sacct: OUT_OF_MEMORY -> retried with memory x1.5, sent again in the same poll
    info = hk.job_info(job)
    assert [(a["attempt"], a["status"], a["reason"], a["memory_mb"], a["counted"]) for a in info["attempts"]] == [
        (1, "FAILED", "oom", 100, 0), (2, "QUEUED", None, 150, 1)]  # fmt: skip
    assert _option(runner.sbatch[-1], "--mem") == "150M"
    assert info["memory_mb"] == 150 and info["retries_used"] == 1
    first = info["attempts"][0]
    assert first["native_state"] == "OUT_OF_MEMORY" and first["nodelist"] == "vm"
    assert first["elapsed_s"] == 1.0 and first["cpu_time_s"] == pytest.approx(0.152)
    assert first["max_rss_mb"] == pytest.approx(1076 / 1024)
    assert any("memory 100 MB -> 150 MB" in (e["note"] or "") for e in info["events"])
    hk.poll()
    hk.poll()  # the third attempt fails as well: max_retries=2 used up, it stays FAILED
    info = hk.job_info(job)
    assert [a["memory_mb"] for a in info["attempts"]] == [100, 150, 225]
    assert info["status"].value == "FAILED" and info["reason"] == "oom" and info["retries_used"] == 2
    assert runner.calls["sbatch"] == 3
    hk.close()


def test_oom_escalation_is_capped_by_the_largest_node(workdir: Path) -> None:
    runner = RecordedSlurm((SLURM / "live_sacct_oom_22.05.8.txt").read_text())
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("python3 big.py", name="big", memory="50GB", max_retries=3, escalate={"oom": 4})
    hk.flush()
    hk.poll()
    assert _option(runner.sbatch[-1], "--mem") == "64000M"  # the node has 64000 MB (sinfo)
    hk.poll()
    info = hk.job_info(job)
    assert info["attempts"][2]["memory_mb"] == 64000
    assert any("memory stays 64000 MB: at its cap" in (e["note"] or "") for e in info["events"])
    hk.close()


def test_timeout_escalation_is_capped_by_the_partition_max_time(workdir: Path) -> None:
    timeout = (SLURM / "live_sacct_oom_22.05.8.txt").read_text().replace("OUT_OF_MEMORY", "TIMEOUT").replace("0:125", "0:15")
    runner = RecordedSlurm(timeout)
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("sleep 1000", name="slow", walltime="00:04:00", queue="short", max_retries=1,
                    escalate={"timeout": 2})  # fmt: skip
    hk.flush()
    hk.poll()
    assert _option(runner.sbatch[-1], "--time") == "0-00:05:00"  # 8 minutes asked, short allows 5
    assert hk.job_info(job)["walltime_s"] == 300
    hk.close()


def test_node_failure_is_retried_for_free_and_excludes_the_node(workdir: Path) -> None:
    node_fail = (SLURM / "live_sacct_oom_22.05.8.txt").read_text().replace("OUT_OF_MEMORY", "NODE_FAIL").replace("0:125", "0:0")
    two_nodes = "debug*|vm|64000|infinite\ndebug*|vm2|64000|infinite\n"
    runner = RecordedSlurm(node_fail, two_nodes)
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0, free_retries=2)
    job = hk.submit("true", name="a", max_retries=0, escalate=True)  # no retries of its own
    hk.flush()
    hk.poll()
    info = hk.job_info(job)
    assert info["status"].value == "QUEUED" and info["attempt"] == 2
    assert info["retries_used"] == 0 and info["free_retries_used"] == 1
    assert _option(runner.sbatch[-1], "--exclude") == "vm"
    hk.poll()  # vm failed again?  (the recording says vm) -> second free retry, vm still excluded
    hk.poll()  # the free budget (2) is used up and max_retries is 0: it stays FAILED
    info = hk.job_info(job)
    assert info["status"].value == "FAILED" and info["reason"] == "node_fail" and info["attempt"] == 3
    assert [a["counted"] for a in info["attempts"]] == [0, 0, 0]
    hk.close()


def test_node_failure_never_excludes_the_only_node(workdir: Path) -> None:
    node_fail = (SLURM / "live_sacct_oom_22.05.8.txt").read_text().replace("OUT_OF_MEMORY", "NODE_FAIL").replace("0:125", "0:0")
    runner = RecordedSlurm(node_fail)  # the live cluster: one node
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("true", name="a", escalate=True)
    hk.flush()
    hk.poll()
    assert _option(runner.sbatch[-1], "--exclude") is None
    assert hk.job_info(job)["attempt"] == 2
    hk.close()


def test_retry_on_narrows_what_is_retried(workdir: Path) -> None:
    runner = RecordedSlurm((SLURM / "live_sacct_oom_22.05.8.txt").read_text())
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("python3 big.py", name="big", max_retries=3, retry_on=["timeout"])
    hk.flush()
    hk.poll()
    info = hk.job_info(job)
    assert info["status"].value == "FAILED" and info["reason"] == "oom" and info["attempt"] == 1
    assert runner.calls["sbatch"] == 1
    hk.close()


def test_free_retry_takes_back_children_waiting_natively(workdir: Path) -> None:
    node_fail = (SLURM / "live_sacct_oom_22.05.8.txt").read_text().replace("OUT_OF_MEMORY", "NODE_FAIL").replace("0:125", "0:0")
    runner = RecordedSlurm(node_fail)
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    parent = hk.submit("true", name="p", job_subdir="p")
    hk.flush()
    child = hk.submit("true", name="c", job_subdir="c", after_ok=[parent])
    hk.flush()
    assert _option(runner.sbatch[-1], "--dependency") == f"afterok:{runner.next_id - 1}"
    old_child_id = hk.store.job(child)["scheduler_id"]
    runner.sacct_text = node_fail.replace("107308", str(runner.next_id - 1))
    hk.poll()  # the parent failed with NODE_FAIL: a free retry; its child is taken back and sent again
    assert runner.calls["scancel"] == 1
    child_row = hk.store.job(child)
    assert child_row["attempt"] == 1 and child_row["scheduler_id"] != old_child_id
    parent_id = hk.store.job(parent)["scheduler_id"]
    assert _option(runner.sbatch[-1], "--dependency") == f"afterok:{parent_id}"
    assert any("a job it waits on is being retried" in (e["note"] or "") for e in hk.job_info(child)["events"])
    hk.close()


# ----------------------------------------------------------------- the local backend, for real
MEMORY_HOG = "python3 -c 'import time; b = bytearray({mb} * 1024 * 1024); time.sleep(1.5)'"


def test_local_oom_escalates_until_the_job_fits(local_hk: Any) -> None:
    job = local_hk.submit(MEMORY_HOG.format(mb=300), name="hog", memory="100MB", max_retries=3, escalate={"oom": 2})
    assert local_hk.monitor(poll_interval=1, timeout=120)[job].value == "COMPLETED"
    info = local_hk.job_info(job)
    attempts = [(a["status"], a["reason"], a["memory_mb"]) for a in info["attempts"]]
    assert attempts == [("FAILED", "oom", 100), ("FAILED", "oom", 200), ("COMPLETED", None, 400)]
    assert 300 <= info["attempts"][-1]["max_rss_mb"] < 400  # measured by the supervisor, whole tree
    row = local_hk.list_jobs().filter(pl.col("job_id") == job).row(0, named=True)
    assert row["memory_mb"] == 400 and row["memory_efficiency"] == pytest.approx(row["max_rss_mb"] / 400)
    exported = pl.read_parquet(local_hk.export_state(Path(local_hk.jobs_dir).parent / "state.parquet"))
    attempts = exported.filter(pl.col("job_id") == job)["attempts"][0]
    assert [(a["memory_mb"], a["reason"]) for a in attempts] == [(100, "oom"), (200, "oom"), (400, None)]
    assert attempts[-1]["max_rss_mb"] >= 300


def test_local_oom_without_escalation_fails_with_reason_oom(local_hk: Any) -> None:
    job = local_hk.submit(MEMORY_HOG.format(mb=300), name="hog", memory="100MB")
    assert local_hk.monitor(poll_interval=1, timeout=60)[job].value == "FAILED"
    failure = local_hk.failure_info(job)
    assert failure["reason"] == "oom" and failure["scheduler_state"] == "OUT_OF_MEMORY"


def test_local_timeout_escalation_heals(local_hk: Any) -> None:
    job = local_hk.submit("sleep 3", name="slow", walltime="00:00:02", max_retries=1, escalate=True)
    assert local_hk.monitor(poll_interval=1, timeout=120)[job].value == "COMPLETED"
    info = local_hk.job_info(job)
    assert [(a["reason"], a["walltime_s"]) for a in info["attempts"]] == [("timeout", 2), (None, 60)]


def test_usage_columns_and_efficiency_on_the_local_backend(local_hk: Any) -> None:
    busy = "python3 -c 'import time; b = bytearray(80 * 1024 * 1024); t = time.time()\nwhile time.time() - t < 2: pass'"
    jobs = [local_hk.submit(busy, name=f"sim_{i:03d}", memory="1GB", walltime="00:10:00") for i in range(3)]
    lazy = local_hk.submit("sleep 1", name="idle", cpus=2, memory="2GB")
    local_hk.monitor(poll_interval=1, timeout=120)
    frame = local_hk.list_jobs()
    for column in ("elapsed_s", "cpu_time_s", "max_rss_mb", "nodelist", "cpu_efficiency", "memory_efficiency",
                   "time_efficiency"):  # fmt: skip
        assert column in frame.columns
    sims = frame.filter(pl.col("job_id").is_in(jobs))
    assert sims["elapsed_s"].min() >= 2.0 and sims["max_rss_mb"].min() >= 80
    # A busy loop keeps its one core busy (the bound leaves room for a machine shared with other work).
    assert sims["cpu_efficiency"].min() > 0.35
    assert sims["time_efficiency"].max() < 0.1  # 2 s of 10 minutes
    idle = frame.filter(pl.col("job_id") == lazy).row(0, named=True)
    assert idle["cpu_efficiency"] < 0.2 and idle["memory_efficiency"] < 0.05
    summary = local_hk.efficiency(by="pattern")
    sim = summary.filter(pl.col("pattern") == "sim_*").row(0, named=True)
    assert sim["jobs"] == 3 and sim["completed"] == 3
    assert sim["suggested_memory_mb"] < 1024 and sim["suggested_memory_mb"] >= sim["max_rss_mb_p95"] * 1.2
    assert sim["suggested_walltime"] == "00:01:00" and sim["suggested_cpus"] == 1
    assert summary.filter(pl.col("pattern") == "idle").row(0, named=True)["cpus_asked"] == 2


def test_retry_failed_by_reason(local_hk: Any) -> None:
    bad = local_hk.submit("exit 3", name="bad")
    hog = local_hk.submit(MEMORY_HOG.format(mb=200), name="hog", memory="64MB", escalate=True)
    good = local_hk.submit("true", name="good")
    local_hk.monitor(poll_interval=1, timeout=60)
    assert local_hk.retry_failed(reason="oom") == [hog]
    info = local_hk.job_info(hog)
    assert info["attempt"] == 2 and info["memory_mb"] == 96  # by hand, the policy's escalation applies too
    assert info["attempts"][-1]["counted"] == 0  # a retry by hand uses none of max_retries
    assert local_hk.job_info(bad)["attempt"] == 1 and local_hk.job_info(good)["attempt"] == 1
    local_hk.monitor(poll_interval=1, timeout=60)
    assert sorted(local_hk.retry_failed()) == sorted([bad, hog])
    with pytest.raises(InvalidArgumentError) as err:
        local_hk.retry_failed(reason="nonsense")
    assert err.value.parameter == "reason"


def test_efficiency_suggestions_from_known_numbers() -> None:
    rows = [
        # job, attempt, status, reason, name, mem asked, wall asked, elapsed, cpu, rss
        (1, 1, "FAILED", "oom", "a_1", 1000, 600, 10.0, 5.0, 990.0),
        (1, 2, "COMPLETED", None, "a_1", 1500, 600, 100.0, 100.0, 1100.0),
        (2, 1, "COMPLETED", None, "a_2", 1000, 600, 200.0, 100.0, 700.0),
        (3, 1, "FAILED", "timeout", "b", 4096, 60, 60.0, 60.0, 100.0),
    ]
    frame = pl.DataFrame(
        [(j, a, s, r, n, None, None, 1, 1, 0, m, w, e, c, x) for j, a, s, r, n, m, w, e, c, x in rows], orient="row",
        schema=["job_id", "attempt", "status", "reason", "name", "queue", "account", "nodes", "cpus", "gpus",
                "memory_mb", "walltime_s", "elapsed_s", "cpu_time_s", "max_rss_mb"],
    )  # fmt: skip
    out = efficiency_table(frame, ["pattern"], 0.95, 1.2, 1.5)
    a = out.filter(pl.col("pattern") == "a_*").row(0, named=True)
    assert (a["jobs"], a["attempts"], a["completed"], a["oom"]) == (2, 3, 2, 1)
    assert a["max_rss_mb_p95"] == 1100.0 and a["max_rss_mb_max"] == 1100.0
    assert a["suggested_memory_mb"] == 1536  # 1100 x 1.2 = 1320 -> next 256 MB step; above the oom's 1000 x 1.25
    assert a["suggested_memory"] == "1536MB"
    assert a["suggested_walltime_s"] == 300  # 200 s x 1.5 -> 5 minutes
    assert a["cpu_efficiency"] == pytest.approx(0.75)  # median of 1.0 and 0.5
    b = out.filter(pl.col("pattern") == "b").row(0, named=True)
    assert b["completed"] == 0 and b["suggested_memory_mb"] is None  # no success, no memory failure: no idea
    assert b["suggested_walltime"] == "00:02:00"  # it only ever hit its 1-minute limit: twice that


def test_efficiency_by_is_checked(local_hk: Any) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        local_hk.efficiency(by=["name", "colour"])
    assert err.value.parameter == "by"
    with pytest.raises(InvalidArgumentError):
        local_hk.efficiency(percentile=1.5)
    assert local_hk.efficiency(by="resources").is_empty()


# ------------------------------------------------------------------------------- migration
def test_a_schema_1_run_is_upgraded_in_place(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(FIXTURES / "schema1" / "housekeeper.db", run / "housekeeper.db")
    hk = housekeeper(run, scheduler="local")
    frame = hk.list_jobs()
    assert frame["status"].cast(pl.Utf8).to_list() == ["COMPLETED", "FAILED", "COMPLETED"]
    assert frame["retries_used"].to_list() == [0, 1, 0]  # attempt 2 of the failed job used its retry
    info = hk.job_info(2)
    assert [a["memory_mb"] for a in info["attempts"]] == [4096, 4096]
    assert hk.efficiency()["jobs"].sum() == 3
    hk.close()
    with sqlite3.connect(run / "housekeeper.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_dialect_sends_exclude() -> None:
    from housekeeper.models import Resources
    from housekeeper.schedulers.base import SubmitRequest

    request = SubmitRequest(script_path="/x/a.sh", name="a", workdir="/x", resources=Resources(exclude="n01,n02"))
    assert "--exclude=n01,n02" in SlurmDialect().submit_argv(request)
    assert "#SBATCH --exclude=n01,n02" in SlurmDialect().directives(request)


def test_cli_efficiency_and_show_attempt_requests(local_hk: Any) -> None:
    from .test_cli import hk_cli

    job = local_hk.submit(MEMORY_HOG.format(mb=200), name="hog_1", memory="64MB", max_retries=1, escalate=True)
    local_hk.submit("true", name="hog_2", memory="64MB")
    local_hk.monitor(poll_interval=1, timeout=60)
    run = str(local_hk.jobs_dir)
    table = hk_cli("efficiency", run, "--by", "pattern")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:5] == ["GROUP", "JOBS", "OK", "OOM", "TIMEOUT"]
    assert row.split()[:5] == ["hog_*", "2", "1", "2", "0"]  # hog_1 ran out twice (64 MB, then 96 MB)
    as_json = hk_cli("efficiency", run, "--json")
    names = {g["name"]: g for g in __import__("json").loads(as_json.stdout)}
    assert names["hog_1"]["oom"] == 2 and names["hog_1"]["suggested_memory"] == "192MB"  # 96 MB x 1.5, rounded
    bad = hk_cli("efficiency", run, "--by", "colour")
    assert bad.returncode == 2 and "colour" in bad.stderr
    show = hk_cli("show", run, str(job))
    assert "ASKED" in show.stdout and "64M" in show.stdout and "96M" in show.stdout


def test_usage_that_accounting_records_late_is_filled_in_after_the_verdict(workdir: Path) -> None:
    """sacct lags the queue: a job judged from its exit record before accounting knew it gets
    its usage from a later poll's accounting query (one per poll), its status untouched."""
    runner = RecordedSlurm("")  # accounting does not know the job yet
    hk = housekeeper(workdir / "run", scheduler="slurm", runner=runner, file_grace=0)
    job = hk.submit("python3 sim.py", name="sim", job_subdir="sim")
    hk.flush()
    now = time.time()
    (workdir / "run" / "sim" / "status.json").write_text(
        f'{{"job_id":{job},"attempt":1,"exit_code":0,"checked":true,"ok":true,'
        f'"started_at":{now - 1},"ended_at":{now}}}'
    )
    hk.poll()  # squeue: gone; sacct: nothing yet; the exit record decides
    info = hk.job_info(job)
    assert info["status"].value == "COMPLETED" and info["cpu_time_s"] is None
    assert info["elapsed_s"] == pytest.approx(1.0)  # the record's own times meanwhile
    sacct_before = runner.calls["sacct"]
    runner.sacct_text = (SLURM / "live_sacct_oom_22.05.8.txt").read_text()
    hk.poll()  # no active job left: one accounting query for the usage still due
    assert runner.calls["sacct"] == sacct_before + 1
    info = hk.job_info(job)
    assert info["status"].value == "COMPLETED" and info["reason"] is None  # usage only, never the state
    assert info["cpu_time_s"] == pytest.approx(0.152) and info["max_rss_mb"] == pytest.approx(1076 / 1024)
    assert info["attempts"][0]["max_rss_mb"] == pytest.approx(1076 / 1024)
    hk.poll()
    assert runner.calls["sacct"] == sacct_before + 1  # nothing due any more: no query
    hk.close()
