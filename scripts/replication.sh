#!/usr/bin/env bash
# A primary and a replica of our own for the replication tests: two extra mariadbd processes on
# 127.0.0.1:3316 (primary, binary log in ROW format) and 127.0.0.1:3317 (replica, GTID
# replication from the primary, listed by the primary's SHOW REPLICA HOSTS). The machine's own
# server on 3306 is never touched.
#
#   scripts/replication.sh start    start both (or find them running); print the exports to eval
#   scripts/replication.sh stop     shut both down and remove their folder
#   scripts/replication.sh status   say whether both are up and the replica is replicating
#
# `eval "$(scripts/replication.sh start)"` sets MATOMO_ERASE_PRIMARY_URL and
# MATOMO_ERASE_REPLICA_URL. Only those lines go to stdout; every message goes to stderr.
#
# Root logs in from 127.0.0.1 without a password on both servers, with the grant tables in
# force (the tests check privileges). Meant for a throwaway test machine only.
#
# Environment: MATOMO_ERASE_REPL_DIR (default /tmp/matomo-erase-repl) holds the data folders,
# logs and pid files; MATOMO_ERASE_REPL_TIMEOUT (default 60) bounds every wait, in seconds.
set -euo pipefail

BASE=${MATOMO_ERASE_REPL_DIR:-/tmp/matomo-erase-repl}
TIMEOUT=${MATOMO_ERASE_REPL_TIMEOUT:-60}
HOST=127.0.0.1
PRIMARY_PORT=3316
REPLICA_PORT=3317
# The root account is set up outside the binary log, so that the replica does not replay it.
LOCAL_SQL="SET SESSION sql_log_bin = 0;"

# shellcheck source-path=SCRIPTDIR source=lib/mariadbd.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/mariadbd.sh"

export_lines() {
  echo "export MATOMO_ERASE_PRIMARY_URL=mysql://root@$HOST:$PRIMARY_PORT/"
  echo "export MATOMO_ERASE_REPLICA_URL=mysql://root@$HOST:$REPLICA_PORT/"
}

# One column of SHOW SLAVE STATUS on the replica (empty when replication is not set up).
slave_field() {
  client "$REPLICA_PORT" -E -e "SHOW SLAVE STATUS" 2>/dev/null |
    sed -n "s/^ *$1: //p" | head -n 1
}

replica_running() {
  [ "$(slave_field Slave_IO_Running)" = "Yes" ] && [ "$(slave_field Slave_SQL_Running)" = "Yes" ]
}

# The primary lists the replica only once it has registered (report_host).
replica_listed() {
  [ -n "$(sql "$PRIMARY_PORT" "SHOW SLAVE HOSTS" 2>/dev/null)" ]
}

# Connects the replica to the primary and waits until both replication threads run.
start_replication() {
  log "connecting the replica to the primary (GTID, slave_pos)"
  sql "$REPLICA_PORT" "STOP SLAVE;
    CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT, MASTER_USER='root',
      MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,
      MASTER_HEARTBEAT_PERIOD=1;
    START SLAVE;" || die "CHANGE MASTER TO / START SLAVE failed on the replica"

  if ! wait_for replica_running; then
    client "$REPLICA_PORT" -E -e "SHOW SLAVE STATUS" >&2 || true
    die "the replica is not replicating after ${TIMEOUT}s (IO=$(slave_field \
Slave_IO_Running), SQL=$(slave_field Slave_SQL_Running): $(slave_field Last_IO_Error) \
$(slave_field Last_SQL_Error))"
  fi
  wait_for replica_listed ||
    die "the primary does not list the replica in SHOW REPLICA HOSTS after ${TIMEOUT}s"
  log "replica 127.0.0.1:$REPLICA_PORT replicates from 127.0.0.1:$PRIMARY_PORT"
}

stop_all() {
  stop_servers "replica:$REPLICA_PORT" "primary:$PRIMARY_PORT"
}

cmd_start() {
  if is_up "$PRIMARY_PORT" && is_up "$REPLICA_PORT"; then
    if [ -z "$(slave_field Slave_IO_Running)" ]; then
      start_replication
    elif ! replica_running; then
      # A test may have stopped it on purpose; say so, but leave it as it is.
      log "warning: both servers run, but the replica is stopped (START SLAVE on" \
        "$HOST:$REPLICA_PORT resumes it)"
    fi
    export_lines
    return 0
  fi

  prepare_fresh "replica:$REPLICA_PORT" "primary:$PRIMARY_PORT"
  start_server primary "$PRIMARY_PORT" --server-id=1 --log-bin=mariadb-bin \
    --binlog-format=ROW
  start_server replica "$REPLICA_PORT" --server-id=2 --report-host="$HOST" \
    --report-port="$REPLICA_PORT" --skip-slave-start --relay-log=relay-bin
  start_replication
  export_lines
}

cmd_status() {
  local ok=0
  report_up "primary:$PRIMARY_PORT" "replica:$REPLICA_PORT" || ok=1
  if [ "$ok" -eq 0 ]; then
    echo "replication IO=$(slave_field Slave_IO_Running) SQL=$(slave_field Slave_SQL_Running)" \
      "lag=$(slave_field Seconds_Behind_Master)s delay=$(slave_field SQL_Delay)s"
    replica_running || ok=1
  fi
  return "$ok"
}

main "$@"
