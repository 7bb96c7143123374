//! Archive invalidation: which site-days the erased visits touched, and queuing them for
//! Matomo's `core:archive` the way Matomo's own GDPR tool does.
//!
//! Matomo queues one `option` row named `…report_to_invalidate_<idsite>_<YYYY-MM-DD>…` (value
//! `1`, autoload 0) per site and local date of each deleted visit's last action, unless such a
//! row exists already; `core:archive` expands it to weeks, months, years and segments. Matomo
//! misses the other days a visit touched (a visit across local midnight); we also queue the
//! local dates of the visit's first action and of every action and conversion.

use crate::inspect::Matomo;
use crate::select::VisitRow;
use crate::sql::int_list;
use crate::timezone::SiteTimezone;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::Row;
use std::collections::{BTreeSet, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SiteDay {
    pub idsite: u32,
    #[serde(serialize_with = "ser_date")]
    pub date: NaiveDate,
}

fn ser_date<S: serde::Serializer>(d: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.format("%Y-%m-%d").to_string())
}

/// Every offset in use is a whole number of quarter hours, so the local date of the start of a
/// quarter hour is the local date of every instant in it. Grouping action times by quarter hour
/// keeps the query result small (a visit spans few of them) without losing a date.
const QUARTER_HOUR_SECS: i64 = 900;

/// What could not be invalidated exactly, for the plan and the receipt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Notes {
    /// Sites of erased visits that are no longer in the site table: nothing to re-archive.
    pub sites_missing: BTreeSet<u32>,
    /// Sites whose timezone matomo-erase does not know: the UTC date and the days either side
    /// are queued, so every possible local date is covered.
    pub sites_with_unknown_timezone: BTreeSet<u32>,
    /// Visits whose times are zero dates: only their actions' days are queued.
    pub visits_without_times: u64,
}

/// The site-local dates a UTC time may fall on for this site.
fn local_dates(
    matomo: &Matomo,
    idsite: u32,
    utc: NaiveDateTime,
    notes: &mut Notes,
) -> Vec<NaiveDate> {
    let Some(site) = matomo.sites.get(&idsite) else {
        notes.sites_missing.insert(idsite);
        return Vec::new();
    };
    match &site.tz {
        Some(tz) => vec![tz.local_date(utc)],
        None => {
            notes.sites_with_unknown_timezone.insert(idsite);
            let d = utc.date();
            [d.pred_opt(), Some(d), d.succ_opt()]
                .into_iter()
                .flatten()
                .collect()
        }
    }
}

/// The site-days touched by these visits: local dates of last action (Matomo's rule), first
/// action, and every action and conversion.
pub async fn site_days(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    visits: &[VisitRow],
    notes: &mut Notes,
) -> anyhow::Result<BTreeSet<SiteDay>> {
    let mut days = BTreeSet::new();
    if visits.is_empty() {
        return Ok(days);
    }
    let mut add = |idsite: u32, utc: NaiveDateTime, notes: &mut Notes| {
        for date in local_dates(matomo, idsite, utc, notes) {
            days.insert(SiteDay { idsite, date });
        }
    };
    for v in visits {
        if v.last_action.is_none() && v.first_action.is_none() {
            notes.visits_without_times += 1;
        }
        for t in [v.last_action, v.first_action].into_iter().flatten() {
            add(v.idsite, t, notes);
        }
    }
    let ids = int_list(&visits.iter().map(|v| v.idvisit).collect::<Vec<_>>());
    let mut parts = Vec::new();
    for t in ["log_link_visit_action", "log_conversion"] {
        if matomo.has_table(t) {
            parts.push(format!(
                "SELECT DISTINCT idsite, TIMESTAMPDIFF(SECOND, '1970-01-01', server_time) \
                 DIV {QUARTER_HOUR_SECS} FROM {} WHERE idvisit IN ({ids}) \
                 AND YEAR(server_time) > 0",
                matomo.table(t)
            ));
        }
    }
    if !parts.is_empty() {
        let rows = sqlx::query(&parts.join(" UNION "))
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            let idsite: u32 = r.try_get(0)?;
            let quarter: i64 = r.try_get(1)?;
            if let Some(utc) = DateTime::from_timestamp(quarter * QUARTER_HOUR_SECS, 0) {
                add(idsite, utc.naive_utc(), notes);
            }
        }
    }
    Ok(days)
}

/// The site-days already queued in `option`, parsed as Matomo's reader does: from the first
/// `report_to_invalidate_`, then `<idsite>_<date>` split on `_`.
pub async fn queued(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    idsites: &[u32],
) -> anyhow::Result<HashSet<SiteDay>> {
    let mut out = HashSet::new();
    if idsites.is_empty() {
        return Ok(out);
    }
    let patterns: Vec<String> = idsites
        .iter()
        .map(|s| format!("%report\\_to\\_invalidate\\_{s}\\_%"))
        .collect();
    let sql = format!(
        "SELECT option_name FROM {} WHERE {}",
        matomo.table("option"),
        vec!["option_name LIKE ?"; patterns.len()].join(" OR ")
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for p in &patterns {
        q = q.bind(p);
    }
    for name in q.fetch_all(&mut *conn).await? {
        if let Some(day) = parse_option_name(&name) {
            out.insert(day);
        }
    }
    Ok(out)
}

pub fn parse_option_name(name: &str) -> Option<SiteDay> {
    let rest = &name[name.find("report_to_invalidate_")? + "report_to_invalidate_".len()..];
    let mut parts = rest.split('_');
    let idsite: u32 = parts.next()?.parse().ok()?;
    let date = NaiveDate::parse_from_str(parts.next()?, "%Y-%m-%d").ok()?;
    (idsite != 0).then_some(SiteDay { idsite, date })
}

/// Our option name: Matomo's shape (`<4 alnum>_report_to_invalidate_<site>_<date>_<suffix>`),
/// recognisable as ours and the same on every run, so a retried chunk cannot queue twice.
pub fn option_name(day: &SiteDay) -> String {
    format!(
        "mErs_report_to_invalidate_{}_{}_matomoerase",
        day.idsite,
        day.date.format("%Y-%m-%d")
    )
}

/// Queues the site-days, each under the tool's own option name even when Matomo queued the day
/// already: Matomo's row may be taken up by an archiver while this chunk is still open, and
/// re-archived from rows that still hold the subject. Returns how many rows were inserted (a
/// retried chunk or a re-run finds its rows there and inserts none).
pub async fn queue(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    days: &BTreeSet<SiteDay>,
) -> anyhow::Result<u64> {
    if days.is_empty() {
        return Ok(0);
    }
    let missing: Vec<String> = days.iter().map(option_name).collect();
    let values = vec!["(?, '1', 0)"; missing.len()].join(", ");
    let sql = format!(
        "INSERT IGNORE INTO {} (option_name, option_value, autoload) VALUES {values}",
        matomo.table("option")
    );
    let mut q = sqlx::query(&sql);
    for m in &missing {
        q = q.bind(m);
    }
    Ok(q.execute(&mut *conn).await?.rows_affected())
}

/// A report period of one site: Matomo's period ids 1 day, 2 week, 3 month, 4 year, with its
/// first and last site-local date, as the archive tables key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SitePeriod {
    pub idsite: u32,
    pub period: u8,
    #[serde(serialize_with = "ser_date")]
    pub date1: NaiveDate,
    #[serde(serialize_with = "ser_date")]
    pub date2: NaiveDate,
}

impl SitePeriod {
    /// The day, week (Monday to Sunday), month and year that hold a site-day.
    fn around(day: &SiteDay) -> [SitePeriod; 4] {
        let d = day.date;
        let monday = d - chrono::Days::new(d.weekday().num_days_from_monday().into());
        let first = d.with_day(1).unwrap_or(d);
        let next_month = first
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(d);
        let jan = NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d);
        let dec = NaiveDate::from_ymd_opt(d.year(), 12, 31).unwrap_or(d);
        let p = |period, date1, date2| SitePeriod {
            idsite: day.idsite,
            period,
            date1,
            date2,
        };
        [
            p(1, d, d),
            p(2, monday, monday + chrono::Days::new(6)),
            p(3, first, next_month.pred_opt().unwrap_or(d)),
            p(4, jan, dec),
        ]
    }

    /// Archives live in the tables of the month their period starts in.
    fn table_month(&self) -> String {
        format!("{}_{:02}", self.date1.year(), self.date1.month())
    }
}

/// The site-local bounds of a period in UTC: from the start of its first day to the start of
/// the day after its last.
fn utc_bounds(tz: &SiteTimezone, p: &SitePeriod) -> (NaiveDateTime, NaiveDateTime) {
    let until = match p.date2.succ_opt() {
        Some(next) => tz.start_of_day_utc(next),
        // The last date chrono knows: past any DATETIME the server stores.
        None => NaiveDate::from_ymd_opt(9999, 12, 31)
            .and_then(|d| d.and_hms_opt(23, 59, 59))
            .unwrap_or(NaiveDateTime::MAX),
    };
    (tz.start_of_day_utc(p.date1), until)
}

/// Which of these periods still hold a visit whose last action falls inside their site-local
/// bounds, the test Matomo's archiver makes before it skips a period as empty. One statement
/// per thousand periods, each part an index range read of `(idsite, visit_last_action_time)`
/// that stops at the first visit. Periods of sites whose timezone is unknown count as holding
/// visits.
async fn with_visits(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    periods: &BTreeSet<SitePeriod>,
) -> anyhow::Result<BTreeSet<SitePeriod>> {
    let mut out = BTreeSet::new();
    let mut known = Vec::new();
    for p in periods {
        match matomo.site_tz(p.idsite) {
            Some(tz) => known.push((*p, utc_bounds(tz, p))),
            None => {
                out.insert(*p);
            }
        }
    }
    for part in known.chunks(1000) {
        let one = format!(
            "(SELECT ? FROM {} WHERE idsite = ? AND visit_last_action_time >= ? \
             AND visit_last_action_time < ? LIMIT 1)",
            matomo.table("log_visit")
        );
        let sql = vec![one.as_str(); part.len()].join(" UNION ALL ");
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for (i, (p, (from, until))) in part.iter().enumerate() {
            q = q.bind(i as i64).bind(p.idsite).bind(*from).bind(*until);
        }
        for i in q.fetch_all(&mut *conn).await? {
            if let Some((p, _)) = usize::try_from(i).ok().and_then(|i| part.get(i)) {
                out.insert(*p);
            }
        }
    }
    Ok(out)
}

/// Whether one period still holds a visit (see `with_visits`).
async fn has_visits(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    p: &SitePeriod,
) -> anyhow::Result<bool> {
    Ok(!with_visits(conn, matomo, &BTreeSet::from([*p]))
        .await?
        .is_empty())
}

/// Drops the archives of the periods around these site-days that no visit is left in.
///
/// Matomo's archiver skips a period without visits and so keeps its old archive, which
/// reports keep showing with the erased visits in it (fixed for `core:archive` only in Matomo
/// 5.3, never for browser-triggered archiving). Re-archiving such a period would give an
/// empty report, and so does having no archive: the archive rows of an emptied day, week,
/// month or year of the site (every segment and plugin, numeric and blob) are deleted, by
/// their archive ids, inside the chunk's transaction. Periods that still hold a visit are
/// left to the queued invalidation. Returns the emptied periods that had archives, and how
/// many archives were dropped.
///
/// Limitation: range archives (period 5) holding an emptied period and sites whose timezone
/// is unknown are left as they are; Matomo purges range archives on its own schedule.
pub async fn drop_emptied_archives(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    days: &BTreeSet<SiteDay>,
) -> anyhow::Result<(BTreeSet<SitePeriod>, u64)> {
    // A period holds the day, so it can only be empty if the day is: the days are read first,
    // then the weeks and months of the emptied days, then the years of the emptied months.
    let mut emptied = BTreeSet::new();
    let mut level: BTreeSet<SitePeriod> = days
        .iter()
        .filter(|d| matomo.site_tz(d.idsite).is_some())
        .map(|d| SitePeriod::around(d)[0])
        .collect();
    while !level.is_empty() {
        let full = with_visits(conn, matomo, &level).await?;
        let empty: Vec<SitePeriod> = level.difference(&full).copied().collect();
        level = empty
            .iter()
            .flat_map(|p| {
                let [_, week, month, year] = SitePeriod::around(&SiteDay {
                    idsite: p.idsite,
                    date: p.date1,
                });
                match p.period {
                    1 => vec![week, month],
                    3 => vec![year],
                    _ => vec![],
                }
            })
            .collect();
        emptied.extend(empty);
    }
    if emptied.is_empty() {
        return Ok((emptied, 0));
    }

    let months: BTreeSet<String> = emptied.iter().map(SitePeriod::table_month).collect();
    let names: Vec<String> = months
        .iter()
        .flat_map(|m| {
            [
                format!("{}archive_numeric_{m}", matomo.prefix),
                format!("{}archive_blob_{m}", matomo.prefix),
            ]
        })
        .collect();
    let sql = format!(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name IN ({})",
        crate::sql::placeholders(names.len())
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for n in &names {
        q = q.bind(n);
    }
    let existing: HashSet<String> = q.fetch_all(&mut *conn).await?.into_iter().collect();

    let mut with_archives = BTreeSet::new();
    let mut dropped = 0;
    for p in emptied {
        let m = p.table_month();
        if !existing.contains(&format!("{}archive_numeric_{m}", matomo.prefix)) {
            continue;
        }
        let numeric = matomo.table(&format!("archive_numeric_{m}"));
        let key = "idsite = ? AND period = ? AND date1 = ? AND date2 = ?";
        // Every archive has its done flag in the numeric table, so its ids are all there.
        let ids: Vec<u64> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT idarchive FROM {numeric} WHERE {key} FOR UPDATE"
        ))
        .bind(p.idsite)
        .bind(p.period)
        .bind(p.date1)
        .bind(p.date2)
        .fetch_all(&mut *conn)
        .await?;
        if ids.is_empty() {
            continue;
        }
        let mut tables = vec![numeric];
        if existing.contains(&format!("{}archive_blob_{m}", matomo.prefix)) {
            tables.push(matomo.table(&format!("archive_blob_{m}")));
        }
        for t in tables {
            sqlx::query(&format!(
                "DELETE FROM {t} WHERE idarchive IN ({}) AND {key}",
                int_list(&ids)
            ))
            .bind(p.idsite)
            .bind(p.period)
            .bind(p.date1)
            .bind(p.date2)
            .execute(&mut *conn)
            .await?;
        }
        tracing::debug!(idsite = p.idsite, period = p.period, date1 = %p.date1, archives = ids.len(), "dropped the archives of a period left without visits");
        dropped += ids.len() as u64;
        with_archives.insert(p);
    }
    Ok((with_archives, dropped))
}

/// Whether `core:archive` has dealt with a site-day that no visit is left in, after `since`.
///
/// Matomo's archiver drops such a day from its queue without archiving it, so no new day
/// archive proves it came by. What shows it did is the periods around the day: each one that
/// has an archive still has visits and was re-archived (or queued for it) since; the others
/// have no archive left to show. A day that still has visits is not judged here.
pub async fn taken_up_without_visits(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    day: &SiteDay,
    since: NaiveDateTime,
) -> anyhow::Result<bool> {
    if matomo.site_tz(day.idsite).is_none() {
        return Ok(false);
    }
    for p in SitePeriod::around(day) {
        let visits = has_visits(conn, matomo, &p).await?;
        if p.period == 1 && visits {
            return Ok(false);
        }
        let numeric = matomo.table(&format!("archive_numeric_{}", p.table_month()));
        let archives = sqlx::query(&format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(value IN (1, 3) AND ts_archived >= ?), 0) AS SIGNED) \
             FROM {numeric} WHERE idsite = ? AND period = ? AND date1 = ? AND date2 = ? \
             AND name LIKE 'done%'"
        ))
        .bind(since)
        .bind(p.idsite)
        .bind(p.period)
        .bind(p.date1)
        .bind(p.date2)
        .fetch_one(&mut *conn)
        .await;
        let (any, fresh) = match archives {
            Ok(r) => (r.try_get::<i64, _>(0)? > 0, r.try_get::<i64, _>(1)? > 0),
            // No archive table for that month: no archive.
            Err(e) if crate::sql::db_code(&e).as_deref() == Some("1146") => (false, false),
            Err(e) => return Err(e.into()),
        };
        let ok = !any || (visits && (fresh || queued_since(conn, matomo, &p, since).await));
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether an archive invalidation of the period was queued since (Matomo 4+ only).
async fn queued_since(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    p: &SitePeriod,
    since: NaiveDateTime,
) -> bool {
    let n = sqlx::query_scalar::<_, i64>(&format!(
        "SELECT COUNT(*) FROM {} WHERE idsite = ? AND period = ? AND date1 = ? AND date2 = ? \
         AND ts_invalidated >= ?",
        matomo.table("archive_invalidations")
    ))
    .bind(p.idsite)
    .bind(p.period)
    .bind(p.date1)
    .bind(p.date2)
    .bind(since)
    .fetch_one(&mut *conn)
    .await;
    matches!(n, Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_matomos_and_our_option_names() {
        let d = parse_option_name("0AJ4_report_to_invalidate_2_2012-02-18_5380").unwrap();
        assert_eq!(
            (d.idsite, d.date.to_string()),
            (2, "2012-02-18".to_string())
        );
        let ours = SiteDay {
            idsite: 11,
            date: NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
        };
        assert_eq!(parse_option_name(&option_name(&ours)), Some(ours));
        assert_eq!(parse_option_name("report_to_invalidate_0_2012-02-18"), None);
        assert_eq!(parse_option_name("something_else"), None);
    }
}
