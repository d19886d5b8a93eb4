#!/usr/bin/env bash
# Installs housekeeper with its test extras, brings up the private SLURM test cluster
# (tests/cluster/slurm-up.sh: needs root and apt-get), and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k local -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v chromium >/dev/null 2>&1; then  # the HTML report is checked in a real browser
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
    bash tests/cluster/slurm-up.sh --accounting
    # shellcheck disable=SC1091
    source "${HK_SLURM_DIR:-/tmp/hk-slurm}/env.sh"
    export HK_SLURM_UP=1
elif [ "${CI:-}" = "true" ]; then
    echo "CI needs root and apt-get to bring up the SLURM test cluster" >&2
    exit 1
else
    echo "not root or no apt-get: the live SLURM tests will be skipped (say why: see tests/cluster/README.md)" >&2
fi
exec python3 -m pytest "$@"
