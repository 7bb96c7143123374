//! Runs each command in order: connect, inspect, select, then plan or erase, invalidate,
//! verify, report. `main` calls `run` and maps its error to an exit code.

use crate::cli::{Cli, Command, EraseArgs, SelectArgs};
use crate::connect::{self, Target};
use crate::erase::{self, ChunkError, Eraser, Selected};
use crate::error::Failure;
use crate::inspect::{self, Matomo, Untouched};
use crate::invalidate::{self, SiteDay};
use crate::journal::{self, Earlier};
use crate::plan;
use crate::progress::Progress;
use crate::report::{print_json, print_text};
use crate::select::{check_sites, decide_lookup, Finder, LookupDecision, NearMatch, Subjects};
use crate::subject::{receipt_hash, UserIdSubject};
use crate::throttle::{Throttle, Verdict};
use crate::verify::{self, VerifyReport};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::mysql::MySqlConnection;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Inspect => inspect_cmd(&cli).await,
        Command::Find(args) => find_cmd(&cli, args).await,
        Command::Erase(args) => erase_cmd(&cli, args).await,
        Command::Verify(args) => verify_cmd(&cli, args).await,
    }
}

/// Test hook: `MATOMO_ERASE_CRASH_AT=NAME:N` fires the Nth time the named point is reached.
/// `before-commit` and `after-commit` abort the process (as kill -9 would), to prove that any
/// crash leaves whole chunks; `lose-connection-after-commit` makes the caller drop the writing
/// connection right after a commit, as a network failure would.
pub fn crash_point(name: &str) -> bool {
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Ok(spec) = std::env::var("MATOMO_ERASE_CRASH_AT") else {
        return false;
    };
    let Some((point, n)) = spec.split_once(':') else {
        return false;
    };
    if point != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != n.parse().unwrap_or(0) {
        return false;
    }
    if name.starts_with("lose-connection") {
        return true;
    }
    std::process::abort();
}

/// Test hook: `MATOMO_ERASE_HOLD_BEFORE_COMMIT_MS` keeps every chunk open that long before its
/// COMMIT, so that a test can make another session's write meet the chunk's locks for sure.
pub async fn hold_before_commit() {
    let ms = std::env::var("MATOMO_ERASE_HOLD_BEFORE_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Everything a selecting command needs before it reads visits: validated subjects (before
/// any connection), the inspected database, and the lookup decision.
struct Prepared {
    target: Target,
    conn: MySqlConnection,
    matomo: Matomo,
    subjects: Subjects,
    decision: LookupDecision,
    run_key: String,
}

async fn prepare(cli: &Cli, args: &SelectArgs) -> anyhow::Result<Prepared> {
    let subjects = Subjects::from_args(args)?;
    let (target, mut conn, matomo) = connect_and_inspect(cli).await?;
    check_sites(&matomo, &args.sites)?;
    let decision = decide_lookup(&mut conn, &matomo, &subjects).await?;
    let run_key = run_key(&matomo, &subjects)?;
    Ok(Prepared {
        target,
        conn,
        matomo,
        subjects,
        decision,
        run_key,
    })
}

async fn connect_and_inspect(cli: &Cli) -> anyhow::Result<(Target, MySqlConnection, Matomo)> {
    let target = connect::resolve(&cli.conn)?;
    let mut conn = connect::open(&target).await?;
    let matomo = inspect::inspect(&mut conn, target.prefix.as_deref()).await?;
    tracing::info!(
        target = %target.describe(),
        prefix = %matomo.prefix,
        version = matomo.version.as_deref().unwrap_or("?"),
        "connected"
    );
    for w in &matomo.warnings {
        tracing::warn!("{w}");
    }
    Ok((target, conn, matomo))
}

/// `inspect`: what the tool sees in this database.
async fn inspect_cmd(cli: &Cli) -> anyhow::Result<()> {
    let (target, conn, matomo) = connect_and_inspect(cli).await?;
    connect::close(conn).await;
    if cli.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            command: &'static str,
            connection: String,
            #[serde(flatten)]
            matomo: &'a Matomo,
        }
        return print_json(&Doc {
            command: "inspect",
            connection: target.describe(),
            matomo: &matomo,
        });
    }
    let mut t = String::new();
    let _ = writeln!(t, "connection   {}", target.describe());
    let _ = writeln!(t, "server       {}", matomo.server_version);
    let _ = writeln!(
        t,
        "matomo       {}",
        matomo
            .version
            .as_deref()
            .unwrap_or("unknown (no version_core option)")
    );
    let _ = writeln!(t, "prefix       {:?}", matomo.prefix);
    let _ = writeln!(
        t,
        "user ids     user_id charset {}{}{}",
        matomo.user_id_charset,
        if matomo.rules.pseudonym_salt.is_some() {
            "; user-id salt present: pseudonymised forms are matched too"
        } else {
            ""
        },
        if matomo.pseudonymisation_on {
            "; pseudonymisation is ON"
        } else {
            ""
        }
    );
    let _ = writeln!(t, "\nsites");
    for s in matomo.sites.values() {
        let note = if s.tz.is_none() {
            "  (unknown timezone!)"
        } else {
            ""
        };
        let _ = writeln!(t, "  {:>5}  {:<24} {}{note}", s.idsite, s.timezone, s.name);
    }
    let _ = writeln!(t, "\nlog tables, in deletion order");
    for lt in &matomo.log_tables {
        let how = match &lt.reach {
            inspect::Reach::Visit => "the visits themselves (deleted last)".to_string(),
            inspect::Reach::Idvisit { indexed } => format!(
                "own idvisit column{}",
                if *indexed {
                    ""
                } else {
                    " (NOT indexed: each chunk scans this table)"
                }
            ),
            inspect::Reach::Through { path } => {
                let mut s = String::new();
                let mut from = lt.name.clone();
                for h in path {
                    let _ = write!(s, "{from}.{} -> {}.{}; ", h.column, h.parent, h.column);
                    from = h.parent.clone();
                }
                format!("through parent: {s}{from}.idvisit")
            }
        };
        let _ = writeln!(t, "  {:<28} {how}", lt.name);
    }
    let _ = writeln!(t, "\nnot touched");
    for u in &matomo.untouched {
        let _ = writeln!(t, "  {:<28} {}", u.name, u.reason);
    }
    write_warnings(&mut t, &matomo.warnings);
    print_text(&t)
}

/// The run key: a hash of the subjects and selection options, never the identifiers. The same
/// subjects give the same key whatever their order, file or option, which is how a re-run (or
/// `verify`) finds the chunks of the run it finishes. Each subject adds its own hash to a sum,
/// so the key is computed while streaming, in constant memory.
fn run_key(matomo: &Matomo, subjects: &Subjects) -> anyhow::Result<String> {
    let a = &subjects.args;
    let mut sum: u128 = 0;
    let mut add = |item: String| {
        let d = Sha256::digest(item.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        sum = sum.wrapping_add(u128::from_le_bytes(b));
    };
    for v in &subjects.visit_ids {
        add(format!("visit:{v}"));
    }
    let (mut from_visit_file, mut from_user_file) = (0u64, 0u64);
    if let Some(mut lines) = subjects.open_visit_ids()? {
        while let Some(v) = lines.next_id()? {
            add(format!("visit:{v}"));
            from_visit_file += 1;
        }
    }
    for v in &subjects.visitor_ids {
        add(format!("visitor:{}", hex::encode(v)));
    }
    for u in &subjects.user_ids {
        add(format!(
            "user:{}",
            UserIdSubject::new(u, &matomo.rules)?.receipt_hash
        ));
    }
    if let Some(mut lines) = subjects.open_lines()? {
        while let Some(u) = lines.next_id()? {
            add(format!(
                "user:{}",
                UserIdSubject::new(&u, &matomo.rules)?.receipt_hash
            ));
            from_user_file += 1;
        }
    }
    // An empty file is a broken export far more often than a request to erase nobody.
    for (file, ids, option) in [
        (
            &subjects.visit_ids_file,
            from_visit_file,
            "--visit-ids-file",
        ),
        (&subjects.user_ids_file, from_user_file, "--user-ids-file"),
    ] {
        if file.is_some() && ids == 0 {
            return Err(crate::error::usage(format!(
                "the ids file of {option} holds no id (only blank lines, or nothing): check the \
                 export that made it"
            )));
        }
    }
    let mut sites = a.sites.clone();
    sites.sort_unstable();
    sites.dedup();
    let mut h = Sha256::new();
    h.update(format!(
        "v2|{}|{}|{:?}|{:?}|{:?}|{:?}|{sum:032x}",
        matomo.database, matomo.prefix, sites, a.match_mode, a.since, a.until
    ));
    Ok(hex::encode(&h.finalize()[..16]))
}

#[derive(Serialize, Default)]
struct SubjectSummary {
    user_ids: u64,
    visitor_ids: usize,
    visit_ids: u64,
    /// Visit ids that named no visit (or none within --site, --since and --until).
    visit_ids_without_visits: u64,
    user_ids_without_visits: u64,
    /// Receipt hashes of user ids that matched no visit (first 1000).
    user_ids_without_visits_hashes: Vec<String>,
}

#[derive(Serialize, Default)]
struct NearSummary {
    /// False when the index lookup was used: near matches need a scan (--lookup scan).
    checked: bool,
    total: u64,
    erased: bool,
    list: Vec<NearMatch>,
}

#[derive(Serialize)]
struct EraseReport {
    command: &'static str,
    executed: bool,
    database: String,
    prefix: String,
    matomo_version: Option<String>,
    run_key: String,
    lookup: LookupDecision,
    subjects: SubjectSummary,
    /// False when the run stopped before it read the subjects (a stop file already there, a
    /// critical load): the subject counts are then not known yet.
    subjects_read: bool,
    visits: u64,
    /// Selected visits left alone because their user id or visitor id changed before their
    /// chunk locked them; a re-run selects them anew.
    visits_changed: u64,
    /// Chunks that committed while the connection broke: their invalidation rows inserted and
    /// archives dropped are not in the counts (the journal holds their visits, rows, site-days).
    chunks_with_details_lost: u32,
    visits_per_site: BTreeMap<u32, u64>,
    rows: BTreeMap<String, u64>,
    rows_total: u64,
    site_days: Vec<SiteDay>,
    invalidations_inserted: u64,
    /// Periods left without any visit whose archives were dropped, and how many archives.
    emptied_periods: Vec<invalidate::SitePeriod>,
    archives_dropped: u64,
    /// Why archives of emptied periods are kept, when they are.
    archives_kept: Option<String>,
    near_matches: NearSummary,
    untouched_tables: Vec<Untouched>,
    warnings: Vec<String>,
    chunks: u32,
    retries: u32,
    reconnects: u32,
    pauses: u64,
    replicas: String,
    stopped: Option<String>,
    earlier_runs: Option<Earlier>,
    /// Rows of erased visits removed after the chunks (they arrived after their chunk).
    swept_rows: u64,
    /// Site-days whose queued invalidation vanished unprocessed, queued again.
    requeued_site_days: Vec<SiteDay>,
    invalidation_notes: invalidate::Notes,
    verify: Option<VerifyReport>,
    elapsed_seconds: f64,
}

fn summarize_subjects(subjects: &Subjects, finder: &Finder<'_>) -> SubjectSummary {
    if let Some((n, line)) = finder.outer_whitespace() {
        tracing::warn!(
            "{n} ids in the user-ids file start or end with spaces (first on line {line}); they \
             are matched with the spaces, as Matomo stored what it was sent"
        );
    }
    SubjectSummary {
        user_ids: finder.user_ids_seen,
        visitor_ids: subjects.visitor_ids.len(),
        visit_ids: subjects.visit_ids.len() as u64 + finder.visit_ids_seen,
        visit_ids_without_visits: finder.visit_ids_unmatched,
        user_ids_without_visits: finder.unmatched_total,
        user_ids_without_visits_hashes: finder.unmatched.clone(),
    }
}

fn near_summary(decision: &LookupDecision, args: &SelectArgs, finder: &Finder<'_>) -> NearSummary {
    NearSummary {
        checked: decision.mode == "scan",
        total: finder.near_matches_total,
        erased: args.match_mode == crate::cli::MatchMode::Collation,
        list: finder.near_matches.clone(),
    }
}

/// `erase`: the plan without --execute, the erasure with it.
async fn erase_cmd(cli: &Cli, args: &EraseArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let Prepared {
        target,
        mut conn,
        matomo,
        subjects,
        decision,
        run_key,
    } = prepare(cli, &args.select).await?;
    tracing::info!(lookup = decision.mode, reason = %decision.reason, run_key = %run_key, "selection");

    let mut report = EraseReport {
        command: "erase",
        executed: args.execute,
        database: matomo.database.clone(),
        prefix: matomo.prefix.clone(),
        matomo_version: matomo.version.clone(),
        run_key: run_key.clone(),
        lookup: decision.clone(),
        subjects: SubjectSummary::default(),
        subjects_read: false,
        visits: 0,
        visits_changed: 0,
        chunks_with_details_lost: 0,
        visits_per_site: BTreeMap::new(),
        rows: matomo
            .log_tables
            .iter()
            .map(|t| (t.name.clone(), 0))
            .collect(),
        rows_total: 0,
        site_days: Vec::new(),
        invalidations_inserted: 0,
        emptied_periods: Vec::new(),
        archives_dropped: 0,
        archives_kept: args.keep_archives.then(|| "--keep-archives".to_string()),
        near_matches: NearSummary::default(),
        untouched_tables: matomo.untouched.clone(),
        warnings: matomo.warnings.clone(),
        chunks: 0,
        retries: 0,
        reconnects: 0,
        pauses: 0,
        replicas: String::new(),
        stopped: None,
        earlier_runs: None,
        swept_rows: 0,
        requeued_site_days: Vec::new(),
        invalidation_notes: invalidate::Notes::default(),
        verify: None,
        elapsed_seconds: 0.0,
    };
    let mut finder = Finder::new(&matomo, subjects.clone(), &decision);
    let mut site_days: BTreeSet<SiteDay> = BTreeSet::new();

    // Throttle options are checked (status variable names, replica URLs) before anything is
    // written, and in the plan too, so a plan that passes means the erase will start.
    let mut throttle = Throttle::new(&mut conn, &target, &args.throttle).await?;
    report.replicas = throttle.replica_note.clone();

    if !args.execute {
        let mut seen: HashSet<u64> = HashSet::new();
        while let Some(batch) = finder.next_batch(&mut conn).await? {
            let fresh: Vec<_> = batch
                .into_iter()
                .filter(|v| seen.insert(v.idvisit))
                .collect();
            for part in fresh.chunks(1000) {
                let ids: Vec<u64> = part.iter().map(|v| v.idvisit).collect();
                for (t, n) in plan::rows_total(&mut conn, &matomo, &ids).await? {
                    *report.rows.entry(t).or_default() += n;
                }
                site_days.extend(
                    invalidate::site_days(&mut conn, &matomo, part, &mut report.invalidation_notes)
                        .await?,
                );
                for v in part {
                    *report.visits_per_site.entry(v.idsite).or_default() += 1;
                }
                report.visits += part.len() as u64;
            }
        }
        report.site_days = site_days.into_iter().collect();
        report.rows_total = report.rows.values().sum();
        report.subjects = summarize_subjects(&subjects, &finder);
        report.subjects_read = true;
        report.near_matches = near_summary(&decision, &args.select, &finder);
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        connect::close(conn).await;
        return print_erase(cli, &report);
    }

    if let Some(why) = &matomo.hidden_tables {
        return Err(crate::error::connection(format!(
            "refusing to erase: {why}; erasing with a partial view would leave the subjects' \
             rows in the hidden tables and then report them gone"
        )));
    }
    if let Some(why) = &matomo.cannot_roll_back {
        return Err(crate::error::usage(format!("refusing to erase: {why}")));
    }

    // Nothing is written, not even the journal table, while the throttle says wait; the
    // privilege probes wait too, since they take the write locks of the log tables.
    let stop_flag = Arc::new(AtomicBool::new(false));
    spawn_signal_watch(stop_flag.clone());
    let mut progress = Progress::new(cli.quiet || cli.json);
    let mut gate = Gate {
        throttle: &mut throttle,
        stop_flag: &stop_flag,
        last_pause: String::new(),
        pauses: 0,
        paused_at: Instant::now(),
    };
    if let Some(why) = gate.wait(&mut conn, &progress).await? {
        progress.finish();
        report.pauses = gate.pauses;
        report.stopped = Some(why.clone());
        return stopped_part_way(cli, &mut report, started, &why);
    }

    // The writing session is made first, with its short lock wait limit, so that the checks
    // before the first chunk are not held up silently by another session's locks either.
    let mut writer = connect::open(&target).await?;
    erase::prepare_session(&mut writer, args.throttle.lock_wait_timeout).await?;
    erase::check_privileges(&mut writer, &matomo, args.throttle.max_retries).await?;
    erase::prepare_journal(&mut writer, &matomo).await?;
    let archives_kept = if args.keep_archives {
        Some("--keep-archives".to_string())
    } else {
        let refused = erase::archive_delete_refused(&mut writer, &matomo).await?;
        if let Some(why) = &refused {
            tracing::warn!("archives of periods left without visits are kept: {why}");
        }
        refused
    };
    report.archives_kept = archives_kept.clone();
    let earlier = journal::earlier(&mut writer, &matomo, &run_key).await?;
    if earlier.chunks > 0 {
        tracing::info!(
            chunks = earlier.chunks,
            visits = earlier.visits,
            "resuming: an earlier run of the same command committed chunks"
        );
        report.earlier_runs = Some(earlier.clone());
    }

    let mut eraser = Eraser {
        matomo: &matomo,
        target: target.clone(),
        conn: writer,
        run_key: run_key.clone(),
        run_id: hex::encode(rand::random::<[u8; 8]>()),
        next_chunk: 1,
        notes: invalidate::Notes::default(),
        max_retries: args.throttle.max_retries,
        lock_wait_timeout: args.throttle.lock_wait_timeout,
        drop_archives: archives_kept.is_none(),
        retries_total: 0,
        reconnects: 0,
    };

    let mut chunk_size = args.chunk_size.min(args.max_chunk_size) as usize;
    let mut buffer: VecDeque<Selected> = VecDeque::new();

    // Any error once chunks are committed ends the run as 'stopped part-way' with its receipt,
    // never as bad input: the database did change, and re-running finishes it.
    let mut stopped: Option<String> = None;
    let loop_result: anyhow::Result<()> = async {
        'outer: loop {
            if stop_flag.load(Ordering::SeqCst) {
                stopped = Some("signal received".into());
                break;
            }
            let batch = finder.next_batch(&mut conn).await?;
            let done = batch.is_none();
            if let Some(b) = batch {
                buffer.extend(b.iter().map(Selected::from));
            }
            while buffer.len() >= chunk_size || (done && !buffer.is_empty()) {
                let verdict = loop {
                    match gate.wait(&mut eraser.conn, &progress).await {
                        Ok(verdict) => break verdict,
                        Err(e) => {
                            tracing::warn!("throttle check failed: {e}; reconnecting");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            let _ = eraser.reconnect_pub().await;
                        }
                    }
                };
                if let Some(why) = verdict {
                    stopped = Some(why);
                    break 'outer;
                }
                let take = chunk_size.min(gate.throttle.chunk_cap()).min(buffer.len());
                let ids: Vec<Selected> = buffer.drain(..take).collect();
                let r = match eraser.erase_chunk(&ids).await {
                    Ok(r) => r,
                    Err(ChunkError::GaveUp(why)) => {
                        stopped = Some(why);
                        break 'outer;
                    }
                    Err(ChunkError::TooBig(limit)) => {
                        // Rolled back whole; the same visits go again in smaller chunks.
                        if take == 1 {
                            stopped = Some(format!(
                                "visit {} alone is over a Galera writeset limit ({}); raise \
                                 that limit for the erase (SET GLOBAL wsrep_max_ws_rows = 0 \
                                 lifts the row limit) and run the same command again",
                                ids[0].idvisit,
                                gate.throttle.writeset_limits()
                            ));
                            break 'outer;
                        }
                        tracing::warn!(
                            visits = take,
                            "chunk over a Galera writeset limit ({}); rolled back, retrying \
                             in smaller chunks",
                            gate.throttle.writeset_limits()
                        );
                        gate.throttle.chunk_too_big(take, limit);
                        if gate.throttle.chunk_cap() >= take {
                            // The throttle could not tell which limit it was: halve here.
                            chunk_size = (take / 2).max(1);
                        }
                        for id in ids.into_iter().rev() {
                            buffer.push_front(id);
                        }
                        continue;
                    }
                    Err(ChunkError::Other(e)) => return Err(e),
                };
                crash_point("after-commit");
                let rows: u64 = r.rows.values().sum();
                tracing::info!(
                    chunk = r.chunk,
                    visits = r.visits,
                    rows,
                    retries = r.retries,
                    ms = r.elapsed.as_millis() as u64,
                    chunk_size,
                    "chunk committed"
                );
                report.chunks += u32::from(r.visits > 0);
                report.visits += r.visits;
                report.visits_changed += r.changed.len() as u64;
                report.chunks_with_details_lost += u32::from(r.details_lost);
                for (site, n) in &r.visits_per_site {
                    *report.visits_per_site.entry(*site).or_default() += n;
                }
                for (t, n) in &r.rows {
                    *report.rows.entry(t.clone()).or_default() += n;
                }
                report.invalidations_inserted += r.invalidations_inserted;
                report.archives_dropped += r.archives_dropped;
                report
                    .emptied_periods
                    .extend(r.emptied_periods.iter().copied());
                site_days.extend(r.site_days.iter().copied());
                progress.chunk_done(r.visits, rows, chunk_size);
                gate.throttle.chunk_committed(r.visits, rows);
                chunk_size = next_chunk_size(args, chunk_size, take, r.visits, r.elapsed);
                if !args.throttle.sleep.is_zero() {
                    tokio::time::sleep(args.throttle.sleep).await;
                }
            }
            if done {
                break;
            }
        }
        Ok(())
    }
    .await;
    report.pauses = gate.pauses;
    if let Err(e) = loop_result {
        if report.chunks == 0 {
            progress.finish();
            return Err(e);
        }
        stopped = Some(format!(
            "error after {} committed chunks: {e:#}",
            report.chunks
        ));
    }
    progress.finish();
    report.retries = eraser.retries_total;
    report.reconnects = eraser.reconnects;
    report.site_days = site_days.into_iter().collect();
    report.rows_total = report.rows.values().sum();
    report.subjects = summarize_subjects(&subjects, &finder);
    report.subjects_read = true;
    report.near_matches = near_summary(&decision, &args.select, &finder);
    if stopped.is_none() && report.visits_changed > 0 {
        stopped = Some(format!(
            "{} selected visits changed their user id or visitor id before their chunk locked \
             them (the tracker re-attributed them) and were left alone; a re-run selects them \
             anew",
            report.visits_changed
        ));
    }
    report.stopped = stopped.clone();
    report.invalidation_notes = eraser.notes.clone();

    if let Some(why) = stopped {
        return stopped_part_way(cli, &mut report, started, &why);
    }

    let mut check_finder = Finder::new(&matomo, subjects.clone(), &decision);
    let mut v = verify::verify(&mut conn, &matomo, &run_key, &mut check_finder).await?;
    if !v.leftovers.is_empty() || !v.site_days_missing.is_empty() {
        // Rows that reached an erased visit after its chunk, or an invalidation that vanished
        // unprocessed: removed and re-queued, then proven again.
        let (rows, requeued) = eraser.sweep(&v.leftovers, &v.site_days_missing).await?;
        report.swept_rows = rows;
        report.requeued_site_days = v.site_days_missing.clone();
        report.invalidations_inserted += requeued;
        tracing::warn!(
            rows,
            site_days = requeued,
            "repaired an earlier erase: removed rows that reached erased visits after their \
             chunk, queued again invalidations that vanished unprocessed"
        );
        let mut again = Finder::new(&matomo, subjects.clone(), &decision);
        v = verify::verify(&mut conn, &matomo, &run_key, &mut again).await?;
    }
    let ok = v.ok;
    let problems = v.problems.join("; ");
    report.verify = Some(v);
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    print_erase(cli, &report)?;
    if !ok {
        return Err(Failure::VerifyFailed(format!(
            "verification after the erase failed: {problems}"
        ))
        .into());
    }
    if report.visits == 0 && report.earlier_runs.is_none() {
        tracing::warn!("nothing to erase: no visit of the subjects was found");
    }
    Ok(())
}

/// Adapts the chunk to the time target from the `taken` visits of the last chunk: grows at
/// most twofold, shrinks at once to what fits, and to half that when a chunk ran over twice the
/// target. Without a target the size stays `current`. Caps at --max-chunk-size; the throttle
/// caps each chunk further on Galera, so a chunk it capped does not become the new size.
fn next_chunk_size(
    args: &EraseArgs,
    current: usize,
    taken: usize,
    visits: u64,
    elapsed: Duration,
) -> usize {
    let max = args.max_chunk_size as usize;
    let mut next = current.max(1);
    let target = args.chunk_time.as_secs_f64();
    let took = elapsed.as_secs_f64();
    if target > 0.0 && visits > 0 && took > 0.0 {
        let taken = taken.max(1);
        let fits = (taken as f64 * target / took).max(1.0);
        next = if took > 2.0 * target {
            (fits / 2.0) as usize
        } else {
            (fits as usize).min(taken * 2)
        };
    }
    next.clamp(1, max)
}

/// Prints the receipt of a run that stopped before its end and returns the error that exits
/// with "stopped part-way".
fn stopped_part_way(
    cli: &Cli,
    report: &mut EraseReport,
    started: Instant,
    why: &str,
) -> anyhow::Result<()> {
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    print_erase(cli, report)?;
    Err(Failure::Stopped(format!(
        "stopped part-way ({why}) after {} visits in {} chunks; every finished chunk is \
         committed; {}",
        report.visits,
        report.chunks,
        finish_hint(why)
    ))
    .into())
}

/// What to do after a stop: run again, and first remove a stop file, since it stops the next
/// run at once too.
fn finish_hint(why: &str) -> &'static str {
    if why.starts_with("stop-file") {
        "remove the stop file, then run the same command again to finish"
    } else {
        "run the same command again to finish"
    }
}

/// Holds the run between chunks while the throttle says pause, and tells when it says stop.
struct Gate<'t> {
    throttle: &'t mut Throttle,
    stop_flag: &'t AtomicBool,
    /// The reason of the pause under way (empty when going).
    last_pause: String,
    /// Stretches of waiting, however their reasons changed.
    pauses: u64,
    /// When the pause under way began.
    paused_at: Instant,
}

impl Gate<'_> {
    /// Waits until the throttle says go (None) or stop (the reason); a failed check is the
    /// caller's to handle.
    async fn wait(
        &mut self,
        conn: &mut MySqlConnection,
        progress: &Progress,
    ) -> anyhow::Result<Option<String>> {
        loop {
            if self.stop_flag.load(Ordering::SeqCst) {
                return Ok(Some("signal received".into()));
            }
            match self.throttle.check(conn).await? {
                Verdict::Go => break,
                Verdict::Stop(why) => return Ok(Some(why)),
                Verdict::Pause(why) => {
                    if self.last_pause.is_empty() {
                        self.pauses += 1;
                        self.paused_at = Instant::now();
                    }
                    if why != self.last_pause {
                        tracing::warn!("pausing: {why}");
                        self.last_pause = why.clone();
                    }
                    progress.paused(&why);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if !self.last_pause.is_empty() {
            // At the level of the pause, so that whoever saw the pause sees it end.
            tracing::warn!(
                "resuming after {:.1} s paused (last reason: {})",
                self.paused_at.elapsed().as_secs_f64(),
                self.last_pause
            );
            self.last_pause.clear();
        }
        Ok(None)
    }
}

fn spawn_signal_watch(flag: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::warn!("signal received: finishing the current chunk, then stopping");
        flag.store(true, Ordering::SeqCst);
    });
}

fn print_erase(cli: &Cli, r: &EraseReport) -> anyhow::Result<()> {
    if cli.json {
        return print_json(r);
    }
    let mut t = String::new();
    let title = if r.stopped.is_some() {
        "STOPPED PART-WAY (every finished chunk is committed; run the same command again)"
    } else if r.executed {
        "ERASED"
    } else {
        "PLAN (nothing written; add --execute to erase)"
    };
    let _ = writeln!(t, "{title}");
    if r.visits == 0 && r.stopped.is_some() {
        let _ = writeln!(t, "nothing erased: the run stopped before its first chunk");
    } else if r.visits == 0 {
        let _ = writeln!(
            t,
            "nothing to do: no visit of these subjects was found{}",
            if r.earlier_runs.is_some() {
                " (an earlier run of this command erased them)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        t,
        "database {} prefix {:?} matomo {}",
        r.database,
        r.prefix,
        r.matomo_version.as_deref().unwrap_or("?")
    );
    let _ = writeln!(t, "lookup   {}: {}", r.lookup.mode, r.lookup.reason);
    // After an earlier run of the same command, ids whose visits it erased have none left.
    let without = if r.earlier_runs.is_some() {
        "with no visit left"
    } else {
        "without visits"
    };
    if r.subjects_read {
        let _ = writeln!(
            t,
            "subjects {} user ids ({} {without}), {} visitor ids, {} visit ids{}",
            r.subjects.user_ids,
            r.subjects.user_ids_without_visits,
            r.subjects.visitor_ids,
            r.subjects.visit_ids,
            match r.subjects.visit_ids_without_visits {
                0 => String::new(),
                n => format!(" ({n} naming no visit)"),
            }
        );
    } else {
        let _ = writeln!(
            t,
            "subjects not read yet: the run stopped before it selected visits"
        );
    }
    let hashes = &r.subjects.user_ids_without_visits_hashes;
    if !hashes.is_empty() {
        let shown: Vec<&str> = hashes.iter().take(20).map(String::as_str).collect();
        let _ = writeln!(
            t,
            "  user id hashes {without}: {}{}",
            shown.join(" "),
            if r.subjects.user_ids_without_visits > 20 {
                " ..."
            } else {
                ""
            }
        );
    }
    let per_site: Vec<String> = r
        .visits_per_site
        .iter()
        .map(|(s, n)| format!("site {s}: {n}"))
        .collect();
    let _ = writeln!(
        t,
        "visits   {}{}",
        r.visits,
        if per_site.is_empty() {
            String::new()
        } else {
            format!(" ({})", per_site.join(", "))
        }
    );
    if r.visits_changed > 0 {
        let _ = writeln!(
            t,
            "  {} more left alone: their user id or visitor id changed after selection",
            r.visits_changed
        );
    }
    if r.chunks_with_details_lost > 0 {
        let _ = writeln!(
            t,
            "  {} chunks committed as the connection broke: their invalidation rows and dropped \
             archives are not counted below (verify checks the site-days)",
            r.chunks_with_details_lost
        );
    }
    let _ = writeln!(t, "rows     {} in all", r.rows_total);
    for (table, n) in &r.rows {
        let _ = writeln!(t, "  {table:<28} {n}");
    }
    let _ = writeln!(t, "site-days to invalidate: {}", r.site_days.len());
    for d in &r.site_days {
        let _ = writeln!(t, "  site {} {}", d.idsite, d.date);
    }
    if !r.executed && r.visits > 0 {
        let _ = writeln!(
            t,
            "archives: a day, week, month or year of a site that the erase leaves without any \
             visit loses its archives in the chunk{}",
            if r.archives_kept.is_some() {
                " (not here: --keep-archives)"
            } else {
                " (--keep-archives keeps them)"
            }
        );
    }
    if r.near_matches.checked {
        let _ = writeln!(
            t,
            "near matches (equal only under the collation): {}{}",
            r.near_matches.total,
            if r.near_matches.erased {
                ", erased (--match collation)"
            } else {
                ", NOT erased"
            }
        );
        for n in &r.near_matches.list {
            let _ = writeln!(
                t,
                "  site {} visit {}: differs by {} (user id hash {}{})",
                n.idsite,
                n.idvisit,
                n.differs_by,
                n.user_id_hash,
                n.near_subject_hash
                    .as_deref()
                    .map(|h| format!(", near subject {h}"))
                    .unwrap_or_default()
            );
        }
    } else if r.lookup.mode == "index" {
        let _ = writeln!(
            t,
            "near matches: not checked by the index lookup (--lookup scan lists them)"
        );
    }
    let n = &r.invalidation_notes;
    if !n.sites_missing.is_empty() {
        let _ = writeln!(t, "note: sites {:?} are no longer in the site table: their visits are erased, no report is queued", n.sites_missing);
    }
    if !n.sites_with_unknown_timezone.is_empty() {
        let _ = writeln!(t, "note: sites {:?} have a timezone matomo-erase does not know: the UTC date and the days either side are queued", n.sites_with_unknown_timezone);
    }
    if n.visits_without_times > 0 {
        let _ = writeln!(
            t,
            "note: {} visits have zero dates: only their actions' days are queued",
            n.visits_without_times
        );
    }
    if !r.untouched_tables.is_empty() {
        let names: Vec<&str> = r.untouched_tables.iter().map(|u| u.name.as_str()).collect();
        let _ = writeln!(t, "not touched: {} (see inspect)", names.join(", "));
    }
    write_warnings(&mut t, &r.warnings);
    if r.executed {
        let _ = writeln!(
            t,
            "chunks {} retries {} reconnects {} pauses {}; invalidation rows inserted {}",
            r.chunks, r.retries, r.reconnects, r.pauses, r.invalidations_inserted
        );
        let _ = writeln!(t, "replicas: {}", r.replicas);
        if !r.emptied_periods.is_empty() {
            let list: Vec<String> = r
                .emptied_periods
                .iter()
                .take(20)
                .map(|p| format!("site {} {} {}", p.idsite, period_name(p.period), p.date1))
                .collect();
            let _ = writeln!(
                t,
                "left without visits, archives dropped ({} archives): {}{}",
                r.archives_dropped,
                list.join(", "),
                if r.emptied_periods.len() > 20 {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        if let Some(why) = &r.archives_kept {
            let _ = writeln!(
                t,
                "archives of periods left without visits: kept ({why}); Matomo may keep showing \
                 their old reports"
            );
        }
        if let Some(e) = &r.earlier_runs {
            let _ = writeln!(
                t,
                "earlier runs of this command: {} chunks, {} visits",
                e.chunks, e.visits
            );
        }
        if let Some(v) = &r.verify {
            let _ = writeln!(
                t,
                "verify: {}",
                if v.ok {
                    "OK: nothing of the subjects remains; every site-day is queued".to_string()
                } else {
                    format!("FAILED: {}", v.problems.join("; "))
                }
            );
        }
        if let Some(s) = &r.stopped {
            let _ = writeln!(t, "STOPPED: {s}");
        }
        let _ = writeln!(
            t,
            "next: {}",
            match &r.stopped {
                Some(why) => finish_hint(why),
                None =>
                    "run Matomo's `./console core:archive` to re-process the invalidated reports",
            }
        );
        if r.swept_rows > 0 {
            let _ = writeln!(
                t,
                "swept {} rows that reached erased visits after their chunk",
                r.swept_rows
            );
        }
        if !r.requeued_site_days.is_empty() {
            let list: Vec<String> = r
                .requeued_site_days
                .iter()
                .take(20)
                .map(|d| format!("site {} {}", d.idsite, d.date))
                .collect();
            let _ = writeln!(
                t,
                "queued again {} site-days whose invalidation vanished unprocessed: {}",
                r.requeued_site_days.len(),
                list.join(", ")
            );
        }
    }
    let _ = writeln!(t, "run key {} ({:.2}s)", r.run_key, r.elapsed_seconds);
    print_text(&t)
}

/// What to do when a verification fails.
const REPAIR_HINT: &str = "run the erase command for these subjects with --execute (again, if \
     it ran before): it erases what is left, removes rows that reached erased visits and queues \
     again what vanished unprocessed";

/// `find`: the visits of the subjects with their times and rows per log table.
async fn find_cmd(cli: &Cli, args: &SelectArgs) -> anyhow::Result<()> {
    let Prepared {
        mut conn,
        matomo,
        subjects,
        decision,
        ..
    } = prepare(cli, args).await?;
    let mut finder = Finder::new(&matomo, subjects.clone(), &decision);

    #[derive(Serialize)]
    struct FoundVisit {
        idsite: u32,
        idvisit: u64,
        first_action_utc: String,
        last_action_utc: String,
        first_action_local: String,
        last_action_local: String,
        rows: BTreeMap<String, u64>,
    }
    let mut visits = Vec::new();
    let mut seen = HashSet::new();
    let fmt = |d: chrono::NaiveDateTime| d.format("%Y-%m-%d %H:%M:%S").to_string();
    while let Some(batch) = finder.next_batch(&mut conn).await? {
        let fresh: Vec<_> = batch
            .into_iter()
            .filter(|v| seen.insert(v.idvisit))
            .collect();
        for part in fresh.chunks(1000) {
            let ids: Vec<u64> = part.iter().map(|v| v.idvisit).collect();
            let counts = plan::rows_per_visit(&mut conn, &matomo, &ids).await?;
            for v in part {
                let tz = matomo.site_tz(v.idsite);
                let local = |d| {
                    tz.map(|z| fmt(z.local_time(d)))
                        .unwrap_or_else(|| "?".into())
                };
                visits.push(FoundVisit {
                    idsite: v.idsite,
                    idvisit: v.idvisit,
                    first_action_utc: v.first_action.map(fmt).unwrap_or_else(|| "?".into()),
                    last_action_utc: v.last_action.map(fmt).unwrap_or_else(|| "?".into()),
                    first_action_local: v.first_action.map(local).unwrap_or_else(|| "?".into()),
                    last_action_local: v.last_action.map(local).unwrap_or_else(|| "?".into()),
                    rows: counts
                        .iter()
                        .map(|(t, m)| (t.clone(), m.get(&v.idvisit).copied().unwrap_or(0)))
                        .collect(),
                });
            }
        }
    }
    visits.sort_by_key(|v| (v.idsite, v.idvisit));
    connect::close(conn).await;

    if cli.json {
        #[derive(Serialize)]
        struct Doc<T: Serialize> {
            command: &'static str,
            lookup: LookupDecision,
            subjects: SubjectSummary,
            near_matches: NearSummary,
            warnings: Vec<String>,
            visits: Vec<T>,
        }
        return print_json(&Doc {
            command: "find",
            lookup: decision.clone(),
            subjects: summarize_subjects(&subjects, &finder),
            near_matches: near_summary(&decision, args, &finder),
            warnings: matomo.warnings.clone(),
            visits,
        });
    }
    let mut t = String::new();
    let _ = writeln!(t, "lookup {}: {}", decision.mode, decision.reason);
    let _ = writeln!(t, "{} visits", visits.len());
    let _ = writeln!(
        t,
        "{:>6} {:>10}  {:<19}  {:<19}  {:<19}  {:<19}  rows",
        "site",
        "idvisit",
        "first action UTC",
        "last action UTC",
        "first action local",
        "last action local"
    );
    for v in &visits {
        let rows: Vec<String> = v
            .rows
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        let _ = writeln!(
            t,
            "{:>6} {:>10}  {:<19}  {:<19}  {:<19}  {:<19}  {}",
            v.idsite,
            v.idvisit,
            v.first_action_utc,
            v.last_action_utc,
            v.first_action_local,
            v.last_action_local,
            rows.join(" ")
        );
    }
    if finder.near_matches_total > 0 {
        let _ = writeln!(
            t,
            "{} near matches (equal only under the collation), not included:",
            finder.near_matches_total
        );
        for n in &finder.near_matches {
            let _ = writeln!(
                t,
                "  site {} visit {}: differs by {} (user id hash {})",
                n.idsite, n.idvisit, n.differs_by, n.user_id_hash
            );
        }
    }
    if finder.unmatched_total > 0 {
        let _ = writeln!(t, "{} user ids matched no visit", finder.unmatched_total);
    }
    if visits.is_empty() {
        let _ = writeln!(t, "no visit of these subjects was found");
    }
    write_warnings(&mut t, &matomo.warnings);
    print_text(&t)
}

/// `verify`: the proof for an earlier erase of the same subjects.
async fn verify_cmd(cli: &Cli, args: &SelectArgs) -> anyhow::Result<()> {
    let Prepared {
        mut conn,
        matomo,
        subjects,
        decision,
        run_key,
        ..
    } = prepare(cli, args).await?;
    if let Some(why) = &matomo.hidden_tables {
        return Err(crate::error::connection(format!(
            "cannot verify: {why}; a table this user cannot see cannot be checked"
        )));
    }
    let mut finder = Finder::new(&matomo, subjects.clone(), &decision);
    let v = verify::verify(&mut conn, &matomo, &run_key, &mut finder).await?;
    connect::close(conn).await;
    let ok = v.ok;
    let problems = v.problems.join("; ");
    if cli.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            command: &'static str,
            run_key: &'a str,
            #[serde(flatten)]
            verify: &'a VerifyReport,
            warnings: &'a [String],
        }
        print_json(&Doc {
            command: "verify",
            run_key: &run_key,
            verify: &v,
            warnings: &matomo.warnings,
        })?;
    } else {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "run key {run_key}: {} chunks, {} erased visits checked",
            v.chunks_checked, v.visits_checked
        );
        if v.chunks_checked == 0 {
            let _ = writeln!(t, "no erase of exactly these subjects and options is in the journal; only the subjects' remaining visits were checked");
        }
        let _ = writeln!(
            t,
            "visits of the subjects remaining: {}",
            v.visits_remaining
        );
        let _ = writeln!(
            t,
            "site-days: {} checked, {} processed by core:archive since, {} missing",
            v.site_days_checked,
            v.site_days_processed,
            v.site_days_missing.len()
        );
        let _ = writeln!(
            t,
            "{}",
            if ok {
                "OK".to_string()
            } else {
                format!("FAILED: {problems}\nnext: {REPAIR_HINT}")
            }
        );
        write_warnings(&mut t, &matomo.warnings);
        print_text(&t)?;
    }
    if !ok {
        return Err(Failure::VerifyFailed(format!(
            "verification failed: {problems}; {REPAIR_HINT}"
        ))
        .into());
    }
    let _ = receipt_hash;
    Ok(())
}

/// The warnings of `inspect`, one `warning:` line each, in every text report.
fn write_warnings(t: &mut String, warnings: &[String]) {
    for w in warnings {
        let _ = writeln!(t, "warning: {w}");
    }
}

fn period_name(period: u8) -> &'static str {
    match period {
        1 => "day",
        2 => "week",
        3 => "month",
        4 => "year",
        _ => "range",
    }
}
