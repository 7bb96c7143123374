//! Every way the erase loop can be held back or stopped between chunks: pause and stop files,
//! --max-runtime, --max-load, --critical-load, --sleep and SIGTERM. Each test runs the real
//! binary on its own scratch copy of the three-sites fixture, with chunks of 2 visits so that a
//! run has many chunks, and checks the database itself, not only what the tool reports.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A folder for one test's files (user ids, pause and stop files), removed at the end.
struct TestDir(PathBuf);

impl TestDir {
    fn new(hint: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("me-throttle-{hint}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp folder");
        TestDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The subjects of a test: the first `n` user ids of the fixture in sorted order, written to
/// `user-ids.txt`, and the ids of their visits.
struct Subjects {
    file: String,
    in_list: String,
    idvisits: Vec<u64>,
}

impl Subjects {
    fn first(db: &ScratchDb, dir: &TestDir, n: usize) -> Subjects {
        let ids: Vec<String> = db
            .sql(&format!(
                "SELECT DISTINCT user_id FROM matomo_log_visit WHERE user_id IS NOT NULL \
                 ORDER BY user_id LIMIT {n}"
            ))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids.len(), n, "the fixture has {n} user ids");
        assert!(
            ids.iter().all(|i| !i.contains('\'') && !i.contains('\\')),
            "user ids need no quoting"
        );
        let path = dir.path("user-ids.txt");
        std::fs::write(&path, ids.join("\n") + "\n").expect("user ids file");
        let in_list = ids
            .iter()
            .map(|i| format!("'{i}'"))
            .collect::<Vec<_>>()
            .join(",");
        let idvisits = db
            .sql(&format!(
                "SELECT idvisit FROM matomo_log_visit WHERE user_id IN ({in_list}) \
                 ORDER BY idvisit"
            ))
            .lines()
            .map(|l| l.parse().expect("idvisit"))
            .collect();
        Subjects {
            file: path.display().to_string(),
            in_list,
            idvisits,
        }
    }

    fn total(&self) -> u64 {
        self.idvisits.len() as u64
    }

    /// How many of the subjects' visits are still in log_visit.
    fn remaining(&self, db: &ScratchDb) -> u64 {
        db.count(&format!(
            "SELECT COUNT(*) FROM matomo_log_visit WHERE user_id IN ({})",
            self.in_list
        ))
    }

    /// Rows of each of the subjects' visits in the four core log tables.
    fn rows_per_visit(&self, db: &ScratchDb) -> BTreeMap<u64, [u64; 4]> {
        let ids = self
            .idvisits
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut out: BTreeMap<u64, [u64; 4]> = self.idvisits.iter().map(|&v| (v, [0; 4])).collect();
        for (i, t) in CORE_LOG_TABLES.iter().enumerate() {
            let rows = db.sql(&format!(
                "SELECT idvisit, COUNT(*) FROM matomo_{t} WHERE idvisit IN ({ids}) \
                 GROUP BY idvisit"
            ));
            for line in rows.lines() {
                let (v, n) = line.split_once('\t').expect("two columns");
                out.get_mut(&v.parse().unwrap()).expect("a subject's visit")[i] =
                    n.parse().unwrap();
            }
        }
        out
    }
}

fn erase_args(db: &ScratchDb, subjects: &Subjects) -> Vec<String> {
    [
        "erase",
        "--database-url",
        &db.url(),
        "--user-ids-file",
        &subjects.file,
        "--execute",
        "--json",
        "--chunk-size",
        "2",
        "--chunk-time",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

fn run_args(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

/// While `child` runs for `span`, the subjects keep every visit.
fn assert_nothing_erased_for(child: &mut Child, db: &ScratchDb, s: &Subjects, span: Duration) {
    let start = Instant::now();
    while start.elapsed() < span {
        assert!(
            child.try_wait().expect("wait works").is_none(),
            "the run ended while it should be held back"
        );
        assert_eq!(
            s.remaining(db),
            s.total(),
            "a visit was erased while held back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The final state that matters: the four core log tables and the queued invalidations.
fn final_state(db: &ScratchDb) -> (Vec<(String, u64, String)>, String) {
    let tables: Vec<String> = CORE_LOG_TABLES
        .iter()
        .map(|t| format!("matomo_{t}"))
        .collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let invalidations = db.sql(
        "SELECT option_name, option_value FROM matomo_option \
         WHERE option_name LIKE '%report_to_invalidate%' ORDER BY option_name",
    );
    (db.checksums(&tables, &[]), invalidations)
}

fn assert_all_erased(doc: &Value, db: &ScratchDb, s: &Subjects) {
    assert_eq!(doc["verify"]["ok"], true, "verify: {}", doc["verify"]);
    assert_eq!(doc["stopped"], Value::Null);
    assert_eq!(s.remaining(db), 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit"),
        3526 - s.total()
    );
}

#[test]
fn pause_file_holds_every_chunk_until_it_is_removed() {
    let db = ScratchDb::with_fixture("pausefile", THREE_SITES);
    let dir = TestDir::new("pausefile");
    let s = Subjects::first(&db, &dir, 100);
    assert_eq!(s.total(), 190);
    std::fs::write(dir.path("pause"), "").unwrap();

    let mut child = spawn(&with(
        erase_args(&db, &s),
        &["--pause-file", &dir.arg("pause")],
    ));
    assert_nothing_erased_for(&mut child, &db, &s, Duration::from_secs(2));
    std::fs::remove_file(dir.path("pause")).unwrap();
    let out = finish(child, Duration::from_secs(120));

    let doc = json(&out, 0);
    assert_eq!(doc["pauses"], 1, "one pause, for one unchanging reason");
    assert_eq!(doc["visits"], 190);
    assert_eq!(doc["chunks"], 95);
    assert_all_erased(&doc, &db, &s);
    assert!(
        stderr(&out).contains(&format!("pausing: pause-file {} exists", dir.arg("pause"))),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stop_file_stops_before_the_first_chunk_and_a_rerun_finishes() {
    let db = ScratchDb::with_fixture("stopfile", THREE_SITES);
    let dir = TestDir::new("stopfile");
    let s = Subjects::first(&db, &dir, 100);
    std::fs::write(dir.path("stop"), "").unwrap();
    let args = with(erase_args(&db, &s), &["--stop-file", &dir.arg("stop")]);

    let out = run_args(&args);
    let doc = json(&out, 4);
    assert_eq!(
        doc["stopped"],
        format!("stop-file {} exists", dir.arg("stop"))
    );
    assert_eq!(doc["visits"], 0);
    assert_eq!(doc["chunks"], 0);
    assert_eq!(doc["subjects_read"], false);
    assert_eq!(s.remaining(&db), 190);
    assert!(
        stderr(&out).contains("remove the stop file, then run the same command again to finish"),
        "{}",
        stderr(&out)
    );
    // The text report does not call it "nothing to do", nor count subjects it never read.
    let text_args: Vec<String> = args.iter().filter(|a| *a != "--json").cloned().collect();
    let text = stdout(&run_args(&text_args));
    assert!(
        text.contains("nothing erased: the run stopped before its first chunk")
            && text.contains("subjects not read yet")
            && !text.contains("nothing to do"),
        "{text}"
    );

    std::fs::remove_file(dir.path("stop")).unwrap();
    let doc = json(&run_args(&args), 0);
    assert_eq!(doc["visits"], 190);
    assert_all_erased(&doc, &db, &s);
}

#[test]
fn max_runtime_stops_part_way_and_reruns_end_as_a_clean_run_does() {
    let db = ScratchDb::with_fixture("runtime", THREE_SITES);
    let clean = ScratchDb::with_fixture("runtime_clean", THREE_SITES);
    let dir = TestDir::new("runtime");
    let s = Subjects::first(&db, &dir, 20);
    assert_eq!(s.total(), 45);
    let args = with(
        erase_args(&db, &s),
        &["--max-runtime", "2s", "--sleep", "200ms"],
    );

    // 2 s of runtime with 200 ms between chunks of 2 visits has room for about 10 of 23
    // chunks; a busy machine makes it fewer, never all.
    let doc = json(&run_args(&args), 4);
    assert_eq!(doc["stopped"], "max-runtime 2s reached");
    let erased = s.total() - s.remaining(&db);
    assert!(erased > 0 && erased < s.total(), "erased {erased} of 45");
    assert_eq!(doc["visits"], erased);
    assert_eq!(
        doc["chunks"].as_u64().unwrap() * 2,
        erased,
        "whole chunks of 2"
    );
    eprintln!("max-runtime 2s: the first run erased {erased} of 45 visits");

    // The same command again, as often as it takes; each run carries on where the last ended.
    let mut runs = 1;
    let last = loop {
        runs += 1;
        assert!(runs <= 15, "still not finished after {runs} runs");
        let out = run_args(&args);
        if out.status.code() == Some(0) {
            break json(&out, 0);
        }
        let doc = json(&out, 4);
        assert_eq!(doc["stopped"], "max-runtime 2s reached");
        assert!(doc["earlier_runs"]["chunks"].as_u64().unwrap() > 0);
    };
    eprintln!("max-runtime 2s: finished in {runs} runs");
    assert!(last["earlier_runs"]["visits"].as_u64().unwrap() > 0);
    assert_all_erased(&last, &db, &s);

    let clean_args: Vec<String> = erase_args(&clean, &s);
    let clean_doc = json(&run_args(&clean_args), 0);
    assert_eq!(clean_doc["visits"], 45);
    assert_all_erased(&clean_doc, &clean, &s);
    let (tables, invalidations) = final_state(&db);
    let (clean_tables, clean_invalidations) = final_state(&clean);
    assert_eq!(tables, clean_tables);
    assert_eq!(invalidations, clean_invalidations);
    assert!(!invalidations.is_empty(), "site-days were queued");
}

#[test]
fn max_load_pauses_until_a_stop_file_ends_the_run() {
    let db = ScratchDb::with_fixture("maxload", THREE_SITES);
    let dir = TestDir::new("maxload");
    let s = Subjects::first(&db, &dir, 100);

    // Threads_running counts the session that asks, so it is always at least 1.
    let mut child = spawn(&with(
        erase_args(&db, &s),
        &[
            "--max-load",
            "Threads_running=1",
            "--stop-file",
            &dir.arg("stop"),
        ],
    ));
    assert_nothing_erased_for(&mut child, &db, &s, Duration::from_millis(1500));
    std::fs::write(dir.path("stop"), "").unwrap();
    let out = finish(child, Duration::from_secs(60));

    let doc = json(&out, 4);
    assert_eq!(
        doc["stopped"],
        format!("stop-file {} exists", dir.arg("stop"))
    );
    assert!(
        doc["pauses"].as_u64().unwrap() >= 1,
        "pauses {}",
        doc["pauses"]
    );
    assert_eq!(doc["visits"], 0);
    assert_eq!(s.remaining(&db), 190);
    assert!(
        stderr(&out).contains("pausing: max-load Threads_running="),
        "{}",
        stderr(&out)
    );
}

#[test]
fn critical_load_stops_before_the_first_chunk() {
    let db = ScratchDb::with_fixture("critical", THREE_SITES);
    let dir = TestDir::new("critical");
    let s = Subjects::first(&db, &dir, 100);

    let out = run_args(&with(
        erase_args(&db, &s),
        &["--critical-load", "Threads_running=1"],
    ));
    let doc = json(&out, 4);
    let why = doc["stopped"].as_str().unwrap();
    assert!(why.starts_with("critical-load Threads_running="), "{why}");
    assert!(why.ends_with(" >= 1"), "{why}");
    assert_eq!(doc["visits"], 0);
    assert_eq!(doc["chunks"], 0);
    assert_eq!(s.remaining(&db), 190);
    // Held before anything was written: not even the journal table was made.
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name = 'matomo_matomo_erase_journal'"
        ),
        0
    );
}

#[test]
fn unknown_status_variable_is_a_usage_error() {
    let db = ScratchDb::with_fixture("unknownvar", THREE_SITES);
    let dir = TestDir::new("unknownvar");
    let s = Subjects::first(&db, &dir, 100);

    for option in ["--max-load", "--critical-load"] {
        let out = run_args(&with(erase_args(&db, &s), &[option, "No_such_status=5"]));
        assert_eq!(out.status.code(), Some(2), "{option}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "status variable No_such_status does not exist on this server; see SHOW \
                 GLOBAL STATUS"
            ),
            "{option}: {}",
            stderr(&out)
        );
        assert_eq!(s.remaining(&db), 190);
    }
}

/// The UTC times of the "chunk committed" log lines on stderr.
fn commit_times(stderr: &str) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    stderr
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("chunk committed"))
        .map(|l| {
            let stamp = l.split_whitespace().next().expect("a timestamp first");
            chrono::DateTime::parse_from_rfc3339(stamp)
                .unwrap_or_else(|e| panic!("timestamp {stamp:?}: {e}"))
        })
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn sleep_spaces_the_chunks() {
    let db = ScratchDb::with_fixture("sleep", THREE_SITES);
    let ids: Vec<String> = db
        .sql("SELECT idvisit FROM matomo_log_visit ORDER BY idvisit LIMIT 5")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut args = vec![
        "erase".to_string(),
        "--database-url".into(),
        db.url(),
        "--execute".into(),
        "--json".into(),
        "-v".into(),
        "--chunk-size".into(),
        "1".into(),
        "--chunk-time".into(),
        "0".into(),
        "--sleep".into(),
        "300ms".into(),
    ];
    for id in &ids {
        args.extend(["--visit-id".to_string(), id.clone()]);
    }

    let started = Instant::now();
    let out = run_args(&args);
    let wall = started.elapsed();
    let doc = json(&out, 0);
    assert_eq!(doc["chunks"], 5);
    assert_eq!(doc["visits"], 5);
    assert_eq!(doc["verify"]["ok"], true);

    // A sleep never ends early, so consecutive commits are at least 300 ms apart, however
    // busy the machine is; without --sleep they are a few milliseconds apart.
    let times = commit_times(&stderr(&out));
    assert_eq!(times.len(), 5, "{}", stderr(&out));
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap() as f64 / 1e6)
        .collect();
    eprintln!("--sleep 300ms: gaps between commits {gaps:?}, whole run {wall:?}");
    assert!(gaps.iter().all(|g| *g >= 0.29), "gaps {gaps:?}");
    assert!(
        doc["elapsed_seconds"].as_f64().unwrap() >= 1.2,
        "{}",
        doc["elapsed_seconds"]
    );
}

#[test]
fn sigterm_stops_after_whole_chunks_and_a_rerun_finishes() {
    signal_stops_after_whole_chunks_and_a_rerun_finishes("TERM");
}

#[test]
fn sigint_stops_after_whole_chunks_and_a_rerun_finishes() {
    signal_stops_after_whole_chunks_and_a_rerun_finishes("INT");
}

/// Sends SIG`signal` to an erase part-way through: it stops after whole chunks, says so with
/// exit 4, and the same command then finishes.
fn signal_stops_after_whole_chunks_and_a_rerun_finishes(signal: &str) {
    let hint = format!("sig{}", signal.to_lowercase());
    let db = ScratchDb::with_fixture(&hint, THREE_SITES);
    let dir = TestDir::new(&hint);
    let s = Subjects::first(&db, &dir, 100);
    let before = s.rows_per_visit(&db);
    assert!(before.values().all(|r| r[0] == 1));
    // 95 chunks, each followed by 50 ms of sleep: several seconds of erasing to interrupt.
    let args = with(erase_args(&db, &s), &["--sleep", "50ms"]);

    let child = spawn(&args);
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no chunk committed within 30 s"
        );
        if started.elapsed() >= Duration::from_millis(500) && s.remaining(&db) < s.total() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let out = finish(child, Duration::from_secs(60));

    let doc = json(&out, 4);
    assert_eq!(doc["stopped"], "signal received");
    let remaining = s.remaining(&db);
    let erased = s.total() - remaining;
    eprintln!("SIG{signal}: {erased} of 190 visits erased before the stop");
    assert!(erased > 0 && erased < s.total(), "erased {erased} of 190");
    assert_eq!(doc["visits"], erased);
    assert_eq!(
        doc["chunks"].as_u64().unwrap() * 2,
        erased,
        "whole chunks of 2"
    );

    // Every visit is whole or wholly gone, in all four tables.
    let after = s.rows_per_visit(&db);
    for (idvisit, rows) in &after {
        assert!(
            *rows == before[idvisit] || *rows == [0; 4],
            "visit {idvisit} is half erased: {rows:?}, was {:?}",
            before[idvisit]
        );
    }
    let gone = after.values().filter(|r| **r == [0; 4]).count() as u64;
    assert_eq!(gone, erased);

    let doc = json(&run_args(&args), 0);
    assert_eq!(doc["visits"], remaining);
    assert_eq!(doc["earlier_runs"]["visits"], erased);
    assert_all_erased(&doc, &db, &s);
}

#[test]
fn history_list_length_pauses_until_a_stop_file_ends_the_run() {
    let db = ScratchDb::with_fixture("history", THREE_SITES);
    let dir = TestDir::new("history");
    let s = Subjects::first(&db, &dir, 100);
    let status = |db: &ScratchDb| -> u64 {
        db.sql("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("history list length")
    };

    // An open snapshot holds purge back, so 3,000 committed updates stay in the history.
    db.sql(
        "CREATE TABLE h (id INT PRIMARY KEY, v INT); INSERT INTO h SELECT seq, 0 FROM seq_1_to_10",
    );
    let holder = Command::new("mariadb")
        .args(["-h", HOST, "-P", PORT, "-uroot", &db.name, "-e"])
        .arg("START TRANSACTION WITH CONSISTENT SNAPSHOT; SELECT COUNT(*) FROM h; SELECT SLEEP(8); COMMIT;")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let updates: String = (0..3000)
        .map(|i| format!("UPDATE h SET v = v + 1 WHERE id = {};\n", i % 10 + 1))
        .collect();
    let mut client = Command::new("mariadb")
        .args(["-h", HOST, "-P", PORT, "-uroot", &db.name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    client
        .stdin
        .take()
        .unwrap()
        .write_all(updates.as_bytes())
        .unwrap();
    assert!(client.wait().unwrap().success());
    let history = status(&db);
    assert!(history >= 2000, "history grew: {history}");
    let limit = (history - 1500).to_string();

    let mut child = spawn(&with(
        erase_args(&db, &s),
        &["--max-history", &limit, "--stop-file", &dir.arg("stop")],
    ));
    assert_nothing_erased_for(&mut child, &db, &s, Duration::from_millis(1500));
    std::fs::write(dir.path("stop"), "").unwrap();
    let out = finish(child, Duration::from_secs(60));
    holder.wait_with_output().unwrap();

    let doc = json(&out, 4);
    assert!(
        doc["pauses"].as_u64().unwrap() >= 1,
        "pauses {}",
        doc["pauses"]
    );
    assert_eq!(doc["visits"], 0);
    assert!(
        stderr(&out).contains("pausing: history list length="),
        "{}",
        stderr(&out)
    );
}
