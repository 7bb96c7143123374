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
    for t in &matomo.log_tables {
        let (from, expr) = reach_sql(matomo, t);
        let sql =
            format!("SELECT {expr}, COUNT(*) FROM {from} WHERE {expr} IN ({ids}) GROUP BY {expr}");
        let mut per_visit = HashMap::new();
        for r in sqlx::query(&sql).fetch_all(&mut *conn).await? {
            let idvisit: u64 = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            per_visit.insert(idvisit, n as u64);
        }
        out.insert(t.name.clone(), per_visit);
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
