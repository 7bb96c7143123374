#!/usr/bin/env python3
"""Benchmark of matomo-erase on a Matomo-shaped database (one command: bench/run.sh).

Measures, on the same data and in one run, medians over several runs with min and max:
  1. find one subject (12 visits): `matomo-erase find` vs a plain `user_id = ?` scan;
  2. erase the visits of 5,000 user ids: `matomo-erase erase --execute` vs the raw baseline (one
     transaction of set-based deletes joined to a table of the same idvisits) vs pt-archiver
     purging the same rows table by table (--limit 1000 --commit-each --bulk-delete);
  3. peak memory (max RSS) of erasing 1,000 and 1,000,000 visits.
Every destructive run starts from the same data: the rows it deletes are saved once and put
back after each run, the same way for all three, and the runs take turns.
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISITS = int(os.environ.get("VISITS", "2000000"))
RUNS = int(os.environ.get("RUNS", "3"))
DB = os.environ.get("BENCH_DB", "matomo_erase_bench")
PREFIX = "matomo_"
URL = f"mysql://root@127.0.0.1:3306/{DB}"
TOOL = os.path.join(ROOT, "target/release/matomo-erase")
GEN = os.path.join(ROOT, "target/release/matomo-gen")
WORK = os.path.join("/tmp", f"matomo-erase-bench-{os.getpid()}")
SUBJECT = "bench.subject@example.org"


def sh(args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def sql(query, db=DB):
    args = ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-uroot", "-N", "-B"]
    if db:
        args.append(db)
    return sh(args + ["-e", query]).strip()


def timed(args, **kw):
    t = time.perf_counter()
    out = sh(args, **kw)
    return time.perf_counter() - t, out


def stats(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(xs, unit="ms", scale=1000.0):
    m, lo, hi = stats(xs)
    return f"median {m * scale:9.1f} {unit}  (min {lo * scale:.1f}, max {hi * scale:.1f})"


def t(name):
    return f"`{PREFIX}{name}`"


def ensure_data():
    have = sql(f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{DB}' "
               f"AND table_name = '{PREFIX}log_visit'", db=None)
    if have == "1":
        n = int(sql(f"SELECT COUNT(*) FROM {t('log_visit')}"))
        consumed = sql(f"SELECT COUNT(*) FROM {t('option')} WHERE option_name = 'bench_consumed'")
        if n == VISITS and consumed == "0":
            print(f"data: reusing {DB} with {n:,} visits")
            return
    sql(f"DROP DATABASE IF EXISTS `{DB}`", db=None)
    print(f"data: generating {VISITS:,} visits into {DB} ...", flush=True)
    secs, out = timed([GEN, "--database-url", URL, "--prefix", PREFIX, "--visits", str(VISITS), "--create"])
    print(f"data: generated in {secs:.0f} s")


def table_counts():
    rows = {}
    for name in ["log_visit", "log_link_visit_action", "log_conversion", "log_conversion_item"]:
        rows[name] = int(sql(f"SELECT COUNT(*) FROM {t(name)}"))
    return rows


def log_tables():
    """Log tables in deletion order with their way to a visit, from `matomo-erase inspect`."""
    doc = json.loads(sh([TOOL, "--database-url", URL, "inspect", "--json"]))
    return doc["log_tables"]


def reach(lt, ids_table):
    """FROM clause, the alias of the table and the condition that selects the rows of the
    visits listed in ids_table."""
    name = lt["name"]
    r = lt["reach"]
    if r["kind"] in ("visit", "idvisit"):
        return f"{t(name)} t0", "t0", f"t0.idvisit IN (SELECT idvisit FROM {ids_table})"
    frm = f"{t(name)} t0"
    for i, hop in enumerate(r["path"]):
        frm += f" JOIN {t(hop['parent'])} t{i + 1} ON t{i}.`{hop['column']}` = t{i + 1}.`{hop['column']}`"
    return frm, "t0", f"t{len(r['path'])}.idvisit IN (SELECT idvisit FROM {ids_table})"


def pt_where(lt):
    """pt-archiver's --where for one table: nested IN lists up its path to the visits."""
    cond = "idvisit IN (SELECT idvisit FROM bench_ids)"
    path = lt["reach"].get("path", [])
    for i in range(len(path) - 1, -1, -1):
        col, parent = path[i]["column"], path[i]["parent"]
        cond = f"`{col}` IN (SELECT `{col}` FROM {t(parent)} WHERE {cond})"
    return cond


def save_rows(tables, ids_table):
    for lt in tables:
        frm, alias, cond = reach(lt, ids_table)
        sql(f"DROP TABLE IF EXISTS bench_save_{lt['name']}; "
            f"CREATE TABLE bench_save_{lt['name']} AS SELECT {alias}.* FROM {frm} WHERE {cond}")


def restore_rows(tables):
    stmts = ["SET foreign_key_checks = 0"]
    for lt in reversed(tables):
        stmts.append(f"INSERT IGNORE INTO {t(lt['name'])} SELECT * FROM bench_save_{lt['name']}")
    stmts.append(f"DELETE FROM {t('option')} WHERE option_name LIKE 'mErs\\_%'")
    stmts.append(f"DROP TABLE IF EXISTS {t('matomo_erase_journal')}")
    sql("; ".join(stmts))


def saved_rows(tables):
    return sum(int(sql(f"SELECT COUNT(*) FROM bench_save_{lt['name']}")) for lt in tables)


def bench_find():
    print("\n1. find one subject (12 visits) among", f"{VISITS:,} visits")
    tool, scan = [], []
    found = json.loads(sh([TOOL, "--database-url", URL, "find", "--user-id", SUBJECT, "--json"]))
    for _ in range(max(RUNS, 5)):
        secs, _ = timed([TOOL, "--database-url", URL, "find", "--user-id", SUBJECT, "--json"])
        tool.append(secs)
        secs, out = timed(["mariadb", "-h", "127.0.0.1", "-uroot", "-N", DB, "-e",
                           f"SELECT idsite, idvisit FROM {t('log_visit')} WHERE user_id = '{SUBJECT}'"])
        scan.append(secs)
    n_scan = len(out.strip().splitlines())
    print(f"   matomo-erase find   {fmt(tool)}   visits found: {len(found['visits'])} "
          f"(lookup: {found['lookup']['mode']})")
    print(f"   plain user_id scan  {fmt(scan)}   visits found: {n_scan}")
    print(f"   ratio scan/tool: {statistics.median(scan) / statistics.median(tool):.0f}x "
          "(both timed from process start, connection included)")
    return statistics.median(tool), statistics.median(scan)


def bench_erase(tables):
    print("\n2. erase the visits of 5,000 user ids")
    os.makedirs(WORK, exist_ok=True)
    ids = sql(f"SELECT user_id FROM {t('log_visit')} WHERE user_id LIKE 'user%' "
              "GROUP BY user_id ORDER BY MIN(idvisit) LIMIT 5000")
    ids_file = os.path.join(WORK, "ids.txt")
    with open(ids_file, "w") as f:
        f.write(ids + "\n")
    quoted = ",".join("'" + u + "'" for u in ids.splitlines())
    sql(f"DROP TABLE IF EXISTS bench_ids; CREATE TABLE bench_ids (idvisit BIGINT UNSIGNED PRIMARY KEY); "
        f"INSERT INTO bench_ids SELECT idvisit FROM {t('log_visit')} WHERE user_id IN ({quoted})")
    n_visits = int(sql("SELECT COUNT(*) FROM bench_ids"))
    save_rows(tables, "bench_ids")
    n_rows = saved_rows(tables)
    print(f"   {n_visits:,} visits, {n_rows:,} rows in {len(tables)} log tables")

    def run_tool():
        secs, out = timed([TOOL, "--database-url", URL, "erase", "--user-ids-file", ids_file,
                           "--execute", "--json", "--quiet"])
        doc = json.loads(out)
        assert doc["rows_total"] == n_rows, (doc["rows_total"], n_rows)
        return secs

    def run_raw():
        stmts = ["START TRANSACTION"]
        for lt in tables:
            frm, alias, _ = reach(lt, "bench_ids")
            last = len(lt["reach"].get("path", []))
            stmts.append(f"DELETE {alias} FROM {frm} JOIN bench_ids b ON b.idvisit = t{last}.idvisit")
        stmts.append("COMMIT")
        secs, _ = timed(["mariadb", "-h", "127.0.0.1", "-uroot", DB, "-e", "; ".join(stmts)])
        return secs

    def run_pt():
        total = 0.0
        for lt in tables:
            secs, _ = timed(["pt-archiver", "--source", f"h=127.0.0.1,P=3306,u=root,D={DB},t={PREFIX}{lt['name']}",
                             "--where", pt_where(lt), "--purge", "--limit", "1000", "--commit-each",
                             "--bulk-delete", "--no-check-charset"])
            total += secs
        return total

    have_pt = subprocess.run(["which", "pt-archiver"], capture_output=True).returncode == 0
    results = {"tool": [], "raw": [], "pt": []}
    for i in range(RUNS):
        for name, fn in [("tool", run_tool), ("raw", run_raw), ("pt", run_pt)]:
            if name == "pt" and not have_pt:
                continue
            secs = fn()
            left = int(sql(f"SELECT COUNT(*) FROM {t('log_visit')} WHERE idvisit IN (SELECT idvisit FROM bench_ids)"))
            assert left == 0, f"{name} left {left} visits"
            results[name].append(secs)
            restore_rows(tables)
            print(f"   run {i + 1} {name:5} {secs:7.2f} s  {n_rows / secs:10,.0f} rows/s", flush=True)
    print()
    rate = {}
    for name, label in [("tool", "matomo-erase --execute"), ("raw", "raw set-based, 1 tx"),
                        ("pt", "pt-archiver per table")]:
        if results[name]:
            m = statistics.median(results[name])
            rate[name] = n_rows / m
            print(f"   {label:24} {fmt(results[name], 's', 1.0)}  {rate[name]:10,.0f} rows/s")
    if "raw" in rate:
        print(f"   ratio tool/raw (rows/s): {rate['tool'] / rate['raw']:.2f}")
    if "pt" in rate:
        print(f"   ratio tool/pt-archiver (rows/s): {rate['tool'] / rate['pt']:.2f}")
    return rate


def max_rss(args):
    out = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + args, text=True, capture_output=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    for line in out.stderr.splitlines():
        if line.startswith("MAXRSS "):
            return int(line.split()[1]), json.loads(out.stdout)
    raise SystemExit("no max RSS reported")


def bench_memory():
    print("\n3. peak memory (max RSS) of erase --execute")
    res = []
    for n in (1000, 1000000):
        path = os.path.join(WORK, f"visits_{n}.txt")
        ids = sql(f"SELECT idvisit FROM {t('log_visit')} ORDER BY idvisit DESC LIMIT {n}")
        with open(path, "w") as f:
            f.write(ids + "\n")
        t0 = time.perf_counter()
        kb, doc = max_rss([TOOL, "--database-url", URL, "erase", "--visit-ids-file", path,
                           "--execute", "--json", "--quiet"])
        secs = time.perf_counter() - t0
        res.append(kb)
        print(f"   {doc['visits']:>9,} visits, {doc['rows_total']:>11,} rows: max RSS {kb / 1024:6.1f} MiB "
              f"in {secs:.1f} s ({doc['rows_total'] / secs:,.0f} rows/s, {doc['chunks']} chunks)", flush=True)
    sql(f"INSERT IGNORE INTO {t('option')} VALUES ('bench_consumed', '1', 0)")
    print(f"   ratio 1,000,000 / 1,000 visits: {res[1] / res[0]:.2f}")


def main():
    print(f"matomo-erase benchmark: {VISITS:,} visits, {RUNS} runs each, database {DB}")
    # A production server sizes its buffer pool to its data; the server's 128 MiB default makes
    # every method wait on random reads alike. BENCH_BUFFER_POOL=0 keeps the server's setting.
    pool = int(os.environ.get("BENCH_BUFFER_POOL", str(4 << 30)))
    if pool:
        sql(f"SET GLOBAL innodb_buffer_pool_size = {pool}", db=None)
    print("server: innodb_buffer_pool_size",
          f"{int(sql('SELECT @@innodb_buffer_pool_size', db=None)) >> 20} MiB")
    ensure_data()
    print("rows:", ", ".join(f"{k} {v:,}" for k, v in table_counts().items()))
    tables = log_tables()
    # Warm the caches once, the same for every method: read the log tables' indexes and rows.
    for name in ["log_visit", "log_link_visit_action", "log_conversion", "log_conversion_item"]:
        sql(f"SELECT COUNT(*), SUM(idvisit) FROM {t(name)} FORCE INDEX (PRIMARY)")
    bench_find()
    bench_erase(tables)
    if os.environ.get("SKIP_MEMORY") != "1":
        bench_memory()


if __name__ == "__main__":
    main()
