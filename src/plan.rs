//! Counts what an erase would delete: rows of every log table per visit. Only reads.

use crate::erase::reach_sql;
use crate::inspect::Matomo;
use crate::sql::int_list;
use sqlx::mysql::MySqlConnection;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// Rows per log table per visit, for a batch of visits (at most a few thousand ids).
pub async fn rows_per_visit(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    idvisits: &[u64],
) -> anyhow::Result<BTreeMap<String, HashMap<u64, u64>>> {
    let mut out = BTreeMap::new();
    if idvisits.is_empty() {
        return Ok(out);
    }
    let ids = int_list(idvisits);
    // One round trip for every log table: a plan or a find of one person stays a few
    // milliseconds however many plugin tables the install has.
    let parts: Vec<String> = matomo
        .log_tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (from, expr) = reach_sql(matomo, t);
            format!(
                "SELECT {i}, {expr}, COUNT(*) FROM {from} WHERE {expr} IN ({ids}) GROUP BY {expr}"
            )
        })
        .collect();
    for t in &matomo.log_tables {
        out.insert(t.name.clone(), HashMap::new());
    }
    if parts.is_empty() {
        return Ok(out);
    }
    for r in sqlx::query(&parts.join(" UNION ALL "))
        .fetch_all(&mut *conn)
        .await?
    {
        let i: i64 = r.try_get(0)?;
        let idvisit: u64 = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        if let Some(t) = matomo.log_tables.get(i as usize) {
            if let Some(m) = out.get_mut(&t.name) {
                m.insert(idvisit, n as u64);
            }
        }
    }
    Ok(out)
}

/// Totals per log table for a batch of visits.
pub async fn rows_total(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    idvisits: &[u64],
) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(rows_per_visit(conn, matomo, idvisits)
        .await?
        .into_iter()
        .map(|(t, m)| (t, m.values().sum()))
        .collect())
}
