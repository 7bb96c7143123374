//! Erasing on the real dumps that Matomo itself wrote.

mod common;
use common::*;
use serde_json::Value;

fn expected_alice() -> Value {
    let text = std::fs::read_to_string(fixture("matomo-5.0.2-three-sites.alice.expected.json"))
        .expect("expected file");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn alice_is_erased_exactly_as_matomo_did_and_nobody_else_changes() {
    let db = ScratchDb::with_fixture("alice", THREE_SITES);
    let url = db.url();
    let expected = expected_alice();
    let expected_visits: Vec<u64> = expected["visits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["idvisit"].as_u64().unwrap())
        .collect();
    let tables: Vec<String> = CORE_LOG_TABLES
        .iter()
        .map(|t| format!("matomo_{t}"))
        .collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let others_before = db.checksums(&tables, &expected_visits);
    let option_before = db.count("SELECT COUNT(*) FROM matomo_option");
    let actions_before = db.checksums(&["matomo_log_action"], &[]);

    // The plan writes nothing and predicts exactly what Matomo deleted.
    let plan = run_json(
        &[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
            "--json",
        ],
        0,
    );
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["visits"], 12);
    for (t, n) in expected["rows_deleted"].as_object().unwrap() {
        assert_eq!(plan["rows"][t], *n, "planned rows of {t}");
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_option"),
        option_before
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 3526);

    let done = run_json(
        &[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
            "--execute",
            "--json",
        ],
        0,
    );
    assert_eq!(done["executed"], true);
    assert_eq!(done["visits"], 12);
    assert_eq!(done["visits_per_site"], plan["visits_per_site"]);
    assert_eq!(done["visits_per_site"]["2"], 4);
    for (t, n) in expected["rows_deleted"].as_object().unwrap() {
        assert_eq!(done["rows"][t], *n, "deleted rows of {t}");
    }
    assert_eq!(done["verify"]["ok"], true);

    // Exactly Matomo's visits are gone.
    let ids = expected_visits
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for t in CORE_LOG_TABLES {
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM matomo_{t} WHERE idvisit IN ({ids})"
            )),
            0,
            "{t} still has rows of alice's visits"
        );
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 3526 - 12);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id = 'alice.peer@example.org'"),
        0
    );

    // Every other row of every log table is unchanged.
    assert_eq!(db.checksums(&tables, &expected_visits), others_before);

    // Every site-day Matomo queued is queued, as Matomo's own rows are shaped.
    let ours = site_days(&done);
    for d in expected["site_days_to_invalidate"].as_array().unwrap() {
        let (site, date) = (d["idsite"].as_u64().unwrap(), d["date"].as_str().unwrap());
        assert!(
            ours.contains(&format!("{site} {date}")),
            "site-day {site} {date} not reported"
        );
        let n = db.count(&format!(
            "SELECT COUNT(*) FROM matomo_option WHERE option_name LIKE \
             '%report\\_to\\_invalidate\\_{site}\\_{date}%' AND option_value = '1' AND autoload = 0"
        ));
        assert_eq!(n, 1, "option row for {site} {date}");
    }
    // No visit of alice crosses a local midnight: the set is exactly Matomo's.
    assert_eq!(
        ours.len(),
        expected["site_days_to_invalidate"]
            .as_array()
            .unwrap()
            .len()
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_option") - option_before,
        10
    );
    // log_action is never touched.
    assert_eq!(db.checksums(&["matomo_log_action"], &[]), actions_before);

    // A second run finds nothing more and changes nothing.
    let again = run_json(
        &[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
            "--execute",
            "--json",
        ],
        0,
    );
    assert_eq!(again["visits"], 0);
    assert_eq!(again["earlier_runs"]["visits"], 12);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_option") - option_before,
        10
    );
}

#[test]
fn find_lists_alices_visits_with_local_times_and_rows() {
    let db = ScratchDb::with_fixture("findalice", THREE_SITES);
    let doc = run_json(
        &[
            "find",
            "--database-url",
            &db.url(),
            "--user-id",
            "alice.peer@example.org",
            "--json",
        ],
        0,
    );
    let visits = doc["visits"].as_array().unwrap();
    assert_eq!(visits.len(), 12);
    assert_eq!(doc["lookup"]["mode"], "index");
    // 3,526 visits, fewer than the two samples of 2,000: each of the 975 visits with a user id
    // is counted once.
    let with_uid = db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE user_id IS NOT NULL");
    assert_eq!(with_uid, 975);
    let reason = doc["lookup"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("all {with_uid} sampled visits")),
        "{reason}"
    );
    // Visit 1270 on the New York site: 00:26 UTC is the evening before, local time.
    let v = visits.iter().find(|v| v["idvisit"] == 1270).unwrap();
    assert_eq!(v["idsite"], 2);
    assert_eq!(v["last_action_utc"], "2026-11-24 00:26:43");
    assert_eq!(v["last_action_local"], "2026-11-23 19:26:43");
    let total: u64 = visits
        .iter()
        .map(|v| v["rows"]["log_link_visit_action"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 78);

    // The text lists the same visit with its four times, first and last, UTC and local.
    let o = run(&[
        "find",
        "--database-url",
        &db.url(),
        "--user-id",
        "alice.peer@example.org",
    ]);
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("1270"))
        .unwrap_or_else(|| panic!("no line for visit 1270:\n{text}"));
    let times: Vec<&str> = line.split_whitespace().skip(2).take(8).collect();
    let want = |k: &str| v[k].as_str().unwrap().split(' ').collect::<Vec<_>>();
    let expected: Vec<&str> = [
        "first_action_utc",
        "last_action_utc",
        "first_action_local",
        "last_action_local",
    ]
    .iter()
    .flat_map(|k| want(k))
    .collect();
    assert_eq!(times, expected, "{line}");
    // find writes nothing.
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 3526);
}

#[test]
fn scan_lookup_finds_the_same_visits_as_the_index() {
    let db = ScratchDb::with_fixture("scanalice", THREE_SITES);
    let idx = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            "alice.peer@example.org",
            "--lookup",
            "index",
            "--json",
        ],
        0,
    );
    let scan = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            "alice.peer@example.org",
            "--lookup",
            "scan",
            "--json",
        ],
        0,
    );
    assert_eq!(scan["lookup"]["mode"], "scan");
    assert_eq!(idx["visits"], 12);
    assert_eq!(scan["visits"], idx["visits"]);
    assert_eq!(scan["rows"], idx["rows"]);
    assert_eq!(scan["near_matches"]["checked"], true);
}

#[test]
fn escaped_user_id_in_omnifixture_is_erased_when_given_unescaped() {
    let db = ScratchDb::with_fixture("omni", OMNI);
    let stored = "&lt;script&gt;_x(13)&lt;/script&gt;";
    let n = db.count(&format!(
        "SELECT COUNT(*) FROM log_visit WHERE user_id = '{stored}'"
    ));
    assert!(n > 0, "fixture has visits of the escaped id");
    let ids = db.sql(&format!(
        "SELECT idvisit FROM log_visit WHERE user_id = '{stored}'"
    ));
    let ids: Vec<u64> = ids.lines().map(|l| l.trim().parse().unwrap()).collect();
    let tables = CORE_LOG_TABLES.to_vec();
    let others_before = db.checksums(&tables, &ids);
    let actions = db.count(&format!(
        "SELECT COUNT(*) FROM log_link_visit_action WHERE idvisit IN ({})",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));

    // Empty prefix, found from the schema; then given explicitly as ''.
    let plan = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            "<script>_x(13)</script>",
            "--json",
        ],
        0,
    );
    assert_eq!(plan["prefix"], "");
    assert_eq!(plan["visits"], n);
    let done = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--prefix",
            "",
            "--user-id",
            "<script>_x(13)</script>",
            "--execute",
            "--json",
        ],
        0,
    );
    assert_eq!(done["visits"], n);
    assert_eq!(done["rows"]["log_link_visit_action"], actions);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM log_visit WHERE user_id = '{stored}'"
        )),
        0
    );
    assert_eq!(db.checksums(&tables, &ids), others_before);
    // The id typed already escaped is the same subject: nothing left, nothing else erased.
    let again = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            stored,
            "--json",
        ],
        0,
    );
    assert_eq!(again["visits"], 0);
}

/// Matomo's archiver may take up a row it queued itself while the chunk is still open, and
/// re-archive from data that still holds the subject's visits; a row of the tool's own, written
/// in the chunk, is only seen once the visits are gone. Matomo's row is left as it is.
#[test]
fn a_site_day_matomo_already_queued_gets_a_row_of_the_tools_own_too() {
    let db = ScratchDb::with_fixture("omniinv", OMNI);
    // A site-day that Matomo already queued in the fixture.
    let existing = db.scalar(
        "SELECT option_name FROM `option` WHERE option_name LIKE '%report\\_to\\_invalidate\\_%' \
         ORDER BY option_name LIMIT 1",
    );
    let rest = &existing[existing.find("report_to_invalidate_").unwrap() + 21..];
    let mut parts = rest.split('_');
    let (site, date) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    );
    let visit = db.scalar(&format!(
        "SELECT idvisit FROM log_visit WHERE idsite = {site} AND DATE(visit_last_action_time) = '{date}' \
         AND DATE(visit_first_action_time) = '{date}' LIMIT 1"
    ));
    assert!(
        !visit.is_empty(),
        "the fixture has a visit on a queued site-day"
    );
    let before = db.count("SELECT COUNT(*) FROM `option`");
    let done = run_json(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--visit-id",
            &visit,
            "--execute",
            "--json",
            "--chunk-time",
            "0",
        ],
        0,
    );
    assert_eq!(done["visits"], 1);
    assert!(site_days(&done).contains(&format!("{site} {date}")));
    let queued_for_day = db.count(&format!(
        "SELECT COUNT(*) FROM `option` WHERE option_name LIKE '%report\\_to\\_invalidate\\_{site}\\_{date}%'"
    ));
    assert_eq!(queued_for_day, 2, "Matomo's row and the tool's");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM `option` WHERE option_name = \
             'mErs_report_to_invalidate_{site}_{date}_matomoerase'"
        )),
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM `option` WHERE option_name = '{existing}'"
        )),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM `option`") - before,
        done["invalidations_inserted"].as_u64().unwrap()
    );
}

#[test]
fn a_rerun_repairs_what_verify_found_and_says_what_it_repaired() {
    let db = ScratchDb::with_fixture("repair", THREE_SITES);
    let url = db.url();
    let erase = [
        "erase",
        "--database-url",
        &url,
        "--user-id",
        "alice.peer@example.org",
        "--execute",
        "--json",
    ];
    let first = run_json(&erase, 0);
    assert_eq!(first["visits"], 12);
    let erased: u64 = first["site_days"].as_array().unwrap().len() as u64;

    // A queued day vanishes unprocessed, and a late tracker request reaches an erased visit.
    let gone = "mErs_report_to_invalidate_3_2026-11-28_matomoerase";
    db.sql(&format!(
        "DELETE FROM matomo_option WHERE option_name = '{gone}'"
    ));
    let idvisit = first_erased_visit(&db);
    db.sql(&format!(
        "INSERT INTO matomo_log_link_visit_action (idsite, idvisitor, idvisit, server_time, idaction_url) \
         VALUES (1, X'0000000000000001', {idvisit}, '2026-11-28 10:00:00', 1)"
    ));
    let o = run(&[
        "verify",
        "--database-url",
        &url,
        "--user-id",
        "alice.peer@example.org",
    ]);
    assert_eq!(o.status.code(), Some(5));
    let text = stdout(&o);
    assert!(text.contains("site 3 2026-11-28"), "{text}");
    assert!(
        text.contains("1 rows of erased visits remain in log_link_visit_action"),
        "{text}"
    );
    assert!(
        text.contains("run the erase command for these subjects with --execute (again"),
        "{text}"
    );

    let again = run_json(&erase, 0);
    assert_eq!(again["visits"], 0);
    assert_eq!(again["swept_rows"], 1);
    assert_eq!(again["invalidations_inserted"], 1);
    let requeued: Vec<String> = again["requeued_site_days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["idsite"], d["date"].as_str().unwrap()))
        .collect();
    assert_eq!(requeued, ["3 2026-11-28"]);
    assert_eq!(again["verify"]["ok"], true);
    assert_eq!(again["verify"]["site_days_checked"], erased);
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM matomo_option WHERE option_name = '{gone}'"
        )),
        1
    );
}

/// The lowest visit id the journal lists as erased.
fn first_erased_visit(db: &ScratchDb) -> u64 {
    let ids = db.scalar("SELECT idvisits FROM matomo_matomo_erase_journal ORDER BY chunk LIMIT 1");
    ids.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .min()
        .expect("an erased visit id in the journal")
}
