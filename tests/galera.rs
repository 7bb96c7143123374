//! Galera on a real two-node cluster: the erase pauses while the cluster is in flow control and
//! while its own node's receive queue is long, keeps every chunk under wsrep_max_ws_rows and
//! wsrep_max_ws_size, splits a chunk that the node refuses as too big, and ends with the same
//! rows on both nodes, a concurrent writer's rows included.
//!
//! The cluster comes from MATOMO_ERASE_GALERA_A_URL and MATOMO_ERASE_GALERA_B_URL, or, when
//! they are not set, from `scripts/galera.sh start`. The tests lock tables on a node or change
//! global limits, which holds up every other writer of the cluster, so they take turns.

mod common;
use common::servers::{started_by, wait_for, Server, ServerDb, Subjects, Turn};
use common::{finish, json, spawn, stderr, CORE_LOG_TABLES, THREE_SITES};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ALICE: &str = "alice.peer@example.org";

/// Node A and node B, started once per test process when the environment names none.
fn cluster() -> &'static (Server, Server) {
    static CLUSTER: OnceLock<(Server, Server)> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut nodes = started_by(
            "galera.sh",
            &["MATOMO_ERASE_GALERA_A_URL", "MATOMO_ERASE_GALERA_B_URL"],
        );
        let b = nodes.pop().expect("node B");
        (nodes.pop().expect("node A"), b)
    })
}

/// Waits until `node` has applied every writeset the cluster committed before this call.
fn sync(node: &Server) {
    node.sql(None, "SET SESSION wsrep_sync_wait = 1; SELECT 1");
}

/// A database of its own with the three-sites fixture, loaded on node A and present on B.
fn cluster_db(hint: &str, a: &Server, b: &Server) -> ServerDb {
    let db = ServerDb::with_fixture(hint, a, THREE_SITES);
    sync(b);
    assert_eq!(
        b.count(&db.name, "SELECT COUNT(*) FROM matomo_log_visit"),
        3526
    );
    db
}

/// Global settings put back when the test ends, also when it panics.
struct RestoreGlobals<'a> {
    node: &'a Server,
    sql: &'static str,
}

impl Drop for RestoreGlobals<'_> {
    fn drop(&mut self) {
        let _ = self.node.try_sql(None, self.sql);
    }
}

/// Another session that takes a lock on `node`, holds it for `seconds` and lets go.
fn hold(node: &Server, db: &str, lock: &str, unlock: &str, seconds: u32) -> Child {
    let child = Command::new("mariadb")
        .args(node.client_args())
        .args([
            "-e",
            &format!("{lock}; SELECT SLEEP({seconds}); {unlock};"),
            db,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb client runs");
    std::thread::sleep(Duration::from_millis(500));
    child
}

/// A writer on a node as the tracker would be: one client session sending single-row
/// inserts into `tracker`, each its own transaction, until stopped.
struct Tracker {
    client: Child,
    feeder: std::thread::JoinHandle<u64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tracker {
    fn start(node: &Server, db: &str) -> Tracker {
        node.sql(
            Some(db),
            "CREATE TABLE IF NOT EXISTS tracker (id INT AUTO_INCREMENT PRIMARY KEY, \
             note VARCHAR(20) NOT NULL) ENGINE=InnoDB",
        );
        let mut client = Command::new("mariadb")
            .args(node.client_args())
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mariadb client runs");
        let mut input = client.stdin.take().expect("stdin");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let feeder = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if writeln!(input, "INSERT INTO tracker (note) VALUES ('row {sent}');").is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        });
        Tracker {
            client,
            feeder,
            stop,
        }
    }

    /// Stops sending, waits until the session has run all it was sent; the rows sent.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sent = self.feeder.join().expect("feeder");
        let out = self.client.wait_with_output().expect("client ends");
        assert!(
            out.status.success(),
            "the tracker session failed: {}",
            stderr(&out)
        );
        sent
    }
}

fn erase_args(url: &str, ids_file: &str, chunk_size: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "erase",
        "--database-url",
        url,
        "--user-ids-file",
        ids_file,
        "--execute",
        "--json",
        "--chunk-size",
        chunk_size,
        "--chunk-time",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// While `child` runs for `span`, the subjects keep every visit.
fn assert_held_for(child: &mut Child, s: &Subjects, db: &ServerDb, span: Duration) {
    let start = Instant::now();
    while start.elapsed() < span {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended while it should have paused"
        );
        assert_eq!(
            s.remaining(&db.server, &db.name),
            s.visits,
            "a chunk was erased while the cluster was held up"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Both nodes hold the same rows: the four core log tables, the queued invalidations and the
/// tracker's rows, `tracked` of them.
fn assert_nodes_equal(a: &Server, b: &Server, db: &str, tracked: Option<u64>) {
    sync(b);
    for t in CORE_LOG_TABLES {
        let table = format!("matomo_{t}");
        assert_eq!(
            b.checksum(db, &table, "1"),
            a.checksum(db, &table, "1"),
            "{table} differs between the nodes"
        );
    }
    let queued = "option_name LIKE '%report_to_invalidate%'";
    let on_a = a.checksum(db, "matomo_option", queued);
    assert!(on_a.0 > 0, "the erase queued invalidations");
    assert_eq!(b.checksum(db, "matomo_option", queued), on_a);
    if let Some(n) = tracked {
        assert_eq!(a.count(db, "SELECT COUNT(*) FROM tracker"), n);
        assert_eq!(b.count(db, "SELECT COUNT(*) FROM tracker"), n);
    }
}

/// How a test holds the cluster up: a lock taken on node B, the condition that shows it
/// took hold, the node the erase writes to, and the pause the erase must log.
struct HeldUp {
    hint: &'static str,
    lock: &'static str,
    took_hold: (&'static str, fn(&Server, &Server) -> bool),
    erase_on_b: bool,
    extra: &'static [&'static str],
    pause: &'static str,
}

/// The tracker writes on A; node B is held up for 7 s; the erase of the first 20 user ids
/// (45 visits, chunks of 2) starts once the hold shows, erases nothing for 3 s, then finishes
/// with both nodes equal and every tracker row on both.
fn erase_while_held_up(h: HeldUp) {
    let (a, b) = cluster();
    let _turn = Turn::take("galera");
    let db = cluster_db(h.hint, a, b);
    let s = Subjects::first(&db, 20);
    assert_eq!(s.visits, 45);

    let tracker = Tracker::start(a, &db.name);
    sync(b);
    let holder = hold(b, &db.name, h.lock, "UNLOCK TABLES", 7);
    let (what, took_hold) = h.took_hold;
    wait_for(what, Duration::from_secs(20), || took_hold(a, b));

    let url = if h.erase_on_b {
        b.db_url(&db.name)
    } else {
        db.url()
    };
    let mut child = spawn(&erase_args(&url, &s.arg(), "2", h.extra));
    assert_held_for(&mut child, &s, &db, Duration::from_secs(3));
    let held = holder.wait_with_output().expect("holder ends");
    assert!(held.status.success(), "{}", stderr(&held));
    let out = finish(child, Duration::from_secs(120));
    let tracked = tracker.stop();

    let doc = json(&out, 0);
    eprintln!(
        "{}: pauses {}, {} chunks, {:.1} s, tracker rows {tracked}",
        h.hint,
        doc["pauses"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert!(stderr(&out).contains(h.pause), "{}", stderr(&out));
    assert_eq!(doc["visits"], 45);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(s.remaining(a, &db.name), 0);
    assert!(
        tracked > 26,
        "the tracker wrote through the hold ({tracked} rows)"
    );
    assert_nodes_equal(a, b, &db.name, Some(tracked));
}

#[test]
fn pauses_while_the_cluster_is_in_flow_control_then_finishes() {
    // A table lock on B stops B's applier at the tracker's first row while B stays in sync,
    // so B's queue fills and B asks the cluster to pause: every commit on A waits.
    erase_while_held_up(HeldUp {
        hint: "flowcontrol",
        lock: "LOCK TABLES tracker WRITE",
        took_hold: ("flow control on A", |a, _| {
            a.status("wsrep_flow_control_active") == "true"
        }),
        erase_on_b: false,
        extra: &[],
        pause: "pausing: galera flow control paused ",
    });
}

#[test]
fn pauses_while_its_node_has_a_long_receive_queue_then_finishes() {
    // FLUSH TABLES WITH READ LOCK on B (a backup, say) desyncs B and stops its applier: the
    // tracker on A goes on, and B's receive queue grows. The erase writes to B.
    erase_while_held_up(HeldUp {
        hint: "recvqueue",
        lock: "FLUSH TABLES WITH READ LOCK",
        took_hold: ("a receive queue on B", |_, b| {
            b.status("wsrep_local_recv_queue")
                .parse::<u64>()
                .unwrap_or(0)
                > 10
        }),
        erase_on_b: true,
        extra: &["--max-recv-queue", "5"],
        pause: "pausing: galera wsrep_local_recv_queue=",
    });
}

/// Makes alice's visits heavy: her 78 actions (the first 78 by id, the originals) copied
/// `times` more times, so that a few of her visits fill a small writeset. Returns her rows in
/// the four core log tables.
fn make_alice_heavy(db: &ServerDb, times: u32) -> u64 {
    let cols = db.server.sql(
        Some(&db.name),
        "SELECT GROUP_CONCAT(CONCAT('`', column_name, '`') ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_schema = DATABASE() \
         AND table_name = 'matomo_log_link_visit_action' AND column_name <> 'idlink_va'",
    );
    let cols = cols.trim();
    for _ in 0..times {
        db.server.sql(
            Some(&db.name),
            &format!(
                "INSERT INTO matomo_log_link_visit_action ({cols}) SELECT {cols} \
                 FROM matomo_log_link_visit_action WHERE idvisit IN (SELECT idvisit \
                 FROM matomo_log_visit WHERE user_id = '{ALICE}') ORDER BY idlink_va LIMIT 78"
            ),
        );
    }
    db.count(&format!(
        "SELECT (SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = '{ALICE}') \
         + (SELECT COUNT(*) FROM matomo_log_link_visit_action a JOIN matomo_log_visit v \
            USING (idvisit) WHERE v.user_id = '{ALICE}') \
         + (SELECT COUNT(*) FROM matomo_log_conversion c JOIN matomo_log_visit v \
            USING (idvisit) WHERE v.user_id = '{ALICE}') \
         + (SELECT COUNT(*) FROM matomo_log_conversion_item i JOIN matomo_log_visit v \
            USING (idvisit) WHERE v.user_id = '{ALICE}')"
    ))
}

/// The rows each committed chunk deleted, from the journal.
fn rows_per_chunk(db: &ServerDb) -> Vec<u64> {
    db.server
        .sql(
            Some(&db.name),
            "SELECT rows_deleted FROM matomo_matomo_erase_journal ORDER BY run_id, chunk",
        )
        .lines()
        .map(|l| {
            let rows: std::collections::BTreeMap<String, u64> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            rows.values().sum()
        })
        .collect()
}

fn alice_args(url: &str) -> Vec<String> {
    [
        "erase",
        "--database-url",
        url,
        "--user-id",
        ALICE,
        "--execute",
        "--json",
        "--chunk-size",
        "100",
        "--chunk-time",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn chunks_stay_under_wsrep_max_ws_rows_and_a_refused_chunk_is_split() {
    let (a, b) = cluster();
    let _turn = Turn::take("galera");
    let db = cluster_db("wsrows", a, b);
    let heavy = make_alice_heavy(&db, 7);
    assert_eq!(heavy, 96 + 7 * 78);
    let alice_visits = format!("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = '{ALICE}'");

    // Each of alice's visits now weighs 9 rows or more: under a limit of 8 none can be erased
    // at all. The run says which limit and how to lift it, and erases nothing.
    let _restore = RestoreGlobals {
        node: a,
        sql: "SET GLOBAL wsrep_max_ws_rows = 0",
    };
    a.sql(None, "SET GLOBAL wsrep_max_ws_rows = 8");
    let out = common::run(&alice_args(&db.url()));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("alone is over a Galera writeset limit (wsrep_max_ws_rows=8, "),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("SET GLOBAL wsrep_max_ws_rows = 0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count(&alice_visits), 12);

    // Under 400 rows, the first chunk (10 visits, guessed at 20 rows each; any 10 of hers
    // weigh 431 rows or more) is refused, rolled back and split; the chunks after it are sized by the rows a visit was seen to weigh.
    a.sql(None, "SET GLOBAL wsrep_max_ws_rows = 400");
    let out = common::run(&alice_args(&db.url()));
    let doc = json(&out, 0);
    let chunks = rows_per_chunk(&db);
    eprintln!(
        "wsrep_max_ws_rows 400: {} chunks of {chunks:?} rows; stderr:\n{}",
        doc["chunks"],
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("over a Galera writeset limit (wsrep_max_ws_rows=400, "),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows_total"], heavy);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(chunks.iter().sum::<u64>(), heavy);
    assert!(chunks.len() >= 3, "{chunks:?}");
    // Each chunk's deleted rows, its journal row and its queued invalidations fit the limit.
    assert!(chunks.iter().all(|&n| n + 1 + 10 <= 400), "{chunks:?}");
    assert_eq!(db.count(&alice_visits), 0);
    assert_nodes_equal(a, b, &db.name, None);
}

#[test]
fn chunks_stay_under_wsrep_max_ws_size() {
    let (a, b) = cluster();
    let _turn = Turn::take("galera");
    let db = cluster_db("wssize", a, b);
    let s = Subjects::first(&db, 20);

    // Under the smallest limit (1 KiB) a single visit, with its journal row, does not fit:
    // the commit is refused, and the run names the limit and erases nothing.
    let _restore = RestoreGlobals {
        node: a,
        sql: "SET GLOBAL wsrep_max_ws_size = DEFAULT",
    };
    a.sql(None, "SET GLOBAL wsrep_max_ws_size = 1024");
    let out = common::run(&erase_args(&db.url(), &s.arg(), "100", &[]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "alone is over a Galera writeset limit (wsrep_max_ws_rows=0, wsrep_max_ws_size=1024)"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.remaining(a, &db.name), 45);

    // 64 KiB: the 45 visits in one chunk would be several times that. The first chunk is
    // guessed small; the next ones are sized from the bytes the chunks before them
    // replicated, so none is refused and most hold several visits.
    a.sql(None, "SET GLOBAL wsrep_max_ws_size = 65536");
    let out = common::run(&erase_args(&db.url(), &s.arg(), "100", &[]));
    let doc = json(&out, 0);
    let chunks = doc["chunks"].as_u64().unwrap();
    eprintln!("wsrep_max_ws_size 65536: {chunks} chunks for 45 visits");
    assert!(
        !stderr(&out).contains("over a Galera writeset limit"),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 45);
    assert!((3..=22).contains(&chunks), "{chunks} chunks");
    assert_eq!(doc["verify"]["ok"], true);
    assert_nodes_equal(a, b, &db.name, None);
}

#[test]
fn a_write_on_the_other_node_that_conflicts_with_a_chunk_is_retried_through() {
    let (a, b) = cluster();
    let _turn = Turn::take("galera");
    let db = cluster_db("conflict", a, b);
    let alice_visits = format!("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = '{ALICE}'");

    // The tracker on B keeps updating alice's visits (as if she were still browsing) for 2 s;
    // the erase on A holds each chunk 300 ms before its COMMIT, so a replicated update meets
    // the chunk's locks: Galera aborts the chunk (a certification conflict, 1213), and the
    // whole chunk is retried.
    let update = format!(
        "UPDATE matomo_log_visit SET visit_total_time = visit_total_time + 1 \
         WHERE user_id = '{ALICE}'; DO SLEEP(0.05);"
    );
    let updates = Command::new("mariadb")
        .args(b.client_args())
        .arg(&db.name)
        .arg("-e")
        .arg(format!("DO SLEEP(0.3); {}", update.repeat(40)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb client runs");
    let child = Command::new(common::bin())
        .args(alice_args(&db.url()))
        .env("MATOMO_ERASE_HOLD_BEFORE_COMMIT_MS", "300")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let out = finish(child, Duration::from_secs(120));
    let updated = updates.wait_with_output().expect("updates end");
    assert!(updated.status.success(), "{}", stderr(&updated));

    let doc = json(&out, 0);
    eprintln!(
        "certification conflicts: retries {}, chunks {}, {:.1} s",
        doc["retries"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["retries"].as_u64().unwrap() >= 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("Deadlock"), "{}", stderr(&out));
    assert_eq!(doc["visits"], 12);
    assert_eq!(doc["rows_total"], 96);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(db.count(&alice_visits), 0);
    assert_nodes_equal(a, b, &db.name, None);
}
