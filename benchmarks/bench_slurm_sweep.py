"""A sweep on the live SLURM test cluster: submit to all complete, and scheduler commands used.

Four ways to run the same N tiny jobs (`echo <i>` with its output in a folder per job), side by
side in one run:
  housekeeper   hk.submit() x N, hk.monitor()  (arrays, one squeue per poll, verdicts)
  bare array    one `sbatch --array` of a script that does the same work, then a squeue loop
                (the floor: what the cluster itself costs)
  sbatch x N    one `sbatch` per job, then the same squeue loop
  submitit      submitit's `executor.map_array(work, range(N))`, then `job.result()` for each,
                in a child process; submitit is pip-installed into benchmarks/.submitit (its own
                folder, not a housekeeper dependency) the first time. Its scheduler commands are
                counted by wrappers put first on its PATH.

Needs the cluster (bash tests/cluster/slurm-up.sh; source /tmp/hk-slurm/env.sh).
Usage: python benchmarks/bench_slurm_sweep.py [--jobs 10000] [--ways ...] [--write-readme]
"""
from __future__ import annotations

import argparse
import json
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


SUBMITIT_DIR = HERE / ".submitit"
SUBMITIT_CHILD = """
import json, os, sys, time
import submitit
root, jobs = sys.argv[1], int(sys.argv[2])

def work(i):
    folder = os.path.join(root, f"t{i:06d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "stdout.log"), "w") as handle:
        handle.write(f"{i}\\n")
    return i

executor = submitit.AutoExecutor(folder=os.path.join(root, "submitit", "%j"), cluster="slurm")
executor.update_parameters(timeout_min=10, slurm_partition="debug", mem_gb=0.1, slurm_array_parallelism=jobs)
start = time.monotonic()
handles = executor.map_array(work, range(jobs))
done = 0
for handle in handles:
    try:
        handle.result()
        done += 1
    except Exception as exc:
        print(f"task failed: {exc}", file=sys.stderr)
print("RESULT " + json.dumps({"seconds": time.monotonic() - start, "completed": done, "version": submitit.__version__}))
"""


def ensure_submitit() -> Path:
    """submitit in its own folder (pip --target), installed on first use."""
    if not (SUBMITIT_DIR / "submitit").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(SUBMITIT_DIR), "submitit"],
                       check=True)  # fmt: skip
    return SUBMITIT_DIR


def counting_path(root: Path, log: Path) -> str:
    """A PATH whose first folder wraps the SLURM commands: each call appends its name to `log`."""
    shims = root / "shims"
    shims.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scancel", "scontrol"):
        real = shutil.which(name)
        if real is None:
            continue
        shim = shims / name
        shim.write_text(f'#!/bin/bash\necho {name} >> {log}\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return f"{shims}:{os.environ.get('PATH', '')}"


def run_submitit(root: Path, jobs: int) -> dict[str, float]:
    target = ensure_submitit()
    log = root / "calls.log"
    env = dict(os.environ, PYTHONPATH=str(target), PATH=counting_path(root, log))
    out = subprocess.run([sys.executable, "-c", SUBMITIT_CHILD, str(root), str(jobs)], env=env, capture_output=True,
                         text=True)  # fmt: skip
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"submitit run failed: {out.stderr[-2000:]}")
    result = json.loads(line[len("RESULT "):])
    calls: dict[str, int] = {}
    for name in log.read_text().split() if log.exists() else []:
        calls[name] = calls.get(name, 0) + 1
    done = sum(1 for _ in root.glob("t*/stdout.log"))
    return {"seconds": result["seconds"], "completed": min(done, result["completed"]),
            "commands": sum(calls.values()), **calls}  # fmt: skip


WAYS = {"bare array": run_bare_array, "housekeeper": run_housekeeper, "sbatch x N": run_sbatch_each,
        "submitit": run_submitit}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of: {', '.join(WAYS)}")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.strip()
    results: dict[str, dict[str, float]] = {}
    ways = [w.strip() for w in args.ways.split(",")]
    if "bare array" not in ways:
        parser.error("--ways must include 'bare array' (the floor)")
    for name in ways:
        runner = WAYS[name]
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
        "Per task, the bare array and `sbatch x N` run a 3-line script. Housekeeper's task installs its",
        "job script from the array's manifest (its own header plus the run's shared body), writes its",
        "start marker, runs the command, and judges it: a clean job (exit 0, expected files there, no",
        "error pattern in its logs by `grep -F -i`) writes its exit record in bash; any other job runs",
        "the Python finisher. submitit's task starts Python, unpickles the function, runs it and pickles",
        "the result; its driver reads one result file per job and asks `sacct` at intervals that grow",
        "with the run's age (up to 10 minutes apart). All of it shares the machine's 2 real cores with",
        "the 32 task slots the test node claims.",
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
