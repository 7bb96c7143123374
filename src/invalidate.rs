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
use chrono::{DateTime, NaiveDate, NaiveDateTime};
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

/// Queues the site-days that are not queued yet. Returns how many rows were inserted.
pub async fn queue(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    days: &BTreeSet<SiteDay>,
) -> anyhow::Result<u64> {
    if days.is_empty() {
        return Ok(0);
    }
    let sites: Vec<u32> = days
        .iter()
        .map(|d| d.idsite)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let existing = queued(conn, matomo, &sites).await?;
    let missing: Vec<String> = days
        .iter()
        .filter(|d| !existing.contains(d))
        .map(option_name)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
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
