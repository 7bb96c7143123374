# shellcheck shell=bash
# Shared by scripts/replication.sh and scripts/galera.sh, which source it: extra mariadbd
# processes of our own on 127.0.0.1, each with a fresh data folder under $BASE, started detached
# and shut down politely. The machine's own server on 3306 is never touched.
#
# The sourcing script sets, before sourcing:
#   BASE       folder for the data folders, logs and pid files (`stop` removes it)
#   TIMEOUT    bound of every wait, in seconds
#   HOST       address the servers listen on (127.0.0.1)
#   LOCAL_SQL  statement(s) that keep a session's changes on the server it runs on (for the
#              root account set up in start_server), e.g. "SET SESSION sql_log_bin = 0;"
# and defines cmd_start and cmd_status; main then runs start|stop|status under a lock file
# beside BASE (stop runs stop_all, also defined by the script).
#
# Every message goes to stderr; stdout is left for what the script prints on purpose.

SCRIPT_NAME=${0##*/}
# Outside BASE, since `start` recreates BASE and `stop` removes it.
LOCK_FILE=${BASE}.lock

log() { echo "$SCRIPT_NAME: $*" >&2; }
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

# The client on one of our servers over TCP as root; --no-defaults keeps the machine's client
# settings out. Further options (-E, -e ...) follow.
client() {
  local port=$1
  shift
  "$CLIENT" --no-defaults --protocol=TCP -h "$HOST" -P "$port" -uroot --connect-timeout=5 "$@"
}

# SQL on one of our servers, tab-separated without column names.
sql() {
  local port=$1
  shift
  client "$port" -N -B -e "$*"
}

is_up() {
  "$ADMIN" --no-defaults --protocol=TCP -h "$HOST" -P "$1" -uroot --connect-timeout=2 \
    ping >/dev/null 2>&1
}

pid_of() {
  local f="$BASE/$1/mariadbd.pid"
  [ -s "$f" ] && cat "$f"
}

# Runs "$@" once a second until it succeeds; fails when it still fails after TIMEOUT seconds.
wait_for() {
  local waited=0
  until "$@"; do
    [ "$waited" -lt "$TIMEOUT" ] || return 1
    sleep 1
    waited=$((waited + 1))
  done
}

# Starts one server from a fresh data folder in the background, detached from this shell (so
# that it outlives the caller and never holds the caller's stdout open), waits until it
# answers and makes sure root logs in from $HOST without a password. Arguments after name and
# port go to mariadbd.
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

  # install-db makes root@127.0.0.1 without a password; make sure of it, on this server only
  # (LOCAL_SQL), so that no other server replays it.
  sql "$port" "$LOCAL_SQL
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
    die "cannot log in to $name as root@$HOST (log: $dir/error.log)"
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
      [ "$signal" = none ] && die "$name (pid $pid) does not stop even after SIGKILL"
      log "$name (pid $pid) still runs after ${TIMEOUT}s; sending SIG$signal"
      kill "-$signal" "$pid" 2>/dev/null || true
      if [ "$signal" = TERM ]; then signal=KILL; else signal=none; fi
      waited=0
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# stop_servers name:port ...: shuts the servers down in that order, checks that nothing
# answers on their ports any more and removes BASE.
stop_servers() {
  local pair
  for pair in "$@"; do
    stop_server "${pair%%:*}" "${pair#*:}"
  done
  for pair in "$@"; do
    ! is_up "${pair#*:}" || die "something still answers on $HOST:${pair#*:} that this \
script did not start (no pid file in $BASE); stop it by hand"
  done
  rm -rf "$BASE"
}

# prepare_fresh name:port ...: before starting the servers anew, stops what is left of an
# earlier start (any of them up, or BASE still there), checks that the ports are free and
# makes BASE.
prepare_fresh() {
  local pair leftover=0
  for pair in "$@"; do
    if is_up "${pair#*:}"; then leftover=1; fi
  done
  if [ "$leftover" -eq 1 ] || [ -e "$BASE" ]; then
    log "a half-started set of servers was found; starting all anew"
    stop_servers "$@"
  fi
  for pair in "$@"; do
    ! is_up "${pair#*:}" || die "port ${pair#*:} on $HOST is taken by another server"
  done
  mkdir -p "$BASE"
}

# report_up name:port ...: prints "name host:port up|down" for each; fails if any is down.
report_up() {
  local pair ok=0
  for pair in "$@"; do
    if is_up "${pair#*:}"; then
      echo "${pair%%:*} $HOST:${pair#*:} up"
    else
      echo "${pair%%:*} $HOST:${pair#*:} down"
      ok=1
    fi
  done
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

  # One caller at a time: tests in parallel may all try to start the servers.
  exec 9>"$LOCK_FILE"
  flock -w "$TIMEOUT" 9 || die "another $SCRIPT_NAME holds $LOCK_FILE for over ${TIMEOUT}s"

  case "$cmd" in
  start) cmd_start ;;
  stop)
    stop_all
    log "stopped; $BASE removed"
    ;;
  status) cmd_status ;;
  esac
}
