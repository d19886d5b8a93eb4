"""The SLURM dialect on recorded output (tests/fixtures/slurm, provenance in its README.md)."""
from __future__ import annotations

import calendar
import logging
import time
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from housekeeper.models import JobStatus, Reason, Resources
from housekeeper.schedulers import slurm
from housekeeper.schedulers.base import STATUS_SCHEMA, Dialect, ErrorKind, SubmitRequest
from housekeeper.schedulers.slurm import (
    DIALECT,
    SlurmDialect,
    compress_task_ids,
    expand_array_indices,
    format_time,
    never_runs,
    parse_exit_pair,
    parse_size_mb,
    parse_slurm_duration,
    parse_slurm_time,
    state_mapping,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"
T0 = 1704164645.0  # 2024-01-02T03:04:05 UTC, the hand-written fixtures' submit time
PIN = ["env", "SLURM_BITSTR_LEN=0", "SLURM_TIME_FORMAT=standard", "TZ=UTC0"]
SQUEUE_FORMAT = (
    "--Format=JobArrayID:|,ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,exit_code:|,NodeList:|,"
    "SubmitTime:|,StartTime:|,EndTime:|,Reason:|,Comment:"
)
SACCT_FORMAT = (
    "--format=JobID,JobIDRaw,State,ExitCode,DerivedExitCode,Submit,Start,End,Elapsed,"
    "TotalCPU,MaxRSS,NodeList,Reason,Comment"
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_id(frame: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {row["scheduler_id"]: row for row in frame.iter_rows(named=True)}


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


# --------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------


def test_dialect_satisfies_the_protocol() -> None:
    dialect: Dialect = SlurmDialect()  # mypy checks the structure
    assert dialect.name == "slurm"
    assert dialect.native_dependencies is True
    assert isinstance(DIALECT, SlurmDialect)


def test_module_does_no_io() -> None:
    source = Path(slurm.__file__).read_text()
    for forbidden in ("import subprocess", "import os", "open(", "sleep("):
        assert forbidden not in source


@pytest.mark.parametrize(
    "name",
    ["squeue_all_states.txt", "squeue_arrays_and_odd_lines.txt", "live_squeue_22.05.8.txt"],
)
def test_status_frames_have_exactly_the_schema(name: str) -> None:
    frame = DIALECT.parse_status(fixture(name))
    assert frame.schema == pl.Schema(STATUS_SCHEMA)
    assert frame.height > 0


def test_accounting_frames_have_exactly_the_schema() -> None:
    for name in ("sacct_steps_and_states.txt", "live_sacct_22.05.8.txt"):
        assert DIALECT.parse_accounting(fixture(name)).schema == pl.Schema(STATUS_SCHEMA)


def test_empty_output_gives_an_empty_frame_with_the_schema() -> None:
    for frame in (DIALECT.parse_status(""), DIALECT.parse_accounting("\n")):
        assert frame.height == 0
        assert frame.schema == pl.Schema(STATUS_SCHEMA)


# --------------------------------------------------------------------------------------
# Directives and sbatch (golden)
# --------------------------------------------------------------------------------------


def single_request(**changes: object) -> SubmitRequest:
    fields: dict[str, object] = {
        "script_path": "/scratch/run/7/fit.sh",
        "name": "fit",
        "resources": Resources(
            nodes=1, cpus=4, memory_mb=4096, walltime_s=90061, queue="short", account="astro"
        ),
        "workdir": "/home/ana/project",
        "stdout_path": "/scratch/run/7/slurm.out",
        "stderr_path": "/scratch/run/7/slurm.err",
        "comment": "hk-3f9c2a",
    }
    fields.update(changes)
    return SubmitRequest(**fields)  # type: ignore[arg-type]


def test_directives_single_job_golden() -> None:
    assert DIALECT.directives(single_request()) == [
        "#SBATCH --job-name=fit",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=4096M",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --partition=short",
        "#SBATCH --account=astro",
        "#SBATCH --output=/scratch/run/7/slurm.out",
        "#SBATCH --error=/scratch/run/7/slurm.err",
        "#SBATCH --open-mode=append",
        "#SBATCH --comment=hk-3f9c2a",
        "#SBATCH --chdir=/home/ana/project",
        "#SBATCH --export=ALL",
    ]


def array_request() -> SubmitRequest:
    return SubmitRequest(
        script_path="/scratch/run/array_12.sh",
        name="sweep",
        resources=Resources(nodes=2, cpus=8, gpus=2),
        workdir="/home/ana/project",
        array_size=1000,
        max_running=50,
        dependencies=(
            ("afterok", ("101", "102_3")),
            ("afternotok", ("103",)),
            ("afterany", ("104",)),
            ("afterok", ("105", "101")),
        ),
        spool_dir="/scratch/run/.spool/",
        comment="hk-a1b2",
        extra_args=("--exclude=node3", "--constraint=skylake"),
    )


def test_directives_array_with_throttle_gpus_and_all_dependency_kinds_golden() -> None:
    assert DIALECT.directives(array_request()) == [
        "#SBATCH --job-name=sweep",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --output=/scratch/run/.spool/%A_%a.out",
        "#SBATCH --error=/scratch/run/.spool/%A_%a.err",
        "#SBATCH --open-mode=append",
        "#SBATCH --array=0-999%50",
        "#SBATCH --dependency=afterok:101:102_3:105,afternotok:103,afterany:104",
        "#SBATCH --kill-on-invalid-dep=yes",
        "#SBATCH --comment=hk-a1b2",
        "#SBATCH --chdir=/home/ana/project",
        "#SBATCH --export=ALL",
        "#SBATCH --exclude=node3",
        "#SBATCH --constraint=skylake",
    ]


def test_submit_argv_repeats_the_header_options_on_the_command_line() -> None:
    req = array_request()
    argv = DIALECT.submit_argv(req)
    assert argv[:2] == ["sbatch", "--parsable"]
    assert argv[-1] == "/scratch/run/array_12.sh"
    assert argv[2:-1] == [line.removeprefix("#SBATCH ") for line in DIALECT.directives(req)]


def test_kill_on_invalid_dep_can_be_switched_off() -> None:
    argv = SlurmDialect(kill_on_invalid_dep=False).submit_argv(array_request())
    assert "--kill-on-invalid-dep=yes" not in argv
    assert "--dependency=afterok:101:102_3:105,afternotok:103,afterany:104" in argv


def test_array_without_throttle_or_spool_dir() -> None:
    req = SubmitRequest(
        script_path="/s/a.sh", name="a", resources=Resources(), workdir="/w", array_size=1
    )
    options = DIALECT.submit_argv(req)
    assert "--array=0-0" in options
    assert not any(o.startswith(("--output", "--error", "--dependency", "--kill")) for o in options)


def sbatch_header_words(line: str) -> list[str]:
    """Our reading of how sbatch splits a #SBATCH line (from its documented behaviour):
    whitespace separates words unless quoted, a backslash escapes the next character, and an
    unquoted # starts a comment."""
    words: list[str] = []
    word, quote, escape, started = "", "", False, False
    for char in line.removeprefix("#SBATCH"):
        if escape:
            word, escape, started = word + char, False, True
        elif char == "\\":
            escape = True
        elif quote:
            if char == quote:
                quote = ""
            else:
                word += char
        elif char in "\"'":
            quote, started = char, True
        elif char == "#":
            break
        elif char.isspace():
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    if started:
        words.append(word)
    return words


def test_header_values_with_blanks_quotes_and_hashes_survive_sbatchs_parser() -> None:
    req = single_request(
        workdir="/home/ana/my project #2",
        comment='say "hi" \\ there',
        extra_args=("--mail-user=ana b@example.org",),
    )
    header = DIALECT.directives(req)
    argv = DIALECT.submit_argv(req)
    assert [w for line in header for w in sbatch_header_words(line)] == argv[2:-1]
    assert '#SBATCH --chdir="/home/ana/my project #2"' in header
    assert "--chdir=/home/ana/my project #2" in argv


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "fit\nrm -rf /"},
        {"comment": "tag\r"},
        {"workdir": "/home/ana/\nx"},
        {"extra_args": ("--exclude=node3\n#SBATCH --mem=1",)},
        {"script_path": "/s/x\n.sh"},
        {"stdout_path": "/scratch/100%/out"},
        {"resources": Resources(memory_mb=0)},
        {"resources": Resources(cpus=0)},
        {"resources": Resources(walltime_s=0)},
        {"dependencies": (("aftercorr", ("1",)),)},
        {"dependencies": (("afterok", ("1; rm",)),)},
        {"array_size": 0},
        {"array_size": 5, "max_running": 0},
    ],
)
def test_unsafe_or_impossible_requests_are_refused(changes: dict[str, object]) -> None:
    req = single_request(**changes)
    with pytest.raises(ValueError):
        DIALECT.directives(req)
    with pytest.raises(ValueError):
        DIALECT.submit_argv(req)


# --------------------------------------------------------------------------------------
# sbatch output
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("1743\n", "1743"),
        (fixture("sbatch_parsable_federation.txt"), "12345"),
        ("  4242  \n\n", "4242"),
        ("note from the job_submit plugin\n777\n", "777"),
    ],
)
def test_parse_submit(stdout: str, expected: str) -> None:
    assert DIALECT.parse_submit(stdout) == expected


@pytest.mark.parametrize(
    "stdout", ["", "\n", "Submitted batch job 123\n", "12a\n", "1\n2\n", "123;\n", "-5\n"]
)
def test_parse_submit_refuses_anything_else(stdout: str) -> None:
    with pytest.raises(ValueError, match="JOBID"):
        DIALECT.parse_submit(stdout)


def test_task_ids() -> None:
    assert DIALECT.task_ids("1743", 3) == ["1743_0", "1743_1", "1743_2"]
    assert len(DIALECT.task_ids("9", 100_000)) == 100_000
    for base, size in (("1743_1", 3), ("abc", 2), ("1743", 0)):
        with pytest.raises(ValueError):
            DIALECT.task_ids(base, size)


# --------------------------------------------------------------------------------------
# squeue: argv
# --------------------------------------------------------------------------------------


def test_status_argv_sends_distinct_base_ids_once() -> None:
    argv = DIALECT.status_argv(["123_4", "77", "123_5", "123_4", "9_0"])
    assert argv == [
        *PIN, "squeue", "--noheader", "--array", "--states=all", "--jobs=123,77,9", SQUEUE_FORMAT
    ]


def test_status_argv_without_pinned_env() -> None:
    argv = SlurmDialect(pin_env=False).status_argv(["5"])
    assert argv == ["squeue", "--noheader", "--array", "--states=all", "--jobs=5", SQUEUE_FORMAT]


@pytest.mark.parametrize("ids", [[], ["-u root"], ["12,13"], ["12_[1-3]"], ["1.batch"]])
def test_status_argv_refuses_bad_ids(ids: list[str]) -> None:
    with pytest.raises(ValueError):
        DIALECT.status_argv(ids)


def test_long_id_lists_go_through_the_user_query() -> None:
    million_tasks = [f"5000_{i}" for i in range(1_000_000)]
    assert DIALECT.status_argv(million_tasks)[-2] == "--jobs=5000"
    assert not DIALECT.needs_user_query(million_tasks)
    plain = [str(100_000 + i) for i in range(2001)]
    assert DIALECT.needs_user_query(plain)
    assert not DIALECT.needs_user_query(plain[:2000])
    with pytest.raises(ValueError, match="status_argv_all"):
        DIALECT.status_argv([str(10_000_000 + i) for i in range(20_000)])
    assert DIALECT.status_argv_all("ana") == [
        *PIN, "squeue", "--noheader", "--array", "--states=all", "--user=ana", SQUEUE_FORMAT
    ]
    with pytest.raises(ValueError):
        DIALECT.status_argv_all("ana,bob")


# --------------------------------------------------------------------------------------
# The state table
# --------------------------------------------------------------------------------------

# (long name, compact code, status, table reason) — written from the facts file, not read back
# from the module, so a change to the table shows up here.
STATES = [
    ("PENDING", "PD", JobStatus.QUEUED, None),
    ("CONFIGURING", "CF", JobStatus.QUEUED, None),
    ("REQUEUED", "RQ", JobStatus.QUEUED, None),
    ("REQUEUE_HOLD", "RH", JobStatus.QUEUED, None),
    ("REQUEUE_FED", "RF", JobStatus.QUEUED, None),
    ("RESV_DEL_HOLD", "RD", JobStatus.QUEUED, None),
    ("SPECIAL_EXIT", "SE", JobStatus.QUEUED, None),
    ("RUNNING", "R", JobStatus.RUNNING, None),
    ("COMPLETING", "CG", JobStatus.RUNNING, None),
    ("SUSPENDED", "S", JobStatus.RUNNING, None),
    ("STOPPED", "ST", JobStatus.RUNNING, None),
    ("RESIZING", "RS", JobStatus.RUNNING, None),
    ("SIGNALING", "SI", JobStatus.RUNNING, None),
    ("STAGE_OUT", "SO", JobStatus.RUNNING, None),
    ("COMPLETED", "CD", JobStatus.COMPLETED, None),
    ("FAILED", "F", JobStatus.FAILED, Reason.EXIT_CODE),
    ("TIMEOUT", "TO", JobStatus.FAILED, Reason.TIMEOUT),
    ("OUT_OF_MEMORY", "OOM", JobStatus.FAILED, Reason.OOM),
    ("NODE_FAIL", "NF", JobStatus.FAILED, Reason.NODE_FAIL),
    ("BOOT_FAIL", "BF", JobStatus.FAILED, Reason.NODE_FAIL),
    ("PREEMPTED", "PR", JobStatus.FAILED, Reason.PREEMPTED),
    ("DEADLINE", "DL", JobStatus.FAILED, Reason.SCHEDULER_ERROR),
    ("CANCELLED", "CA", JobStatus.CANCELLED, Reason.CANCELLED_BY_USER),
    ("REVOKED", "RV", JobStatus.CANCELLED, Reason.SCHEDULER_ERROR),
]


@pytest.mark.parametrize(("long", "compact", "status", "reason"), STATES)
def test_state_table(long: str, compact: str, status: JobStatus, reason: Reason | None) -> None:
    assert state_mapping(long) == (status, reason)
    assert state_mapping(compact) == (status, reason)


def test_state_table_covers_every_code_of_the_facts_file() -> None:
    assert len(STATES) == 24
    assert state_mapping("CANCELLED by 1000") == (JobStatus.CANCELLED, Reason.CANCELLED_BY_USER)
    assert state_mapping("CANCELLED+") == (JobStatus.CANCELLED, Reason.CANCELLED_BY_USER)
    assert state_mapping("UNKNOWN") is None
    assert state_mapping("") is None


# (id in squeue_all_states.txt, status, reason, exit_code, signal, never_runs, started, ended)
ALL_STATES_ROWS = [
    ("1000", "QUEUED", None, None, None, False, None, None),
    ("1001", "QUEUED", None, None, None, False, None, None),  # CONFIGURING: not started
    ("1002", "QUEUED", None, None, None, False, None, None),
    ("1003", "QUEUED", None, None, None, True, None, None),  # REQUEUE_HOLD
    ("1004", "QUEUED", None, None, None, False, None, None),
    ("1005", "QUEUED", None, None, None, True, None, None),  # RESV_DEL_HOLD
    ("1006", "QUEUED", None, None, None, True, None, None),  # SPECIAL_EXIT: held, not terminal
    ("1007", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1008", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1009", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1010", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1011", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1012", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1013", "RUNNING", None, None, None, False, T0 + 55, None),
    ("1014", "COMPLETED", None, 0, None, False, T0 + 55, T0 + 355),
    ("1015", "FAILED", "exit_code", 3, None, False, T0 + 55, T0 + 355),
    ("1016", "FAILED", "timeout", 0, 15, False, T0 + 55, T0 + 3656),
    ("1017", "FAILED", "oom", 0, None, False, T0 + 55, T0 + 355),
    ("1018", "FAILED", "node_fail", 0, None, False, T0 + 55, T0 + 355),
    ("1019", "FAILED", "node_fail", 0, None, False, T0 + 55, T0 + 85),
    ("1020", "FAILED", "preempted", 0, None, False, T0 + 55, T0 + 355),
    ("1021", "FAILED", "scheduler_error", 0, 1, False, None, T0 + 355),
    ("1022", "CANCELLED", "cancelled_by_user", 0, 15, False, T0 + 55, T0 + 355),
    ("1023", "CANCELLED", "scheduler_error", 0, None, False, None, T0 + 55),
]


def test_every_state_through_squeue() -> None:
    rows = by_id(DIALECT.parse_status(fixture("squeue_all_states.txt")))
    assert len(rows) == len(ALL_STATES_ROWS) == 24
    for scheduler_id, status, reason, code, sig, stuck, started, ended in ALL_STATES_ROWS:
        row = rows[scheduler_id]
        assert (row["status"], row["reason"], row["exit_code"], row["signal"]) == (
            status, reason, code, sig
        ), scheduler_id
        assert row["never_runs"] is stuck, scheduler_id
        assert (row["started_at"], row["ended_at"]) == (started, ended), scheduler_id
    assert rows["1007"]["node"] == "node[01-02]"
    assert rows["1016"]["pending_reason"] == "TimeLimit"
    assert rows["1000"]["pending_reason"] == "Priority"
    assert rows["1004"]["pending_reason"] is None  # "None"


# --------------------------------------------------------------------------------------
# squeue: arrays, odd reasons, unknown states, malformed lines
# --------------------------------------------------------------------------------------


def test_squeue_arrays_and_odd_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        frame = DIALECT.parse_status(fixture("squeue_arrays_and_odd_lines.txt"))
    rows = by_id(frame)
    assert list(rows) == [
        "500_0", "500_1", "500_2", "500_3", "500_4", "500_5", "500_6", "500_7", "500_8", "500_9",
        "501_1", "501_3", "501_5", "501_6", "501_7",
        "502_0", "502_4", "502_8", "502_12",
        "503_12", "503_13", "504", "505", "506", "507", "508", "509", "510",
    ]  # fmt: skip
    assert rows["500_0"]["status"] == "RUNNING" and rows["500_0"]["started_at"] == T0 + 5
    assert rows["500_3"]["status"] == "FAILED" and rows["500_3"]["exit_code"] == 2
    assert {rows[f"500_{i}"]["pending_reason"] for i in range(4, 10)} == {"JobArrayTaskLimit"}
    assert {rows[f"500_{i}"]["status"] for i in range(4, 10)} == {"QUEUED"}
    assert rows["501_6"]["pending_reason"] == "Dependency" and not rows["501_6"]["never_runs"]
    for held in ("503_12", "503_13", "504", "505", "510"):
        assert rows[held]["status"] == "QUEUED" and rows[held]["never_runs"] is True, held
    assert rows["503_12"]["pending_reason"] == "launch failed requeued held"
    assert rows["505"]["pending_reason"] == "ReqNodeNotAvail, UnavailableNodes:node[03-04]"
    assert rows["510"]["native_state"] == "PENDING"  # compact PD
    # a pending job's StartTime is an estimate, not a start
    assert rows["506"]["started_at"] is None and rows["506"]["never_runs"] is False
    # unknown state: kept, null status, warned about; the rest still parsed
    assert rows["507"]["native_state"] == "WEIRD_NEW_STATE" and rows["507"]["status"] is None
    assert "WEIRD_NEW_STATE" in caplog.text
    assert "this line was cut in transit" in caplog.text
    assert rows["509"]["status"] == "CANCELLED"
    assert rows["509"]["reason"] == "dependency_never_satisfied"
    assert rows["509"]["ended_at"] == T0 + 115 and rows["509"]["started_at"] is None
    details = by_id(DIALECT.parse_status_details(fixture("squeue_arrays_and_odd_lines.txt")))
    assert details["508"]["comment"] == "tag with | a bar"
    assert details["500_1"]["raw_id"] == "507" and details["500_1"]["array_base_id"] == "500"
    assert details["500_1"]["comment"] == "hk-7f3a" and details["500_1"]["submitted_at"] == T0
    assert details["500_4"]["raw_id"] is None  # one pending record stands for six tasks


def test_live_squeue(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        rows = by_id(DIALECT.parse_status(fixture("live_squeue_22.05.8.txt")))
    assert caplog.text == ""
    assert len(rows) == 89
    held = [r for k, r in rows.items() if k.startswith("1757_")]
    assert len(held) == 70  # 100 tasks, 30 cancelled while pending, expanded by --array
    assert {(r["status"], r["pending_reason"], r["never_runs"]) for r in held} == {
        ("QUEUED", "JobHeldUser", True)
    }
    assert "1757_1" not in rows and "1757_61" in rows
    tasks = [rows[f"1743_{i}"] for i in range(10)]
    assert {(r["status"], r["exit_code"], r["node"]) for r in tasks} == {("COMPLETED", 0, "vm")}
    assert (rows["1743_0"]["started_at"], rows["1743_0"]["ended_at"]) == (
        utc("2026-11-25T02:37:07"), utc("2026-11-25T02:37:09")
    )
    expected = {
        "1744": ("FAILED", "exit_code", 3, None, "NonZeroExitCode"),
        "1745": ("FAILED", "signal", 0, 9, "JobLaunchFailure"),
        "1792": ("FAILED", "exit_code", 2, None, "NonZeroExitCode"),
        "1794": ("FAILED", "timeout", 0, 15, "TimeLimit"),
        "1746": ("CANCELLED", "dependency_never_satisfied", 0, None, "DependencyNeverSatisfied"),
        "1793": ("CANCELLED", "dependency_never_satisfied", 0, None, "DependencyNeverSatisfied"),
        "1748": ("CANCELLED", "cancelled_by_user", 0, None, "JobHeldUser"),
        "1749": ("CANCELLED", "cancelled_by_user", 0, None, "PartitionNodeLimit"),
        "1747": ("COMPLETED", None, 0, None, None),
    }
    for scheduler_id, values in expected.items():
        row = rows[scheduler_id]
        got = (row["status"], row["reason"], row["exit_code"], row["signal"], row["pending_reason"])
        assert got == values, scheduler_id
    assert rows["1793"]["started_at"] is None  # never ran
    assert rows["1793"]["ended_at"] == utc("2026-11-25T02:37:43")
    assert rows["1794"]["ended_at"] - rows["1794"]["started_at"] == 77  # type: ignore[operator]
    details = by_id(DIALECT.parse_status_details(fixture("live_squeue_22.05.8.txt")))
    assert details["1743_0"]["raw_id"] == "1751" and details["1743_9"]["raw_id"] == "1743"
    assert details["1743_5"]["comment"] == "hkd-tag-1" and details["1744"]["comment"] is None


def test_live_squeue_without_array_flag_is_cut_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        frame = DIALECT.parse_status(fixture("live_squeue_no_array_flag_cut_22.05.8.txt"))
    assert frame.get_column("scheduler_id").to_list() == [f"1757_{i}" for i in range(0, 20, 2)]
    assert "cut short" in caplog.text


def test_live_squeue_cancelled_pending_remainder_is_one_base_id_row() -> None:
    rows = by_id(DIALECT.parse_status(fixture("live_squeue_cancelled_pending_array_22.05.8.txt")))
    assert list(rows) == ["1757", "1757_0", "1757_2"]
    assert (rows["1757"]["status"], rows["1757"]["reason"]) == ("CANCELLED", "cancelled_by_user")
    assert rows["1757_0"]["status"] == "COMPLETED"


def test_duplicate_rows_keep_the_live_copy_over_a_revoked_one() -> None:
    text = (
        "42|42|N/A|42|RUNNING|0|n1|2024-01-02T03:04:05|2024-01-02T03:04:06|N/A|None|(null)\n"
        "42|42|N/A|42|REVOKED|0||2024-01-02T03:04:05|N/A|2024-01-02T03:04:06|None|(null)\n"
    )
    assert by_id(DIALECT.parse_status(text))["42"]["status"] == "RUNNING"


def test_local_time_parsing_without_pinned_env() -> None:
    rows = by_id(SlurmDialect(pin_env=False).parse_status(fixture("squeue_all_states.txt")))
    assert rows["1014"]["started_at"] == time.mktime((2024, 1, 2, 3, 5, 0, 0, 0, -1))


# --------------------------------------------------------------------------------------
# never_runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "state", "expected"),
    [
        ("DependencyNeverSatisfied", None, True),
        ("PartitionNodeLimit", None, True),
        ("PartitionTimeLimit", None, True),
        ("BadConstraints", None, True),
        ("InvalidAccount", None, True),
        ("InvalidQOS", None, True),
        ("QOSMaxWallDurationPerJobLimit", None, True),
        ("QOSMaxCpuPerJobLimit", None, True),
        ("QOSMaxGRESPerNode", None, True),
        ("AssocMaxNodePerJobLimit", None, True),
        ("AssocMaxCpuMinutesPerJobLimit", None, True),
        ("QOSMinCpuNotSatisfied", None, True),
        ("JobHeldAdmin", None, True),
        ("JobHeldUser", None, True),
        ("launch failed requeued held", None, True),
        ("job requeued in held state", None, True),
        ("ReqNodeNotAvail, UnavailableNodes:node[1-2]", None, True),
        ("ReqNodeNotAvail, UnavailableNodes:", None, False),
        ("ReqNodeNotAvail", None, False),
        ("Priority", None, False),
        ("Resources", None, False),
        ("Dependency", None, False),
        ("JobArrayTaskLimit", None, False),
        ("QOSMaxJobsPerUserLimit", None, False),  # clears as the user's jobs end
        ("QOSGrpCpuLimit", None, False),
        ("AssocMaxJobsLimit", None, False),
        ("BeginTime", None, False),
        (None, None, False),
        (None, "REQUEUE_HOLD", True),
        (None, "SPECIAL_EXIT", True),
    ],
)
def test_never_runs(reason: str | None, state: str | None, expected: bool) -> None:
    assert never_runs(reason, state) is expected


# --------------------------------------------------------------------------------------
# sacct
# --------------------------------------------------------------------------------------


def test_accounting_argv() -> None:
    argv = DIALECT.accounting_argv(["123_4", "77", "123_5", "77"])
    assert argv == [
        *PIN, "sacct", "--parsable2", "--noheader", "--starttime=2000-01-01T00:00:00",
        "--jobs=123_4,77,123_5", SACCT_FORMAT,
    ]  # fmt: skip
    since = utc("2024-01-02T03:04:05")
    assert DIALECT.accounting_argv(["5"], since=since)[7] == "--starttime=2024-01-02T03:04:05"
    local = SlurmDialect(pin_env=False).accounting_argv(["5"], since=since)
    assert local[0] == "sacct"
    assert local[3] == "--starttime=" + time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))


def test_accounting_argv_asks_for_big_arrays_by_base_id() -> None:
    ids = [f"900_{i}" for i in range(65)] + ["901_1", "901_2", "17"]
    assert DIALECT.accounting_argv(ids)[8] == "--jobs=900,901_1,901_2,17"
    assert DIALECT.accounting_argv_all("ana", since=utc("2024-01-02T00:00:00")) == [
        *PIN, "sacct", "--parsable2", "--noheader", "--starttime=2024-01-02T00:00:00",
        "--user=ana", SACCT_FORMAT,
    ]  # fmt: skip


# (id, native_state, status, reason, exit, signal, started, ended, elapsed, cpu, rss_mb, node)
SACCT_ROWS = [
    ("600_0", "COMPLETED", "COMPLETED", None, 0, None, T0 + 5, T0 + 125, 120.0, 62.5,
     1234 / 1024, "node01"),
    ("600_1", "OUT_OF_MEMORY", "FAILED", "oom", 0, 125, T0 + 5, T0 + 65, 60.0, 59.9, 3072.0,
     "node02"),
    ("610", "CANCELLED by 0", "CANCELLED", "cancelled_by_user", 0, 15, T0 + 1, T0 + 361, 360.0,
     1.0, 2.5, "node03"),
    ("611", "TIMEOUT", "FAILED", "timeout", 0, 15, T0 + 1, T0 + 3631, 3630.0, 93784.0, 1536.0,
     "node[03-04]"),
    ("612", "NODE_FAIL", "FAILED", "node_fail", 0, None, T0 + 1, T0 + 601, 600.0, 0.0, None,
     "node05"),
    ("613", "PREEMPTED", "FAILED", "preempted", 0, None, T0 + 1, T0 + 1201, 1200.0, 0.0, None,
     "node06"),
    ("614", "FAILED", "FAILED", "exit_code", 3, None, T0 + 1, T0 + 2, 1.0, 0.002, 4.75, "node01"),
    ("615", "FAILED", "FAILED", "signal", 0, 9, T0 + 1, T0 + 2, 1.0, 0.001, None, "node01"),
    ("616", "FAILED", "FAILED", "oom", 1, None, T0 + 1, T0 + 61, 60.0, 30.0, 7.9 * 1024,
     "node01"),
    ("617", "BOOT_FAIL", "FAILED", "node_fail", 0, None, T0 + 1, T0 + 31, 30.0, 0.0, None,
     "node07"),
    ("618", "DEADLINE", "FAILED", "scheduler_error", 0, 1, None, T0 + 355, 0.0, 0.0, None, None),
    ("619", "RUNNING", "RUNNING", None, None, None, T0 + 1, None, 300.0, 0.0, None, "node01"),
    ("620", "CANCELLED+", "CANCELLED", "cancelled_by_user", 0, None, None, T0 + 55, 0.0, 0.0,
     None, None),
    ("621", "MYSTERY", None, None, None, None, T0 + 1, None, 54.0, 0.0, None, "node01"),
    ("623", "REQUEUED", "QUEUED", None, None, None, T0 + 1, None, 60.0, 0.0, None, "node01"),
    ("624", "CANCELLED", "CANCELLED", "dependency_never_satisfied", 0, None, None, T0 + 955, 0.0,
     0.0, None, None),
    ("625", "CANCELLED by 1000", "CANCELLED", "cancelled_by_user", 0, 15, T0 + 355, T0 + 955,
     600.0, 1.0, None, "node01"),
    ("626", "PENDING", "QUEUED", None, None, None, None, None, 0.0, 0.0, None, None),
]  # fmt: skip


def test_sacct_steps_folded_and_every_outcome(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        rows = by_id(DIALECT.parse_accounting(fixture("sacct_steps_and_states.txt")))
    assert "MYSTERY" in caplog.text and "622|622|COMPLETED|0:0" in caplog.text
    assert "622" not in rows  # malformed, skipped
    for expected in SACCT_ROWS:
        scheduler_id, native, status, reason, code, sig, started, ended, elapsed, cpu, rss, node = (
            expected
        )
        row = rows[scheduler_id]
        assert (row["native_state"], row["status"], row["reason"]) == (native, status, reason), (
            scheduler_id
        )
        assert (row["exit_code"], row["signal"]) == (code, sig), scheduler_id
        assert (row["started_at"], row["ended_at"]) == (started, ended), scheduler_id
        assert row["elapsed_s"] == elapsed, scheduler_id
        assert row["cpu_time_s"] == pytest.approx(cpu), scheduler_id
        assert row["max_rss_mb"] == (pytest.approx(rss) if rss is not None else None), scheduler_id
        assert row["node"] == node, scheduler_id
    pending = [rows[f"600_{i}"] for i in (2, 3, 4, 7)]
    assert {(r["status"], r["pending_reason"], r["never_runs"]) for r in pending} == {
        ("QUEUED", "JobArrayTaskLimit", False)
    }
    assert "600_5" not in rows
    assert rows["626"]["never_runs"] is True and rows["626"]["pending_reason"] == "JobHeldAdmin"
    assert len(rows) == 22


def test_sacct_details_and_the_recycled_id_guard() -> None:
    text = fixture("sacct_steps_and_states.txt")
    details = by_id(DIALECT.parse_accounting_details(text))
    assert details["600_1"]["raw_id"] == "602" and details["600_1"]["array_base_id"] == "600"
    assert details["600_1"]["comment"] == "hk-7f3a" and details["600_1"]["submitted_at"] == T0
    assert details["626"]["comment"] == "hk-tag|with-bar"
    assert DIALECT.parse_accounting(text, submitted_after=T0 + 1).height == 0
    assert DIALECT.parse_accounting(text, submitted_after=T0).height == 22


def test_live_sacct() -> None:
    rows = by_id(DIALECT.parse_accounting(fixture("live_sacct_22.05.8.txt")))
    expected = {
        "1744": ("FAILED", "exit_code", 3, None),
        "1745": ("FAILED", "signal", 0, 9),
        "1792": ("FAILED", "exit_code", 2, None),
        "1794": ("FAILED", "timeout", 0, 15),
        "1747": ("COMPLETED", None, 0, None),
        "1743_0": ("COMPLETED", None, 0, None),
        # kill-on-invalid-dep child: CANCELLED, reason "Dependency", never started
        "1793": ("CANCELLED", "dependency_never_satisfied", 0, None),
        "1746": ("CANCELLED", "dependency_never_satisfied", 0, None),
        "1748": ("CANCELLED", "cancelled_by_user", 0, None),
        "1749": ("CANCELLED", "cancelled_by_user", 0, None),
    }
    assert {k: (r["status"], r["reason"], r["exit_code"], r["signal"]) for k, r in rows.items()} == (
        expected
    )
    assert rows["1794"]["max_rss_mb"] == pytest.approx(4752 / 1024)
    assert rows["1794"]["elapsed_s"] == 77.0
    assert rows["1747"]["max_rss_mb"] == pytest.approx(4.75) and rows["1747"]["elapsed_s"] == 120
    assert rows["1747"]["cpu_time_s"] == pytest.approx(0.003)
    assert rows["1744"]["started_at"] == utc("2026-11-25T02:37:07")
    assert rows["1793"]["started_at"] is None and rows["1793"]["node"] is None
    assert rows["1793"]["ended_at"] == utc("2026-11-25T02:37:43")
    details = by_id(DIALECT.parse_accounting_details(fixture("live_sacct_22.05.8.txt")))
    assert details["1743_0"]["raw_id"] == "1751" and details["1743_0"]["comment"] == "hkd-tag-1"


def test_live_sacct_cancelled_pending_remainder_expands_to_tasks() -> None:
    rows = by_id(DIALECT.parse_accounting(fixture("live_sacct_cancelled_pending_array_22.05.8.txt")))
    cancelled = [4, 6, 8, *range(10, 60, 2), *range(60, 100)]
    assert len(rows) == 2 + len(cancelled) == 70
    assert (rows["1757_0"]["status"], rows["1757_2"]["status"]) == ("COMPLETED", "COMPLETED")
    assert {(rows[f"1757_{i}"]["status"], rows[f"1757_{i}"]["reason"]) for i in cancelled} == {
        ("CANCELLED", "cancelled_by_user")
    }


def test_live_sacct_record_cut_without_bitstr_len() -> None:
    job_field = fixture("live_sacct_pending_cut_22.05.8.txt").split("|", 1)[0]
    indices, complete = expand_array_indices(job_field.removeprefix("1757_"))
    assert complete is False
    assert indices == list(range(0, 41, 2))  # "42" before the cut may be a cut "42x"


def test_accounting_disabled_is_recognised() -> None:
    argv = DIALECT.accounting_argv(["5"])
    stderr = fixture("sacct_accounting_disabled.stderr")
    assert DIALECT.classify_error(argv, 1, "", stderr) is ErrorKind.NO_ACCOUNTING


# --------------------------------------------------------------------------------------
# scancel, scontrol
# --------------------------------------------------------------------------------------


def test_cancel_argv_compresses_tasks_per_array() -> None:
    ids = [f"1757_{i}" for i in (0, 2, 4, 60, 61, 62, 63)] + ["1800", "1801_3", "1800_5"]
    assert DIALECT.cancel_argv(ids) == ["scancel", "1800", "1757_[0,2,4,60-63]", "1801_3"]


def test_release_argv() -> None:
    assert DIALECT.release_argv(["503_12", "503_13", "504"]) == [
        "scontrol", "release", "503_12,503_13,504"
    ]
    with pytest.raises(ValueError):
        DIALECT.release_argv(["503_[12-13]"])


def test_config() -> None:
    assert DIALECT.config_argv() == ["scontrol", "show", "config"]
    live = DIALECT.parse_config(fixture("live_scontrol_config_22.05.8.txt"))
    assert {k: v for k, v in live.items() if k != "raw"} == {
        "max_array_size": 100001,
        "max_array_tasks": None,
        "max_job_count": 200000,
        "max_job_id": 67043328,
        "min_job_age": 300,
        "message_timeout": 10,
        "accounting_enabled": True,
        "kill_invalid_depend": False,
        "version": "22.05.8",
        "cluster_name": "hkcluster",
    }
    assert live["raw"]["SelectType"] == "select/cons_tres"
    new = DIALECT.parse_config(fixture("scontrol_config_24.11_excerpt.txt"))
    assert (new["max_array_size"], new["max_array_tasks"], new["min_job_age"]) == (40001, 5000, 600)
    assert (new["version"], new["accounting_enabled"], new["kill_invalid_depend"]) == (
        "24.11.3", True, True
    )
    assert new["max_job_count"] == 500000
    off = DIALECT.parse_config(fixture("scontrol_config_no_accounting.txt"))
    assert (off["accounting_enabled"], off["max_array_size"], off["max_array_tasks"]) == (
        False, 1001, None
    )
    assert DIALECT.parse_config("")["max_array_size"] == 1001  # SLURM's default


def test_partitions(caplog: pytest.LogCaptureFixture) -> None:
    assert DIALECT.partition_argv() == ["scontrol", "--oneliner", "show", "partition"]
    live = DIALECT.parse_partitions(fixture("live_scontrol_partitions_22.05.8.txt"))
    assert sorted(live) == ["debug", "short"]
    assert (live["debug"].max_time_s, live["debug"].max_nodes, live["debug"].is_default) == (
        None, None, True
    )
    assert (live["short"].max_time_s, live["short"].total_cpus) == (300.0, 32)
    with caplog.at_level(logging.WARNING, logger="housekeeper"):
        other = DIALECT.parse_partitions(fixture("scontrol_partitions.txt"))
    assert "garbage" in caplog.text
    gpu, maint = other["gpu"], other["maint"]
    assert (gpu.max_time_s, gpu.default_time_s, gpu.max_nodes) == (172800.0, 3600.0, 4)
    assert (gpu.max_cpus_per_node, gpu.max_mem_per_node_mb, gpu.state) == (64, 190000.0, "UP")
    assert (maint.max_time_s, maint.max_nodes, maint.state) == (1800.0, None, "DOWN")


# --------------------------------------------------------------------------------------
# classify_error
# --------------------------------------------------------------------------------------

SBATCH = ["sbatch", "--parsable", "/s/x.sh"]
SQUEUE = DIALECT.status_argv(["1"])


@pytest.mark.parametrize(
    ("argv", "rc", "stderr", "kind"),
    [
        (SBATCH, 1, ("sbatch: error: Batch job submission failed: Socket timed out on send/recv "
         "operation"), ErrorKind.TRANSIENT),
        (SQUEUE, 1, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
         ErrorKind.TRANSIENT),
        (SBATCH, 1, "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
         ErrorKind.TRANSIENT),
        (SBATCH, 1, "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying",
         ErrorKind.TRANSIENT),
        (SBATCH, 1, "sbatch: error: Job creation temporarily disabled", ErrorKind.TRANSIENT),
        (SQUEUE, 1, "slurm_load_jobs error: Slurm backup controller in standby mode",
         ErrorKind.TRANSIENT),
        (SQUEUE, 1, "squeue: error: slurm_persist_conn_open: Connection refused",
         ErrorKind.TRANSIENT),
        (SQUEUE, 1, "slurm_load_jobs error: Zero Bytes were transmitted or received",
         ErrorKind.TRANSIENT),
        (SBATCH, 1, ("sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job "
         "submission failed: Job violates accounting/QOS policy (job submit limit, user's size "
         "and/or time limits)"), ErrorKind.POLICY),
        (SBATCH, 1, "sbatch: error: AssocMaxSubmitJobLimit", ErrorKind.POLICY),
        (SBATCH, 1, "sbatch: error: QOSGrpGRES", ErrorKind.POLICY),
        (SBATCH, 1, "sbatch: error: Batch job submission failed: Slurm job queue full",
         ErrorKind.POLICY),
        (SBATCH, 1, ("sbatch: error: Batch job submission failed: Invalid account or "
         "account/partition combination specified"), ErrorKind.INVALID),
        (SBATCH, 1, ("sbatch: error: Batch job submission failed: Requested node configuration "
         "is not available"), ErrorKind.INVALID),
        (SBATCH, 1, "sbatch: error: Batch job submission failed: Job dependency problem",
         ErrorKind.INVALID),
        (SBATCH, 1, ("sbatch: error: Batch job submission failed: More processors requested "
         "than permitted"), ErrorKind.INVALID),
        (SBATCH, 1, ("sbatch: error: Batch job submission failed: Memory required by task is "
         "not available"), ErrorKind.INVALID),
        (SBATCH, 255, "sbatch: error: unrecognized option '--frobnicate'", ErrorKind.INVALID),
        (["squeue", "--version"], 255, "something odd", ErrorKind.OTHER),
        (DIALECT.cancel_argv(["5"]), 1, ("scancel: error: Kill job error on job id 5: Access/"
         "permission denied"), ErrorKind.OTHER),
        (SBATCH, 1, "", ErrorKind.OTHER),
    ],
)  # fmt: skip
def test_classify_error(argv: list[str], rc: int, stderr: str, kind: ErrorKind) -> None:
    assert DIALECT.classify_error(argv, rc, "", stderr) is kind


def live_errors() -> list[tuple[str, int, str]]:
    cases = []
    for block in fixture("live_errors_22.05.8.txt").split("### ")[1:]:
        command, rc_line, *stderr = block.strip().split("\n")
        cases.append((command, int(rc_line.removeprefix("rc=")), "\n".join(stderr)))
    return cases


def test_classify_live_errors() -> None:
    expected = {
        "sbatch --parsable --partition=nope ok.sh": ErrorKind.INVALID,
        "sbatch --parsable --time=abc ok.sh": ErrorKind.INVALID,
        "sbatch --parsable --gres=gpu:1 ok.sh": ErrorKind.INVALID,
        "sbatch --parsable --array=0-200000 ok.sh": ErrorKind.INVALID,
        "squeue -j 999999": ErrorKind.UNKNOWN_JOB,
        "scontrol release 999999": ErrorKind.UNKNOWN_JOB,
        "scontrol release 1744": ErrorKind.UNKNOWN_JOB,
    }
    cases = live_errors()
    assert len(cases) == len(expected)
    for command, rc, stderr in cases:
        assert DIALECT.classify_error(command.split(), rc, "", stderr) is expected[command], command


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "0-00:00:01"), (59.2, "0-00:01:00"), (3600, "0-01:00:00"), (90061, "1-01:01:01"),
     (8 * 86400, "8-00:00:00")],
)  # fmt: skip
def test_format_time(seconds: float, text: str) -> None:
    assert format_time(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("05:30", 330.0),
        ("00:01.234", 1.234),
        ("01:02.500", 62.5),
        ("02:03:04", 7384.0),
        ("1-02:03:04", 93784.0),
        ("2-00:00:00", 172800.0),
        ("30", 1800.0),  # sbatch: bare number = minutes
        ("1-12", 129600.0),
        ("1-12:30", 131400.0),
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("INVALID", None),
        ("NONE", None),
        ("", None),
        ("abc", None),
    ],
)
def test_parse_slurm_duration(text: str, seconds: float | None) -> None:
    assert parse_slurm_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@given(st.integers(min_value=1, max_value=400 * 86400))
def test_format_then_parse_walltime_round_trips(seconds: int) -> None:
    assert parse_slurm_duration(format_time(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "mb"),
    [("1234K", 1234 / 1024), ("2.5M", 2.5), ("3G", 3072.0), ("1T", 1048576.0), ("4000Mn", 4000.0),
     ("2Gc", 2048.0), ("512", 512.0), ("", None), ("16?", None)],
)  # fmt: skip
def test_parse_size_mb(text: str, mb: float | None) -> None:
    assert parse_size_mb(text) == (pytest.approx(mb) if mb is not None else None)
    assert parse_size_mb("0", bare_unit="K") == 0.0
    assert parse_size_mb("2048", bare_unit="K") == 2.0


@pytest.mark.parametrize(
    ("text", "pair"),
    [("0:0", (0, None)), ("3:0", (3, None)), ("0:9", (0, 9)), ("0:125", (0, 125)),
     ("0:15", (0, 15)), ("", (None, None)), ("x:y", (None, None))],
)  # fmt: skip
def test_parse_exit_pair(text: str, pair: tuple[int | None, int | None]) -> None:
    assert parse_exit_pair(text) == pair


def test_parse_slurm_time() -> None:
    assert parse_slurm_time("2024-01-02T03:04:05") == T0
    assert parse_slurm_time("2024-01-02T03:04:05", utc=False) == time.mktime(
        (2024, 1, 2, 3, 4, 5, 0, 0, -1)
    )
    for null in ("N/A", "Unknown", "None", "(null)", "NONE", "", "Tue Jan  2 03:04:05 2024"):
        assert parse_slurm_time(null) is None


@pytest.mark.parametrize(
    ("expression", "indices", "complete"),
    [
        ("[4-9%2]", [4, 5, 6, 7, 8, 9], True),
        ("[1,3,5-7]", [1, 3, 5, 6, 7], True),
        ("[0-15:4]", [0, 4, 8, 12], True),
        ("1,3,5-7", [1, 3, 5, 6, 7], True),
        ("[7]", [7], True),
        ("[0,2,4,...", [0, 2, 4], False),
        ("[0,2,42...]", [0, 2], False),  # 42 touches the cut: maybe 420
        ("[0,2,4", [0, 2], False),
        ("[0,2,4,", [0, 2, 4], False),
        ("[9-3]", [], False),
    ],
)
def test_expand_array_indices(expression: str, indices: list[int], complete: bool) -> None:
    assert expand_array_indices(expression) == (indices, complete)


@given(st.sets(st.integers(min_value=0, max_value=3000), min_size=2, max_size=200))
def test_compressed_task_ids_expand_back(indices: set[int]) -> None:
    (expression,) = compress_task_ids([f"77_{i}" for i in sorted(indices)])
    assert expression.startswith("77_[")
    assert expand_array_indices(expression.removeprefix("77_")) == (sorted(indices), True)
