"""The store: what it refuses, and what it keeps."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from housekeeper import housekeeper
from housekeeper.errors import StateError
from housekeeper.store import Store


def test_a_file_that_is_not_a_database_is_refused_and_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    db = run / "housekeeper.db"
    db.write_bytes(b"my thesis, chapter 3\n" * 100)
    with pytest.raises(StateError, match="not a SQLite database"):
        housekeeper(jobs_dir=run, scheduler="local")
    assert db.read_bytes() == b"my thesis, chapter 3\n" * 100  # never recreated over the user's file


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    with pytest.raises(StateError, match="some other program"):
        housekeeper(jobs_dir=tmp_path / "run", db_path=db, scheduler="local")
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["photos"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="local")
    hk.submit("true", name="a", job_subdir="a")
    hk.close()
    db = tmp_path / "run" / "housekeeper.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StateError, match="newer housekeeper"):
        Store(str(db))


def test_a_damaged_database_is_refused_not_replaced(tmp_path: Path) -> None:
    hk = housekeeper(jobs_dir=tmp_path / "run", scheduler="local")
    for i in range(200):
        hk.submit(f"echo {i}", name=f"j{i}", job_subdir=f"j{i}")
    hk._commit()
    hk.store.close()
    db = tmp_path / "run" / "housekeeper.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page
    db.write_bytes(bytes(data))
    with pytest.raises(StateError):
        housekeeper(jobs_dir=tmp_path / "run", scheduler="local")
    assert db.read_bytes() == bytes(data)


def test_wal_mode_and_integrity(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "h.db"))
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.integrity_ok()
