"""The README's Quick Start, runnable as it is: `python examples/quickstart.py`.

It runs where it finds a scheduler (SLURM, then PBS) and on this machine otherwise. The jobs
run in this folder (examples/), where process.py and analyze.py live.
"""
import logging
import os

from housekeeper import housekeeper

os.chdir(os.path.dirname(os.path.abspath(__file__)))
logging.basicConfig(level=logging.INFO, format="%(message)s")
if not os.path.exists("data.fits"):
    with open("data.fits", "w") as data:
        data.write("raw data\n")

# Single directory for all jobs in this code run
hk = housekeeper(jobs_dir="./my_pipeline_run")

# Submit a job (optional: name the subdirectory)
job1 = hk.submit(
    command="python process.py --input data.fits",
    name="process",
    job_subdir="preprocessing",  # Custom subdir name
    cpus=8,
    memory="32GB",
    walltime="02:00:00",
    expected_files=["output.fits"],
)

# Submit dependent job
job2 = hk.submit(
    command="python analyze.py --input output.fits",
    name="analyze",
    job_subdir="analysis",
    after_ok=[job1],
)

# Monitor until completion
hk.monitor([job1, job2], poll_interval=2)

# Check results
for job in hk.list_jobs():
    print(f"{job['name']}: {job['status']}")

print(hk.list_jobs().select("job_id", "name", "status", "reason", "attempt", "scheduler_id", "job_subdir"))
