"""Benchmark of the log scanner against GNU grep on realistic job logs.

    python benchmarks/bench_scan.py --sizes 100,1000 [--runs 5] [--python-max 1000]
                                    [--delete] [--write-readme]

Generates (once; later runs reuse them) job-log corpora of the given sizes in MB under
``benchmarks/out/`` (git-ignored): lines of about 85 bytes from training loops, MPI
and CUDA/NCCL chatter, I/O and solver progress, with about one error line per 10,000
lines, some of them excused by the whitelist used here. ``--delete`` removes the
corpora afterwards.

Every measurement runs in its own subprocess (the page cache is warm: each file is
read once before timing). For the scanners the time is that of ``scan_file`` inside
the child; for grep it is the wall time of the ``grep`` process. Peak RSS is the
peak (``/usr/bin/time -f %M``); "baseline RSS" is a child that imports
the scanner and scans an empty file, so the difference is what scanning costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
README = HERE / "README.md"
CORPUS_VERSION = 1

sys.path.insert(0, str(ROOT / "src"))
from housekeeper.scan import DEFAULT_ERROR_PATTERNS

WHITELIST = [
    "WARN",
    "0 errors, 0 warnings",
    "Leap second table TAI_UTC seems out-of-date",
    "NCCL INFO",
]

NORMAL = [
    "{ts} INFO [rank {r}] epoch {e} step {s}/100000 loss={f:.4f} lr={g:.2e} throughput={t:.1f} samples/s",
    "[{ts}] DEBUG reading /scratch/user{r}/run_{e:03d}/data/chunk_{s:05d}.h5 ({f:.1f} MB) in {g:.3f} s",
    "  Iter {s:8d}  residual {g:.6e}  dt {f:.5f}  cfl {t:.3f}  mass {f:.9f}  energy {g:.4e}",
    "node{r:03d}:{s}:{e} [{r}] NCCL INFO Channel {e:02d}/32 : {r}[{e}] -> {s}[{r}] via P2P/IPC/read",
    "{ts} [INFO] Checkpoint saved to /work/project/ckpt/model_epoch{e}_step{s}.pt ({t:.0f} bytes)",
    "Processing sample {s} of 100000: file=sub-{r:03d}_ses-{e:02d}_bold.nii.gz voxels={t:.0f} ok",
    "{ts} slurm task {r} on node{e:03d} heartbeat: cpu={f:.1f}% mem={g:.2e} io_wait={t:.2f}",
    "MPI rank {r:4d}: halo exchange {s} complete, {t:.0f} bytes sent, {f:.3f} ms, neighbours {e}",
]
ERRORS = [
    "Traceback (most recent call last):",
    "RuntimeError: CUDA error: an illegal memory access was encountered (step {s})",
    "Segmentation fault (core dumped)",
    ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId={s}.batch. Some of your "
    "processes may have been killed by the cgroup out-of-memory handler."),
    "MPI_ABORT was invoked on rank {r} in communicator MPI_COMM_WORLD with errorcode 1.",
    "{ts} FATAL: could not open /scratch/user{r}/run_{e:03d}/data/chunk_{s:05d}.h5",
]
EXCUSED = [
    "{ts} WARNING: error reading optional config ~/.config/tool.ini; using defaults",
    "Compilation finished: 0 errors, 0 warnings ({f:.1f} s)",
    "node{r:03d}:{s}:{e} [{r}] NCCL INFO NET/IB : No device found. Error ignored, falling back",
]
ERROR_EVERY = 10_000  # lines


def _line(rng: random.Random, template: str, n: int) -> str:
    return template.format(
        ts=f"2024-03-{rng.randint(1, 28):02d} {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}",
        r=rng.randint(0, 511),
        e=rng.randint(0, 99),
        s=rng.randint(0, 99999),
        f=rng.random() * 1000,
        g=rng.random(),
        t=rng.random() * 1e5,
    )


def corpus(size_mb: int) -> Path:
    """The corpus of size_mb MB, made if absent (same seed, same bytes)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"joblog_{size_mb}MB_v{CORPUS_VERSION}.log"
    target = size_mb * 1_000_000
    if path.exists() and path.stat().st_size >= target:
        return path
    rng = random.Random(size_mb)
    # 16 distinct blocks of 50,000 lines, written in a random order until the size is reached
    blocks = []
    for b in range(16):
        lines = []
        for n in range(50_000):
            if rng.randrange(ERROR_EVERY) == 0:
                pool = EXCUSED if rng.random() < 0.3 else ERRORS
            else:
                pool = NORMAL
            lines.append(_line(rng, rng.choice(pool), b * 50_000 + n))
        blocks.append(("\n".join(lines) + "\n").encode())
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "wb") as f:
        while written < target:
            block = blocks[rng.randrange(len(blocks))]
            f.write(block)
            written += len(block)
    tmp.replace(path)
    return path


CHILD = r"""
import json, os, sys, time
if sys.argv[1] == "python":
    os.environ["HOUSEKEEPER_PURE_PYTHON"] = "1"
sys.path.insert(0, sys.argv[4])
from housekeeper import scan
assert scan.IMPLEMENTATION == sys.argv[1], scan.IMPLEMENTATION
whitelist = json.loads(sys.argv[3])
t0 = time.perf_counter()
r = scan.scan_file(sys.argv[2], error_whitelist=whitelist)
t1 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(json.dumps({"seconds": t1 - t0, "errors": r.errors, "excused": r.excused,
                  "lines": r.end_line - 1, "vmhwm_kib": int(hwm[0].split()[1]) if hwm else 0}))
"""


TIME = "/usr/bin/time"  # GNU time: forks the measured command from a small process


def _run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, int]:
    """Run argv; returns (wall seconds, stdout, peak RSS in KiB of that command).

    Linux carries the parent's RSS high-water mark across fork/vfork + exec into the
    child's ru_maxrss, so the command is started by GNU time (a tiny process) when it
    is installed; otherwise the RSS is the child's own VmHWM (scanners only) or 0.
    """
    timed = os.path.exists(TIME)
    full = [TIME, "-f", "RSS_KIB=%M", *argv] if timed else argv
    t0 = time.perf_counter()
    proc = subprocess.run(full, check=False, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # grep -c exits 1 when it counts 0
        raise RuntimeError(f"{argv[:3]} failed with {proc.returncode}: {proc.stderr.decode()}")
    rss = 0
    for line in proc.stderr.decode().splitlines():
        if line.startswith("RSS_KIB="):
            rss = int(line.split("=", 1)[1])
    return wall, proc.stdout.decode(), rss


def measure_scanner(impl: str, path: Path, runs: int) -> dict[str, float]:
    times, rss, result = [], [], {}
    for _ in range(runs):
        _, out, maxrss = _run_child(
            [sys.executable, "-c", CHILD, impl, str(path), json.dumps(WHITELIST), str(ROOT / "src")]
        )
        result = json.loads(out)
        times.append(result["seconds"])
        rss.append(maxrss or result["vmhwm_kib"])
    return {"seconds": statistics.median(times), "rss_kib": max(rss), "errors": result["errors"],
            "excused": result["excused"], "lines": result["lines"], "runs": runs}


def grep_command(path: Path) -> list[str]:
    return ["grep", "-c", "-i", "-E", "|".join(DEFAULT_ERROR_PATTERNS), str(path)]


def measure_grep(path: Path, runs: int, locale: str) -> dict[str, float]:
    env = dict(os.environ, LC_ALL=locale)
    times, rss, count = [], [], 0
    for _ in range(runs):
        wall, out, maxrss = _run_child(grep_command(path), env=env)
        times.append(wall)
        rss.append(maxrss)
        count = int(out.strip() or 0)
    return {"seconds": statistics.median(times), "rss_kib": max(rss), "errors": count, "runs": runs}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    grep_version = subprocess.run(
        ["grep", "--version"], check=False, capture_output=True, text=True
    ).stdout
    return (
        f"{os.cpu_count()} CPUs (nproc), {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {grep_version.splitlines()[0]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="corpus sizes in MB (default 100,1000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--python-runs", type=int, default=3, help="runs of the Python twin")
    parser.add_argument("--python-max", type=int, default=1000,
                        help="largest corpus (MB) the slow Python twin is run on")
    parser.add_argument("--delete", action="store_true", help="delete the corpora afterwards")
    parser.add_argument("--write-readme", action="store_true",
                        help='write the table into the "## Log scanner" section of benchmarks/README.md')
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    from housekeeper import scan

    if not scan.COMPILED:
        sys.exit("the compiled scanner is not built: python setup.py build_ext --inplace")
    empty = OUT / "empty.log"
    OUT.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    baseline = measure_scanner("cython", empty, 1)["rss_kib"]

    rows = []
    paths = []
    for size in sizes:
        path = corpus(size)
        paths.append(path)
        nbytes = path.stat().st_size
        with open(path, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass
        mb = nbytes / 1e6
        measurements = [("Cython `scan_file`", measure_scanner("cython", path, args.runs))]
        if size <= args.python_max:
            measurements.append(
                ("Python twin `scan_file`", measure_scanner("python", path, args.python_runs))
            )
        measurements.append(("`grep -c -i -E` (LC_ALL=C)", measure_grep(path, args.runs, "C")))
        measurements.append(
            ("`grep -c -i -E` (LC_ALL=C.UTF-8)", measure_grep(path, args.runs, "C.UTF-8"))
        )
        for name, m in measurements:
            rows.append((size, mb, name, m))
            excused = f"  excused={m['excused']}" if "excused" in m else ""
            print(f"{size:>6} MB  {name:<34} {m['seconds']:8.3f} s  {mb / m['seconds']:9.0f} MB/s"
                  f"  RSS {m['rss_kib'] / 1024:7.1f} MiB  errors={m['errors']}{excused}", flush=True)
        counts = {m["errors"] for _, _, _, m in rows[-len(measurements):]}
        if len(counts) != 1:
            print(f"WARNING: the tools disagree on the number of error lines: {counts}")

    command = f"python benchmarks/bench_scan.py --sizes {args.sizes} --runs {args.runs}"
    if args.python_max != 1000:
        command += f" --python-max {args.python_max}"
    python_note = (
        f"The Python twin (the fallback) is run {args.python_runs} times per corpus (median)."
        if all(size <= args.python_max for size in sizes)
        else f"The Python twin is only run on corpora up to {args.python_max} MB (it is much slower)."
    )
    table = [
        "| corpus | tool | median time | throughput | peak RSS | error lines (excused) | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, mb, name, m in rows:
        excused = f" ({m['excused']})" if "excused" in m else ""
        table.append(
            f"| {size} MB | {name} | {m['seconds']:.3f} s | {mb / m['seconds']:,.0f} MB/s "
            f"| {m['rss_kib'] / 1024:.1f} MiB | {m['errors']}{excused} | {m['runs']} |"
        )
    section = "\n".join([
        "## Log scanner",
        "",
        f"Machine: {machine()}. Prefilter width: {getattr(scan._impl, 'FILTER_WIDTH', '?')} bytes.",
        "",
        (f"Command: `{command} --write-readme` (from the repository root, after "
        "`python setup.py build_ext --inplace`)."),
        "",
        *table,
        "",
        (f"Corpus: lines of ~85 bytes (training loops, MPI, NCCL, I/O, solver progress), about one error "
        f"line per {ERROR_EVERY:,}, 30% of those excused by the whitelist {WHITELIST!r}; the 11 default "
        "patterns. Warm page cache; scanner time is `scan_file` inside a fresh child process, grep time "
        "the wall time of its process. Peak RSS is GNU time's `%M` for each child; a child that imports the "
        f"scanner and scans an empty file peaks at {baseline / 1024:.1f} MiB, so the scan itself adds "
        "the difference, which does not grow with the file (1 MiB read buffer plus scratch). "
        f"{python_note} "
        "grep is shown in the C locale (bytes, as our rules) and in C.UTF-8 (this machine's default). "
        "The Cython scanner compares one case-folded trigram per pattern at 16 or 32 positions at once "
        "(SSE2, or AVX2 when the CPU has it) and verifies only the rare candidates; the corpora are kept "
        "in `benchmarks/out/` for the next run unless `--delete` is given. "
        "The tools must agree on the number of error lines; the script warns otherwise."),
        "",
    ])
    print()
    print(section)
    if args.write_readme:
        write_section(section)
    if args.delete:
        for path in paths:
            path.unlink(missing_ok=True)
        empty.unlink(missing_ok=True)
        if OUT.exists() and not any(OUT.iterdir()):
            shutil.rmtree(OUT)


def write_section(section: str) -> None:
    """Replace (or add) the "## Log scanner" section of benchmarks/README.md only."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Log scanner"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").splitlines() + [""] + lines[end:])
    README.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
