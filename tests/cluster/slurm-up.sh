#!/usr/bin/env bash
# Bring up (or re-mode, or repair) the private single-node SLURM test cluster.
#
#   bash tests/cluster/slurm-up.sh [--accounting|--no-accounting]   (default --accounting)
#   bash tests/cluster/slurm-up.sh --stop-controller | --start-controller
#   bash tests/cluster/slurm-up.sh --stop-dbd | --start-dbd
#   bash tests/cluster/slurm-up.sh --status
#
# Idempotent: when the cluster is already up in the requested mode it only
# checks it; in the other mode it rewrites slurm.conf and restarts the SLURM
# daemons (job state is kept).  Fails with a non-zero exit, a message and the
# tail of the relevant daemon log when anything does not come up.
# Then: source "$HK_SLURM_DIR/env.sh"  (or: export SLURM_CONF=$HK_SLURM_DIR/slurm.conf)
# See tests/cluster/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/_common.sh
source "$HERE/_common.sh"

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

MODE=accounting
ACTION=up
for arg in "$@"; do
    case $arg in
    --accounting) MODE=accounting ;;
    --no-accounting) MODE=none ;;
    --stop-controller) ACTION=stop-controller ;;
    --start-controller) ACTION=start-controller ;;
    --stop-dbd) ACTION=stop-dbd ;;
    --start-dbd) ACTION=start-dbd ;;
    --status) ACTION=status ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; hk_die "unknown argument: $arg" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || hk_die "must run as root (it installs packages and starts daemons)"

T0=$SECONDS
[[ $ACTION == status ]] || hk_lock
HOST=$(hostname -s)
NODE=${HK_SLURM_NODE_NAME:-$HOST}
CPUS=${HK_SLURM_CPUS:-32}
MEMORY=${HK_SLURM_MEMORY:-64000}
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || hk_die "HK_SLURM_CPUS must be a positive integer, got '$CPUS'"
[[ $MEMORY =~ ^[1-9][0-9]*$ ]] || hk_die "HK_SLURM_MEMORY must be a positive integer (MB), got '$MEMORY'"

# ---------------------------------------------------------------- packages
REQUIRED_BINS=(slurmctld slurmd sbatch squeue sacct scontrol sacctmgr munged munge unmunge
    slurmdbd qsub qstat qdel)
install_packages() {
    local missing=() b
    for b in "${REQUIRED_BINS[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
    command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1 || missing+=(mariadbd)
    command -v mariadb-install-db >/dev/null 2>&1 || command -v mysql_install_db >/dev/null 2>&1 ||
        missing+=(mariadb-install-db)
    ((${#missing[@]} == 0)) && return 0
    hk_say "missing ${missing[*]}: installing packages (apt-get)"
    # Keep package scripts from starting the distribution's own services
    # (there is no init system; we start our own private daemons).
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0 aptlog=/tmp/hk-slurm-apt.$$.log
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                slurmctld slurmd slurm-client munge slurmdbd mariadb-server mariadb-client slurm-wlm-torque
    } </dev/null >"$aptlog" 2>&1 || rc=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || hk_die "apt-get failed (exit $rc)" "$aptlog"
    rm -f "$aptlog"
    for b in "${REQUIRED_BINS[@]}"; do
        command -v "$b" >/dev/null 2>&1 || hk_die "still missing after apt-get install: $b"
    done
}

slurm_version() { slurmctld -V 2>/dev/null | awk '{print $2}'; }
# version_ge X.Y: is the installed SLURM at least X.Y?
version_ge() {
    local have=${SLURM_VERSION%%-*} want=$1
    [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) == "$want" ]]
}

# ---------------------------------------------------------------- config
render() { # render TEMPLATE OUT [MODE]: fill in the @KEY@s; false when OUT is unchanged
    local tmpl=$1 out=$2 mode=${3:-644} tmp
    tmp=$(mktemp "$out.XXXXXX")
    chmod "$mode" "$tmp"
    sed -e "s|@DIR@|$HK_SLURM_DIR|g" \
        -e "s|@HOST@|$HOST|g" \
        -e "s|@NODE@|$NODE|g" \
        -e "s|@CLUSTER@|$HK_CLUSTER_NAME|g" \
        -e "s|@CTLD_PORT@|$HK_CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$HK_SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$HK_DBD_PORT|g" \
        -e "s|@DB_PORT@|$HK_DB_PORT|g" \
        -e "s|@DB_PASS@|${DB_PASS:-}|g" \
        -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEMORY@|$MEMORY|g" \
        -e "s|@MODE@|${MODE}|g" \
        -e "s|@SLURM_VERSION@|${SLURM_VERSION:-}|g" \
        -e "s|@ACCT_STORAGE@|${ACCT_STORAGE:-}|g" \
        -e "s|@SCHED_PARAMS@|${SCHED_PARAMS:-}|g" \
        -e "s|@SELECT_PARAMS@|${SELECT_PARAMS:-}|g" \
        -e "s|@DEF_MEM_LINE@|${DEF_MEM_LINE:-}|g" \
        -e "s|@PROCTRACK@|${PROCTRACK:-}|g" \
        -e "s|@TASK_PLUGIN@|${TASK_PLUGIN:-}|g" \
        -e "s|@JOBACCT_PARAMS_LINE@|${JOBACCT_PARAMS_LINE:-}|g" \
        "$HERE/$tmpl" >"$tmp"
    if [[ -f $out ]] && cmp -s "$tmp" "$out"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    mv -f "$tmp" "$out"
    return 0 # changed
}

make_dirs() {
    mkdir -p "$HK_SLURM_DIR" "$HK_RUN" "$HK_LOG" "$HK_SLURM_DIR/state" "$HK_SLURM_DIR/spool/slurmd"
    chmod 755 "$HK_SLURM_DIR" "$HK_RUN" "$HK_LOG"
}

# cgroup v1 memory enforcement (HK_SLURM_CGROUP=auto|1|0, default auto): on
# when the v1 memory and freezer controllers are mounted and writable, unless an
# earlier run found that slurmd cannot use them ($HK_SLURM_DIR/cgroup.disabled).
CGROUP_OFF_MARK=$HK_SLURM_DIR/cgroup.disabled
cgroup_v1_usable() {
    local probe=/sys/fs/cgroup/memory/hk_probe_$$
    [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes && -d /sys/fs/cgroup/freezer ]] || return 1
    mkdir "$probe" 2>/dev/null || return 1
    rmdir "$probe" 2>/dev/null || true
}
use_cgroup() {
    case ${HK_SLURM_CGROUP:-auto} in
    1 | yes | on | true) return 0 ;;
    0 | no | off | false) return 1 ;;
    *) [[ ! -e $CGROUP_OFF_MARK ]] && cgroup_v1_usable ;;
    esac
}

write_slurm_conf() { # returns 0 when slurm.conf (or cgroup.conf) changed
    if [[ $MODE == accounting ]]; then
        ACCT_STORAGE=accounting_storage/slurmdbd
    else
        ACCT_STORAGE=accounting_storage/none
    fi
    SCHED_PARAMS=${HK_SLURM_SCHED_PARAMS:-sched_interval=2,bf_interval=1,sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000,bf_continue}
    SELECT_PARAMS=${HK_SLURM_SELECT_PARAMS:-CR_Core_Memory}
    if [[ $SELECT_PARAMS == *Memory* ]]; then
        # Jobs without --mem get this much per CPU (otherwise each would take the whole node).
        DEF_MEM_LINE="DefMemPerCPU=${HK_SLURM_DEF_MEM_PER_CPU:-$((MEMORY / CPUS))}"
    else
        DEF_MEM_LINE="# DefMemPerCPU not set: memory is not a consumable resource"
    fi
    local rc=1
    if use_cgroup; then
        CGROUP=1
        PROCTRACK=proctrack/cgroup
        TASK_PLUGIN=task/cgroup
        # The cgroup enforces --mem; jobacct's own kill would race it.
        JOBACCT_PARAMS_LINE="# JobAcctGatherParams: not set, the memory cgroup enforces --mem"
        render cgroup.conf.in "$HK_SLURM_DIR/cgroup.conf" && rc=0
    else
        CGROUP=0
        PROCTRACK=proctrack/linuxproc
        TASK_PLUGIN=task/none
        JOBACCT_PARAMS_LINE="JobAcctGatherParams=OverMemoryKill"
        if version_ge 24.05; then
            # From 24.05 slurmd initialises a cgroup plugin even with
            # proctrack/linuxproc + task/none, and dies where there is no
            # usable cgroup fs, unless told CgroupPlugin=disabled (a value
            # 22.05 does not know).
            render cgroup-disabled.conf.in "$HK_SLURM_DIR/cgroup.conf" && rc=0
        elif [[ -e $HK_SLURM_DIR/cgroup.conf ]]; then
            rm -f "$HK_SLURM_DIR/cgroup.conf"
            rc=0
        fi
    fi
    render slurm.conf.in "$HK_CONF" && rc=0
    chmod 644 "$HK_CONF"
    return $rc
}

write_env_sh() {
    local tmp
    tmp=$(mktemp "$HK_SLURM_DIR/env.sh.XXXXXX")
    cat >"$tmp" <<EOF
# Source this to talk to the private test cluster (written by tests/cluster/slurm-up.sh).
export SLURM_CONF=$HK_CONF
export HK_SLURM_DIR=$HK_SLURM_DIR
EOF
    chmod 644 "$tmp"
    mv -f "$tmp" "$HK_SLURM_DIR/env.sh"
}

# Belt and braces for clients that might not honour SLURM_CONF: point
# /etc/slurm/slurm.conf at ours when nothing else is there (never replaces a
# real file).  HK_SLURM_LINK_ETC=0 skips it (e.g. for a second, private cluster).
link_etc_conf() {
    [[ ${HK_SLURM_LINK_ETC:-1} == 1 ]] || return 0
    local etc=/etc/slurm/slurm.conf
    mkdir -p /etc/slurm
    if [[ -L $etc || ! -e $etc ]]; then
        if [[ $(readlink "$etc" 2>/dev/null) != "$HK_CONF" ]]; then
            ln -sfn "$HK_CONF" "$etc"
        fi
    else
        hk_say "note: $etc is a real file, left alone; clients must use SLURM_CONF"
    fi
}

# ---------------------------------------------------------------- munge
start_munge() {
    if hk_munge_ok; then return 0; fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        hk_say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            rm -f /etc/munge/munge.key
            mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 ||
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    local pid
    if pid=$(hk_pid_alive /run/munge/munged.pid munged); then
        hk_say "munged (pid $pid) is running but not answering yet; waiting"
    else
        # A dead munged leaves its socket and lock behind; munged refuses them.
        rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
        runuser -u munge -- munged </dev/null 9>&- >>"$HK_LOG/munged-start.log" 2>&1 ||
            hk_die "munged failed to start" "$HK_LOG/munged-start.log" "$LOG_MUNGE"
        if hk_wait 10 test -s /run/munge/munged.pid; then
            cp /run/munge/munged.pid "$PID_MUNGE_OURS"
        fi
    fi
    hk_wait 10 hk_munge_ok || hk_die "munge does not work ('munge -n | unmunge' fails)" "$LOG_MUNGE"
}

# ---------------------------------------------------------------- mariadb + slurmdbd
DB_PASS=
load_db_pass() {
    local f=$HK_SLURM_DIR/db.pass
    if [[ ! -s $f ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f")
    fi
    DB_PASS=$(cat "$f")
}

start_mariadb() {
    load_db_pass
    if render my.cnf.in "$HK_MYSQL_CNF"; then
        # Settings changed: restart the database (and slurmdbd, its client).
        hk_stop_pidfile slurmdbd "$PID_DBD" slurmdbd 30
        hk_stop_pidfile mariadbd "$PID_MYSQL" mariadbd 60
    fi
    if hk_pid_alive "$PID_MYSQL" mariadbd >/dev/null || hk_pid_alive "$PID_MYSQL" mysqld >/dev/null; then
        hk_wait 30 hk_mysql_admin ping || hk_die "mariadbd is running but does not answer" "$LOG_MYSQL"
    else
        mkdir -p "$HK_MYSQL_DATA" "$HK_MYSQL_RUN"
        chown mysql:mysql "$HK_MYSQL" "$HK_MYSQL_DATA" "$HK_MYSQL_RUN"
        touch "$LOG_MYSQL"
        chown mysql:mysql "$LOG_MYSQL"
        rm -f "$HK_MYSQL_SOCK" "$PID_MYSQL"
        if [[ ! -d $HK_MYSQL_DATA/mysql ]]; then
            hk_say "initialising MariaDB data directory"
            local installdb
            installdb=$(command -v mariadb-install-db || command -v mysql_install_db)
            "$installdb" --defaults-file="$HK_MYSQL_CNF" --user=mysql --datadir="$HK_MYSQL_DATA" \
                --auth-root-authentication-method=socket --skip-test-db \
                </dev/null >"$HK_LOG/mariadb-install-db.log" 2>&1 ||
                hk_die "mariadb-install-db failed" "$HK_LOG/mariadb-install-db.log"
        fi
        local daemon
        daemon=$(command -v mariadbd || command -v mysqld)
        # mariadbd does not daemonise itself: detach it from this shell.
        setsid "$daemon" --defaults-file="$HK_MYSQL_CNF" </dev/null 9>&- >>"$LOG_MYSQL" 2>&1 &
        local rc=0
        hk_wait_daemon 60 "$PID_MYSQL" "$(basename "$daemon")" hk_mysql_admin ping || rc=$?
        ((rc == 2)) && hk_die "mariadbd exited during startup" "$LOG_MYSQL"
        ((rc == 0)) || hk_die "mariadbd did not answer within 60 s" "$LOG_MYSQL"
    fi
    hk_mysql <<EOF || hk_die "could not create the slurmdbd database user" "$LOG_MYSQL"
CREATE DATABASE IF NOT EXISTS hk_slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON hk_slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON hk_slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

dbd_up() { hk_port_open "$HK_DBD_PORT"; }

start_slurmdbd() {
    load_db_pass
    if render slurmdbd.conf.in "$HK_DBD_CONF" 600; then
        hk_stop_pidfile slurmdbd "$PID_DBD" slurmdbd # config changed: restart
    fi
    chown root:root "$HK_DBD_CONF"
    chmod 600 "$HK_DBD_CONF"
    if ! hk_pid_alive "$PID_DBD" slurmdbd >/dev/null; then
        # slurmdbd finds slurmdbd.conf next to $SLURM_CONF; it daemonises itself.
        : >"$HK_LOG/slurmdbd-start.log"
        slurmdbd </dev/null 9>&- >>"$HK_LOG/slurmdbd-start.log" 2>&1 ||
            hk_die "slurmdbd failed to start" "$HK_LOG/slurmdbd-start.log" "$LOG_DBD"
    fi
    local rc=0
    hk_wait_daemon 60 "$PID_DBD" slurmdbd dbd_up || rc=$?
    ((rc == 2)) && hk_die "slurmdbd exited during startup" "$HK_LOG/slurmdbd-start.log" "$LOG_DBD" "$LOG_MYSQL"
    ((rc == 0)) || hk_die "slurmdbd did not listen on port $HK_DBD_PORT within 60 s" "$LOG_DBD" "$LOG_MYSQL"
}

setup_accounting_entities() { # needs slurm.conf in accounting mode and slurmdbd up
    local out
    hk_wait 30 sacctmgr -n -P show cluster format=cluster ||
        hk_die "sacctmgr cannot talk to slurmdbd" "$LOG_DBD"
    out=$(sacctmgr -n -P show cluster format=cluster 2>&1)
    if ! grep -qx "$HK_CLUSTER_NAME" <<<"$out"; then
        sacctmgr -i add cluster "$HK_CLUSTER_NAME" >/dev/null 2>&1 ||
            hk_die "sacctmgr add cluster $HK_CLUSTER_NAME failed" "$LOG_DBD"
    fi
    out=$(sacctmgr -n -P show account format=account 2>&1)
    if ! grep -qx hk <<<"$out"; then
        sacctmgr -i add account hk cluster="$HK_CLUSTER_NAME" description=housekeeper-tests \
            organization=housekeeper >/dev/null 2>&1 || hk_die "sacctmgr add account failed" "$LOG_DBD"
    fi
    out=$(sacctmgr -n -P show assoc format=account,user where user=root cluster="$HK_CLUSTER_NAME" 2>&1)
    if ! grep -qx 'hk|root' <<<"$out"; then
        sacctmgr -i add user root account=hk cluster="$HK_CLUSTER_NAME" >/dev/null 2>&1 ||
            hk_die "sacctmgr add user root failed" "$LOG_DBD"
    fi
}

# ---------------------------------------------------------------- slurmctld / slurmd
start_slurmctld() {
    if hk_pid_alive "$PID_CTLD" slurmctld >/dev/null; then
        hk_wait 30 hk_ctld_up || hk_die "slurmctld is running but does not answer 'scontrol ping'" "$LOG_CTLD"
        return 0
    fi
    : >"$HK_LOG/slurmctld-start.log"
    slurmctld -f "$HK_CONF" </dev/null 9>&- >>"$HK_LOG/slurmctld-start.log" 2>&1 ||
        hk_die "slurmctld failed to start" "$HK_LOG/slurmctld-start.log" "$LOG_CTLD"
    local rc=0
    hk_wait_daemon 30 "$PID_CTLD" slurmctld hk_ctld_up || rc=$?
    ((rc == 2)) && hk_die "slurmctld exited during startup" "$HK_LOG/slurmctld-start.log" "$LOG_CTLD"
    ((rc == 0)) || hk_die "slurmctld did not answer 'scontrol ping' within 30 s" "$LOG_CTLD"
}

start_slurmd() {
    if ! hk_pid_alive "$PID_SLURMD" slurmd >/dev/null; then
        : >"$HK_LOG/slurmd-start.log"
        slurmd -f "$HK_CONF" -N "$NODE" </dev/null 9>&- >>"$HK_LOG/slurmd-start.log" 2>&1 ||
            hk_die "slurmd failed to start" "$HK_LOG/slurmd-start.log" "$LOG_SLURMD"
    fi
    local rc=0
    hk_wait_daemon 30 "$PID_SLURMD" slurmd node_registered || rc=$?
    ((rc == 2)) && hk_die "slurmd exited during startup (node $NODE never registered)" \
        "$HK_LOG/slurmd-start.log" "$LOG_SLURMD"
    return 0 # wait_node reports anything else
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

node_usable() {
    local s
    s=$(node_state)
    case $s in
    idle | mixed | allocated | completing | planned | reserved) return 0 ;;
    *) return 1 ;;
    esac
}

node_registered() { # slurmd has talked to slurmctld (state has no '*' "not responding" mark)
    local s
    s=$(node_state)
    [[ -n $s && $s != *'*' && $s != unknown* ]]
}

wait_node() {
    local s i
    for ((i = 0; i < 150; i++)); do
        node_usable && return 0
        s=$(node_state)
        # Marked down/drained by an earlier run (not merely "not responding" = '*'):
        if [[ $s == down || $s == drained || $s == draining || $s == drain* || $s == fail* ]]; then
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.2
    done
    hk_die "node $NODE is not usable (state '$(node_state)'; reason: $(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null | head -n1))" \
        "$LOG_SLURMD" "$LOG_CTLD"
}

# ---------------------------------------------------------------- checks
check_job_runs() { # submit a trivial job; print its id once it has COMPLETED ("busy" if it could not start)
    local id state reason i
    id=$(sbatch --parsable -J hk-slurm-up-check -o /dev/null -e /dev/null -t 1 --mem=16M --wrap 'true' 2>&1) ||
        hk_die "sbatch of the check job failed: $id" "$LOG_CTLD"
    id=${id%%;*}
    for ((i = 0; i < 150; i++)); do
        state=$(squeue -h -t all -j "$id" -o '%T' 2>/dev/null || true)
        [[ $state == COMPLETED ]] && { printf '%s\n' "$id"; return 0; }
        case $state in FAILED | CANCELLED* | NODE_FAIL | TIMEOUT | BOOT_FAIL | OUT_OF_MEMORY)
            hk_die "check job $id ended $state" "$LOG_SLURMD" "$LOG_CTLD" ;;
        esac
        if ((i >= 50)) && [[ $state == PENDING ]]; then # 10 s: waiting for busy CPUs?
            reason=$(squeue -h -j "$id" -o %r 2>/dev/null || true)
            [[ $reason == Resources || $reason == Priority ]] && break
        fi
        sleep 0.2
    done
    reason=$(squeue -h -j "$id" -o %r 2>/dev/null || true)
    if [[ $state == PENDING && ($reason == Resources || $reason == Priority) ]]; then
        # Other people's jobs fill the node: the cluster works, it is just busy.
        scancel "$id" 2>/dev/null || true
        hk_say "note: the node is busy (check job $id still pending: $reason); not waiting for it"
        echo busy
        return 0
    fi
    hk_die "check job $id did not complete within 30 s (state '$state', reason '$reason')" \
        "$LOG_CTLD" "$LOG_SLURMD"
}

check_sacct() { # ID from check_job_runs ("busy": only check that sacct answers)
    local id=$1 out i rc=0
    if [[ $MODE == accounting ]]; then
        if [[ $id == busy ]]; then
            out=$(sacct -n -X -S now-1minutes 2>&1) || hk_die "sacct fails: $out" "$LOG_DBD"
            return 0
        fi
        for ((i = 0; i < 150; i++)); do
            out=$(sacct -n -P -X -j "$id" -o State 2>/dev/null || true)
            [[ $out == COMPLETED ]] && return 0
            sleep 0.2
        done
        hk_die "sacct did not report check job $id as COMPLETED within 30 s (got '$out')" "$LOG_DBD" "$LOG_CTLD"
    else
        [[ $id == busy ]] && id=1
        out=$(sacct -n -j "$id" 2>&1) || rc=$?
        if ((rc == 0)) || [[ $out != *"accounting storage is disabled"* ]]; then
            hk_die "expected sacct to say accounting storage is disabled, got exit $rc: $out"
        fi
    fi
}

stop_ctld_and_slurmd() {
    hk_stop_pidfile slurmctld "$PID_CTLD" slurmctld 30
    hk_stop_pidfile slurmd "$PID_SLURMD" slurmd 20
}

summary() {
    local cpus
    cpus=$(sinfo -h -N -n "$NODE" -o '%c' 2>/dev/null | head -n1)
    local mode_txt=$MODE
    [[ $MODE == none ]] && mode_txt=no-accounting
    local mem=linuxproc+OverMemoryKill
    grep -q '^TaskPlugin=task/cgroup' "$HK_CONF" && mem=cgroup-v1
    printf 'hk-slurm: UP mode=%s slurm=%s node=%s cpus=%s mem-enforcement=%s partitions=debug(default),short(5min) dir=%s (%ss)\n' \
        "$mode_txt" "$SLURM_VERSION" "$NODE" "$cpus" "$mem" "$HK_SLURM_DIR" "$((SECONDS - T0))"
    printf 'export SLURM_CONF=%s\n' "$HK_CONF"
}

current_mode() { # mode recorded in the existing slurm.conf
    if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$HK_CONF" 2>/dev/null; then
        echo accounting
    else
        echo no-accounting
    fi
}

# ---------------------------------------------------------------- actions
case $ACTION in
stop-controller)
    hk_stop_pidfile slurmctld "$PID_CTLD" slurmctld 30
    exit 0
    ;;
start-controller)
    [[ -f $HK_CONF ]] || hk_die "$HK_CONF missing: run slurm-up.sh first"
    start_slurmctld
    hk_say "slurmctld up"
    exit 0
    ;;
stop-dbd)
    hk_stop_pidfile slurmdbd "$PID_DBD" slurmdbd 30
    exit 0
    ;;
start-dbd)
    [[ -f $HK_DBD_CONF ]] || hk_die "$HK_DBD_CONF missing: run slurm-up.sh --accounting first"
    start_mariadb
    start_slurmdbd
    hk_say "slurmdbd up"
    exit 0
    ;;
status)
    printf 'dir=%s mode=%s\n' "$HK_SLURM_DIR" "$(current_mode)"
    for d in "slurmctld:$PID_CTLD" "slurmd:$PID_SLURMD" "slurmdbd:$PID_DBD" "mariadbd:$PID_MYSQL"; do
        n=${d%%:*} f=${d#*:}
        if p=$(hk_pid_alive "$f" "$n"); then echo "$n: running (pid $p)"; else echo "$n: stopped"; fi
    done
    if hk_munge_ok; then echo "munge: ok"; else echo "munge: NOT working"; fi
    if hk_ctld_up; then sinfo -N -o '%N %T %c %m %P' 2>&1; fi
    exit 0
    ;;
esac

# ---- up
install_packages
SLURM_VERSION=$(slurm_version)
[[ -n $SLURM_VERSION ]] || hk_die "cannot read the SLURM version from 'slurmctld -V'"
make_dirs
write_env_sh
link_etc_conf
start_munge

conf_changed=0
write_slurm_conf && conf_changed=1

if [[ $MODE == accounting ]]; then
    start_mariadb
    start_slurmdbd
    setup_accounting_entities
else
    # Accounting off: slurmdbd and its database are not needed.
    hk_stop_pidfile slurmdbd "$PID_DBD" slurmdbd 30
    hk_stop_pidfile mariadbd "$PID_MYSQL" mariadbd 60
fi

if ((conf_changed)); then
    hk_say "slurm.conf (re)written (mode ${MODE/none/no-accounting}): restarting slurmctld and slurmd"
    stop_ctld_and_slurmd
fi

bring_up() {
    start_slurmctld
    start_slurmd
    wait_node
    local id
    id=$(check_job_runs)
    check_sacct "$id"
}

if ((CGROUP)) && [[ ${HK_SLURM_CGROUP:-auto} == auto ]]; then
    # Try with cgroups; if slurmd or the check job fails, fall back for good.
    set +e
    (set -e; bring_up)
    rc=$?
    set -e
    if ((rc != 0)); then
        hk_say "WARNING: the cluster did not work with cgroup v1 enforcement; falling back to" \
            "proctrack/linuxproc + OverMemoryKill (remembered in $CGROUP_OFF_MARK)"
        echo "cgroup mode failed on $(date) with SLURM $SLURM_VERSION" >"$CGROUP_OFF_MARK"
        write_slurm_conf || true
        stop_ctld_and_slurmd
        bring_up
    fi
else
    bring_up
fi
summary
