#!/usr/bin/env bash
# slurm-dev.sh: a throw-away single-node SLURM (munged + slurmctld + slurmd, optionally slurmdbd) for augkd's
# tests and for trying `augkd slurm ...` on a workstation. Debian/Ubuntu, as root, no systemd, no cgroups.
#
#   scripts/slurm-dev.sh start    install slurm-wlm + munge if missing, write the config, start the daemons and
#                                 wait until the node accepts jobs (idempotent: running daemons are kept)
#   scripts/slurm-dev.sh stop     cancel every job, then stop the daemons by the pids in their pid files
#   scripts/slurm-dev.sh status   exit 0 when the node is ready for jobs
#
# Knobs (environment):
#   SLURM_DEV_INSTALL=1      apt-get install missing packages (0: fail instead)
#   SLURM_DEV_ACCOUNTING=0   1: also MariaDB + slurmdbd, so that `sacct` answers (slower to install and start)
#   SLURM_DEV_NODE           node name (default: `hostname -s`)
#   SLURM_DEV_CPUS           CPUs of the node (default: nproc)
#   SLURM_DEV_MEM_MB         RealMemory (default: 80% of what `slurmd -C` finds)
#   SLURM_DEV_TIMEOUT=90     seconds to wait for the node to become idle
#
# Pitfalls this script deals with (each cost someone an afternoon):
#   - without systemd, package postinst scripts cannot start services; that noise is harmless, we start them.
#   - StateSaveLocation must belong to SlurmUser (slurm), SlurmdSpoolDir to root (slurmd runs as root).
#   - /run is often fresh in containers: munge's socket dir and mysqld's dir must be recreated on every start.
#   - RealMemory larger than the machine has → the node goes DRAIN; we declare less than detected.
#   - the node name must resolve (slurmd looks itself up), so it is added to /etc/hosts when it does not.
#   - no cgroup support in containers: proctrack/linuxproc and task/none, nothing is confined.
#   - daemons are stopped by pid file, never by name, so nothing else on the machine is touched.
set -euo pipefail

say() { printf '[slurm-dev %3ds] %s\n' "$SECONDS" "$*"; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # $1: pid file
die() { echo "slurm-dev.sh: $*" >&2; exit 1; }

ACCOUNTING=${SLURM_DEV_ACCOUNTING:-0}
NODE=${SLURM_DEV_NODE:-$(hostname -s)}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true; }

install_packages() {
  local wanted=(slurm-wlm munge) missing=()
  [ "$ACCOUNTING" = 1 ] && wanted+=(slurmdbd mariadb-server)
  for package in "${wanted[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
  [ "${#missing[@]}" = 0 ] && return 0
  [ "${SLURM_DEV_INSTALL:-1}" = 1 ] || die "packages missing and SLURM_DEV_INSTALL=0: ${missing[*]}"
  command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} yourself"
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else head -c 1024 /dev/urandom > /etc/munge/munge.key; fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! running /run/munge/munged.pid; then
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
  fi
  local _
  for _ in $(seq 100); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munge does not answer (munge -n | unmunge fails)"
}

start_accounting_db() {
  install -d -o mysql -g root -m 0755 /run/mysqld
  if ! running /run/mysqld/mysqld.pid; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    # mariadbd has no daemon mode: its own session, in the background; it writes its pid file itself
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
      --socket=/run/mysqld/mysqld.sock </dev/null >/var/log/slurm/mariadbd.log 2>&1 &
  fi
  local _
  for _ in $(seq 150); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb-admin ping >/dev/null 2>&1 || die "mariadbd did not come up (see /var/log/slurm/mariadbd.log)"
  # a local database on a unix socket only, for a test cluster: the password guards nothing
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdev';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  (umask 077; cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=${NODE}
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdev
StorageLoc=slurm_acct_db
CONF
  )
  chown slurm:slurm /etc/slurm/slurmdbd.conf  # slurmdbd refuses a config readable by others or not its own
  chmod 0600 /etc/slurm/slurmdbd.conf
  running /run/slurmdbd.pid || /usr/sbin/slurmdbd
  for _ in $(seq 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
  sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd does not answer (see /var/log/slurm/slurmdbd.log)"
  sacctmgr -n -P list cluster format=cluster | grep -qx dev || sacctmgr -i add cluster dev >/dev/null
}

write_slurm_conf() {
  local cpus=${SLURM_DEV_CPUS:-$(nproc)} memory=${SLURM_DEV_MEM_MB:-} accounting
  if [ -z "$memory" ]; then
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    memory=$(( memory * 8 / 10 ))
  fi
  if [ "$ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux"
  else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cat > /etc/slurm/slurm.conf <<CONF
# written by augkd scripts/slurm-dev.sh: a single-node development cluster
ClusterName=dev
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
${accounting}
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MaxArraySize=100001
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
  chmod 0644 /etc/slurm/slurm.conf
  say "node ${NODE}: ${cpus} CPUs, ${memory} MB, accounting=${ACCOUNTING}"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"
  install_packages
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
  install -d -m 0755 /etc/slurm
  install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/log/slurm
  install -d -o root -g root -m 0755 /var/spool/slurmd
  start_munge
  [ "$ACCOUNTING" = 1 ] && start_accounting_db
  write_slurm_conf
  # -c: forget jobs of an earlier run, every start is a clean slate
  running /run/slurmctld.pid || /usr/sbin/slurmctld -c
  running /run/slurmd.pid || /usr/sbin/slurmd
  local deadline=$(( $(date +%s) + ${SLURM_DEV_TIMEOUT:-90} )) state=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(node_state)
    case "$state" in idle|mixed|allocated) say "ready: node $NODE is $state"; return 0 ;; esac
    sleep 0.3
  done
  echo "slurm-dev.sh: node $NODE not ready (state '${state}'); last log lines:" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

stop_by_pidfile() {  # $1: name, $2: pid file
  local pid _
  [ -f "$2" ] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    say "$1 stopped (pid $pid)"
  fi
  rm -f "$2"
}

stop() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  if running /run/slurmctld.pid; then
    scancel --full --user="$(id -un)" 2>/dev/null || true  # leave no job processes behind
    local _
    for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  stop_by_pidfile slurmd /run/slurmd.pid
  stop_by_pidfile slurmctld /run/slurmctld.pid
  stop_by_pidfile slurmdbd /run/slurmdbd.pid
  stop_by_pidfile mariadbd /run/mysqld/mysqld.pid
  stop_by_pidfile munged /run/munge/munged.pid
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) case "$(node_state)" in idle|mixed|allocated) exit 0 ;; *) exit 1 ;; esac ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
