//! The only writer of log rows. Erases one chunk of visits in ONE transaction: every log table,
//! the invalidation rows of the chunk and the journal row commit together or not at all.
//!
//! Inside a chunk: lock the chunk's `log_visit` rows (so the tracker cannot add to a visit being
//! erased, and a visit that is already gone is skipped), compute its site-days, delete leaf
//! plugin tables first, then tables with `idvisit`, then `log_link_visit_action`, `log_visit`
//! last; queue the site-days; write the journal row; commit. Deletion is always by `idvisit`
//! of visits that `select` found, never by `idvisitor` or `user_id`.

use crate::connect::{self, Target};
use crate::inspect::{Hop, LogTable, Matomo, Reach};
use crate::invalidate::{self, Notes, SiteDay, SitePeriod};
use crate::journal::{self, Entry};
use crate::select::{visit_row, VisitRow, VISIT_COLUMNS};
use crate::sql::{
    ident, int_list, is_connection_lost, is_lock_conflict, is_node_not_ready, writeset_limit,
};
use crate::throttle::WritesetLimit;
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// FROM clause and idvisit expression that reach a visit from a log table.
pub fn reach_sql(matomo: &Matomo, t: &LogTable) -> (String, String) {
    match &t.reach {
        Reach::Visit | Reach::Idvisit { .. } => {
            (format!("{} t0", matomo.table(&t.name)), "t0.idvisit".into())
        }
        Reach::Through { path } => {
            // Joined from the visit side down to the leaf, in that order (STRAIGHT_JOIN): the
            // few parent rows of the chunk's visits drive the join, even where the optimizer
            // would rather scan the leaf table first.
            let k = path.len();
            let mut from = format!("{} t{k}", matomo.table(&path[k - 1].parent));
            for i in (0..k).rev() {
                let hop = &path[i];
                let table = if i == 0 {
                    matomo.table(&t.name)
                } else {
                    matomo.table(&path[i - 1].parent)
                };
                from.push_str(&format!(
                    " STRAIGHT_JOIN {table} t{i} ON t{i}.{col} = t{}.{col}",
                    i + 1,
                    col = ident(&hop.column)
                ));
            }
            (from, format!("t{k}.idvisit"))
        }
    }
}

/// Deletes the rows of one log table that belong to the given visits. A table reached through
/// parents is deleted by the parents' key values, read first from the visit side: a join in a
/// multi-table DELETE would scan a leaf whose link column has no index once per parent row,
/// and this scans it at most once per chunk (and not at all when no parent row is there).
async fn delete_rows(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    t: &LogTable,
    ids: &str,
) -> anyhow::Result<u64> {
    let Reach::Through { path } = &t.reach else {
        let sql = delete_sql(matomo, t, ids);
        return Ok(sqlx::query(&sql).execute(&mut *conn).await?.rows_affected());
    };
    let k = path.len();
    let mut keys = read_keys(
        conn,
        &path[k - 1],
        &format!(
            "{} WHERE idvisit IN ({ids})",
            matomo.table(&path[k - 1].parent)
        ),
        &[],
        &path[k - 1],
    )
    .await?;
    // Key lists are bound in slices, well under the protocol's 65,535 parameters.
    const SLICE: usize = 10_000;
    for i in (0..k - 1).rev() {
        let mut next = Vec::new();
        for part in keys.chunks(SLICE) {
            let from = format!(
                "{} WHERE {} IN ({})",
                matomo.table(&path[i].parent),
                ident(&path[i + 1].column),
                crate::sql::placeholders(part.len())
            );
            next.extend(read_keys(conn, &path[i], &from, part, &path[i + 1]).await?);
        }
        keys = next;
    }
    let mut deleted = 0;
    for part in keys.chunks(SLICE) {
        let sql = format!(
            "DELETE FROM {} WHERE {} IN ({})",
            matomo.table(&t.name),
            ident(&path[0].column),
            crate::sql::placeholders(part.len())
        );
        deleted += bind_keys(sqlx::query(&sql), part, &path[0])
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}

/// The distinct values of a hop's column in `from` (a table and its WHERE), with `bound` keys
/// of the hop `bound_hop` bound to the placeholders. Read as bytes for a column of bytes, else
/// as text: the server converts text to the column's type, so an integer key is found through
/// its index.
async fn read_keys(
    conn: &mut MySqlConnection,
    hop: &Hop,
    from: &str,
    bound: &[Vec<u8>],
    bound_hop: &Hop,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let cast = if hop.binary { "BINARY" } else { "CHAR" };
    let sql = format!(
        "SELECT DISTINCT CAST({} AS {cast}) FROM {from}",
        ident(&hop.column)
    );
    let q = bind_keys(sqlx::query(&sql), bound, bound_hop);
    let rows = q.fetch_all(&mut *conn).await?;
    // A NULL (a key column that allows it) matches nothing and is left out.
    let mut keys = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = if hop.binary {
            r.try_get::<Option<Vec<u8>>, _>(0)?
        } else {
            r.try_get::<Option<String>, _>(0)?.map(String::into_bytes)
        };
        keys.extend(key);
    }
    Ok(keys)
}

/// Binds keys of a hop: as bytes for a column of bytes, else as the text they were read as.
fn bind_keys<'q>(
    mut q: sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    keys: &'q [Vec<u8>],
    hop: &Hop,
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    for key in keys {
        q = if hop.binary {
            q.bind(key.as_slice())
        } else {
            q.bind(String::from_utf8_lossy(key).into_owned())
        };
    }
    q
}

fn delete_sql(matomo: &Matomo, t: &LogTable, ids: &str) -> String {
    match &t.reach {
        Reach::Visit | Reach::Idvisit { .. } => format!(
            "DELETE FROM {} WHERE idvisit IN ({ids})",
            matomo.table(&t.name)
        ),
        Reach::Through { .. } => {
            let (from, expr) = reach_sql(matomo, t);
            format!("DELETE t0 FROM {from} WHERE {expr} IN ({ids})")
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChunkResult {
    pub chunk: u32,
    pub visits: u64,
    /// Visits left alone because their user id or visitor id changed since they were selected.
    pub changed: Vec<u64>,
    /// The chunk committed but the connection broke before its answer: the journal gave its
    /// visits, rows and site-days, and its invalidation rows and dropped archives are not known.
    pub details_lost: bool,
    pub visits_per_site: BTreeMap<u32, u64>,
    pub rows: BTreeMap<String, u64>,
    pub site_days: BTreeSet<SiteDay>,
    pub invalidations_inserted: u64,
    /// Periods the chunk left without any visit whose archives it dropped, and how many.
    pub emptied_periods: BTreeSet<SitePeriod>,
    pub archives_dropped: u64,
    pub retries: u32,
    pub elapsed: Duration,
}

/// A visit chosen for erasure, with its identity (user id and visitor id digest) when it was
/// selected.
#[derive(Clone, Debug)]
pub struct Selected {
    pub idvisit: u64,
    pub idsite: u32,
    pub identity: String,
}

impl From<&VisitRow> for Selected {
    fn from(v: &VisitRow) -> Selected {
        Selected {
            idvisit: v.idvisit,
            idsite: v.idsite,
            identity: v.identity.clone(),
        }
    }
}

/// Session settings of the erasing connection.
pub async fn prepare_session(
    conn: &mut MySqlConnection,
    lock_wait_timeout: u32,
) -> anyhow::Result<()> {
    // The same limit for metadata locks: an ALTER TABLE or FLUSH TABLES WITH READ LOCK
    // elsewhere must not hold a chunk for the server's default of a year.
    sqlx::query(&format!(
        "SET SESSION innodb_lock_wait_timeout = {0}, lock_wait_timeout = {0}",
        lock_wait_timeout.max(1)
    ))
    .execute(&mut *conn)
    .await?;
    // READ COMMITTED takes no gap locks, so deleting the newest visits does not block the
    // tracker's inserts above them. Statement-based binary logging forbids it for InnoDB
    // writes; then the default REPEATABLE READ stays.
    let binlog: Option<String> = sqlx::query_scalar("SELECT CAST(@@SESSION.binlog_format AS CHAR)")
        .fetch_optional(&mut *conn)
        .await
        .ok()
        .flatten();
    if binlog.as_deref() != Some("STATEMENT") {
        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Why a chunk did not commit.
#[derive(Debug)]
pub enum ChunkError {
    /// Retries exhausted on deadlocks / lock waits / lost connections.
    GaveUp(String),
    /// Galera refused the chunk's writeset as too large; nothing of it was committed.
    TooBig(WritesetLimit),
    Other(anyhow::Error),
}

/// Erases chunks; owns the writing connection and reconnects it when it is lost.
pub struct Eraser<'m> {
    pub matomo: &'m Matomo,
    pub target: Target,
    pub conn: MySqlConnection,
    pub run_key: String,
    /// This process's run: chunk numbers are unique within it, so two runs of the same
    /// command at once never collide in the journal.
    pub run_id: String,
    pub next_chunk: u32,
    pub notes: Notes,
    pub max_retries: u32,
    pub lock_wait_timeout: u32,
    /// Drop the archives of periods a chunk leaves without visits (see
    /// invalidate::drop_emptied_archives).
    pub drop_archives: bool,
    pub retries_total: u32,
    pub reconnects: u32,
}

impl<'m> Eraser<'m> {
    /// Erases one chunk, retrying the whole transaction on deadlock, lock wait timeout or a lost
    /// connection. After a lost connection the journal tells whether the commit went through.
    pub async fn erase_chunk(&mut self, visits: &[Selected]) -> Result<ChunkResult, ChunkError> {
        let chunk = self.next_chunk;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let outcome = self.try_chunk(chunk, visits).await;
            let err = match outcome {
                Ok(mut r) => {
                    r.retries = attempt;
                    r.elapsed = started.elapsed();
                    self.next_chunk += 1;
                    return Ok(r);
                }
                Err(e) => e,
            };
            let sqlx_err = err.downcast_ref::<sqlx::Error>();
            if let Some(limit) = sqlx_err.and_then(writeset_limit) {
                return Err(ChunkError::TooBig(limit));
            }
            let lost = sqlx_err.is_some_and(is_connection_lost);
            let conflict = sqlx_err.is_some_and(|e| is_lock_conflict(e) || is_node_not_ready(e));
            if !lost && !conflict {
                return Err(ChunkError::Other(err));
            }
            attempt += 1;
            self.retries_total += 1;
            tracing::warn!(
                chunk,
                attempt,
                "chunk rolled back ({}); retrying",
                if lost {
                    "connection lost".to_string()
                } else {
                    format!("{err}")
                }
            );
            if attempt > self.max_retries {
                return Err(ChunkError::GaveUp(format!(
                    "chunk {chunk} failed {attempt} times (last: {err}); nothing of it was \
                     committed"
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
            if lost {
                match self.reconnect().await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!("reconnect failed: {e}");
                        continue;
                    }
                }
                let committed = journal::committed(
                    &mut self.conn,
                    self.matomo,
                    &self.run_key,
                    &self.run_id,
                    chunk,
                )
                .await;
                match committed {
                    Ok(true) => {
                        // The commit reached the server before the connection broke.
                        let e = journal::entry(
                            &mut self.conn,
                            self.matomo,
                            &self.run_key,
                            &self.run_id,
                            chunk,
                        )
                        .await
                        .map_err(ChunkError::Other)?;
                        self.next_chunk += 1;
                        let erased: BTreeSet<u64> = e.idvisits.iter().copied().collect();
                        let mut visits_per_site = BTreeMap::new();
                        for v in visits.iter().filter(|v| erased.contains(&v.idvisit)) {
                            *visits_per_site.entry(v.idsite).or_default() += 1;
                        }
                        return Ok(ChunkResult {
                            chunk,
                            visits: e.visits.into(),
                            changed: Vec::new(),
                            visits_per_site,
                            details_lost: true,
                            rows: e.rows,
                            site_days: e.site_days.into_iter().collect(),
                            invalidations_inserted: 0,
                            emptied_periods: BTreeSet::new(),
                            archives_dropped: 0,
                            retries: attempt,
                            elapsed: started.elapsed(),
                        });
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot read the journal after reconnect: {e}"),
                }
            }
        }
    }

    /// Replaces a broken writing connection.
    pub async fn reconnect_pub(&mut self) -> anyhow::Result<()> {
        self.reconnect().await
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let mut conn = connect::open(&self.target).await?;
        prepare_session(&mut conn, self.lock_wait_timeout).await?;
        let old = std::mem::replace(&mut self.conn, conn);
        drop(old);
        self.reconnects += 1;
        Ok(())
    }

    async fn try_chunk(
        &mut self,
        chunk: u32,
        selected: &[Selected],
    ) -> anyhow::Result<ChunkResult> {
        let matomo = self.matomo;
        let idvisits: Vec<u64> = selected.iter().map(|v| v.idvisit).collect();
        let ids = int_list(&idvisits);
        let mut tx = self.conn.begin().await?;

        let rows = sqlx::query(&format!(
            "SELECT {VISIT_COLUMNS} FROM {} WHERE idvisit IN ({ids}) ORDER BY idvisit FOR UPDATE",
            matomo.table("log_visit")
        ))
        .fetch_all(&mut *tx)
        .await?;
        let locked: Vec<VisitRow> = rows.iter().map(visit_row).collect::<Result<_, _>>()?;
        let expected: BTreeMap<u64, &str> = selected
            .iter()
            .map(|v| (v.idvisit, v.identity.as_str()))
            .collect();
        let (visits, changed): (Vec<VisitRow>, Vec<VisitRow>) = locked
            .into_iter()
            .partition(|v| expected.get(&v.idvisit) == Some(&v.identity.as_str()));
        let changed: Vec<u64> = changed.into_iter().map(|v| v.idvisit).collect();
        if !changed.is_empty() {
            tracing::warn!(
                chunk,
                visits = changed.len(),
                "visits whose user id or visitor id changed since they were selected are left \
                 alone"
            );
        }
        if visits.is_empty() {
            tx.rollback().await?;
            return Ok(ChunkResult {
                chunk,
                changed,
                ..ChunkResult::default()
            });
        }
        let present: Vec<u64> = visits.iter().map(|v| v.idvisit).collect();
        let mut visits_per_site = BTreeMap::new();
        for v in &visits {
            *visits_per_site.entry(v.idsite).or_default() += 1;
        }
        let ids = int_list(&present);

        let mut notes = self.notes.clone();
        let site_days = invalidate::site_days(&mut tx, matomo, &visits, &mut notes).await?;

        let mut per_table = BTreeMap::new();
        for t in &matomo.log_tables {
            let n = delete_rows(&mut tx, matomo, t, &ids).await?;
            tracing::debug!(table = %t.name, rows = n, "deleted");
            per_table.insert(t.name.clone(), n);
        }

        let (emptied_periods, archives_dropped) = if self.drop_archives {
            invalidate::drop_emptied_archives(&mut tx, matomo, &site_days).await?
        } else {
            Default::default()
        };
        let inserted = invalidate::queue(&mut tx, matomo, &site_days).await?;

        journal::record(
            &mut tx,
            matomo,
            &self.run_key,
            &self.run_id,
            &Entry {
                chunk,
                committed_at: chrono::Utc::now().naive_utc(),
                visits: present.len() as u32,
                rows: per_table.clone(),
                site_days: site_days.iter().copied().collect(),
                idvisits: present.clone(),
            },
        )
        .await?;
        crate::run::crash_point("before-commit");
        crate::run::hold_before_commit().await;
        tx.commit().await?;
        self.notes = notes;
        if crate::run::crash_point("lose-connection-after-commit") {
            let _ = sqlx::query("KILL CONNECTION CONNECTION_ID()")
                .execute(&mut self.conn)
                .await;
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection lost after commit (test hook)",
            ))
            .into());
        }

        Ok(ChunkResult {
            chunk,
            visits: present.len() as u64,
            changed,
            details_lost: false,
            visits_per_site,
            rows: per_table,
            site_days,
            invalidations_inserted: inserted,
            emptied_periods,
            archives_dropped,
            retries: 0,
            elapsed: Duration::ZERO,
        })
    }
}

/// 100 ms doubling to 5 s, with up to 50% jitter so that two retrying sessions drift apart.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// Checks, inside a transaction that is rolled back, that this user may do every statement an
/// erase needs. MySQL checks privileges when a statement is prepared, so a statement that matches
/// no row (`IN (NULL)` is never true) fails on a missing privilege while changing nothing.
///
/// The probes take the tables' metadata locks, so a DBA's LOCK TABLES or a running ALTER holds
/// them up; on a session with a short lock wait limit (prepare_session) each wait ends in a
/// lock wait timeout, logged and tried again up to `max_retries` times.
pub async fn check_privileges(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    max_retries: u32,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let result = probe_privileges(conn, matomo).await;
        let locked = result.as_ref().err().is_some_and(|e| {
            e.downcast_ref::<sqlx::Error>()
                .is_some_and(is_lock_conflict)
        });
        if !locked || attempt >= max_retries {
            return result;
        }
        attempt += 1;
        tracing::warn!(
            attempt,
            "another session's lock holds up the privilege check; trying again"
        );
        tokio::time::sleep(backoff(attempt)).await;
    }
}

async fn probe_privileges(conn: &mut MySqlConnection, matomo: &Matomo) -> anyhow::Result<()> {
    let mut probes: Vec<String> = matomo
        .log_tables
        .iter()
        .map(|t| delete_sql(matomo, t, "NULL"))
        .collect();
    probes.push(format!(
        "INSERT INTO {} (option_name, option_value, autoload) SELECT 'x', '1', 0 FROM DUAL \
         WHERE 1 = 0",
        matomo.table("option")
    ));
    run_probes(conn, matomo, probes).await
}

/// Every privilege an erase needs, as the GRANT statements that give them at once. On the
/// database, not table by table: a table-level grant hides the tables it leaves out.
fn needed_grants(matomo: &Matomo) -> String {
    let db = &matomo.database;
    let p = &matomo.prefix;
    format!(
        "GRANT SELECT, DELETE ON `{db}`.* TO <user>; GRANT INSERT ON `{db}`.`{p}option` TO \
         <user>; GRANT CREATE, INSERT ON `{db}`.`{p}{}` TO <user>",
        journal::TABLE
    )
}

/// Why the archives of periods left without visits cannot be dropped, if they cannot: the
/// user may not delete from the archive tables (probed on the newest one, in a transaction
/// that is rolled back). Then they are kept, with a warning, and the erase goes on.
pub async fn archive_delete_refused(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
) -> anyhow::Result<Option<String>> {
    if let Some(why) = &matomo.archives_cannot_roll_back {
        return Ok(Some(why.clone()));
    }
    let newest: Option<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY table_name DESC LIMIT 1",
    )
    .bind(format!(
        "{}archive\\_numeric\\_%",
        crate::sql::like_escape(&matomo.prefix)
    ))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(newest) = newest else {
        return Ok(None);
    };
    let mut tx = conn.begin().await?;
    let probe = sqlx::query(&format!(
        "DELETE FROM {} WHERE idarchive IN (NULL)",
        ident(&newest)
    ))
    .execute(&mut *tx)
    .await;
    tx.rollback().await?;
    match probe {
        Ok(_) => Ok(None),
        Err(e) if is_privilege_error(&e) => Ok(Some(format!(
            "{}; to drop them, give the user DELETE on the archive tables (GRANT SELECT, \
             DELETE ON `{}`.* TO <user>, or on each {}archive_numeric_* and archive_blob_* \
             table)",
            db_message(&e),
            matomo.database,
            matomo.prefix
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Creates the journal table if needed and checks that rows can be written to it.
pub async fn prepare_journal(conn: &mut MySqlConnection, matomo: &Matomo) -> anyhow::Result<()> {
    let jt = format!("{}{}", matomo.prefix, journal::TABLE);
    let made = if journal::exists(conn, matomo).await? {
        Ok(())
    } else {
        journal::ensure(conn, matomo).await
    };
    if let Err(e) = made {
        if let Some(sqlx_err) = e.downcast_ref::<sqlx::Error>() {
            if is_privilege_error(sqlx_err) {
                return Err(crate::error::connection(format!(
                    "missing privilege to create the journal table {jt}: {}; give everything \
                     the erase needs at once: {}",
                    db_message(sqlx_err),
                    needed_grants(matomo)
                )));
            }
        }
        return Err(e);
    }
    let probe = format!(
        "INSERT INTO {} (run_key, run_id, chunk, committed_at, visits, rows_deleted, site_days, \
         idvisits) SELECT 'x', 'x', 0, UTC_TIMESTAMP(), 0, '', '', '' FROM DUAL WHERE 1 = 0",
        journal::table(matomo)
    );
    run_probes(conn, matomo, vec![probe]).await
}

fn is_privilege_error(e: &sqlx::Error) -> bool {
    matches!(
        crate::sql::db_code(e).as_deref(),
        Some("1142") | Some("1143") | Some("1044") | Some("1227")
    )
}

fn db_message(e: &sqlx::Error) -> String {
    e.as_database_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// Runs write probes that change nothing (in a transaction rolled back); a refused one names
/// the privilege the server reported and every GRANT the erase needs.
async fn run_probes(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    probes: Vec<String>,
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    let mut missing = Vec::new();
    for sql in probes {
        if let Err(e) = sqlx::query(&sql).execute(&mut *tx).await {
            if !is_privilege_error(&e) {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
            missing.push(db_message(&e));
        }
    }
    tx.rollback().await?;
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let more = match missing.len() {
        1 => String::new(),
        n => format!(" (and {} more refusals)", n - 1),
    };
    Err(crate::error::connection(format!(
        "missing privilege: {first}{more}; give everything the erase needs at once: {}",
        needed_grants(matomo)
    )))
}

impl Eraser<'_> {
    /// Removes what a verification found left of erased visits: rows that arrived for a visit
    /// after its chunk committed (a late tracker request), and site-days whose queued
    /// invalidation disappeared without being processed. One transaction per journal chunk;
    /// only visit ids that no log_visit row carries are touched. Returns the rows removed and
    /// the invalidation rows queued again.
    pub async fn sweep(
        &mut self,
        leftovers: &[journal::ChunkRef],
        missing_days: &[SiteDay],
    ) -> anyhow::Result<(u64, u64)> {
        let matomo = self.matomo;
        let mut removed = 0;
        for r in leftovers {
            let e =
                journal::entry(&mut self.conn, matomo, &self.run_key, &r.run_id, r.chunk).await?;
            let mut tx = self.conn.begin().await?;
            let back: std::collections::HashSet<u64> = sqlx::query_scalar::<_, u64>(&format!(
                "SELECT idvisit FROM {} WHERE idvisit IN ({}) FOR UPDATE",
                matomo.table("log_visit"),
                int_list(&e.idvisits)
            ))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let gone: Vec<u64> = e
                .idvisits
                .iter()
                .copied()
                .filter(|i| !back.contains(i))
                .collect();
            if !gone.is_empty() {
                let ids = int_list(&gone);
                for t in matomo.log_tables.iter().filter(|t| t.reach != Reach::Visit) {
                    removed += delete_rows(&mut tx, matomo, t, &ids).await?;
                }
            }
            tx.commit().await?;
        }
        let mut requeued = 0;
        if !missing_days.is_empty() {
            let days: BTreeSet<SiteDay> = missing_days.iter().copied().collect();
            let mut tx = self.conn.begin().await?;
            requeued = invalidate::queue(&mut tx, matomo, &days).await?;
            tx.commit().await?;
        }
        Ok((removed, requeued))
    }
}
