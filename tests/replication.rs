//! Replica lag on a real primary and replica: the erase holds its chunks while the replica is
//! stopped or lags, finishes once it catches up, and leaves the replica with exactly the
//! primary's rows; without --replica it finds the replica that the primary lists.
//!
//! The pair comes from MATOMO_ERASE_PRIMARY_URL and MATOMO_ERASE_REPLICA_URL, or, when they
//! are not set, from `scripts/replication.sh start`. Each test loads the fixture into its own
//! database on the primary (which replicates it). The tests stop or delay the one shared
//! replica, so they take turns: a lock within this process and a lock folder between
//! processes.

mod common;
use common::{bin, fixture, stderr, stdout, CORE_LOG_TABLES, THREE_SITES};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One of our servers, reached with the mariadb client over TCP.
#[derive(Clone, Debug)]
struct Server {
    url: url::Url,
}

impl Server {
    fn new(url: &str) -> Server {
        let url = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        Server { url }
    }

    fn client_args(&self) -> Vec<String> {
        let mut args = vec![
            "--no-defaults".to_string(),
            "--protocol=TCP".into(),
            "-h".into(),
            self.url.host_str().unwrap_or("127.0.0.1").into(),
            "-P".into(),
            self.url.port().unwrap_or(3306).to_string(),
            "-u".into(),
            self.url.username().into(),
        ];
        if let Some(pw) = self.url.password() {
            args.push(format!("-p{pw}"));
        }
        args
    }

    /// The server's URL with `db` as its database.
    fn db_url(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(db);
        u.to_string()
    }

    /// `user@host:port`, as matomo-erase labels a replica.
    fn label(&self) -> String {
        format!(
            "{}@{}:{}",
            self.url.username(),
            self.url.host_str().unwrap_or(""),
            self.url.port().unwrap_or(3306)
        )
    }

    fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(self.client_args()).args(["-N", "-B", "-e", sql]);
        if let Some(db) = db {
            cmd.arg(db);
        }
        let out = cmd.output().expect("mariadb client runs");
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).expect("utf8 output"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL on {} failed: {sql:.300}\n{e}", self.label()))
    }

    fn count(&self, db: &str, sql: &str) -> u64 {
        let text = self.sql(Some(db), sql);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}: {text:?}"))
    }

    /// One column of SHOW SLAVE STATUS (empty when the server replicates from nobody).
    fn slave_field(&self, name: &str) -> String {
        let mut cmd = Command::new("mariadb");
        cmd.args(self.client_args())
            .args(["-E", "-e", "SHOW SLAVE STATUS"]);
        let out = cmd.output().expect("mariadb client runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix(": "))
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// Row count and checksum of the rows of `table` that `filter` keeps.
    fn checksum(&self, db: &str, table: &str, filter: &str) -> (u64, String) {
        let cols = self.sql(
            Some(db),
            &format!(
                "SELECT GROUP_CONCAT(CONCAT('IFNULL(HEX(`', column_name, '`), ''~'')') \
                 ORDER BY ordinal_position SEPARATOR ',') FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
        );
        let cols = cols.trim();
        assert!(!cols.is_empty() && cols != "NULL", "{table} has no columns");
        let row = self.sql(
            Some(db),
            &format!(
                "SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(CRC32(CONCAT_WS('|', {cols}))), 0), \
                 ' ', COALESCE(BIT_XOR(CRC32(MD5(CONCAT_WS('|', {cols})))), 0)) \
                 FROM `{table}` WHERE {filter}"
            ),
        );
        let (n, sum) = row.trim().split_once(' ').expect("count and checksum");
        (n.parse().unwrap(), sum.to_owned())
    }
}

/// The primary and the replica, started once per test process when the environment names none.
fn pair() -> &'static (Server, Server) {
    static PAIR: OnceLock<(Server, Server)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let from_env = (
            std::env::var("MATOMO_ERASE_PRIMARY_URL"),
            std::env::var("MATOMO_ERASE_REPLICA_URL"),
        );
        if let (Ok(p), Ok(r)) = from_env {
            return (Server::new(&p), Server::new(&r));
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/replication.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{} start failed:\n{}",
            script.display(),
            stderr(&out)
        );
        let text = stdout(&out);
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in the output of replication.sh:\n{text}"))
                .to_owned()
        };
        (
            Server::new(&var("MATOMO_ERASE_PRIMARY_URL")),
            Server::new(&var("MATOMO_ERASE_REPLICA_URL")),
        )
    })
}

/// Whoever holds this may stop, delay or restart the shared replica.
struct ReplicaTurn {
    dir: PathBuf,
    _local: MutexGuard<'static, ()>,
}

impl ReplicaTurn {
    fn take() -> ReplicaTurn {
        static LOCAL: Mutex<()> = Mutex::new(());
        let local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());

        // Between processes: a folder that only one can create. A holder that died leaves its
        // pid behind, so a stale folder is recognised and taken over.
        let dir = std::env::temp_dir().join("matomo-erase-replica-turn");
        let start = Instant::now();
        loop {
            if std::fs::create_dir(&dir).is_ok() {
                std::fs::write(dir.join("pid"), std::process::id().to_string()).expect("pid file");
                break;
            }
            let holder = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
            let alive = holder.trim().parse::<u32>().is_ok_and(|pid| {
                PathBuf::from(format!("/proc/{pid}")).exists() && pid != std::process::id()
            });
            // An empty pid file is a holder between creating the folder and writing it, unless
            // it has stayed empty for long.
            let age = std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if !alive && (!holder.is_empty() || age > Duration::from_secs(10)) {
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "{} is held by pid {holder:?} for over 10 minutes",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ReplicaTurn { dir, _local: local }
    }
}

impl Drop for ReplicaTurn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Puts the replica back as every test expects it: no delay, replicating, listed by the
/// primary. Runs when the test ends, also when it panics.
struct RestoreReplica<'a> {
    primary: &'a Server,
    replica: &'a Server,
}

impl Drop for RestoreReplica<'_> {
    fn drop(&mut self) {
        let _ = self.replica.try_sql(
            None,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
        );
        if !std::thread::panicking() {
            wait_replicating(self.primary, self.replica);
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until both replication threads run and the primary lists the replica again (a
/// replica registers anew each time its IO thread connects).
fn wait_replicating(primary: &Server, replica: &Server) {
    wait_for("replica threads running", Duration::from_secs(60), || {
        replica.slave_field("Slave_IO_Running") == "Yes"
            && replica.slave_field("Slave_SQL_Running") == "Yes"
    });
    wait_for(
        "replica listed by SHOW REPLICA HOSTS",
        Duration::from_secs(60),
        || !primary.sql(None, "SHOW REPLICA HOSTS").trim().is_empty(),
    );
}

/// Waits until the replica has applied everything the primary has written so far.
fn wait_caught_up(primary: &Server, replica: &Server) {
    let pos = primary.sql(None, "SELECT @@gtid_binlog_pos");
    let pos = pos.trim();
    let waited = replica.sql(None, &format!("SELECT MASTER_GTID_WAIT('{pos}', 120)"));
    assert_eq!(
        waited.trim(),
        "0",
        "the replica did not reach GTID {pos} within 120 s (IO={}, SQL={}, error {} {})",
        replica.slave_field("Slave_IO_Running"),
        replica.slave_field("Slave_SQL_Running"),
        replica.slave_field("Last_IO_Error"),
        replica.slave_field("Last_SQL_Error")
    );
}

/// A database of its own on the primary with the three-sites fixture, present on the replica
/// too; dropped (on both) at the end.
struct PrimaryDb {
    name: String,
    primary: Server,
}

impl PrimaryDb {
    fn with_fixture(hint: &str, primary: &Server, replica: &Server) -> PrimaryDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "me_r_{hint}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        primary.sql(
            None,
            &format!("DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"),
        );
        let db = PrimaryDb {
            name,
            primary: primary.clone(),
        };
        let load = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zcat '{}' | mariadb {} '{}'",
                fixture(THREE_SITES).display(),
                primary.client_args().join(" "),
                db.name
            ))
            .status()
            .expect("sh runs");
        assert!(
            load.success(),
            "loading the fixture into the primary failed"
        );

        wait_caught_up(primary, replica);
        for t in CORE_LOG_TABLES {
            let sql = format!("SELECT COUNT(*) FROM matomo_{t}");
            assert_eq!(
                replica.count(&db.name, &sql),
                primary.count(&db.name, &sql),
                "matomo_{t} on the replica"
            );
        }
        assert_eq!(
            replica.count(&db.name, "SELECT COUNT(*) FROM matomo_log_visit"),
            3526
        );
        db
    }

    fn url(&self) -> String {
        self.primary.db_url(&self.name)
    }
}

impl Drop for PrimaryDb {
    fn drop(&mut self) {
        let _ = self
            .primary
            .try_sql(None, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// The first `n` user ids of the fixture, in a file, and how many visits they have.
struct Subjects {
    path: PathBuf,
    in_list: String,
    visits: u64,
}

impl Subjects {
    fn first(db: &PrimaryDb, n: usize) -> Subjects {
        let ids: Vec<String> = db
            .primary
            .sql(
                Some(&db.name),
                &format!(
                    "SELECT DISTINCT user_id FROM matomo_log_visit WHERE user_id IS NOT NULL \
                     ORDER BY user_id LIMIT {n}"
                ),
            )
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids.len(), n);
        assert!(ids.iter().all(|i| !i.contains('\'') && !i.contains('\\')));
        let path = std::env::temp_dir().join(format!("{}-user-ids.txt", db.name));
        std::fs::write(&path, ids.join("\n") + "\n").expect("user ids file");
        let in_list = ids
            .iter()
            .map(|i| format!("'{i}'"))
            .collect::<Vec<_>>()
            .join(",");
        let mut s = Subjects {
            path,
            in_list,
            visits: 0,
        };
        s.visits = s.remaining(&db.primary, &db.name);
        s
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }

    fn remaining(&self, server: &Server, db: &str) -> u64 {
        server.count(
            db,
            &format!(
                "SELECT COUNT(*) FROM matomo_log_visit WHERE user_id IN ({})",
                self.in_list
            ),
        )
    }
}

impl Drop for Subjects {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MATOMO_ERASE_CRASH_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait works").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the run did not end within {limit:?}\nstderr: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

fn json(out: &Output, code: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON: {e}\n{}", stdout(out)))
}

/// The erase reached the replica: the four core log tables and the queued invalidations are
/// the same rows on both servers.
fn assert_replica_equals_primary(primary: &Server, replica: &Server, db: &str) {
    wait_caught_up(primary, replica);
    for t in CORE_LOG_TABLES {
        let table = format!("matomo_{t}");
        assert_eq!(
            replica.checksum(db, &table, "1"),
            primary.checksum(db, &table, "1"),
            "{table} differs between primary and replica"
        );
    }
    let queued = "option_name LIKE '%report_to_invalidate%'";
    let on_primary = primary.checksum(db, "matomo_option", queued);
    assert!(on_primary.0 > 0, "the erase queued invalidations");
    assert_eq!(
        replica.checksum(db, "matomo_option", queued),
        on_primary,
        "queued invalidations differ between primary and replica"
    );
}

#[test]
fn pauses_while_replica_is_stopped_then_finishes() {
    let (primary, replica) = pair();
    let _turn = ReplicaTurn::take();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = PrimaryDb::with_fixture("stopped", primary, replica);
    let s = Subjects::first(&db, 50);
    assert_eq!(s.visits, 103);

    replica.sql(None, "STOP SLAVE");
    let (url, ids, replica_url) = (db.url(), s.arg(), replica.url.to_string());
    let mut child = spawn(&[
        "erase",
        "--database-url",
        &url,
        "--user-ids-file",
        &ids,
        "--execute",
        "--json",
        "--replica",
        &replica_url,
        "--max-lag",
        "1s",
        "--chunk-size",
        "5",
        "--chunk-time",
        "0",
    ]);
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended while the replica was stopped"
        );
        assert_eq!(
            s.remaining(primary, &db.name),
            103,
            "a chunk was erased while the replica was stopped"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    replica.sql(None, "START SLAVE");
    let out = finish(child, Duration::from_secs(120));

    let doc = json(&out, 0);
    eprintln!(
        "stopped replica: pauses {}, {} chunks, {:.1} s",
        doc["pauses"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert_eq!(
        doc["replicas"],
        "watching 1 replica(s) given with --replica, --max-lag 1s"
    );
    assert!(
        stderr(&out).contains(&format!(
            "pausing: replica {}/ replication stopped (IO=No, SQL=No)",
            replica.label()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 103);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(s.remaining(primary, &db.name), 0);

    assert_replica_equals_primary(primary, replica, &db.name);
    assert_eq!(s.remaining(replica, &db.name), 0);
    assert_eq!(
        replica.count(&db.name, "SELECT COUNT(*) FROM matomo_log_visit"),
        3526 - 103
    );
    drop(restore);
}

#[test]
fn pauses_while_replica_lags() {
    let (primary, replica) = pair();
    let _turn = ReplicaTurn::take();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = PrimaryDb::with_fixture("lag", primary, replica);
    let s = Subjects::first(&db, 20);
    assert_eq!(s.visits, 45);

    // The replica applies each event 3 s after the primary wrote it, so its lag passes 1 s
    // while chunks are still to come (23 chunks, 300 ms apart).
    replica.sql(
        None,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE",
    );
    wait_replicating(primary, replica);
    let (url, ids, replica_url) = (db.url(), s.arg(), replica.url.to_string());
    let out = finish(
        spawn(&[
            "erase",
            "--database-url",
            &url,
            "--user-ids-file",
            &ids,
            "--execute",
            "--json",
            "--replica",
            &replica_url,
            "--max-lag",
            "1s",
            "--chunk-size",
            "2",
            "--chunk-time",
            "0",
            "--sleep",
            "300ms",
        ]),
        Duration::from_secs(180),
    );

    let doc = json(&out, 0);
    eprintln!(
        "delayed replica: pauses {}, {} chunks, {:.1} s",
        doc["pauses"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert!(
        stderr(&out).contains(&format!("pausing: replica {}/ lag=", replica.label())),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 45);
    assert_eq!(doc["chunks"], 23);
    assert_eq!(doc["verify"]["ok"], true);

    drop(restore);
    assert_eq!(replica.slave_field("SQL_Delay"), "0");
    assert_replica_equals_primary(primary, replica, &db.name);
    assert_eq!(s.remaining(replica, &db.name), 0);
}

#[test]
fn finds_replicas_listed_by_the_primary() {
    let (primary, replica) = pair();
    let _turn = ReplicaTurn::take();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = PrimaryDb::with_fixture("listed", primary, replica);
    let s = Subjects::first(&db, 20);
    let listed = primary.sql(None, "SHOW REPLICA HOSTS");
    let port = replica.url.port().unwrap().to_string();
    assert!(
        listed
            .lines()
            .any(|l| l.split('\t').nth(2) == Some(port.as_str())),
        "{listed}"
    );

    // A delayed replica shows that the one found is really watched, not only counted.
    replica.sql(
        None,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE",
    );
    wait_replicating(primary, replica);
    let (url, ids) = (db.url(), s.arg());
    let out = finish(
        spawn(&[
            "erase",
            "--database-url",
            &url,
            "--user-ids-file",
            &ids,
            "--execute",
            "--json",
            "--max-lag",
            "1s",
            "--chunk-size",
            "2",
            "--chunk-time",
            "0",
            "--sleep",
            "300ms",
        ]),
        Duration::from_secs(180),
    );

    let doc = json(&out, 0);
    assert_eq!(
        doc["replicas"],
        "watching 1 replica(s) found by SHOW REPLICA HOSTS, --max-lag 1s"
    );
    // The replica is reached with the primary's user and database.
    assert!(
        stderr(&out).contains(&format!(
            "pausing: replica {}@127.0.0.1:{port}/{} lag=",
            primary.url.username(),
            db.name
        )),
        "{}",
        stderr(&out)
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert_eq!(doc["visits"], s.visits);
    assert_eq!(doc["verify"]["ok"], true);

    drop(restore);
    assert_replica_equals_primary(primary, replica, &db.name);
}
