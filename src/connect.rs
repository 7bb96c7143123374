//! Where the database is and how to log in: `--database-url` / `DATABASE_URL` as sqlx reads it,
//! or the `[database]` section of Matomo's `config/config.ini.php`.
//!
//! This module owns the password. It never prints it: every description of a connection goes
//! through `Target::describe`, which names host, port or socket, user and database only.

use crate::cli::ConnArgs;
use crate::error::{connection, usage};
use ini::{Ini, ParseOption};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::str::FromStr;

/// A resolved connection target.
#[derive(Clone, Debug)]
pub struct Target {
    pub options: MySqlConnectOptions,
    /// The prefix from `--prefix` or Matomo's config; None lets `inspect` find it.
    pub prefix: Option<String>,
}

impl Target {
    /// `user@host:port/db` or `user@unix:/path/db`, never the password.
    pub fn describe(&self) -> String {
        describe_options(&self.options)
    }
}

pub fn describe_options(o: &MySqlConnectOptions) -> String {
    let place = match o.get_socket() {
        Some(path) => format!("unix:{}", path.display()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!(
        "{}@{}/{}",
        o.get_username(),
        place,
        o.get_database().unwrap_or("")
    )
}

/// Resolves the command line into a connection target: `--database-url`, else
/// `--matomo-config`, else the `DATABASE_URL` variable. Both options at once are refused: they
/// may name two databases, and an erase must never pick one silently. `--prefix` wins over the
/// config's `tables_prefix`.
pub fn resolve(args: &ConnArgs) -> anyhow::Result<Target> {
    let (options, config_prefix) =
        match (&args.database_url, &args.matomo_config) {
            (Some(_), Some(_)) => return Err(usage(
                "both --database-url and --matomo-config are given, and they may name different \
                 databases: pass only one of them",
            )),
            (Some(url), None) => (parse_url(url)?, None),
            (None, Some(path)) => {
                let (o, p) = from_matomo_config(path)?;
                (o, Some(p))
            }
            (None, None) => match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => (parse_url(&url)?, None),
                _ => return Err(usage(
                    "no database given: pass --database-url mysql://USER:PASS@HOST:PORT/DB (or \
                     set DATABASE_URL), or --matomo-config /path/to/matomo/config/config.ini.php",
                )),
            },
        };
    if options.get_database().unwrap_or("").is_empty() {
        return Err(usage(
            "the database URL names no database: add it as the path, e.g. \
             mysql://root@127.0.0.1:3306/matomo",
        ));
    }
    // Statements go to the `sqlx::query` log target at debug level, which `-vv` shows; their
    // text never holds a password or an identifier (those are bound), so it is safe to show.
    // Slow-statement warnings are off: a long chunk is reported by the erase itself.
    let options = options
        .charset("utf8mb4")
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Off, std::time::Duration::MAX);
    Ok(Target {
        options,
        prefix: args.prefix.clone().or(config_prefix),
    })
}

fn parse_url(url: &str) -> anyhow::Result<MySqlConnectOptions> {
    // sqlx reads any scheme as MySQL; a postgres:// URL pasted by mistake would then reach a
    // server as if it were MySQL and fail with a confusing handshake error.
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("mysql") | Some("mariadb")) {
        return Err(usage(format!(
            "the database URL {} is not a MySQL/MariaDB URL: it must start with mysql:// (or \
             mariadb://), e.g. mysql://USER:PASSWORD@HOST:3306/DATABASE",
            redact_url(url)
        )));
    }
    MySqlConnectOptions::from_str(url).map_err(|e| {
        usage(format!(
            "cannot read the database URL ({}): {}; the form is \
             mysql://USER:PASSWORD@HOST:PORT/DATABASE, with ?socket=/path for a unix socket \
             and ?ssl-mode=REQUIRED for TLS",
            redact_url(url),
            redact_text(&e.to_string(), url)
        ))
    })
}

/// The URL with its password replaced, for error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

fn redact_text(text: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(pw) if !pw.is_empty() => text.replace(&pw, "***"),
        _ => text.to_owned(),
    }
}

/// Reads `[database]` from Matomo's config.ini.php. Matomo writes a unix socket path either into
/// `host` or into `port` (and older installs into `unix_socket`); all three are honoured.
fn from_matomo_config(path: &Path) -> anyhow::Result<(MySqlConnectOptions, String)> {
    let opt = ParseOption {
        enabled_quote: true,
        enabled_escape: false,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_file_opt(path, opt).map_err(|e| {
        usage(format!(
            "cannot read Matomo's config {}: {e}; give the path of config/config.ini.php inside \
             the Matomo installation",
            path.display()
        ))
    })?;
    let db = ini.section(Some("database")).ok_or_else(|| {
        usage(format!(
            "{} has no [database] section; is it Matomo's config/config.ini.php?",
            path.display()
        ))
    })?;
    let get = |k: &str| db.get(k).map(str::trim).filter(|v| !v.is_empty());
    if get("enable_ssl").is_some_and(|v| v != "0") {
        return Err(usage(format!(
            "{} sets enable_ssl: TLS settings of Matomo's config are not read by matomo-erase; \
             connect with --database-url mysql://USER:PASS@HOST:PORT/DB?ssl-mode=VERIFY_IDENTITY\
             &ssl-ca=/path/to/ca.pem instead",
            path.display()
        )));
    }

    let mut o = MySqlConnectOptions::new();
    let host = get("host").unwrap_or("localhost");
    let port = get("port");
    let socket = get("unix_socket")
        .filter(|s| s.starts_with('/'))
        .or(Some(host).filter(|h| h.starts_with('/')))
        .or(port.filter(|p| p.starts_with('/')))
        .map(str::to_owned)
        .or_else(|| {
            // PHP's MySQL drivers take host "localhost" to mean the local server's unix socket,
            // whatever the port says; a user such as 'matomo'@'localhost' (or one that logs in
            // by unix_socket) may exist only for that path.
            host.eq_ignore_ascii_case("localhost")
                .then(default_socket)
                .flatten()
        });
    match socket.as_deref() {
        Some(s) => o = o.socket(s),
        None => {
            o = o.host(host);
            if let Some(p) = port {
                let p: u16 = p.parse().map_err(|_| {
                    usage(format!(
                        "[database] port = {p:?} in {} is not a port",
                        path.display()
                    ))
                })?;
                o = o.port(p);
            }
        }
    }
    if let Some(u) = get("username") {
        o = o.username(u);
    }
    if let Some(p) = db.get("password").filter(|p| !p.is_empty()) {
        o = o.password(p);
    }
    let dbname = get("dbname")
        .ok_or_else(|| usage(format!("[database] in {} has no dbname", path.display())))?;
    o = o.database(dbname);
    let prefix = db.get("tables_prefix").unwrap_or("").trim().to_owned();
    Ok((o, prefix))
}

/// The local server's socket where the usual packages put it (Debian and Ubuntu, Red Hat,
/// source builds), as PHP finds it when its own ini setting is empty.
///
/// Limitation: a socket set only in php.ini (pdo_mysql.default_socket) is not read; name it in
/// the config's `unix_socket` or use --database-url with `?socket=`.
fn default_socket() -> Option<String> {
    [
        "/run/mysqld/mysqld.sock",
        "/var/run/mysqld/mysqld.sock",
        "/var/lib/mysql/mysql.sock",
        "/tmp/mysql.sock",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .map(str::to_owned)
}

/// Opens one connection and sets the session up for Matomo's data: UTC session time zone, so
/// that DATETIME arithmetic in SQL is UTC as Matomo stores it.
pub async fn open(target: &Target) -> anyhow::Result<MySqlConnection> {
    open_options(&target.options).await
}

pub async fn open_options(options: &MySqlConnectOptions) -> anyhow::Result<MySqlConnection> {
    let mut conn = options
        .connect()
        .await
        .map_err(|e| connect_error(&e, options))?;
    sqlx::query("SET SESSION time_zone = '+00:00'")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Turns a driver error at connect time into a message that says what to fix.
fn connect_error(e: &sqlx::Error, o: &MySqlConnectOptions) -> anyhow::Error {
    let who = describe_options(o);
    if let Some(db) = e.as_database_error() {
        let code = crate::sql::db_code(e).unwrap_or_default();
        let msg = db.message().to_owned();
        return connection(match code.as_str() {
            "1045" => format!(
                "the server refused the login for {who}: {msg}; check the user name and password \
                 (in the URL or Matomo's config)"
            ),
            "1049" => {
                format!("the database in {who} does not exist: {msg}; check the database name")
            }
            "1044" => format!(
                "the user has no access to the database in {who}: {msg}; GRANT SELECT, DELETE \
                 ON db.* first"
            ),
            _ => format!("cannot connect to {who}: {msg}"),
        });
    }
    connection(format!(
        "cannot connect to {who}: {e}; check that the server is running and reachable at that \
         address (host, port or socket in the URL or Matomo's config)"
    ))
}

/// Closes a connection without caring whether the server is still there.
pub async fn close(conn: MySqlConnection) {
    let _ = conn.close().await;
}
