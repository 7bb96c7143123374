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
    // The same key for the Matomo version as in the erase receipt.
    let inspected = run_json(&["inspect", "--database-url", &db.url(), "--json"], 0);
    assert_eq!(
        inspected["matomo_version"],
        db.scalar("SELECT option_value FROM p_option WHERE option_name = 'version_core'")
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

/// One archive row of our schema's January 2024 tables: a done flag in the numeric table and,
/// with `blob`, one report in the blob table.
fn archive(
    db: &ScratchDb,
    idarchive: u32,
    name: &str,
    idsite: u32,
    period: u8,
    dates: (&str, &str),
    blob: bool,
) {
    let (date1, date2) = dates;
    db.sql(&format!(
        "INSERT INTO matomo_archive_numeric_2024_01 VALUES ({idarchive}, '{name}', {idsite}, \
         '{date1}', '{date2}', {period}, '2024-02-01 00:00:00', 1), ({idarchive}, 'nb_visits', \
         {idsite}, '{date1}', '{date2}', {period}, '2024-02-01 00:00:00', 7)"
    ));
    if blob {
        db.sql(&format!(
            "INSERT INTO matomo_archive_blob_2024_01 VALUES ({idarchive}, 'UserId_users', \
             {idsite}, '{date1}', '{date2}', {period}, '2024-02-01 00:00:00', 'report')"
        ));
    }
}

fn archive_ids(db: &ScratchDb, table: &str) -> Vec<u32> {
    db.sql(&format!(
        "SELECT DISTINCT idarchive FROM matomo_archive_{table}_2024_01 ORDER BY 1"
    ))
    .lines()
    .map(|l| l.parse().unwrap())
    .collect()
}

/// A site with one other visit on 2024-01-11 and the subject's visit on 2024-01-10 (New York
/// time), a site where the subject's visit is the only one of the year, and a third site.
fn sites_with_archives(hint: &str) -> ScratchDb {
    let db = ScratchDb::with_schema(hint, "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "America/New_York");
    d.site(2, "UTC");
    d.site(3, "UTC");
    // New York is UTC-5 in January: 2024-01-10 local runs from 05:00 UTC to 05:00 the next day.
    d.visit(
        1,
        1,
        Some("zoe"),
        "2024-01-10 15:00:00",
        "2024-01-10 15:10:00",
    );
    d.action(1, "2024-01-10 15:10:00");
    d.visit(2, 1, None, "2024-01-11 05:00:00", "2024-01-11 05:00:00");
    d.visit(3, 1, None, "2024-01-10 04:59:00", "2024-01-10 04:59:59");
    d.visit(
        4,
        2,
        Some("zoe"),
        "2024-01-20 12:00:00",
        "2024-01-20 12:00:00",
    );
    d.visit(5, 3, None, "2024-01-10 12:00:00", "2024-01-10 12:00:00");
    // (idarchive, done flag, idsite, period, date1, date2, with a blob row)
    let archives = [
        (1, "done", 1, 1, "2024-01-10", "2024-01-10", true),
        (2, "done5f4f12b3", 1, 1, "2024-01-10", "2024-01-10", false),
        (3, "done", 1, 2, "2024-01-08", "2024-01-14", true),
        (4, "done", 1, 3, "2024-01-01", "2024-01-31", false),
        (5, "done", 1, 1, "2024-01-11", "2024-01-11", false),
        (6, "done", 2, 1, "2024-01-20", "2024-01-20", true),
        (7, "done.Goals", 2, 2, "2024-01-15", "2024-01-21", false),
        (8, "done", 2, 3, "2024-01-01", "2024-01-31", false),
        (9, "done", 3, 1, "2024-01-10", "2024-01-10", true),
        (10, "done", 2, 4, "2024-01-01", "2024-12-31", false),
        (11, "done", 2, 5, "2024-01-01", "2024-01-31", false),
    ];
    for (id, name, idsite, period, date1, date2, blob) in archives {
        archive(&db, id, name, idsite, period, (date1, date2), blob);
    }
    db
}

#[test]
fn archives_of_periods_left_without_visits_are_dropped_and_others_kept() {
    let db = sites_with_archives("emptied");
    let doc = erase_json(&db, &["--user-id", "zoe"], true);
    assert_eq!(doc["visits"], 2);
    assert_eq!(doc["verify"]["ok"], true, "{doc}");

    // Site 1's 2024-01-10 has no visit left (the visits either side are the 9th and the 11th
    // in New York); its week, month and year still have visits. Site 2 has none left in 2024.
    // Range archives and other sites' archives stay.
    assert_eq!(archive_ids(&db, "numeric"), [3, 4, 5, 9, 11]);
    assert_eq!(archive_ids(&db, "blob"), [3, 9]);
    assert_eq!(doc["archives_dropped"], 6);
    let emptied: Vec<String> = doc["emptied_periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {}",
                p["idsite"],
                p["period"],
                p["date1"].as_str().unwrap(),
                p["date2"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        emptied,
        [
            "1 1 2024-01-10 2024-01-10",
            "2 1 2024-01-20 2024-01-20",
            "2 2 2024-01-15 2024-01-21",
            "2 3 2024-01-01 2024-01-31",
            "2 4 2024-01-01 2024-12-31",
        ]
    );
    // The days are queued all the same, as Matomo's tool does.
    assert_eq!(site_days(&doc), ["1 2024-01-10", "2 2024-01-20"]);

    // The queued days vanish: site 1's week and month, which still have visits, keep their
    // old archives, so verify says the day was not taken up.
    db.sql("DELETE FROM matomo_option WHERE option_name LIKE '%report\\_to\\_invalidate\\_%'");
    let url = db.url();
    let verify = [
        "verify",
        "--database-url",
        &url,
        "--json",
        "--user-id",
        "zoe",
    ];
    let v = run_json(&verify, 5);
    let missing: Vec<String> = v["site_days_missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["idsite"], d["date"].as_str().unwrap()))
        .collect();
    assert_eq!(missing, ["1 2024-01-10"], "{v}");

    // As core:archive does: the emptied day is dropped unarchived, the week and month that
    // have visits are archived anew. Site 2 had nothing left to archive.
    db.sql(
        "INSERT INTO matomo_archive_numeric_2024_01 VALUES \
         (20, 'done', 1, '2024-01-08', '2024-01-14', 2, UTC_TIMESTAMP(), 1), \
         (21, 'done', 1, '2024-01-01', '2024-01-31', 3, UTC_TIMESTAMP(), 1)",
    );
    let v = run_json(&verify, 0);
    assert_eq!(v["site_days_processed"], 2, "{v}");
}

#[test]
fn keep_archives_leaves_every_archive_and_verify_then_sees_the_stale_day() {
    let db = sites_with_archives("keeparch");
    let doc = erase_json(&db, &["--user-id", "zoe", "--keep-archives"], true);
    assert_eq!(doc["visits"], 2);
    assert_eq!(doc["archives_dropped"], 0);
    assert_eq!(doc["archives_kept"], "--keep-archives");
    assert_eq!(archive_ids(&db, "numeric"), (1..=11).collect::<Vec<_>>());

    db.sql("DELETE FROM matomo_option WHERE option_name LIKE '%report\\_to\\_invalidate\\_%'");
    let url = db.url();
    let v = run_json(
        &[
            "verify",
            "--database-url",
            &url,
            "--json",
            "--user-id",
            "zoe",
        ],
        5,
    );
    assert_eq!(v["site_days_missing"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn archives_are_kept_with_the_grant_to_give_when_the_user_may_not_delete_them() {
    let db = sites_with_archives("archgrant");
    let user = format!("me_arch_{}", std::process::id());
    let mut grants = format!(
        "DROP USER IF EXISTS '{user}'@'127.0.0.1'; CREATE USER '{user}'@'127.0.0.1'; \
         GRANT SELECT ON `{0}`.* TO '{user}'@'127.0.0.1'; \
         GRANT SELECT, INSERT, CREATE ON `{0}`.`matomo_matomo_erase_journal` TO '{user}'@'127.0.0.1';",
        db.name
    );
    for t in db
        .sql("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name NOT LIKE 'matomo\\_archive\\_%'")
        .lines()
    {
        grants.push_str(&format!(
            "GRANT SELECT, INSERT, DELETE ON `{}`.`{t}` TO '{user}'@'127.0.0.1';",
            db.name
        ));
    }
    mariadb(None, &grants);
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name);
    let o = run(&[
        "erase",
        "--database-url",
        &url,
        "--user-id",
        "zoe",
        "--execute",
        "--json",
    ]);
    mariadb(None, &format!("DROP USER IF EXISTS '{user}'@'127.0.0.1'"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["visits"], 2);
    assert_eq!(doc["archives_dropped"], 0);
    let kept = doc["archives_kept"].as_str().unwrap();
    assert!(
        kept.contains("DELETE command denied") && kept.contains("GRANT SELECT, DELETE ON"),
        "{kept}"
    );
    assert!(stderr(&o).contains("archives of periods left without visits are kept"));
    assert_eq!(archive_ids(&db, "numeric"), (1..=11).collect::<Vec<_>>());
}

#[test]
fn very_verbose_logs_each_statement_but_no_identifier() {
    let db = ScratchDb::with_schema("vvsql", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    let url = db.url();
    for lookup in ["index", "scan"] {
        d.visit(
            1,
            1,
            Some("hara-secret-7"),
            "2024-01-10 10:00:00",
            "2024-01-10 10:00:00",
        );
        let o = run(&[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "hara-secret-7",
            "--lookup",
            lookup,
            "--execute",
            "-vv",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let log = stderr(&o);
        assert_eq!(db.count("SELECT COUNT(*) FROM matomo_log_visit"), 0);
        let statements = log.lines().filter(|l| l.contains("db.statement")).count();
        assert!(statements > 10, "{statements} statements logged:\n{log}");
        if lookup == "index" {
            assert!(
                log.contains("DELETE FROM `matomo_log_visit` WHERE idvisit IN (1)"),
                "{log}"
            );
        }
        assert!(
            !log.contains("hara-secret"),
            "an identifier reached the log:\n{log}"
        );
    }
}

#[test]
fn a_near_match_names_the_subject_it_is_near_and_counts_it_matched_when_erased() {
    let db = ScratchDb::with_schema("nearsubj", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    // Only the lower-case form is stored; the request holds the capitalised one.
    d.visit(
        1,
        1,
        Some("bob.rossi@example.org"),
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
    );
    d.visit(
        2,
        1,
        Some("carol@example.org"),
        "2024-01-01 11:00:00",
        "2024-01-01 11:00:00",
    );
    let args = [
        "--user-id",
        "Bob.Rossi@example.org",
        "--user-id",
        "nobody@example.org",
        "--lookup",
        "scan",
    ];

    let plan = erase_json(&db, &args, false);
    assert_eq!(plan["visits"], 0);
    assert_eq!(plan["subjects"]["user_ids_without_visits"], 2);
    let unmatched: Vec<&str> = plan["subjects"]["user_ids_without_visits_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    let near = &plan["near_matches"]["list"][0];
    assert_eq!(near["idvisit"], 1);
    assert_eq!(near["differs_by"], "case");
    let subject = near["near_subject_hash"].as_str().unwrap();
    assert!(unmatched.contains(&subject), "{subject} in {unmatched:?}");
    assert_ne!(near["user_id_hash"].as_str().unwrap(), subject);

    // The text plan shows the same link and the hashes of the ids without visits.
    let url = db.url();
    let mut text_args = vec!["erase", "--database-url", url.as_str()];
    text_args.extend_from_slice(&args);
    let o = run(&text_args);
    let text = stdout(&o);
    assert!(text.contains(&format!("near subject {subject}")), "{text}");
    assert!(unmatched.iter().all(|h| text.contains(h)), "{text}");

    let mut erase = args.to_vec();
    erase.extend_from_slice(&["--match", "collation"]);
    let done = erase_json(&db, &erase, true);
    assert_eq!(done["visits"], 1);
    assert_eq!(
        done["subjects"]["user_ids_without_visits"], 1,
        "only nobody@ has none"
    );
    assert_eq!(
        db.scalar("SELECT GROUP_CONCAT(idvisit) FROM matomo_log_visit"),
        "2"
    );
}

#[test]
fn an_id_with_4_byte_characters_finds_its_visits_stored_with_them_replaced() {
    let db = ScratchDb::with_schema("emoji", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    // log_visit.user_id is utf8mb4. Visit 1 holds the id as typed; visit 2 as an older Matomo,
    // or one whose config charset is not utf8mb4, stored it: U+FFFD for the emoji, and the
    // visitor id derived from that form. Visit 3 is another person, whose emoji differs.
    let row = |idvisit: u32, uid: &str| {
        format!(
            "({idvisit}, 1, UNHEX(LEFT(SHA1('{uid}'), 16)), '2024-01-0{idvisit} 10:00:00', X'00', \
             X'00', '{uid}', '2024-01-0{idvisit} 10:00:00', 0)"
        )
    };
    db.sql(&format!(
        "SET NAMES utf8mb4; INSERT INTO matomo_log_visit (idvisit, idsite, idvisitor, \
         visit_last_action_time, config_id, location_ip, user_id, visit_first_action_time, \
         visit_total_time) VALUES {}, {}, {}",
        row(1, "ana😀x"),
        row(2, "ana\u{FFFD}x"),
        row(3, "ana😃x")
    ));
    d.visit(
        4,
        1,
        Some("bob"),
        "2024-01-04 10:00:00",
        "2024-01-04 10:00:00",
    );
    assert_eq!(
        db.scalar("SELECT HEX(user_id) FROM matomo_log_visit WHERE idvisit = 2"),
        "616E61EFBFBD78"
    );
    let url = db.url();
    for lookup in ["index", "scan"] {
        let doc = run_json(
            &[
                "find",
                "--database-url",
                &url,
                "--json",
                "--user-id",
                "ana😀x",
                "--lookup",
                lookup,
            ],
            0,
        );
        let found: Vec<u64> = doc["visits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["idvisit"].as_u64().unwrap())
            .collect();
        assert_eq!(found, [1, 2], "{lookup}: {doc}");
    }
    let done = erase_json(&db, &["--user-id", "ana😀x"], true);
    assert_eq!(done["visits"], 2);
    assert_eq!(done["verify"]["ok"], true);
    assert_eq!(
        db.scalar("SELECT GROUP_CONCAT(idvisit ORDER BY idvisit) FROM matomo_log_visit"),
        "3,4"
    );
}

/// A visit id that names no visit is counted, as user ids without visits are, so a typo in a
/// list of visit ids does not pass unseen.
#[test]
fn visit_ids_that_name_no_visit_are_counted() {
    let db = ScratchDb::with_schema("novisitid", "m_");
    let d = Data::new(&db, "m_");
    d.site(1, "UTC");
    d.visit(
        5,
        1,
        Some("fay"),
        "2024-01-10 10:00:00",
        "2024-01-10 10:00:00",
    );
    let url = db.url();
    let a = [
        "erase",
        "--database-url",
        &url,
        "--visit-id",
        "5",
        "--visit-id",
        "99999999",
    ];
    let mut json_args = a.to_vec();
    json_args.push("--json");
    let doc = run_json(&json_args, 0);
    assert_eq!(doc["visits"], 1);
    assert_eq!(doc["subjects"]["visit_ids"], 2);
    assert_eq!(doc["subjects"]["visit_ids_without_visits"], 1);
    let text = stdout(&run(&a));
    assert!(text.contains("2 visit ids (1 naming no visit)"), "{text}");
    // The plan says that archives of periods left without visits go, and how to keep them.
    assert!(
        text.contains("loses its archives in the chunk (--keep-archives keeps them)"),
        "{text}"
    );
}
