//! Reads the server and the Matomo schema, and refuses what is not a Matomo database.
//!
//! Finds the table prefix, the Matomo version, the sites with their timezones, every log table
//! and how each one reaches `log_visit`: by its own `idvisit` column, or through a parent log
//! table by a shared column that is the parent's primary key (`log_hsr_event.idloghsr` →
//! `log_hsr.idloghsr` → `log_hsr.idvisit`). This module only reads.

use crate::error::usage;
use crate::sql::{ident, like_escape};
use crate::subject::StorageRules;
use crate::timezone::SiteTimezone;
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, Serialize)]
pub struct Site {
    pub idsite: u32,
    pub name: String,
    pub timezone: String,
    #[serde(skip)]
    pub tz: Option<SiteTimezone>,
}

/// One step from a table to its parent: `table.column = parent.column`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hop {
    pub column: String,
    pub parent: String,
    /// The column holds bytes (BINARY, VARBINARY, BLOB) in either table: its values are read
    /// and bound as bytes, since as text, bytes that are not UTF-8 would never match.
    #[serde(skip)]
    pub binary: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reach {
    /// `log_visit` itself.
    Visit,
    /// Has an `idvisit` column.
    Idvisit { indexed: bool },
    /// Reaches a table with `idvisit` through parents, leaf first.
    Through { path: Vec<Hop> },
}

#[derive(Clone, Debug, Serialize)]
pub struct LogTable {
    /// Unprefixed name, e.g. `log_hsr_event`.
    pub name: String,
    pub reach: Reach,
}

impl LogTable {
    /// Distance from `log_visit`: children must be deleted before their parents.
    pub fn depth(&self) -> usize {
        match &self.reach {
            Reach::Visit => 0,
            Reach::Idvisit { .. } => 1,
            Reach::Through { path } => 1 + path.len(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Untouched {
    pub name: String,
    pub reason: String,
}

/// What `inspect` learned about one Matomo database.
#[derive(Clone, Debug, Serialize)]
pub struct Matomo {
    pub database: String,
    pub server_version: String,
    pub prefix: String,
    /// `version_core` of the option table; the same key as in the erase receipt.
    #[serde(rename = "matomo_version")]
    pub version: Option<String>,
    pub sites: BTreeMap<u32, Site>,
    /// Log tables in deletion order: leaves first, `log_link_visit_action` then `log_visit` last.
    pub log_tables: Vec<LogTable>,
    pub untouched: Vec<Untouched>,
    /// What the DBA should know before trusting the list of log tables (a grant that hides
    /// tables); every plan, receipt and report repeats these.
    pub warnings: Vec<String>,
    /// Why tables of the database may be hidden from this user (grants on single tables only):
    /// erasing and verifying are refused then, since neither could see every log table.
    #[serde(skip)]
    pub hidden_tables: Option<String>,
    /// Why a chunk could not be one transaction (a log table on MyISAM, say): erasing is
    /// refused then.
    #[serde(skip)]
    pub cannot_roll_back: Option<String>,
    /// Why the archives of emptied periods are kept: archive tables that cannot roll back.
    #[serde(skip)]
    pub archives_cannot_roll_back: Option<String>,
    /// `log_visit.user_id` character set.
    pub user_id_charset: String,
    /// Matomo's "pseudonymise user ids" option is on now.
    pub pseudonymisation_on: bool,
    #[serde(skip)]
    pub rules: StorageRules,
}

impl Matomo {
    /// The prefixed, quoted name of a table.
    pub fn table(&self, unprefixed: &str) -> String {
        ident(&format!("{}{}", self.prefix, unprefixed))
    }

    pub fn site_tz(&self, idsite: u32) -> Option<&SiteTimezone> {
        self.sites.get(&idsite).and_then(|s| s.tz.as_ref())
    }

    /// `log_visit.user_id` as utf8mb4 text. Matomo sends UTF-8 and the server converts it to
    /// the column's character set, so a latin1 column holds `é` as one latin1 byte: compared
    /// and hashed as stored, it would never equal the id as the application sent it.
    pub fn user_id_text(&self) -> &'static str {
        if self
            .user_id_charset
            .to_ascii_lowercase()
            .starts_with("utf8")
        {
            "user_id"
        } else {
            "CONVERT(user_id USING utf8mb4)"
        }
    }

    pub fn has_table(&self, unprefixed: &str) -> bool {
        self.log_tables.iter().any(|t| t.name == unprefixed)
    }
}

/// Tables under the log prefix that must never be deleted from, and why.
fn never_touched(name: &str) -> Option<&'static str> {
    match name {
        "log_action" => Some(
            "shared dictionary of URLs, titles and names used by every visit; Matomo's GDPR tool \
             never deletes it (its scheduled raw-data purge removes unused entries)",
        ),
        "log_profiling" => Some("SQL profiler timings; no visitor data"),
        "log_hsr_blob" => Some(
            "recording blobs are deduplicated and shared across recordings; the \
             HeatmapSessionRecording plugin removes unused ones itself",
        ),
        _ => None,
    }
}

pub async fn inspect(conn: &mut MySqlConnection, prefix: Option<&str>) -> anyhow::Result<Matomo> {
    let row = sqlx::query("SELECT DATABASE(), VERSION()")
        .fetch_one(&mut *conn)
        .await?;
    let database: Option<String> = row.try_get(0)?;
    let server_version: String = row.try_get(1)?;
    let database = database.unwrap_or_default();

    let (prefix, installs) = find_prefix(conn, &database, prefix).await?;
    let p = |t: &str| ident(&format!("{prefix}{t}"));

    let version: Option<String> = sqlx::query_scalar(&format!(
        "SELECT option_value FROM {} WHERE option_name = 'version_core'",
        p("option")
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| not_matomo(&database, &prefix, &e))?;

    let sites = read_sites(conn, &p("site"))
        .await
        .map_err(|e| not_matomo(&database, &prefix, &e))?;
    let (log_tables, untouched, user_id_charset) =
        read_log_tables(conn, &prefix, &installs).await?;
    let (no_rollback, archives_no_rollback) =
        tables_without_rollback(conn, &prefix, &log_tables).await?;
    let archives_cannot_roll_back = archives_no_rollback.first().map(|first| {
        format!(
            "{} archive tables cannot roll back with a chunk (first: {first}), so the archives \
             of periods left without visits are kept; convert them (ALTER TABLE ... \
             ENGINE=InnoDB) to have them dropped",
            archives_no_rollback.len()
        )
    });
    let hidden_tables = hidden_tables_warning(conn, &database).await;
    let mut warnings: Vec<String> = hidden_tables.iter().cloned().collect();
    let cannot_roll_back = no_rollback.first().map(|first| {
        let all: Vec<String> = no_rollback.iter().map(ToString::to_string).collect();
        format!(
            "tables {} cannot roll back: a chunk that fails part-way would stay half done \
             there, and erase --execute is refused; convert each first, e.g. ALTER TABLE {} \
             ENGINE=InnoDB",
            all.join(", "),
            ident(&first.table)
        )
    });
    warnings.extend(cannot_roll_back.clone());

    let salt: Option<String> = sqlx::query_scalar(&format!(
        "SELECT option_value FROM {} WHERE option_name = 'useridsalt'",
        p("option")
    ))
    .fetch_optional(&mut *conn)
    .await?;
    let pseudonymisation_on: Option<String> = sqlx::query_scalar(&format!(
        "SELECT option_value FROM {} WHERE option_name = 'PrivacyManager.anonymizeUserId'",
        p("option")
    ))
    .fetch_optional(&mut *conn)
    .await?;

    Ok(Matomo {
        database,
        server_version,
        rules: StorageRules {
            replace_4byte: !user_id_charset.eq_ignore_ascii_case("utf8mb4"),
            pseudonym_salt: salt.filter(|s| !s.is_empty()),
        },
        prefix,
        version,
        sites,
        log_tables,
        untouched,
        warnings,
        hidden_tables,
        cannot_roll_back,
        archives_cannot_roll_back,
        user_id_charset,
        pseudonymisation_on: pseudonymisation_on.as_deref() == Some("1"),
    })
}

fn not_matomo(database: &str, prefix: &str, e: &sqlx::Error) -> anyhow::Error {
    // A refused SELECT is a missing privilege, not a wrong database.
    if matches!(
        crate::sql::db_code(e).as_deref(),
        Some("1142") | Some("1143") | Some("1044")
    ) {
        return crate::error::connection(format!(
            "the user may not read the Matomo tables of database {database:?} ({e}); give \
             GRANT SELECT, DELETE ON {}.* TO <user>",
            ident(database)
        ));
    }
    usage(format!(
        "database {database:?} with prefix {prefix:?} does not look like Matomo ({e}); \
         check --prefix and the database name"
    ))
}

/// Finds the prefix: every table named `<prefix>log_visit` gives one candidate.
async fn find_prefix(
    conn: &mut MySqlConnection,
    database: &str,
    wanted: Option<&str>,
) -> anyhow::Result<(String, Vec<String>)> {
    // An install is a prefix with both a log_visit and an option table; a copy of log_visit
    // alone (a backup, a benchmark's saved rows) is not one.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() \
           AND (table_name LIKE '%log\\_visit' OR table_name LIKE '%option') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let found: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_suffix("log_visit").map(str::to_owned))
        .filter(|p| names.iter().any(|n| *n == format!("{p}option")))
        .collect();
    let shown = || {
        found
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) if found.iter().any(|f| f == w) => Ok((w.to_owned(), found)),
        Some(w) if found.is_empty() => Err(usage(format!(
            "database {database:?} has no Matomo log tables (no table {w}log_visit, nor any \
             other *log_visit); is this the Matomo database?"
        ))),
        Some(w) => Err(usage(format!(
            "no table {w}log_visit in database {database:?}: the prefix {w:?} is wrong; \
             prefixes found: {}; pass one with --prefix",
            shown()
        ))),
        None if found.len() == 1 => Ok((found[0].clone(), found)),
        None if found.is_empty() => Err(usage(format!(
            "database {database:?} has no Matomo log tables (no table named *log_visit); is \
             this the Matomo database?"
        ))),
        None => Err(usage(format!(
            "database {database:?} holds several Matomo installs, prefixes {}; choose one with \
             --prefix",
            shown()
        ))),
    }
}

/// A warning when this user may SELECT single tables of the database only. The server then
/// hides every other table from it in information_schema, so a log table it was not granted
/// would be neither seen nor erased, and nothing else would say so.
///
/// Read from `SHOW GRANTS`, which on MariaDB includes the grants of the active role, and from
/// `SHOW GRANTS FOR` each role that CURRENT_ROLE() names (MySQL 8 lists only the role's name).
/// The grant lines are never logged: a `GRANT USAGE` line carries the password hash.
///
/// Limitation: privileges that reach the user otherwise (a role granted to a role, MariaDB's
/// PUBLIC) are not followed; the warning is then given although every table is visible.
async fn hidden_tables_warning(conn: &mut MySqlConnection, database: &str) -> Option<String> {
    let mut lines = match grant_lines(conn, "SHOW GRANTS").await {
        Ok(lines) => lines,
        Err(e) => {
            tracing::debug!("SHOW GRANTS failed ({e}); the grants of the user are not checked");
            return None;
        }
    };
    let roles: Option<String> = sqlx::query_scalar("SELECT CAST(CURRENT_ROLE() AS CHAR)")
        .fetch_one(&mut *conn)
        .await
        .ok()
        .flatten();
    for role in roles
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "NONE")
    {
        // MySQL names a role quoted with its host (`r`@`%`), MariaDB by its bare name.
        let name = if role.starts_with('`') {
            role.to_owned()
        } else {
            ident(role)
        };
        if let Ok(more) = grant_lines(conn, &format!("SHOW GRANTS FOR {name}")).await {
            lines.extend(more);
        }
    }
    tracing::debug!(lines = lines.len(), "grants of the user read");
    if lines.iter().any(|l| grant_covers_select(l, database)) {
        return None;
    }

    let user: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    let (name, host) = user.rsplit_once('@').unwrap_or((&user, "%"));
    let account = format!(
        "'{}'@'{}'",
        name.replace('\'', "''"),
        host.replace('\'', "''")
    );
    Some(format!(
        "the user {account} has SELECT on single tables of {database} only: the server hides \
         every other table from it, so a log table it was not granted (a plugin's, say) cannot \
         be seen although it may hold visitor data, and erase --execute and verify are refused; \
         give GRANT SELECT, DELETE ON {}.* TO {account}",
        ident(database)
    ))
}

async fn grant_lines(conn: &mut MySqlConnection, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>(0).or_else(|_| {
                r.try_get::<Vec<u8>, _>(0)
                    .map(|b| String::from_utf8_lossy(&b).into())
            })
        })
        .collect()
}

/// Whether one line of SHOW GRANTS gives SELECT on every table of `database`: SELECT or ALL
/// PRIVILEGES on `*.*`, or on `db.*` where `db` matches the database as the server matches
/// database names in grants, as a LIKE pattern (`matomo\_%`, `%`). SELECT on some columns, or
/// on one table, gives no such right.
fn grant_covers_select(line: &str, database: &str) -> bool {
    let Some(rest) = line.strip_prefix("GRANT ") else {
        return false;
    };
    let Some((privileges, target)) = split_outside_quotes(rest, " ON ") else {
        return false;
    };
    let selects = split_all_outside_quotes(privileges, ",")
        .into_iter()
        .any(|p| {
            let p = p.trim();
            ["SELECT", "ALL", "ALL PRIVILEGES"]
                .iter()
                .any(|k| p.eq_ignore_ascii_case(k))
        });
    if !selects {
        return false;
    }
    let target = target.trim_start();
    let target = target.strip_prefix("TABLE ").unwrap_or(target);
    let Some((db, after)) = grant_name(target) else {
        return false;
    };
    let Some((table, _)) = after.strip_prefix('.').and_then(grant_name) else {
        return false;
    };
    match (db, table) {
        (None, None) => true,
        (Some(pattern), None) => like_matches(&pattern, database),
        _ => false,
    }
}

/// The name at the start of a grant target and the text after it; None for `*`.
fn grant_name(s: &str) -> Option<(Option<String>, &str)> {
    if let Some(rest) = s.strip_prefix('*') {
        return Some((None, rest));
    }
    let quote = s.chars().next().filter(|c| matches!(c, '`' | '"'));
    let Some(q) = quote else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '%' | '\\')))
            .unwrap_or(s.len());
        return (end > 0).then(|| (Some(s[..end].to_owned()), &s[end..]));
    };
    let mut name = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == q {
            // A doubled quote is one quote in the name.
            if chars.peek().is_some_and(|(_, n)| *n == q) {
                chars.next();
                name.push(q);
                continue;
            }
            return Some((Some(name), &s[i + 1..]));
        }
        name.push(c);
    }
    None
}

/// `text` split at the first `sep` outside quotes and parentheses.
fn split_outside_quotes<'a>(text: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let mut quote = None;
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, _) if depth == 0 && text[i..].starts_with(sep) => {
                return Some((&text[..i], &text[i + sep.len()..]));
            }
            _ => {}
        }
    }
    None
}

fn split_all_outside_quotes<'a>(mut text: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    while let Some((part, rest)) = split_outside_quotes(text, sep) {
        parts.push(part);
        text = rest;
    }
    parts.push(text);
    parts
}

/// SQL LIKE with the default escape: `%` any run of characters, `_` one character, `\` makes
/// the next character literal. Case-sensitive, as database names are on Linux.
fn like_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // matches[j]: the pattern read so far matches the first j characters of the text.
    let mut matches = vec![false; t.len() + 1];
    matches[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '%' => {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= matches[j];
                    next[j] = any;
                }
            }
            c => {
                let literal = if c == '\\' && i + 1 < p.len() {
                    i += 1;
                    Some(p[i])
                } else if c == '_' {
                    None
                } else {
                    Some(c)
                };
                for j in 0..t.len() {
                    next[j + 1] = matches[j] && literal.is_none_or(|l| l == t[j]);
                }
            }
        }
        matches = next;
        i += 1;
    }
    matches[t.len()]
}

async fn read_sites(
    conn: &mut MySqlConnection,
    table: &str,
) -> Result<BTreeMap<u32, Site>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT idsite, CAST(name AS CHAR), CAST(timezone AS CHAR) FROM {table} ORDER BY idsite"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut sites = BTreeMap::new();
    for r in rows {
        let idsite: u32 = r.try_get(0)?;
        let timezone: String = r.try_get::<Option<String>, _>(2)?.unwrap_or_default();
        sites.insert(
            idsite,
            Site {
                idsite,
                name: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                tz: SiteTimezone::parse(&timezone),
                timezone,
            },
        );
    }
    Ok(sites)
}

struct ColumnInfo {
    columns: HashMap<String, BTreeSet<String>>,
    /// (table, column) of the columns that hold bytes.
    binary: BTreeSet<(String, String)>,
    single_pk: HashMap<String, String>,
    indexed_first: HashMap<String, BTreeSet<String>>,
}

async fn read_log_tables(
    conn: &mut MySqlConnection,
    prefix: &str,
    installs: &[String],
) -> anyhow::Result<(Vec<LogTable>, Vec<Untouched>, String)> {
    // A table is this install's when no other install's longer prefix claims it as a log
    // table: with the prefixes "" and "log_b_", `log_b_log_visit` matches `log\_%` but is the
    // other's; with "" and "log_form_", `log_form_page` stays ours.
    let ours = |table: &str| -> Option<String> {
        let name = table.strip_prefix(prefix)?;
        let other = installs.iter().any(|q| {
            q.len() > prefix.len()
                && q.starts_with(prefix)
                && table
                    .strip_prefix(q.as_str())
                    .is_some_and(|rest| rest.starts_with("log_"))
        });
        (!other).then(|| name.to_owned())
    };
    let pattern = format!("{}log\\_%", like_escape(prefix));
    let mut info = ColumnInfo {
        columns: HashMap::new(),
        binary: BTreeSet::new(),
        single_pk: HashMap::new(),
        indexed_first: HashMap::new(),
    };
    let mut user_id_charset = String::from("utf8mb4");

    // Reading information_schema.columns joined to .tables makes the server open every table
    // for its statistics (tens of milliseconds on big tables); two plain reads do not.
    let base_tables: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? AND table_type = 'BASE TABLE'",
    )
    .bind(&pattern)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let rows: Vec<_> = sqlx::query(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), \
                CAST(character_set_name AS CHAR), CAST(data_type AS CHAR) \
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name LIKE ?",
    )
    .bind(&pattern)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .filter(|r| {
        r.try_get::<String, _>(0)
            .is_ok_and(|t| base_tables.contains(&t))
    })
    .collect();
    for r in rows {
        let table: String = r.try_get(0)?;
        let Some(name) = ours(&table) else {
            continue;
        };
        let name = name.as_str();
        let column: String = r.try_get(1)?;
        if name == "log_visit" && column == "user_id" {
            if let Some(cs) = r.try_get::<Option<String>, _>(2)? {
                user_id_charset = cs;
            }
        }
        let data_type: String = r.try_get::<Option<String>, _>(3)?.unwrap_or_default();
        if matches!(
            data_type.to_ascii_lowercase().as_str(),
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
        ) {
            info.binary.insert((name.to_owned(), column.clone()));
        }
        info.columns
            .entry(name.to_owned())
            .or_default()
            .insert(column);
    }

    let rows = sqlx::query(
        "SELECT CAST(table_name AS CHAR), CAST(index_name AS CHAR), CAST(column_name AS CHAR), \
                seq_in_index \
         FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY 1, 2, 4",
    )
    .bind(&pattern)
    .fetch_all(&mut *conn)
    .await?;
    let mut pk_columns: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        let table: String = r.try_get(0)?;
        let Some(name) = ours(&table) else {
            continue;
        };
        let name = name.as_str();
        let index: String = r.try_get(1)?;
        let column: String = r.try_get(2)?;
        let seq: i64 = r
            .try_get::<i64, _>(3)
            .or_else(|_| r.try_get::<u32, _>(3).map(i64::from))?;
        if seq == 1 {
            info.indexed_first
                .entry(name.to_owned())
                .or_default()
                .insert(column.clone());
        }
        if index == "PRIMARY" {
            pk_columns.entry(name.to_owned()).or_default().push(column);
        }
    }
    for (t, cols) in pk_columns {
        if cols.len() == 1 {
            info.single_pk.insert(t, cols[0].clone());
        }
    }
    if !info.columns.contains_key("log_visit") {
        return Err(usage(format!(
            "table {prefix}log_visit has no columns visible to this user; GRANT SELECT on the \
             Matomo database"
        )));
    }
    let visit_columns = &info.columns["log_visit"];
    if let Some((column, since)) = VISIT_COLUMNS_READ
        .iter()
        .find(|(column, _)| !visit_columns.contains(*column))
    {
        let why = match since {
            None => "every Piwik and Matomo version has it; is this Matomo's log_visit? check \
                     --prefix"
                .to_owned(),
            Some(version) => format!(
                "Piwik added it in {version}, and older versions are not supported; update \
                 Matomo first (its updater adds the column)"
            ),
        };
        return Err(usage(format!(
            "table {prefix}log_visit has no column {column} (or this user may not read it): {why}"
        )));
    }
    let (tables, untouched) = classify(&info);
    Ok((tables, untouched, user_id_charset))
}

/// A table a chunk writes whose engine cannot roll back with the chunk's transaction, shown
/// quoted with its engine.
struct NoRollback {
    table: String,
    engine: String,
}

impl std::fmt::Display for NoRollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (ENGINE={})", ident(&self.table), self.engine)
    }
}

/// The tables a chunk writes whose engine cannot roll back: the log tables it deletes from and
/// `option` (its invalidation rows), then, apart, the archive tables (emptied periods).
async fn tables_without_rollback(
    conn: &mut MySqlConnection,
    prefix: &str,
    log_tables: &[LogTable],
) -> anyhow::Result<(Vec<NoRollback>, Vec<NoRollback>)> {
    let rows = sqlx::query(
        "SELECT CAST(table_name AS CHAR), CAST(engine AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' \
           AND (table_name = ? OR table_name LIKE ? OR table_name LIKE ?) ORDER BY 1",
    )
    .bind(format!("{prefix}option"))
    .bind(format!("{}archive\\_%", like_escape(prefix)))
    .bind(format!("{}log\\_%", like_escape(prefix)))
    .fetch_all(&mut *conn)
    .await?;
    let (mut chunk, mut archives) = (Vec::new(), Vec::new());
    for r in rows {
        let table: String = r.try_get(0)?;
        let engine: String = r.try_get::<Option<String>, _>(1)?.unwrap_or_default();
        if ["innodb", "rocksdb", "tokudb"]
            .iter()
            .any(|e| engine.eq_ignore_ascii_case(e))
        {
            continue;
        }
        let name = table.strip_prefix(prefix).unwrap_or(&table);
        let t = NoRollback {
            table: table.clone(),
            engine,
        };
        if name == "option" || log_tables.iter().any(|l| l.name == name) {
            chunk.push(t);
        } else if name.starts_with("archive_") {
            archives.push(t);
        }
    }
    Ok((chunk, archives))
}

/// The columns of `log_visit` that matomo-erase reads, with the Piwik version that added each
/// (None: every version has it), the oldest first, so that the first one missing tells how old
/// the schema is. Without them every lookup would fail on an SQL error.
const VISIT_COLUMNS_READ: [(&str, Option<&str>); 6] = [
    ("idvisit", None),
    ("idsite", None),
    ("visit_first_action_time", None),
    ("visit_last_action_time", None),
    // Piwik 1.2 (core/Updates/1.2-rc1.php) replaced visitor_idcookie with it.
    ("idvisitor", Some("1.2")),
    // The User ID feature of Piwik 2.7.0 (2014) added it as a visit dimension.
    ("user_id", Some("2.7.0 (with the User ID feature)")),
];

/// Decides how each log table reaches a visit and the order of deletion.
fn classify(info: &ColumnInfo) -> (Vec<LogTable>, Vec<Untouched>) {
    let mut names: Vec<&String> = info.columns.keys().collect();
    names.sort();
    let mut reach: BTreeMap<String, Reach> = BTreeMap::new();
    let mut untouched = Vec::new();

    for name in &names {
        if let Some(reason) = never_touched(name) {
            untouched.push(Untouched {
                name: (*name).clone(),
                reason: reason.to_owned(),
            });
        } else if name.as_str() == "log_visit" {
            reach.insert("log_visit".into(), Reach::Visit);
        } else if info.columns[*name].contains("idvisit") {
            let indexed = info
                .indexed_first
                .get(*name)
                .is_some_and(|c| c.contains("idvisit"));
            reach.insert((*name).clone(), Reach::Idvisit { indexed });
        }
    }

    // Breadth-first from the tables that hold idvisit: each round adds the tables one hop
    // further, so every table gets its shortest path.
    let mut ambiguous: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut added = Vec::new();
        for name in &names {
            if reach.contains_key(*name)
                || ambiguous.contains_key(*name)
                || never_touched(name).is_some()
            {
                continue;
            }
            // A link column is a foreign key, never a bare `id`. The table's own single-column
            // key links only to a parent whose name the table's extends (`log_hsr_extra`, one
            // row a recording, keyed by `idloghsr`): two plugins that merely name their keys
            // alike are not related.
            let own_pk = info.single_pk.get(*name);
            let mut unresolved = Vec::new();
            let found = info.columns[*name]
                .iter()
                .filter(|col| col.as_str() != "id")
                .find_map(|col| {
                    let own = own_pk == Some(col);
                    let candidates: Vec<&String> = reach
                        .iter()
                        .filter(|(parent, r)| {
                            *parent != *name
                                && **r != Reach::Visit
                                && info.single_pk.get(*parent).is_some_and(|pk| pk == col)
                                && (!own || extends(name, parent))
                        })
                        .map(|(parent, _)| parent)
                        .collect();
                    let Some(parent) = choose_parent(name, &candidates) else {
                        unresolved.extend(candidates.into_iter().cloned());
                        return None;
                    };
                    let binary = [*name, parent]
                        .iter()
                        .any(|t| info.binary.contains(&((*t).clone(), (*col).clone())));
                    let mut path = vec![Hop {
                        column: col.clone(),
                        parent: parent.clone(),
                        binary,
                    }];
                    if let Reach::Through { path: rest } = &reach[parent] {
                        path.extend(rest.iter().cloned());
                    }
                    Some(path)
                });
            match found {
                Some(path) => added.push(((*name).clone(), Reach::Through { path })),
                None if !unresolved.is_empty() => {
                    ambiguous.insert((*name).clone(), unresolved);
                }
                None => {}
            }
        }
        if added.is_empty() {
            break;
        }
        reach.extend(added);
    }
    for (name, parents) in ambiguous {
        untouched.push(Untouched {
            reason: format!(
                "links to several log tables by the same key ({}) and its name extends none of \
                 them, so which one holds its visit is unknown; erase its rows by hand",
                parents.join(", ")
            ),
            name,
        });
    }

    for name in &names {
        if !reach.contains_key(*name)
            && never_touched(name).is_none()
            && !untouched.iter().any(|u| u.name == **name)
        {
            untouched.push(Untouched {
                name: (*name).clone(),
                reason: "no idvisit column and no column that is the primary key of a log table \
                         reaching a visit; Matomo's GDPR tool cannot join it either"
                    .to_owned(),
            });
        }
    }

    untouched.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tables: Vec<LogTable> = reach
        .into_iter()
        .map(|(name, reach)| LogTable { name, reach })
        .collect();
    let rank = |t: &LogTable| match t.name.as_str() {
        "log_visit" => (0usize, 0usize),
        "log_link_visit_action" => (1, 0),
        _ => (2, t.depth()),
    };
    tables.sort_by(|a, b| rank(b).cmp(&rank(a)).then_with(|| a.name.cmp(&b.name)));
    (tables, untouched)
}

/// The parent a leaf links to when several log tables have the key column it links by: the one
/// whose name the leaf's extends, the longest such (`log_hsr_event` → `log_hsr`, not a copy
/// `log_backup_hsr`). A plugin names its child tables after the parent; a copy of a parent made
/// by hand holds other rows under the same keys, and joining through it would delete rows of
/// other visitors. No such name among several candidates: no parent.
fn choose_parent<'a>(leaf: &str, candidates: &[&'a String]) -> Option<&'a String> {
    match candidates {
        [] => None,
        [only] => Some(only),
        _ => candidates
            .iter()
            .filter(|p| extends(leaf, p))
            .max_by_key(|p| p.len())
            .copied(),
    }
}

/// Whether a table's name is its parent's followed by `_` and more (`log_hsr_event`, `log_hsr`).
fn extends(table: &str, parent: &str) -> bool {
    table
        .strip_prefix(parent)
        .is_some_and(|rest| rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tables: &[(&str, &[&str], Option<&str>)]) -> ColumnInfo {
        let mut i = ColumnInfo {
            columns: HashMap::new(),
            binary: BTreeSet::new(),
            single_pk: HashMap::new(),
            indexed_first: HashMap::new(),
        };
        for (t, cols, pk) in tables {
            i.columns
                .insert(t.to_string(), cols.iter().map(|c| c.to_string()).collect());
            if let Some(pk) = pk {
                i.single_pk.insert(t.to_string(), pk.to_string());
            }
        }
        i
    }

    #[test]
    fn a_grant_covers_select_on_the_database_only_on_all_its_tables() {
        let db = "matomo_prod";
        let user = "TO `u`@`%`";
        for (grant, covers) in [
            (
                "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
                true,
            ),
            ("GRANT SELECT, RELOAD ON *.* TO `u`@`%`", true),
            ("GRANT SELECT ON `matomo_prod`.* TO `u`@`%`", true),
            ("GRANT SELECT, DELETE ON `matomo\\_%`.* TO `u`@`%`", true),
            ("GRANT SELECT ON `%`.* TO `u`@`%`", true),
            ("GRANT SELECT ON `matomo_pro_`.* TO `u`@`%`", true),
            ("GRANT ALL ON \"matomo_prod\".* TO \"u\"@\"%\"", true),
            ("GRANT SELECT ON TABLE `matomo_prod`.* TO `u`@`%`", true),
            // Not all of it, or not SELECT.
            (
                "GRANT SELECT, DELETE ON `matomo_prod`.`matomo_log_visit` TO `u`@`%`",
                false,
            ),
            (
                "GRANT SELECT (`idvisit`) ON `matomo_prod`.`matomo_log_visit` TO `u`@`%`",
                false,
            ),
            (
                "GRANT INSERT, UPDATE (`a`, `b`) ON `matomo_prod`.* TO `u`@`%`",
                false,
            ),
            (
                "GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*ABC'",
                false,
            ),
            ("GRANT SELECT ON `matomo\\_prod2`.* TO `u`@`%`", false),
            ("GRANT SELECT ON `matomoXprod`.* TO `u`@`%`", false),
            ("GRANT SELECT ON `matomo\\_pro`.* TO `u`@`%`", false),
            ("GRANT SELECT ON `Matomo_prod`.* TO `u`@`%`", false),
            ("GRANT `reader` TO `u`@`%`", false),
            (
                "GRANT EXECUTE ON PROCEDURE `matomo_prod`.`p` TO `u`@`%`",
                false,
            ),
            ("GRANT PROXY ON ''@'%' TO 'u'@'%'", false),
        ] {
            assert_eq!(grant_covers_select(grant, db), covers, "{grant}");
        }
        assert!(grant_covers_select(
            &format!("GRANT SELECT ON `a``b`.* {user}"),
            "a`b"
        ));
        assert!(like_matches("a\\%b%", "a%bcd"));
        assert!(!like_matches("a\\%b", "axb"));
        assert!(like_matches("%", ""));
        assert!(!like_matches("_", ""));
    }

    #[test]
    fn leaves_come_before_parents_and_log_visit_is_last() {
        let i = info(&[
            ("log_visit", &["idvisit", "idsite"], Some("idvisit")),
            (
                "log_link_visit_action",
                &["idlink_va", "idvisit"],
                Some("idlink_va"),
            ),
            ("log_conversion", &["idvisit", "idgoal"], None),
            ("log_action", &["idaction"], Some("idaction")),
            ("log_hsr", &["idloghsr", "idvisit"], Some("idloghsr")),
            (
                "log_hsr_event",
                &["idhsrevent", "idloghsr", "idhsrblob"],
                Some("idhsrevent"),
            ),
            ("log_hsr_blob", &["idhsrblob", "value"], Some("idhsrblob")),
            ("log_deep", &["iddeep", "idhsrevent"], Some("iddeep")),
            ("log_lonely", &["x"], None),
        ]);
        let (tables, untouched) = classify(&i);
        let order: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "log_deep",
                "log_hsr_event",
                "log_conversion",
                "log_hsr",
                "log_link_visit_action",
                "log_visit"
            ]
        );
        assert_eq!(
            tables[0].reach,
            Reach::Through {
                path: vec![
                    Hop {
                        column: "idhsrevent".into(),
                        parent: "log_hsr_event".into(),
                        binary: false,
                    },
                    Hop {
                        column: "idloghsr".into(),
                        parent: "log_hsr".into(),
                        binary: false,
                    },
                ]
            }
        );
        let un: Vec<&str> = untouched.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(un, ["log_action", "log_hsr_blob", "log_lonely"]);
    }

    #[test]
    fn a_leaf_joins_the_parent_its_name_extends_and_refuses_to_guess_otherwise() {
        let i = info(&[
            ("log_visit", &["idvisit"], Some("idvisit")),
            ("log_hsr", &["idloghsr", "idvisit"], Some("idloghsr")),
            ("log_backup_hsr", &["idloghsr", "idvisit"], Some("idloghsr")),
            (
                "log_hsr_event",
                &["idhsrevent", "idloghsr"],
                Some("idhsrevent"),
            ),
            ("log_alpha", &["idthing", "idvisit"], Some("idthing")),
            ("log_beta", &["idthing", "idvisit"], Some("idthing")),
            ("log_gamma", &["idgamma", "idthing"], Some("idgamma")),
        ]);
        let (tables, untouched) = classify(&i);
        let event = tables.iter().find(|t| t.name == "log_hsr_event").unwrap();
        assert_eq!(
            event.reach,
            Reach::Through {
                path: vec![Hop {
                    column: "idloghsr".into(),
                    parent: "log_hsr".into(),
                    binary: false,
                }]
            }
        );
        assert!(tables.iter().all(|t| t.name != "log_gamma"));
        let gamma = untouched.iter().find(|u| u.name == "log_gamma").unwrap();
        assert!(
            gamma.reason.contains("log_alpha, log_beta"),
            "{}",
            gamma.reason
        );
        assert_eq!(untouched.len(), 1);
    }

    #[test]
    fn a_table_keyed_by_its_parents_key_is_reached_only_when_its_name_extends_the_parents() {
        let i = info(&[
            ("log_visit", &["idvisit"], Some("idvisit")),
            ("log_hsr", &["idloghsr", "idvisit"], Some("idloghsr")),
            ("log_hsr_extra", &["idloghsr", "note"], Some("idloghsr")),
            ("log_other", &["idloghsr", "note"], Some("idloghsr")),
        ]);
        let (tables, untouched) = classify(&i);
        let extra = tables.iter().find(|t| t.name == "log_hsr_extra").unwrap();
        assert_eq!(
            extra.reach,
            Reach::Through {
                path: vec![Hop {
                    column: "idloghsr".into(),
                    parent: "log_hsr".into(),
                    binary: false,
                }]
            }
        );
        let names: Vec<&str> = untouched.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["log_other"]);
    }
}
