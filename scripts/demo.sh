#!/usr/bin/env bash
# Demo on a fresh machine: builds matomo-erase, creates a Matomo-shaped database on the local
# MariaDB (127.0.0.1:3306, root, no password), then shows inspect, the plan, the erase and the
# proof for one person.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${DEMO_DB:-matomo_erase_demo}
URL="mysql://root@127.0.0.1:3306/$DB"
SUBJECT=${DEMO_SUBJECT:-bench.subject@example.org}

if ! mariadb-admin -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1; then
  echo "starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    mariadb-admin -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1 && break
    sleep 1
  done
fi

cargo build --release --quiet --bin matomo-erase --bin matomo-gen
BIN=target/release

echo "== creating demo database $DB (20,000 visits, 3 sites)"
mariadb -h 127.0.0.1 -P 3306 -uroot -e "DROP DATABASE IF EXISTS \`$DB\`"
"$BIN/matomo-gen" --database-url "$URL" --prefix matomo_ --visits 20000 --create

echo; echo "== matomo-erase inspect"
"$BIN/matomo-erase" --database-url "$URL" inspect

echo; echo "== matomo-erase find --user-id $SUBJECT"
"$BIN/matomo-erase" --database-url "$URL" find --user-id "$SUBJECT"

echo; echo "== matomo-erase erase --user-id $SUBJECT            (the plan: writes nothing)"
"$BIN/matomo-erase" --database-url "$URL" erase --user-id "$SUBJECT"

echo; echo "== matomo-erase erase --user-id $SUBJECT --execute"
"$BIN/matomo-erase" --database-url "$URL" erase --user-id "$SUBJECT" --execute

echo; echo "== matomo-erase verify --user-id $SUBJECT"
"$BIN/matomo-erase" --database-url "$URL" verify --user-id "$SUBJECT"
