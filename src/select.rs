//! From subjects to visits: finds every `log_visit` row of the subjects. Only reads, with plain
//! consistent reads that take no locks, so the tracker is never blocked by a lookup.
//!
//! User ids are found one of two ways. The index way derives `idvisitor` from the user id as
//! Matomo does (4.x and later, and before 3.13) and probes the `(idsite, idvisitor, ...)` index,
//! then keeps only rows whose `user_id` is byte-equal to a stored form. The scan way reads
//! `log_visit` in primary-key ranges, each range its own short query, matching a batch of ids
//! per pass under the column collation; rows equal only under the collation are near matches.

use crate::cli::{Lookup, MatchMode, SelectArgs};
use crate::error::usage;
use crate::inspect::Matomo;
use crate::sql::{int_list, placeholders};
use crate::subject::{
    parse_visitor_id, receipt_hash, UserIdLines, UserIdSubject, USER_ID_MAX_CHARS,
};
use chrono::NaiveDateTime;
use serde::Serialize;
use sqlx::mysql::{MySqlArguments, MySqlConnection};
use sqlx::query::Query;
use sqlx::{MySql, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// Subjects resolved per index probe: one query per group of sites.
const INDEX_BATCH: usize = 500;
/// Subjects matched per scan pass.
const SCAN_BATCH: usize = 2000;
/// Primary-key span of one scan query.
const SCAN_RANGE: u64 = 100_000;
/// A zero date (`0000-00-00`) cannot be a time; it is read as NULL so one broken row does not
/// stop the erasure of a person.
///
/// The last column is the visit's identity: a digest of its user id and visitor id as stored.
/// A chunk reads it again under its row locks and leaves a visit whose identity changed since
/// it was selected (the tracker re-attributed it, e.g. someone else logged in during the visit):
/// it may no longer be the subject's.
pub const VISIT_COLUMNS: &str = "idvisit, idsite, \
    IF(YEAR(visit_first_action_time) = 0, NULL, visit_first_action_time), \
    IF(YEAR(visit_last_action_time) = 0, NULL, visit_last_action_time), \
    CAST(MD5(CONCAT(IFNULL(HEX(user_id), '-'), ':', HEX(idvisitor))) AS CHAR)";
/// The index of the first column a query selects after VISIT_COLUMNS.
const AFTER_VISIT: usize = 5;
/// Why a path that names no file is not repeated in its error.
pub const NOT_SHOWN: &str =
    "the path is not shown: it may be a user id typed after the wrong option";
/// Visits sampled by `--lookup auto`: the newest and the oldest, and slices between them.
const AUTO_SAMPLE: u32 = 2000;
const AUTO_SLICES: u32 = 64;
const AUTO_SLICE_VISITS: u32 = 64;
/// Rounds of slices at most: each round skips the gaps in idvisit the one before found.
const AUTO_ROUNDS: u32 = 12;

fn sample_words() -> String {
    format!(
        "newest and oldest {AUTO_SAMPLE} visits and slices of {AUTO_SLICE_VISITS} visits spread \
         over the visits between"
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct VisitRow {
    pub idvisit: u64,
    pub idsite: u32,
    pub first_action: Option<NaiveDateTime>,
    pub last_action: Option<NaiveDateTime>,
    /// Digest of the stored user id and visitor id when the visit was read.
    #[serde(skip)]
    pub identity: String,
}

/// A visit whose user id equals a subject's only under the collation.
#[derive(Clone, Debug, Serialize)]
pub struct NearMatch {
    pub idsite: u32,
    pub idvisit: u64,
    /// How the stored id differs: `case`, `trailing spaces`, `accents or other characters`.
    pub differs_by: &'static str,
    /// Receipt hash of the stored user id (never the id itself).
    pub user_id_hash: String,
    /// Receipt hash of the subject it is near, as "user ids without visits" lists it, when it
    /// differs from that subject by case or trailing spaces only.
    pub near_subject_hash: Option<String>,
    /// Whether it is erased (only with `--match collation`).
    pub erased: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct LookupDecision {
    pub mode: &'static str,
    pub reason: String,
}

/// The subjects of a command, validated before anything touches the database.
#[derive(Clone)]
pub struct Subjects {
    /// Standard input, read once when `--user-ids-file -` is given, so that the subjects can be
    /// walked more than once (run key, selection, verification).
    pub stdin: Option<std::sync::Arc<Vec<u8>>>,
    pub user_ids: Vec<String>,
    pub user_ids_file: Option<PathBuf>,
    pub visitor_ids: Vec<[u8; 8]>,
    pub visit_ids: Vec<u64>,
    pub visit_ids_file: Option<PathBuf>,
    pub args: SelectArgs,
}

impl Subjects {
    pub fn from_args(args: &SelectArgs) -> anyhow::Result<Subjects> {
        if args.user_ids.is_empty()
            && args.user_ids_file.is_none()
            && args.visitor_ids.is_empty()
            && args.visit_ids.is_empty()
            && args.visit_ids_file.is_none()
        {
            return Err(usage(
                "no subject given: name at least one with --user-id, --user-ids-file, \
                 --visitor-id, --visit-id or --visit-ids-file",
            ));
        }
        if args.user_ids.iter().any(|u| u.is_empty()) {
            return Err(usage(
                "--user-id was given an empty value; Matomo never stores an empty user id: give \
                 the id as the application sent it",
            ));
        }
        if let (Some(s), Some(u)) = (args.since, args.until) {
            if s >= u {
                return Err(usage(format!("--since {s} is not before --until {u}")));
            }
        }
        let visitor_ids = args
            .visitor_ids
            .iter()
            .map(|v| parse_visitor_id(v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(path) = &args.user_ids_file {
            if path.as_os_str() != "-" && !path.is_file() {
                return Err(usage(format!(
                    "the path given to --user-ids-file does not name an existing file \
                     ({NOT_SHOWN}); give an existing file with one user id a line, or - for \
                     standard input"
                )));
            }
        }
        if let Some(path) = &args.visit_ids_file {
            if !path.is_file() {
                return Err(usage(format!(
                    "the path given to --visit-ids-file does not name an existing file \
                     ({NOT_SHOWN}); give an existing file with one idvisit a line"
                )));
            }
        }
        let stdin = match &args.user_ids_file {
            Some(p) if p.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                Some(std::sync::Arc::new(buf))
            }
            _ => None,
        };
        Ok(Subjects {
            stdin,
            user_ids: args.user_ids.clone(),
            user_ids_file: args.user_ids_file.clone(),
            visitor_ids,
            visit_ids: args.visit_ids.clone(),
            visit_ids_file: args.visit_ids_file.clone(),
            args: args.clone(),
        })
    }

    pub fn has_user_ids(&self) -> bool {
        !self.user_ids.is_empty() || self.user_ids_file.is_some()
    }

    /// The visit-ids file as a stream of numbers.
    pub fn open_visit_ids(&self) -> anyhow::Result<Option<VisitIdLines>> {
        match &self.visit_ids_file {
            Some(path) => Ok(Some(VisitIdLines {
                lines: UserIdLines::open(path)?,
                line: 0,
            })),
            None => Ok(None),
        }
    }

    /// The user-ids file (or buffered stdin) as a stream of lines.
    pub fn open_lines(&self) -> anyhow::Result<Option<UserIdLines>> {
        match (&self.user_ids_file, &self.stdin) {
            (Some(_), Some(buf)) => Ok(Some(UserIdLines::from_reader(std::io::Cursor::new(
                SharedBytes(buf.clone()),
            )))),
            (Some(path), None) => Ok(Some(UserIdLines::open(path)?)),
            (None, _) => Ok(None),
        }
    }
}

/// Visit ids, one a line; blank lines are skipped.
pub struct VisitIdLines {
    lines: UserIdLines,
    line: u64,
}

impl VisitIdLines {
    pub fn next_id(&mut self) -> anyhow::Result<Option<u64>> {
        let Some(text) = self.lines.next_id()? else {
            return Ok(None);
        };
        self.line += 1;
        let origin = format!("entry {} of the visit-ids file", self.line);
        crate::subject::parse_visit_id(&text, &origin).map(Some)
    }
}

/// Shared read-only bytes for a cursor.
struct SharedBytes(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Checks `--site` against the sites that exist.
pub fn check_sites(matomo: &Matomo, sites: &[u32]) -> anyhow::Result<()> {
    for s in sites {
        if !matomo.sites.contains_key(s) {
            let known: Vec<String> = matomo.sites.keys().map(|k| k.to_string()).collect();
            return Err(usage(format!(
                "site {s} does not exist in this Matomo; sites: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Chooses how user ids are looked up, and says why.
pub async fn decide_lookup(
    conn: &mut MySqlConnection,
    matomo: &Matomo,
    subjects: &Subjects,
) -> anyhow::Result<LookupDecision> {
    let args = &subjects.args;
    if !subjects.has_user_ids() {
        return Ok(LookupDecision {
            mode: "none",
            reason: "no user ids given; visitor ids and visit ids always use an index".into(),
        });
    }
    if args.match_mode == MatchMode::Collation {
        return Ok(LookupDecision {
            mode: "scan",
            reason: "--match collation compares under the column collation, which only a scan \
                     can do"
                .into(),
        });
    }
    match args.lookup {
        Lookup::Index => {
            return Ok(LookupDecision {
                mode: "index",
                reason: "--lookup index".into(),
            })
        }
        Lookup::Scan => {
            return Ok(LookupDecision {
                mode: "scan",
                reason: "--lookup scan".into(),
            })
        }
        Lookup::Auto => {}
    }
    if let Some(v) = &matomo.version {
        if v.starts_with("3.13.") || v.starts_with("3.14.") {
            return Ok(LookupDecision {
                mode: "scan",
                reason: format!(
                    "Matomo {v}: 3.13 and 3.14 do not derive the visitor id from the user id"
                ),
            });
        }
    }
    let (with_uid, linked) = sample_linkage(conn, matomo).await?;
    Ok(if with_uid == 0 {
        LookupDecision {
            mode: "index",
            reason: format!(
                "none of the {} has a user id to measure; \
                 Matomo 4+ derives idvisitor from the user id by default (use --lookup scan if \
                 this install turned that off)",
                sample_words()
            ),
        }
    } else if linked == with_uid {
        LookupDecision {
            mode: "index",
            reason: format!(
                "idvisitor is derived from the user id in all {with_uid} sampled visits with a \
                 user id ({})",
                sample_words()
            ),
        }
    } else {
        LookupDecision {
            mode: "scan",
            reason: format!(
                "idvisitor is derived from the user id in only {linked} of {with_uid} sampled \
                 visits with a user id, so the index would miss visits"
            ),
        }
    })
}

/// Counts, in the sample of `--lookup auto`, the visits with a user id to measure and those
/// whose idvisitor is derived from it.
///
/// The sample is the newest and the oldest visits, and slices of visits spread over the ones
/// between. An install upgraded from a version (or a config) that did not link the ids shows
/// it at the old end; one that went through Matomo 3.13 or 3.14 and on to 4 shows it as a band
/// in the middle. Slices are placed by idvisit value, and idvisit can jump (an import, a raised
/// AUTO_INCREMENT): a slice that starts in a gap reads the first visits after it, so the gap is
/// known empty and the next round spreads its slices over the rest, until they land among
/// visits. A user id of 200 characters may have been cut, and the visitor id comes from the
/// uncut id, so such rows are not measured.
///
/// Limitation: a band of unlinked visits narrower than the space between two slices can fall
/// between them; `--lookup scan` is exact.
async fn sample_linkage(conn: &mut MySqlConnection, matomo: &Matomo) -> anyhow::Result<(u64, u64)> {
    let log_visit = matomo.table("log_visit");
    let measure = format!(
        "CAST(user_id IS NOT NULL AND CHAR_LENGTH(user_id) < 200 AS SIGNED), \
         CAST(COALESCE(idvisitor = UNHEX(LEFT(SHA1({uid}), 16)), 0) AS SIGNED)",
        uid = matomo.user_id_text()
    );
    let mut sample: HashMap<u64, (bool, bool)> = HashMap::new();

    let ends = sqlx::query(&format!(
        "(SELECT 0, idvisit, {measure} FROM {log_visit} ORDER BY idvisit DESC \
         LIMIT {AUTO_SAMPLE}) UNION ALL \
         (SELECT 0, idvisit, {measure} FROM {log_visit} ORDER BY idvisit LIMIT {AUTO_SAMPLE})"
    ))
    .fetch_all(&mut *conn)
    .await?;
    record_sample(&mut sample, ends)?;
    let (Some(&min), Some(&max)) = (sample.keys().min(), sample.keys().max()) else {
        return Ok((0, 0));
    };

    // Spans [from, to) known to hold no visit, found by slices that started in them.
    let mut empty: Vec<(u128, u128)> = Vec::new();
    for _round in 0..AUTO_ROUNDS {
        let unknown = unknown_spans(u128::from(min), u128::from(max) + 1, &empty);
        let total: u128 = unknown.iter().map(|(a, b)| b - a).sum();
        let points = spread(&unknown, total, AUTO_SLICES);
        if points.is_empty() {
            break;
        }
        let slices: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(k, p)| {
                format!(
                    "(SELECT {}, idvisit, {measure} FROM {log_visit} WHERE idvisit >= {p} \
                     ORDER BY idvisit LIMIT {AUTO_SLICE_VISITS})",
                    k + 1
                )
            })
            .collect();
        let rows = sqlx::query(&slices.join(" UNION ALL "))
            .fetch_all(&mut *conn)
            .await?;
        let first = record_sample(&mut sample, rows)?;
        let mut gaps: u128 = 0;
        for (k, p) in points.iter().enumerate() {
            let p = u128::from(*p);
            let next = first
                .get(&(k as i64 + 1))
                .map_or(u128::from(max) + 1, |f| u128::from(*f));
            if next > p {
                empty.push((p, next));
                gaps += next - p;
            }
        }
        // Slices that mostly landed among visits: the sample is spread over them.
        if gaps * 2 < total {
            break;
        }
    }

    let with_uid = sample.values().filter(|(m, _)| *m).count() as u64;
    let linked = sample.values().filter(|(m, l)| *m && *l).count() as u64;
    Ok((with_uid, linked))
}

/// Adds sampled rows (slice number, idvisit, measured, linked) to the sample; returns the first
/// idvisit each slice read.
fn record_sample(
    sample: &mut HashMap<u64, (bool, bool)>,
    rows: Vec<sqlx::mysql::MySqlRow>,
) -> anyhow::Result<BTreeMap<i64, u64>> {
    let mut first = BTreeMap::new();
    for r in rows {
        let slice: i64 = r.try_get(0)?;
        let idvisit: u64 = r.try_get(1)?;
        let measured: i64 = r.try_get(2)?;
        let linked: i64 = r.try_get(3)?;
        sample.insert(idvisit, (measured == 1, linked == 1));
        let f = first.entry(slice).or_insert(idvisit);
        *f = (*f).min(idvisit);
    }
    Ok(first)
}

/// The parts of [from, to) outside the given empty spans, in order.
fn unknown_spans(from: u128, to: u128, empty: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut cut: Vec<(u128, u128)> = empty.to_vec();
    cut.sort();
    let mut out = Vec::new();
    let mut at = from;
    for (a, b) in cut {
        if a > at {
            out.push((at, a.min(to)));
        }
        at = at.max(b);
        if at >= to {
            break;
        }
    }
    if at < to {
        out.push((at, to));
    }
    out.retain(|(a, b)| b > a);
    out
}

/// `n` points spread evenly over the spans, whose lengths add up to `total`.
fn spread(spans: &[(u128, u128)], total: u128, n: u32) -> Vec<u64> {
    let mut points = Vec::new();
    if total == 0 {
        return points;
    }
    let mut span = spans.iter().peekable();
    let mut passed: u128 = 0;
    for j in 1..=u128::from(n) {
        let target = total * j / (u128::from(n) + 1);
        while let Some((a, b)) = span.peek() {
            if passed + (b - a) > target {
                let p = a + (target - passed);
                if points.last() != Some(&(p as u64)) {
                    points.push(p as u64);
                }
                break;
            }
            passed += b - a;
            span.next();
        }
    }
    points
}

/// Streams the visits of the subjects in batches. Each call to `next_batch` runs a bounded
/// amount of SQL and returns what it found; None at the end.
pub struct Finder<'m> {
    matomo: &'m Matomo,
    subjects: Subjects,
    scan: bool,
    stage: Stage,
    lines: Option<UserIdLines>,
    visit_lines: Option<VisitIdLines>,
    args_pos: usize,
    site_clause: String,
    time_clause: String,
    /// Sites to probe: every idsite in log_visit (a deleted site's visits stay until Matomo
    /// purges them) plus the site table; read once.
    probe_sites: Option<Vec<u32>>,
    pub near_matches: Vec<NearMatch>,
    pub near_match_limit: usize,
    pub near_matches_total: u64,
    pub user_ids_seen: u64,
    pub visit_ids_seen: u64,
    /// Visit id lines that named no visit (or none within --site, --since and --until).
    pub visit_ids_unmatched: u64,
    /// Receipt hashes of user ids that matched no visit (bounded list, full count).
    pub unmatched: Vec<String>,
    pub unmatched_total: u64,
    scan_state: Option<ScanPass>,
}

enum Stage {
    VisitIds(usize),
    VisitIdsFile,
    VisitorIds(usize),
    UserIds,
    Done,
}

/// A subject (by its index in the batch) claiming a stored form, with the visitor id a row
/// must carry when the form may be a cut longer id.
type Claim = (usize, Option<[u8; 8]>);

struct ScanPass {
    batch: Vec<UserIdSubject>,
    /// Stored form → (subject, visitor id the row must have). A form of 200 characters may be
    /// a cut longer id, shared by everyone whose id starts the same; the visitor id, derived
    /// from the uncut id, tells them apart.
    by_stored: HashMap<String, Vec<Claim>>,
    matched: Vec<bool>,
    /// The first idvisit of the next range: a visit that exists, so that a gap in idvisit (an
    /// import, a raised AUTO_INCREMENT) costs one step, not one per empty range. None at the end.
    next: Option<u64>,
    /// The newest visit when the pass began; visits tracked later are not the subjects' past.
    max: u64,
}

impl<'m> Finder<'m> {
    pub fn new(matomo: &'m Matomo, subjects: Subjects, decision: &LookupDecision) -> Finder<'m> {
        let args = &subjects.args;
        let sites: Vec<u32> = args.sites.clone();
        let site_clause = if sites.is_empty() {
            String::new()
        } else {
            format!(" AND idsite IN ({})", int_list(&sites))
        };
        let mut time_clause = String::new();
        if let Some(s) = args.since {
            time_clause.push_str(&format!(" AND visit_last_action_time >= '{s} 00:00:00'"));
        }
        if let Some(u) = args.until {
            time_clause.push_str(&format!(" AND visit_last_action_time < '{u} 00:00:00'"));
        }
        Finder {
            matomo,
            scan: decision.mode == "scan",
            subjects,
            stage: Stage::VisitIds(0),
            lines: None,
            visit_lines: None,
            args_pos: 0,
            site_clause,
            time_clause,
            probe_sites: None,
            near_matches: Vec::new(),
            near_match_limit: 1000,
            near_matches_total: 0,
            user_ids_seen: 0,
            visit_ids_seen: 0,
            visit_ids_unmatched: 0,
            unmatched: Vec::new(),
            unmatched_total: 0,
            scan_state: None,
        }
    }

    pub async fn next_batch(
        &mut self,
        conn: &mut MySqlConnection,
    ) -> anyhow::Result<Option<Vec<VisitRow>>> {
        loop {
            match self.stage {
                Stage::VisitIds(pos) => {
                    let ids = &self.subjects.visit_ids;
                    if pos >= ids.len() {
                        self.stage = Stage::VisitIdsFile;
                        continue;
                    }
                    let end = (pos + 1000).min(ids.len());
                    let batch = ids[pos..end].to_vec();
                    self.stage = Stage::VisitIds(end);
                    return Ok(Some(self.visits_by_id(conn, &batch).await?));
                }
                Stage::VisitIdsFile => {
                    if self.visit_lines.is_none() {
                        self.visit_lines = self.subjects.open_visit_ids()?;
                    }
                    let mut batch = Vec::with_capacity(1000);
                    if let Some(lines) = self.visit_lines.as_mut() {
                        while batch.len() < 1000 {
                            match lines.next_id()? {
                                Some(id) => {
                                    self.visit_ids_seen += 1;
                                    batch.push(id)
                                }
                                None => break,
                            }
                        }
                    }
                    if batch.is_empty() {
                        self.stage = Stage::VisitorIds(0);
                        continue;
                    }
                    return Ok(Some(self.visits_by_id(conn, &batch).await?));
                }
                Stage::VisitorIds(pos) => {
                    let ids = &self.subjects.visitor_ids;
                    if pos >= ids.len() {
                        self.stage = Stage::UserIds;
                        continue;
                    }
                    let end = (pos + INDEX_BATCH).min(ids.len());
                    let batch: Vec<[u8; 8]> = ids[pos..end].to_vec();
                    self.stage = Stage::VisitorIds(end);
                    let rows = self.probe_index(conn, &batch, None).await?;
                    return Ok(Some(rows.into_iter().map(|(v, _)| v).collect()));
                }
                Stage::UserIds => {
                    if !self.subjects.has_user_ids() {
                        self.stage = Stage::Done;
                        continue;
                    }
                    let found = if self.scan {
                        self.next_scan(conn).await?
                    } else {
                        self.next_index(conn).await?
                    };
                    match found {
                        Some(rows) => return Ok(Some(rows)),
                        None => self.stage = Stage::Done,
                    }
                }
                Stage::Done => return Ok(None),
            }
        }
    }

    async fn visits_by_id(
        &mut self,
        conn: &mut MySqlConnection,
        ids: &[u64],
    ) -> anyhow::Result<Vec<VisitRow>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE idvisit IN ({}){}{}",
            VISIT_COLUMNS,
            self.matomo.table("log_visit"),
            int_list(ids),
            self.site_clause,
            self.time_clause
        );
        let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
        let visits: Vec<VisitRow> = rows.iter().map(visit_row).collect::<Result<_, _>>()?;
        // Counted as the visit ids are, a line each, so that the count does not depend on how
        // the lines fall into batches.
        let found: BTreeSet<u64> = visits.iter().map(|v| v.idvisit).collect();
        self.visit_ids_unmatched += ids.iter().filter(|i| !found.contains(i)).count() as u64;
        Ok(visits)
    }

    /// Ids in the user-ids file with spaces at either end (kept: they are part of an id, but
    /// usually an export's mistake), and the first such line.
    pub fn outer_whitespace(&self) -> Option<(u64, u64)> {
        let lines = self.lines.as_ref()?;
        let n = lines.whitespace_warnings();
        (n > 0).then(|| (n, lines.first_whitespace_line().unwrap_or(0)))
    }

    /// The next user id from `--user-id` then `--user-ids-file`.
    fn next_user_id(&mut self) -> anyhow::Result<Option<UserIdSubject>> {
        let typed = if self.args_pos < self.subjects.user_ids.len() {
            self.args_pos += 1;
            Some(self.subjects.user_ids[self.args_pos - 1].clone())
        } else if self.subjects.user_ids_file.is_some() {
            if self.lines.is_none() {
                self.lines = self.subjects.open_lines()?;
            }
            self.lines
                .as_mut()
                .map(|l| l.next_id())
                .transpose()?
                .flatten()
        } else {
            None
        };
        match typed {
            Some(t) => {
                self.user_ids_seen += 1;
                Ok(Some(UserIdSubject::new(&t, &self.matomo.rules)?))
            }
            None => Ok(None),
        }
    }

    fn take_user_ids(&mut self, n: usize) -> anyhow::Result<Vec<UserIdSubject>> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            match self.next_user_id()? {
                Some(s) => batch.push(s),
                None => break,
            }
        }
        Ok(batch)
    }

    async fn next_index(
        &mut self,
        conn: &mut MySqlConnection,
    ) -> anyhow::Result<Option<Vec<VisitRow>>> {
        let batch = self.take_user_ids(INDEX_BATCH)?;
        if batch.is_empty() {
            return Ok(None);
        }
        // Every stored form under every derived visitor id of the subject: Matomo's later
        // pseudonymisation rewrites user_id but keeps the idvisitor of the plain id.
        let mut wanted: HashMap<[u8; 8], Vec<(String, usize)>> = HashMap::new();
        for (i, s) in batch.iter().enumerate() {
            for by in &s.forms {
                for f in &s.forms {
                    wanted
                        .entry(by.idvisitor)
                        .or_default()
                        .push((f.stored.clone(), i));
                }
            }
        }
        let idvisitors: Vec<[u8; 8]> = wanted.keys().copied().collect();
        let rows = self.probe_index(conn, &idvisitors, Some(())).await?;
        let mut matched = vec![false; batch.len()];
        let mut out = Vec::new();
        for (visit, extra) in rows {
            let Some((idvisitor, Some(user_id))) = extra else {
                continue;
            };
            let Some(forms) = wanted.get(&idvisitor) else {
                continue;
            };
            let mut hit = false;
            for (stored, i) in forms {
                if *stored == user_id {
                    matched[*i] = true;
                    hit = true;
                }
            }
            if hit {
                out.push(visit);
            }
        }
        self.note_unmatched(&batch, &matched);
        Ok(Some(out))
    }

    fn note_unmatched(&mut self, batch: &[UserIdSubject], matched: &[bool]) {
        for (s, m) in batch.iter().zip(matched) {
            if !m {
                self.unmatched_total += 1;
                if self.unmatched.len() < 1000 {
                    self.unmatched.push(s.receipt_hash.clone());
                }
            }
        }
    }

    /// Probes `(idsite, idvisitor)` for every site in groups, so that the range optimizer sees
    /// at most a few thousand (site, visitor) pairs per query and never falls back to a scan.
    async fn probe_index(
        &mut self,
        conn: &mut MySqlConnection,
        idvisitors: &[[u8; 8]],
        with_user_id: Option<()>,
    ) -> anyhow::Result<Vec<(VisitRow, Option<([u8; 8], Option<String>)>)>> {
        let sites: Vec<u32> = if self.subjects.args.sites.is_empty() {
            if self.probe_sites.is_none() {
                // A loose index scan of (idsite, ...): one step per site, not per visit.
                let mut all: BTreeSet<u32> = sqlx::query_scalar::<_, u32>(&format!(
                    "SELECT DISTINCT idsite FROM {}",
                    self.matomo.table("log_visit")
                ))
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
                all.extend(self.matomo.sites.keys().copied());
                self.probe_sites = Some(all.into_iter().collect());
            }
            self.probe_sites.clone().unwrap_or_default()
        } else {
            self.subjects.args.sites.clone()
        };
        let mut out = Vec::new();
        if idvisitors.is_empty() || sites.is_empty() {
            return Ok(out);
        }
        let per_query = (4000 / idvisitors.len()).max(1);
        for group in sites.chunks(per_query) {
            let sql = format!(
                "SELECT {}, idvisitor, CAST({} AS BINARY) FROM {} \
                 WHERE idsite IN ({}) AND idvisitor IN ({}){}",
                VISIT_COLUMNS,
                self.matomo.user_id_text(),
                self.matomo.table("log_visit"),
                int_list(group),
                placeholders(idvisitors.len()),
                self.time_clause
            );
            let mut q: Query<'_, MySql, MySqlArguments> = sqlx::query(&sql);
            for v in idvisitors {
                q = q.bind(v.to_vec());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let visit = visit_row(&r)?;
                let extra = with_user_id
                    .map(|_| -> anyhow::Result<_> {
                        let idv: Vec<u8> = r.try_get(AFTER_VISIT)?;
                        let uid: Option<Vec<u8>> = r.try_get(AFTER_VISIT + 1)?;
                        let mut a = [0u8; 8];
                        if idv.len() == 8 {
                            a.copy_from_slice(&idv);
                        }
                        Ok((a, uid.and_then(|u| String::from_utf8(u).ok())))
                    })
                    .transpose()?;
                out.push((visit, extra));
            }
        }
        Ok(out)
    }

    async fn next_scan(
        &mut self,
        conn: &mut MySqlConnection,
    ) -> anyhow::Result<Option<Vec<VisitRow>>> {
        loop {
            if self.scan_state.is_none() {
                let batch = self.take_user_ids(SCAN_BATCH)?;
                if batch.is_empty() {
                    return Ok(None);
                }
                let row = sqlx::query(&format!(
                    "SELECT CAST(COALESCE(MIN(idvisit), 0) AS UNSIGNED), \
                     CAST(COALESCE(MAX(idvisit), 0) AS UNSIGNED) FROM {}",
                    self.matomo.table("log_visit")
                ))
                .fetch_one(&mut *conn)
                .await?;
                let (min, max): (u64, u64) = (row.try_get(0)?, row.try_get(1)?);
                let mut by_stored: HashMap<String, Vec<Claim>> = HashMap::new();
                for (i, s) in batch.iter().enumerate() {
                    for f in &s.forms {
                        let may_be_cut = f.stored.chars().count() >= USER_ID_MAX_CHARS;
                        by_stored
                            .entry(f.stored.clone())
                            .or_default()
                            .push((i, may_be_cut.then_some(f.idvisitor)));
                    }
                }
                let matched = vec![false; batch.len()];
                self.scan_state = Some(ScanPass {
                    batch,
                    by_stored,
                    matched,
                    next: (max > 0).then_some(min),
                    max,
                });
            }
            let pass = self.scan_state.as_mut().expect("scan pass set above");
            let Some(start) = pass.next.filter(|n| *n <= pass.max) else {
                let pass = self.scan_state.take().expect("scan pass set above");
                self.note_unmatched(&pass.batch, &pass.matched);
                continue;
            };
            let end = start.saturating_add(SCAN_RANGE - 1);
            pass.next = if end >= pass.max {
                None
            } else {
                sqlx::query_scalar::<_, Option<u64>>(&format!(
                    "SELECT MIN(idvisit) FROM {} WHERE idvisit > {end}",
                    self.matomo.table("log_visit")
                ))
                .fetch_one(&mut *conn)
                .await?
            };
            let forms: Vec<&String> = pass.by_stored.keys().collect();
            let sql = format!(
                "SELECT {}, CAST({uid} AS BINARY), idvisitor FROM {} \
                 WHERE idvisit BETWEEN {start} AND {end} AND {uid} IN ({}){}{}",
                VISIT_COLUMNS,
                self.matomo.table("log_visit"),
                placeholders(forms.len()),
                self.site_clause,
                self.time_clause,
                uid = self.matomo.user_id_text(),
            );
            let mut q: Query<'_, MySql, MySqlArguments> = sqlx::query(&sql);
            for f in &forms {
                q = q.bind(f.as_str());
            }
            let rows = q.fetch_all(&mut *conn).await?;
            let collation = self.subjects.args.match_mode == MatchMode::Collation;
            let mut out = Vec::new();
            let mut near = Vec::new();
            for r in &rows {
                let visit = visit_row(r)?;
                let uid: Option<Vec<u8>> = r.try_get(AFTER_VISIT)?;
                let uid = uid
                    .and_then(|u| String::from_utf8(u).ok())
                    .unwrap_or_default();
                let idvisitor: Vec<u8> = r.try_get(AFTER_VISIT + 1)?;
                let mut hit = false;
                let mut cut_clash = false;
                for (i, need) in pass.by_stored.get(&uid).into_iter().flatten() {
                    match need {
                        Some(v) if v.as_slice() != idvisitor.as_slice() => cut_clash = true,
                        _ => {
                            pass.matched[*i] = true;
                            hit = true;
                        }
                    }
                }
                if hit {
                    out.push(visit);
                } else {
                    let erased = collation && !cut_clash;
                    let near_subjects: Vec<usize> = pass
                        .by_stored
                        .iter()
                        .filter(|(stored, _)| differs_by(&uid, std::iter::once(*stored)) != OTHER)
                        .flat_map(|(_, claims)| claims.iter().map(|(i, _)| *i))
                        .collect();
                    if erased {
                        // A subject found through the collation is not "without visits".
                        for i in &near_subjects {
                            pass.matched[*i] = true;
                        }
                    }
                    near.push(NearMatch {
                        idsite: visit.idsite,
                        idvisit: visit.idvisit,
                        differs_by: if cut_clash {
                            "same first 200 characters, other visitor id"
                        } else {
                            differs_by(&uid, pass.by_stored.keys())
                        },
                        user_id_hash: receipt_hash(&uid),
                        near_subject_hash: near_subjects
                            .first()
                            .map(|i| pass.batch[*i].receipt_hash.clone()),
                        erased,
                    });
                    if erased {
                        out.push(visit);
                    }
                }
            }
            for n in near {
                self.near_matches_total += 1;
                if self.near_matches.len() < self.near_match_limit {
                    self.near_matches.push(n);
                }
            }
            return Ok(Some(out));
        }
    }
}

const OTHER: &str = "accents or other characters";

fn differs_by<'a>(stored: &str, forms: impl Iterator<Item = &'a String>) -> &'static str {
    let mut best = OTHER;
    for f in forms {
        if f.to_lowercase() == stored.to_lowercase() {
            return "case";
        }
        if f.trim_end() == stored.trim_end() {
            best = "trailing spaces";
        }
    }
    best
}

pub fn visit_row(r: &sqlx::mysql::MySqlRow) -> Result<VisitRow, sqlx::Error> {
    Ok(VisitRow {
        idvisit: r.try_get(0)?,
        idsite: r.try_get(1)?,
        first_action: r.try_get(2)?,
        last_action: r.try_get(3)?,
        identity: r.try_get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_skip_the_spans_known_empty_and_spread_over_the_rest() {
        let unknown = unknown_spans(0, 100, &[(10, 20), (15, 30), (90, 200)]);
        assert_eq!(unknown, [(0, 10), (30, 90)]);
        let points = spread(&unknown, 70, 6);
        assert_eq!(points, [30, 40, 50, 60, 70, 80]);
        assert!(spread(&[], 0, 6).is_empty());
    }
}
