"""PbsBackend on recorded and documented qstat output, through a fake runner.

The fake runner subclasses the real Runner and only replaces the process call, so error
classification, ok_kinds and retries are the real ones. PBS Pro and Torque outputs are the
hand-written fixtures of tests/fixtures/pbs (formats from the manuals, see its README); the
`wrappers/` ones were recorded live on Debian's slurm-wlm-torque.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from housekeeper import JobStatus, housekeeper
from housekeeper.backends import PbsBackend, make_command_backend
from housekeeper.errors import SchedulerError
from housekeeper.runner import CommandResult, Runner, program_name
from housekeeper.schedulers.base import STATUS_SCHEMA
from housekeeper.schedulers.pbs import (
    DIALECT_ENV,
    PbsProDialect,
    SlurmTorqueDialect,
    TorqueDialect,
    parse_ctime,
    parse_qstat_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "pbs"
Answer = tuple[int, str, str]


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


class FakeRunner(Runner):
    """A Runner whose commands are answered by `respond(argv) -> (rc, stdout, stderr)`."""

    def __init__(self, respond: Callable[[list[str]], Answer]) -> None:
        super().__init__(retries=2, backoff=(0.0,), sleep=lambda _seconds: None)
        self.respond = respond
        self.argvs: list[list[str]] = []

    def _once(self, argv: Sequence[str]) -> CommandResult:
        self.calls[program_name(argv)] += 1
        self.argvs.append(list(argv))
        rc, stdout, stderr = self.respond(list(argv))
        return CommandResult(list(argv), rc, stdout, stderr, 0.0)


def by_id(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    assert frame.schema == pl.Schema(STATUS_SCHEMA)
    return {row["scheduler_id"]: row for row in frame.iter_rows(named=True)}


def merged_json(*names: str) -> str:
    """One `qstat -F json` document holding the jobs of several fixtures."""
    jobs: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for name in names:
        document = json.loads(read(name))
        jobs.update(document.pop("Jobs", {}))
        head = document
    return json.dumps({**head, "Jobs": jobs}, indent="\t")


# ------------------------------------------------------------------------------- PBS Pro
PRO_MIXED = [f"{n}.pbs01" for n in range(101, 113)]
PRO_ARRAY = [f"1234[{i}].pbs01" for i in range(4)]


def test_pbspro_one_qstat_for_every_job_and_subjob() -> None:
    runner = FakeRunner(lambda argv: (0, merged_json("pbspro_json_mixed.json", "pbspro_json_array.json"), ""))
    backend = PbsBackend(PbsProDialect(), runner)
    rows = by_id(backend.poll(PRO_MIXED + PRO_ARRAY))
    assert runner.argvs == [["qstat", "-f", "-F", "json", "-x", "-t", *PRO_MIXED, "1234[].pbs01"]]
    assert set(rows) == set(PRO_MIXED + PRO_ARRAY)  # array parent left out, subjobs by task id
    assert [rows[i]["status"] for i in PRO_ARRAY] == ["COMPLETED", "FAILED", "RUNNING", "QUEUED"]
    assert (rows["106.pbs01"]["status"], rows["106.pbs01"]["reason"]) == ("FAILED", "timeout")
    assert (rows["111.pbs01"]["status"], rows["111.pbs01"]["reason"]) == ("CANCELLED", "dependency_never_satisfied")
    assert rows["112.pbs01"]["status"] is None  # unknown state: loud, the rest still read


def test_pbspro_exit_153_still_reads_the_known_jobs() -> None:
    runner = FakeRunner(lambda argv: (153, read("pbspro_json_mixed.json"), "qstat: Unknown Job Id 999.pbs01\n"))
    rows = by_id(PbsBackend(PbsProDialect(), runner).poll(["101.pbs01", "999.pbs01", "104.pbs01"]))
    assert set(rows) == {"101.pbs01", "104.pbs01"}
    assert rows["104.pbs01"]["status"] == "COMPLETED"
    assert runner.calls["qstat"] == 1


def test_pbspro_only_unknown_or_purged_ids_is_an_empty_answer() -> None:
    runner = FakeRunner(lambda argv: (153, "", read("pbspro_qstat_unknown.stderr")))
    assert PbsBackend(PbsProDialect(), runner).poll(["101.pbs01", "102.pbs01"]).is_empty()
    runner = FakeRunner(lambda argv: (0, read("pbspro_json_history_gone.json"), ""))
    assert PbsBackend(PbsProDialect(), runner).poll(["101.pbs01"]).is_empty()  # server restarted


def test_pbspro_unreadable_json_falls_back_to_text_once_and_for_all() -> None:
    hopeless = '{"Jobs": {"401.pbs01": {"job_state": "R", "comment": "unterminated}}'

    def respond(argv: list[str]) -> Answer:
        return (0, hopeless, "") if "json" in argv else (0, read("pbspro_text_wrapped.txt"), "")

    runner = FakeRunner(respond)
    backend = PbsBackend(PbsProDialect(), runner)
    ids = ["401.pbs01", "402[0].pbs01", "402[1].pbs01"]
    first = by_id(backend.poll(ids))
    assert runner.argvs == [
        ["qstat", "-f", "-F", "json", "-x", "-t", "401.pbs01", "402[].pbs01"],
        ["qstat", "-f", "-x", "-t", "401.pbs01", "402[].pbs01"],
    ]
    assert set(first) == set(ids)
    backend.poll(ids)
    assert runner.argvs[2] == ["qstat", "-f", "-x", "-t", "401.pbs01", "402[].pbs01"]  # text straight away
    assert runner.calls["qstat"] == 3


def test_pbspro_repairable_json_costs_one_call() -> None:
    runner = FakeRunner(lambda argv: (0, read("pbspro_json_broken.json"), ""))
    rows = by_id(PbsBackend(PbsProDialect(), runner).poll(["301.pbs01", "302.pbs01"]))
    assert (rows["301.pbs01"]["status"], rows["302.pbs01"]["status"]) == ("COMPLETED", "RUNNING")
    assert runner.calls["qstat"] == 1


def test_very_many_ids_ask_once_for_every_job() -> None:
    runner = FakeRunner(lambda argv: (0, read("pbspro_json_mixed.json"), ""))
    ids = [f"{n}.pbs01" for n in range(1000, 1300)] + ["101.pbs01"]
    rows = by_id(PbsBackend(PbsProDialect(), runner).poll(ids))
    assert runner.argvs == [["qstat", "-f", "-F", "json", "-x", "-t"]]
    assert set(rows) == {"101.pbs01"}  # other users' jobs are not reported


def test_unreachable_server_is_a_transient_scheduler_error() -> None:
    runner = FakeRunner(lambda argv: (1, "", "Connection refused\nqstat: cannot connect to server pbs01 (errno=111)\n"))
    with pytest.raises(SchedulerError) as caught:
        PbsBackend(PbsProDialect(), runner).poll(["101.pbs01"])
    assert caught.value.transient
    assert runner.calls["qstat"] == 3  # retried with backoff first


def test_pbspro_cancel_and_dependencies() -> None:
    runner = FakeRunner(lambda argv: (0, "", ""))
    backend = PbsBackend(PbsProDialect(), runner)
    backend.cancel(["1234[2].pbs01", "101.pbs01"])
    assert runner.argvs == [["qdel", "1234[2].pbs01", "101.pbs01"]]
    assert backend.can_depend_on("101.pbs01") and not backend.can_depend_on("1234[2].pbs01")
    assert PbsBackend(TorqueDialect(), runner).can_depend_on("189[2].t")
    assert PbsBackend(SlurmTorqueDialect(), runner).can_depend_on("1673[2]")


def test_pbspro_lookup_by_submission_tag() -> None:
    runner = FakeRunner(lambda argv: (0, read("pbspro_json_tagged.json"), ""))
    backend = PbsBackend(PbsProDialect(), runner)
    assert backend.lookup("hk:feedfacecafebeef", 0) == ["502[0].pbs01", "502[1].pbs01", "502[2].pbs01"]
    assert backend.lookup("hk:1111222233334444", 0) == ["503.pbs01"]
    assert backend.lookup("hk:ffffffffffffffff", 0) == []
    assert runner.argvs[0] == ["qstat", "-f", "-F", "json", "-x", "-t"]


# -------------------------------------------------------------------------------- Torque
TORQUE_IDS = [f"{n}.torque01.example.org" for n in range(201, 211)]
TORQUE_ARRAY = [f"189[{i}].torque01.example.org" for i in range(3)]


def test_torque_one_qstat_text_poll() -> None:
    runner = FakeRunner(lambda argv: (0, read("torque_qstat_f1.txt"), ""))
    rows = by_id(PbsBackend(TorqueDialect(), runner).poll(TORQUE_IDS + TORQUE_ARRAY))
    assert runner.argvs == [["qstat", "-f", "-1", "-t", *TORQUE_IDS, "189[].torque01.example.org"]]
    assert set(rows) == set(TORQUE_IDS + TORQUE_ARRAY)
    assert [rows[i]["status"] for i in TORQUE_ARRAY] == ["COMPLETED", "RUNNING", "QUEUED"]
    assert (rows["206.torque01.example.org"]["reason"], rows["206.torque01.example.org"]["exit_code"]) == (
        "timeout", 271)  # fmt: skip


def test_torque_completed_job_gone_after_keep_completed() -> None:
    runner = FakeRunner(lambda argv: (153, "", read("torque_qstat_unknown.stderr")))
    assert PbsBackend(TorqueDialect(), runner).poll(["201.torque01.example.org"]).is_empty()


def test_torque_lookup_reads_text() -> None:
    runner = FakeRunner(lambda argv: (0, read("torque_qstat_f1.txt"), ""))
    assert PbsBackend(TorqueDialect(), runner).lookup("hk:run1:1", 0) == ["201.torque01.example.org"]
    assert runner.argvs == [["qstat", "-f", "-1", "-t"]]


# ------------------------------------------------------------------- the SLURM wrappers
class WrapperQstat:
    """The wrappers' qstat over a recorded `qstat -f` snapshot: prints the records whose id is
    exactly one of the ids asked for (every record without ids); exit 153 when none."""

    def __init__(self, *names: str) -> None:
        text = "".join(read(f"wrappers/{name}") for name in names)
        self.records = [(job_id, "Job Id:" + chunk) for job_id, chunk in _split(text)]

    def __call__(self, argv: list[str]) -> Answer:
        if argv[0] != "qstat":
            return (0, "", "")
        ids = argv[2:]
        out = "".join(chunk for job_id, chunk in self.records if not ids or job_id in ids)
        return (0 if out else 153, out, "")


def _split(text: str) -> list[tuple[str, str]]:
    chunks = [c for c in text.split("Job Id:") if c.strip()]
    return [(c.split("\n", 1)[0].strip(), c) for c in chunks]


def ended(snapshot: str, job_id: str) -> float:
    attrs = dict(parse_qstat_text(read(f"wrappers/{snapshot}")))[job_id]
    value = parse_ctime(attrs["ctime"])
    assert value is not None
    return value


def task_folder(root: Path, name: str, *, sid: str | None = None, raw: str | None = None, attempt: int = 1,
                record_attempt: int | None = None) -> str:  # fmt: skip
    """A job folder with a start marker (as the batch script writes it) and, optionally, an
    exit record of `record_attempt`."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if sid is not None:
        marker = {"job_id": 1, "attempt": attempt, "scheduler_id": sid, "raw_id": raw or "", "host": "vm",
                  "started_at": 1.0}  # fmt: skip
        (folder / "running.json").write_text(json.dumps(marker))
    if record_attempt is not None:
        (folder / "status.json").write_text(json.dumps({"job_id": 1, "attempt": record_attempt, "exit_code": 0}))
    return str(folder)


TASKS = [f"6369[{i}]" for i in range(4)]


def test_wrapper_tasks_waiting_in_the_pending_remainder_are_queued(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_mid.txt"))
    folders = {sid: task_folder(tmp_path, f"t{i}") for i, sid in enumerate(TASKS)}
    rows = by_id(PbsBackend(SlurmTorqueDialect(), runner).poll(TASKS, folders=folders))
    assert runner.argvs == [["qstat", "-f", "6369"]]
    assert {sid: row["status"] for sid, row in rows.items()} == dict.fromkeys(TASKS, "QUEUED")
    assert all(row["started_at"] is None for row in rows.values())


def test_wrapper_started_tasks_get_their_raw_rows(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_mid.txt"))
    folders = {
        TASKS[0]: task_folder(tmp_path, "t0", sid="6369_0", raw="6370"),
        TASKS[1]: task_folder(tmp_path, "t1", sid="6369_1", raw="6371"),
        TASKS[2]: task_folder(tmp_path, "t2"),
        TASKS[3]: task_folder(tmp_path, "t3"),
    }
    backend = PbsBackend(SlurmTorqueDialect(), runner)
    rows = by_id(backend.poll(TASKS, folders=folders))
    assert runner.argvs == [["qstat", "-f", "6369", "6370", "6371"]]  # one call for the whole array
    assert [rows[sid]["status"] for sid in TASKS] == ["RUNNING", "RUNNING", "QUEUED", "QUEUED"]
    assert rows[TASKS[0]]["node"] == "vm"
    assert rows[TASKS[0]]["started_at"] == parse_ctime("Wed Nov 25 03:11:44 2026")
    # learned once: the markers are not needed again
    for name in ("t0", "t1"):
        (tmp_path / name / "running.json").unlink()
    backend.poll(TASKS, folders=folders)
    assert runner.argvs[1] == ["qstat", "-f", "6369", "6370", "6371"]


def test_wrapper_finished_array_is_judged_by_the_exit_records(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_end.txt"))
    raws = ["6370", "6371", "6372", "6369"]  # task 3 started last: it runs under the array's id
    folders = {sid: task_folder(tmp_path, f"t{i}", sid=f"6369_{i}", raw=raws[i], record_attempt=1)
               for i, sid in enumerate(TASKS)}  # fmt: skip
    rows = by_id(PbsBackend(SlurmTorqueDialect(), runner).poll(TASKS, folders=folders))
    assert runner.argvs == [["qstat", "-f", "6369", "6370", "6371", "6372"]]
    assert {sid: (r["native_state"], r["status"], r["exit_code"]) for sid, r in rows.items()} == dict.fromkeys(
        TASKS, ("C", "COMPLETED", None))  # fmt: skip


def test_wrapper_finished_without_exit_record_waits_then_is_lost(tmp_path: Path) -> None:
    end = ended("qstat_f_array_end.txt", "6372")
    folders = {TASKS[2]: task_folder(tmp_path, "t2", sid="6369_2", raw="6372")}
    clock = [end + 10]
    backend = PbsBackend(SlurmTorqueDialect(), FakeRunner(WrapperQstat("qstat_f_array_end.txt")),
                         record_grace=60, clock=lambda: clock[0])  # fmt: skip
    row = by_id(backend.poll([TASKS[2]], folders=folders))[TASKS[2]]
    assert row["status"] is None  # not decided yet: the engine leaves the job as it is
    clock[0] = end + 120
    row = by_id(backend.poll([TASKS[2]], folders=folders))[TASKS[2]]
    assert (row["status"], row["reason"], row["native_state"]) == ("FAILED", "lost", "C")


def test_wrapper_exit_record_of_an_older_attempt_does_not_count(tmp_path: Path) -> None:
    end = ended("qstat_f_array_end.txt", "6372")
    folders = {TASKS[2]: task_folder(tmp_path, "t2", sid="6369_2", raw="6372", attempt=2, record_attempt=1)}
    backend = PbsBackend(SlurmTorqueDialect(), FakeRunner(WrapperQstat("qstat_f_array_end.txt")),
                         clock=lambda: end + 10)  # fmt: skip
    assert by_id(backend.poll([TASKS[2]], folders=folders))[TASKS[2]]["status"] is None


def test_wrapper_marker_of_another_submission_is_ignored(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_end.txt"))
    folders = {TASKS[0]: task_folder(tmp_path, "t0", sid="6000_0", raw="6001", record_attempt=1)}
    frame = PbsBackend(SlurmTorqueDialect(), runner).poll([TASKS[0]], folders=folders)
    assert runner.argvs == [["qstat", "-f", "6369"]]
    # the array's own row is a started task now: nothing to say about one with no marker
    assert frame.is_empty()


def test_wrapper_pending_remainder_cancelled(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_cancelled_pending.txt"))
    tasks = [f"6373[{i}]" for i in range(3)]
    rows = by_id(PbsBackend(SlurmTorqueDialect(), runner).poll(tasks, folders={}))
    assert {sid: (r["status"], r["reason"], r["started_at"]) for sid, r in rows.items()} == dict.fromkeys(
        tasks, ("CANCELLED", "cancelled_by_user", None))  # fmt: skip


def test_wrapper_single_jobs(tmp_path: Path) -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_after.txt"))
    folders = {"1677": task_folder(tmp_path, "j", sid="1677", raw="1677", record_attempt=1)}
    rows = by_id(PbsBackend(SlurmTorqueDialect(), runner).poll(["1672", "1674", "1677", "999999"], folders=folders))
    assert runner.argvs == [["qstat", "-f", "1672", "1674", "1677", "999999"]]
    got = {sid: (r["status"], r["reason"]) for sid, r in rows.items()}
    assert got == {"1672": ("CANCELLED", "cancelled_by_user"), "1674": ("FAILED", "timeout"),
                   "1677": ("COMPLETED", None)}  # fmt: skip


def test_wrapper_nothing_known_any_more() -> None:
    runner = FakeRunner(WrapperQstat("qstat_f_array_end.txt"))
    assert PbsBackend(SlurmTorqueDialect(), runner).poll(["999999", "999998[0]"], folders={}).is_empty()
    assert runner.argvs == [["qstat", "-f", "999999", "999998"]]


def test_wrapper_cancel_tasks_with_scancel_jobs_with_qdel() -> None:
    runner = FakeRunner(lambda argv: (0, "", ""))
    backend = PbsBackend(SlurmTorqueDialect(), runner)
    backend.cancel(["6369[0]", "1670", "6369[2]"])
    assert runner.argvs == [["qdel", "1670"], ["scancel", "6369_0", "6369_2"]]


def test_wrapper_qdel_of_a_finished_job_is_not_an_error() -> None:
    runner = FakeRunner(lambda argv: (1, "", ""))  # recorded: silent, exit 1
    PbsBackend(SlurmTorqueDialect(), runner).cancel(["1670"])
    assert runner.calls["qdel"] == 1


def test_wrapper_lookup_cannot_tell() -> None:
    runner = FakeRunner(lambda argv: (0, "", ""))
    assert PbsBackend(SlurmTorqueDialect(), runner).lookup("hk:0123", 0) is None
    assert runner.argvs == []


# ------------------------------------------------------------------- building the backend
def test_dialect_override_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = FakeRunner(lambda argv: (2, "", "unexpected"))
    monkeypatch.setenv(DIALECT_ENV, "torque")
    backend = make_command_backend("pbs", runner)
    assert isinstance(backend, PbsBackend) and isinstance(backend.dialect, TorqueDialect)
    assert runner.argvs == []  # nothing probed
    monkeypatch.setenv(DIALECT_ENV, "lsf")
    with pytest.raises(ValueError, match="expected one of"):
        make_command_backend("pbs", runner)


def test_wrapper_dialect_detected_by_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DIALECT_ENV, raising=False)

    def respond(argv: list[str]) -> Answer:
        if argv[:2] == ["qsub", "--sbatchline"]:
            return (0, read("wrappers/qsub_sbatchline.txt"), "")
        return (2, "", read("wrappers/qstat_version.txt"))

    backend = make_command_backend("pbs", FakeRunner(respond))
    assert isinstance(backend.dialect, SlurmTorqueDialect) and backend.wrapper


# ------------------------------------------------------ end to end through housekeeper()
class FakePbsPro:
    """qsub/qstat of a PBS Pro server on which every job has already finished with exit 0."""

    def __init__(self) -> None:
        self.next_id = 700
        self.arrays: dict[str, int] = {}

    def __call__(self, argv: list[str]) -> Answer:
        if argv[0] == "qsub":
            self.next_id += 1
            if "-J" in argv:
                last = int(argv[argv.index("-J") + 1].split("-")[1].split("%")[0])
                self.arrays[f"{self.next_id}[].pbs01"] = last + 1
                return (0, f"{self.next_id}[].pbs01\n", "")
            return (0, f"{self.next_id}.pbs01\n", "")
        assert argv[:6] == ["qstat", "-f", "-F", "json", "-x", "-t"], argv
        jobs: dict[str, Any] = {}
        finished = {"job_state": "F", "Exit_status": 0, "substate": 92, "exec_host": "node01/0",
                    "stime": "Mon Jan  8 10:00:00 2024", "obittime": "Mon Jan  8 10:00:05 2024",
                    "resources_used": {"walltime": "00:00:05", "cput": "00:00:04", "mem": "524288kb"}}  # fmt: skip
        for job_id in argv[6:]:
            if job_id in self.arrays:
                jobs[job_id] = {"job_state": "F", "array": "True"}
                seq = job_id.split("[")[0]
                jobs.update({f"{seq}[{i}].pbs01": dict(finished) for i in range(self.arrays[job_id])})
            else:
                jobs[job_id] = dict(finished)
        return (0, json.dumps({"pbs_version": "2022.1.3", "Jobs": jobs}), "")


def test_pbspro_sweep_end_to_end_one_qsub_one_qstat_per_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIALECT_ENV, "pbspro")
    monkeypatch.chdir(tmp_path)
    runner = FakeRunner(FakePbsPro())
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="pbs", runner=runner, file_grace=0)
    ids = [hk.submit(f"echo {i}", name=f"s{i}", job_subdir=f"s_{i:03d}") for i in range(120)]
    single = hk.submit("echo big", name="big", job_subdir="big", cpus=4, memory="2GB")
    child = hk.submit("echo child", name="child", job_subdir="child", after_ok=[ids[3]])
    results = hk.monitor(poll_interval=0.01, timeout=60)
    assert set(results.values()) == {JobStatus.COMPLETED}
    assert results[single] is JobStatus.COMPLETED and results[child] is JobStatus.COMPLETED
    qsubs = [argv for argv in runner.argvs if argv[0] == "qsub"]
    assert len(qsubs) == 3  # the sweep as one array, the big job, the child
    assert "-J" in qsubs[0] and "0-119" in qsubs[0]
    # the child of one subjob waited in housekeeper: PBS Pro cannot depend on a subjob
    child_qsub = next(argv for argv in qsubs if any("child" in a for a in argv))
    assert not any(a.startswith("depend=") for a in child_qsub)
    polls = [argv for argv in runner.argvs if argv[0] == "qstat"]
    assert all(len(argv) <= 6 + 3 for argv in polls)  # array ids, never one per job
    assert len(polls) <= 4
    # what each job used, from resources_used
    big = hk.list_jobs().filter(pl.col("job_id") == single).row(0, named=True)
    assert (big["elapsed_s"], big["cpu_time_s"], big["max_rss_mb"], big["nodelist"]) == (5.0, 4.0, 512.0, "node01")
    assert big["memory_efficiency"] == pytest.approx(0.25) and big["cpu_efficiency"] == pytest.approx(4 / 20)
    hk.close()
