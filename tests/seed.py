"""The seed README's Quick Start, as written, for every backend's tests to run."""
from __future__ import annotations

from pathlib import Path

from housekeeper import Housekeeper


def write_quick_start_programs(workdir: Path) -> None:
    """Small real stand-ins for the seed's process.py and analyze.py."""
    (workdir / "process.py").write_text("open('output.fits', 'w').write('x')\nprint('processed')\n")
    (workdir / "analyze.py").write_text("print('analysed', open('output.fits').read())\n")


def submit_quick_start(hk: Housekeeper) -> tuple[int, int]:
    """The seed's two submit() calls, verbatim; returns (job1, job2)."""
    job1 = hk.submit(
        command="python process.py --input data.fits",
        name="process",
        job_subdir="preprocessing",  # Custom subdir name
        cpus=8,
        memory="32GB",
        walltime="02:00:00",
        expected_files=["output.fits"],
    )
    job2 = hk.submit(
        command="python analyze.py --input output.fits",
        name="analyze",
        job_subdir="analysis",
        after_ok=[job1],
    )
    return job1, job2
