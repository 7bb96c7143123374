//! Proof: checks that no row of any log table still belongs to a visit the journal says was
//! erased, that no visit of the subjects remains, and that every site-day the run queued is
//! still queued or was taken up by Matomo since. Only reads.

use crate::inspect::{Matomo, Reach};
use crate::invalidate::{self, SiteDay};
use crate::journal::{self, ChunkRef};
use crate::select::Finder;
use crate::sql::int_list;
use chrono::{Datelike, NaiveDateTime};
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub chunks_checked: u64,
    pub visits_checked: u64,
    /// Rows still present per log table for visits the journal lists as erased.
    pub rows_remaining: BTreeMap<String, u64>,
    /// Erased visit ids that a log_visit row carries again: a server that reset its
    /// auto-increment gave the id to a new visit, which is someone else's and is not checked.
    pub visit_ids_reused: u64,
    /// Visits that the subjects' selection still finds.
    pub visits_remaining: u64,
    pub site_days_checked: u64,
    /// Site-days queued by the run and since taken up by core:archive (for a day left without
    /// visits: the periods around it re-archived or left without archives).
    pub site_days_processed: u64,
    pub site_days_missing: Vec<SiteDay>,
    pub problems: Vec<String>,
    /// Chunks with rows left behind, for a sweep.
    #[serde(skip)]
    pub leftovers: Vec<ChunkRef>,
}

pub async fn verify(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    run_key: &str,
    finder: &mut Finder<'_>,
) -> anyhow::Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let mut days: BTreeMap<SiteDay, NaiveDateTime> = BTreeMap::new();

    for r in journal::entries(conn, matomo, run_key).await? {
        let e = journal::entry(conn, matomo, run_key, &r.run_id, r.chunk).await?;
        rep.chunks_checked += 1;
        rep.visits_checked += e.idvisits.len() as u64;
        let mut left = false;
        for ids in e.idvisits.chunks(1000) {
            let back: HashSet<u64> = sqlx::query_scalar::<_, u64>(&format!(
                "SELECT idvisit FROM {} WHERE idvisit IN ({})",
                matomo.table("log_visit"),
                int_list(ids)
            ))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            rep.visit_ids_reused += back.len() as u64;
            let gone: Vec<u64> = ids.iter().copied().filter(|i| !back.contains(i)).collect();
            if gone.is_empty() {
                continue;
            }
            let list = int_list(&gone);
            for t in &matomo.log_tables {
                // A leaf reached through a parent can only be found while its parent exists,
                // and a remaining parent is itself counted here.
                if !matches!(t.reach, Reach::Idvisit { .. }) {
                    continue;
                }
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {} WHERE idvisit IN ({list})",
                    matomo.table(&t.name)
                ))
                .fetch_one(&mut *conn)
                .await?;
                if n > 0 {
                    *rep.rows_remaining.entry(t.name.clone()).or_default() += n as u64;
                    left = true;
                }
            }
        }
        if left {
            rep.leftovers.push(r.clone());
        }
        for d in e.site_days {
            days.entry(d).or_insert(r.committed_at);
        }
    }

    while let Some(batch) = finder.next_batch(conn).await? {
        rep.visits_remaining += batch.len() as u64;
    }

    let sites: Vec<u32> = days
        .keys()
        .map(|d| d.idsite)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let queued = invalidate::queued(conn, matomo, &sites).await?;
    for (day, committed_at) in &days {
        rep.site_days_checked += 1;
        if queued.contains(day) {
            continue;
        }
        if processed_since(conn, matomo, day, *committed_at).await?
            || invalidate::taken_up_without_visits(conn, matomo, day, *committed_at).await?
        {
            rep.site_days_processed += 1;
        } else {
            rep.site_days_missing.push(*day);
        }
    }

    for (t, n) in &rep.rows_remaining {
        rep.problems
            .push(format!("{n} rows of erased visits remain in {t}"));
    }
    if rep.visits_remaining > 0 {
        rep.problems.push(format!(
            "{} visits of the subjects remain in log_visit",
            rep.visits_remaining
        ));
    }
    if !rep.site_days_missing.is_empty() {
        let list: Vec<String> = rep
            .site_days_missing
            .iter()
            .take(20)
            .map(|d| format!("site {} {}", d.idsite, d.date))
            .collect();
        rep.problems.push(format!(
            "{} site-days are neither queued for invalidation nor re-archived since: {}",
            rep.site_days_missing.len(),
            list.join(", ")
        ));
    }
    rep.ok = rep.problems.is_empty();
    Ok(rep)
}

/// Whether core:archive took up the site-day after the chunk committed: a day invalidation
/// queued since, or a finished day archive (done flag 1 or 3) written since.
async fn processed_since(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    day: &SiteDay,
    committed_at: NaiveDateTime,
) -> anyhow::Result<bool> {
    let inv = sqlx::query(&format!(
        "SELECT COUNT(*) FROM {} WHERE idsite = ? AND period = 1 AND date1 = ? \
         AND ts_invalidated >= ?",
        matomo.table("archive_invalidations")
    ))
    .bind(day.idsite)
    .bind(day.date)
    .bind(committed_at)
    .fetch_one(&mut *conn)
    .await;
    if let Ok(r) = inv {
        if r.try_get::<i64, _>(0)? > 0 {
            return Ok(true);
        }
    }
    let table = matomo.table(&format!(
        "archive_numeric_{}_{:02}",
        day.date.year(),
        day.date.month()
    ));
    let archived = sqlx::query(&format!(
        "SELECT COUNT(*) FROM {table} WHERE idsite = ? AND period = 1 AND date1 = ? \
         AND name LIKE 'done%' AND value IN (1, 3) AND ts_archived >= ?"
    ))
    .bind(day.idsite)
    .bind(day.date)
    .bind(committed_at)
    .fetch_one(&mut *conn)
    .await;
    Ok(matches!(archived, Ok(r) if r.try_get::<i64, _>(0).unwrap_or(0) > 0))
}
