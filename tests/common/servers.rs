//! Servers of our own beside the machine's (a replication pair, a Galera cluster), reached
//! with the mariadb client over TCP, and what the tests on them share: a database loaded with
//! a fixture on one server, the first user ids of the fixture, and a lock that gives one test
//! at a time the right to stop, delay or lock a shared server.

use super::{fixture, stderr, stdout};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One server, reached with the mariadb client over TCP.
#[derive(Clone, Debug)]
pub struct Server {
    pub url: url::Url,
}

impl Server {
    pub fn new(url: &str) -> Server {
        let url = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        Server { url }
    }

    pub fn client_args(&self) -> Vec<String> {
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
    pub fn db_url(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(db);
        u.to_string()
    }

    /// `user@host:port`, as matomo-erase labels a server.
    pub fn label(&self) -> String {
        format!(
            "{}@{}:{}",
            self.url.username(),
            self.url.host_str().unwrap_or(""),
            self.url.port().unwrap_or(3306)
        )
    }

    pub fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
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

    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL on {} failed: {sql:.300}\n{e}", self.label()))
    }

    pub fn count(&self, db: &str, sql: &str) -> u64 {
        let text = self.sql(Some(db), sql);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}: {text:?}"))
    }

    /// One value of SHOW GLOBAL STATUS.
    pub fn status(&self, name: &str) -> String {
        let row = self.sql(None, &format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        row.trim().split('\t').nth(1).unwrap_or_default().to_owned()
    }

    /// One column of SHOW SLAVE STATUS (empty when the server replicates from nobody).
    pub fn slave_field(&self, name: &str) -> String {
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
    pub fn checksum(&self, db: &str, table: &str, filter: &str) -> (u64, String) {
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

/// The servers a script of ours starts: the URLs from the environment when every variable is
/// set there, else from the `export NAME=URL` lines of `scripts/<script> start`.
pub fn started_by(script: &str, vars: &[&str]) -> Vec<Server> {
    let from_env: Option<Vec<String>> = vars.iter().map(|v| std::env::var(v).ok()).collect();
    if let Some(urls) = from_env {
        return urls.iter().map(|u| Server::new(u)).collect();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .arg("start")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{} start failed:\n{}",
        path.display(),
        stderr(&out)
    );
    let text = stdout(&out);
    vars.iter()
        .map(|name| {
            let url = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in the output of {script}:\n{text}"));
            Server::new(url)
        })
        .collect()
}

/// Whoever holds this may stop, delay or lock the shared servers named by the turn: one test
/// at a time, within this process (a mutex) and between processes (a folder that only one
/// can create; a holder that died leaves its pid behind, so its folder is taken over).
pub struct Turn {
    dir: PathBuf,
    _local: MutexGuard<'static, ()>,
}

impl Turn {
    pub fn take(name: &str) -> Turn {
        static LOCAL: Mutex<()> = Mutex::new(());
        let local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());

        let dir = std::env::temp_dir().join(format!("matomo-erase-{name}-turn"));
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
        Turn { dir, _local: local }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A database of its own on `server` with a fixture loaded; dropped at the end.
pub struct ServerDb {
    pub name: String,
    pub server: Server,
}

impl ServerDb {
    pub fn with_fixture(hint: &str, server: &Server, file: &str) -> ServerDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "me_s_{hint}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        server.sql(
            None,
            &format!("DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"),
        );
        let db = ServerDb {
            name,
            server: server.clone(),
        };
        let load = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zcat '{}' | mariadb {} '{}'",
                fixture(file).display(),
                server.client_args().join(" "),
                db.name
            ))
            .status()
            .expect("sh runs");
        assert!(
            load.success(),
            "loading {file} into {} failed",
            server.label()
        );
        db
    }

    pub fn url(&self) -> String {
        self.server.db_url(&self.name)
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.server.count(&self.name, sql)
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let _ = self
            .server
            .try_sql(None, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// The first `n` user ids of a fixture database, in a file, and how many visits they have.
pub struct Subjects {
    pub path: PathBuf,
    pub in_list: String,
    pub visits: u64,
}

impl Subjects {
    pub fn first(db: &ServerDb, n: usize) -> Subjects {
        let ids: Vec<String> = db
            .server
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
        s.visits = s.remaining(&db.server, &db.name);
        s
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    pub fn remaining(&self, server: &Server, db: &str) -> u64 {
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
