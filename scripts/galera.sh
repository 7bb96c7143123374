#!/usr/bin/env bash
# A two-node MariaDB Galera cluster of our own for the Galera tests: two extra mariadbd
# processes, node A on 127.0.0.1:3326 (bootstraps the cluster) and node B on 127.0.0.1:3327
# (joins it by an rsync state transfer), with group communication on 127.0.0.1:4576/4577, IST
# on 127.0.0.1:4586/4587 and SST on 127.0.0.1:4596/4597 instead of Galera's defaults
# 4567/4568/4444, so that nothing clashes with another Galera on the machine. The machine's own
# server on 3306 is never touched.
#
#   scripts/galera.sh start    start both (or find them running and synced); print the exports
#   scripts/galera.sh stop     shut B, then A down and remove their folder
#   scripts/galera.sh status   say whether both are up and synced in one cluster of two
#
# `eval "$(scripts/galera.sh start)"` sets MATOMO_ERASE_GALERA_A_URL and
# MATOMO_ERASE_GALERA_B_URL. Only those lines go to stdout; every message goes to stderr.
#
# Root logs in from 127.0.0.1 without a password on both nodes, with the grant tables in force.
# Meant for a throwaway test machine only.
#
# Environment: MATOMO_ERASE_GALERA_DIR (default /tmp/matomo-erase-galera) holds the data
# folders, logs and pid files; MATOMO_ERASE_GALERA_TIMEOUT (default 60) bounds every wait, in
# seconds; MATOMO_ERASE_GALERA_PROVIDER (default /usr/lib/galera/libgalera_smm.so) is the
# wsrep provider library.
set -euo pipefail

BASE=${MATOMO_ERASE_GALERA_DIR:-/tmp/matomo-erase-galera}
TIMEOUT=${MATOMO_ERASE_GALERA_TIMEOUT:-60}
PROVIDER=${MATOMO_ERASE_GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
HOST=127.0.0.1
A_PORT=3326
B_PORT=3327
A_GCOMM_PORT=4576
B_GCOMM_PORT=4577
A_IST_PORT=4586
B_IST_PORT=4587
A_SST_PORT=4596
B_SST_PORT=4597
CLUSTER_NAME=matomo-erase-galera
# The root account is set up on each node by itself, outside Galera replication (B gets A's
# accounts with the state transfer anyway).
LOCAL_SQL="SET SESSION wsrep_on = 0;"

# shellcheck source-path=SCRIPTDIR source=lib/mariadbd.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/mariadbd.sh"

export_lines() {
  echo "export MATOMO_ERASE_GALERA_A_URL=mysql://root@$HOST:$A_PORT/"
  echo "export MATOMO_ERASE_GALERA_B_URL=mysql://root@$HOST:$B_PORT/"
}

# One wsrep status variable of a node (empty when the node does not answer).
wsrep_status() {
  sql "$1" "SHOW GLOBAL STATUS LIKE '$2'" 2>/dev/null | cut -f 2
}

# "state size ready" of a node, e.g. "Synced 2 ON".
node_state() {
  echo "$(wsrep_status "$1" wsrep_local_state_comment)" \
    "$(wsrep_status "$1" wsrep_cluster_size)" "$(wsrep_status "$1" wsrep_ready)"
}

# A node is synced in a cluster of the given size and accepts queries.
node_synced() {
  [ "$(node_state "$1")" = "Synced $2 ON" ]
}

cluster_synced() {
  node_synced "$A_PORT" 2 && node_synced "$B_PORT" 2
}

# Both nodes are in one primary cluster of two and accept queries, whether synced or
# desynced on purpose (SET GLOBAL wsrep_desync = ON shows as Donor/Desynced).
cluster_formed() {
  local port state
  for port in "$A_PORT" "$B_PORT"; do
    state=$(node_state "$port")
    case "$state" in
    "Synced 2 ON" | "Donor/Desynced 2 ON") ;;
    *) return 1 ;;
    esac
  done
}

# Starts one node. B gets A's data by rsync (wsrep_sst_rsync, from the mariadb-server package,
# which also brings rsync), although both data folders are fresh from mariadb-install-db:
# --wsrep-sst-method=skip would do in principle, but with galera-4 (26.4) and MariaDB 10.11 the
# joiner then waits forever in "Joining: receiving State Transfer" for an IST that the donor
# never sends (and ignores SIGTERM there). The rsync transfer of a fresh data folder takes a
# few seconds.
start_node() {
  local name=$1 port=$2 gcomm_port=$3 ist_port=$4 sst_port=$5
  shift 5
  start_server "$name" "$port" \
    --wsrep-on=ON --wsrep-provider="$PROVIDER" \
    --wsrep-cluster-name="$CLUSTER_NAME" --wsrep-node-name="$name" \
    --wsrep-node-address="$HOST:$gcomm_port" \
    --wsrep-cluster-address="gcomm://$HOST:$A_GCOMM_PORT,$HOST:$B_GCOMM_PORT" \
    --wsrep-provider-options="gmcast.listen_addr=tcp://$HOST:$gcomm_port;ist.recv_addr=$HOST:$ist_port;gcache.size=64M" \
    --wsrep-sst-method=rsync --wsrep-sst-receive-address="$HOST:$sst_port" \
    --binlog-format=ROW --innodb-autoinc-lock-mode=2 \
    "$@"
}

wait_synced() {
  local name=$1 port=$2 size=$3
  wait_for node_synced "$port" "$size" ||
    die "$name on $HOST:$port is not synced in a cluster of $size after ${TIMEOUT}s" \
      "(state, size, ready: $(node_state "$port"); log: $BASE/$name/error.log)"
}

stop_all() {
  # B first, so that A stays a primary component of one until it shuts down itself.
  stop_servers "b:$B_PORT" "a:$A_PORT"
}

cmd_start() {
  if is_up "$A_PORT" && is_up "$B_PORT"; then
    if cluster_formed || wait_for cluster_synced; then
      if ! cluster_synced; then
        # A test may have desynced a node on purpose; say so, but leave it as it is.
        log "warning: both nodes are in the cluster, but not both synced (A: $(node_state \
"$A_PORT"), B: $(node_state "$B_PORT"); SET GLOBAL wsrep_desync = OFF resumes)"
      fi
      export_lines
      return 0
    fi
    log "both nodes answer but do not form one synced cluster of two (A: $(node_state \
"$A_PORT"), B: $(node_state "$B_PORT"))"
  fi

  [ -r "$PROVIDER" ] ||
    die "no Galera provider at $PROVIDER; install it with: apt-get install -y galera-4"
  command -v rsync >/dev/null 2>&1 ||
    die "no rsync (for the state transfer to node B); install it with: apt-get install -y rsync"
  prepare_fresh "b:$B_PORT" "a:$A_PORT"
  start_node a "$A_PORT" "$A_GCOMM_PORT" "$A_IST_PORT" "$A_SST_PORT" --wsrep-new-cluster
  wait_synced a "$A_PORT" 1
  start_node b "$B_PORT" "$B_GCOMM_PORT" "$B_IST_PORT" "$B_SST_PORT"
  wait_synced a "$A_PORT" 2
  wait_synced b "$B_PORT" 2
  log "nodes $HOST:$A_PORT and $HOST:$B_PORT are synced in cluster $CLUSTER_NAME"
  export_lines
}

cmd_status() {
  local ok=0
  report_up "a:$A_PORT" "b:$B_PORT" || ok=1
  if [ "$ok" -eq 0 ]; then
    echo "wsrep A: $(node_state "$A_PORT"), B: $(node_state "$B_PORT")" \
      "(state, cluster size, ready)"
    cluster_synced || ok=1
  fi
  return "$ok"
}

main "$@"
