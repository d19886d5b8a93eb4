"""SQLite store in WAL mode: schema, migrations, batched writes, and the one gatekeeper
through which every change of a job's state passes."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from . import faults
from .errors import StateError
from .models import TERMINAL_NAMES

log = logging.getLogger("housekeeper")

SCHEMA_VERSION = 2
APP_ID = "housekeeper"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    job_subdir TEXT NOT NULL UNIQUE,
    dedup_key TEXT NOT NULL UNIQUE,
    workdir TEXT NOT NULL,
    nodes INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    memory_mb INTEGER,
    walltime_s INTEGER,
    queue TEXT,
    account TEXT,
    expected_files TEXT NOT NULL,
    env TEXT NOT NULL,
    max_retries INTEGER NOT NULL,
    has_deps INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    attempt INTEGER NOT NULL,
    scheduler_id TEXT,
    native_state TEXT,
    exit_code INTEGER,
    signal INTEGER,
    submission_id INTEGER,
    created_at REAL NOT NULL,
    submitted_at REAL,
    started_at REAL,
    ended_at REAL,
    missing_since REAL,
    updated_at REAL NOT NULL,
    retry_policy TEXT,
    exclude TEXT,
    retries_used INTEGER NOT NULL DEFAULT 0,
    free_retries_used INTEGER NOT NULL DEFAULT 0,
    elapsed_s REAL,
    cpu_time_s REAL,
    max_rss_mb REAL,
    nodelist TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_scheduler_id ON jobs(scheduler_id);
CREATE TABLE IF NOT EXISTS attempts (
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    scheduler_id TEXT,
    submission_id INTEGER,
    status TEXT NOT NULL,
    reason TEXT,
    native_state TEXT,
    exit_code INTEGER,
    signal INTEGER,
    submitted_at REAL,
    started_at REAL,
    ended_at REAL,
    detail TEXT,
    memory_mb INTEGER,
    walltime_s INTEGER,
    exclude TEXT,
    counted INTEGER,
    elapsed_s REAL,
    cpu_time_s REAL,
    max_rss_mb REAL,
    nodelist TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS deps (
    job_id INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (job_id, parent_id, kind)
);
CREATE INDEX IF NOT EXISTS deps_parent ON deps(parent_id);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS submissions (
    submission_id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    base_id TEXT,
    n_jobs INTEGER NOT NULL,
    script TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state);
CREATE TABLE IF NOT EXISTS aliases (alias_id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL);
"""

# Columns of `jobs` in insert order (everything a new job carries).
JOB_INSERT_COLUMNS = (
    "job_id", "name", "command", "job_subdir", "dedup_key", "workdir", "nodes", "cpus", "gpus",
    "memory_mb", "walltime_s", "queue", "account", "expected_files", "env", "max_retries",
    "has_deps", "status", "attempt", "created_at", "updated_at", "retry_policy",
)  # fmt: skip

# Schema 1 -> 2: retry policies, per-attempt requests and what each attempt used.
_MIGRATE_1_2 = (
    "ALTER TABLE jobs ADD COLUMN retry_policy TEXT",
    "ALTER TABLE jobs ADD COLUMN exclude TEXT",
    "ALTER TABLE jobs ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN free_retries_used INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN elapsed_s REAL",
    "ALTER TABLE jobs ADD COLUMN cpu_time_s REAL",
    "ALTER TABLE jobs ADD COLUMN max_rss_mb REAL",
    "ALTER TABLE jobs ADD COLUMN nodelist TEXT",
    "ALTER TABLE attempts ADD COLUMN memory_mb INTEGER",
    "ALTER TABLE attempts ADD COLUMN walltime_s INTEGER",
    "ALTER TABLE attempts ADD COLUMN exclude TEXT",
    "ALTER TABLE attempts ADD COLUMN counted INTEGER",
    "ALTER TABLE attempts ADD COLUMN elapsed_s REAL",
    "ALTER TABLE attempts ADD COLUMN cpu_time_s REAL",
    "ALTER TABLE attempts ADD COLUMN max_rss_mb REAL",
    "ALTER TABLE attempts ADD COLUMN nodelist TEXT",
    # Under schema 1 every attempt after the first used up one of max_retries.
    "UPDATE jobs SET retries_used = attempt - 1",
    "UPDATE attempts SET memory_mb = (SELECT memory_mb FROM jobs WHERE jobs.job_id = attempts.job_id),"
    " walltime_s = (SELECT walltime_s FROM jobs WHERE jobs.job_id = attempts.job_id)",
)

_RANK = {"PENDING": 0, "QUEUED": 1, "RUNNING": 2, "COMPLETED": 3, "FAILED": 3, "CANCELLED": 3}


class Update(msgspec.Struct, kw_only=True):
    """A change to one job's current attempt, as decided by a poll or a verdict."""

    job_id: int
    attempt: int
    status: str
    reason: str | None = None
    scheduler_id: str | None = None
    native_state: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    detail: dict[str, Any] | None = None
    note: str | None = None
    # what the attempt used, when the scheduler (or the local supervisor) says
    elapsed_s: float | None = None
    cpu_time_s: float | None = None
    max_rss_mb: float | None = None
    nodelist: str | None = None


class _ClaimLost(Exception):
    """Another process claimed some of the jobs first (rolls the claim back)."""


class Store:
    """One connection per process (and thread); short IMMEDIATE transactions; readers never block."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self._local = threading.local()
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        if not exists and not create:
            raise StateError(f"no housekeeper database at {path}")
        self._open_checked(exists)

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=60000")
        # Switching a new database to WAL needs it to itself for a moment: a second process
        # opening it at that instant gets "locked" at once, without the busy handler.
        for delay in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, None):
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or delay is None:
                    raise
                time.sleep(delay)
        if str(mode).lower() != "wal":
            log.warning("SQLite would not use WAL mode for %s (got %s)", self.path, mode)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _open_checked(self, exists: bool) -> None:
        try:
            if exists:
                with open(self.path, "rb") as handle:
                    if handle.read(16) != b"SQLite format 3\x00":
                        raise StateError(f"{self.path} is not a SQLite database; refusing to touch it")
            conn = self.conn
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if exists and tables and "meta" not in tables:
                raise StateError(f"{self.path} is a SQLite database of some other program; refusing to touch it")
            if "meta" in tables:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("app") != APP_ID:
                    raise StateError(f"{self.path} is not a housekeeper database; refusing to touch it")
                version = int(meta.get("schema_version", "0"))
                if version > SCHEMA_VERSION:
                    raise StateError(
                        f"{self.path} was written by a newer housekeeper (schema {version} > {SCHEMA_VERSION}); upgrade"
                    )
                if version < SCHEMA_VERSION:
                    self._migrate(version)
                if "aliases" not in tables:
                    with self.transaction() as cur:
                        cur.execute("CREATE TABLE IF NOT EXISTS aliases (alias_id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL)")
                return
            with self.transaction() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("app", APP_ID),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("next_job_id", "1"),
                        ("created_at", str(time.time())),
                    ],
                )
        except sqlite3.DatabaseError as exc:
            problem = storage_problem(exc) or (f"the file system is read-only ({exc})" if read_only_file_system(self.path) else None)
            if problem is not None:
                raise StateError(f"cannot open the housekeeper database {self.path}: {problem}") from exc
            raise StateError(f"{self.path} cannot be used as a housekeeper database: {exc}") from exc

    def _migrate(self, version: int) -> None:
        """Bring an older database up to SCHEMA_VERSION, one step per transaction; a process
        that finds the step already done by another skips it."""
        steps = {1: _MIGRATE_1_2}
        while version < SCHEMA_VERSION:
            if version not in steps:
                raise StateError(f"{self.path} has unknown schema version {version}")
            with self.transaction() as cur:
                now = int(cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
                if now == version:
                    for statement in steps[version]:
                        cur.execute(statement)
                    cur.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version + 1),))
                    log.info("housekeeper: upgraded %s from schema %d to %d", self.path, version, version + 1)
            version += 1

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT; a concurrent writer makes us wait (busy timeout), never fail."""
        conn = self.conn
        cur = conn.cursor()
        for delay in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, None):
            try:
                cur.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or delay is None:
                    problem = storage_problem(exc)
                    if problem is not None:
                        raise StateError(f"cannot write the housekeeper database {self.path}: {problem}") from exc
                    raise
                time.sleep(delay)
        try:
            yield cur
            faults.point("store.commit")
            conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite rolls back by itself on some errors (a full disk among them): a ROLLBACK
            # then would fail and hide the real error. A failed COMMIT is rolled back here.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            problem = storage_problem(exc)
            if problem is not None:
                raise StateError(f"cannot write the housekeeper database {self.path}: {problem}; nothing of "
                                 "this change was recorded, what was recorded before is intact") from exc
            raise
        faults.point("store.committed")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None
        # After ours: closing a file releases every POSIX lock this process holds on it,
        # the other SQLite library's included (see read_frame).
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
            self._local.reader = None

    # -- columnar reads -----------------------------------------------------------------
    def read_frame(self, select: str, rest: str, schema: dict[str, Any], order: Sequence[str]) -> Any:
        """``SELECT {select} {rest}`` as a polars frame with `schema` (its keys name the selected
        columns, in order), sorted by `order`.

        Columns go straight into Arrow through ADBC's SQLite driver, with no Python object per
        value (a million rows in about a second). That driver is a second copy of SQLite in this
        process, and closing a file drops every POSIX lock the process holds on it, the
        sqlite3 module's included; so its connection (read-only, autocommit: it holds no
        snapshot between reads) stays open as long as ours and is closed after ours. It
        infers each column's type from its first rows (a column NULL there and text later
        fails), so a typed first row leads the result and is dropped here."""
        import polars as pl

        reader = self._reader()
        if reader is None:
            rows = self.conn.execute(f"SELECT {select} {rest}").fetchall()
            frame = pl.DataFrame(rows, schema=list(schema.items()), orient="row")
            return frame.sort(list(order)) if order else frame
        typed = ", ".join(f"{_TYPED_ZERO[_kind(dtype)]} AS {name}" for name, dtype in schema.items())
        query = f"SELECT 0 AS _lead, {typed} UNION ALL SELECT 1 AS _lead, {select} {rest}"
        frame = pl.read_database(query, reader)
        frame = frame.filter(pl.col("_lead") == 1).select(
            pl.col(name).cast(dtype) for name, dtype in zip(schema, schema.values())
        )
        return frame.sort(list(order)) if order else frame

    def _reader(self) -> Any:
        if getattr(self._local, "reader_pid", None) != os.getpid():
            self._local.reader = None
            self._local.reader_pid = os.getpid()
            try:
                import adbc_driver_sqlite.dbapi as adbc
            except ImportError:
                return None
            self.conn  # noqa: B018 - ours first: it creates the database and its WAL files
            self._local.reader = adbc.connect(f"file:{self.path}?mode=ro", autocommit=True)
        return getattr(self._local, "reader", None)

    # -- ids and inserts --------------------------------------------------------------
    def reserve_ids(self, count: int) -> range:
        with self.transaction() as cur:
            first = int(cur.execute("SELECT value FROM meta WHERE key='next_job_id'").fetchone()[0])
            cur.execute("UPDATE meta SET value=? WHERE key='next_job_id'", (str(first + count),))
        return range(first, first + count)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def find_dedup(self, key: str) -> tuple[int, str] | None:
        row = self.conn.execute("SELECT job_id, command FROM jobs WHERE dedup_key=?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def existing_ids(self, ids: Iterable[int]) -> set[int]:
        """The ids that name a job (aliases included)."""
        wanted = list(set(ids))
        found: set[int] = set()
        for chunk in _chunks(wanted, 900):
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT job_id FROM jobs WHERE job_id IN ({marks})", chunk))
        return found | set(self.resolve(set(wanted) - found))

    def insert_jobs(self, rows: Sequence[tuple[Any, ...]], deps: Sequence[tuple[int, int, str]]) -> list[str]:
        """Insert new jobs (tuples in JOB_INSERT_COLUMNS order) and their dependencies in one
        transaction. A row whose dedup key another process recorded meanwhile (the same job
        submitted by two drivers at once) becomes an alias of that job, so the id handed out for
        it stays valid. Returns a message for each row that clashed with a different command."""
        if not rows:
            return []
        cols = ",".join(JOB_INSERT_COLUMNS)
        marks = ",".join("?" * len(JOB_INSERT_COLUMNS))
        key_i = JOB_INSERT_COLUMNS.index("dedup_key")
        command_i = JOB_INSERT_COLUMNS.index("command")
        clashes: list[str] = []
        with self.transaction() as cur:
            taken: dict[str, tuple[int, str]] = {}
            for chunk in _chunks([r[key_i] for r in rows], 900):
                marks_in = ",".join("?" * len(chunk))
                for key, job_id, command in cur.execute(
                    f"SELECT dedup_key, job_id, command FROM jobs WHERE dedup_key IN ({marks_in})", chunk
                ):
                    taken[key] = (job_id, command)
            aliases: dict[int, int] = {}
            if taken:
                fresh = []
                for row in rows:
                    hit = taken.get(row[key_i])
                    if hit is None:
                        fresh.append(row)
                        continue
                    aliases[row[0]] = hit[0]
                    if hit[1] != row[command_i]:
                        clashes.append(f"job {row[0]} ({row[key_i][4:]!r}) clashes with job {hit[0]}, recorded "
                                       f"meanwhile by another process with a different command; it is job {hit[0]}")
                rows = fresh
                cur.executemany("INSERT OR IGNORE INTO aliases(alias_id, job_id) VALUES (?, ?)", list(aliases.items()))
            cur.executemany(f"INSERT INTO jobs({cols}) VALUES ({marks})", rows)
            mem_i, wall_i = JOB_INSERT_COLUMNS.index("memory_mb"), JOB_INSERT_COLUMNS.index("walltime_s")
            cur.executemany(
                "INSERT INTO attempts(job_id, attempt, status, memory_mb, walltime_s, counted)"
                " VALUES (?, 1, 'PENDING', ?, ?, 0)",
                [(r[0], r[mem_i], r[wall_i]) for r in rows],
            )
            if deps:
                parents = list({parent for _, parent, _ in deps} - set(aliases))
                for chunk in _chunks(parents, 900):  # parents that are aliases recorded earlier
                    marks_in = ",".join("?" * len(chunk))
                    aliases.update(cur.execute(f"SELECT alias_id, job_id FROM aliases WHERE alias_id IN ({marks_in})", chunk))
                mapped = [(job, aliases.get(parent, parent), kind) for job, parent, kind in deps if job not in aliases]
                cur.executemany("INSERT OR IGNORE INTO deps(job_id, parent_id, kind) VALUES (?, ?, ?)", mapped)
        return clashes

    def resolve(self, ids: Iterable[int]) -> dict[int, int]:
        """Aliases among these ids, mapped to the jobs they stand for."""
        wanted = list(set(ids))
        found: dict[int, int] = {}
        for chunk in _chunks(wanted, 900):
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT alias_id, job_id FROM aliases WHERE alias_id IN ({marks})", chunk))
        return found

    # -- reading ----------------------------------------------------------------------
    def job(self, job_id: int) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row))

    def jobs_where(self, where: str = "1", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(f"SELECT * FROM jobs WHERE {where}", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def jobs_by_ids(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk in _chunks(list(ids), 900):
            out.extend(self.jobs_where(f"job_id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """{job_id: status}; past a few thousand ids one pass over the table beats IN lists."""
        if len(ids) > 5000:
            wanted = set(ids)
            return {j: s for j, s in self.conn.execute("SELECT job_id, status FROM jobs") if j in wanted}
        found: dict[int, str] = {}
        for chunk in _chunks(list(ids), 900):
            found.update(self.conn.execute(f"SELECT job_id, status FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})",
                                           chunk))  # fmt: skip
        return found

    def has_aliases(self) -> bool:
        return self.conn.execute("SELECT 1 FROM aliases LIMIT 1").fetchone() is not None

    def attempts(self, job_id: int) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM attempts WHERE job_id=? ORDER BY attempt", (job_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def events(self, job_id: int) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM events WHERE job_id=? ORDER BY event_id", (job_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def parents(self, job_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
        out: dict[int, list[tuple[int, str]]] = {}
        for chunk in _chunks(list(job_ids), 900):
            marks = ",".join("?" * len(chunk))
            for job_id, parent_id, kind in self.conn.execute(
                f"SELECT job_id, parent_id, kind FROM deps WHERE job_id IN ({marks})", chunk
            ):
                out.setdefault(job_id, []).append((parent_id, kind))
        return out

    def children(self, job_id: int) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT job_id FROM deps WHERE parent_id=?", (job_id,))]

    def children_in_state(self, parent_ids: Sequence[int], status: str) -> list[dict[str, Any]]:
        """Jobs in `status` that depend on any of these jobs."""
        out: list[dict[str, Any]] = []
        for chunk in _chunks(list(parent_ids), 900):
            marks = ",".join("?" * len(chunk))
            out.extend(self.jobs_where(
                f"status=? AND job_id IN (SELECT job_id FROM deps WHERE parent_id IN ({marks}))", [status, *chunk]
            ))  # fmt: skip
        return out

    def status_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())

    def submissions_in_state(self, state: str) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM submissions WHERE state=?", (state,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    # -- submissions (exactly once) ---------------------------------------------------
    def claim(self, job_attempts: Sequence[tuple[int, int]], token: str, owner: str, script: str) -> int | None:
        """Mark these (job, attempt) pairs as being submitted by us; None if another process got there first."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO submissions(token, owner, created_at, state, n_jobs, script) VALUES (?,?,?,?,?,?)",
                (token, owner, time.time(), "claimed", len(job_attempts), script),
            )
            submission_id = int(cur.lastrowid or 0)
            if _UPDATE_FROM and len(job_attempts) > _BULK:
                _stage(cur, "staged_pairs", "job_id INTEGER PRIMARY KEY, attempt INTEGER", job_attempts)
                cur.execute(
                    "UPDATE jobs SET submission_id=? FROM staged_pairs s WHERE jobs.job_id=s.job_id"
                    " AND jobs.attempt=s.attempt AND jobs.status='PENDING' AND jobs.submission_id IS NULL",
                    (submission_id,),
                )
            else:
                cur.executemany(
                    "UPDATE jobs SET submission_id=? WHERE job_id=? AND attempt=? AND status='PENDING'"
                    " AND submission_id IS NULL",
                    [(submission_id, j, a) for j, a in job_attempts],
                )
            if cur.rowcount != len(job_attempts):
                raise _ClaimLost
        return submission_id

    def try_claim(self, job_attempts: Sequence[tuple[int, int]], token: str, owner: str, script: str) -> int | None:
        try:
            return self.claim(job_attempts, token, owner, script)
        except _ClaimLost:
            return None

    def pending_rows(self) -> list[sqlite3.Row]:
        """PENDING jobs nobody is submitting, oldest first (rows readable by column name)."""
        cur = self.conn.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(
            "SELECT job_id, attempt, has_deps, name, command, job_subdir, workdir, nodes, cpus, gpus, memory_mb,"
            " walltime_s, queue, account, exclude, env, expected_files FROM jobs"
            " WHERE status='PENDING' AND submission_id IS NULL ORDER BY job_id"
        ).fetchall()

    def release_claim(self, submission_id: int, error: str | None = None) -> None:
        """Give the jobs of a claim back (nothing reached the scheduler)."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET submission_id=NULL WHERE submission_id=? AND status='PENDING'", (submission_id,)
            )
            cur.execute("UPDATE attempts SET submission_id=NULL WHERE submission_id=?", (submission_id,))
            cur.execute("UPDATE submissions SET state='released', error=? WHERE submission_id=?", (error, submission_id))

    def record_submitted(
        self, submission_id: int, base_id: str, assigned: Sequence[tuple[int, int, str]], at: float
    ) -> None:
        """The scheduler accepted the claim: jobs move to QUEUED with their scheduler ids."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE submissions SET state='submitted', base_id=? WHERE submission_id=?", (base_id, submission_id)
            )
            if _UPDATE_FROM and len(assigned) > _BULK:
                _stage(cur, "staged_ids", "job_id INTEGER PRIMARY KEY, attempt INTEGER, sid TEXT", assigned)
                cur.execute(
                    "UPDATE jobs SET status='QUEUED', scheduler_id=s.sid, submitted_at=?, updated_at=?,"
                    " missing_since=NULL FROM staged_ids s WHERE jobs.job_id=s.job_id AND jobs.attempt=s.attempt"
                    " AND jobs.status='PENDING'", (at, at),
                )  # fmt: skip
                cur.execute(
                    "UPDATE attempts SET status='QUEUED', scheduler_id=s.sid, submitted_at=?, submission_id=?"
                    " FROM staged_ids s WHERE attempts.job_id=s.job_id AND attempts.attempt=s.attempt",
                    (at, submission_id),
                )
                cur.execute("DELETE FROM staged_ids")
                return
            cur.executemany(
                "UPDATE jobs SET status='QUEUED', scheduler_id=?, submitted_at=?, updated_at=?, missing_since=NULL"
                " WHERE job_id=? AND attempt=? AND status='PENDING'",
                [(sid, at, at, j, a) for j, a, sid in assigned],
            )
            cur.executemany(
                "UPDATE attempts SET status='QUEUED', scheduler_id=?, submitted_at=?, submission_id=?"
                " WHERE job_id=? AND attempt=?",
                [(sid, at, submission_id, j, a) for j, a, sid in assigned],
            )

    # -- the gatekeeper ---------------------------------------------------------------
    def apply(self, updates: Sequence[Update]) -> list[Update]:
        """Apply state changes in one transaction; refuses moves backwards, changes of a finished
        job and updates for an attempt that is no longer current. Returns the updates applied."""
        if not updates:
            return []
        applied: list[Update] = []
        now = time.time()
        with self.transaction() as cur:
            current: dict[int, tuple[str, int]] = {}
            ids = list({u.job_id for u in updates})
            for chunk in _chunks(ids, 900):
                marks = ",".join("?" * len(chunk))
                for job_id, status, attempt in cur.execute(
                    f"SELECT job_id, status, attempt FROM jobs WHERE job_id IN ({marks})", chunk
                ):
                    current[job_id] = (status, attempt)
            for update in updates:
                state = current.get(update.job_id)
                if state is None or state[1] != update.attempt:
                    continue
                old_status = state[0]
                if old_status in TERMINAL_NAMES or _RANK[update.status] < _RANK[old_status]:
                    continue
                if update.status == old_status and update.status not in TERMINAL_NAMES:
                    if update.started_at is None and update.scheduler_id is None:
                        continue
                applied.append(update)
                current[update.job_id] = (update.status, update.attempt)
            job_rows = [
                (
                    u.status, u.reason, u.scheduler_id, u.native_state, u.exit_code, u.signal,
                    u.started_at, u.ended_at, now, u.elapsed_s, u.cpu_time_s, u.max_rss_mb, u.nodelist,
                    u.job_id, u.attempt,
                )  # fmt: skip
                for u in applied
            ]
            cur.executemany(
                "UPDATE jobs SET status=?, reason=?, scheduler_id=COALESCE(?, scheduler_id),"
                " native_state=COALESCE(?, native_state), exit_code=?, signal=?,"
                " started_at=COALESCE(?, started_at), ended_at=COALESCE(?, ended_at), updated_at=?,"
                " elapsed_s=COALESCE(?, elapsed_s), cpu_time_s=COALESCE(?, cpu_time_s),"
                " max_rss_mb=COALESCE(?, max_rss_mb), nodelist=COALESCE(?, nodelist),"
                " missing_since=NULL WHERE job_id=? AND attempt=?",
                job_rows,
            )
            cur.executemany(
                "UPDATE attempts SET status=?, reason=?, scheduler_id=COALESCE(?, scheduler_id),"
                " native_state=COALESCE(?, native_state), exit_code=?, signal=?,"
                " started_at=COALESCE(?, started_at), ended_at=COALESCE(?, ended_at), detail=COALESCE(?, detail),"
                " elapsed_s=COALESCE(?, elapsed_s), cpu_time_s=COALESCE(?, cpu_time_s),"
                " max_rss_mb=COALESCE(?, max_rss_mb), nodelist=COALESCE(?, nodelist)"
                " WHERE job_id=? AND attempt=?",
                [
                    (
                        u.status, u.reason, u.scheduler_id, u.native_state, u.exit_code, u.signal,
                        u.started_at, u.ended_at, json.dumps(u.detail) if u.detail is not None else None,
                        u.elapsed_s, u.cpu_time_s, u.max_rss_mb, u.nodelist, u.job_id, u.attempt,
                    )  # fmt: skip
                    for u in applied
                ],
            )
            # Routine moves (QUEUED, RUNNING) are in the attempts' timestamps; events keep what
            # is worth a line in a job's history: how it ended, and anything with a note.
            cur.executemany(
                "INSERT INTO events(job_id, attempt, at, status, reason, note) VALUES (?,?,?,?,?,?)",
                [(u.job_id, u.attempt, now, u.status, u.reason, u.note) for u in applied
                 if u.status in TERMINAL_NAMES or u.note],
            )  # fmt: skip
        return applied

    def apply_moves(self, moves: Sequence[tuple[int, int, str, str | None, float | None]]) -> int:
        """Routine moves in bulk: (job_id, attempt, QUEUED or RUNNING, native state, started at).
        The same guards as apply (current attempt, not finished, never RUNNING back to QUEUED),
        checked in SQL; returns how many jobs moved."""
        if not moves:
            return 0
        now = time.time()
        with self.transaction() as cur:
            _stage(cur, "moves", "job_id INTEGER PRIMARY KEY, attempt INTEGER, status TEXT, native_state TEXT,"
                   " started_at REAL", moves)  # fmt: skip
            cur.execute(
                "DELETE FROM moves WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id=moves.job_id"
                " AND j.attempt=moves.attempt AND j.status IN ('QUEUED', 'RUNNING')"
                " AND NOT (j.status='RUNNING' AND moves.status='QUEUED')"
                " AND NOT (j.status=moves.status AND (moves.started_at IS NULL OR j.started_at IS NOT NULL)))"
            )
            moved = int(cur.execute("SELECT count(*) FROM moves").fetchone()[0])
            if _UPDATE_FROM:
                cur.execute(
                    "UPDATE jobs SET status=m.status, native_state=COALESCE(m.native_state, jobs.native_state),"
                    " started_at=COALESCE(m.started_at, jobs.started_at), updated_at=?, missing_since=NULL"
                    " FROM moves m WHERE jobs.job_id=m.job_id", (now,)
                )  # fmt: skip
                cur.execute(
                    "UPDATE attempts SET status=m.status, native_state=COALESCE(m.native_state, attempts.native_state),"
                    " started_at=COALESCE(m.started_at, attempts.started_at)"
                    " FROM moves m WHERE attempts.job_id=m.job_id AND attempts.attempt=m.attempt"
                )  # fmt: skip
            else:  # SQLite before 3.33 (e.g. RHEL 8's 3.26): one statement per job
                rows = cur.execute("SELECT status, native_state, started_at, job_id, attempt FROM moves").fetchall()
                cur.executemany(
                    "UPDATE jobs SET status=?, native_state=COALESCE(?, native_state), started_at=COALESCE(?, started_at),"
                    f" updated_at={now!r}, missing_since=NULL WHERE job_id=? AND attempt=?", rows
                )  # fmt: skip
                cur.executemany(
                    "UPDATE attempts SET status=?, native_state=COALESCE(?, native_state),"
                    " started_at=COALESCE(?, started_at) WHERE job_id=? AND attempt=?", rows
                )  # fmt: skip
            cur.execute("DELETE FROM moves")
        return moved

    def add_events(self, events: Sequence[tuple[int, int, str]]) -> None:
        """Lines in jobs' histories that change no state: (job_id, attempt, note)."""
        now = time.time()
        with self.transaction() as cur:
            cur.executemany(
                "INSERT INTO events(job_id, attempt, at, status, reason, note)"
                " SELECT job_id, attempt, ?, status, NULL, ? FROM jobs WHERE job_id=? AND attempt=?",
                [(now, note, job_id, attempt) for job_id, attempt, note in events],
            )

    def record_usage(self, usage: Sequence[Update]) -> None:
        """What finished attempts used, learnt after their verdict (accounting lags behind the
        queue): usage columns only, never a status."""
        rows = [(u.elapsed_s, u.cpu_time_s, u.max_rss_mb, u.nodelist, u.job_id, u.attempt) for u in usage]
        with self.transaction() as cur:
            for table in ("jobs", "attempts"):
                cur.executemany(
                    f"UPDATE {table} SET elapsed_s=COALESCE(?, elapsed_s), cpu_time_s=COALESCE(?, cpu_time_s),"
                    " max_rss_mb=COALESCE(?, max_rss_mb), nodelist=COALESCE(?, nodelist) WHERE job_id=? AND attempt=?",
                    rows,
                )

    def mark_missing(self, job_ids: Sequence[int], at: float) -> None:
        """Remember when an active job was first not found anywhere (for `lost`)."""
        with self.transaction() as cur:
            cur.executemany(
                "UPDATE jobs SET missing_since=? WHERE job_id=? AND missing_since IS NULL", [(at, j) for j in job_ids]
            )

    def new_attempt(
        self,
        job_id: int,
        from_attempt: int,
        note: str,
        *,
        kind: str = "manual",
        memory_mb: int | None = None,
        walltime_s: int | None = None,
        exclude: str | None = None,
    ) -> bool:
        """FAILED/CANCELLED attempt N -> PENDING attempt N+1, exactly once across processes.

        kind: 'retry' (uses one of max_retries), 'free' (after preemption or node failure;
        uses the free budget) or 'manual' (by hand; uses neither). memory_mb / walltime_s /
        exclude: the new attempt's request where it changes (escalation)."""
        if kind not in ("retry", "free", "manual"):
            raise ValueError(f"kind={kind!r}: must be 'retry', 'free' or 'manual'")
        now = time.time()
        with self.transaction() as cur:
            cur.execute(
                "UPDATE jobs SET status='PENDING', reason=NULL, attempt=attempt+1, scheduler_id=NULL,"
                " native_state=NULL, exit_code=NULL, signal=NULL, submission_id=NULL, submitted_at=NULL,"
                " started_at=NULL, ended_at=NULL, missing_since=NULL, updated_at=?, elapsed_s=NULL,"
                " cpu_time_s=NULL, max_rss_mb=NULL, nodelist=NULL, memory_mb=COALESCE(?, memory_mb),"
                " walltime_s=COALESCE(?, walltime_s), exclude=COALESCE(?, exclude),"
                " retries_used=retries_used+?, free_retries_used=free_retries_used+?"
                " WHERE job_id=? AND attempt=? AND status IN ('FAILED', 'CANCELLED')",
                (now, memory_mb, walltime_s, exclude, int(kind == "retry"), int(kind == "free"), job_id, from_attempt),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(
                "INSERT INTO attempts(job_id, attempt, status, memory_mb, walltime_s, exclude, counted)"
                " SELECT job_id, attempt, 'PENDING', memory_mb, walltime_s, exclude, ? FROM jobs WHERE job_id=?",
                (int(kind == "retry"), job_id),
            )
            cur.execute(
                "INSERT INTO events(job_id, attempt, at, status, note) VALUES (?,?,?,'PENDING',?)",
                (job_id, from_attempt + 1, now, note),
            )
        return True

    def withdraw(self, jobs: Sequence[tuple[int, int]], note: str) -> list[int]:
        """QUEUED jobs taken back out of the scheduler (already cancelled there) -> PENDING,
        same attempt, to be sent again; e.g. children whose native dependency pointed at a
        parent attempt that is being replaced. Returns the job ids withdrawn."""
        now = time.time()
        done: list[int] = []
        with self.transaction() as cur:
            for job_id, attempt in jobs:
                cur.execute(
                    "UPDATE jobs SET status='PENDING', scheduler_id=NULL, native_state=NULL, submission_id=NULL,"
                    " submitted_at=NULL, missing_since=NULL, updated_at=? WHERE job_id=? AND attempt=?"
                    " AND status='QUEUED'",
                    (now, job_id, attempt),
                )
                if cur.rowcount != 1:
                    continue
                cur.execute(
                    "UPDATE attempts SET status='PENDING', scheduler_id=NULL, submission_id=NULL, submitted_at=NULL,"
                    " native_state=NULL WHERE job_id=? AND attempt=?",
                    (job_id, attempt),
                )
                cur.execute(
                    "INSERT INTO events(job_id, attempt, at, status, note) VALUES (?,?,?,'PENDING',?)",
                    (job_id, attempt, now, note),
                )
                done.append(job_id)
        return done

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the disk under a failed write, in words a user can act on; None when
    the error is not about the disk."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text:
            return f"the disk is full ({text})"
        if "readonly" in text or "read-only" in text:
            return f"it is read-only ({text})"
        if "disk I/O error" in text:
            return f"the disk failed ({text})"
        return None
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return _DISK_ERRNOS[exc.errno]
    return None


def read_only_file_system(path: str) -> bool:
    """Is the file system holding this file (or the folder it would be in) mounted read-only?"""
    try:
        return bool(os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk failed (input/output error)",
}


_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
_BULK = 200  # rows past which a change goes through a staging table (one UPDATE ... FROM)


def _stage(cur: sqlite3.Cursor, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    """`rows` into a connection-private TEMP table (emptied first), for set-based updates."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table}({columns})")
    cur.execute(f"DELETE FROM {table}")
    if rows:
        marks = ",".join("?" * len(rows[0]))
        cur.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
_TYPED_ZERO = {"int": "0", "float": "0.0", "text": "''"}


def _kind(dtype: Any) -> str:
    import polars as pl

    if dtype.is_integer() or dtype == pl.Boolean:
        return "int"
    if dtype.is_float():
        return "float"
    return "text"


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
