"""Housekeeper's own overhead at scale: submit, poll, list_jobs and export over N jobs.

    python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--runs 3] [--write-readme]

Nothing here talks to a real scheduler. Every scheduler command goes to a *recording* SLURM:
a `Runner` whose `_once` counts the command and answers it at once (`sbatch` with a fresh id,
`scontrol show config` with `MaxArraySize = 100001`, `squeue`/`sacct` with nothing, or with a
prepared squeue output), so the figures are housekeeper's overhead only.

For each size N, in this order, every measurement in a fresh child process (median of --runs):
  submit       `hk.submit(...)` N times (the seed README's "For large pipelines" loop), then
               `hk.flush()`: times of the loop and the flush, scheduler commands, peak RSS.
               The first run's jobs_dir is kept as the state the next benchmarks read.
  prepare      (once, not timed) writes two squeue outputs for the N scheduler ids the store
               holds, in the exact `--Format` that `SlurmDialect.status_argv` asks for, plus the
               exit records of the jobs the "mixed" output shows finished; snapshots the db.
  poll         one `hk.poll()` answered by an N-line squeue: half RUNNING, half PENDING (no
               finished job, so no per-job file reads).
  poll-mixed   the same with 60% PENDING, 28% RUNNING, 10% COMPLETED, 2% FAILED; the finished
               ones have an exit record (`status.json`, checked in the job) that the poll reads.
  list         one `hk.list_jobs()` over the N jobs.
  export       one `hk.export_state("x.parquet")` over the N jobs.
The db is restored from the snapshot before every poll/list/export run, so each run starts
from the same state (N QUEUED jobs). Each size uses its own folder under --tmp, deleted at the
end (--keep leaves it).

Peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` read in the child at its end. On Linux
a child inherits its parent's high-water mark across fork+exec, so this parent imports nothing
heavy (no housekeeper, no polars) until the measurements are done; its own peak is reported and
is far below any child's.

--write-readme replaces the "## Scale" section of benchmarks/README.md (other sections are left
alone) and draws benchmarks/scale.png with matplotlib, which is not a housekeeper dependency:
it is pip-installed into the running environment if missing.

The child mode is usable on its own, e.g. for profiling one measurement:
    python -m cProfile -s cumtime benchmarks/bench_scale.py --child submit --size 100000 --dir /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
CHART = HERE / "scale.png"
SECTION = "## Scale"

MAX_ARRAY_SIZE = 100001
MILLION = 1_000_000
TARGETS = {  # at 1,000,000 jobs (issue 6)
    "submit_total_s": 20.0,
    "submit_rss_mib": 1.5e9 / 2**20,  # 1.5 GB
    "commands_per_100k": 5.0,
    "poll_s": 3.0,
    "list_s": 1.0,
    "export_s": 3.0,
}
DISK_BYTES_PER_JOB = 12_000  # a folder, a script, db rows, exit records: generous, checked below
KINDS = ("submit", "poll", "poll-mixed", "list", "export")


# ======================================================================================
# Child side: imports housekeeper, measures one thing, prints one JSON line
# ======================================================================================


def _recording_runner(squeue_text: str = "") -> Any:
    from housekeeper.runner import CommandResult, Runner, program_name

    class RecordingRunner(Runner):
        """A SLURM that answers at once: records each command by program name."""

        def __init__(self) -> None:
            super().__init__(sleep=lambda _: None)
            self.next_id = 1000
            self.squeue_text = squeue_text
            self.sbatch_argv: list[list[str]] = []

        def _once(self, argv):  # type: ignore[no-untyped-def]
            name = program_name(argv)
            self.calls[name] += 1
            out = ""
            if name == "sbatch":
                self.next_id += 1
                out = f"{self.next_id}\n"
                self.sbatch_argv.append(list(argv))
            elif name == "scontrol":
                out = f"MaxArraySize = {MAX_ARRAY_SIZE}\n"
            elif name == "squeue":
                out = self.squeue_text
            return CommandResult(list(argv), 0, out, "", 0.0)

    return RecordingRunner()


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _status_counts(db: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    finally:
        conn.close()


def child_submit(size: int, jobs_dir: Path) -> dict[str, Any]:
    from housekeeper import housekeeper

    runner = _recording_runner()
    t0 = time.perf_counter()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=runner)
    t1 = time.perf_counter()
    for i in range(size):
        hk.submit(f"calibrate.py --spw {i}", name=f"cal_spw{i}", job_subdir=f"spw_{i:07d}", cpus=4)
    t2 = time.perf_counter()
    sent = hk.flush()
    t3 = time.perf_counter()
    hk.close()
    t4 = time.perf_counter()
    rss = _peak_rss_kib()
    counts = _status_counts(jobs_dir / "housekeeper.db")
    return {
        "open_s": t1 - t0, "loop_s": t2 - t1, "flush_s": t3 - t2, "close_s": t4 - t3, "total_s": t3 - t1,
        "sent": sent, "calls": dict(runner.calls), "sbatch_args": [len(a) for a in runner.sbatch_argv],
        "statuses": counts, "rss_kib": rss,
    }  # fmt: skip


def _slurm_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


# (share in percent, squeue state) of the "mixed" output, in this order over the jobs
MIX = ((60, "PENDING"), (28, "RUNNING"), (10, "COMPLETED"), (2, "FAILED"))


def child_prepare(size: int, jobs_dir: Path) -> dict[str, Any]:
    """Write squeue outputs (uniform and mixed) for the ids in the store, the exit records of the
    finished jobs of the mixed one, and a snapshot of the db. Not timed."""
    import sqlite3

    import msgspec

    from housekeeper import jobscript
    from housekeeper.models import ExitRecord
    from housekeeper.schedulers import slurm

    # The format the dialect asks for: our lines must match it field for field.
    argv = slurm.SlurmDialect().status_argv(["1_0"])
    fmt = next(a for a in argv if a.startswith("--Format="))
    fields = [f.split(":", 1)[0] for f in fmt.split("=", 1)[1].split(",")]
    expected = ["JobArrayID", "ArrayJobID", "ArrayTaskID", "JobID", "State", "exit_code", "NodeList",
                "SubmitTime", "StartTime", "EndTime", "Reason", "Comment"]  # fmt: skip
    if fields != expected or list(slurm._SQUEUE_FIELDS) != expected:
        raise SystemExit(f"squeue fields changed to {fields}; update bench_scale.py's line builder")

    db = jobs_dir / "housekeeper.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tokens = dict(conn.execute("SELECT base_id, token FROM submissions WHERE state='submitted'").fetchall())
    jobs = conn.execute(
        "SELECT job_id, attempt, job_subdir, scheduler_id FROM jobs WHERE status='QUEUED' ORDER BY job_id"
    ).fetchall()
    conn.close()
    if len(jobs) != size:
        raise SystemExit(f"prepare: {len(jobs)} QUEUED jobs in the store, expected {size}")

    now = time.time()
    submit, start, run_end = _slurm_time(now - 3600), _slurm_time(now - 1800), _slurm_time(now + 1800)
    done_start, done_end = _slurm_time(now - 3000), _slurm_time(now - 2400)

    def line(scheduler_id: str, k: int, state: str) -> str:
        base, _, index = scheduler_id.partition("_")
        comment = tokens.get(base, "(null)")
        if state == "PENDING":
            return f"{scheduler_id}|{base}|{index}|{base}|PENDING|0||{submit}|N/A|N/A|Priority|{comment}"
        raw = 10_000_000 + k
        if state == "RUNNING":
            return f"{scheduler_id}|{base}|{index}|{raw}|RUNNING|0|node01|{submit}|{start}|{run_end}|None|{comment}"
        code = "0" if state == "COMPLETED" else "256"  # raw wait status: 256 = exit 1
        reason = "None" if state == "COMPLETED" else "NonZeroExitCode"
        return f"{scheduler_id}|{base}|{index}|{raw}|{state}|{code}|node01|{submit}|{done_start}|{done_end}|{reason}|{comment}"

    uniform = [line(sid, k, "RUNNING" if k % 2 == 0 else "PENDING") for k, (_, _, _, sid) in enumerate(jobs)]
    (jobs_dir.parent / "squeue_uniform.txt").write_text("\n".join(uniform) + "\n")
    del uniform

    bounds = []
    acc = 0
    for share, state in MIX:
        acc += share
        bounds.append((acc, state))
    mixed = []
    records = 0
    encoder = msgspec.json.Encoder()
    for k, (job_id, attempt, subdir, sid) in enumerate(jobs):
        slot = k % 100
        state = next(s for b, s in bounds if slot < b)
        mixed.append(line(sid, k, state))
        if state in ("COMPLETED", "FAILED"):
            folder = jobscript.job_dir(str(jobs_dir), subdir)
            os.makedirs(folder, exist_ok=True)
            code = 0 if state == "COMPLETED" else 1
            record = ExitRecord(job_id=job_id, attempt=attempt, exit_code=code, scheduler_id=sid, host="node01",
                                started_at=now - 3000, ended_at=now - 2400, checked=True, ok=code == 0)  # fmt: skip
            with open(os.path.join(folder, jobscript.STATUS_FILE), "wb") as handle:
                handle.write(encoder.encode(record))
            records += 1
    (jobs_dir.parent / "squeue_mixed.txt").write_text("\n".join(mixed) + "\n")
    shutil.copyfile(db, jobs_dir.parent / "snapshot.db")
    return {"records": records, "rss_kib": _peak_rss_kib()}


def child_poll(size: int, jobs_dir: Path, variant: str) -> dict[str, Any]:
    from housekeeper import housekeeper

    text = (jobs_dir.parent / f"squeue_{variant}.txt").read_text()
    lines = text.count("\n")
    runner = _recording_runner(text)
    del text
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=runner)
    hk.engine  # noqa: B018 - make the engine outside the timing: that is opening, not polling
    before = dict(runner.calls)
    t0 = time.perf_counter()
    changed = hk.poll()
    t1 = time.perf_counter()
    calls = {k: v - before.get(k, 0) for k, v in runner.calls.items() if v - before.get(k, 0)}
    runner.squeue_text = ""
    hk.close()
    rss = _peak_rss_kib()
    return {"poll_s": t1 - t0, "changed": changed, "lines": lines, "calls": calls,
            "statuses": _status_counts(jobs_dir / "housekeeper.db"), "rss_kib": rss}  # fmt: skip


def child_list(size: int, jobs_dir: Path) -> dict[str, Any]:
    from housekeeper import housekeeper

    runner = _recording_runner()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=runner)
    hk.engine  # noqa: B018
    t0 = time.perf_counter()
    table = hk.list_jobs()
    t1 = time.perf_counter()
    rows = table.height
    hk.close()
    return {"list_s": t1 - t0, "rows": rows, "columns": table.width, "calls": dict(runner.calls),
            "rss_kib": _peak_rss_kib()}  # fmt: skip


def child_export(size: int, jobs_dir: Path) -> dict[str, Any]:
    from housekeeper import housekeeper

    target = jobs_dir.parent / "x.parquet"
    runner = _recording_runner()
    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=runner)
    hk.engine  # noqa: B018
    t0 = time.perf_counter()
    hk.export_state(target)
    t1 = time.perf_counter()
    hk.close()
    rss = _peak_rss_kib()
    import pyarrow.parquet as pq  # after the RSS reading: checking the file is not part of it

    rows = pq.ParquetFile(target).metadata.num_rows
    file_bytes = target.stat().st_size
    target.unlink()
    return {"export_s": t1 - t0, "rows": rows, "bytes": file_bytes, "calls": dict(runner.calls), "rss_kib": rss}


def child_baseline(jobs_dir: Path) -> dict[str, Any]:
    from housekeeper import housekeeper

    hk = housekeeper(jobs_dir=jobs_dir, scheduler="slurm", runner=_recording_runner())
    hk.close()
    return {"rss_kib": _peak_rss_kib()}


def child_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    jobs_dir = Path(args.dir)
    kind = args.child
    if kind == "submit":
        result = child_submit(args.size, jobs_dir)
    elif kind == "prepare":
        result = child_prepare(args.size, jobs_dir)
    elif kind == "poll":
        result = child_poll(args.size, jobs_dir, "uniform")
    elif kind == "poll-mixed":
        result = child_poll(args.size, jobs_dir, "mixed")
    elif kind == "list":
        result = child_list(args.size, jobs_dir)
    elif kind == "export":
        result = child_export(args.size, jobs_dir)
    elif kind == "baseline":
        result = child_baseline(jobs_dir)
    else:
        raise SystemExit(f"unknown child {kind!r}")
    print("RESULT " + json.dumps(result), flush=True)


# ======================================================================================
# Parent side: stdlib only (see the module docstring on RSS)
# ======================================================================================


class ChildFailed(RuntimeError):
    pass


PARENT_PEAK_AT_SPAWN = [0]  # this process's ru_maxrss (KiB) when it last started a child


def run_child(kind: str, size: int, jobs_dir: Path, timeout: float) -> dict[str, Any]:
    PARENT_PEAK_AT_SPAWN[0] = max(PARENT_PEAK_AT_SPAWN[0], _peak_rss_kib())
    load_before = os.getloadavg()[0]
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--size", str(size), "--dir", str(jobs_dir)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"{kind} at {size:,} took more than {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    results = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ChildFailed(f"{kind} at {size:,} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(results[-1])
    result["wall_s"] = wall
    result["load"] = (load_before, os.getloadavg()[0])
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    if warnings:
        result["stderr_lines"] = len(warnings)
        result["stderr_head"] = warnings[:3]
    return result


def remove_tree(path: Path) -> None:
    """rm -rf in a child: shutil.rmtree lists a big folder in this process and would raise the
    high-water mark every later child inherits."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--", str(path)], check=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def restore(state: Path, snapshot: Path) -> None:
    db = state / "housekeeper.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(snapshot, db)


def du_bytes(path: Path) -> int:
    proc = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    try:
        return int(proc.stdout.split()[0]) * 1024
    except (IndexError, ValueError):
        return 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def check_size(size: int, result: dict[str, Any], kind: str) -> list[str]:
    """What is wrong with a child's result (the benchmark must measure what it says)."""
    problems = []
    if kind == "submit":
        if result["statuses"] != {"QUEUED": size}:
            problems.append(f"after flush the store holds {result['statuses']}, expected {size} QUEUED")
    elif kind in ("poll", "poll-mixed"):
        if result["lines"] != size:
            problems.append(f"squeue output has {result['lines']} lines, expected {size}")
        # the mixed output shows jobs that ended: one sacct asks for what they used
        sacct = 1 if kind == "poll-mixed" else 0
        if result["calls"].get("squeue") != 1 or result["calls"].get("sacct", 0) != sacct:
            problems.append(f"poll ran {result['calls']}, expected one squeue and {sacct} sacct")
        if kind == "poll":
            want = {"RUNNING": (size + 1) // 2, "QUEUED": size // 2}
        else:
            counts = {"PENDING": 0, "RUNNING": 0, "COMPLETED": 0, "FAILED": 0}
            for k in range(size):
                slot, acc = k % 100, 0
                for share, state in MIX:
                    acc += share
                    if slot < acc:
                        counts[state] += 1
                        break
            want = {s: n for s, n in (("QUEUED", counts["PENDING"]), ("RUNNING", counts["RUNNING"]),
                                      ("COMPLETED", counts["COMPLETED"]), ("FAILED", counts["FAILED"])) if n}  # fmt: skip
        if result["statuses"] != want:
            problems.append(f"after the poll the store holds {result['statuses']}, expected {want}")
    elif kind in ("list", "export"):
        if result["rows"] != size:
            problems.append(f"{kind} gave {result['rows']} rows, expected {size}")
    return problems


def measure_size(size: int, runs: int, tmp: Path, kinds: list[str], timeout: float, keep: bool) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix=f"hk-scale-{size}-", dir=tmp))
    out: dict[str, Any] = {"size": size, "runs": {}, "problems": [], "failed": {}}
    state = base / "state"
    try:
        submits = []
        for run in range(runs):
            jobs_dir = state if run == 0 else base / f"submit{run}"
            log(f"{size:>9,} submit run {run + 1}/{runs}")
            result = run_child("submit", size, jobs_dir, timeout)
            out["problems"] += check_size(size, result, "submit")
            if run == 0:
                out["disk_bytes"] = du_bytes(state)
            else:
                remove_tree(jobs_dir)
            log(f"          loop {result['loop_s']:.2f} s, flush {result['flush_s']:.2f} s, "
                f"{sum(result['calls'].values())} commands, {result['rss_kib'] / 1024:.0f} MiB")  # fmt: skip
            submits.append(result)
        out["runs"]["submit"] = submits
        wanted = [k for k in kinds if k != "submit"]
        if not wanted:
            return out
        log(f"{size:>9,} prepare (squeue outputs, exit records, db snapshot)")
        run_child("prepare", size, state, timeout)
        snapshot = base / "snapshot.db"
        for kind in wanted:
            results = []
            for run in range(runs):
                restore(state, snapshot)
                log(f"{size:>9,} {kind} run {run + 1}/{runs}")
                try:
                    result = run_child(kind, size, state, timeout)
                except ChildFailed as exc:
                    log(f"          FAILED: {exc}")
                    out["failed"][kind] = str(exc).splitlines()[0]
                    break
                out["problems"] += check_size(size, result, kind)
                key = {"poll": "poll_s", "poll-mixed": "poll_s", "list": "list_s", "export": "export_s"}[kind]
                log(f"          {result[key]:.3f} s, {result['rss_kib'] / 1024:.0f} MiB")
                results.append(result)
            out["runs"][kind] = results
        return out
    finally:
        if keep:
            log(f"kept {base}")
        else:
            log(f"deleting {base}")
            remove_tree(base)


# ---------------------------------------------------------------------------- summary


def med(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _busy(runs: list[dict[str, Any]], cores: float) -> bool:
    """A run started or ended with more runnable work than cores: other work shared the machine."""
    return any(max(r.get("load") or (0.0,)) > cores for r in runs)


def summarise(measured: dict[str, Any], cores: float) -> dict[str, Any]:
    size = measured["size"]
    s: dict[str, Any] = {"size": size, "runs": measured["runs"], "disk_bytes": measured.get("disk_bytes", 0),
                         "failed": measured["failed"], "problems": measured["problems"]}  # fmt: skip
    sub = measured["runs"].get("submit") or []
    if sub:
        commands = statistics.median(sum(r["calls"].values()) for r in sub)
        s["submit"] = {
            "loop_s": med(sub, "loop_s"), "flush_s": med(sub, "flush_s"), "total_s": med(sub, "total_s"),
            "commands": commands, "per_100k": commands * 100_000 / size, "calls": sub[0]["calls"],
            "rss_mib": med(sub, "rss_kib") / 1024, "n": len(sub),
            "spread": (min(r["total_s"] for r in sub), max(r["total_s"] for r in sub)), "busy": _busy(sub, cores),
        }  # fmt: skip
    for kind, key in (("poll", "poll_s"), ("poll-mixed", "poll_s"), ("list", "list_s"), ("export", "export_s")):
        runs = measured["runs"].get(kind) or []
        if runs:
            s[kind] = {"s": med(runs, key), "rss_mib": med(runs, "rss_kib") / 1024, "n": len(runs),
                       "spread": (min(r[key] for r in runs), max(r[key] for r in runs)),
                       "changed": runs[0].get("changed"), "calls": runs[0].get("calls"),
                       "bytes": runs[0].get("bytes"), "busy": _busy(runs, cores)}  # fmt: skip
    return s


def verdict(value: float | None, target: float, size: int) -> str:
    if value is None:
        return "—"
    if size != MILLION:
        return "—"
    return "**met**" if value <= target else f"**missed** ({value / target:.1f}×)"


def projection(summaries: list[dict[str, Any]], kind: str, field: str) -> tuple[int, float] | None:
    """Linear projection to 1M from the largest size measured, when 1M was not measured."""
    done = [s for s in summaries if kind in s]
    if not done or any(s["size"] == MILLION for s in done):
        return None
    largest = max(done, key=lambda s: s["size"])
    return largest["size"], largest[kind][field] * MILLION / largest["size"]


def exponent(summaries: list[dict[str, Any]], kind: str, field: str) -> list[str]:
    """log-log slope between consecutive sizes: 1.0 is linear growth."""
    points = [(s["size"], s[kind][field]) for s in summaries if kind in s and s[kind][field] > 0]
    return [f"{a:,}→{c:,}: {math.log(d / b) / math.log(c / a):.2f}" for (a, b), (c, d) in zip(points, points[1:])]


def fmt_s(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def fmt_bytes(value: float) -> str:
    return f"{value / 2**10:,.0f} KiB" if value < 2**20 else f"{value / 2**20:,.0f} MiB"


def fmt_us(seconds: float, size: int) -> str:
    return f"{seconds / size * 1e6:.1f} µs"


def git_commit() -> str:
    def git(*argv: str) -> str:
        proc = subprocess.run(["git", "--no-optional-locks", *argv], cwd=ROOT, capture_output=True, text=True,
                              check=False)  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    return f"{commit}" + (" plus uncommitted changes in src/" if dirty else "")


def source_fingerprint() -> str:
    """A hash of housekeeper's sources: others edit the core while benchmarks run."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted((ROOT / "src" / "housekeeper").rglob("*")):
        if path.suffix in (".py", ".pyx") and path.is_file():
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or str(os.cpu_count())
    mem = ""
    try:
        kib = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
        mem = f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return {"nproc": nproc, "cpu": model or platform.processor() or "unknown", "mem": mem,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}  # fmt: skip


def render(summaries: list[dict[str, Any]], command: str, info: dict[str, Any]) -> str:
    m = info["machine"]
    out = [SECTION, ""]
    out.append(f"Machine: {m['nproc']} CPUs (nproc), {m['cpu']}, {m['mem']}, {m['os']}, Python {m['python']}, "
               f"polars {info['polars']}. housekeeper commit {info['commit']} (sources fingerprint {info['source']}). "
               f"Measured {info['date']}.")  # fmt: skip
    if info.get("source_after") != info.get("source"):
        out += ["", f"**The sources changed during this run** (fingerprint {info['source']} at the start, "
                f"{info['source_after']} at the end): the figures mix two versions of the core."]  # fmt: skip
    if info.get("load"):
        lo, hi = info["load"]
        busy = float(m["nproc"] or 1)
        out += ["", f"1-minute load average when each child started and ended: {lo:.1f}–{hi:.1f}"
                + (f" (above {busy:.0f}, the core count: other work shared the machine. † marks a figure with a "
                   "run that started or ended with the load above the core count: it is slower than this code "
                   "on a quiet machine; the minimum of its row is the least disturbed)." if hi > busy else ".")]  # fmt: skip
    out += ["", f"Command: `{command}` (from the repository root)."]
    if info.get("rendered_from"):
        out += ["", f"(Tables re-drawn from the results that run saved with `--json`: `{info['rendered_from']}`.)"]
    out += [""]
    out.append(
        "Housekeeper's own overhead: every scheduler command goes to a recording SLURM (a `Runner` "
        "subclass answering at once: `sbatch` with a fresh id, `scontrol show config` with "
        f"`MaxArraySize = {MAX_ARRAY_SIZE}`, `squeue`/`sacct` with nothing or a prepared output). "
        "Every figure is the median of the runs shown, each run in a fresh child process; peak RSS is the "
        "child's `ru_maxrss` at its end (a child that only imports housekeeper and opens an empty jobs_dir "
        f"peaks at {info['baseline_mib']:.0f} MiB; the parent had reached at most {info['parent_mib']:.0f} MiB "
        "whenever it started a child, "
        + (
            "so no inherited high-water mark shows). "
            if info["parent_mib"] < info["baseline_mib"]
            else "**which is above that baseline: the smallest RSS figures may be the parent's, not the child's**). "
        )
        + "Targets (issue 6) apply at 1,000,000 jobs (— in a target column: a smaller N)."
    )
    out += ["", "### 1. Submit N jobs, then flush", ""]
    out.append("`hk.submit(f\"calibrate.py --spw {i}\", name=f\"cal_spw{i}\", job_subdir=f\"spw_{i:07d}\", cpus=4)` "
               "N times, then `hk.flush()` (arrays, scripts, `sbatch`). Total = loop + flush. "
               "Targets at 1M: total ≤ 20 s, peak RSS ≤ 1.5 GB (1,431 MiB), ≤ 5 scheduler commands per 100k jobs.")  # fmt: skip
    out += ["", "| jobs | runs | submit loop | per job | flush | total (min–max) | commands (per 100k) | peak RSS | "
            "disk | total ≤ 20 s | RSS ≤ 1.5 GB | ≤ 5 cmds/100k |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in summaries:
        if "submit" not in s:
            out.append(f"| {s['size']:,} | — | failed: {s['failed'].get('submit', '?')} |||||||||")
            continue
        sub = s["submit"]
        calls = ", ".join(f"{v} {k}" for k, v in sorted(sub["calls"].items()))
        lo, hi = sub["spread"]
        out.append(
            f"| {s['size']:,} | {sub['n']} | {fmt_s(sub['loop_s'])} | {fmt_us(sub['loop_s'], s['size'])} | "
            f"{fmt_s(sub['flush_s'])} | {fmt_s(sub['total_s'])}{_mark(sub)} ({lo:.2f}–{hi:.2f}) | "
            f"{sub['commands']:.0f}: {calls} ({sub['per_100k']:.1f}) | {sub['rss_mib']:,.0f} MiB | "
            f"{fmt_bytes(s['disk_bytes'])} | "
            f"{verdict(sub['total_s'], TARGETS['submit_total_s'], s['size'])} | "
            f"{verdict(sub['rss_mib'], TARGETS['submit_rss_mib'], s['size'])} | "
            f"{verdict(sub['per_100k'], TARGETS['commands_per_100k'], s['size'])} |"
        )
    out += _projection_lines(summaries, "submit", "total_s", TARGETS["submit_total_s"], "submit + flush")
    out += _exponent_lines(summaries, "submit", "total_s", "submit + flush")

    out += ["", "### 2. One poll over N jobs", ""]
    out.append(
        "After submit + flush (all N jobs QUEUED), one `hk.poll()` answered by an N-line squeue output in "
        "the exact `--Format` `SlurmDialect.status_argv` asks for (one line per array task, `--array`). "
        "*uniform*: every other task RUNNING, the rest PENDING (no job finished, so no file is read). "
        "*mixed*: 60% PENDING, 28% RUNNING, 10% COMPLETED, 2% FAILED; each finished job has its exit record "
        "(`status.json`, logs already checked in the job), which the poll reads. The db is restored before each run. "
        "Target at 1M: ≤ 3 s."
    )
    out += [
        "",
        "| jobs | squeue output | runs | poll (min–max) | per job | rows changed | commands | peak RSS | ≤ 3 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for kind, label in (("poll", "uniform"), ("poll-mixed", "mixed")):
            if kind not in s:
                if kind in s["failed"]:
                    out.append(f"| {s['size']:,} | {label} | — | failed: {s['failed'][kind]} ||||||")
                continue
            p = s[kind]
            calls = ", ".join(f"{v} {k}" for k, v in sorted((p["calls"] or {}).items()))
            lo, hi = p["spread"]
            out.append(
                f"| {s['size']:,} | {label} | {p['n']} | {fmt_s(p['s'])}{_mark(p)} ({lo:.2f}–{hi:.2f}) | "
                f"{fmt_us(p['s'], s['size'])} | {p['changed']:,} | {calls} | {p['rss_mib']:,.0f} MiB | "
                f"{verdict(p['s'], TARGETS['poll_s'], s['size'])} |"
            )
    out += _projection_lines(summaries, "poll", "s", TARGETS["poll_s"], "poll (uniform)")
    out += _exponent_lines(summaries, "poll", "s", "poll (uniform)")

    out += ["", '### 3. `list_jobs()` and `export_state("x.parquet")` over N jobs', ""]
    out.append("One call each on the N QUEUED jobs, in a fresh process (the engine is made before the timing). "
               "Targets at 1M: `list_jobs()` ≤ 1 s, `export_state` to Parquet ≤ 3 s.")  # fmt: skip
    out += [
        "",
        "| jobs | runs | `list_jobs()` (min–max) | peak RSS | ≤ 1 s | `export_state` (min–max) | file | peak RSS | ≤ 3 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cells = [f"{s['size']:,}"]
        lst, exp = s.get("list"), s.get("export")
        cells.append(str(max(lst["n"] if lst else 0, exp["n"] if exp else 0)))
        if lst:
            cells += [f"{fmt_s(lst['s'])}{_mark(lst)} ({lst['spread'][0]:.2f}–{lst['spread'][1]:.2f})", f"{lst['rss_mib']:,.0f} MiB",
                      verdict(lst["s"], TARGETS["list_s"], s["size"])]  # fmt: skip
        else:
            cells += [f"failed: {s['failed'].get('list', 'not run')}", "", ""]
        if exp:
            cells += [f"{fmt_s(exp['s'])}{_mark(exp)} ({exp['spread'][0]:.2f}–{exp['spread'][1]:.2f})",
                      fmt_bytes(exp["bytes"] or 0), f"{exp['rss_mib']:,.0f} MiB",
                      verdict(exp["s"], TARGETS["export_s"], s["size"])]  # fmt: skip
        else:
            cells += [f"failed: {s['failed'].get('export', 'not run')}", "", "", ""]
        if lst or exp:
            out.append("| " + " | ".join(cells) + " |")
    out += _projection_lines(summaries, "list", "s", TARGETS["list_s"], "list_jobs()")
    out += _projection_lines(summaries, "export", "s", TARGETS["export_s"], "export_state")

    out += ["", "### 4. How cost grows", ""]
    if info.get("chart"):
        out.append("![submit + flush and one poll against N, log-log, with ideal linear lines](scale.png)")
        out.append("")
        out.append("Dotted: ideal linear growth (time ∝ N) through each series' smallest size. The chart is drawn with "
                   "matplotlib, which is not a housekeeper dependency: `--write-readme` pip-installs it into the "
                   "running environment when it is missing.")  # fmt: skip
    else:
        out.append(f"No chart this time: {info.get('chart_error', 'matplotlib unavailable')}.")
    out.append("")
    out.append("Growth exponents (log-log slope between sizes; 1.00 = linear): "
               + "; ".join(f"{label} {', '.join(exponent(summaries, k, f)) or '—'}"
                           for k, f, label in (("submit", "total_s", "submit + flush"), ("poll", "s", "poll"),
                                               ("list", "s", "list_jobs"), ("export", "s", "export")))
               + ".")  # fmt: skip
    problems = [f"{s['size']:,}: {p}" for s in summaries for p in dict.fromkeys(s["problems"])]
    if problems:
        out += ["", "**Checks that failed** (the figures above may not measure what they say):", ""]
        out += [f"- {p}" for p in problems]
    else:
        out += ["", "Checks: after every flush the store held N QUEUED jobs; every poll ran one `squeue` (and one `sacct` "
                "for the jobs the mixed output shows ended) and left the expected counts of each status; `list_jobs` and the Parquet file had N rows."]  # fmt: skip
    return "\n".join(out) + "\n"


def _mark(figures: dict[str, Any]) -> str:
    return " †" if figures.get("busy") else ""


def _projection_lines(summaries: list[dict[str, Any]], kind: str, field: str, target: float, label: str) -> list[str]:
    proj = projection(summaries, kind, field)
    if proj is None:
        return []
    size, value = proj
    met = "within" if value <= target else f"{value / target:.1f}× over"
    return ["", f"Not measured at 1M in this run. Linear projection from {size:,}: {label} ≈ {value:.1f} s at 1M "
            f"({met} the {target:g} s target)."]  # fmt: skip


def _exponent_lines(summaries: list[dict[str, Any]], kind: str, field: str, label: str) -> list[str]:
    slopes = exponent(summaries, kind, field)
    return ["", f"Growth of {label} (log-log slope, 1.00 = linear): {'; '.join(slopes)}."] if slopes else []


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("matplotlib is missing (not a housekeeper dependency); pip-installing it for the chart")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
        if proc.returncode != 0:
            return False
        import importlib

        importlib.invalidate_caches()
    return True


def draw_chart(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    series = (("submit", "total_s", "submit + flush", "tab:blue", "o"), ("poll", "s", "one poll (uniform)", "tab:orange", "s"),
              ("poll-mixed", "s", "one poll (mixed)", "tab:red", "^"), ("list", "s", "list_jobs()", "tab:green", "D"),
              ("export", "s", "export_state (Parquet)", "tab:purple", "v"))  # fmt: skip
    sizes = sorted({s["size"] for s in summaries} | {MILLION})  # references run on to the targets
    for kind, field, label, color, marker in series:
        points = [(s["size"], s[kind][field]) for s in summaries if kind in s]
        if not points:
            continue
        xs, ys = zip(*points)
        main = kind in ("submit", "poll")
        ax.plot(xs, ys, marker=marker, color=color, label=label, linewidth=2 if main else 1, alpha=1 if main else 0.6)
        if main:
            x0, y0 = points[0]
            ax.plot(sizes, [y0 * x / x0 for x in sizes], linestyle=":", color=color, linewidth=1,
                    label=f"linear from {x0:,} ({label})")  # fmt: skip
    for target, color in ((TARGETS["submit_total_s"], "tab:blue"), (TARGETS["poll_s"], "tab:orange")):
        ax.plot([MILLION], [target], marker="_", markersize=22, color=color, mew=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs (N)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("housekeeper overhead against N (recording SLURM; bars: targets at 1M)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_section(section: str) -> None:
    """Replace (or add) the "## Scale" section of benchmarks/README.md only."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").splitlines() + [""] + lines[end:])
    README.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated job counts")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--only", default=",".join(KINDS), help=f"benchmarks to run, of {','.join(KINDS)}")
    parser.add_argument("--tmp", default="/tmp", help="where each size's temporary jobs_dir goes")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one child may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--write-readme", action="store_true", help='write the "## Scale" section and scale.png')
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--from-json", help="measure nothing: write the README section and chart from a --json file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    # A plain `kill` must still delete the temporary folders (the finally clauses) and stop the
    # running child (subprocess.run kills it when interrupted).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        info = dict(saved["info"], rendered_from=f"python benchmarks/bench_scale.py --from-json {args.from_json}")
        cores = float(info["machine"]["nproc"] or 1)
        write_readme([summarise(m, cores) for m in saved["results"]], info["command"], info)
        return

    sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if "submit" not in kinds:
        kinds.insert(0, "submit")  # every other benchmark reads the state a submit leaves
    unknown = set(kinds) - set(KINDS)
    if unknown or args.runs < 1 or not sizes or min(sizes) < 1:
        parser.error(f"bad --only {sorted(unknown)} / --runs / --sizes")
    tmp = Path(args.tmp)
    command = "python benchmarks/bench_scale.py " + " ".join(
        a
        for a in (
            f"--sizes {args.sizes}",
            f"--runs {args.runs}",
            f"--only {args.only}" if args.only != ",".join(KINDS) else "",
            "--write-readme" if args.write_readme else "",
        )
        if a  # fmt: skip
    )

    # Disk: one size's folder at a time, deleted before the next (a second submit run's folder
    # exists alongside the first's while it runs).
    need = max(sizes) * DISK_BYTES_PER_JOB * 2
    free = shutil.disk_usage(tmp).free
    log(f"{tmp}: {free / 2**30:.1f} GiB free; the largest size needs up to ~{need / 2**30:.1f} GiB")
    if free < need:
        raise SystemExit(f"not enough room in {tmp} for {max(sizes):,} jobs; use --tmp or smaller --sizes")

    info: dict[str, Any] = {"machine": machine(), "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                            "source": source_fingerprint(), "command": command}  # fmt: skip
    cores = float(info["machine"]["nproc"] or 1)
    base = Path(tempfile.mkdtemp(prefix="hk-scale-baseline-", dir=tmp))
    try:
        info["baseline_mib"] = run_child("baseline", 0, base / "run", args.timeout)["rss_kib"] / 1024
    finally:
        shutil.rmtree(base, ignore_errors=True)

    summaries = []
    raw = []
    for size in sorted(sizes):
        try:
            measured = measure_size(size, args.runs, tmp, kinds, args.timeout, args.keep)
        except ChildFailed as exc:
            log(f"FAILED at {size:,}: {exc}")
            measured = {"size": size, "runs": {}, "problems": [], "failed": {"submit": str(exc).splitlines()[0]}}
        raw.append(measured)
        summaries.append(summarise(measured, cores))
        for problem in measured["problems"]:
            log(f"CHECK FAILED at {size:,}: {problem}")
    info["parent_mib"] = PARENT_PEAK_AT_SPAWN[0] / 1024
    info["source_after"] = source_fingerprint()
    loads = [x for m in raw for runs in m["runs"].values() for r in runs for x in r.get("load", ())]
    info["load"] = (min(loads), max(loads)) if loads else None
    if info["source_after"] != info["source"]:
        log("WARNING: housekeeper's sources changed during the run; the figures mix two versions")

    for s in summaries:
        line = [f"{s['size']:>9,}"]
        if "submit" in s:
            sub = s["submit"]
            line.append(f"submit {sub['loop_s']:.2f}+{sub['flush_s']:.2f}={sub['total_s']:.2f} s "
                        f"{sub['per_100k']:.1f} cmds/100k {sub['rss_mib']:.0f} MiB")  # fmt: skip
        for kind in ("poll", "poll-mixed", "list", "export"):
            if kind in s:
                line.append(f"{kind} {s[kind]['s']:.3f} s {s[kind]['rss_mib']:.0f} MiB")
        print(" | ".join(line))
    print(f"peak RSS of this parent when starting a child: {info['parent_mib']:.0f} MiB")

    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": raw}, indent=1))
    if args.write_readme:
        write_readme(summaries, command, info)


def write_readme(summaries: list[dict[str, Any]], command: str, info: dict[str, Any]) -> None:
    """The "## Scale" section of benchmarks/README.md and the chart next to it."""
    if "polars" not in info:
        import polars

        info["polars"] = polars.__version__
    if ensure_matplotlib():
        try:
            draw_chart(summaries, CHART)
            info["chart"] = True
        except Exception as exc:  # noqa: BLE001 - a chart problem must not lose the figures
            info["chart_error"] = f"drawing failed: {exc}"
    else:
        info["chart_error"] = "matplotlib could not be installed"
    write_section(render(summaries, command, info))
    log(f"wrote the {SECTION!r} section of {README}" + (f" and {CHART}" if info.get("chart") else ""))


if __name__ == "__main__":
    main()
