#!/usr/bin/env bash
# Every benchmark, each writing its own section of benchmarks/README.md (and scale.png).
# From a fresh clone, as root on a machine with apt-get (the SLURM sweep needs the test cluster):
#   bash benchmarks/run_all.sh
# Takes about an hour on 2 cores: the scanner (a few minutes), the scale figures (about
# 10 minutes) and the live 10,000-task sweep, four ways (about 45 minutes). Run it on an
# otherwise idle machine: the figures are medians, but other work still slows them down.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
bash tests/cluster/slurm-up.sh --accounting
# shellcheck disable=SC1091
source "${HK_SLURM_DIR:-/tmp/hk-slurm}/env.sh"
python3 benchmarks/bench_scan.py --sizes 100,1000 --runs 5 --write-readme
python3 benchmarks/bench_scale.py --sizes 10000,100000,1000000 --runs 3 --write-readme
python3 benchmarks/bench_slurm_sweep.py --jobs 10000 --write-readme
