//! Erasure semantics on our Matomo 5 schema: timezones, plugin tables, exact matching.

mod common;
use common::*;

fn erase_json(db: &ScratchDb, extra: &[&str], execute: bool) -> serde_json::Value {
    let url = db.url();
    let mut args = vec!["erase", "--database-url", url.as_str(), "--json"];
    args.extend_from_slice(extra);
    if execute {
        args.push("--execute");
    }
    run_json(&args, 0)
}

#[test]
fn half_hour_offset_site_queues_the_local_date() {
    let db = ScratchDb::with_schema("tz55", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC+5.5");
    // 18:40 UTC is 00:10 the next day at UTC+5:30; Matomo's own rule uses the last action.
    d.visit(
        1,
        1,
        Some("kiran"),
        "2024-03-31 18:35:00",
        "2024-03-31 18:40:00",
    );
    d.action(1, "2024-03-31 18:35:00");
    d.action(1, "2024-03-31 18:40:00");
    d.visit(
        2,
        1,
        Some("kiran"),
        "2024-03-31 10:00:00",
        "2024-03-31 10:05:00",
    );
    d.action(2, "2024-03-31 10:00:00");
    let doc = erase_json(&db, &["--user-id", "kiran"], true);
    assert_eq!(doc["visits"], 2);
    assert_eq!(site_days(&doc), ["1 2024-03-31", "1 2024-04-01"]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_option WHERE option_name LIKE '%report\\_to\\_invalidate\\_1\\_2024-04-01%'"),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_option WHERE option_name LIKE '%report\\_to\\_invalidate\\_1\\_2024-03-31%'"),
        1
    );
}

#[test]
fn dst_zone_uses_the_offset_in_force_on_each_date() {
    let db = ScratchDb::with_schema("tzdst", "");
    let d = Data::new(&db, "");
    d.site(7, "Europe/Berlin");
    // Winter (UTC+1): 22:30 UTC is 23:30 the same day.
    d.visit(
        10,
        7,
        Some("dst"),
        "2024-03-30 22:30:00",
        "2024-03-30 22:30:00",
    );
    // Summer (UTC+2) from 2024-03-31: 22:30 UTC is 00:30 the next day.
    d.visit(
        11,
        7,
        Some("dst"),
        "2024-03-31 22:30:00",
        "2024-03-31 22:30:00",
    );
    let doc = erase_json(&db, &["--user-id", "dst"], false);
    assert_eq!(site_days(&doc), ["7 2024-03-30", "7 2024-04-01"]);
}

#[test]
fn visit_across_local_midnight_queues_every_day_it_touched() {
    let db = ScratchDb::with_schema("midnight", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(3, "America/New_York");
    // New York is UTC-5 in January: 04:50 UTC = 23:50 local on the 14th, 05:20 UTC = 00:20
    // on the 15th. Matomo queues only the 15th (last action); the 14th's reports hold the
    // first action and a conversion too.
    d.visit(
        5,
        3,
        Some("night.owl"),
        "2024-01-15 04:50:00",
        "2024-01-15 05:20:00",
    );
    d.action(5, "2024-01-15 04:50:00");
    d.conversion(5, "2024-01-15 04:55:00", 1);
    d.action(5, "2024-01-15 05:20:00");
    // Another person on the same days keeps everything.
    d.visit(
        6,
        3,
        Some("other"),
        "2024-01-15 04:50:00",
        "2024-01-15 05:20:00",
    );
    d.action(6, "2024-01-15 04:50:00");
    let doc = erase_json(&db, &["--user-id", "night.owl"], true);
    assert_eq!(site_days(&doc), ["3 2024-01-14", "3 2024-01-15"]);
    assert_eq!(doc["rows"]["log_link_visit_action"], 2);
    assert_eq!(doc["rows"]["log_conversion"], 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_link_visit_action WHERE idvisit = 6"),
        1
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 1);
}

#[test]
fn plugin_leaf_rows_are_deleted_through_their_parents() {
    let db = ScratchDb::with_schema("plugin", "p_");
    let d = Data::new(&db, "p_");
    d.site(1, "UTC");
    d.visit(
        1,
        1,
        Some("leaf.subject"),
        "2024-05-01 10:00:00",
        "2024-05-01 10:10:00",
    );
    d.visit(
        2,
        1,
        Some("someone.else"),
        "2024-05-01 10:00:00",
        "2024-05-01 10:10:00",
    );
    for v in [1, 2] {
        db.sql(&format!(
            "INSERT INTO p_log_hsr (idloghsr, idsite, idvisit, idhsrview, server_time) VALUES \
             ({v}0, 1, {v}, 'abcdef', '2024-05-01 10:00:00'), ({v}1, 1, {v}, 'abcdeg', '2024-05-01 10:01:00');
             INSERT INTO p_log_hsr_event (idloghsr, idhsrblob) VALUES ({v}0, 1), ({v}0, 1), ({v}1, 1);
             INSERT INTO p_log_hsr_site (idsitehsr, idloghsr) VALUES (1, {v}0), (2, {v}1);
             INSERT INTO p_log_form (idlogform, idsiteform, idsite, idvisit, idvisitor, first_idformview, \
               last_idformview, form_last_action_time) VALUES ({v}, 1, 1, {v}, X'0000000000000000', 'a', 'b', '2024-05-01 10:00:00');
             INSERT INTO p_log_form_page (idlogformpage, idlogform, idaction_url) VALUES ({v}, {v}, 1);
             INSERT INTO p_log_form_field (idlogform, idlogformpage, idformview, field_name) VALUES \
               ({v}, {v}, 'a', 'email'), ({v}, {v}, 'a', 'name');"
        ));
    }
    db.sql("INSERT INTO p_log_hsr_blob (idhsrblob, hash, value) VALUES (1, 42, 'shared')");

    let out = run(&["inspect", "--database-url", &db.url()]);
    let text = stdout(&out);
    assert!(text.contains("log_hsr_event"), "{text}");
    assert!(
        text.contains("log_hsr_event.idloghsr -> log_hsr.idloghsr"),
        "{text}"
    );
    assert!(
        text.contains("log_form_field.idlogform -> log_form.idlogform"),
        "{text}"
    );

    let doc = erase_json(&db, &["--user-id", "leaf.subject"], true);
    assert_eq!(doc["rows"]["log_hsr_event"], 3);
    assert_eq!(doc["rows"]["log_hsr_site"], 2);
    assert_eq!(doc["rows"]["log_hsr"], 2);
    assert_eq!(doc["rows"]["log_form_field"], 2);
    assert_eq!(doc["rows"]["log_form_page"], 1);
    assert_eq!(doc["rows"]["log_form"], 1);
    assert!(
        doc["rows"].get("log_hsr_blob").is_none(),
        "shared blobs are never deleted"
    );
    // The other visitor's rows are all there; the shared blob too.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM p_log_hsr WHERE idvisit = 2"),
        2
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM p_log_hsr_event"), 3);
    assert_eq!(db.count("SELECT COUNT(*) FROM p_log_hsr_site"), 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM p_log_form_field"), 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM p_log_form_page"), 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM p_log_hsr_blob"), 1);
}

#[test]
fn exact_match_keeps_ids_equal_only_under_the_collation() {
    let db = ScratchDb::with_schema("near", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    d.visit(
        1,
        1,
        Some("anna@example.org"),
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
    );
    d.visit(
        2,
        1,
        Some("Anna@Example.org"),
        "2024-01-01 11:00:00",
        "2024-01-01 11:00:00",
    );
    d.visit(
        3,
        1,
        Some("anna@example.org "),
        "2024-01-01 12:00:00",
        "2024-01-01 12:00:00",
    );
    d.visit(
        4,
        1,
        Some("ánna@example.org"),
        "2024-01-01 13:00:00",
        "2024-01-01 13:00:00",
    );
    d.visit(
        5,
        1,
        Some("bob@example.org"),
        "2024-01-01 13:00:00",
        "2024-01-01 13:00:00",
    );

    let plan = erase_json(
        &db,
        &["--user-id", "anna@example.org", "--lookup", "scan"],
        false,
    );
    assert_eq!(plan["visits"], 1);
    assert_eq!(plan["near_matches"]["total"], 3);
    let mut by: Vec<String> = plan["near_matches"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{} {}", n["idvisit"], n["differs_by"].as_str().unwrap()))
        .collect();
    by.sort();
    assert_eq!(
        by,
        [
            "2 case",
            "3 trailing spaces",
            "4 accents or other characters"
        ]
    );
    // Raw ids never reach the plan.
    assert!(!plan.to_string().contains("Anna@Example.org"));

    let done = erase_json(&db, &["--user-id", "anna@example.org"], true);
    assert_eq!(done["visits"], 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 4);

    let all = erase_json(
        &db,
        &["--user-id", "anna@example.org", "--match", "collation"],
        true,
    );
    assert_eq!(all["visits"], 3);
    assert_eq!(
        db.scalar("SELECT GROUP_CONCAT(idvisit) FROM matomo_log_visit"),
        "5"
    );
}

#[test]
fn ids_with_quotes_ampersands_and_long_tails_match_as_matomo_stored_them() {
    let db = ScratchDb::with_schema("escape", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    // Stored as the tracker stores them: escaped, cut to 200 characters; idvisitor from the
    // uncut escaped string.
    let long_typed = format!("{}'x", "y".repeat(198));
    let long_escaped_uncut = format!("{}&#039;x", "y".repeat(198));
    let long_stored: String = long_escaped_uncut.chars().take(200).collect();
    db.sql(&format!(
        "INSERT INTO matomo_log_visit (idvisit, idsite, idvisitor, visit_last_action_time, config_id, location_ip, \
         user_id, visit_first_action_time, visit_total_time) VALUES \
         (1, 1, UNHEX(LEFT(SHA1('o&#039;brien &amp; co'), 16)), '2024-01-01 10:00:00', X'00', X'00', 'o&#039;brien &amp; co', '2024-01-01 10:00:00', 0), \
         (2, 1, UNHEX(LEFT(SHA1('{long_escaped_uncut}'), 16)), '2024-01-01 10:00:00', X'00', X'00', '{long_stored}', '2024-01-01 10:00:00', 0), \
         (3, 1, UNHEX(LEFT(SHA1('o''brien & co'), 16)), '2024-01-01 10:00:00', X'00', X'00', 'o''brien & co', '2024-01-01 10:00:00', 0)"
    ));
    for lookup in ["index", "scan"] {
        let a = erase_json(
            &db,
            &["--user-id", "o'brien & co", "--lookup", lookup],
            false,
        );
        assert_eq!(
            a["visits"], 1,
            "{lookup}: only the escaped stored form is Matomo's"
        );
        let b = erase_json(&db, &["--user-id", &long_typed, "--lookup", lookup], false);
        assert_eq!(b["visits"], 1, "{lookup}: long id cut after escaping");
    }
    let done = erase_json(
        &db,
        &["--user-id", "o'brien & co", "--user-id", &long_typed],
        true,
    );
    assert_eq!(done["visits"], 2);
    assert_eq!(
        db.scalar("SELECT GROUP_CONCAT(idvisit) FROM matomo_log_visit"),
        "3"
    );
}

#[test]
fn visitor_id_and_visit_id_selectors_and_site_filter() {
    let db = ScratchDb::with_schema("selectors", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    d.site(2, "UTC");
    d.visit(
        1,
        1,
        Some("v"),
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
    );
    d.visit(
        2,
        2,
        Some("v"),
        "2024-01-02 10:00:00",
        "2024-01-02 10:00:00",
    );
    d.visit(3, 2, None, "2024-01-03 10:00:00", "2024-01-03 10:00:00");
    let hex = db.scalar("SELECT LOWER(HEX(idvisitor)) FROM matomo_log_visit WHERE idvisit = 1");
    let only_site2 = erase_json(&db, &["--visitor-id", &hex, "--site", "2"], false);
    assert_eq!(only_site2["visits"], 1);
    assert_eq!(only_site2["visits_per_site"]["2"], 1);
    let by_id = erase_json(&db, &["--visit-id", "3", "--visit-id", "1"], true);
    assert_eq!(by_id["visits"], 2);
    assert_eq!(
        db.scalar("SELECT GROUP_CONCAT(idvisit) FROM matomo_log_visit"),
        "2"
    );
}

#[test]
fn user_ids_file_and_stdin_give_the_same_run() {
    let db = ScratchDb::with_fixture("idsfile", THREE_SITES);
    let ids = db.sql("SELECT DISTINCT user_id FROM matomo_log_visit WHERE user_id IS NOT NULL ORDER BY user_id LIMIT 40");
    let dir = std::env::temp_dir().join(format!("me_ids_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ids.txt");
    std::fs::write(&file, format!("{ids}\n\nnobody@example.org\n")).unwrap();
    let expected = db.count(&format!(
        "SELECT COUNT(*) FROM matomo_log_visit WHERE user_id IN ({})",
        ids.lines()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let from_file = erase_json(&db, &["--user-ids-file", file.to_str().unwrap()], false);
    assert_eq!(from_file["visits"], expected);
    assert_eq!(from_file["subjects"]["user_ids"], 41);
    assert_eq!(from_file["subjects"]["user_ids_without_visits"], 1);

    let mut child = std::process::Command::new(bin())
        .args([
            "erase",
            "--database-url",
            &db.url(),
            "--json",
            "--user-ids-file",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read(&file).unwrap().as_slice())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin["visits"], expected);
    assert_eq!(from_stdin["run_key"], from_file["run_key"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn visit_ids_file_is_streamed_and_bad_lines_are_named() {
    let db = ScratchDb::with_schema("visitfile", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    db.sql(
        "INSERT INTO matomo_log_visit (idvisit, idsite, idvisitor, visit_last_action_time, config_id, location_ip, \
         visit_first_action_time, visit_total_time) SELECT seq, 1, X'00', '2024-01-01', X'00', X'00', '2024-01-01', 0 \
         FROM seq_1_to_2500",
    );
    let dir = std::env::temp_dir().join(format!("me_vf_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("visits.txt");
    let ids: String = (1..=2500)
        .filter(|v| v % 2 == 0)
        .map(|v| format!("{v}\n"))
        .collect();
    std::fs::write(&file, ids).unwrap();
    let doc = erase_json(
        &db,
        &[
            "--visit-ids-file",
            file.to_str().unwrap(),
            "--chunk-time",
            "0",
        ],
        true,
    );
    assert_eq!(doc["visits"], 1250);
    assert_eq!(doc["subjects"]["visit_ids"], 1250);
    assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 1250);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit WHERE idvisit % 2 = 0"),
        0
    );

    std::fs::write(&file, "1\n3\nabc\n").unwrap();
    let o = run(&[
        "erase",
        "--database-url",
        &db.url(),
        "--visit-ids-file",
        file.to_str().unwrap(),
        "--execute",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("entry 3 of the visit-ids file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM matomo_log_visit"),
        1250,
        "nothing erased on bad input"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_key_ignores_order_and_an_empty_ids_file_is_refused() {
    let db = ScratchDb::with_fixture("runkey", THREE_SITES);
    let dir = std::env::temp_dir().join(format!("me_rk_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, empty) = (dir.join("a.txt"), dir.join("b.txt"), dir.join("empty.txt"));
    std::fs::write(&a, "alice.peer@example.org\nnobody@example.org\n").unwrap();
    std::fs::write(&b, "nobody@example.org\nalice.peer@example.org\n").unwrap();
    std::fs::write(&empty, "\n\n").unwrap();
    let ka = erase_json(
        &db,
        &[
            "--user-ids-file",
            a.to_str().unwrap(),
            "--site",
            "1",
            "--site",
            "3",
        ],
        false,
    );
    let kb = erase_json(
        &db,
        &[
            "--user-ids-file",
            b.to_str().unwrap(),
            "--site",
            "3",
            "--site",
            "1",
        ],
        false,
    );
    assert_eq!(ka["run_key"], kb["run_key"]);
    assert_eq!(ka["visits"], 8);
    let o = run(&[
        "erase",
        "--database-url",
        &db.url(),
        "--user-ids-file",
        empty.to_str().unwrap(),
        "--execute",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds no id"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}
