//! Replica lag on a real primary and replica: the erase holds its chunks while the replica is
//! stopped or lags, finishes once it catches up, and leaves the replica with exactly the
//! primary's rows; without --replica it finds the replica that the primary lists.
//!
//! The pair comes from MATOMO_ERASE_PRIMARY_URL and MATOMO_ERASE_REPLICA_URL, or, when they
//! are not set, from `scripts/replication.sh start`. Each test loads the fixture into its own
//! database on the primary (which replicates it). The tests stop or delay the one shared
//! replica, so they take turns: a lock within this process and a lock folder between
//! processes.

mod common;
use common::servers::{started_by, wait_for, Server, ServerDb, Subjects, Turn};
use common::{finish, json, spawn, stderr, CORE_LOG_TABLES, THREE_SITES};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The primary and the replica, started once per test process when the environment names none.
fn pair() -> &'static (Server, Server) {
    static PAIR: OnceLock<(Server, Server)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut servers = started_by(
            "replication.sh",
            &["MATOMO_ERASE_PRIMARY_URL", "MATOMO_ERASE_REPLICA_URL"],
        );
        let replica = servers.pop().expect("a replica");
        (servers.pop().expect("a primary"), replica)
    })
}

/// Whoever holds this may stop, delay or restart the shared replica.
fn replica_turn() -> Turn {
    Turn::take("replica")
}

/// Puts the replica back as every test expects it: no delay, replicating, listed by the
/// primary. Runs when the test ends, also when it panics.
struct RestoreReplica<'a> {
    primary: &'a Server,
    replica: &'a Server,
}

impl Drop for RestoreReplica<'_> {
    fn drop(&mut self) {
        let _ = self.replica.try_sql(
            None,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
        );
        if !std::thread::panicking() {
            wait_replicating(self.primary, self.replica);
        }
    }
}

/// Waits until both replication threads run and the primary lists the replica again (a
/// replica registers anew each time its IO thread connects).
fn wait_replicating(primary: &Server, replica: &Server) {
    wait_for("replica threads running", Duration::from_secs(60), || {
        replica.slave_field("Slave_IO_Running") == "Yes"
            && replica.slave_field("Slave_SQL_Running") == "Yes"
    });
    wait_for(
        "replica listed by SHOW REPLICA HOSTS",
        Duration::from_secs(60),
        || !primary.sql(None, "SHOW REPLICA HOSTS").trim().is_empty(),
    );
}

/// Waits until the replica has applied everything the primary has written so far.
fn wait_caught_up(primary: &Server, replica: &Server) {
    let pos = primary.sql(None, "SELECT @@gtid_binlog_pos");
    let pos = pos.trim();
    let waited = replica.sql(None, &format!("SELECT MASTER_GTID_WAIT('{pos}', 120)"));
    assert_eq!(
        waited.trim(),
        "0",
        "the replica did not reach GTID {pos} within 120 s (IO={}, SQL={}, error {} {})",
        replica.slave_field("Slave_IO_Running"),
        replica.slave_field("Slave_SQL_Running"),
        replica.slave_field("Last_IO_Error"),
        replica.slave_field("Last_SQL_Error")
    );
}

/// A database of its own on the primary with the three-sites fixture, present on the replica
/// too; dropped (on both) at the end.
fn primary_db(hint: &str, primary: &Server, replica: &Server) -> ServerDb {
    let db = ServerDb::with_fixture(hint, primary, THREE_SITES);
    wait_caught_up(primary, replica);
    for t in CORE_LOG_TABLES {
        let sql = format!("SELECT COUNT(*) FROM matomo_{t}");
        assert_eq!(
            replica.count(&db.name, &sql),
            db.count(&sql),
            "matomo_{t} on the replica"
        );
    }
    assert_eq!(
        replica.count(&db.name, "SELECT COUNT(*) FROM matomo_log_visit"),
        3526
    );
    db
}

/// The erase reached the replica: the four core log tables and the queued invalidations are
/// the same rows on both servers.
fn assert_replica_equals_primary(primary: &Server, replica: &Server, db: &str) {
    wait_caught_up(primary, replica);
    for t in CORE_LOG_TABLES {
        let table = format!("matomo_{t}");
        assert_eq!(
            replica.checksum(db, &table, "1"),
            primary.checksum(db, &table, "1"),
            "{table} differs between primary and replica"
        );
    }
    let queued = "option_name LIKE '%report_to_invalidate%'";
    let on_primary = primary.checksum(db, "matomo_option", queued);
    assert!(on_primary.0 > 0, "the erase queued invalidations");
    assert_eq!(
        replica.checksum(db, "matomo_option", queued),
        on_primary,
        "queued invalidations differ between primary and replica"
    );
}

#[test]
fn pauses_while_replica_is_stopped_then_finishes() {
    let (primary, replica) = pair();
    let _turn = replica_turn();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = primary_db("stopped", primary, replica);
    let s = Subjects::first(&db, 50);
    assert_eq!(s.visits, 103);

    replica.sql(None, "STOP SLAVE");
    let (url, ids, replica_url) = (db.url(), s.arg(), replica.url.to_string());
    let mut child = spawn(&[
        "erase",
        "--database-url",
        &url,
        "--user-ids-file",
        &ids,
        "--execute",
        "--json",
        "--replica",
        &replica_url,
        "--max-lag",
        "1s",
        "--chunk-size",
        "5",
        "--chunk-time",
        "0",
    ]);
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended while the replica was stopped"
        );
        assert_eq!(
            s.remaining(primary, &db.name),
            103,
            "a chunk was erased while the replica was stopped"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    replica.sql(None, "START SLAVE");
    let out = finish(child, Duration::from_secs(120));

    let doc = json(&out, 0);
    eprintln!(
        "stopped replica: pauses {}, {} chunks, {:.1} s",
        doc["pauses"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert_eq!(
        doc["replicas"],
        "watching 1 replica(s) given with --replica, --max-lag 1s"
    );
    assert!(
        stderr(&out).contains(&format!(
            "pausing: replica {}/ replication stopped (IO=No, SQL=No)",
            replica.label()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 103);
    assert_eq!(doc["verify"]["ok"], true);
    assert_eq!(s.remaining(primary, &db.name), 0);

    assert_replica_equals_primary(primary, replica, &db.name);
    assert_eq!(s.remaining(replica, &db.name), 0);
    assert_eq!(
        replica.count(&db.name, "SELECT COUNT(*) FROM matomo_log_visit"),
        3526 - 103
    );
    drop(restore);
}

#[test]
fn pauses_while_replica_lags() {
    let (primary, replica) = pair();
    let _turn = replica_turn();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = primary_db("lag", primary, replica);
    let s = Subjects::first(&db, 20);
    assert_eq!(s.visits, 45);

    // The replica applies each event 3 s after the primary wrote it, so its lag passes 1 s
    // while chunks are still to come (23 chunks, 300 ms apart).
    replica.sql(
        None,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE",
    );
    wait_replicating(primary, replica);
    let (url, ids, replica_url) = (db.url(), s.arg(), replica.url.to_string());
    let out = finish(
        spawn(&[
            "erase",
            "--database-url",
            &url,
            "--user-ids-file",
            &ids,
            "--execute",
            "--json",
            "--replica",
            &replica_url,
            "--max-lag",
            "1s",
            "--chunk-size",
            "2",
            "--chunk-time",
            "0",
            "--sleep",
            "300ms",
        ]),
        Duration::from_secs(180),
    );

    let doc = json(&out, 0);
    eprintln!(
        "delayed replica: pauses {}, {} chunks, {:.1} s",
        doc["pauses"],
        doc["chunks"],
        doc["elapsed_seconds"].as_f64().unwrap()
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert!(
        stderr(&out).contains(&format!("pausing: replica {}/ lag=", replica.label())),
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["visits"], 45);
    assert_eq!(doc["chunks"], 23);
    assert_eq!(doc["verify"]["ok"], true);

    drop(restore);
    assert_eq!(replica.slave_field("SQL_Delay"), "0");
    assert_replica_equals_primary(primary, replica, &db.name);
    assert_eq!(s.remaining(replica, &db.name), 0);
}

#[test]
fn finds_replicas_listed_by_the_primary() {
    let (primary, replica) = pair();
    let _turn = replica_turn();
    let restore = RestoreReplica { primary, replica };
    wait_replicating(primary, replica);
    let db = primary_db("listed", primary, replica);
    let s = Subjects::first(&db, 20);
    let listed = primary.sql(None, "SHOW REPLICA HOSTS");
    let port = replica.url.port().unwrap().to_string();
    assert!(
        listed
            .lines()
            .any(|l| l.split('\t').nth(2) == Some(port.as_str())),
        "{listed}"
    );

    // A delayed replica shows that the one found is really watched, not only counted.
    replica.sql(
        None,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE",
    );
    wait_replicating(primary, replica);
    let (url, ids) = (db.url(), s.arg());
    let out = finish(
        spawn(&[
            "erase",
            "--database-url",
            &url,
            "--user-ids-file",
            &ids,
            "--execute",
            "--json",
            "--max-lag",
            "1s",
            "--chunk-size",
            "2",
            "--chunk-time",
            "0",
            "--sleep",
            "300ms",
        ]),
        Duration::from_secs(180),
    );

    let doc = json(&out, 0);
    assert_eq!(
        doc["replicas"],
        "watching 1 replica(s) found by SHOW REPLICA HOSTS, --max-lag 1s"
    );
    // The replica is reached with the primary's user and database.
    assert!(
        stderr(&out).contains(&format!(
            "pausing: replica {}@127.0.0.1:{port}/{} lag=",
            primary.url.username(),
            db.name
        )),
        "{}",
        stderr(&out)
    );
    assert!(doc["pauses"].as_u64().unwrap() >= 1);
    assert_eq!(doc["visits"], s.visits);
    assert_eq!(doc["verify"]["ok"], true);

    drop(restore);
    assert_replica_equals_primary(primary, replica, &db.name);
}
