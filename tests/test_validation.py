"""Bad input is refused with the parameter named, and nothing is written."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from housekeeper import housekeeper
from housekeeper.errors import HousekeeperError, InvalidArgumentError
from housekeeper.spec import parse_memory, parse_walltime

from .conftest import db_rows, job_folders

BAD_SUBMITS: list[tuple[dict[str, Any], str]] = [
    ({"command": ""}, "command"),
    ({"command": "   "}, "command"),
    ({"command": None}, "command"),
    ({"command": "echo \0"}, "command"),
    ({"name": "../escape"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": "semi;colon"}, "name"),
    ({"name": "$(reboot)"}, "name"),
    ({"name": "new\nline"}, "name"),
    ({"name": "-rf"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 200}, "name"),
    ({"job_subdir": "../outside"}, "job_subdir"),
    ({"job_subdir": "/abs/path"}, "job_subdir"),
    ({"job_subdir": "a/b"}, "job_subdir"),
    ({"job_subdir": ".."}, "job_subdir"),
    ({"job_subdir": ".hidden"}, "job_subdir"),
    ({"job_subdir": "42"}, "job_subdir"),
    ({"job_subdir": "sp ace"}, "job_subdir"),
    ({"job_subdir": "`id`"}, "job_subdir"),
    ({"nodes": 0}, "nodes"),
    ({"nodes": -1}, "nodes"),
    ({"nodes": 1.5}, "nodes"),
    ({"nodes": True}, "nodes"),
    ({"cpus": 0}, "cpus"),
    ({"cpus": "8"}, "cpus"),
    ({"gpus": -1}, "gpus"),
    ({"memory": "lots"}, "memory"),
    ({"memory": "32XB"}, "memory"),
    ({"memory": "-4GB"}, "memory"),
    ({"memory": 0}, "memory"),
    ({"memory": "0GB"}, "memory"),
    ({"memory": 4.5}, "memory"),
    ({"walltime": "1 hour"}, "walltime"),
    ({"walltime": "01:61:00"}, "walltime"),
    ({"walltime": "00:00:00"}, "walltime"),
    ({"walltime": -5}, "walltime"),
    ({"walltime": "1:2:3:4"}, "walltime"),
    ({"walltime": dt.timedelta(seconds=0)}, "walltime"),
    ({"queue": "debug; rm -rf /"}, "queue"),
    ({"queue": "--partition=x"}, "queue"),
    ({"account": "acc\nount"}, "account"),
    ({"account": "$(id)"}, "account"),
    ({"expected_files": [None]}, "expected_files"),
    ({"expected_files": [""]}, "expected_files"),
    ({"expected_files": 5}, "expected_files"),
    ({"after_ok": [12345]}, "after_ok"),
    ({"after_fail": ["1"]}, "after_fail"),
    ({"after_any": "1"}, "after_any"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 1.0}, "max_retries"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"env": {"A-B": "x"}}, "env"),
    ({"env": {"OK": None}}, "env"),
    ({"env": {"OK": "nul\0byte"}}, "env"),
    ({"env": ["A=1"]}, "env"),
    ({"workdir": "/no/such/folder"}, "workdir"),
]


@pytest.mark.parametrize(("kwargs", "parameter"), BAD_SUBMITS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_SUBMITS)])
def test_bad_submit_is_refused_and_writes_nothing(workdir: Path, kwargs: dict[str, Any], parameter: str) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    arguments = {"command": "echo hi", "name": "ok"} | kwargs
    with pytest.raises(InvalidArgumentError) as caught:
        hk.submit(**arguments)
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, HousekeeperError)
    assert error.parameter == parameter
    assert str(error).startswith(f"{parameter}=")
    hk.close()
    assert db_rows(workdir / "run") == 0
    assert job_folders(workdir / "run") == []


BAD_CONSTRUCTORS: list[tuple[dict[str, Any], str]] = [
    ({"scheduler": "sge"}, "scheduler"),
    ({"error_whitelist": "WARN"}, "error_whitelist"),
    ({"error_whitelist": ["ok", ""]}, "error_whitelist"),
    ({"error_whitelist": [3]}, "error_whitelist"),
    ({"whitelist_threshold": 0}, "whitelist_threshold"),
    ({"whitelist_threshold": 2.5}, "whitelist_threshold"),
    ({"error_patterns": []}, "error_patterns"),
    ({"error_patterns": [""]}, "error_patterns"),
    ({"max_queued": 0}, "max_queued"),
    ({"file_grace": -1}, "file_grace"),
]


@pytest.mark.parametrize(("kwargs", "parameter"), BAD_CONSTRUCTORS)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        housekeeper(jobs_dir=tmp_path / "run", **kwargs)
    assert caught.value.parameter == parameter
    assert not (tmp_path / "run").exists()


def test_bad_arguments_to_methods(workdir: Path) -> None:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    for call, parameter in (
        (lambda: hk.track("1"), "job_id"),
        (lambda: hk.monitor([1]), "job_ids"),
        (lambda: hk.monitor(poll_interval=0), "poll_interval"),
        (lambda: hk.list_jobs(status="finished"), "status"),
        (lambda: hk.export_state("state.txt"), "path"),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        assert caught.value.parameter == parameter
    with pytest.raises(KeyError, match="job_id=7"):
        hk.job_info(7)
    hk.close()


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [("32GB", 32768), ("500MB", 500), ("1.5TB", 1572864), ("4G", 4096), ("512K", 1), ("4GiB", 4096),
     (2048, 2048), ("8 gb", 8192), ("1024KB", 1)],
)  # fmt: skip
def test_memory_units(text: Any, megabytes: int) -> None:
    assert parse_memory(text) == megabytes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("01:00:00", 3600), ("1-00:00:00", 86400), ("2-03:04:05", 183845), ("05:30", 330), (90, 5400),
     (dt.timedelta(hours=2), 7200), ("1-12", 129600), ("48:00:00", 172800)],
)  # fmt: skip
def test_walltime_forms(text: Any, seconds: int) -> None:
    assert parse_walltime(text) == seconds
