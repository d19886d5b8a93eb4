"""PBS dialects (PBS Pro / OpenPBS, Torque, Debian's slurm-wlm-torque wrappers) on recorded
and manual-derived output. Fixture provenance: tests/fixtures/pbs/README.md."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from housekeeper.models import JobStatus, Reason, Resources
from housekeeper.schedulers.base import STATUS_SCHEMA, ErrorKind, SubmitRequest
from housekeeper.schedulers.pbs import (
    PBSPRO_NEGATIVE_EXIT,
    PBSPRO_STATES,
    SLURM_TORQUE_STATES,
    TORQUE_NEGATIVE_EXIT,
    TORQUE_STATES,
    PbsJsonError,
    PbsProDialect,
    PbsUnsupportedError,
    SlurmTorqueDialect,
    TorqueDialect,
    detect_argvs,
    detect_dialect,
    dialect_for,
    exit_status_outcome,
    format_walltime,
    make_dialect,
    parse_ctime,
    parse_duration,
    parse_qstat_json,
    parse_qstat_text,
    parse_size_mb,
    pbs_job_name,
)

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"
PRO = PbsProDialect()
TORQUE = TorqueDialect()
WRAP = SlurmTorqueDialect()


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_id(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["scheduler_id"]: row for row in frame.to_dicts()}


def ctime(text: str) -> float:
    return time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y"))


# ---------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "00:00:00"), (59, "00:00:59"), (3723, "01:02:03"), (90000, "25:00:00"),
     (360000, "100:00:00"), (0.2, "00:00:01")],
)
def test_format_walltime(seconds: float, expected: str) -> None:
    assert format_walltime(seconds) == expected


def test_format_walltime_refuses_negative() -> None:
    with pytest.raises(ValueError, match="walltime"):
        format_walltime(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("00:02:32", 152.0), ("100:00:00", 360000.0), ("05:30", 330.0), ("42", 42.0),
     ("1:00:00:00", 86400.0), ("00:00:01.5", 1.5), ("", None), ("abc", None), (None, None)],
)
def test_parse_duration(text: str | None, expected: float | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1234kb", 1234 / 1024), ("4gb", 4096.0), ("512mb", 512.0), ("1tb", 1048576.0),
     ("1048576b", 1.0), ("1048576", 1.0), ("128kw", 1.0), ("2GB", 2048.0), ("junk", None), (None, None)],
)
def test_parse_size_mb(text: str | None, expected: float | None) -> None:
    assert parse_size_mb(text) == expected


def test_parse_ctime() -> None:
    assert parse_ctime("Mon Jan  8 10:00:00 2024") == ctime("Mon Jan 8 10:00:00 2024")
    assert parse_ctime("1704708000") == 1704708000.0
    assert parse_ctime("yesterday") is None
    assert parse_ctime("") is None


@pytest.mark.parametrize(
    ("name", "limit", "expected"),
    [("analysis", 15, "analysis"), ("3dfit", 15, "j3dfit"), ("a b/c", 15, "a_b_c"),
     ("fit_spectrum_number_42", 236, "fit_spectrum_number_42")],
)
def test_pbs_job_name(name: str, limit: int, expected: str) -> None:
    assert pbs_job_name(name, limit) == expected


def test_pbs_job_name_shortens_deterministically() -> None:
    long_a = pbs_job_name("fit_spectrum_number_42", 15)
    long_b = pbs_job_name("fit_spectrum_number_43", 15)
    assert len(long_a) == 15 and long_a == "fit_spect-3ee01"
    assert long_a == pbs_job_name("fit_spectrum_number_42", 15)
    assert long_a != long_b


# ------------------------------------------------------------------------------ state tables


@pytest.mark.parametrize(
    ("code", "status"),
    [("B", JobStatus.RUNNING), ("E", JobStatus.RUNNING), ("F", "finished"), ("H", JobStatus.QUEUED),
     ("M", JobStatus.QUEUED), ("Q", JobStatus.QUEUED), ("R", JobStatus.RUNNING), ("S", JobStatus.RUNNING),
     ("T", JobStatus.QUEUED), ("U", JobStatus.RUNNING), ("W", JobStatus.QUEUED), ("X", "finished")],
)
def test_pbspro_state_table(code: str, status: object) -> None:
    assert PBSPRO_STATES[code].status == status


def test_pbspro_state_table_is_complete() -> None:
    assert set(PBSPRO_STATES) == set("BEFHMQRSTUWX")
    assert set(TORQUE_STATES) == set("CEHQRTWS")
    assert set(SLURM_TORQUE_STATES) == set("CRQSU")


@pytest.mark.parametrize(
    ("code", "status"),
    [("C", "finished"), ("E", JobStatus.RUNNING), ("H", JobStatus.QUEUED), ("Q", JobStatus.QUEUED),
     ("R", JobStatus.RUNNING), ("T", JobStatus.QUEUED), ("W", JobStatus.QUEUED), ("S", JobStatus.RUNNING)],
)
def test_torque_state_table(code: str, status: object) -> None:
    assert TORQUE_STATES[code].status == status


@pytest.mark.parametrize(
    ("code", "status"),
    [("C", "finished"), ("R", JobStatus.RUNNING), ("Q", JobStatus.QUEUED), ("S", JobStatus.RUNNING),
     ("U", JobStatus.FAILED)],
)
def test_wrapper_state_table(code: str, status: object) -> None:
    assert SLURM_TORQUE_STATES[code].status == status


# ----------------------------------------------------------------------------- exit statuses


@pytest.mark.parametrize(
    ("code", "status", "reason", "exit_code", "signal"),
    [
        (0, JobStatus.COMPLETED, None, 0, None),
        (1, JobStatus.FAILED, Reason.EXIT_CODE, 1, None),
        (3, JobStatus.FAILED, Reason.EXIT_CODE, 3, None),
        (128, JobStatus.FAILED, Reason.EXIT_CODE, 128, None),
        (137, JobStatus.FAILED, Reason.SIGNAL, 137, 9),
        (139, JobStatus.FAILED, Reason.SIGNAL, 139, 11),
        (265, JobStatus.FAILED, Reason.SIGNAL, 265, 9),
        (271, JobStatus.FAILED, Reason.SIGNAL, 271, 15),
        (-1, JobStatus.FAILED, Reason.SCHEDULER_ERROR, -1, None),
        (-3, JobStatus.FAILED, Reason.NODE_FAIL, -3, None),
        (-4, JobStatus.FAILED, Reason.NODE_FAIL, -4, None),
        (-11, JobStatus.FAILED, Reason.NODE_FAIL, -11, None),
        (-12, JobStatus.FAILED, Reason.PREEMPTED, -12, None),
        (-19, JobStatus.FAILED, Reason.SCHEDULER_ERROR, -19, None),
        (-20, JobStatus.FAILED, Reason.NODE_FAIL, -20, None),
        (-24, JobStatus.FAILED, Reason.SCHEDULER_ERROR, -24, None),
        (-26, JobStatus.FAILED, Reason.OOM, -26, None),
        (-27, JobStatus.FAILED, Reason.OOM, -27, None),
        (-28, JobStatus.FAILED, Reason.TIMEOUT, -28, None),
        (-29, JobStatus.FAILED, Reason.TIMEOUT, -29, None),
        (-30, JobStatus.FAILED, Reason.NODE_FAIL, -30, None),
    ],
)
def test_pbspro_exit_status_table(code, status, reason, exit_code, signal) -> None:
    outcome = exit_status_outcome(code, PBSPRO_NEGATIVE_EXIT)
    assert (outcome.status, outcome.reason, outcome.exit_code, outcome.signal) == (
        status, reason, exit_code, signal)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(-8, Reason.SCHEDULER_ERROR), (-9, Reason.SCHEDULER_ERROR), (-10, Reason.OOM),
     (-11, Reason.TIMEOUT), (-12, Reason.TIMEOUT), (-13, Reason.NODE_FAIL)],
)
def test_torque_exit_status_table(code: int, reason: Reason) -> None:
    assert exit_status_outcome(code, TORQUE_NEGATIVE_EXIT).reason is reason


def test_pbspro_table_covers_all_job_exec_codes() -> None:
    assert set(PBSPRO_NEGATIVE_EXIT) == set(range(-30, 0)) - {-8, -9}


def test_sigterm_with_evidence_is_timeout_or_oom() -> None:
    assert exit_status_outcome(271, PBSPRO_NEGATIVE_EXIT, walltime_exceeded=True).reason is Reason.TIMEOUT
    assert exit_status_outcome(265, PBSPRO_NEGATIVE_EXIT, memory_exceeded=True).reason is Reason.OOM
    # another signal stays a signal whatever the evidence
    assert exit_status_outcome(267, PBSPRO_NEGATIVE_EXIT, walltime_exceeded=True).reason is Reason.SIGNAL


def test_unknown_negative_exit_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        outcome = exit_status_outcome(-99, PBSPRO_NEGATIVE_EXIT)
    assert outcome.reason is Reason.SCHEDULER_ERROR
    assert "-99" in caplog.text


# ---------------------------------------------------------------------------- PBS Pro status


def test_pbspro_json_every_state() -> None:
    frame = PRO.parse_status(read("pbspro_json_mixed.json"))
    assert frame.schema == pl.Schema(STATUS_SCHEMA)
    rows = by_id(frame)
    expected = {
        "101.pbs01": ("Q", "QUEUED", None, None, None),
        "102.pbs01": ("R", "RUNNING", None, None, None),
        "103.pbs01": ("H", "QUEUED", None, None, None),
        "104.pbs01": ("F", "COMPLETED", None, 0, None),
        "105.pbs01": ("F", "FAILED", "exit_code", 3, None),
        "106.pbs01": ("F", "FAILED", "timeout", 271, 15),
        "107.pbs01": ("F", "FAILED", "timeout", -29, None),
        "108.pbs01": ("F", "FAILED", "oom", -27, None),
        "109.pbs01": ("F", "CANCELLED", "cancelled_by_user", None, None),
        "110.pbs01": ("F", "CANCELLED", "cancelled_by_user", 271, 15),
        "111.pbs01": ("F", "CANCELLED", "dependency_never_satisfied", None, None),
        "112.pbs01": ("Z", None, None, None, None),
    }
    got = {k: (r["native_state"], r["status"], r["reason"], r["exit_code"], r["signal"]) for k, r in rows.items()}
    assert got == expected


def test_pbspro_json_details() -> None:
    rows = by_id(PRO.parse_status(read("pbspro_json_mixed.json")))
    queued = rows["101.pbs01"]
    assert queued["pending_reason"].startswith("Not Running: Insufficient amount of resource: ncpus")
    assert queued["never_runs"] is False and queued["started_at"] is None
    held = rows["103.pbs01"]
    assert (held["pending_reason"], held["never_runs"]) == ("Dependency", False)
    running = rows["102.pbs01"]
    assert running["node"] == "node01"
    assert running["started_at"] == ctime("Mon Jan 8 10:00:10 2024")
    assert running["ended_at"] is None
    assert (running["elapsed_s"], running["cpu_time_s"], running["max_rss_mb"]) == (102.0, 100.0, 512.0)
    done = rows["104.pbs01"]
    assert done["ended_at"] - done["started_at"] == 5.0
    assert done["max_rss_mb"] == pytest.approx(4936 / 1024)


def test_pbspro_unknown_state_warns_and_keeps_parsing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        frame = PRO.parse_status(read("pbspro_json_mixed.json"))
    assert "112.pbs01" in caplog.text and "'Z'" in caplog.text
    assert frame.height == 12


def test_pbspro_array_parent_skipped_subjobs_reported() -> None:
    rows = by_id(PRO.parse_status(read("pbspro_json_array.json")))
    assert set(rows) == {f"1234[{i}].pbs01" for i in range(4)}
    assert [rows[f"1234[{i}].pbs01"]["status"] for i in range(4)] == ["COMPLETED", "FAILED", "RUNNING", "QUEUED"]
    assert rows["1234[1].pbs01"]["exit_code"] == 3
    # the ids are exactly the ones task_ids promised at submission
    assert set(rows) == set(PRO.task_ids("1234[].pbs01", 4))


def test_pbspro_history_gone_is_empty() -> None:
    frame = PRO.parse_status(read("pbspro_json_history_gone.json"))
    assert frame.height == 0 and frame.schema == pl.Schema(STATUS_SCHEMA)
    assert PRO.parse_status("").height == 0


def test_pbspro_broken_json_is_repaired() -> None:
    text = read("pbspro_json_broken.json")
    with pytest.raises(ValueError):
        import json

        json.loads(text, strict=False)
    rows = by_id(PRO.parse_status(text))
    assert rows["301.pbs01"]["status"] == "COMPLETED"
    assert rows["301.pbs01"]["node"] == "node05"
    assert rows["302.pbs01"]["status"] == "RUNNING"
    records = dict(parse_qstat_json(text))
    assert records["301.pbs01"]["Submit_arguments"] == "-v PATTERN=a\\.b job.sh"
    assert not any(key.startswith("Variable_List") for key in records["301.pbs01"])


def test_pbspro_hopeless_json_raises_pbs_json_error() -> None:
    with pytest.raises(PbsJsonError, match="rerun without -F json"):
        PRO.parse_status('{"Jobs": {"1.s": {"job_state": "R", "comment": "unterminated}}')
    assert issubclass(PbsJsonError, ValueError)


def test_pbspro_text_form_with_folded_lines() -> None:
    text = read("pbspro_text_wrapped.txt")
    records = dict(parse_qstat_text(text))
    attrs = records["401.pbs01"]
    assert attrs["Variable_List"].endswith("PBS_O_HOST=login01.cluster.example.org,HK_COMMENT=hk:run1:9")
    assert "PBS_O_WORKDIR=/home/alice/projects/a-rather-long-project-name/run-2024-01-08," in attrs["Variable_List"]
    assert attrs["comment"].endswith("and finished, walltime 152 exceeded limit 120")
    assert attrs["Submit_arguments"].endswith("run-2024-01-08/job.sh")
    rows = by_id(PRO.parse_status(text))  # not JSON: read as text
    assert set(rows) == {"401.pbs01", "402[0].pbs01", "402[1].pbs01"}
    wall = rows["401.pbs01"]
    assert (wall["status"], wall["reason"], wall["exit_code"], wall["signal"]) == ("FAILED", "timeout", 271, 15)
    assert wall["elapsed_s"] == 152.0
    assert rows["402[0].pbs01"]["node"] == "node01"
    assert rows["402[1].pbs01"]["status"] == "RUNNING"


# ----------------------------------------------------------------------------- Torque status


def test_torque_qstat_f1() -> None:
    rows = by_id(TORQUE.parse_status(read("torque_qstat_f1.txt")))
    got = {k.split(".")[0]: (r["native_state"], r["status"], r["reason"], r["exit_code"]) for k, r in rows.items()}
    assert got == {
        "201": ("Q", "QUEUED", None, None),
        "202": ("R", "RUNNING", None, None),
        "203": ("H", "QUEUED", None, None),
        "204": ("C", "COMPLETED", None, 0),
        "205": ("C", "FAILED", "exit_code", 3),
        "206": ("C", "FAILED", "timeout", 271),
        "207": ("C", "FAILED", "timeout", -11),
        "208": ("C", "FAILED", "oom", -10),
        "209": ("C", "CANCELLED", "dependency_never_satisfied", None),
        "210": ("C", "CANCELLED", "cancelled_by_user", None),
        "189[0]": ("C", "COMPLETED", None, 0),
        "189[1]": ("R", "RUNNING", None, None),
        "189[2]": ("Q", "QUEUED", None, None),
    }
    running = rows["202.torque01.example.org"]
    assert running["node"] == "node01"
    assert running["started_at"] == ctime("Mon Jan 8 10:00:05 2024")
    assert (running["elapsed_s"], running["cpu_time_s"], running["max_rss_mb"]) == (52.0, 50.0, 256.0)
    assert rows["203.torque01.example.org"]["pending_reason"] == "Dependency"
    done = rows["204.torque01.example.org"]
    assert done["ended_at"] == ctime("Mon Jan 8 10:01:04 2024")
    assert rows["208.torque01.example.org"]["max_rss_mb"] == 100.0
    assert set(TORQUE.task_ids("189[].torque01.example.org", 3)) == {
        k for k in rows if k.startswith("189[")}


def test_torque_folded_text() -> None:
    rows = by_id(TORQUE.parse_status(read("torque_qstat_f_folded.txt")))
    assert rows["211.torque01.example.org"]["status"] == "COMPLETED"
    attrs = dict(parse_qstat_text(read("torque_qstat_f_folded.txt")))["211.torque01.example.org"]
    assert "PBS_O_LOGNAME=alice,PBS_O_PATH=/usr/local/bin" in attrs["Variable_List"]
    assert "PBS_O_WORKDIR=/home/alice/run," in attrs["Variable_List"]


# ------------------------------------------------------------------- SLURM wrappers (recorded)


def test_wrapper_running_snapshot() -> None:
    rows = by_id(WRAP.parse_status(read("wrappers/qstat_f_running.txt")))
    got = {k: (r["native_state"], r["status"]) for k, r in rows.items()}
    assert got == {
        "1670": ("R", "RUNNING"),
        "1671": ("C", "COMPLETED"),  # exit 3 in SLURM: the wrapper cannot say; exit record decides
        "1672": ("Q", "QUEUED"),  # DependencyNeverSatisfied in SLURM, plain Q here
        "1673": ("Q", "QUEUED"),  # the array's pending remainder
        "1674": ("R", "RUNNING"),
        "1675": ("R", "RUNNING"),
    }
    running = rows["1670"]
    assert running["node"] == "vm"
    assert running["started_at"] == ctime("Wed Nov 25 02:36:55 2026")
    assert running["ended_at"] is None  # ctime is the expected end while running
    assert rows["1671"]["exit_code"] is None


def test_wrapper_finished_jobs() -> None:
    rows = by_id(WRAP.parse_status(read("wrappers/qstat_f_after.txt")))
    got = {k: (r["status"], r["reason"], r["elapsed_s"]) for k, r in rows.items()}
    assert got == {
        "1672": ("CANCELLED", "cancelled_by_user", 0.0),  # qdel while pending: no exec_host
        "1674": ("FAILED", "timeout", 91.0),  # walltime 00:01:00, ran 91 s (TIME LIMIT kill)
        "1677": ("COMPLETED", None, 16.0),  # array task 1673_1 under its raw id
        "1742": ("COMPLETED", None, 26.0),  # array task 1673_2
        "1673": ("COMPLETED", None, 32.0),  # array task 1673_3: the last to start keeps the id
    }


def test_wrapper_task_ids_and_queries() -> None:
    assert WRAP.parse_submit("1673\n") == "1673"
    assert WRAP.task_ids("1673", 3) == ["1673[0]", "1673[1]", "1673[2]"]
    assert WRAP.status_argv(["1673[0]", "1673[1]", "1670", "1676"]) == ["qstat", "-f", "1673", "1670", "1676"]
    assert WRAP.cancel_argv(["1670", "1676"]) == ["qdel", "1670", "1676"]
    with pytest.raises(PbsUnsupportedError, match="whole array"):
        WRAP.cancel_argv(["1673[1]"])


# ---------------------------------------------------------------------- argv and ids per dialect


def test_parse_submit() -> None:
    assert PRO.parse_submit("1234.pbs01\n") == "1234.pbs01"
    assert PRO.parse_submit("1234[].pbs01\n") == "1234[].pbs01"
    assert TORQUE.parse_submit("189[].torque01.example.org\n") == "189[].torque01.example.org"
    with pytest.raises(ValueError, match="no job id"):
        WRAP.parse_submit(read("wrappers/qsub_badpart.stdout"))


def test_task_ids() -> None:
    assert PRO.task_ids("1234[].pbs01", 3) == ["1234[0].pbs01", "1234[1].pbs01", "1234[2].pbs01"]
    assert TORQUE.task_ids("189[].torque01.example.org", 2) == [
        "189[0].torque01.example.org", "189[1].torque01.example.org"]


def test_status_argv() -> None:
    ids = ["1234[0].pbs01", "1234[1].pbs01", "101.pbs01"]
    assert PRO.status_argv(ids) == ["qstat", "-f", "-F", "json", "-x", "-t", "1234[].pbs01", "101.pbs01"]
    assert PRO.status_argv_text(ids) == ["qstat", "-f", "-x", "-t", "1234[].pbs01", "101.pbs01"]
    assert PRO.status_argv_all() == ["qstat", "-f", "-F", "json", "-x", "-t"]
    assert TORQUE.status_argv(["189[2].t", "201.t"]) == ["qstat", "-f", "-1", "-t", "189[].t", "201.t"]


def test_cancel_and_accounting() -> None:
    assert PRO.cancel_argv(["1.s", "2.s", "1.s"]) == ["qdel", "1.s", "2.s"]
    assert PRO.accounting_argv(["1.s"]) is None
    assert TORQUE.accounting_argv(["1.s"]) is None
    assert WRAP.accounting_argv(["1"]) is None
    assert PRO.parse_accounting(read("pbspro_json_array.json")).height == 4


def test_dialect_attributes() -> None:
    for dialect in (PRO, TORQUE, WRAP):
        assert dialect.name == "pbs"
        assert dialect.native_dependencies is True
    assert (PRO.dialect, TORQUE.dialect, WRAP.dialect) == ("pbspro", "torque", "slurm-torque")
    assert WRAP.wrapper and not TORQUE.wrapper


# --------------------------------------------------------------------------- golden directives


def request(**kw: Any) -> SubmitRequest:
    base: dict[str, Any] = {"script_path": "/home/alice/run/7/job.sh", "name": "fit_spectrum",
                            "workdir": "/home/alice/run", "resources": Resources()}
    base.update(kw)
    return SubmitRequest(**base)


SINGLE = request(
    resources=Resources(nodes=1, cpus=4, gpus=1, memory_mb=4096, walltime_s=3723, queue="gpu", account="astro"),
    stdout_path="/home/alice/run/7/stdout.sched", stderr_path="/home/alice/run/7/stderr.sched",
    comment="hk:3f2a:7", dependencies=(("afterok", ("101.pbs01",)),),
)
ARRAY_PRO = request(
    name="3d_sweep_with_a_long_name", array_size=10, max_running=3, spool_dir="/home/alice/run/.spool/42/",
    resources=Resources(nodes=2, cpus=8, memory_mb=32768, walltime_s=90000),
    dependencies=(("afterok", ("101.pbs01", "102.pbs01")), ("afternotok", ("103.pbs01",)),
                  ("afterany", ("1234[].pbs01",))),
)
ARRAY_TORQUE = request(
    name="3d_sweep_with_a_long_name", array_size=10, max_running=3, spool_dir="/home/alice/run/.spool/42",
    resources=Resources(nodes=2, cpus=8, gpus=2, memory_mb=2048, walltime_s=600),
    dependencies=(("afterok", ("201.t", "189[].t")), ("afternotok", ("202.t",)), ("afterany", ("189[3].t",))),
)
ARRAY_WRAP = request(
    name="3d_sweep", array_size=4, max_running=2, spool_dir="/tmp/hk run/.spool/42",
    resources=Resources(nodes=1, cpus=2, memory_mb=512, walltime_s=300, queue="debug"),
    dependencies=(("afterok", ("1670", "1673[2]")), ("afterany", ("1674",))), comment="hk:x:1",
)

GOLDEN = [
    ("pbspro_single.txt", PRO, SINGLE),
    ("pbspro_array.txt", PRO, ARRAY_PRO),
    ("torque_single.txt", TORQUE, SINGLE),
    ("torque_array.txt", TORQUE, ARRAY_TORQUE),
    ("slurm_torque_array.txt", WRAP, ARRAY_WRAP),
]


@pytest.mark.parametrize(("golden", "dialect", "req"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_directives(golden: str, dialect, req: SubmitRequest) -> None:
    expected = (FIXTURES / "golden" / golden).read_text().splitlines()
    assert dialect.directives(req) == expected


def test_submit_argv_carries_every_option() -> None:
    argv = PRO.submit_argv(SINGLE)
    assert argv[0] == "qsub" and argv[-1] == "/home/alice/run/7/job.sh"
    assert argv[1:-1] == [part for line in PRO.directives(SINGLE) for part in line.split(" ", 2)[1:]]
    assert "-V" not in argv


def test_wrapper_submit_argv_single_l_and_shell_quoting() -> None:
    argv = WRAP.submit_argv(ARRAY_WRAP)
    assert argv.count("-l") == 1
    assert argv[argv.index("-l") + 1] == "nodes=1:ppn=2,mem=512mb,walltime=00:05:00"
    assert argv[argv.index("-o") + 1] == "'/tmp/hk run/.spool/42/task.%A_%a.out'"
    assert argv[argv.index("-W") + 1] == "depend=afterok:1670:1673_2,afterany:1674"
    assert "-v" not in argv  # -v would become --export=none


def test_pbspro_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="at least two subjobs"):
        PRO.directives(request(array_size=1, spool_dir="/s"))
    with pytest.raises(PbsUnsupportedError, match="single subjobs"):
        PRO.directives(request(dependencies=(("afterok", ("1234[3].pbs01",)),)))
    with pytest.raises(ValueError, match="unknown kind"):
        PRO.directives(request(dependencies=(("before", ("1.s",)),)))


def test_extra_args_pass_through() -> None:
    req = request(extra_args=("-l", "host=node07"))
    assert PRO.submit_argv(req)[-3:] == ["-l", "host=node07", "/home/alice/run/7/job.sh"]
    assert PRO.directives(req)[-1] == "#PBS -l host=node07"


# ---------------------------------------------------------------------------- classify_error

SBATCH_TIMEOUT = (
    "There was an error running the Slurm sbatch command.\nThe command was:\n'/usr/bin/sbatch j.sh 2>&1'\n"
    "and the output was:\n'sbatch: error: Batch job submission failed: Socket timed out on send/recv "
    "operation\n'\n"
)
SBATCH_POLICY = (
    "There was an error ...\n'sbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n'"
)


@pytest.mark.parametrize(
    ("argv", "rc", "stdout", "stderr", "kind"),
    [
        (["qstat", "-f", "4242.pbs01"], 153, "", read("pbspro_qstat_unknown.stderr"), ErrorKind.UNKNOWN_JOB),
        (["qstat", "-f", "104.pbs01"], 35, "", read("pbspro_qstat_finished.stderr"), ErrorKind.UNKNOWN_JOB),
        (["qstat", "-f", "201.t"], 153, "", read("torque_qstat_unknown.stderr"), ErrorKind.UNKNOWN_JOB),
        (["qdel", "1.s"], 153, "", "qdel: Unknown Job Id 1.s", ErrorKind.UNKNOWN_JOB),
        (["qsub", "-W", "depend=afterok:9.s", "j.sh"], 153, "", "qsub: Unknown Job Id 9.s", ErrorKind.INVALID),
        (["qsub", "j.sh"], 168, "", "qsub: Unknown queue", ErrorKind.INVALID),
        (["qsub", "j.sh"], 188, "", "qsub: Job violates queue and/or server resource limits", ErrorKind.INVALID),
        (["qsub", "j.sh"], 2, "", "qsub: Maximum number of jobs already in queue workq", ErrorKind.POLICY),
        (["qsub", "j.sh"], 38, "", "qsub: would exceed queue workq's per-user limit", ErrorKind.POLICY),
        (["qstat"], 1, "", "Connection refused\nqstat: cannot connect to server pbs01 (errno=111)", ErrorKind.TRANSIENT),
        (["qsub", "j.sh"], 1, "", "pbs_iff: cannot read reply from pbs_server\nNo Permission.", ErrorKind.TRANSIENT),
        (["qstat"], 1, "", "qstat: End of File", ErrorKind.TRANSIENT),
        (["qdel", "5.s"], 1, "", "qdel: Request invalid for state of job 5.s", ErrorKind.TRANSIENT),
        # recorded from the live wrappers (tests/fixtures/pbs/wrappers/)
        (["qsub", "-q", "nosuchpart", "ok.sh"], 1, read("wrappers/qsub_badpart.stdout"), "", ErrorKind.INVALID),
        (["qsub", "noshebang.sh"], 1, read("wrappers/qsub_noshebang.stdout"), "", ErrorKind.INVALID),
        (["qsub", "-l", "walltime=abc", "ok.sh"], 255, "", read("wrappers/qsub_badtime.stderr"), ErrorKind.INVALID),
        (["qstat", "-f", "999999"], 153, "", "", ErrorKind.UNKNOWN_JOB),
        (["qdel", "1671"], 1, "", "", ErrorKind.UNKNOWN_JOB),
        (["/usr/bin/qstat", "-x"], 2, "", read("wrappers/qstat_version.txt"), ErrorKind.INVALID),
        (["qsub", "j.sh"], 1, SBATCH_TIMEOUT, "", ErrorKind.TRANSIENT),
        (["qsub", "j.sh"], 1, SBATCH_POLICY, "", ErrorKind.POLICY),
        (["qstat", "-f"], 2, "", "Problem loading jobs.\n", ErrorKind.TRANSIENT),
        (["qsub", "j.sh"], 1, "", "something nobody has seen", ErrorKind.OTHER),
        (["qsub", "j.sh"], 1, "", "", ErrorKind.OTHER),
    ],
)
def test_classify_error(argv, rc, stdout, stderr, kind) -> None:
    for dialect in (PRO, TORQUE, WRAP):
        assert dialect.classify_error(argv, rc, stdout, stderr) is kind


# ------------------------------------------------------------------------------ detection


def probe(rc: int, out: str = "", err: str = "") -> tuple[int, str, str]:
    return (rc, out, err)


def test_detect_argvs_submit_nothing() -> None:
    argvs = detect_argvs()
    assert argvs["qsub_sbatchline"] == ["qsub", "--sbatchline", "/dev/null"]
    assert argvs["qstat_version"] == ["qstat", "--version"]


def test_detect_slurm_wrappers_from_recorded_output() -> None:
    outputs = {
        "qstat_version": probe(2, "", read("wrappers/qstat_version.txt")),
        "qsub_sbatchline": probe(0, read("wrappers/qsub_sbatchline.txt")),
    }
    assert detect_dialect(outputs) == "slurm-torque"
    # even without the qsub probe, Perl's Getopt message gives the wrappers away
    assert detect_dialect({"qstat_version": outputs["qstat_version"]}) == "slurm-torque"


def test_detect_pbspro_and_torque() -> None:
    usage = "qsub: invalid option -- '-'\nusage: qsub [-a date_time] ..."
    pro = {"qstat_version": probe(0, "pbs_version = 22.05.11\n"), "qsub_sbatchline": probe(2, "", usage)}
    torque = {"qstat_version": probe(0, "Version: 6.1.3\nCommit: 3f2a\n"), "qsub_sbatchline": probe(2, "", usage)}
    assert detect_dialect(pro) == "pbspro"
    assert detect_dialect(torque) == "torque"
    assert detect_dialect({"pbsnodes_version": probe(0, "pbs_version = 2022.1.3\n")}) == "pbspro"
    with pytest.raises(ValueError, match="cannot tell"):
        detect_dialect({"qstat_version": probe(127, "", "qstat: command not found")})


def test_dialect_for_and_make_dialect() -> None:
    assert isinstance(dialect_for("pbspro"), PbsProDialect)
    assert isinstance(dialect_for("slurm-torque"), SlurmTorqueDialect)
    with pytest.raises(ValueError, match="expected one of"):
        dialect_for("lsf")

    class Result:
        def __init__(self, rc: int, stdout: str, stderr: str) -> None:
            self.returncode, self.stdout, self.stderr = rc, stdout, stderr

    class FakeRunner:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def run(self, argv, **_kw):
            self.calls.append(list(argv))
            if argv[:2] == ["qsub", "--sbatchline"]:
                return Result(0, read("wrappers/qsub_sbatchline.txt"), "")
            return Result(2, "", read("wrappers/qstat_version.txt"))

    runner = FakeRunner()
    assert isinstance(make_dialect(runner), SlurmTorqueDialect)
    assert sorted(map(tuple, runner.calls)) == sorted(map(tuple, detect_argvs().values()))
    assert isinstance(make_dialect(runner, "torque"), TorqueDialect)
