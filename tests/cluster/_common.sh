# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the scripts that source this
# Shared helpers for slurm-up.sh / slurm-down.sh.  Sourced, never run.
#
# Everything the private test cluster owns lives under $HK_SLURM_DIR
# (default /tmp/hk-slurm).  Daemons are tracked by pid files in there and are
# only ever stopped by the pid recorded in them (never by name).

HK_SLURM_DIR=${HK_SLURM_DIR:-/tmp/hk-slurm}
HK_SLURM_DIR=${HK_SLURM_DIR%/}
HK_CLUSTER_NAME=${HK_SLURM_CLUSTER_NAME:-hkcluster}
HK_DB_PORT=${HK_SLURM_DB_PORT:-13306}
HK_CTLD_PORT=${HK_SLURM_CTLD_PORT:-6817}
HK_SLURMD_PORT=${HK_SLURM_SLURMD_PORT:-6818}
HK_DBD_PORT=${HK_SLURM_DBD_PORT:-6819}

HK_CONF=$HK_SLURM_DIR/slurm.conf
HK_DBD_CONF=$HK_SLURM_DIR/slurmdbd.conf
HK_RUN=$HK_SLURM_DIR/run
HK_LOG=$HK_SLURM_DIR/log
HK_MYSQL=$HK_SLURM_DIR/mysql
HK_MYSQL_DATA=$HK_MYSQL/data
HK_MYSQL_RUN=$HK_MYSQL/run
HK_MYSQL_SOCK=$HK_MYSQL_RUN/mariadbd.sock
HK_MYSQL_CNF=$HK_SLURM_DIR/my.cnf

PID_CTLD=$HK_RUN/slurmctld.pid
PID_SLURMD=$HK_RUN/slurmd.pid
PID_DBD=$HK_RUN/slurmdbd.pid
PID_MYSQL=$HK_MYSQL_RUN/mariadbd.pid
PID_MUNGE_OURS=$HK_RUN/munged.pid # exists only when we started munged

LOG_CTLD=$HK_LOG/slurmctld.log
LOG_SLURMD=$HK_LOG/slurmd.log
LOG_DBD=$HK_LOG/slurmdbd.log
LOG_MYSQL=$HK_LOG/mariadbd.log
LOG_MUNGE=/var/log/munge/munged.log

export SLURM_CONF=$HK_CONF

# hk_lock: serialise slurm-up.sh / slurm-down.sh runs on the same folder (fd 9;
# every daemon is started with 9>&- so that none of them inherits the lock).
hk_lock() {
    mkdir -p "$HK_SLURM_DIR"
    exec 9>"$HK_SLURM_DIR/.lock"
    if ! flock -n 9; then
        hk_say "another slurm-up.sh/slurm-down.sh is working on $HK_SLURM_DIR; waiting for it"
        flock -w 600 9 || hk_die "gave up waiting for the lock on $HK_SLURM_DIR/.lock"
    fi
}

hk_say() { printf 'hk-slurm: %s\n' "$*" >&2; }

# hk_die MESSAGE [LOGFILE...]: print the message and the tail of each log, exit 1.
hk_die() {
    local msg=$1
    shift
    printf '\nhk-slurm: ERROR: %s\n' "$msg" >&2
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf -- '---- last lines of %s ----\n' "$f" >&2
            tail -n 30 "$f" >&2 || true
            printf -- '---- end of %s ----\n' "$f" >&2
        elif [[ -n $f ]]; then
            printf -- '---- %s: missing or empty ----\n' "$f" >&2
        fi
    done
    exit 1
}

# hk_pid_alive PIDFILE [COMM]: true when the pid in PIDFILE is a live process
# (and, with COMM, that process's name is COMM).  Prints the pid.
hk_pid_alive() {
    local pidfile=$1 comm=${2:-} pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null) || return 1
    [[ -n $pid ]] || return 1
    [[ -d /proc/$pid ]] || return 1
    # A zombie is not alive for our purposes.
    if [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]]; then return 1; fi
    if [[ -n $comm ]]; then
        local actual
        actual=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
        [[ $actual == "$comm" ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# hk_stop_pidfile NAME PIDFILE COMM [TIMEOUT_S]: SIGTERM the process recorded in
# PIDFILE, wait for it to go, SIGKILL it after TIMEOUT_S.  Removes the pid file.
hk_stop_pidfile() {
    local name=$1 pidfile=$2 comm=$3 timeout=${4:-20} pid i
    if ! pid=$(hk_pid_alive "$pidfile" "$comm"); then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        [[ -d /proc/$pid ]] || break
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        hk_say "$name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.3
    fi
    rm -f "$pidfile"
    hk_say "stopped $name (pid $pid)"
}

# hk_wait TIMEOUT_S CMD...: run CMD every 0.2 s until it succeeds; false on timeout.
hk_wait() {
    local timeout=$1 end
    shift
    end=$((SECONDS + timeout))
    while true; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        ((SECONDS >= end)) && return 1
        sleep 0.2
    done
}

# hk_wait_daemon TIMEOUT PIDFILE COMM CMD...: wait until CMD succeeds (0);
# 1 on timeout; 2 as soon as the daemon is gone (its pid file never appeared
# within 5 s, or its process died).
hk_wait_daemon() {
    local timeout=$1 pidfile=$2 comm=$3 end grace seen=0
    shift 3
    end=$((SECONDS + timeout))
    grace=$((SECONDS + 5))
    while true; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if hk_pid_alive "$pidfile" "$comm" >/dev/null; then
            seen=1
        elif ((seen || SECONDS >= grace)); then
            # one more look: the daemon may have just replaced its pid file
            sleep 0.3
            hk_pid_alive "$pidfile" "$comm" >/dev/null || return 2
        fi
        ((SECONDS >= end)) && return 1
        sleep 0.2
    done
}

hk_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

hk_ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

hk_munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

hk_mysql_admin() {
    local bin
    bin=$(command -v mariadb-admin || command -v mysqladmin) || return 1
    "$bin" --no-defaults --socket="$HK_MYSQL_SOCK" -u root "$@"
}

hk_mysql() {
    local bin
    bin=$(command -v mariadb || command -v mysql) || return 1
    "$bin" --no-defaults --socket="$HK_MYSQL_SOCK" -u root "$@"
}
