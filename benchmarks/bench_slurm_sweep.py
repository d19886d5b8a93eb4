"""A sweep on the live SLURM test cluster: submit to all complete, and scheduler commands used.

Three ways to run the same N tiny jobs (`echo <i>` with its output in a folder per job), side by
side in one run:
  housekeeper   hk.submit() x N, hk.monitor()  (arrays, one squeue per poll, verdicts)
  bare array    one `sbatch --array` of a script that does the same work, then a squeue loop
                (the floor: what the cluster itself costs)
  sbatch x N    one `sbatch` per job, then the same squeue loop

Needs the cluster (bash tests/cluster/slurm-up.sh; source /tmp/hk-slurm/env.sh).
Usage: python benchmarks/bench_slurm_sweep.py [--jobs 10000] [--write-readme]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from housekeeper import JobStatus, housekeeper  # noqa: E402
from housekeeper.runner import Runner  # noqa: E402

POLL = 2.0


def wait_queue_empty(job_ids: set[str], calls: dict[str, int]) -> None:
    """Poll squeue (one call per poll, as a careful user would) until these jobs are gone."""
    bases = ",".join(sorted(job_ids))
    while True:
        calls["squeue"] = calls.get("squeue", 0) + 1
        out = subprocess.run(["squeue", "-h", "-r", "-j", bases, "-o", "%i|%T"], capture_output=True, text=True)
        active = [line for line in out.stdout.splitlines() if line.split("|")[-1] in
                  ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")]  # fmt: skip
        if out.returncode == 0 and not active:
            return
        time.sleep(POLL)


def run_housekeeper(root: Path, jobs: int) -> dict[str, float]:
    runner = Runner()
    os.chdir(root)
    start = time.monotonic()
    hk = housekeeper(jobs_dir=root / "run", scheduler="slurm", runner=runner, file_grace=5)
    ids = [hk.submit(f"echo {i}", name="sweep", job_subdir=f"t{i:06d}", memory="100MB") for i in range(jobs)]
    results = hk.monitor(ids, poll_interval=POLL)
    elapsed = time.monotonic() - start
    done = sum(1 for s in results.values() if s is JobStatus.COMPLETED)
    hk.close()
    return {"seconds": elapsed, "completed": done, "commands": sum(runner.calls.values()),
            "sbatch": runner.calls["sbatch"], "squeue": runner.calls["squeue"], "sacct": runner.calls["sacct"]}


JOB_SCRIPT = """#!/bin/bash
#SBATCH --mem=100M
#SBATCH --output=/dev/null
i=${{SLURM_ARRAY_TASK_ID:-$1}}
d={root}/t$(printf %06d "$i")
mkdir -p "$d" && echo "$i" > "$d/stdout.log"
"""


def run_bare_array(root: Path, jobs: int) -> dict[str, float]:
    script = root / "task.sh"
    script.write_text(JOB_SCRIPT.format(root=root))
    calls: dict[str, int] = {}
    start = time.monotonic()
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{jobs - 1}", str(script)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    calls["sbatch"] = 1
    wait_queue_empty({out.stdout.strip().split(";")[0]}, calls)
    elapsed = time.monotonic() - start
    done = sum(1 for _ in root.glob("t*/stdout.log"))
    return {"seconds": elapsed, "completed": done, "commands": sum(calls.values()), **calls}


def run_sbatch_each(root: Path, jobs: int) -> dict[str, float]:
    script = root / "task.sh"
    script.write_text(JOB_SCRIPT.format(root=root))
    calls: dict[str, int] = {"sbatch": 0}
    start = time.monotonic()
    ids: set[str] = set()
    for i in range(jobs):
        out = subprocess.run(["sbatch", "--parsable", str(script), str(i)], capture_output=True, text=True)
        calls["sbatch"] += 1
        if out.returncode == 0:
            ids.add(out.stdout.strip().split(";")[0])
    # squeue -j with thousands of ids: ask in one call per poll for all of the user's jobs instead
    while True:
        calls["squeue"] = calls.get("squeue", 0) + 1
        out = subprocess.run(["squeue", "-h", "-u", os.environ.get("USER", "root"), "-o", "%i"],
                             capture_output=True, text=True)  # fmt: skip
        if out.returncode == 0 and not (set(out.stdout.split()) & ids):
            break
        time.sleep(POLL)
    elapsed = time.monotonic() - start
    done = sum(1 for _ in root.glob("t*/stdout.log"))
    return {"seconds": elapsed, "completed": done, "commands": sum(calls.values()), **calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.strip()
    results: dict[str, dict[str, float]] = {}
    for name, runner in (("bare array", run_bare_array), ("housekeeper", run_housekeeper),
                         ("sbatch x N", run_sbatch_each)):  # fmt: skip
        root = Path(tempfile.mkdtemp(prefix="hk-bench-", dir="/tmp"))
        try:
            results[name] = runner(root, args.jobs)
        finally:
            os.chdir("/")
            shutil.rmtree(root, ignore_errors=True)
        print(name, results[name], flush=True)
    floor = results["bare array"]["seconds"]
    lines = [
        f"## SLURM sweep: {args.jobs:,} tasks, submit to all complete",
        "",
        f"Live test cluster ({version}, one node claiming 32 CPUs on a 2-core machine), one run, side by side.",
        f"Command: `python benchmarks/bench_slurm_sweep.py --jobs {args.jobs} --write-readme`",
        "",
        "| way | submit → all complete | vs bare array | completed | scheduler commands | sbatch | squeue | sacct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['seconds']:.1f} s | {r['seconds'] / floor:.2f}× | {int(r['completed']):,} | "
            f"{int(r['commands']):,} | {int(r.get('sbatch', 0)):,} | {int(r.get('squeue', 0)):,} | "
            f"{int(r.get('sacct', 0)):,} |"
        )
    lines += [
        "",
        "The bare array runs a trivial script per task; housekeeper's tasks also write their start",
        "marker and run the finisher (log scan, expected files, exit record) in Python, so part of the",
        "gap to the floor is that work on the machine's 2 real cores, not scheduler traffic.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        readme = HERE / "README.md"
        current = readme.read_text() if readme.exists() else "# Benchmarks\n"
        start = current.find("## SLURM sweep")
        if start >= 0:
            end = current.find("\n## ", start + 1)
            current = current[:start] + (current[end + 1:] if end >= 0 else "")
        readme.write_text(current.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
