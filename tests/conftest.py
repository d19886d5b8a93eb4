"""Shared fixtures. Tests that need the live SLURM cluster are marked `slurm` (see tests/cluster/)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from housekeeper import housekeeper


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory the driver (and so the jobs) run in."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def local_hk(workdir: Path) -> Iterator[housekeeper]:
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local")
    yield hk
    hk.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def db_rows(jobs_dir: Path) -> int:
    import sqlite3

    db = jobs_dir / "housekeeper.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def job_folders(jobs_dir: Path) -> list[str]:
    if not jobs_dir.exists():
        return []
    return sorted(p.name for p in jobs_dir.iterdir() if p.is_dir() and p.name != ".housekeeper")


os.environ.setdefault("HOUSEKEEPER_TEST", "1")
