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
# Outside BASE, since `start` recreates BASE and `stop` removes it.
LOCK_FILE=${BASE}.lock

log() { echo "replication.sh: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

find_tool() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
    if [ -x "/usr/sbin/$name" ]; then
      echo "/usr/sbin/$name"
      return 0
    fi
  done
  return 1
}

MARIADBD=$(find_tool mariadbd mysqld) ||
  die "no mariadbd found; install it with: apt-get install -y mariadb-server"
INSTALL_DB=$(find_tool mariadb-install-db mysql_install_db) ||
  die "no mariadb-install-db found; install it with: apt-get install -y mariadb-server"
CLIENT=$(find_tool mariadb mysql) ||
  die "no mariadb client found; install it with: apt-get install -y mariadb-client"
ADMIN=$(find_tool mariadb-admin mysqladmin) ||
  die "no mariadb-admin found; install it with: apt-get install -y mariadb-client"

# As root the servers run as the mysql user when there is one (as the package runs them),
# else as root, which mariadbd only accepts with --user=root. As anyone else, as that user.
if [ "$(id -u)" -eq 0 ]; then
  if id mysql >/dev/null 2>&1; then RUN_AS=mysql; else RUN_AS=root; fi
else
  RUN_AS=$(id -un)
fi

export_lines() {
  echo "export MATOMO_ERASE_PRIMARY_URL=mysql://root@$HOST:$PRIMARY_PORT/"
  echo "export MATOMO_ERASE_REPLICA_URL=mysql://root@$HOST:$REPLICA_PORT/"
}

# SQL on one of our servers over TCP; --no-defaults keeps the machine's client settings out.
sql() {
  local port=$1
  shift
  "$CLIENT" --no-defaults --protocol=TCP -h "$HOST" -P "$port" -uroot --connect-timeout=5 \
    -N -B -e "$*"
}

is_up() {
  "$ADMIN" --no-defaults --protocol=TCP -h "$HOST" -P "$1" -uroot --connect-timeout=2 \
    ping >/dev/null 2>&1
}

pid_of() {
  local f="$BASE/$1/mariadbd.pid"
  [ -s "$f" ] && cat "$f"
}

# One column of SHOW SLAVE STATUS on the replica (empty when replication is not set up).
slave_field() {
  "$CLIENT" --no-defaults --protocol=TCP -h "$HOST" -P "$REPLICA_PORT" -uroot \
    --connect-timeout=5 -E -e "SHOW SLAVE STATUS" 2>/dev/null |
    sed -n "s/^ *$1: //p" | head -n 1
}

replica_running() {
  [ "$(slave_field Slave_IO_Running)" = "Yes" ] && [ "$(slave_field Slave_SQL_Running)" = "Yes" ]
}

# Starts one server in the background, detached from this shell (so that it outlives the
# caller and never holds the caller's stdout open), then waits until it answers.
start_server() {
  local name=$1 port=$2
  shift 2
  local dir="$BASE/$name"
  mkdir -p "$dir/data" "$dir/tmp"
  if [ "$RUN_AS" != "$(id -un)" ]; then chown -R "$RUN_AS" "$dir"; fi

  log "initialising $name in $dir/data"
  if ! "$INSTALL_DB" --no-defaults --user="$RUN_AS" --datadir="$dir/data" \
    --auth-root-authentication-method=normal --skip-test-db \
    >"$dir/install.log" 2>&1 9>&-; then
    tail -n 20 "$dir/install.log" >&2
    die "mariadb-install-db failed for $name (log: $dir/install.log)"
  fi

  log "starting $name on $HOST:$port"
  setsid "$MARIADBD" --no-defaults --user="$RUN_AS" \
    --datadir="$dir/data" --tmpdir="$dir/tmp" \
    --socket="$dir/mariadbd.sock" --pid-file="$dir/mariadbd.pid" \
    --log-error="$dir/error.log" \
    --bind-address="$HOST" --port="$port" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=48M \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 \
    "$@" </dev/null >"$dir/stdout.log" 2>&1 9>&- &
  local launcher=$!

  local waited=0
  until is_up "$port"; do
    local pid
    pid=$(pid_of "$name") || pid=
    if ! kill -0 "$launcher" 2>/dev/null && ! { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }; then
      tail -n 30 "$dir/error.log" >&2 2>/dev/null || true
      die "$name exited while starting (log: $dir/error.log); is port $port taken?"
    fi
    if [ "$waited" -ge "$TIMEOUT" ]; then
      tail -n 30 "$dir/error.log" >&2 2>/dev/null || true
      die "$name did not answer on $HOST:$port within ${TIMEOUT}s (log: $dir/error.log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done

  # install-db makes root@127.0.0.1 without a password; make sure of it, outside the binary
  # log so that the replica does not replay it.
  sql "$port" "SET SESSION sql_log_bin = 0;
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
    die "cannot log in to $name as root@$HOST (log: $dir/error.log)"
}

# Connects the replica to the primary and waits until both replication threads run.
start_replication() {
  log "connecting the replica to the primary (GTID, slave_pos)"
  sql "$REPLICA_PORT" "STOP SLAVE;
    CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT, MASTER_USER='root',
      MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,
      MASTER_HEARTBEAT_PERIOD=1;
    START SLAVE;" || die "CHANGE MASTER TO / START SLAVE failed on the replica"

  local waited=0
  until replica_running; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
      "$CLIENT" --no-defaults --protocol=TCP -h "$HOST" -P "$REPLICA_PORT" -uroot -E \
        -e "SHOW SLAVE STATUS" >&2 || true
      die "the replica is not replicating after ${TIMEOUT}s (IO=$(slave_field \
Slave_IO_Running), SQL=$(slave_field Slave_SQL_Running): $(slave_field Last_IO_Error) \
$(slave_field Last_SQL_Error))"
    fi
    sleep 1
    waited=$((waited + 1))
  done

  # The primary lists the replica only once it has registered (report_host).
  waited=0
  until [ -n "$(sql "$PRIMARY_PORT" "SHOW SLAVE HOSTS" 2>/dev/null)" ]; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
      die "the primary does not list the replica in SHOW REPLICA HOSTS after ${TIMEOUT}s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "replica 127.0.0.1:$REPLICA_PORT replicates from 127.0.0.1:$PRIMARY_PORT"
}

# Shuts one server down: politely, then SIGTERM, then SIGKILL, each with a time limit. Only
# the pid that this script's server wrote is signalled.
stop_server() {
  local name=$1 port=$2
  local pid
  pid=$(pid_of "$name") || pid=
  if is_up "$port"; then
    log "shutting down $name on $HOST:$port"
    timeout "$TIMEOUT" "$ADMIN" --no-defaults --protocol=TCP -h "$HOST" -P "$port" -uroot \
      --connect-timeout=5 shutdown >/dev/null 2>&1 || true
  fi
  [ -n "$pid" ] || return 0

  local waited=0 signal=TERM
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
      [ "$signal" = KILL ] && die "$name (pid $pid) does not stop even after SIGKILL"
      log "$name (pid $pid) still runs after ${TIMEOUT}s; sending SIG$signal"
      kill "-$signal" "$pid" 2>/dev/null || true
      signal=KILL
      waited=0
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

stop_all() {
  stop_server replica "$REPLICA_PORT"
  stop_server primary "$PRIMARY_PORT"
  for port in "$REPLICA_PORT" "$PRIMARY_PORT"; do
    ! is_up "$port" || die "something still answers on $HOST:$port that this script did not \
start (no pid file in $BASE); stop it by hand"
  done
  rm -rf "$BASE"
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

  if is_up "$PRIMARY_PORT" || is_up "$REPLICA_PORT" || [ -e "$BASE" ]; then
    log "a half-started pair was found; starting both anew"
    stop_all
  fi
  for port in "$PRIMARY_PORT" "$REPLICA_PORT"; do
    ! is_up "$port" || die "port $port on $HOST is taken by another server"
  done

  mkdir -p "$BASE"
  start_server primary "$PRIMARY_PORT" --server-id=1 --log-bin=mariadb-bin \
    --binlog-format=ROW
  start_server replica "$REPLICA_PORT" --server-id=2 --report-host="$HOST" \
    --report-port="$REPLICA_PORT" --skip-slave-start --relay-log=relay-bin
  start_replication
  export_lines
}

cmd_status() {
  local ok=0
  for pair in "primary:$PRIMARY_PORT" "replica:$REPLICA_PORT"; do
    if is_up "${pair#*:}"; then
      echo "${pair%%:*} $HOST:${pair#*:} up"
    else
      echo "${pair%%:*} $HOST:${pair#*:} down"
      ok=1
    fi
  done
  if [ "$ok" -eq 0 ]; then
    echo "replication IO=$(slave_field Slave_IO_Running) SQL=$(slave_field Slave_SQL_Running)" \
      "lag=$(slave_field Seconds_Behind_Master)s delay=$(slave_field SQL_Delay)s"
    replica_running || ok=1
  fi
  return "$ok"
}

main() {
  local cmd=${1:-}
  case "$cmd" in
  start | stop | status) ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
  esac

  # One caller at a time: tests in parallel may all try to start the pair.
  exec 9>"$LOCK_FILE"
  flock -w "$TIMEOUT" 9 || die "another replication.sh holds $LOCK_FILE for over ${TIMEOUT}s"

  case "$cmd" in
  start) cmd_start ;;
  stop)
    stop_all
    log "stopped; $BASE removed"
    ;;
  status) cmd_status ;;
  esac
}

main "$@"
