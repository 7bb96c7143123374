//! The journal: one row per committed chunk, written inside the chunk's own transaction, in
//! table `<prefix>matomo_erase_journal` (created on the first `erase --execute`).
//!
//! A row says which run (the run key: a hash of the subjects and selection options, never the
//! identifiers), which chunk, when, which visits, how many rows per log table, and which
//! site-days were queued. Because it commits with the chunk, it is exactly as durable as the
//! erasure: after a lost connection the presence of the row tells whether the chunk committed,
//! a re-run of the same command continues the chunk numbering and adds up earlier chunks in its
//! receipt, and `verify` re-checks every visit listed. Matomo ignores the table (it does not
//! start with `log_`); dropping it loses only the receipts.

use crate::inspect::Matomo;
use crate::invalidate::SiteDay;
use crate::sql::ident;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlConnection;
use sqlx::Row;
use std::collections::BTreeMap;

pub const TABLE: &str = "matomo_erase_journal";

pub fn table(matomo: &Matomo) -> String {
    ident(&format!("{}{}", matomo.prefix, TABLE))
}

pub async fn ensure(conn: &mut MySqlConnection, matomo: &Matomo) -> anyhow::Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           run_key CHAR(32) NOT NULL, \
           run_id CHAR(16) NOT NULL, \
           chunk INT UNSIGNED NOT NULL, \
           committed_at DATETIME NOT NULL, \
           visits INT UNSIGNED NOT NULL, \
           rows_deleted TEXT NOT NULL, \
           site_days MEDIUMTEXT NOT NULL, \
           idvisits MEDIUMTEXT NOT NULL, \
           PRIMARY KEY (run_key, run_id, chunk)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        table(matomo)
    );
    sqlx::query(&sql).execute(&mut *conn).await?;
    Ok(())
}

pub async fn exists(conn: &mut MySqlConnection, matomo: &Matomo) -> anyhow::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(format!("{}{}", matomo.prefix, TABLE))
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub chunk: u32,
    pub committed_at: NaiveDateTime,
    pub visits: u32,
    pub rows: BTreeMap<String, u64>,
    pub site_days: Vec<SiteDay>,
    pub idvisits: Vec<u64>,
}

impl<'de> Deserialize<'de> for SiteDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            idsite: u32,
            date: String,
        }
        let r = Raw::deserialize(d)?;
        let date = chrono::NaiveDate::parse_from_str(&r.date, "%Y-%m-%d")
            .map_err(serde::de::Error::custom)?;
        Ok(SiteDay {
            idsite: r.idsite,
            date,
        })
    }
}

/// Records a chunk. Must run inside the chunk's transaction.
pub async fn record(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
    run_id: &str,
    entry: &Entry,
) -> anyhow::Result<()> {
    let ids = entry
        .idvisits
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sqlx::query(&format!(
        "INSERT INTO {} (run_key, run_id, chunk, committed_at, visits, rows_deleted, site_days, \
         idvisits) VALUES (?, ?, ?, UTC_TIMESTAMP(), ?, ?, ?, ?)",
        table(matomo)
    ))
    .bind(run_key)
    .bind(run_id)
    .bind(entry.chunk)
    .bind(entry.visits)
    .bind(serde_json::to_string(&entry.rows)?)
    .bind(serde_json::to_string(&entry.site_days)?)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether chunk `chunk` of this process's run committed.
pub async fn committed(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
    run_id: &str,
    chunk: u32,
) -> anyhow::Result<bool> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {} WHERE run_key = ? AND run_id = ? AND chunk = ?",
        table(matomo)
    ))
    .bind(run_key)
    .bind(run_id)
    .bind(chunk)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Summary of the chunks an earlier run of the same key committed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Earlier {
    pub chunks: u32,
    pub visits: u64,
    pub rows: BTreeMap<String, u64>,
}

pub async fn earlier(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
) -> anyhow::Result<Earlier> {
    let mut out = Earlier::default();
    if !exists(conn, matomo).await? {
        return Ok(out);
    }
    let rows = sqlx::query(&format!(
        "SELECT visits, rows_deleted FROM {} WHERE run_key = ?",
        table(matomo)
    ))
    .bind(run_key)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let visits: u32 = r.try_get(0)?;
        let per_table: BTreeMap<String, u64> = serde_json::from_str(&r.try_get::<String, _>(1)?)?;
        out.chunks += 1;
        out.visits += u64::from(visits);
        for (t, n) in per_table {
            *out.rows.entry(t).or_default() += n;
        }
    }
    Ok(out)
}

/// One committed chunk: which process run wrote it, its number, when.
#[derive(Clone, Debug)]
pub struct ChunkRef {
    pub run_id: String,
    pub chunk: u32,
    pub committed_at: NaiveDateTime,
}

/// Every chunk of every run of a run key, for `verify`; the entries are read one at a time.
pub async fn entries(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
) -> anyhow::Result<Vec<ChunkRef>> {
    if !exists(conn, matomo).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT run_id, chunk, committed_at FROM {} WHERE run_key = ? \
         ORDER BY committed_at, run_id, chunk",
        table(matomo)
    ))
    .bind(run_key)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChunkRef {
                run_id: r.try_get(0)?,
                chunk: r.try_get(1)?,
                committed_at: r.try_get(2)?,
            })
        })
        .collect()
}

pub async fn entry(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
    run_id: &str,
    chunk: u32,
) -> anyhow::Result<Entry> {
    let r = sqlx::query(&format!(
        "SELECT chunk, committed_at, visits, rows_deleted, site_days, idvisits FROM {} \
         WHERE run_key = ? AND run_id = ? AND chunk = ?",
        table(matomo)
    ))
    .bind(run_key)
    .bind(run_id)
    .bind(chunk)
    .fetch_one(&mut *conn)
    .await?;
    let ids: String = r.try_get(5)?;
    Ok(Entry {
        chunk: r.try_get(0)?,
        committed_at: r.try_get(1)?,
        visits: r.try_get(2)?,
        rows: serde_json::from_str(&r.try_get::<String, _>(3)?)?,
        site_days: serde_json::from_str(&r.try_get::<String, _>(4)?)?,
        idvisits: ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?,
    })
}
