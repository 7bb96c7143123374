//! Faults: kill -9 at any point then a re-run, concurrent tracker writes, lock waits.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A user-ids file with the first `n` user ids of the fixture (sorted).
fn ids_file(db: &ScratchDb, n: usize, tag: &str) -> std::path::PathBuf {
    let ids = db.sql(&format!(
        "SELECT DISTINCT user_id FROM matomo_log_visit WHERE user_id IS NOT NULL ORDER BY user_id LIMIT {n}"
    ));
    let path = std::env::temp_dir().join(format!("me_{tag}_{}.txt", std::process::id()));
    std::fs::write(&path, ids).unwrap();
    path
}

fn erase_args(url: &str, file: &std::path::Path) -> Vec<String> {
    [
        "erase",
        "--database-url",
        url,
        "--user-ids-file",
        file.to_str().unwrap(),
        "--execute",
        "--json",
        "--quiet",
        "--chunk-size",
        "4",
        "--chunk-time",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Another session running `sql` (a lock held for a while), given half a second to take it.
fn hold(db: &ScratchDb, sql: &str) -> std::process::Child {
    let holder = Command::new("mariadb")
        .args(["-h", HOST, "-P", PORT, "-uroot", &db.name, "-e", sql])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    holder
}

/// Erasing alice (12 visits) in one chunk with a lock wait limit of `wait` seconds, plus
/// `extra`.
fn alice_args(db: &ScratchDb, wait: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "erase",
        "--database-url",
        &db.url(),
        "--user-id",
        "alice.peer@example.org",
        "--execute",
        "--json",
        "--lock-wait-timeout",
        wait,
        "--chunk-size",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A tiny deterministic generator, so the kill schedule is the same on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

#[test]
fn kill_at_any_point_then_rerun_equals_one_clean_run() {
    let template = ScratchDb::with_fixture("killtpl", THREE_SITES);
    let file = ids_file(&template, 250, "kill");

    let clean = ScratchDb::copy_of("killclean", &template);
    let started = Instant::now();
    let o = Command::new(bin())
        .args(erase_args(&clean.url(), &file))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let clean_ms = started.elapsed().as_millis() as u64;
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let visits = doc["visits"].as_u64().unwrap();
    let chunks = doc["chunks"].as_u64().unwrap();
    assert!(visits > 300, "a large erase: {visits} visits");
    let expected = clean.erase_state("matomo_");
    drop(clean);

    let mut rng = Lcg(20261203);
    let mut kills = 0;
    let mut points = Vec::new();
    for run in 0..24 {
        let mut db = ScratchDb::copy_of("killrun", &template);
        let mut args = erase_args(&db.url(), &file);
        // Even runs: SIGKILL after a seeded delay; odd runs: abort at a seeded chunk, just
        // before or just after its commit.
        if run % 2 == 0 {
            // A run can be faster than the clean one on a quieter machine: a run that ends
            // before its kill is repeated with a shorter delay, so every run is interrupted.
            let mut limit = clean_ms.max(100);
            loop {
                let delay = 20 + rng.next(limit);
                let mut child = Command::new(bin())
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(delay));
                let killed = child.try_wait().unwrap().is_none();
                if killed {
                    child.kill().unwrap();
                }
                child.wait().unwrap();
                if killed {
                    kills += 1;
                    points.push(format!("kill-9@{delay}ms"));
                    break;
                }
                // It finished: start over from the same data.
                assert!(limit > 20, "run {run}: could not interrupt a run");
                limit /= 2;
                let fresh = ScratchDb::copy_of("killrun", &template);
                std::mem::drop(std::mem::replace(&mut db, fresh));
                args = erase_args(&db.url(), &file);
            }
        } else {
            let chunk = 1 + rng.next(chunks.saturating_sub(1).max(1));
            let point = if rng.next(2) == 0 {
                "before-commit"
            } else {
                "after-commit"
            };
            let o = Command::new(bin())
                .args(&args)
                .env("MATOMO_ERASE_CRASH_AT", format!("{point}:{chunk}"))
                .output()
                .unwrap();
            assert!(
                !o.status.success(),
                "run {run}: the crash point {point}:{chunk} was reached"
            );
            kills += 1;
            points.push(format!("{point}:{chunk}"));
        }
        // Every visit is either whole or gone in all four tables: no half chunk.
        let partial = db.count(
            "SELECT COUNT(*) FROM matomo_log_link_visit_action a LEFT JOIN matomo_log_visit v \
             ON v.idvisit = a.idvisit WHERE v.idvisit IS NULL",
        );
        let orphan_conv = db.count(
            "SELECT COUNT(*) FROM matomo_log_conversion c LEFT JOIN matomo_log_visit v \
             ON v.idvisit = c.idvisit WHERE v.idvisit IS NULL",
        );
        let before_fixture = template.count(
            "SELECT COUNT(*) FROM matomo_log_link_visit_action a LEFT JOIN matomo_log_visit v \
             ON v.idvisit = a.idvisit WHERE v.idvisit IS NULL",
        );
        assert_eq!(
            partial, before_fixture,
            "run {run}: actions left without their visit"
        );
        assert_eq!(
            orphan_conv, 0,
            "run {run}: conversions left without their visit"
        );

        let o = Command::new(bin()).args(&args).output().unwrap();
        assert!(o.status.success(), "re-run {run} failed: {}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["verify"]["ok"], true);
        let earlier = doc["earlier_runs"]["visits"].as_u64().unwrap_or(0);
        assert_eq!(
            earlier + doc["visits"].as_u64().unwrap(),
            visits,
            "run {run} ({}): the two runs together erased every visit once",
            points[run]
        );
        assert_eq!(
            db.erase_state("matomo_"),
            expected,
            "run {run} ({}) differs from a clean run",
            points[run]
        );
    }
    eprintln!(
        "kill schedule: {} runs, {kills} interrupted: {}",
        points.len(),
        points.join(", ")
    );
    assert!(
        kills >= 20,
        "at least 20 runs were interrupted, got {kills}"
    );
    std::fs::remove_file(file).ok();
}

#[test]
fn concurrent_tracker_writes_survive_the_erase() {
    let db = ScratchDb::with_fixture("concurrent", THREE_SITES);
    let file = ids_file(&db, 400, "conc");
    let subject_visits = db.count(&format!(
        "SELECT COUNT(*) FROM matomo_log_visit WHERE user_id IN ({})",
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let max_visit = db.count("SELECT MAX(idvisit) FROM matomo_log_visit");
    let others: Vec<u64> = db
        .sql(
            "SELECT idvisit FROM matomo_log_visit WHERE user_id IS NULL ORDER BY idvisit LIMIT 200",
        )
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();

    // The "tracker": one client session inserting new visits with actions, and actions to
    // other people's existing visits, in autocommit, as fast as it can.
    let mut tracker = Command::new("mariadb")
        .args(["-h", HOST, "-P", PORT, "-uroot", &db.name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = tracker.stdin.take().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let v = max_visit + 1 + n;
            let other = others[(n as usize) % others.len()];
            let sql = format!(
                "INSERT INTO matomo_log_visit (idvisit, idsite, idvisitor, visit_last_action_time, config_id, \
                 location_ip, user_id, visit_first_action_time, visit_total_time) VALUES ({v}, 1, X'AAAAAAAAAAAAAAAA', \
                 UTC_TIMESTAMP(), X'00', X'00', 'tracker-new', UTC_TIMESTAMP(), 0);\n\
                 INSERT INTO matomo_log_link_visit_action (idsite, idvisitor, idvisit, server_time, idaction_url) VALUES \
                 (1, X'AAAAAAAAAAAAAAAA', {v}, UTC_TIMESTAMP(), 999999), (1, X'AAAAAAAAAAAAAAAA', {v}, UTC_TIMESTAMP(), 999999);\n\
                 INSERT INTO matomo_log_link_visit_action (idsite, idvisitor, idvisit, server_time, idaction_url) \
                 SELECT idsite, idvisitor, idvisit, UTC_TIMESTAMP(), 999999 FROM matomo_log_visit WHERE idvisit = {other};\n"
            );
            if stdin.write_all(sql.as_bytes()).is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    std::thread::sleep(Duration::from_millis(300));
    let o = Command::new(bin())
        .args([
            "erase",
            "--database-url",
            &db.url(),
            "--user-ids-file",
            file.to_str().unwrap(),
            "--execute",
            "--json",
            "--quiet",
            "--chunk-size",
            "3",
            "--chunk-time",
            "0",
        ])
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    assert!(tracker.wait().unwrap().success());
    assert!(o.status.success(), "erase failed: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["visits"].as_u64().unwrap(), subject_visits);
    assert_eq!(doc["verify"]["ok"], true);

    let new_visits =
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'tracker-new'");
    let new_actions =
        db.count("SELECT COUNT(*) FROM matomo_log_link_visit_action WHERE idaction_url = 999999");
    assert_eq!(
        new_visits, rounds,
        "every visit the tracker inserted survives"
    );
    assert_eq!(
        new_actions,
        rounds * 3,
        "every action the tracker inserted survives"
    );
    eprintln!(
        "concurrency: {rounds} tracker rounds ({} rows inserted) during the erase, all survived; \
         erase: {} visits, {} rows, {} chunks, {} retries",
        rounds * 4,
        doc["visits"],
        doc["rows_total"],
        doc["chunks"],
        doc["retries"]
    );
    std::fs::remove_file(file).ok();
}

#[test]
fn a_locked_row_makes_the_chunk_retry_and_never_half_commit() {
    let db = ScratchDb::with_fixture("lockwait", THREE_SITES);
    // Another session holds a lock on one action row of alice's for 4 s.
    let holder = hold(
        &db,
        "BEGIN; SELECT idlink_va FROM matomo_log_link_visit_action WHERE idvisit = 2917 \
         FOR UPDATE; SELECT SLEEP(4); COMMIT;",
    );
    let eraser = Command::new(bin())
        .args(alice_args(&db, "1", &["--quiet"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the lock is held, nothing of the chunk is visible as deleted: alice's
    // conversions (deleted before the locked table) are all still there.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_conversion c JOIN matomo_log_visit v USING (idvisit) WHERE v.user_id = 'alice.peer@example.org'"),
        5
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        12
    );
    let out = eraser.wait_with_output().unwrap();
    holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["retries"].as_u64().unwrap() >= 1,
        "the chunk was retried: {doc}"
    );
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows"]["log_link_visit_action"], 78);
    assert_eq!(doc["rows"]["log_conversion"], 5);
    assert_eq!(doc["chunks"], 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        0
    );
}

#[test]
fn a_deadlock_rolls_the_chunk_back_whole_and_the_retry_finishes() {
    let db = ScratchDb::with_fixture("deadlock", THREE_SITES);
    db.sql("CREATE TABLE busy (i INT PRIMARY KEY)");
    // Another transaction that has written much (so InnoDB picks the chunk as the deadlock's
    // victim) takes one of alice's action rows, waits until the chunk holds alice's visits and
    // waits for that action row, then asks for one of those visits: a cycle.
    let holder = hold(
        &db,
        "BEGIN; INSERT INTO busy SELECT seq FROM seq_1_to_20000; \
         SELECT idlink_va FROM matomo_log_link_visit_action WHERE idvisit = 2917 FOR UPDATE; \
         SELECT SLEEP(2); \
         SELECT idvisit FROM matomo_log_visit WHERE idvisit = 2917 FOR UPDATE; \
         SELECT SLEEP(1); COMMIT;",
    );
    let out = run(&alice_args(&db, "20", &[]));
    let held = holder.wait_with_output().unwrap();
    assert!(
        held.status.success(),
        "the other transaction was not the victim: {}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let log = stderr(&out);
    assert!(
        log.lines()
            .any(|l| l.contains("chunk rolled back (") && l.contains("Deadlock")),
        "the deadlock is logged as a rolled back chunk:\n{log}"
    );
    assert!(doc["retries"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["chunks"], 1);
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows"]["log_link_visit_action"], 78);
    assert_eq!(doc["rows"]["log_conversion"], 5);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(db.count("SELECT COUNT(*) FROM busy"), 20000);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        0
    );
}

#[test]
fn a_table_lock_makes_the_chunk_retry_instead_of_waiting_for_it() {
    let db = ScratchDb::with_fixture("mdlwait", THREE_SITES);
    // A DBA's LOCK TABLES (a metadata lock) on a log table for 4 s: without a session limit on
    // metadata lock waits the chunk would sit behind it silently.
    let holder = hold(
        &db,
        "LOCK TABLES matomo_log_link_visit_action READ; SELECT SLEEP(4); UNLOCK TABLES;",
    );
    let out = run(&alice_args(&db, "1", &[]));
    holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The lock meets either the privilege check before the first chunk or the chunk itself;
    // each wait ends after 1 s and is said, then tried again.
    let waits = stderr(&out)
        .lines()
        .filter(|l| {
            l.contains("another session's lock holds up the privilege check; trying again")
                || l.contains("chunk rolled back (")
        })
        .count();
    assert!(waits >= 2, "each 1 s wait is logged:\n{}", stderr(&out));
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows"]["log_link_visit_action"], 78);
    assert_eq!(doc["chunks"], 1);
}

#[test]
fn too_many_lock_waits_stop_part_way_and_a_rerun_finishes() {
    let db = ScratchDb::with_fixture("lockstop", THREE_SITES);
    let holder = hold(
        &db,
        "BEGIN; SELECT * FROM matomo_log_link_visit_action WHERE idvisit = 2917 FOR UPDATE; \
         SELECT SLEEP(6); COMMIT;",
    );
    let args = alice_args(&db, "1", &["--quiet", "--max-retries", "1"]);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("run the same command again"));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        12
    );
    holder.wait_with_output().unwrap();
    let doc = run_json(&args, 0);
    assert_eq!(doc["visits"], 12);
}

#[test]
fn a_connection_killed_mid_chunk_is_reopened_and_the_chunk_retried() {
    let db = ScratchDb::with_fixture("lostconn", THREE_SITES);
    // Hold a lock so the chunk is caught in the middle of its deletes.
    let holder = hold(
        &db,
        "BEGIN; SELECT * FROM matomo_log_link_visit_action WHERE idvisit = 2917 FOR UPDATE; \
         SELECT SLEEP(3); COMMIT;",
    );
    let eraser = Command::new(bin())
        .args(alice_args(&db, "20", &["--quiet"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Find the erasing session waiting in its DELETE and kill its connection.
    let mut killed = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let id = mariadb(
            None,
            &format!(
                "SELECT id FROM information_schema.processlist WHERE db = '{}' \
                 AND info LIKE 'DELETE FROM%log_link_visit_action%' LIMIT 1",
                db.name
            ),
        );
        if !id.trim().is_empty() {
            mariadb(None, &format!("KILL CONNECTION {}", id.trim()));
            killed = true;
            break;
        }
    }
    assert!(killed, "the erasing session was seen waiting in its delete");
    // Nothing of the chunk is committed: the kill rolled it back.
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_conversion c JOIN matomo_log_visit v USING (idvisit) WHERE v.user_id = 'alice.peer@example.org'"), 5);
    let out = eraser.wait_with_output().unwrap();
    holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["reconnects"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows"]["log_link_visit_action"], 78);
    assert_eq!(doc["verify"]["ok"], true);
}

#[test]
fn a_commit_whose_answer_was_lost_is_found_in_the_journal_not_redone() {
    let db = ScratchDb::with_fixture("lostcommit", THREE_SITES);
    let o = run_env(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            "alice.peer@example.org",
            "--execute",
            "--json",
            "--quiet",
            "--chunk-size",
            "5",
            "--chunk-time",
            "0",
        ],
        &[("MATOMO_ERASE_CRASH_AT", "lose-connection-after-commit:2")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["reconnects"], 1);
    assert_eq!(
        doc["visits"], 12,
        "the chunk whose answer was lost is counted once"
    );
    assert_eq!(doc["chunks"], 3);
    assert_eq!(doc["rows"]["log_link_visit_action"], 78);
    // That chunk's sites come from the visits sent; what the journal cannot tell is said.
    let per_site: u64 = doc["visits_per_site"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_site, 12, "{}", doc["visits_per_site"]);
    assert_eq!(doc["chunks_with_details_lost"], 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_matomo_erase_journal"),
        3
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        0
    );
}
