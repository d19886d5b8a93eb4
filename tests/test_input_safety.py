"""Hostile input: every submit() argument is accepted or refused cleanly, accepted jobs run
exactly what was asked, nothing outside jobs_dir is written or deleted (symlinks included),
and files are created with the user's umask.

Strings are built from the characters shells, schedulers and file systems care about:
quotes, `$()`, backticks, `;`, `&&`, `|`, newlines, `\\r`, NUL, `..`, `/`, leading `-`,
unicode, lone surrogates and 10,000-character runs.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from housekeeper import JobStatus, housekeeper
from housekeeper.errors import HousekeeperError, InvalidArgumentError
from housekeeper.runner import CommandResult, Runner, program_name
from housekeeper.schedulers.base import SubmitRequest
from housekeeper.schedulers.slurm import SlurmDialect
from housekeeper.spec import build_spec

from .test_slurm_dialect import sbatch_header_words

FAST = 0.2
# A value that runs `touch` if any shell ever evaluates it; the file must never appear.
SENTINEL = f"/tmp/pwned_{uuid.uuid4().hex}"
ATOMS = [
    "'", '"', f"$(touch {SENTINEL})", f"`touch {SENTINEL}`", ";", "&&", "|", "\n", "\r", "\0", "..", "/",
    "/etc/passwd", "-", "-rf", "--help", "é", "日本", "🦀", "\\", "#", "%", " ", "\t", "$HOME", "${IFS}", "*",
    "!", ">", "<", "{", "}", "=", ",", "@", "+", ".", "\ud800", "x", "A", "0", "_",
]  # fmt: skip
_RUNNABLE_ATOMS = [a for a in ATOMS if a not in ("\0", "\ud800")]


def _texts(atoms: list[str]) -> st.SearchStrategy[str]:
    short = st.lists(st.one_of(st.sampled_from(atoms), st.text(max_size=3)), max_size=6).map("".join)
    long = st.sampled_from(atoms).map(lambda atom: (atom * 10_000)[:10_000])
    return st.one_of(short, short, short, long)


HOSTILE = _texts(ATOMS)
RUNNABLE = _texts(_RUNNABLE_ATOMS).map(lambda s: s.replace("\0", "").encode("utf-8", "ignore").decode())
NAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,20}", fullmatch=True)
SUBDIR = NAME.filter(lambda s: not s.isdigit())
ENV_KEY = st.from_regex(r"K_[A-Za-z0-9_]{0,10}", fullmatch=True)
HUGE_INTS = [2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(10**30)]
NUMBER = st.one_of(
    st.integers(-3, 8), st.sampled_from(HUGE_INTS), st.integers(), st.booleans(), st.floats(), st.none(), HOSTILE
)
PARENT = object()  # stands for the id of the job each example submits first
WORKDIR = object()  # stands for an existing folder with a hostile name, made per example


class FakeSlurm(Runner):
    """sbatch hands out ids and records its argv; everything else answers politely."""

    def __init__(self) -> None:
        super().__init__(sleep=lambda _: None)
        self.sbatch: list[list[str]] = []

    def _once(self, argv):  # type: ignore[no-untyped-def]
        name = program_name(argv)
        self.calls[name] += 1
        if name == "sbatch":
            self.sbatch.append(list(argv))
            return CommandResult(list(argv), 0, f"{9000 + len(self.sbatch)}\n", "", 0.0)
        if name == "scontrol":
            return CommandResult(list(argv), 0, "MaxArraySize = 1001\n", "", 0.0)
        return CommandResult(list(argv), 0, "", "", 0.0)


# ------------------------------------------------------------------------ the arguments
VALID: dict[str, st.SearchStrategy[Any]] = {
    "command": st.sampled_from(["true", "echo hi", "python3 -c 'print(1)'"]),
    "name": st.one_of(st.none(), NAME),
    "job_subdir": st.one_of(st.none(), SUBDIR),
    "nodes": st.integers(1, 4),
    "cpus": st.integers(1, 8),
    "gpus": st.integers(0, 2),
    "memory": st.sampled_from(["4GB", "500MB", "1.5TB", "4G", "512K", "4GiB", 2048, "8 gb", None]),
    "walltime": st.sampled_from(["01:00:00", "1-00:00:00", "05:30", 90, dt.timedelta(hours=2), "1-12", None]),
    "queue": st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+,-]{0,15}", fullmatch=True)),
    "account": st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,15}", fullmatch=True)),
    "expected_files": st.one_of(st.none(), st.lists(st.sampled_from(["out.txt", "a/b.fits", "/abs/x"]), max_size=2)),
    "after_ok": st.sampled_from([None, [], [PARENT], PARENT]),
    "after_fail": st.sampled_from([None, [], [PARENT]]),
    "after_any": st.sampled_from([None, [], [PARENT]]),
    "max_retries": st.integers(0, 3),
    "env": st.one_of(st.none(), st.dictionaries(ENV_KEY, st.sampled_from(["1", "x y", "é"]), max_size=2)),
    "workdir": st.sampled_from([None, WORKDIR]),
    "retry_on": st.sampled_from([None, "timeout", ["oom", "timeout"]]),
    "escalate": st.sampled_from([None, True, False, {"timeout": 2}, {"oom": 1.5, "max_memory": "8GB"}]),
}
WILD: dict[str, st.SearchStrategy[Any]] = {
    "command": st.one_of(HOSTILE, st.sampled_from([None, 5, b"echo", "", " \t\n", "\x1c"])),
    "name": st.one_of(HOSTILE, st.sampled_from([5, "", "x" * 129, "a" * 128])),
    "job_subdir": st.one_of(
        HOSTILE,
        st.sampled_from([5, Path("sub"), "..", ".", "/abs", "housekeeper.db", "housekeeper.db-wal",
                         "housekeeper.db-shm", "housekeeper.db-journal", ".housekeeper", "42"]),
    ),  # fmt: skip
    "nodes": NUMBER,
    "cpus": NUMBER,
    "gpus": NUMBER,
    "memory": st.one_of(
        HOSTILE, st.floats(), NUMBER,
        st.sampled_from(["9" * 400 + "TB", "99999999999999999999TB", "1e3GB", "0.0001K", "nanGB", "infGB",
                         "4 G B", "4GiB", "12", "1B", True, 4.5, 0, -1]),
    ),  # fmt: skip
    "walltime": st.one_of(
        HOSTILE, NUMBER,
        st.sampled_from(["99999999999-00:00:00", "9999999999999999999:00:00", "1-24:00:00", "-1-00:00",
                         dt.timedelta.max, dt.timedelta(microseconds=1), dt.timedelta(days=-1), 1.5, True, "0:0:1"]),
    ),  # fmt: skip
    "queue": st.one_of(HOSTILE, st.sampled_from([5, "", "-p", "debug\n#SBATCH --mem=1", "a" * 129])),
    "account": st.one_of(HOSTILE, st.sampled_from([5, "", "ana@site", "a b", "acc\rount"])),
    "expected_files": st.one_of(
        HOSTILE, st.lists(HOSTILE, max_size=3), st.sampled_from([5, [None], b"x", [""], [Path("p")], ["ok", 3]])
    ),
    "after_ok": st.sampled_from([1.5, "1", [True], [-1], [2**63], [10**30], [0], [PARENT, PARENT], b"\x01", {1: 2}]),
    "after_fail": st.sampled_from(["1", [1.0], [2**64], [PARENT, 999]]),
    "after_any": st.sampled_from(["1", [None], [-(2**70)], 2**70]),
    "max_retries": NUMBER,
    "env": st.one_of(
        st.dictionaries(
            st.one_of(ENV_KEY, HOSTILE, st.sampled_from(["HK_JOB_DIR", "HK_PYTHON", "HK_ATTEMPT", "hk_rc", "UID",
                                                          "BASHOPTS", "SHELLOPTS", "PPID", "_", "A1", 5])),
            st.one_of(HOSTILE, NUMBER, st.builds(Path, HOSTILE.filter(lambda s: "\0" not in s))),
            max_size=3,
        ),
        st.sampled_from([["A=1"], "A=1", 5]),
    ),  # fmt: skip
    "workdir": st.one_of(
        HOSTILE, st.sampled_from([WORKDIR, "/no/such/folder", "", 5, b"/tmp", "/etc/passwd", "/tmp\r", "x\0"])
    ),
    "retry_on": st.one_of(HOSTILE, st.sampled_from(["oom", [], 5, {"timeout": 1}, ["timeout", 3], b"timeout",
                                                    "cancelled_by_user", ["lost", "lost"]])),  # fmt: skip
    "escalate": st.one_of(
        HOSTILE,
        st.sampled_from([
            2, "yes", {"timeout": 1}, {"oom": float("inf")}, {"oom": float("nan")}, {"node_fail": "yes"},
            {"max_walltime": "99999999999-00:00:00"}, {"max_memory": "9" * 400 + "TB"}, {"max_memory": 10**30},
            {"walltime": 2}, {5: 2}, {"timeout": 1e308},
        ]),
        st.dictionaries(HOSTILE, NUMBER, max_size=2),
    ),  # fmt: skip
}
PARAMETERS = list(VALID)


@st.composite
def submit_calls(draw: st.DrawFn) -> tuple[dict[str, Any], set[str], str]:
    """Keyword arguments for submit(): a few parameters wild, the others valid or left out;
    plus the name of a hostile folder to use as `workdir`."""
    wild = set(draw(st.lists(st.sampled_from(PARAMETERS), min_size=1, max_size=3, unique=True)))
    kwargs: dict[str, Any] = {}
    for parameter in PARAMETERS:
        if parameter in wild:
            kwargs[parameter] = draw(WILD[parameter] | VALID[parameter])
        elif parameter == "command" or draw(st.booleans()):
            kwargs[parameter] = draw(VALID[parameter])
    folder = draw(RUNNABLE.map(_folder_name))
    return kwargs, wild, folder


def _folder_name(text: str) -> str:
    """A usable single folder name from hostile text (no '/', NUL or newline; short enough)."""
    name = text.replace("/", "_").replace("\n", "_").replace("\r", "_")
    while len(name.encode()) > 120:
        name = name[:-1]
    return name if name not in ("", ".", "..") else f"w{name}"


def _resolve(value: Any, parent: int, workdir: str) -> Any:
    if value is PARENT:
        return parent
    if value is WORKDIR:
        return workdir
    if isinstance(value, list):
        return [_resolve(item, parent, workdir) for item in value]
    return value


def tree(root: Path) -> dict[str, Any]:
    """Everything under root, symlinks not followed: kind, mode and contents (or link target)."""
    found: dict[str, Any] = {}
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = Path(folder, entry)
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def names(root: Path) -> set[str]:
    return {str(Path(folder, entry).relative_to(root)) for folder, dirs, files in os.walk(root) for entry in dirs + files}


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _mentions(error: InvalidArgumentError, given: Any) -> bool:
    message = str(error)
    forms = [given, error.value]
    if isinstance(given, (str, Path)):
        forms.append(str(given))
    return any(message.startswith(f"{error.parameter}={form!r}") for form in forms)


def _check_script(path: str, argv: list[str], kwargs: dict[str, Any], spec_workdir: str) -> None:
    """The batch script is UTF-8, bash parses it, and its #SBATCH header says exactly argv."""
    data = Path(path).read_bytes()
    text = data.decode("utf-8")  # strict: a job script is text
    check = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    lines = text.split("\n")
    header = []
    for line in lines[1:]:
        if not line.startswith("#SBATCH"):
            break
        header.append(line)
    body = lines[1 + len(header) :]
    assert not any(line.startswith("#SBATCH") for line in body)  # nothing injected below the header
    words = [w for line in header for w in sbatch_header_words(line)]
    options = argv[2:-1]
    assert words == options
    assert all(option.startswith("--") for option in options)
    assert len(header) == len(options)  # one option per line, none smuggled in
    option_names = [option.split("=", 1)[0] for option in options]
    assert len(option_names) == len(set(option_names))
    for option, parameter in (("--partition", "queue"), ("--account", "account")):
        value = kwargs.get(parameter)
        assert (f"{option}={value}" in options) == bool(value)
    assert f"--chdir={spec_workdir}" in options
    command = kwargs["command"]
    assert f"\nHK_COMMAND={shlex.quote(command)}\n" in text and '\n/bin/bash -c -- "$HK_COMMAND"\n' in text
    for key, value in (kwargs.get("env") or {}).items():
        assert f"\nexport {key}={shlex.quote(str(value))}\n" in text


@settings(max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.large_base_example,
    HealthCheck.data_too_large])  # fmt: skip
@given(call=submit_calls())
def test_every_submit_argument_is_accepted_or_refused_cleanly(tmp_path: Path, workdir: Path, call: Any) -> None:
    """A fresh jobs_dir per example, under a scripted SLURM: an accepted job's batch script and
    sbatch command are really rendered (header, argv) and checked."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    runner = FakeSlurm()
    hk = housekeeper(jobs_dir=root / "run", scheduler="slurm", runner=runner)
    try:
        _submit_and_check(hk, runner, root, call)
    finally:
        hk.close()


def _submit_and_check(hk: Any, runner: FakeSlurm, root: Path, call: Any) -> None:
    arguments, wild, folder_name = call
    jobs_dir = Path(hk.jobs_dir)
    hostile_dir = root / "wd" / folder_name
    hostile_dir.mkdir(parents=True)
    parent = hk.submit("true", name="parent", job_subdir="parent")
    hk.flush()
    kwargs = {key: _resolve(value, parent, str(hostile_dir)) for key, value in arguments.items()}
    before_rows, before_names, sent = rows(jobs_dir / "housekeeper.db"), names(jobs_dir), len(runner.sbatch)
    try:
        job = hk.submit(**kwargs)
    except InvalidArgumentError as error:
        event(f"refused: {error.parameter}")
        assert isinstance(error, ValueError) and isinstance(error, HousekeeperError)
        assert error.parameter in wild, (error.parameter, wild)
        assert _mentions(error, kwargs[error.parameter]), str(error)[:300]
        hk.flush()
        assert rows(jobs_dir / "housekeeper.db") == before_rows
        assert names(jobs_dir) == before_names
        assert len(runner.sbatch) == sent
        return
    event("accepted")
    assert isinstance(job, int) and job != parent
    assert hk.flush() == 1
    argv = runner.sbatch[-1]
    info = hk.job_info(job)
    assert info["command"] == kwargs["command"]
    assert info["env"] == {key: str(value) for key, value in (kwargs.get("env") or {}).items()}
    expected = kwargs.get("expected_files")
    expected = [] if expected is None else [expected] if isinstance(expected, (str, Path)) else list(expected)
    assert info["expected_files"] == [str(f) for f in expected]
    assert info["queue"] == (kwargs.get("queue") or None) and info["account"] == (kwargs.get("account") or None)
    folder = Path(info["job_dir"])
    assert folder.parent == jobs_dir and not folder.is_symlink()
    assert argv[-1] == info["script"] and Path(argv[-1]).parent == folder
    _check_script(argv[-1], argv, kwargs, info["workdir"])
    assert not os.path.exists(SENTINEL)


# --------------------------------------------------------------- the SLURM header, directly
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(queue=st.one_of(HOSTILE, VALID["queue"]), account=st.one_of(HOSTILE, VALID["account"]), name=st.one_of(NAME, HOSTILE))
def test_accepted_queue_and_account_cannot_inject_into_sbatch(queue: Any, account: Any, name: Any) -> None:
    try:
        spec = build_spec(command="true", name=name, job_subdir=None, nodes=1, cpus=1, gpus=0, memory="1GB",
                          walltime="00:10:00", queue=queue, account=account, expected_files=None, after_ok=None,
                          after_fail=None, after_any=None, max_retries=0, env=None, workdir=None)  # fmt: skip
    except InvalidArgumentError as error:
        assert error.parameter in ("queue", "account", "name")
        return  # refusing is always safe; what is accepted must be safe (below)
    request = SubmitRequest(script_path="/run/1/x.sh", name=spec.name, resources=spec.resources,
                            workdir="/work", stdout_path="/run/1/stdout.log", stderr_path="/run/1/stderr.log")  # fmt: skip
    dialect = SlurmDialect()
    header, argv = dialect.directives(request), dialect.submit_argv(request)
    assert all("\n" not in line and "\r" not in line and line.startswith("#SBATCH --") for line in header)
    assert [w for line in header for w in sbatch_header_words(line)] == argv[2:-1]
    assert len(header) == len(argv) - 3
    for option, value in (("--partition", queue), ("--account", account), ("--job-name", spec.name)):
        found = [o for o in argv if o.startswith(option + "=")]
        assert found == ([f"{option}={value}"] if value else [])
        if value:  # a value sbatch reads whole: no blank, quote, '#' or leading '-'
            assert not any(c in value for c in " \t\"'#\\$`;|&<>") and not value.startswith("-")


def test_bool_after_int_is_still_refused(workdir: Path) -> None:
    """memory=1 is 1 MB; memory=True must not be read as 1 through the parsers' caches."""
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    for parameter, good in (("memory", 1), ("walltime", 1)):
        hk.submit("true", name=f"good_{parameter}", **{parameter: good})
        with pytest.raises(InvalidArgumentError) as caught:
            hk.submit("true", **{parameter: True})
        assert caught.value.parameter == parameter
    hk.close()


@pytest.mark.parametrize("escalate", [{"timeout": 1e308}, {"oom": 1e300}, {"timeout": 101}, {"oom": float("nan")}])
def test_escalation_factors_that_would_overflow_the_request_are_refused(workdir: Path, escalate: Any) -> None:
    """walltime x 1e308 is inf: the retry after a timeout would crash the poll, so refuse it now."""
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    with pytest.raises(InvalidArgumentError) as caught:
        hk.submit("true", walltime=1, max_retries=1, escalate=escalate)
    assert caught.value.parameter == "escalate" and str(caught.value).startswith(f"escalate={escalate!r}")
    assert hk.submit("true", walltime=1, max_retries=1, escalate={"timeout": 100, "oom": 1.5}) == 1
    hk.close()


# ---------------------------------------------------------------- running hostile jobs
@st.composite
def runnable_jobs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "text": draw(RUNNABLE),
        "env": draw(st.dictionaries(ENV_KEY, RUNNABLE, max_size=3)),
        "name": draw(st.one_of(st.none(), NAME)),
        "subdir": draw(st.one_of(st.none(), SUBDIR)),
        "folder": draw(st.one_of(st.none(), RUNNABLE.map(_folder_name))),
        "expected": draw(st.one_of(st.none(), RUNNABLE.map(_folder_name))),
        "dash": draw(st.sampled_from(["", "--version >/dev/null 2>&1; ", "-x 2>/dev/null; ", "-n; "])),
    }


def _run_checks(hk: Any, jobs: list[dict[str, Any]], base: Path) -> None:
    submitted = []
    for index, job in enumerate(jobs):
        results = base / f"results{index}"
        results.mkdir()
        q = shlex.quote
        command = (
            f"{job['dash']}printf '%s' \"$BASH_EXECUTION_STRING\" > {q(str(results / 'command'))}; "
            f"printf '%s' {q(job['text'])} > {q(str(results / 'text'))}"
        )
        for number, key in enumerate(job["env"]):
            command += f"; printf '%s' \"${key}\" > {q(str(results / f'env{number}'))}"
        if job["expected"]:
            command += f"; : > {q(job['expected'])}"
        command += f"\n: {q(job['text'])}\n"
        workdir = None
        if job["folder"] is not None:
            workdir = base / f"wd{index}" / job["folder"]
            workdir.mkdir(parents=True)
        subdir = f"{job['subdir']}_{index}" if job["subdir"] else None
        job_id = hk.submit(command, name=job["name"], job_subdir=subdir, env=job["env"], walltime="00:02:00",
                           memory=None, expected_files=[job["expected"]] if job["expected"] else None,
                           workdir=workdir)  # fmt: skip
        submitted.append((job_id, command, results))
    statuses = hk.monitor(poll_interval=FAST, timeout=40)
    for (job_id, command, results), job in zip(submitted, jobs):
        info = hk.failure_info(job_id)
        assert statuses[job_id] is JobStatus.COMPLETED, (info, Path(hk.job_info(job_id)["stderr"]).read_text()[:500])
        assert (results / "command").read_bytes() == command.encode()
        assert (results / "text").read_bytes() == job["text"].encode()
        for number, value in enumerate(job["env"].values()):
            assert (results / f"env{number}").read_bytes() == value.encode()
        script = Path(hk.job_info(job_id)["script"])
        assert os.access(script, os.R_OK) and script.read_bytes().decode("utf-8")
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert not os.path.exists(SENTINEL)


@settings(max_examples=4, derandomize=True, database=None, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.large_base_example,
    HealthCheck.data_too_large])  # fmt: skip
@given(jobs=st.lists(runnable_jobs(), min_size=2, max_size=4))
def test_accepted_jobs_run_exactly_what_was_asked(tmp_path: Path, workdir: Path, jobs: list[dict[str, Any]]) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    hk = housekeeper(jobs_dir=base / "run", scheduler="local", local_slots=4)
    try:
        _run_checks(hk, jobs, base)
    finally:
        hk.close()


def test_hostile_values_that_must_run_exactly(workdir: Path, tmp_path: Path) -> None:
    """The worst cases by hand: every hostile atom at once, 10k strings, and a working directory
    whose name closes a quote and a brace (it must not break out of the script's `cd` line)."""
    everything = "".join(_RUNNABLE_ATOMS)
    jobs = [
        {"text": everything, "env": {"K_ALL": everything, "K_SUB": f"$(touch {SENTINEL})", "K_TICK": f"`touch {SENTINEL}`",
                                     "K_NL": "a\nb\r\n", "K_Q": "'\"'\"", "K_EMPTY": ""},
         "name": "hostile", "subdir": "hostile", "folder": f'x"; }}; touch {SENTINEL}; {{ "', "expected": "é 日本 🦀",
         "dash": "-x 2>/dev/null; "},
        {"text": "x" * 10_000, "env": {"K_LONG": "'" * 10_000}, "name": None, "subdir": None,
         "folder": "$(touch pwned)", "expected": "-rf", "dash": "--version >/dev/null 2>&1; "},
    ]  # fmt: skip
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="local", local_slots=4)
    try:
        _run_checks(hk, jobs, tmp_path)
    finally:
        hk.close()
    assert not list(tmp_path.rglob("pwned"))


# ------------------------------------------------------ nothing outside jobs_dir, symlinks
@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A folder outside jobs_dir that nothing may touch, shaped like a job folder."""
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep me\n")
    (folder / "stdout.log").write_text("outside stdout\n")
    (folder / "stderr.log").write_text("outside stderr\n")
    (folder / "status.json").write_text('{"outside": true}\n')
    (folder / "job.sh").write_text("echo outside\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.txt").write_text("deep\n")
    return folder


@pytest.fixture
def hk(workdir: Path) -> Iterator[Any]:
    """The local backend with a slot per test job (they only echo), so they run side by side."""
    keeper = housekeeper(jobs_dir=workdir / "run", scheduler="local", local_slots=8)
    yield keeper
    keeper.close()


def _finish(hk: Any, commands: dict[str, str]) -> dict[str, int]:
    """Run one job per {job_subdir: command} to its end, all at once."""
    jobs = {subdir: hk.submit(command, name="job", job_subdir=subdir) for subdir, command in commands.items()}
    statuses = hk.monitor(list(jobs.values()), poll_interval=FAST, timeout=30)
    assert all(status.is_terminal for status in statuses.values())
    return jobs


PLANTED = ["stdout.log", "stderr.log", "status.json", "running.json", "linked_dir", "deep/link"]


def test_cleanup_deletes_links_never_what_they_point_to(hk: Any, canary: Path) -> None:
    """The job folder itself a link outside, or links inside it (logs, exit record, folders):
    cleanup removes at most the links; the canary folder stays byte for byte."""
    jobs = _finish(hk, {"whole": "echo hi", **{f"p{i}": "echo hi" for i in range(len(PLANTED))}})
    jobs_dir = Path(hk.jobs_dir)
    snapshot = tree(canary)
    whole = jobs_dir / "whole"
    for child in whole.iterdir():
        child.unlink()
    whole.rmdir()
    whole.symlink_to(canary)
    for index, planted in enumerate(PLANTED):
        link = jobs_dir / f"p{index}" / planted
        link.parent.mkdir(exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(canary if planted.endswith(("dir", "link")) else canary / planted.replace("running", "status"))
    try:
        hk.cleanup(jobs["whole"])
    except HousekeeperError:
        pass  # refusing is fine too
    assert not whole.exists() or whole.is_symlink()
    others = [job for subdir, job in jobs.items() if subdir != "whole"]
    assert hk.cleanup(others) == others
    assert not any((jobs_dir / subdir).exists() for subdir in jobs if subdir != "whole")
    assert tree(canary) == snapshot


def test_retry_rotation_moves_links_never_their_targets(hk: Any, canary: Path) -> None:
    """A retry keeps the previous attempt's files as stdout.1.log etc. by renaming: a log or
    exit record that is a link outside is moved aside as a link; when the numbered name is
    taken by a link outside, nothing is renamed onto or through it."""
    rotated = ["stdout.log", "stderr.log", "status.json", "running.json"]
    commands = {f"r{i}": "echo attempt; exit 3" for i in range(len(rotated))} | {"taken": "echo attempt; exit 3"}
    jobs = _finish(hk, commands)
    jobs_dir = Path(hk.jobs_dir)
    snapshot = tree(canary)
    for index, planted in enumerate(rotated):
        link = jobs_dir / f"r{index}" / planted
        link.unlink(missing_ok=True)
        link.symlink_to(canary / planted.replace("running", "status"))
    taken = jobs_dir / "taken"
    for filename in ("stdout.1.log", "stderr.1.log", "status.1.json", "running.1.json"):
        (taken / filename).symlink_to(canary / "keep.txt")
    (taken / "stdout.2.log").symlink_to(canary / "no-such-file")  # dangling: must stay dangling
    hk.retry(list(jobs.values()))
    statuses = hk.monitor(list(jobs.values()), poll_interval=FAST, timeout=30)
    assert set(statuses.values()) == {JobStatus.FAILED}
    assert tree(canary) == snapshot
    assert not (canary / "no-such-file").exists()
    for index, planted in enumerate(rotated):
        folder = jobs_dir / f"r{index}"
        assert not (folder / "stdout.log").is_symlink() and (folder / "stdout.log").read_text() == "attempt\n"
        assert (folder / planted.replace(".", ".1.")).is_symlink()  # moved aside as it was
    assert all((taken / f).is_symlink() for f in ("stdout.1.log", "stderr.1.log", "status.1.json", "running.1.json"))


def test_retry_when_the_job_folder_became_a_link_outside(hk: Any, canary: Path) -> None:
    job = _finish(hk, {"job": "echo attempt; exit 3"})["job"]
    folder = Path(hk.jobs_dir) / "job"
    snapshot = tree(canary)
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.symlink_to(canary)
    refused: Exception | None = None
    try:
        hk.retry(job)
        hk.monitor([job], poll_interval=FAST, timeout=30)
    except (OSError, HousekeeperError) as error:
        refused = error
    assert tree(canary) == snapshot
    assert refused is not None and "symbolic link" in str(refused)  # loud: the job stays PENDING
    folder.unlink()  # the user puts things right; the job goes out as it should
    hk.flush()
    assert hk.monitor([job], poll_interval=FAST, timeout=30)[job] is JobStatus.FAILED
    assert tree(canary) == snapshot
    assert (folder / "stdout.1.log").exists() is False and (folder / "stdout.log").read_text() == "attempt\n"


@pytest.mark.parametrize("target", ["canary", "dangling", "file"])
def test_submit_into_a_subdir_that_is_a_link_or_a_file_is_refused(hk: Any, canary: Path, target: str) -> None:
    jobs_dir = Path(hk.jobs_dir)
    first = hk.submit("true", name="first", job_subdir="first")
    hk.monitor([first], poll_interval=FAST, timeout=30)  # its logs appear while it runs; let it end first
    link = jobs_dir / "sub"
    if target == "file":
        link.write_text("not a folder\n")
    else:
        link.symlink_to(canary if target == "canary" else canary / "nothing-here")
    snapshot, before, listing = tree(canary), rows(jobs_dir / "housekeeper.db"), names(jobs_dir)
    with pytest.raises(InvalidArgumentError) as caught:
        hk.submit("echo hi > out", name="job", job_subdir="sub")
    assert caught.value.parameter == "job_subdir" and "sub" in str(caught.value)
    hk.flush()
    assert rows(jobs_dir / "housekeeper.db") == before and names(jobs_dir) == listing
    assert tree(canary) == snapshot


def test_default_job_folder_planted_as_a_link_is_never_written_through(hk: Any, canary: Path) -> None:
    jobs_dir = Path(hk.jobs_dir)
    first = hk.submit("true", name="first")
    hk.monitor([first], poll_interval=FAST, timeout=30)
    link = jobs_dir / str(first + 1)  # the folder the next job will get
    link.symlink_to(canary)
    snapshot = tree(canary)
    job = hk.submit("echo hi", name="second")
    assert job == first + 1
    refused: Exception | None = None
    try:
        hk.monitor([job], poll_interval=FAST, timeout=30)
    except (OSError, HousekeeperError) as error:
        refused = error
    assert tree(canary) == snapshot
    assert refused is not None and "symbolic link" in str(refused)
    link.unlink()
    assert hk.monitor([job], poll_interval=FAST, timeout=30)[job] is JobStatus.COMPLETED
    assert (link / "stdout.log").read_text() == "hi\n" and not link.is_symlink()
    assert tree(canary) == snapshot


LOG_LINKS = {"stdout.log": "stdout.log", "stderr.log": "stderr.log", ".status.json.tmp": "status.json",
             ".running.json.tmp": "keep.txt"}  # fmt: skip


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_logs_planted_as_links_in_a_ready_made_folder_are_never_written_through(
    hk: Any, canary: Path, dangling: bool
) -> None:
    """A job folder made by hand (allowed) with its logs already there as links outside: the
    links are removed, the job writes its own files, the targets stay as they were (and a
    dangling link's target is never created). The same after a retry and for a re-run by hand."""
    jobs_dir = Path(hk.jobs_dir)
    folder = jobs_dir / "ready"
    folder.mkdir(parents=True)

    def plant() -> None:
        for name, target in LOG_LINKS.items():
            (folder / name).unlink(missing_ok=True)
            (folder / name).symlink_to(canary / ("missing-" + target if dangling else target))

    plant()
    snapshot = tree(canary)
    job = hk.submit("echo out; echo err >&2; exit 3", name="job", job_subdir="ready")
    assert hk.monitor([job], poll_interval=FAST, timeout=30)[job] is JobStatus.FAILED
    assert tree(canary) == snapshot
    assert (folder / "stdout.log").read_text() == "out\n" and not (folder / "stdout.log").is_symlink()
    assert (folder / "stderr.log").read_text() == "err\n"
    assert hk.job_info(job)["exit_code"] == 3
    plant()  # again, before a retry
    hk.retry(job)
    assert hk.monitor([job], poll_interval=FAST, timeout=30)[job] is JobStatus.FAILED
    assert tree(canary) == snapshot
    assert (folder / "stdout.log").read_text() == "out\n" and (folder / "stdout.1.log").is_symlink()
    plant()  # and before the script is run again by hand
    subprocess.run(["bash", str(folder / "job.sh")], check=False, capture_output=True, timeout=60)
    assert tree(canary) == snapshot
    assert (folder / "stdout.log").read_text() == "out\n"


@pytest.mark.parametrize("key", ["HK_JOB_DIR", "HK_PYTHON", "HK_ATTEMPT", "hk_rc"])
def test_env_cannot_redirect_the_batch_scripts_own_variables(hk: Any, canary: Path, key: str) -> None:
    """HK_JOB_DIR=<outside> would send the exit record outside jobs_dir (and HK_PYTHON would
    swap the finisher): such keys are refused, or at least nothing outside is written."""
    snapshot = tree(canary)
    try:
        job = hk.submit("echo hi", name="job", job_subdir="job", env={key: str(canary)})
    except InvalidArgumentError as error:
        assert error.parameter == "env" and key in str(error)
    else:
        hk.monitor([job], poll_interval=FAST, timeout=30)
    assert tree(canary) == snapshot


# --------------------------------------------------------------------------------- umask
UMASK_DRIVER = textwrap.dedent(
    """\
    import json, os, stat, sys
    os.umask(int(sys.argv[2], 8))
    from housekeeper import housekeeper
    hk = housekeeper(jobs_dir=sys.argv[1], scheduler=sys.argv[3])
    job = hk.submit("n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; echo out; [ $n -ge 1 ]",
                    name="flaky", job_subdir="flaky", max_retries=1, expected_files=["count"])
    other = hk.submit("echo plain", name="plain")
    result = hk.monitor(poll_interval=0.2, timeout=120)
    def walk():
        modes = {}
        for folder, dirs, files in os.walk(sys.argv[1]):
            for entry in dirs + files + ["."]:
                path = os.path.join(folder, entry)
                modes[os.path.relpath(path, sys.argv[1])] = stat.S_IMODE(os.lstat(path).st_mode)
        return modes
    open_modes = walk()  # the -wal and -shm files exist while the database is open
    hk.close()
    print(json.dumps({"status": {str(k): v.value for k, v in result.items()}, "open": open_modes, "closed": walk()}))
    """
)


def _umask_drivers(tmp_path: Path, scheduler: str, umasks: tuple[int, ...]) -> None:
    """Each umask in its own driver process (run side by side), so it leaks into nothing else."""
    drivers = {}
    for umask in umasks:
        work = tmp_path / oct(umask)
        work.mkdir()
        drivers[umask] = subprocess.Popen([sys.executable, "-c", UMASK_DRIVER, str(work / "run"), oct(umask), scheduler],
                                          cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for umask, driver in drivers.items():
        stdout, stderr = driver.communicate(timeout=180)
        assert driver.returncode == 0, stderr
        report = json.loads(stdout.strip().splitlines()[-1])
        assert set(report["status"].values()) == {"COMPLETED"}
        modes = {**report["closed"], **report["open"]}
        for expected in ("housekeeper.db", "housekeeper.db-wal", "housekeeper.db-shm", "flaky/flaky.sh",
                         "flaky/stdout.log", "flaky/stdout.1.log", "flaky/status.json", "2/plain.sh", "2/stdout.log",
                         *([".housekeeper/local/done"] if scheduler == "local" else [])):  # fmt: skip
            assert expected in modes, expected
        for path, mode in modes.items():
            assert not mode & umask, f"umask {oct(umask)}: {path} is {oct(mode)}"
            assert not mode & stat.S_IWOTH, f"umask {oct(umask)}: {path} is world-writable ({oct(mode)})"


def test_files_follow_the_umask_and_are_never_world_writable(tmp_path: Path) -> None:
    _umask_drivers(tmp_path, "local", (0o022, 0o077, 0o002, 0o000))


@pytest.mark.slurm
def test_files_follow_the_umask_and_are_never_world_writable_on_slurm(accounting: None, slurm: Path) -> None:
    """The same on SLURM: slurmd creates the logs, the job script the rest, with the umask the
    driver's sbatch passed on."""
    _umask_drivers(slurm, "slurm", (0o027, 0o000))
