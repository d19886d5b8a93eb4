#!/usr/bin/env bash
# Stop the private SLURM test cluster started by slurm-up.sh: cancel its jobs,
# then stop slurmctld, slurmd, slurmdbd, mariadbd and (only when slurm-up.sh
# started it) munged, each by the pid recorded in $HK_SLURM_DIR.  Idempotent.
#
#   bash tests/cluster/slurm-down.sh            stop daemons, keep state/logs
#   bash tests/cluster/slurm-down.sh --purge    also delete $HK_SLURM_DIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/_common.sh
source "$HERE/_common.sh"

PURGE=0
for arg in "$@"; do
    case $arg in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) hk_die "unknown argument: $arg" ;;
    esac
done
[[ $(id -u) -eq 0 ]] || hk_die "must run as root"

if [[ ! -d $HK_SLURM_DIR ]]; then
    hk_say "nothing to stop ($HK_SLURM_DIR does not exist)"
    exit 0
fi
hk_lock

# Jobs first, so that no slurmstepd outlives slurmd.
if [[ -f $HK_CONF ]] && hk_pid_alive "$PID_CTLD" slurmctld >/dev/null && hk_ctld_up; then
    mapfile -t jobs < <(squeue -h -o '%A' -t pending,running,suspended,completing 2>/dev/null || true)
    if ((${#jobs[@]})); then
        hk_say "cancelling ${#jobs[@]} job(s)"
        scancel "${jobs[@]}" 2>/dev/null || true
        hk_wait 15 bash -c '[[ -z $(squeue -h -o %A -t pending,running,suspended,completing 2>/dev/null) ]]' || true
    fi
fi

hk_stop_pidfile slurmctld "$PID_CTLD" slurmctld 30
hk_stop_pidfile slurmd "$PID_SLURMD" slurmd 20
# Step daemons of jobs that were still running when slurmd stopped: only ours,
# i.e. those whose environment (inherited from our slurmd) has our SLURM_CONF.
for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && continue
    if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$HK_CONF"; then
        kill -KILL "$pid" 2>/dev/null || true
        hk_say "killed leftover slurmstepd (pid $pid)"
    fi
done
hk_stop_pidfile slurmdbd "$PID_DBD" slurmdbd 30
hk_stop_pidfile mariadbd "$PID_MYSQL" mariadbd 60
if [[ -f $PID_MUNGE_OURS ]]; then
    hk_stop_pidfile munged "$PID_MUNGE_OURS" munged 10
else
    hk_say "munged: not started by slurm-up.sh, left alone"
fi

if ((PURGE)); then
    rm -rf "$HK_SLURM_DIR"
    if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$HK_CONF" ]]; then
        rm -f /etc/slurm/slurm.conf
    fi
    hk_say "removed $HK_SLURM_DIR"
fi
hk_say "down"
