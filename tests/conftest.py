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
    # file_grace=2: jobs that are meant to miss their expected files wait 2 s for them, not 30
    hk = housekeeper(jobs_dir=workdir / "run", scheduler="local", file_grace=2)
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


# ---------------------------------------------------------------- the live SLURM cluster
CLUSTER_DIR = Path(__file__).parent / "cluster"
SLURM_DIR = Path(os.environ.get("HK_SLURM_DIR", "/tmp/hk-slurm"))


def _slurm_problem() -> str | None:
    """Why the live cluster can't be used here, or None when it answers."""
    import shutil
    import subprocess

    if not os.environ.get("SLURM_CONF") and (SLURM_DIR / "slurm.conf").exists():
        os.environ["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    if shutil.which("squeue") is None:
        return "no SLURM client commands on this machine (run: bash tests/cluster/slurm-up.sh as root)"
    try:
        proc = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "squeue did not answer within 30 s"
    if proc.returncode != 0:
        return f"squeue failed: {proc.stderr.strip()} (bring the cluster up: bash tests/cluster/slurm-up.sh)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Path:
    problem = _slurm_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the live SLURM tests must run in CI, but {problem}")
        pytest.skip(problem)
    return SLURM_DIR


def cluster_script(*args: str, env: dict[str, str] | None = None) -> None:
    """Run slurm-up.sh with these arguments (and extra environment, e.g. HK_SLURM_CPUS)."""
    import subprocess

    proc = subprocess.run(["bash", str(CLUSTER_DIR / "slurm-up.sh"), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"slurm-up.sh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def clean_queue(under: Path) -> None:
    """Cancel the jobs that tests started from folders under `under` (and only those), so that
    nothing stuck blocks the next test and nobody else's jobs are touched."""
    import subprocess
    import time

    def ours() -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%A|%Z"], capture_output=True, text=True, timeout=60).stdout
        prefix = str(under)
        return [line.split("|", 1)[0] for line in out.splitlines()
                if "|" in line and line.split("|", 1)[1].startswith(prefix)]  # fmt: skip

    ids = ours()
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    deadline = time.time() + 60
    while ids and time.time() < deadline:
        time.sleep(0.5)
        ids = [i for i in ours() if i in ids]


@pytest.fixture(scope="module", params=["accounting", "no-accounting"])
def slurm_mode(request: pytest.FixtureRequest, slurm_cluster: Path) -> Iterator[str]:
    """Runs the tests that use it once with sacct answering and once with accounting off."""
    cluster_script(f"--{request.param}")
    yield request.param
    if request.param != "accounting":
        cluster_script("--accounting")


@pytest.fixture
def accounting(slurm_cluster: Path) -> None:
    """sacct answers (a no-op when accounting is on already)."""
    cluster_script("--accounting")


@pytest.fixture
def slurm(slurm_cluster: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    clean_queue(tmp_path_factory.getbasetemp())  # leftovers of this session's earlier tests
    yield workdir
    clean_queue(workdir)
