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
use std::collections::HashMap;
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
             and ?ssl-mode=REQUIRED for TLS; characters such as @ : / ? # % in the user name or \
             password are percent-encoded (# is %23, @ is %40)",
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

/// The keys of `[database]` that matomo-erase reads.
const USED_KEYS: [&str; 8] = [
    "host",
    "port",
    "unix_socket",
    "username",
    "password",
    "dbname",
    "tables_prefix",
    "enable_ssl",
];

/// Reads `[database]` from Matomo's config.ini.php. Matomo writes a unix socket path either into
/// `host` or into `port` (and older installs into `unix_socket`); all three are honoured.
fn from_matomo_config(path: &Path) -> anyhow::Result<(MySqlConnectOptions, String)> {
    // rust-ini splits the file into sections and keys and hands over each value's text as it
    // stands after `=`; `php_ini_value` then reads that text as PHP does. Neither of
    // rust-ini's quote modes reads it as PHP: its escape mode also decodes `\t`, `\n`, `\0`
    // and `\x....` and drops the backslash before any other character, where PHP keeps both;
    // without it `\"` and `\\` stay escaped. A password such as `C:\temp\"x` would be wrong
    // either way and the login refused.
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    if !path.is_file() {
        return Err(usage(format!(
            "the path given to --matomo-config does not name an existing file ({}); give the \
             path of config/config.ini.php inside the Matomo installation",
            crate::select::NOT_SHOWN
        )));
    }
    let ini = Ini::load_from_file_opt(path, opt).map_err(|e| {
        usage(format!(
            "cannot read Matomo's config {}: {e}; give the path of config/config.ini.php inside \
             the Matomo installation",
            path.display()
        ))
    })?;
    // A section named again replaces the one before, whole, in PHP's parse_ini_file: an admin
    // who appended a new [database] block below the old one has Matomo reading the new one.
    let db = ini
        .section_all(Some("database"))
        .next_back()
        .ok_or_else(|| {
            usage(format!(
                "{} has no [database] section; is it Matomo's config/config.ini.php?",
                path.display()
            ))
        })?;
    // PHP keeps the last of several lines with the same key, so the map does too. Only the keys
    // read below are decoded: another key that PHP would refuse is Matomo's problem, not ours.
    let mut fields: HashMap<&str, String> = HashMap::new();
    for (key, raw) in db.iter().filter(|(k, _)| USED_KEYS.contains(k)) {
        let value = php_ini_value(raw).map_err(|why| {
            usage(format!(
                "[database] {key} in {}: {why}; connect with --database-url \
                 mysql://USER:PASS@HOST:PORT/DB instead",
                path.display()
            ))
        })?;
        fields.insert(key, value);
    }
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
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
    // The password is taken whole: spaces at its ends are part of it.
    if let Some(p) = fields.get("password").filter(|p| !p.is_empty()) {
        o = o.password(p);
    }
    let dbname = get("dbname")
        .ok_or_else(|| usage(format!("[database] in {} has no dbname", path.display())))?;
    o = o.database(dbname);
    let prefix = get("tables_prefix").unwrap_or("").to_owned();
    Ok((o, prefix))
}

/// A value of Matomo's config.ini.php as PHP's `parse_ini_file` hands it to Matomo, from the text
/// after `=`. Matomo's IniReader takes the values of PHP's INI_SCANNER_NORMAL mode as they are;
/// the rules below are those of that mode in PHP 7 and 8 (Zend/zend_ini_scanner.l):
///
/// - `"..."`: `\"` is `"`, `\\` is `\` and `\$` is `$`; a backslash before any other character
///   stays, and so does the character (`\t` is a backslash and a `t`). A `\"` at the end of the
///   line closes the value and keeps its backslash: PHP's rule for Windows paths (`"C:\dir\"`),
///   which is also how Matomo's older writer, escaping quotes only, wrote a value ending in a
///   backslash. Spaces and tabs next to the quotes outside them are dropped.
/// - `'...'`: the text as it stands, no escapes.
/// - Outside quotes: the text up to a `;` that starts a comment, trimmed. The whole value
///   `true`, `on` or `yes` is `1`; `false`, `off`, `no`, `none` or `null` is empty (any case).
/// - Parts next to each other are joined: `"a"'b'c` is `abc`.
///
/// Refused, with the reason: `${...}`, which PHP replaces with an environment variable or an ini
/// setting of its own process; outside quotes, `=` and the characters PHP reads as operators
/// (`& | ^ ~ ( ) !`); a quote that does not close on its line.
///
/// Hand-written because rust-ini cannot be told PHP's rules (see `from_matomo_config`).
///
/// Limitation: outside quotes, the name of a PHP constant (`PHP_OS`) is the constant's value to
/// PHP and stays a name here, and a quoted value over several lines, which PHP reads, is refused;
/// write the value on one line in double quotes, or connect with --database-url.
fn php_ini_value(raw: &str) -> Result<String, String> {
    const INTERPOLATION: &str = "`${` in it is replaced by PHP with an environment variable or \
                                 ini setting of PHP's own process, which matomo-erase cannot know";
    let raw = raw.trim();
    match raw.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => return Ok("1".to_owned()),
        "false" | "off" | "no" | "none" | "null" => return Ok(String::new()),
        _ => {}
    }

    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                i += 1;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return Err("a double quote does not close on its line".into()),
                        (Some('"'), _) => break,
                        (Some('$'), Some('{')) => return Err(INTERPOLATION.into()),
                        // Kept with its backslash; the quote then closes the value.
                        (Some('\\'), Some('"')) if i + 2 == chars.len() => {
                            out.push('\\');
                            i += 1;
                        }
                        (Some('\\'), Some(c @ ('"' | '\\' | '$'))) => {
                            out.push(*c);
                            i += 2;
                        }
                        (Some('\\'), Some(c)) => {
                            out.push('\\');
                            out.push(*c);
                            i += 2;
                        }
                        (Some(c), _) => {
                            out.push(*c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                while matches!(chars.get(i), Some(' ' | '\t')) {
                    i += 1;
                }
            }
            '\'' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("a single quote does not close on its line")?;
                out.extend(&chars[i + 1..i + 1 + close]);
                i += close + 2;
            }
            ';' => break,
            ' ' | '\t' => {
                let mut end = i;
                while matches!(chars.get(end), Some(' ' | '\t')) {
                    end += 1;
                }
                if !matches!(chars.get(end), None | Some('"' | ';')) {
                    out.extend(&chars[i..end]);
                }
                i = end;
            }
            '$' if chars.get(i + 1) == Some(&'{') => return Err(INTERPOLATION.into()),
            c @ ('&' | '|' | '^' | '~' | '(' | ')' | '!' | '=') => {
                return Err(format!(
                    "`{c}` outside quotes is an operator to PHP; put the value in double quotes"
                ))
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
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
            // A wrong name is bad input, not a connection problem: the server answered.
            "1049" => {
                return usage(format!(
                    "the database in {who} does not exist: {msg}; check the database name \
                     (SHOW DATABASES lists the ones this user can see)"
                ))
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

#[cfg(test)]
mod tests {
    use super::php_ini_value;

    #[test]
    fn config_values_are_read_as_php_reads_them() {
        let read = |raw: &str| php_ini_value(raw).unwrap();
        // Double quotes: three escapes; any other backslash stays with its character.
        assert_eq!(read(r#""a\"b\\c\$d""#), r#"a"b\c$d"#);
        assert_eq!(read(r#""C:\temp\new\x41""#), r#"C:\temp\new\x41"#);
        assert_eq!(read(r#""q\"u'o\\te\\\\d$;1""#), r#"q"u'o\te\\d$;1"#);
        // A `\"` that ends the line closes the value, the backslash kept.
        assert_eq!(read(r#""C:\dir\""#), r#"C:\dir\"#);
        // `;` starts a comment only outside quotes; spaces next to quotes are dropped.
        assert_eq!(read(r#""pw;x" ; comment"#), "pw;x");
        assert_eq!(read(r#"  "a"  "b"  "#), "ab");
        assert_eq!(read(r#"a  "b"c d ;x"#), "abc d");
        // Single quotes: no escapes.
        assert_eq!(read(r#"'a\"b\\'"#), r#"a\"b\\"#);
        assert_eq!(read(r#"x'y' z"#), "xy z");
        // Outside quotes: as it stands, and PHP's keywords.
        assert_eq!(read(r"3306"), "3306");
        assert_eq!(read(r"/run/my sql\d.sock"), r"/run/my sql\d.sock");
        assert_eq!(read("On"), "1");
        assert_eq!(read("none"), "");
        assert_eq!(read(r#""yes""#), "yes");
        assert_eq!(read(r#""""#), "");
        assert_eq!(read(""), "");
    }

    #[test]
    fn config_values_php_would_change_or_refuse_are_refused() {
        for raw in [
            r#""pw${HOME}""#,
            r"pw${HOME}",
            r#""open"#,
            r#""ends in backslash\"#,
            r"'open",
            r"a|b",
            r"!x",
            r"a=b",
        ] {
            assert!(php_ini_value(raw).is_err(), "{raw} was accepted");
        }
        // `$` alone is no interpolation.
        assert_eq!(php_ini_value(r#""a$b""#).unwrap(), "a$b");
        assert_eq!(php_ini_value(r"a$b").unwrap(), "a$b");
    }
}
