//! Test harness: scratch databases on the real MariaDB at 127.0.0.1:3306, the real fixtures,
//! the built binary, and checksums of log tables. Every test makes its own database and drops
//! it, so tests run in parallel.

#![allow(dead_code)]

pub mod servers;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const HOST: &str = "127.0.0.1";
pub const PORT: &str = "3306";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("fixtures")
        .join(name)
}

pub const THREE_SITES: &str = "matomo-5.0.2-three-sites.sql.gz";
pub const OMNI: &str = "matomo-5.1-omnifixture.sql.gz";

/// Runs SQL through the mariadb client as root; panics with the error on failure.
pub fn mariadb(db: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", HOST, "-P", PORT, "-uroot", "-N", "-B", "-e", sql]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    let out = cmd.output().expect("mariadb client runs");
    assert!(
        out.status.success(),
        "SQL failed: {sql:.300}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 output")
}

pub struct ScratchDb {
    pub name: String,
}

impl ScratchDb {
    pub fn new(hint: &str) -> ScratchDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "me_t_{hint}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        mariadb(
            None,
            &format!("DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"),
        );
        ScratchDb { name }
    }

    pub fn with_fixture(hint: &str, file: &str) -> ScratchDb {
        let db = ScratchDb::new(hint);
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zcat '{}' | mariadb -h {HOST} -P {PORT} -uroot '{}'",
                fixture(file).display(),
                db.name
            ))
            .status()
            .expect("sh runs");
        assert!(status.success(), "loading {file} failed");
        db
    }

    /// A database with our Matomo 5 schema (sql/schema.sql) under the given prefix.
    pub fn with_schema(hint: &str, prefix: &str) -> ScratchDb {
        let db = ScratchDb::new(hint);
        db.load_schema(prefix);
        db
    }

    /// Loads sql/schema.sql under a prefix (a second prefix makes a second install).
    pub fn load_schema(&self, prefix: &str) {
        let schema = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/schema.sql"),
        )
        .expect("sql/schema.sql exists")
        .replace("{{PREFIX}}", prefix);
        let mut child = Command::new("mariadb")
            .args(["-h", HOST, "-P", PORT, "-uroot", &self.name])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mariadb runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(schema.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "loading sql/schema.sql failed"
        );
    }

    pub fn url(&self) -> String {
        format!("mysql://root@{HOST}:{PORT}/{}", self.name)
    }

    pub fn sql(&self, sql: &str) -> String {
        mariadb(Some(&self.name), sql)
    }

    /// One scalar as text.
    pub fn scalar(&self, sql: &str) -> String {
        self.sql(sql).trim().to_owned()
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.scalar(sql)
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}"))
    }

    /// Checksums of every row of each table (sorted by table), optionally leaving out rows of
    /// some visits: (table, row count, checksum).
    pub fn checksums(
        &self,
        tables: &[&str],
        except_idvisits: &[u64],
    ) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        for t in tables {
            let cols = self.sql(&format!(
                "SELECT GROUP_CONCAT(CONCAT('IFNULL(HEX(`', column_name, '`), ''~'')') \
                 ORDER BY ordinal_position SEPARATOR ',') FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{t}'"
            ));
            let cols = cols.trim();
            assert!(
                !cols.is_empty() && cols != "NULL",
                "table {t} has no columns"
            );
            let has_idvisit = self.count(&format!(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = '{t}' AND column_name = 'idvisit'"
            )) > 0;
            let filter = if has_idvisit && !except_idvisits.is_empty() {
                format!(
                    " WHERE idvisit NOT IN ({})",
                    except_idvisits
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                String::new()
            };
            let row = self.scalar(&format!(
                "SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(CRC32(CONCAT_WS('|', {cols}))), 0), \
                 ' ', COALESCE(BIT_XOR(CRC32(MD5(CONCAT_WS('|', {cols})))), 0)) FROM `{t}`{filter}"
            ));
            let (n, sum) = row.split_once(' ').unwrap();
            out.push((t.to_string(), n.parse().unwrap(), sum.to_string()));
        }
        out
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", HOST, "-P", PORT, "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .output();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_matomo-erase")
}

/// Runs matomo-erase with the arguments and no DATABASE_URL from the environment.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MATOMO_ERASE_CRASH_AT")
        .output()
        .expect("binary runs")
}

pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MATOMO_ERASE_CRASH_AT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

/// Starts a run in the background with its output captured.
pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Child {
    Command::new(bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MATOMO_ERASE_CRASH_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

/// Waits for a spawned run, killing it (and failing) when it takes longer than `limit`.
pub fn finish(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait works").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the run did not end within {limit:?}\nstderr: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

/// The JSON document on a finished run's stdout; asserts the exit code.
pub fn json(out: &Output, code: i32) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON: {e}\n{}", stdout(out)))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and parses the JSON document on stdout; asserts the exit code.
pub fn run_json<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    code: i32,
) -> serde_json::Value {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code of {args:?}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON from {args:?}: {e}\n{}", stdout(&o)))
}

pub const CORE_LOG_TABLES: [&str; 4] = [
    "log_visit",
    "log_link_visit_action",
    "log_conversion",
    "log_conversion_item",
];

/// Site-days of a report as sorted "idsite date" strings.
pub fn site_days(doc: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = doc["site_days"]
        .as_array()
        .expect("site_days list")
        .iter()
        .map(|d| format!("{} {}", d["idsite"], d["date"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

/// Builds small Matomo data sets row by row on a schema database.
pub struct Data<'a> {
    pub db: &'a ScratchDb,
    pub p: String,
}

impl<'a> Data<'a> {
    pub fn new(db: &'a ScratchDb, prefix: &str) -> Data<'a> {
        Data {
            db,
            p: prefix.to_owned(),
        }
    }

    pub fn site(&self, idsite: u32, timezone: &str) {
        self.db.sql(&format!(
            "INSERT INTO `{p}site` (idsite, name, main_url, ts_created, sitesearch_keyword_parameters, \
             sitesearch_category_parameters, timezone, currency, excluded_ips, excluded_parameters, \
             excluded_user_agents, excluded_referrers, `group`, type) VALUES ({idsite}, 'site {idsite}', \
             'https://example.org', '2020-01-01', '', '', '{timezone}', 'EUR', '', '', '', '', '', 'website')",
            p = self.p
        ));
    }

    /// A visit; the idvisitor is derived from the user id as Matomo 4+ does, else given.
    pub fn visit(&self, idvisit: u64, idsite: u32, user_id: Option<&str>, first: &str, last: &str) {
        let (uid, idvisitor) = match user_id {
            Some(u) => {
                let esc = u.replace('\'', "''").replace('\\', "\\\\");
                (
                    format!("'{esc}'"),
                    format!("UNHEX(LEFT(SHA1('{esc}'), 16))"),
                )
            }
            None => (
                "NULL".to_owned(),
                format!("UNHEX(LPAD(HEX({idvisit}), 16, '0'))"),
            ),
        };
        self.db.sql(&format!(
            "INSERT INTO `{p}log_visit` (idvisit, idsite, idvisitor, visit_last_action_time, config_id, \
             location_ip, user_id, visit_first_action_time, visit_total_time) VALUES ({idvisit}, {idsite}, \
             {idvisitor}, '{last}', X'0102030405060708', X'7F000001', {uid}, '{first}', 0)",
            p = self.p
        ));
    }

    pub fn action(&self, idvisit: u64, server_time: &str) {
        self.db.sql(&format!(
            "INSERT INTO `{p}log_link_visit_action` (idsite, idvisitor, idvisit, server_time, idaction_url) \
             SELECT idsite, idvisitor, idvisit, '{server_time}', 1 FROM `{p}log_visit` WHERE idvisit = {idvisit}",
            p = self.p
        ));
    }

    pub fn conversion(&self, idvisit: u64, server_time: &str, idgoal: i32) {
        self.db.sql(&format!(
            "INSERT INTO `{p}log_conversion` (idvisit, idsite, idvisitor, server_time, idgoal, buster, url) \
             SELECT idvisit, idsite, idvisitor, '{server_time}', {idgoal}, {idvisit}, 'https://example.org/' \
             FROM `{p}log_visit` WHERE idvisit = {idvisit}",
            p = self.p
        ));
    }
}

impl ScratchDb {
    /// A copy of another scratch database, table by table (faster than reloading a dump).
    pub fn copy_of(hint: &str, from: &ScratchDb) -> ScratchDb {
        let db = ScratchDb::new(hint);
        let tables = from.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_type = 'BASE TABLE'",
        );
        let mut sql = String::from("SET foreign_key_checks = 0;");
        for t in tables.lines() {
            sql.push_str(&format!(
                "CREATE TABLE `{0}`.`{t}` LIKE `{1}`.`{t}`; INSERT INTO `{0}`.`{t}` SELECT * FROM `{1}`.`{t}`;",
                db.name, from.name
            ));
        }
        mariadb(None, &sql);
        db
    }

    /// Checksums of every log table under the prefix (those the tool erases from and those it
    /// never touches, such as `log_action`) and of the option table with its queued
    /// invalidation rows.
    pub fn erase_state(&self, prefix: &str) -> Vec<(String, u64, String)> {
        let like = prefix.replace('_', "\\_");
        let mut t: Vec<String> = self
            .sql(&format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() \
                 AND table_name LIKE '{like}log\\_%' AND table_type = 'BASE TABLE' ORDER BY 1"
            ))
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(
            CORE_LOG_TABLES
                .iter()
                .all(|c| t.contains(&format!("{prefix}{c}"))),
            "the core log tables under {prefix:?}: {t:?}"
        );
        t.push(format!("{prefix}option"));
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        self.checksums(&refs, &[])
    }
}
