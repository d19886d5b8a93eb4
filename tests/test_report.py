"""The HTML report: self-contained, and rendered by a real browser (headless Chromium)."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import pytest

from housekeeper.errors import StateError
from housekeeper.report import NotARunError, normalise_line, open_run, render_report, write_report
from housekeeper.store import JOB_INSERT_COLUMNS, Store

from .test_cli import assert_clean, db_snapshot, hk_cli, make_run

CHARTS = ("status-bar", "timeline", "concurrency", "runtime-hist", "wait-hist", "failure-reasons")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    return make_run(tmp_path_factory.mktemp("report") / "work")


def chromium() -> str:
    """The Chromium binary; skips (or fails under CI=true) when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    reason = "no Chromium on this machine (Debian: apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the report must be checked in a real browser in CI, but there is {reason}")
    pytest.skip(reason)


def browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_renders_its_charts_in_chromium(run: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    binary = chromium()
    run_dir, ids = run
    target = tmp_path / "out" / "report.html"
    proc = hk_cli("report", run_dir, "-o", target)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc)
    assert proc.stdout.strip() == str(target)
    page = target.read_text()

    # Self-contained: no script, nothing fetched from anywhere.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, re.I)
    assert "@import" not in page

    # The DOM as the browser built it has every chart, with marks in it.
    dom = browser(binary, tmp_path / "profile-dom", "--enable-logging=stderr", "--v=0", "--dump-dom",
                  target.as_uri())  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for chart in CHARTS:
        assert re.search(rf'<svg[^>]*id="{chart}"', html), f"chart {chart} missing from the rendered page"
    assert len(re.findall(r'<rect[^>]*class="run"', html)) == 7 + 1  # every attempt that ran (one job ran twice)
    assert len(re.findall(r'<rect[^>]*class="wait"', html)) >= 1
    assert re.search(r'<polygon[^>]*class="area-running"', html)
    assert len(re.findall(r'<rect[^>]*class="bar"', html)) >= 3 + 3  # status bar + failure reasons, at least
    assert 'id="failed-jobs"' in html
    failed_table = html.split('id="failed-jobs"', 1)[1].split("</table>", 1)[0]
    assert failed_table.count("<tr>") == 1 + 5  # header + the 5 failed jobs
    assert "log_b/stderr.log:1: ValueError: bad value 23 in /data/spw_023/x.fits" in failed_table
    assert "missing: never.txt" in failed_table and "exit code 3" in failed_table
    assert "ValueError: bad value &lt;N&gt; in &lt;path&gt;" in html  # the failures grouped by first line
    # No script errors (there is no script) and nothing the page asked for failed to load.
    assert "Uncaught" not in dom.stderr
    assert not re.search(r"CONSOLE.*(error|Error)", dom.stderr)
    assert "ERR_" not in " ".join(line for line in dom.stderr.splitlines() if "report.html" in line)

    # A screenshot of the whole page, compared with one of an empty page.
    shot = tmp_path / "report.png"
    result = browser(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000",
                     "--hide-scrollbars", target.as_uri())  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 2000)
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    blank = tmp_path / "blank.png"
    browser(binary, tmp_path / "profile-blank", f"--screenshot={blank}", "--window-size=1280,2000",
            blank_page.as_uri())  # fmt: skip
    assert blank.is_file()
    assert shot.stat().st_size > max(20_000, 5 * blank.stat().st_size), (shot.stat().st_size, blank.stat().st_size)


def test_report_default_path_and_read_only(run: tuple[Path, dict[str, int]]) -> None:
    run_dir, _ = run
    before = db_snapshot(run_dir)
    path = write_report(run_dir)
    assert path == str(run_dir / "report.html")
    assert Path(path).stat().st_size > 5000
    assert db_snapshot(run_dir) == before
    os.remove(path)


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NotARunError, match="not a housekeeper run"):
        write_report(tmp_path, tmp_path / "r.html")
    assert isinstance(NotARunError("x"), StateError)
    assert not (tmp_path / "r.html").exists()
    assert not (tmp_path / "housekeeper.db").exists()


def _synthetic_run(root: Path, jobs: int) -> Path:
    """A run database with many finished jobs (no processes), for the report's scaling."""
    root.mkdir(parents=True)
    store = Store(str(root / "housekeeper.db"))
    now = time.time()
    rows = []
    for job_id in range(1, jobs + 1):
        values = {
            "job_id": job_id, "name": f"cal_spw{job_id}", "command": "calibrate.py", "job_subdir": f"spw_{job_id:05d}",
            "dedup_key": f"dir:spw_{job_id:05d}", "workdir": str(root), "nodes": 1, "cpus": 1, "gpus": 0,
            "memory_mb": 1024, "walltime_s": 3600, "queue": None, "account": None, "expected_files": "[]",
            "env": "{}", "max_retries": 0, "has_deps": 0, "status": "PENDING", "attempt": 1,
            "created_at": now - 7200, "updated_at": now - 7200, "retry_policy": None,
        }  # fmt: skip
        rows.append(tuple(values[c] for c in JOB_INSERT_COLUMNS))
    store.insert_jobs(rows, [])
    rng = random.Random(7)
    updates = []
    for job_id in range(1, jobs + 1):
        submitted = now - 7200 + rng.uniform(0, 60)
        started = submitted + rng.expovariate(1 / 300)
        ended = started + rng.uniform(60, 900)
        failed = job_id % 10 == 0
        detail = {"log_lines": [["stderr.log", 3, f"RuntimeError: solver diverged at iteration {job_id}"]]}
        updates.append(("FAILED" if failed else "COMPLETED", "log_error" if failed else None, str(1000 + job_id),
                        submitted, started, ended, json.dumps(detail) if failed else None, job_id))  # fmt: skip
    with sqlite3.connect(root / "housekeeper.db") as conn:
        conn.executemany(
            "UPDATE jobs SET status=?1, reason=?2, scheduler_id=?3, submitted_at=?4, started_at=?5, ended_at=?6"
            " WHERE job_id=?8", updates)  # fmt: skip
        conn.executemany(
            "UPDATE attempts SET status=?1, reason=?2, scheduler_id=?3, submitted_at=?4, started_at=?5,"
            " ended_at=?6, detail=?7 WHERE job_id=?8", updates)  # fmt: skip
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('scheduler', 'slurm')")
    store.close()
    return root


def test_report_of_a_big_run_samples_the_timeline(tmp_path: Path) -> None:
    run_dir = _synthetic_run(tmp_path / "big", 5000)
    started = time.monotonic()
    reader = open_run(run_dir)
    page = render_report(reader)
    reader.close()
    assert time.monotonic() - started < 30
    assert "an evenly spaced sample of 300 of 5000 jobs" in page
    assert len(re.findall(r'class="run"', page)) == 300
    assert "RuntimeError: solver diverged at iteration &lt;N&gt;" in page  # 500 failures, one line
    groups = page.split('id="failure-groups"', 1)[1].split("</table>", 1)[0]
    assert groups.count("<tr>") == 2 and '<td class="num">500</td>' in groups
    failed_rows = page.split('id="failed-jobs"', 1)[1].split("</table>", 1)[0].count("<tr>")
    assert failed_rows == 1 + 500
    assert len(page) < 2_000_000
    for chart in CHARTS:
        assert f'id="{chart}"' in page
    # The CLI reads the same run without a scheduler anywhere (it says slurm).
    proc = hk_cli("status", run_dir, "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["counts"]["FAILED"] == 500
    proc = hk_cli("failures", run_dir, "--json")
    groups_json = json.loads(proc.stdout)["groups"]
    assert len(groups_json) == 1 and groups_json[0]["count"] == 500


def test_report_of_a_run_with_nothing_submitted(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    Store(str(root / "housekeeper.db")).close()
    reader = open_run(root)
    page = render_report(reader)
    reader.close()
    assert "this run has no jobs" in page
    assert 'id="timeline-empty"' in page and 'id="runtime-hist-empty"' in page


@pytest.mark.parametrize(
    "line, expected",
    [
        ("ValueError: bad value 17 in /data/spw_017/x.fits", "ValueError: bad value <N> in <path>"),
        ("Segmentation fault (core dumped) at 0x7ffd5e3a", "Segmentation fault (core dumped) at <hex>"),
        ("job 4f1c2a9e-3b7d-4c1e-9a2b-0d8e7f6a5b4c failed", "job <id> failed"),
        ("loss=1.5e-3   after  42 steps", "loss=<N> after <N> steps"),
        ("KeyError: 'spw_12'", "KeyError: 'spw_<N>'"),
        ("plain words only", "plain words only"),
    ],
)
def test_normalise_line(line: str, expected: str) -> None:
    assert normalise_line(line) == expected
