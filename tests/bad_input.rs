//! Bad input: each case gives a clear message naming the problem and the fix, a distinct
//! non-zero exit code, and leaves the database unchanged.

mod common;
use common::*;

fn fingerprint(db: &ScratchDb) -> Vec<(String, u64, String)> {
    let tables: Vec<String> = CORE_LOG_TABLES
        .iter()
        .map(|t| format!("matomo_{t}"))
        .chain(["matomo_option".to_string()])
        .collect();
    let t: Vec<&str> = tables.iter().map(String::as_str).collect();
    db.checksums(&t, &[])
}

fn tables_in(db: &ScratchDb) -> u64 {
    db.count("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()")
}

fn assert_fails(args: &[&str], code: i32, needles: &[&str]) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code of {args:?}; stderr: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr of {args:?} lacks {n:?}: {err}");
    }
    err
}

#[test]
fn each_bad_input_is_refused_and_changes_nothing() {
    let db = ScratchDb::with_fixture("bad", THREE_SITES);
    let url = db.url();
    let before = fingerprint(&db);
    let tables_before = tables_in(&db);
    let e = |extra: &[&str]| {
        let mut a = vec!["erase", "--database-url", url.as_str(), "--execute"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let call = |args: Vec<String>, code: i32, needles: &[&str]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&refs, code, needles)
    };

    call(e(&["--user-id", ""]), 2, &["empty", "--user-id"]);
    // A path that names no file may be a user id typed after the wrong option: never shown.
    for option in ["--user-ids-file", "--visit-ids-file"] {
        let err = call(
            e(&[option, "alice.peer@example.org"]),
            2,
            &[
                option,
                "does not name an existing file",
                "the path is not shown",
            ],
        );
        assert!(!err.contains("alice.peer"), "{err}");
    }
    call(
        e(&["--visitor-id", "not-hex-at-all!"]),
        2,
        &["invalid visitor id", "16 hexadecimal"],
    );
    call(
        e(&["--visitor-id", "59efd53f1af69d6"]),
        2,
        &["invalid visitor id"],
    );
    call(e(&[]), 2, &["no subject given"]);
    let postgres = url.replacen("mysql://", "postgres://", 1);
    call(
        vec![
            "erase".into(),
            "--database-url".into(),
            postgres,
            "--user-id".into(),
            "a".into(),
            "--execute".into(),
        ],
        2,
        &["is not a MySQL/MariaDB URL", "mysql://"],
    );
    call(
        e(&["--user-id", "a", "--site", "99"]),
        2,
        &["site 99 does not exist", "1, 2, 3"],
    );
    call(
        e(&["--user-id", "a", "--prefix", "piwik_"]),
        2,
        &["piwik_", "\"matomo_\"", "--prefix"],
    );
    call(
        e(&[
            "--user-id",
            "a",
            "--since",
            "2024-02-01",
            "--until",
            "2024-01-01",
        ]),
        2,
        &["--since"],
    );
    call(
        e(&["--user-id", "a", "--max-load", "Threads_running"]),
        2,
        &["VAR=N"],
    );
    call(
        e(&["--user-id", "a", "--chunk-size", "0"]),
        2,
        &["chunk-size"],
    );

    assert_eq!(fingerprint(&db), before);
    assert_eq!(
        tables_in(&db),
        tables_before,
        "no journal table was created"
    );
}

#[test]
fn not_a_matomo_database_is_refused() {
    let db = ScratchDb::new("notmatomo");
    db.sql("CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100)); INSERT INTO customers VALUES (1, 'a@b.c')");
    let err = assert_fails(
        &[
            "erase",
            "--database-url",
            &db.url(),
            "--user-id",
            "a@b.c",
            "--execute",
        ],
        2,
        &["no Matomo log tables", "is this the Matomo database?"],
    );
    assert!(!err.contains("a@b.c"));
    assert_eq!(db.count("SELECT COUNT(*) FROM customers"), 1);
    assert_eq!(tables_in(&db), 1);

    // A database name that does not exist is a typo to fix, not a server to reach.
    let missing = format!("{}_missing", db.name);
    assert_fails(
        &[
            "inspect",
            "--database-url",
            &format!("mysql://root@127.0.0.1:3306/{missing}"),
        ],
        2,
        &[
            "does not exist",
            "check the database name",
            "SHOW DATABASES",
        ],
    );
}

#[test]
fn unreachable_server_and_wrong_password_are_connection_errors() {
    assert_fails(
        &[
            "inspect",
            "--database-url",
            "mysql://root@127.0.0.1:1/matomo",
        ],
        3,
        &[
            "cannot connect to root@127.0.0.1:1/matomo",
            "running and reachable",
        ],
    );
    let err = assert_fails(
        &[
            "inspect",
            "--database-url",
            "mysql://root:S3cretPw!@127.0.0.1:3306/mysql",
        ],
        3,
        &["refused the login", "password"],
    );
    assert!(!err.contains("S3cretPw"), "the password leaked: {err}");
    let err = assert_fails(
        &[
            "inspect",
            "--database-url",
            "mysql://root:S3cretPw@127.0.0.1:notaport/x",
        ],
        2,
        &["cannot read the database URL", "percent-encoded (# is %23"],
    );
    assert!(!err.contains("S3cretPw"), "the password leaked: {err}");
    assert_fails(&["inspect"], 2, &["no database given", "--database-url"]);
    let err = assert_fails(
        &["inspect", "--matomo-config", "alice.peer@example.org"],
        2,
        &[
            "--matomo-config does not name an existing file",
            "the path is not shown",
        ],
    );
    assert!(!err.contains("alice.peer"), "{err}");
}

#[test]
fn missing_delete_privilege_names_the_grant_and_changes_nothing() {
    let db = ScratchDb::with_fixture("nogrant", THREE_SITES);
    let user = format!("me_ro_{}", std::process::id());
    mariadb(None, &format!(
        "DROP USER IF EXISTS '{user}'@'127.0.0.1'; CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw{user}'; \
         GRANT SELECT ON `{}`.* TO '{user}'@'127.0.0.1'",
        db.name
    ));
    let before = fingerprint(&db);
    let tables_before = tables_in(&db);
    let url = format!("mysql://{user}:pw{user}@127.0.0.1:3306/{}", db.name);
    // Planning needs only SELECT.
    let o = run(&[
        "erase",
        "--database-url",
        &url,
        "--user-id",
        "alice.peer@example.org",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = assert_fails(
        &[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
            "--execute",
        ],
        3,
        &[
            "missing privilege",
            "give everything the erase needs at once: GRANT SELECT, DELETE ON `",
            "`.* TO <user>; GRANT INSERT ON `",
            "`.`matomo_option` TO <user>; GRANT CREATE, INSERT ON `",
            "`.`matomo_matomo_erase_journal` TO <user>",
        ],
    );
    assert!(!err.contains(&format!("pw{user}")));
    assert_eq!(fingerprint(&db), before);
    assert_eq!(tables_in(&db), tables_before);

    // With DELETE and INSERT but no CREATE, the journal table cannot be made: named, no change.
    mariadb(None, &format!(
        "GRANT DELETE ON `{}`.* TO '{user}'@'127.0.0.1'; GRANT INSERT ON `{}`.`matomo_option` TO '{user}'@'127.0.0.1'",
        db.name, db.name
    ));
    assert_fails(
        &[
            "erase",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
            "--execute",
        ],
        3,
        &["journal table", "GRANT CREATE"],
    );
    assert_eq!(fingerprint(&db), before);
    mariadb(None, &format!("DROP USER IF EXISTS '{user}'@'127.0.0.1'"));
}

#[test]
fn matomo_config_is_read_for_connection_and_prefix() {
    let db = ScratchDb::with_fixture("config", THREE_SITES);
    let dir = std::env::temp_dir().join(format!("me_cfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.ini.php");
    std::fs::write(
        &cfg,
        format!(
            "; <?php exit; ?> DO NOT REMOVE THIS LINE\n; file automatically generated\n[database]\n\
             host = \"127.0.0.1\"\nusername = \"root\"\npassword = \"\"\ndbname = \"{}\"\n\
             tables_prefix = \"matomo_\"\nport = 3306\ncharset = \"utf8mb4\"\n\n[General]\nsalt = \"x\"\n",
            db.name
        ),
    )
    .unwrap();
    let doc = run_json(
        &[
            "erase",
            "--matomo-config",
            cfg.to_str().unwrap(),
            "--user-id",
            "alice.peer@example.org",
            "--json",
        ],
        0,
    );
    assert_eq!(doc["prefix"], "matomo_");
    assert_eq!(doc["visits"], 12);
    // --prefix overrides the config's prefix.
    assert_fails(
        &[
            "inspect",
            "--matomo-config",
            cfg.to_str().unwrap(),
            "--prefix",
            "other_",
        ],
        2,
        &["prefix \"other_\" is wrong", "\"matomo_\""],
    );
    // A socket path written into host (as Matomo does) is used as a socket.
    let socket = mariadb(None, "SELECT @@socket");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nhost = \"{}\"\nusername = \"root\"\npassword = \"\"\ndbname = \"{}\"\ntables_prefix = \"matomo_\"\n",
            socket.trim(),
            db.name
        ),
    )
    .unwrap();
    let o = run(&["inspect", "--matomo-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("root@unix:{}", socket.trim())));

    // host "localhost" means the local socket to PHP, whatever the port; so it does here.
    std::fs::write(
        &cfg,
        format!(
            "[database]\nhost = \"localhost\"\nport = 3399\nusername = \"root\"\n\
             password = \"\"\ndbname = \"{}\"\ntables_prefix = \"matomo_\"\n",
            db.name
        ),
    )
    .unwrap();
    let o = run(&["inspect", "--matomo-config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let canonical = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("connection"))
        .unwrap_or_else(|| panic!("no connection line in:\n{out}"));
    let place = line
        .split_once("root@unix:")
        .map(|(_, p)| p.trim())
        .unwrap_or_else(|| panic!("not a socket: {line}"));
    let shown = place
        .strip_suffix(&format!("/{}", db.name))
        .unwrap_or_else(|| panic!("not the database: {line}"));
    assert_eq!(canonical(shown), canonical(socket.trim()));
    std::fs::remove_dir_all(&dir).ok();
}

/// A Matomo config naming `db` with the matomo_ prefix, in a folder of its own.
fn config_for(db: &ScratchDb, tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("me_cfg_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.ini.php");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nhost = \"127.0.0.1\"\nport = 3306\nusername = \"root\"\npassword = \"\"\n\
             dbname = \"{}\"\ntables_prefix = \"matomo_\"\n",
            db.name
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn database_url_variable_is_used_when_no_option_names_the_database() {
    let db = ScratchDb::with_fixture("envurl", THREE_SITES);
    let url = db.url();
    let o = run_env(
        &["find", "--user-id", "alice.peer@example.org", "--json"],
        &[("DATABASE_URL", &url)],
    );
    let doc = json(&o, 0);
    assert_eq!(doc["visits"].as_array().map(Vec::len), Some(12), "{doc}");

    // An explicit --matomo-config wins over a DATABASE_URL left in the environment.
    let other = ScratchDb::with_fixture("envother", OMNI);
    let cfg = config_for(&db, "envwin");
    let o = run_env(
        &[
            "inspect",
            "--json",
            "--matomo-config",
            cfg.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &other.url())],
    );
    let doc = json(&o, 0);
    assert_eq!(doc["database"], db.name.as_str());
    assert_eq!(doc["prefix"], "matomo_");
    std::fs::remove_dir_all(cfg.parent().unwrap()).ok();
}

#[test]
fn both_connection_options_at_once_are_refused_and_change_nothing() {
    let db = ScratchDb::with_fixture("bothconn", THREE_SITES);
    let other = ScratchDb::with_fixture("bothother", THREE_SITES);
    let cfg = config_for(&db, "both");
    let before = (fingerprint(&db), fingerprint(&other));
    let err = assert_fails(
        &[
            "erase",
            "--matomo-config",
            cfg.to_str().unwrap(),
            "--database-url",
            &other.url(),
            "--user-id",
            "alice.peer@example.org",
            "--execute",
        ],
        2,
        &["--database-url", "--matomo-config", "only one"],
    );
    assert!(!err.contains("alice"), "{err}");
    assert_eq!((fingerprint(&db), fingerprint(&other)), before);
    std::fs::remove_dir_all(cfg.parent().unwrap()).ok();
}

#[test]
fn an_ids_file_without_ids_is_refused_by_every_selecting_command() {
    let db = ScratchDb::with_fixture("emptyids", THREE_SITES);
    let url = db.url();
    let dir = std::env::temp_dir().join(format!("me_emptyids_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blank = dir.join("blank.txt");
    std::fs::write(&blank, "\u{feff}\n  \n").unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    for cmd in ["find", "erase", "verify"] {
        for (opt, file) in [("--user-ids-file", &blank), ("--visit-ids-file", &empty)] {
            assert_fails(
                &[cmd, "--database-url", &url, opt, file.to_str().unwrap()],
                2,
                &["holds no id"],
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_errors_of_the_command_line_are_one_json_document() {
    let o = run(&["--json", "find", "--user-id", "x", "--since", "2012-13-01"]);
    let doc = json(&o, 2);
    assert_eq!(doc["exit_code"], 2);
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("--since") && error.contains("no such day"),
        "{error}"
    );
    assert!(stderr(&o).contains("no such day"));
    // Help is not a failure, and prints no JSON.
    let o = run(&["--json", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Usage"));
}

/// Drops a MariaDB user made for one test when the test ends, failed or not.
struct DropUser(String);

impl Drop for DropUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["-h", HOST, "-P", PORT, "-uroot", "-e"])
            .arg(format!("DROP USER IF EXISTS '{}'@'127.0.0.1'", self.0))
            .output();
    }
}

/// Drops a MariaDB role made for one test when the test ends.
struct DropRole(String);

impl Drop for DropRole {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["-h", HOST, "-P", PORT, "-uroot", "-e"])
            .arg(format!("DROP ROLE IF EXISTS {}", self.0))
            .output();
    }
}

#[test]
fn matomo_config_password_with_quotes_and_backslashes_is_decoded_as_php_does() {
    let db = ScratchDb::with_schema("cfgpw", "matomo_");
    let user = format!("me_pw_{}", std::process::id());
    let _drop = DropUser(user.clone());
    // The password as the server knows it: a double quote, a single quote, a backslash before
    // a letter, two backslashes in a row, a dollar and a semicolon.
    let password = r#"q"u'o\te\\d$;1"#;
    let sql_password = password.replace('\\', "\\\\").replace('\'', "\\'");
    mariadb(
        None,
        &format!(
            "DROP USER IF EXISTS '{user}'@'127.0.0.1'; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{sql_password}'; \
             GRANT SELECT ON `{}`.* TO '{user}'@'127.0.0.1'",
            db.name
        ),
    );
    let dir = std::env::temp_dir().join(format!("me_cfgpw_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.ini.php");
    // How the password may stand in the file, each read by PHP as `password` above: Matomo's
    // writer escapes `"` and `\`; an older writer escaped `"` only, and PHP keeps a backslash
    // before any character but `"`, `\` and `$`; a comment may follow the closing quote.
    let forms = [
        r#""q\"u'o\\te\\\\d$;1""#,
        r#""q\"u'o\te\\\\d\$;1""#,
        r#""q\"u'o\\te\\\\d$;1" ; written by hand"#,
    ];
    for form in forms {
        std::fs::write(
            &cfg,
            format!(
                "; <?php exit; ?> DO NOT REMOVE THIS LINE\n[database]\nhost = \"127.0.0.1\"\n\
                 port = 3306\nusername = \"{user}\"\npassword = {form}\ndbname = \"{}\"\n\
                 tables_prefix = \"matomo_\"\n",
                db.name
            ),
        )
        .unwrap();
        let o = run(&["inspect", "--matomo-config", cfg.to_str().unwrap()]);
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(0), "form {form}: {err}");
        assert!(out.contains(&format!("connection   {user}@127.0.0.1:3306/{}", db.name)));
        assert!(!out.contains("q\"u") && !err.contains("q\"u"), "{out}{err}");
    }

    // `${...}` inside double quotes is replaced by PHP with a variable of its own process,
    // which matomo-erase cannot know: refused, naming the field and not the value.
    std::fs::write(
        &cfg,
        format!(
            "[database]\nhost = \"127.0.0.1\"\nusername = \"{user}\"\n\
             password = \"pw${{HOME}}x\"\ndbname = \"{}\"\n",
            db.name
        ),
    )
    .unwrap();
    let err = assert_fails(
        &["inspect", "--matomo-config", cfg.to_str().unwrap()],
        2,
        &["[database] password", "${", "--database-url"],
    );
    assert!(!err.contains("pw$"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refused_command_lines_never_repeat_what_was_typed() {
    let id = "bob.peer@example.org";
    // Without --json: clap's advice stays, the value is not shown.
    let o = run(&["erase", "--user-id", "alice", id]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(
        err.lines().next(),
        Some("error: unexpected argument '…' found"),
        "{err}"
    );
    assert!(err.contains("no positional arguments"), "{err}");
    assert!(err.contains("Usage: matomo-erase erase [OPTIONS]"), "{err}");
    assert!(!err.contains("bob") && stdout(&o).is_empty(), "{err}");

    // With --json: the same message as the one JSON document.
    for (args, message) in [
        (
            vec!["--json", "erase", "--user-id", "alice", id],
            "unexpected argument '…' found",
        ),
        (vec!["--json", id], "unrecognized subcommand '…'"),
        (
            vec!["--json", "find", "--site", id],
            "invalid value '…' for '--site <IDSITE>': not a whole number from 1 to 4294967295",
        ),
        (
            vec!["--json", "find", "--site", "99999999999999"],
            "invalid value '…' for '--site <IDSITE>': not a whole number from 1 to 4294967295",
        ),
        (
            vec!["--json", "find", "--lookup", id],
            "invalid value '…' for '--lookup <LOOKUP>'",
        ),
        (
            vec![
                "--json",
                "erase",
                "--user-id",
                "a",
                &format!("--execute={id}"),
            ],
            "unexpected value '…' for '--execute' found; no more were expected",
        ),
        (
            vec!["--json", "erase", "--user-id", "a", "--max-load", id],
            "invalid value '…' for '--max-load <VAR=N>': not VAR=N, e.g. Threads_running=25",
        ),
        (
            vec!["--json", "find", "--user-id", "a", &format!("--{id}")],
            "unexpected argument '…' found",
        ),
        // An option name is no one's identifier: it is shown.
        (
            vec!["--json", "find", "--user-id", "a", "--chunk-size", "5"],
            "unexpected argument '--chunk-size' found",
        ),
    ] {
        let o = run(&args);
        let doc = json(&o, 2);
        assert_eq!(doc["error"], message, "{args:?}");
        assert_eq!(doc["exit_code"], 2);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            !all.contains("bob") && !all.contains("99999999999999"),
            "{all}"
        );
    }
}

#[test]
fn grants_on_single_tables_warn_that_the_others_are_invisible_and_name_the_grant() {
    let db = ScratchDb::with_schema("tgrant", "matomo_");
    let d = Data::new(&db, "matomo_");
    d.site(1, "UTC");
    d.visit(
        1,
        1,
        Some("ann"),
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
    );
    let user = format!("me_tg_{}", std::process::id());
    let _drop = DropUser(user.clone());
    let on = |t: &str| {
        format!(
            "GRANT SELECT, DELETE ON `{}`.`matomo_{t}` TO '{user}'@'127.0.0.1'",
            db.name
        )
    };
    mariadb(
        None,
        &format!(
            "DROP USER IF EXISTS '{user}'@'127.0.0.1'; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw{user}'; {}; {}; {}; {}",
            on("log_visit"),
            on("log_link_visit_action"),
            on("option"),
            on("site")
        ),
    );
    let url = format!("mysql://{user}:pw{user}@127.0.0.1:3306/{}", db.name);
    let warning = format!(
        "the user '{user}'@'127.0.0.1' has SELECT on single tables of {0} only: the server hides \
         every other table from it, so a log table it was not granted (a plugin's, say) cannot \
         be seen although it may hold visitor data, and erase --execute and verify are refused; \
         give GRANT SELECT, DELETE ON `{0}`.* TO '{user}'@'127.0.0.1'",
        db.name
    );

    let doc = run_json(&["inspect", "--database-url", &url, "--json"], 0);
    assert_eq!(doc["warnings"], serde_json::json!([warning]));
    let o = run(&["inspect", "--database-url", &url]);
    assert!(
        stdout(&o).contains(&format!("warning: {warning}\n")),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));
    let plan = run(&[
        "erase",
        "--database-url",
        &url,
        "--user-id",
        "ann",
        "--json",
    ]);
    let plan = json(&plan, 0);
    assert_eq!(plan["warnings"], serde_json::json!([warning]));
    assert_eq!(plan["visits"], 1);
    let found = run_json(
        &["find", "--database-url", &url, "--user-id", "ann", "--json"],
        0,
    );
    assert_eq!(found["warnings"], serde_json::json!([warning]));

    // Erasing or verifying with a partial view would report the hidden tables' rows gone.
    let before = db.checksums(&["matomo_log_visit", "matomo_log_link_visit_action"], &[]);
    let erase = run(&[
        "erase",
        "--database-url",
        &url,
        "--user-id",
        "ann",
        "--execute",
    ]);
    assert_eq!(erase.status.code(), Some(3), "{}", stderr(&erase));
    assert!(
        stderr(&erase).contains("refusing to erase") && stderr(&erase).contains("GRANT SELECT"),
        "{}",
        stderr(&erase)
    );
    assert_eq!(
        db.checksums(&["matomo_log_visit", "matomo_log_link_visit_action"], &[]),
        before
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name LIKE '%matomo\\_erase\\_journal'"
        ),
        0
    );
    let verify = run(&["verify", "--database-url", &url, "--user-id", "ann"]);
    assert_eq!(verify.status.code(), Some(3), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("cannot verify"),
        "{}",
        stderr(&verify)
    );
    assert!(
        !stdout(&o).contains(&format!("pw{user}")) && !stderr(&o).contains(&format!("pw{user}"))
    );

    // SELECT on the whole database, here through a wildcard database name, sees every table.
    let pattern = db.name.split('_').take(3).collect::<Vec<_>>().join("\\_") + "\\_%";
    mariadb(
        None,
        &format!("GRANT SELECT ON `{pattern}`.* TO '{user}'@'127.0.0.1'"),
    );
    let doc = run_json(&["inspect", "--database-url", &url, "--json"], 0);
    assert_eq!(
        doc["warnings"],
        serde_json::json!([]),
        "grant on `{pattern}`.*"
    );

    // So does a role that has it, once active (here as the user's default role).
    let role = format!("me_tgr_{}", std::process::id());
    let _drop_role = DropRole(role.clone());
    mariadb(
        None,
        &format!(
            "REVOKE SELECT ON `{pattern}`.* FROM '{user}'@'127.0.0.1'; DROP ROLE IF EXISTS \
             {role}; CREATE ROLE {role}; GRANT SELECT ON `{}`.* TO {role}; \
             GRANT {role} TO '{user}'@'127.0.0.1'",
            db.name
        ),
    );
    let doc = run_json(&["inspect", "--database-url", &url, "--json"], 0);
    assert_eq!(
        doc["warnings"],
        serde_json::json!([warning]),
        "role not active"
    );
    mariadb(
        None,
        &format!("SET DEFAULT ROLE {role} FOR '{user}'@'127.0.0.1'"),
    );
    let doc = run_json(&["inspect", "--database-url", &url, "--json"], 0);
    assert_eq!(doc["warnings"], serde_json::json!([]), "default role");
}

#[test]
fn a_log_visit_without_a_column_the_tool_reads_is_refused_naming_it() {
    let db = ScratchDb::with_schema("nouid", "matomo_");
    let url = db.url();
    // A Piwik before 2.7.0 has no user_id; before 1.2, no idvisitor either.
    for (drop, message) in [
        (
            "user_id",
            "table matomo_log_visit has no column user_id (or this user may not read it): \
             Piwik added it in 2.7.0 (with the User ID feature), and older versions are not \
             supported; update Matomo first (its updater adds the column)",
        ),
        (
            "idvisitor",
            "table matomo_log_visit has no column idvisitor (or this user may not read it): \
             Piwik added it in 1.2, and older versions are not supported; update Matomo first \
             (its updater adds the column)",
        ),
        (
            "visit_last_action_time",
            "table matomo_log_visit has no column visit_last_action_time (or this user may not \
             read it): every Piwik and Matomo version has it; is this Matomo's log_visit? check \
             --prefix",
        ),
    ] {
        db.sql(&format!("ALTER TABLE matomo_log_visit DROP COLUMN {drop}"));
        let before = db.erase_state("matomo_");
        for args in [
            vec!["inspect", "--database-url", &url],
            vec!["find", "--database-url", &url, "--user-id", "a"],
            vec![
                "erase",
                "--database-url",
                &url,
                "--visit-id",
                "1",
                "--execute",
            ],
        ] {
            let o = run(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert_eq!(stderr(&o), format!("error: {message}\n"), "{args:?}");
        }
        assert_eq!(db.erase_state("matomo_"), before);
    }
}

/// An admin moved Matomo to a new server and appended a new `[database]` block below the old
/// one. PHP reads only the last block, whole (a key of the old block that the new one lacks is
/// gone too), so Matomo uses the new database, and so must the tool.
#[test]
fn matomo_config_with_the_database_section_twice_is_read_as_php_reads_it() {
    let db = ScratchDb::with_fixture("cfgtwice", THREE_SITES);
    let dir = std::env::temp_dir().join(format!("me_cfg_twice_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.ini.php");
    std::fs::write(
        &cfg,
        format!(
            "; <?php exit; ?> DO NOT REMOVE THIS LINE\n[database]\nhost = \"127.0.0.1\"\n\
             port = 1\nusername = \"root\"\npassword = \"\"\ndbname = \"{0}_old\"\n\
             tables_prefix = \"matomo_\"\n\n[General]\nsalt = \"x\"\n\n[database]\n\
             host = \"127.0.0.1\"\nusername = \"root\"\npassword = \"\"\ndbname = \"{0}\"\n\
             tables_prefix = \"matomo_\"\n",
            db.name
        ),
    )
    .unwrap();
    let doc = run_json(
        &[
            "inspect",
            "--matomo-config",
            cfg.to_str().unwrap(),
            "--json",
        ],
        0,
    );
    assert_eq!(doc["database"], db.name.as_str());
    assert_eq!(doc["prefix"], "matomo_");
    let _ = std::fs::remove_dir_all(&dir);
}

/// MariaDB takes database privileges from the most specific matching grant only: a wildcard
/// grant with SELECT is shadowed by a grant on the database's own name without it. The SELECT
/// then fails, and that is a missing privilege (exit 3), not "not a Matomo database".
#[test]
fn a_refused_select_is_a_missing_privilege_not_a_wrong_database() {
    let db = ScratchDb::with_fixture("shadowgrant", THREE_SITES);
    let user = format!("me_sg_{}", std::process::id());
    let _drop = DropUser(user.clone());
    let pattern = db.name.replace('_', "\\_") + "%";
    mariadb(
        None,
        &format!(
            "DROP USER IF EXISTS '{user}'@'127.0.0.1'; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw{user}'; \
             GRANT SELECT, DELETE ON `{pattern}`.* TO '{user}'@'127.0.0.1'; \
             GRANT INSERT, CREATE ON `{}`.* TO '{user}'@'127.0.0.1'",
            db.name
        ),
    );
    let url = format!("mysql://{user}:pw{user}@127.0.0.1:3306/{}", db.name);
    let err = assert_fails(
        &[
            "find",
            "--database-url",
            &url,
            "--user-id",
            "alice.peer@example.org",
        ],
        3,
        &["may not read the Matomo tables", "GRANT SELECT, DELETE ON"],
    );
    assert!(
        !err.contains("alice.peer") && !err.contains(&format!("pw{user}")),
        "{err}"
    );
}
