#!/bin/bash
# A flaky SLURM client command, for tests/test_flaky_scheduler.py. Installed under the names
# sbatch, squeue, sacct, scancel and scontrol in a folder put first on PATH; runs the real
# command from $HK_FAULT_REAL_DIR (default /usr/bin), except that for a share of the calls
# ($HK_FAULT_RATE percent, default 30) it misbehaves the way a loaded or failing controller does:
#
#   fail      print the real SLURM error message for this command and exit 1 (nothing done)
#   hang      sleep far past any sane timeout (nothing done); the caller must kill it
#   late      sbatch only: submit for real, then hang (the job exists, its id never arrives)
#   truncate  run the real command, then print its stdout cut in the middle of a line
#
# Decisions are seeded ($HK_FAULT_SEED) and taken per call, numbered through a counter file
# in $HK_FAULT_DIR (which also gets one line per call in calls.log: number, program, fault).
# $HK_FAULT_KINDS restricts the faults used (space-separated, default all of them).
set -u
program=${0##*/}
real_dir=${HK_FAULT_REAL_DIR:-/usr/bin}
state=${HK_FAULT_DIR:?HK_FAULT_DIR must name a folder for the call counter}
rate=${HK_FAULT_RATE:-30}
kinds=${HK_FAULT_KINDS:-fail hang late truncate}

number=$(
    exec 9>>"$state/counter.lock"
    flock 9
    n=$(( $(cat "$state/counter" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$state/counter"
    echo "$n"
)
RANDOM=$(( ${HK_FAULT_SEED:-1} * 100003 + number ))
roll=$(( RANDOM % 100 ))
fault=none
if (( roll < rate )); then
    read -r -a choices <<< "$kinds"
    [ "$program" = sbatch ] || choices=("${choices[@]/late/}")
    read -r -a choices <<< "${choices[*]}"
    if (( ${#choices[@]} )); then
        fault=${choices[RANDOM % ${#choices[@]}]}
    fi
fi
echo "$number $program $fault" >> "$state/calls.log"

fail() {
    case $program in
        sbatch) echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2 ;;
        squeue) echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2 ;;
        sacct)
            echo "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to host:127.0.0.1:6819: Connection refused" >&2
            echo "sacct: error: Sending PersistInit msg: Connection refused" >&2
            echo "sacct: error: Problem talking to the database: Connection refused" >&2 ;;
        scancel) echo "scancel: error: Kill job error on job id $*: Unable to contact slurm controller (connect failure)" >&2 ;;
        *) echo "slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)" >&2 ;;
    esac
    exit 1
}

case $fault in
    fail) fail "$@" ;;
    hang) sleep 3600; fail "$@" ;;
    late)
        out=$("$real_dir/$program" "$@"); rc=$?
        echo "$number $program submitted-then-hung rc=$rc ${out//$'\n'/ }" >> "$state/calls.log"
        sleep 3600
        exit "$rc" ;;
    truncate)
        out=$("$real_dir/$program" "$@"; echo "rc=$?")
        rc=${out##*rc=}
        out=${out%rc=*}
        # cut inside a line: never right after a newline, never at the very end
        if (( ${#out} > 1 )); then
            cut=$(( RANDOM % (${#out} - 1) + 1 ))
            while (( cut > 1 )) && [ "${out:cut-1:1}" = $'\n' ]; do cut=$(( cut - 1 )); done
            [ "${out:cut-1:1}" = $'\n' ] || out=${out:0:cut}
        fi
        printf '%s' "$out"
        exit "$rc" ;;
    *) exec "$real_dir/$program" "$@" ;;
esac
