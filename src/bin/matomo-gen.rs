//! `matomo-gen` fills a Matomo 5 database with deterministic, Matomo-shaped log data, so that
//! `matomo-erase` can be tested and benchmarked without a real Matomo install.
//!
//! It owns the generated rows only: three sites, a shared `log_action` dictionary, visits with
//! their actions, conversions and ecommerce items, and a sprinkle of premium plugin rows
//! (heatmaps, forms, media, A/B tests, ad click ids). It never touches a database that already
//! holds visits or sites, and it never changes server-wide settings.
//!
//! The same `--seed`, `--visits` and `--end-date` always produce the same rows. A quarter of the
//! visits carry a user id whose `idvisitor` is derived the way Matomo derives it (first 8 bytes
//! of the SHA-1 of the user id), and the subject `bench.subject@example.org` always has exactly
//! 12 visits spread over the three sites, so erase benchmarks have a fixed target.
//!
//! Speed matters more than elegance here: rows are written as multi-row INSERT text with
//! explicit ids, one connection per group of tables, while a single blocking thread generates.
//! Two log_visit indexes are dropped for the duration of the fill and rebuilt at the end
//! (see `defer_random_indexes`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{NaiveDate, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio::sync::mpsc;

const SCHEMA_SQL: &str = include_str!("../../sql/schema.sql");

/// The subject every benchmark erases: always exactly `BENCH_VISITS` visits over all sites.
const BENCH_USER_ID: &str = "bench.subject@example.org";
const BENCH_VISITS: u64 = 12;

/// Visits are spread over this many days before `--end-date`.
const WINDOW_DAYS: i64 = 90;
/// Sites were created this long before `--end-date`.
const SITE_AGE_DAYS: i64 = 730;

/// A statement is sent once it holds this many rows or this many bytes, whichever comes first.
/// About 1 MiB keeps each statement far below the default 16 MiB `max_allowed_packet` while
/// making the per-statement round trip negligible.
const BATCH_MAX_ROWS: usize = 5000;
const BATCH_MAX_BYTES: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "matomo-gen",
    about = "Fill a Matomo 5 database with deterministic, Matomo-shaped test data"
)]
struct Args {
    /// Target database, e.g. mysql://root@127.0.0.1:3306/matomo_test
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,

    /// Matomo table prefix (may be empty)
    #[arg(long, default_value = "matomo_")]
    prefix: String,

    /// Number of visits to generate (at least 12, for the bench subject)
    #[arg(long, default_value_t = 10_000)]
    visits: u64,

    /// Seed of the pseudo-random generator; the same seed gives the same rows
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Create the database if missing and load the bundled schema if it has no log_visit table
    #[arg(long)]
    create: bool,

    /// Visits start in the 90 days before 00:00 UTC of this day (YYYY-MM-DD); default: today
    #[arg(long)]
    end_date: Option<NaiveDate>,
}

#[tokio::main]
async fn main() {
    if let Err(err) = try_main(Args::parse()).await {
        eprintln!("matomo-gen: error: {err:#}");
        std::process::exit(1);
    }
}

async fn try_main(args: Args) -> Result<()> {
    let process_started = Instant::now();
    if args.visits < BENCH_VISITS {
        bail!("--visits must be at least {BENCH_VISITS} (the bench subject has that many visits)");
    }
    let end_date = args.end_date.unwrap_or_else(|| Utc::now().date_naive());
    let end_ts = end_date
        .and_hms_opt(0, 0, 0)
        .context("invalid --end-date")?
        .and_utc()
        .timestamp();
    let plan = Plan {
        prefix: args.prefix.clone(),
        visits: args.visits,
        seed: args.seed,
        window_start: end_ts - WINDOW_DAYS * 86_400,
        window_end: end_ts,
    };

    let options = connect_options(&args.database_url)?;
    if args.create {
        create_database(&args.database_url, &options).await?;
    }
    let mut conn = options
        .connect()
        .await
        .context("cannot connect to the target database")?;
    if args.create {
        load_schema_if_missing(&mut conn, &plan.prefix).await?;
    }
    refuse_non_empty(&mut conn, &plan.prefix).await?;

    let started = Instant::now();
    println!(
        "setup took {:.1} s; generating {} visits (seed {}, {} .. {} UTC) into prefix '{}'",
        process_started.elapsed().as_secs_f64(),
        plan.visits,
        plan.seed,
        fmt_datetime(plan.window_start),
        fmt_datetime(plan.window_end),
        plan.prefix
    );
    write_dictionary(&mut conn, &plan, end_ts).await?;

    let deferred = defer_random_indexes(&mut conn, &plan.prefix).await?;
    let filled = fill_log_tables(&options, &plan).await;
    // Restore the indexes even after a failed fill, so the schema stays Matomo's.
    let restored = restore_indexes(&mut conn, &plan.prefix, &deferred).await;
    if let (Err(fill_err), Err(_)) = (&filled, &restored) {
        eprintln!("matomo-gen: error: {fill_err:#}");
    }
    restored?;
    let counts = filled?;
    let fill_secs = started.elapsed().as_secs_f64();

    analyze(&mut conn, &plan.prefix).await?;
    let total_secs = started.elapsed().as_secs_f64();

    let total_rows: u64 = counts.iter().map(|(_, n)| *n).sum();
    println!("rows written:");
    for (table, rows) in &counts {
        println!("  {:<32} {rows:>10}", format!("{}{table}", plan.prefix));
    }
    println!(
        "done: {total_rows} rows in {fill_secs:.1} s ({:.0} rows/s), {total_secs:.1} s \
         including ANALYZE TABLE, {:.1} s since start",
        total_rows as f64 / fill_secs,
        process_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything that decides which rows get generated.
#[derive(Clone)]
struct Plan {
    prefix: String,
    visits: u64,
    seed: u64,
    window_start: i64,
    window_end: i64,
}

// ---------------------------------------------------------------------------------------------
// Database setup

fn connect_options(url: &str) -> Result<MySqlConnectOptions> {
    // Statements are unique text; caching them as prepared statements would only cost memory.
    Ok(MySqlConnectOptions::from_str(url)
        .context("cannot parse --database-url")?
        .statement_cache_capacity(0)
        .disable_statement_logging())
}

async fn create_database(url: &str, options: &MySqlConnectOptions) -> Result<()> {
    let Some(name) = options.get_database() else {
        bail!("--create needs a database name in --database-url (mysql://user@host/NAME)");
    };
    // The database does not exist yet, so connect to the server without selecting one.
    let mut server_url = url::Url::parse(url).context("cannot parse --database-url")?;
    server_url.set_path("");
    let mut conn = connect_options(server_url.as_str())?
        .connect()
        .await
        .context("cannot connect to the server to create the database")?;
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
        quote_ident(name)
    );
    conn.execute(sql.as_str())
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    conn.close().await.ok();
    Ok(())
}

async fn load_schema_if_missing(conn: &mut MySqlConnection, prefix: &str) -> Result<()> {
    if table_exists(conn, &format!("{prefix}log_visit")).await? {
        println!("schema already present, not loading sql/schema.sql");
        return Ok(());
    }
    let schema = SCHEMA_SQL.replace("{{PREFIX}}", prefix);
    let mut loaded = 0;
    for statement in split_statements(&schema) {
        (&mut *conn)
            .execute(statement)
            .await
            .with_context(|| format!("schema statement failed: {}", first_line(statement)))?;
        loaded += 1;
    }
    println!("loaded schema ({loaded} statements)");
    Ok(())
}

/// Splits the bundled schema on semicolons at line ends, dropping comment-only chunks.
fn split_statements(schema: &str) -> impl Iterator<Item = &str> {
    schema.split(";\n").map(str::trim).filter(|chunk| {
        chunk
            .lines()
            .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"))
    })
}

fn first_line(statement: &str) -> &str {
    statement
        .lines()
        .find(|line| !line.trim_start().starts_with("--"))
        .unwrap_or(statement)
}

async fn table_exists(conn: &mut MySqlConnection, table: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .context("cannot read information_schema.tables")?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

/// Generated ids start at 1, so the target must not hold sites or visits already.
async fn refuse_non_empty(conn: &mut MySqlConnection, prefix: &str) -> Result<()> {
    for table in ["site", "log_visit", "log_action"] {
        let name = format!("{prefix}{table}");
        if !table_exists(conn, &name).await? {
            bail!("table {name} does not exist; check --prefix or pass --create");
        }
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(&name));
        let row = (&mut *conn)
            .fetch_one(sql.as_str())
            .await
            .with_context(|| format!("cannot read {name}"))?;
        if row.try_get::<i64, _>(0)? != 0 {
            bail!(
                "{name} already holds rows; matomo-gen only fills an empty schema \
                 (use --create with a new database name)"
            );
        }
    }
    Ok(())
}

/// Session settings for bulk loading. `sql_log_bin` needs a privilege the user may lack and
/// only matters when binary logging is on, so its failure is not fatal.
async fn prepare_session(conn: &mut MySqlConnection) -> Result<()> {
    (&mut *conn)
        .execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
        .await
        .context("cannot set session options")?;
    let _ = (&mut *conn).execute("SET SESSION sql_log_bin = 0").await;
    Ok(())
}

/// Drops the log_visit indexes that lead with a random-looking key (`config_id`, `idvisitor`)
/// and returns their definitions. Inserted row by row, each of them touches a random page per
/// visit; once they outgrow the buffer pool (about a million visits with MariaDB's default
/// 128 MiB) every insert waits for a disk read and the fill slows down threefold. Built once
/// after the fill, from sorted data, they take seconds. All other log indexes grow at their
/// right edge (ids and times increase with idvisit) and stay in place.
async fn defer_random_indexes(conn: &mut MySqlConnection, prefix: &str) -> Result<Vec<String>> {
    let table = quote_ident(&format!("{prefix}log_visit"));
    let row = (&mut *conn)
        .fetch_one(format!("SHOW CREATE TABLE {table}").as_str())
        .await
        .with_context(|| format!("cannot read the definition of {table}"))?;
    let ddl: String = row.try_get(1)?;
    let deferred: Vec<String> = ddl
        .lines()
        .map(|line| line.trim().trim_end_matches(','))
        .filter(|line| line.starts_with("KEY "))
        .filter(|line| line.contains("`config_id`") || line.contains("`idvisitor`"))
        .map(str::to_string)
        .collect();
    if deferred.is_empty() {
        return Ok(deferred);
    }
    let drops: Vec<String> = deferred
        .iter()
        .map(|key| format!("DROP {}", key.split(" (").next().unwrap_or(key)))
        .collect();
    (&mut *conn)
        .execute(format!("ALTER TABLE {table} {}", drops.join(", ")).as_str())
        .await
        .with_context(|| format!("cannot drop indexes of {table} for the fill"))?;
    Ok(deferred)
}

async fn restore_indexes(
    conn: &mut MySqlConnection,
    prefix: &str,
    deferred: &[String],
) -> Result<()> {
    if deferred.is_empty() {
        return Ok(());
    }
    let table = quote_ident(&format!("{prefix}log_visit"));
    let adds: Vec<String> = deferred.iter().map(|key| format!("ADD {key}")).collect();
    let sql = format!("ALTER TABLE {table} {}", adds.join(", "));
    let started = Instant::now();
    (&mut *conn).execute(sql.as_str()).await.with_context(|| {
        format!("cannot rebuild the indexes of {table}; run this to restore them: {sql}")
    })?;
    println!(
        "rebuilt {} log_visit indexes in {:.1} s",
        deferred.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn analyze(conn: &mut MySqlConnection, prefix: &str) -> Result<()> {
    let tables: Vec<String> = LOG_TABLES
        .iter()
        .chain(["log_action"].iter())
        .map(|t| quote_ident(&format!("{prefix}{t}")))
        .collect();
    let sql = format!("ANALYZE TABLE {}", tables.join(", "));
    let started = Instant::now();
    (&mut *conn)
        .fetch_all(sql.as_str())
        .await
        .context("ANALYZE TABLE failed")?;
    println!(
        "analyzed {} tables in {:.1} s",
        tables.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

// ---------------------------------------------------------------------------------------------
// Sites and the log_action dictionary

struct SiteDef {
    idsite: u8,
    name: &'static str,
    host: &'static str,
    timezone: &'static str,
    currency: &'static str,
    /// Share of anonymous traffic, in percent.
    weight: u32,
}

const SITES: [SiteDef; 3] = [
    SiteDef {
        idsite: 1,
        name: "Shop (UTC)",
        host: "shop.example.org",
        timezone: "UTC",
        currency: "EUR",
        weight: 50,
    },
    SiteDef {
        idsite: 2,
        name: "Blog (New York)",
        host: "blog.example.com",
        timezone: "America/New_York",
        currency: "USD",
        weight: 30,
    },
    // A manual offset with a half hour, which Matomo stores as a float number of hours.
    SiteDef {
        idsite: 3,
        name: "Docs (UTC+5.5)",
        host: "docs.example.in",
        timezone: "UTC+5.5",
        currency: "INR",
        weight: 20,
    },
];

const PAGES_PER_SITE: u32 = 500;
const DOWNLOADS_PER_SITE: u32 = 40;
const OUTLINKS: u32 = 20;
const SEARCH_TERMS: u32 = 200;
const EVENT_CATEGORIES: u32 = 10;
const EVENT_ACTIONS: u32 = 20;
const EVENT_NAMES: u32 = 30;
const PRODUCTS: u32 = 100;
const PRODUCT_CATEGORIES: u32 = 10;
const HSR_SELECTORS: u32 = 30;
const HSR_BLOBS: u32 = 50;

/// Where each kind of action starts in the dictionary. Ids are assigned in the order the
/// dictionary is written, so the generator can pick an idaction without asking the database.
struct Dictionary {
    page_url: [u32; 3],
    page_title: [u32; 3],
    download: [u32; 3],
    outlink: u32,
    search: u32,
    event_category: u32,
    event_action: u32,
    event_name: u32,
    sku: u32,
    product_name: u32,
    product_category: u32,
    hsr_selector: u32,
}

/// `log_action.type` values used by Matomo's tracker.
mod action_type {
    pub const PAGE_URL: u8 = 1;
    pub const OUTLINK: u8 = 2;
    pub const DOWNLOAD: u8 = 3;
    pub const PAGE_TITLE: u8 = 4;
    pub const SKU: u8 = 5;
    pub const PRODUCT_NAME: u8 = 6;
    pub const PRODUCT_CATEGORY: u8 = 7;
    pub const SITE_SEARCH: u8 = 8;
    pub const EVENT_CATEGORY: u8 = 10;
    pub const EVENT_ACTION: u8 = 11;
    pub const EVENT_NAME: u8 = 12;
    /// Limitation: the heatmap plugin's own type number for CSS selectors is not public; 98
    /// only keeps selectors apart from core types. A real install may use another value.
    pub const HSR_SELECTOR: u8 = 98;
}

const SECTIONS: [&str; 8] = [
    "news", "products", "docs", "pricing", "support", "careers", "about", "blog",
];
const SEARCH_WORDS: [&str; 12] = [
    "invoice", "refund", "shipping", "api", "login", "password", "export", "gdpr", "delete",
    "account", "pricing", "install",
];
const CATEGORY_NAMES: [&str; 10] = [
    "Books", "Coffee", "Garden", "Kitchen", "Music", "Outdoor", "Shoes", "Tools", "Toys", "Wine",
];

impl Dictionary {
    fn layout() -> Dictionary {
        let mut next = 1;
        let mut take = |n: u32| {
            let start = next;
            next += n;
            start
        };
        let mut page_url = [0; 3];
        let mut page_title = [0; 3];
        let mut download = [0; 3];
        for s in 0..3 {
            page_url[s] = take(PAGES_PER_SITE);
            page_title[s] = take(PAGES_PER_SITE);
            download[s] = take(DOWNLOADS_PER_SITE);
        }
        Dictionary {
            page_url,
            page_title,
            download,
            outlink: take(OUTLINKS),
            search: take(SEARCH_TERMS),
            event_category: take(EVENT_CATEGORIES),
            event_action: take(EVENT_ACTIONS),
            event_name: take(EVENT_NAMES),
            sku: take(PRODUCTS),
            product_name: take(PRODUCTS),
            product_category: take(PRODUCT_CATEGORIES),
            hsr_selector: take(HSR_SELECTORS),
        }
    }

    /// Rows (idaction, name, type, url_prefix) in id order, matching `layout`.
    fn rows(&self) -> Vec<(u32, String, u8, Option<u8>)> {
        use action_type::*;
        let mut rows = Vec::new();
        let mut push =
            |start: u32, n: u32, kind: u8, prefix: Option<u8>, name: &dyn Fn(u32) -> String| {
                for i in 0..n {
                    rows.push((start + i, name(i), kind, prefix));
                }
            };
        for (s, site) in SITES.iter().enumerate() {
            let host = site.host;
            push(self.page_url[s], PAGES_PER_SITE, PAGE_URL, Some(2), &|i| {
                format!("{host}/{}/page-{i}", SECTIONS[i as usize % SECTIONS.len()])
            });
            push(self.page_title[s], PAGES_PER_SITE, PAGE_TITLE, None, &|i| {
                format!(
                    "{} - Page {i}",
                    capitalize(SECTIONS[i as usize % SECTIONS.len()])
                )
            });
            push(
                self.download[s],
                DOWNLOADS_PER_SITE,
                DOWNLOAD,
                Some(2),
                &|i| format!("{host}/files/document-{i}.pdf"),
            );
        }
        push(self.outlink, OUTLINKS, OUTLINK, Some(2), &|i| {
            format!("partner-{i}.example.net/")
        });
        push(self.search, SEARCH_TERMS, SITE_SEARCH, None, &|i| {
            let a = SEARCH_WORDS[i as usize % SEARCH_WORDS.len()];
            let b = SEARCH_WORDS[(i as usize / SEARCH_WORDS.len()) % SEARCH_WORDS.len()];
            format!("{a} {b} {i}")
        });
        push(
            self.event_category,
            EVENT_CATEGORIES,
            EVENT_CATEGORY,
            None,
            &|i| format!("Category {i}"),
        );
        push(self.event_action, EVENT_ACTIONS, EVENT_ACTION, None, &|i| {
            ["click", "play", "submit", "scroll"][i as usize % 4].to_string() + &format!("-{i}")
        });
        push(self.event_name, EVENT_NAMES, EVENT_NAME, None, &|i| {
            format!("Widget {i}")
        });
        push(self.sku, PRODUCTS, SKU, None, &|i| {
            format!("SKU-{:05}", 1000 + i)
        });
        push(self.product_name, PRODUCTS, PRODUCT_NAME, None, &|i| {
            format!(
                "{} item {i}",
                CATEGORY_NAMES[(i % PRODUCT_CATEGORIES) as usize]
            )
        });
        push(
            self.product_category,
            PRODUCT_CATEGORIES,
            PRODUCT_CATEGORY,
            None,
            &|i| CATEGORY_NAMES[i as usize].to_string(),
        );
        push(self.hsr_selector, HSR_SELECTORS, HSR_SELECTOR, None, &|i| {
            format!("#main > div.block-{i} > a")
        });
        rows
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Writes the sites, the shared `log_action` dictionary and the shared heatmap blobs.
async fn write_dictionary(conn: &mut MySqlConnection, plan: &Plan, end_ts: i64) -> Result<()> {
    let prefix = &plan.prefix;
    let created = fmt_datetime(end_ts - SITE_AGE_DAYS * 86_400);
    let mut sql = format!(
        "INSERT INTO {} (idsite, name, main_url, ts_created, ecommerce, sitesearch, \
         sitesearch_keyword_parameters, sitesearch_category_parameters, timezone, currency, \
         exclude_unknown_urls, excluded_ips, excluded_parameters, excluded_user_agents, \
         excluded_referrers, `group`, type, keep_url_fragment, creator_login) VALUES ",
        quote_ident(&format!("{prefix}site"))
    );
    for (i, site) in SITES.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        write!(
            sql,
            "({}, '{}', 'https://{}', '{created}', {}, 1, '', '', '{}', '{}', 0, '', '', '', '', \
             '', 'website', 0, 'matomo-gen')",
            site.idsite,
            site.name,
            site.host,
            u8::from(site.idsite == 1),
            site.timezone,
            site.currency
        )
        .unwrap();
    }
    (&mut *conn)
        .execute(sql.as_str())
        .await
        .context("cannot insert sites")?;

    // CRC32() on the server gives exactly the hash Matomo stores, without a crc crate here.
    let dictionary = Dictionary::layout().rows();
    for chunk in dictionary.chunks(1000) {
        let mut sql = format!(
            "INSERT INTO {} (idaction, name, hash, type, url_prefix) VALUES ",
            quote_ident(&format!("{prefix}log_action"))
        );
        for (i, (id, name, kind, url_prefix)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            write!(sql, "({id}, ").unwrap();
            push_str_lit(&mut sql, name);
            sql.push_str(", CRC32(");
            push_str_lit(&mut sql, name);
            write!(sql, "), {kind}, ").unwrap();
            push_opt(&mut sql, *url_prefix);
            sql.push(')');
        }
        (&mut *conn)
            .execute(sql.as_str())
            .await
            .context("cannot insert log_action rows")?;
    }

    let mut sql = format!(
        "INSERT INTO {} (idhsrblob, hash, compressed, value) VALUES ",
        quote_ident(&format!("{prefix}log_hsr_blob"))
    );
    for i in 1..=HSR_BLOBS {
        if i > 1 {
            sql.push(',');
        }
        let value = format!("<div class=\"block-{i}\"><p>Recorded DOM fragment {i}</p></div>");
        write!(sql, "({i}, CRC32('{value}'), 0, '{value}')").unwrap();
    }
    (&mut *conn)
        .execute(sql.as_str())
        .await
        .context("cannot insert log_hsr_blob rows")?;

    println!(
        "wrote {} sites, {} log_action rows, {HSR_BLOBS} heatmap blobs",
        SITES.len(),
        dictionary.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Log tables: writers

/// Log tables in the order their counts are reported; also the tables ANALYZE'd at the end.
const LOG_TABLES: [&str; 14] = [
    "log_visit",
    "log_link_visit_action",
    "log_conversion",
    "log_conversion_item",
    "log_hsr",
    "log_hsr_event",
    "log_hsr_site",
    "log_hsr_blob",
    "log_form",
    "log_form_page",
    "log_form_field",
    "log_media",
    "log_abtesting",
    "log_clickid",
];

/// One full INSERT statement and how many rows of which table it carries.
struct Statement {
    table: usize,
    rows: u64,
    sql: String,
}

/// Connections and the tables each one writes. Inserting is CPU-bound in the server (parsing
/// the values costs more than the index maintenance), so the biggest table, actions, is spread
/// over two connections to keep every core busy; plugin tables are tiny and share one.
const WRITERS: [&[usize]; 5] = [
    &[T_VISIT],
    &[T_ACTION],
    &[T_ACTION],
    &[T_CONVERSION, T_ITEM],
    &[
        T_HSR,
        T_HSR_EVENT,
        T_HSR_SITE,
        T_FORM,
        T_FORM_PAGE,
        T_FORM_FIELD,
        T_MEDIA,
        T_AB,
        T_CLICK,
    ],
];

const T_VISIT: usize = 0;
const T_ACTION: usize = 1;
const T_CONVERSION: usize = 2;
const T_ITEM: usize = 3;
const T_HSR: usize = 4;
const T_HSR_EVENT: usize = 5;
const T_HSR_SITE: usize = 6;
const T_HSR_BLOB: usize = 7;
const T_FORM: usize = 8;
const T_FORM_PAGE: usize = 9;
const T_FORM_FIELD: usize = 10;
const T_MEDIA: usize = 11;
const T_AB: usize = 12;
const T_CLICK: usize = 13;

/// The writers of each table, in the round-robin order full batches are handed to them.
fn writers_by_table() -> Vec<Vec<usize>> {
    (0..LOG_TABLES.len())
        .map(|table| {
            (0..WRITERS.len())
                .filter(|w| WRITERS[*w].contains(&table))
                .collect()
        })
        .collect()
}

/// Runs the generator thread and the writer connections, reporting progress until all rows
/// are committed. Returns the rows written per log table.
async fn fill_log_tables(
    options: &MySqlConnectOptions,
    plan: &Plan,
) -> Result<Vec<(&'static str, u64)>> {
    let written: Arc<Vec<AtomicU64>> =
        Arc::new(LOG_TABLES.iter().map(|_| AtomicU64::new(0)).collect());
    written[T_HSR_BLOB].store(u64::from(HSR_BLOBS), Ordering::Relaxed);

    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for (w, _) in WRITERS.iter().enumerate() {
        // A short queue is enough to keep a connection busy; more would only buffer memory.
        let (tx, rx) = mpsc::channel::<Statement>(4);
        senders.push(tx);
        let mut conn = options
            .connect()
            .await
            .context("cannot open a writer connection")?;
        prepare_session(&mut conn).await?;
        let written = Arc::clone(&written);
        writers.push(tokio::spawn(async move {
            run_writer(w, conn, rx, written).await
        }));
    }

    let generator_plan = plan.clone();
    let generated_visits = Arc::new(AtomicU64::new(0));
    let progress_visits = Arc::clone(&generated_visits);
    let mut generator = tokio::task::spawn_blocking(move || {
        Generator::new(generator_plan, senders, progress_visits).run()
    });

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    let generated = loop {
        tokio::select! {
            result = &mut generator => break result.context("generator thread panicked")?,
            _ = ticker.tick() => report_progress(plan, &generated_visits, &written, started),
        }
    };

    // Writers end when their queue closes; their errors explain a generator failure better
    // than "channel closed", so they are checked first.
    let mut first_error = None;
    for writer in writers {
        if let Err(err) = writer.await.context("writer task panicked")? {
            first_error.get_or_insert(err);
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let generated = generated?;
    report_progress(plan, &generated_visits, &written, started);

    let counts: Vec<(&'static str, u64)> = LOG_TABLES
        .iter()
        .enumerate()
        .map(|(t, name)| (*name, written[t].load(Ordering::Relaxed)))
        .collect();
    for (t, name) in LOG_TABLES.iter().enumerate() {
        if counts[t].1 != generated[t] {
            bail!(
                "{name}: generated {} rows but the writers committed {}",
                generated[t],
                counts[t].1
            );
        }
    }
    Ok(counts)
}

fn report_progress(plan: &Plan, visits: &AtomicU64, written: &[AtomicU64], started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    let rows: u64 = written.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    let generated = visits.load(Ordering::Relaxed);
    println!(
        "  {secs:>6.1} s  visits generated {generated}/{} ({:.0}%), written: visits {}, \
         actions {}, conversions {}, items {}; {:.0} rows/s",
        plan.visits,
        100.0 * generated as f64 / plan.visits as f64,
        written[T_VISIT].load(Ordering::Relaxed),
        written[T_ACTION].load(Ordering::Relaxed),
        written[T_CONVERSION].load(Ordering::Relaxed),
        written[T_ITEM].load(Ordering::Relaxed),
        rows as f64 / secs.max(0.001)
    );
}

async fn run_writer(
    writer: usize,
    mut conn: MySqlConnection,
    mut queue: mpsc::Receiver<Statement>,
    written: Arc<Vec<AtomicU64>>,
) -> Result<()> {
    // Each statement autocommits: MariaDB's bulk-load path for one big transaction into an
    // empty table was measured no faster here, and it would lock out the second action writer.
    while let Some(statement) = queue.recv().await {
        conn.execute(statement.sql.as_str())
            .await
            .with_context(|| {
                format!(
                    "INSERT into {} failed (writer {writer})",
                    LOG_TABLES[statement.table]
                )
            })?;
        written[statement.table].fetch_add(statement.rows, Ordering::Relaxed);
    }
    conn.close().await.ok();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Log tables: generation

/// Column lists of the tables written as one stream each (all but log_link_visit_action).
const COLUMNS: [&str; 14] = [
    // log_visit
    "idvisit, idsite, idvisitor, visit_last_action_time, config_id, location_ip, profilable, \
     user_id, visit_first_action_time, visit_goal_buyer, visit_goal_converted, \
     visitor_returning, visitor_seconds_since_first, visitor_seconds_since_order, \
     visitor_count_visits, visit_entry_idaction_name, visit_entry_idaction_url, \
     visit_exit_idaction_name, visit_exit_idaction_url, visit_total_actions, \
     visit_total_interactions, visit_total_searches, referer_keyword, referer_name, \
     referer_type, referer_url, location_browser_lang, config_browser_engine, \
     config_browser_name, config_browser_version, config_client_type, config_device_brand, \
     config_device_model, config_device_type, config_os, config_os_version, \
     visit_total_events, visitor_localtime, visitor_seconds_since_last, config_resolution, \
     config_cookie, visit_total_time, location_city, location_country, location_latitude, \
     location_longitude, location_region, last_idlink_va, custom_dimension_1, \
     custom_dimension_2",
    // log_link_visit_action: see ACTION_STREAMS
    "",
    // log_conversion
    "idvisit, idsite, idvisitor, server_time, idaction_url, idlink_va, idgoal, buster, idorder, \
     items, url, revenue, revenue_shipping, revenue_subtotal, revenue_tax, revenue_discount, \
     pageviews_before, visitor_returning, visitor_seconds_since_first, \
     visitor_seconds_since_order, visitor_count_visits, referer_keyword, referer_name, \
     referer_type, config_browser_name, config_client_type, config_device_brand, \
     config_device_model, config_device_type, location_city, location_country, \
     location_latitude, location_longitude, location_region, custom_dimension_1, \
     custom_dimension_2",
    // log_conversion_item
    "idsite, idvisitor, server_time, idvisit, idorder, idaction_sku, idaction_name, \
     idaction_category, idaction_category2, idaction_category3, idaction_category4, \
     idaction_category5, price, quantity, deleted",
    // log_hsr
    "idloghsr, idsite, idvisit, idhsrview, idpageview, idaction_url, device_type, server_time, \
     time_on_page, viewport_w_px, viewport_h_px, scroll_y_max_relative, fold_y_relative",
    // log_hsr_event
    "idhsrevent, idloghsr, time_since_load, event_type, idselector, x, y, idhsrblob",
    // log_hsr_site
    "idsitehsr, idloghsr",
    // log_hsr_blob (written with the dictionary)
    "",
    // log_form
    "idlogform, idsiteform, idsite, idvisit, idvisitor, first_idformview, last_idformview, \
     num_views, num_starts, num_submissions, converted, form_last_action_time, \
     time_hesitation, time_spent, time_to_first_submission",
    // log_form_page
    "idlogformpage, idlogform, idaction_url, num_views, num_starts, num_submissions, \
     time_hesitation, time_spent, time_to_first_submission, entry_field_name, exit_field_name",
    // log_form_field
    "idlogform, idlogformpage, idformview, idpageview, field_name, time_spent, \
     time_hesitation, field_size, left_blank, submitted, num_changes, num_focus, num_deletes, \
     num_cursor",
    // log_media
    "idvisitor, idvisit, idsite, idview, player_name, media_type, resolution, fullscreen, \
     media_title, resource, server_time, time_to_initial_play, watched_time, media_progress, \
     media_length",
    // log_abtesting
    "idvisitor, idvisit, idsite, idexperiment, idvariation, entered, server_time",
    // log_clickid
    "idvisit, idsite, idvisitor, server_time, adclickid, adprovider",
];

/// Actions of different kinds fill different columns. Each kind is its own stream of INSERTs
/// naming only the columns it fills, because every value in the statement text costs server
/// time even when it is NULL; this roughly halves the values sent for actions.
macro_rules! action_columns {
    ($($extra:literal),*) => {
        concat!(
            "idlink_va, idsite, idvisitor, idvisit, idaction_url_ref, idaction_name_ref, \
             pageview_position, server_time, idpageview, idaction_url, time_spent_ref_action, \
             time_spent"
            $(, ", ", $extra)*
        )
    };
}

/// Streams are numbered like tables, plus these extra streams for log_link_visit_action
/// (whose table number is the stream of plain page views).
const S_PAGEVIEW: usize = T_ACTION;
const S_PAGEVIEW_TIMED: usize = 14;
const S_EVENT: usize = 15;
const S_SEARCH: usize = 16;
const S_PRODUCT: usize = 17;
const S_LINK: usize = 18;
const STREAMS: usize = 19;

fn stream_table(stream: usize) -> usize {
    if stream >= LOG_TABLES.len() {
        T_ACTION
    } else {
        stream
    }
}

fn stream_columns(stream: usize) -> &'static str {
    match stream {
        S_PAGEVIEW => action_columns!("idaction_name", "custom_dimension_3"),
        S_PAGEVIEW_TIMED => action_columns!(
            "idaction_name",
            "custom_dimension_3",
            "time_network",
            "time_server",
            "time_transfer",
            "time_dom_processing",
            "time_dom_completion",
            "time_on_load"
        ),
        S_EVENT => action_columns!(
            "idaction_name",
            "custom_float",
            "idaction_event_action",
            "idaction_event_category"
        ),
        S_SEARCH => action_columns!("search_cat", "search_count"),
        S_PRODUCT => action_columns!(
            "idaction_name",
            "idaction_product_cat",
            "idaction_product_name",
            "product_price",
            "idaction_product_sku"
        ),
        S_LINK => action_columns!(),
        table => COLUMNS[table],
    }
}

/// Accumulates rows of one stream into a multi-row INSERT.
struct Batch {
    header: String,
    sql: String,
    rows: u64,
}

impl Batch {
    fn new(prefix: &str, stream: usize) -> Batch {
        let header = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&format!("{prefix}{}", LOG_TABLES[stream_table(stream)])),
            stream_columns(stream)
        );
        Batch {
            sql: String::new(),
            header,
            rows: 0,
        }
    }
    /// Starts a row and returns the buffer to write its comma-separated values into.
    fn row(&mut self) -> &mut String {
        if self.rows == 0 {
            self.sql.push_str(&self.header);
        } else {
            self.sql.push(',');
        }
        self.rows += 1;
        &mut self.sql
    }

    fn is_full(&self) -> bool {
        self.rows as usize >= BATCH_MAX_ROWS || self.sql.len() >= BATCH_MAX_BYTES
    }
}

/// What is known about a visitor on one site when their next visit is generated.
#[derive(Clone, Copy)]
struct VisitorHistory {
    visits: u32,
    first_ts: i64,
    last_ts: i64,
    last_order_ts: Option<i64>,
}

/// One generated action, kept until the visit row (which summarises them) is written.
struct ActionRow {
    idlink_va: u64,
    ts: i64,
    kind: ActionKind,
    idaction_url: Option<u32>,
    idaction_name: Option<u32>,
    idpageview: [u8; 6],
}

#[derive(Clone, Copy, PartialEq)]
enum ActionKind {
    Pageview,
    Event,
    Search,
    Download,
    Outlink,
    ProductView,
}

struct Referrer {
    kind: u8,
    name: Option<&'static str>,
    keyword: Option<String>,
    url: Option<String>,
}

struct Device {
    engine: &'static str,
    browser: &'static str,
    version: &'static str,
    os: &'static str,
    os_version: &'static str,
    brand: &'static str,
    model: &'static str,
    device_type: u8,
    resolution: &'static str,
}

const DEVICES: [Device; 5] = [
    Device {
        engine: "Blink",
        browser: "CH",
        version: "131.0",
        os: "WIN",
        os_version: "10",
        brand: "",
        model: "generic desktop",
        device_type: 0,
        resolution: "1920x1080",
    },
    Device {
        engine: "Gecko",
        browser: "FF",
        version: "133.0",
        os: "LIN",
        os_version: "",
        brand: "",
        model: "generic desktop",
        device_type: 0,
        resolution: "2560x1440",
    },
    Device {
        engine: "WebKit",
        browser: "SF",
        version: "18.1",
        os: "MAC",
        os_version: "14.6",
        brand: "AP",
        model: "generic desktop",
        device_type: 0,
        resolution: "1440x900",
    },
    Device {
        engine: "WebKit",
        browser: "MF",
        version: "18.1",
        os: "IOS",
        os_version: "18.1",
        brand: "AP",
        model: "iPhone",
        device_type: 1,
        resolution: "390x844",
    },
    Device {
        engine: "Blink",
        browser: "CM",
        version: "131.0",
        os: "AND",
        os_version: "14",
        brand: "SA",
        model: "Galaxy S23",
        device_type: 1,
        resolution: "412x915",
    },
];

/// (country, region, city, latitude, longitude, browser language)
const PLACES: [(&str, &str, &str, &str, &str, &str); 8] = [
    ("de", "BE", "Berlin", "52.520000", "13.405000", "de-de"),
    ("fr", "IDF", "Paris", "48.856600", "2.352200", "fr-fr"),
    ("us", "NY", "New York", "40.712800", "-74.006000", "en-us"),
    (
        "us",
        "CA",
        "San Francisco",
        "37.774900",
        "-122.419400",
        "en-us",
    ),
    ("in", "MH", "Mumbai", "19.076000", "72.877700", "en-in"),
    ("gb", "ENG", "London", "51.507400", "-0.127800", "en-gb"),
    ("nl", "NH", "Amsterdam", "52.367600", "4.904100", "nl-nl"),
    ("br", "SP", "Sao Paulo", "-23.550500", "-46.633300", "pt-br"),
];

const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const FORM_FIELDS: [&str; 6] = ["email", "name", "message", "phone", "company", "newsletter"];

/// Single-threaded, seed-driven row generator. Sends full batches to the writers.
struct Generator {
    plan: Plan,
    rng: StdRng,
    dict: Dictionary,
    /// One batch per stream.
    batches: Vec<Batch>,
    senders: Vec<mpsc::Sender<Statement>>,
    /// Writers of each table, and how many batches each table has handed out so far.
    routes: Vec<Vec<usize>>,
    routed: Vec<usize>,
    /// Rows generated per table.
    generated: Vec<u64>,
    progress: Arc<AtomicU64>,
    histories: HashMap<(u8, [u8; 8]), VisitorHistory>,
    next_idlink_va: u64,
    next_order: [u64; 3],
    next_idloghsr: u64,
    next_idhsrevent: u64,
    next_idlogform: u64,
    next_idlogformpage: u64,
    bench_visits: Vec<u64>,
    user_pool: u64,
    anonymous_pool: u64,
}

impl Generator {
    fn new(plan: Plan, senders: Vec<mpsc::Sender<Statement>>, progress: Arc<AtomicU64>) -> Self {
        let batches = (0..STREAMS).map(|t| Batch::new(&plan.prefix, t)).collect();
        // Evenly spaced over the visit sequence, hence over the whole time window.
        let bench_visits = (0..BENCH_VISITS)
            .map(|j| (2 * j + 1) * plan.visits / (2 * BENCH_VISITS))
            .collect();
        // A quarter of the visits carry a user id; with visits/16 users a user has ~4 visits.
        let user_pool = (plan.visits / 16).max(1);
        let anonymous_pool = (plan.visits / 4).max(1);
        Generator {
            rng: StdRng::seed_from_u64(plan.seed),
            dict: Dictionary::layout(),
            batches,
            senders,
            routes: writers_by_table(),
            routed: vec![0; LOG_TABLES.len()],
            generated: vec![0; LOG_TABLES.len()],
            progress,
            histories: HashMap::with_capacity(plan.visits as usize),
            next_idlink_va: 1,
            next_order: [1; 3],
            next_idloghsr: 1,
            next_idhsrevent: 1,
            next_idlogform: 1,
            next_idlogformpage: 1,
            bench_visits,
            user_pool,
            anonymous_pool,
            plan,
        }
    }

    /// Generates every visit, flushes the last batches and closes the writer queues.
    /// Returns the number of rows generated per table.
    fn run(mut self) -> Result<Vec<u64>> {
        let span = self.plan.window_end - self.plan.window_start;
        let mut next_bench = 0;
        for i in 0..self.plan.visits {
            // Start times grow with idvisit, as on a real tracker, which keeps index inserts
            // mostly at the right edge of each B-tree.
            let slot = self.plan.window_start
                + (i as i128 * span as i128 / self.plan.visits as i128) as i64;
            let step = (span / self.plan.visits as i64).max(1);
            let start = slot + self.rng.gen_range(0..step);
            let bench = next_bench < self.bench_visits.len() && self.bench_visits[next_bench] == i;
            let subject = if bench {
                let site = (next_bench % 3) as u8 + 1;
                next_bench += 1;
                Subject::User(BENCH_USER_ID.to_string(), site)
            } else {
                self.pick_subject()
            };
            self.visit(i + 1, start, subject)?;
            if i % 4096 == 0 {
                self.progress.store(i, Ordering::Relaxed);
            }
        }
        self.progress.store(self.plan.visits, Ordering::Relaxed);
        self.generated[T_HSR_BLOB] = u64::from(HSR_BLOBS);
        for stream in 0..STREAMS {
            self.flush(stream)?;
        }
        Ok(self.generated)
    }

    fn pick_subject(&mut self) -> Subject {
        if self.rng.gen_ratio(1, 4) {
            let k = self.rng.gen_range(1..=self.user_pool);
            // Users mostly come back to the same site, sometimes to another one.
            let site = if self.rng.gen_ratio(7, 10) {
                (k % 3) as u8 + 1
            } else {
                self.weighted_site()
            };
            Subject::User(format!("user{k}@example.org"), site)
        } else {
            let site = self.weighted_site();
            // Half of the anonymous visits come from returning cookies, the rest are one-off.
            let id = if self.rng.gen_bool(0.5) {
                let k = self.rng.gen_range(0..self.anonymous_pool);
                splitmix64(self.plan.seed ^ 0x5eed_0000_0000_0000 ^ k).to_be_bytes()
            } else {
                self.rng.gen::<u64>().to_be_bytes()
            };
            Subject::Anonymous(id, site)
        }
    }

    fn weighted_site(&mut self) -> u8 {
        let roll = self.rng.gen_range(0..100);
        let mut acc = 0;
        for site in &SITES {
            acc += site.weight;
            if roll < acc {
                return site.idsite;
            }
        }
        SITES[0].idsite
    }

    fn visit(&mut self, idvisit: u64, start: i64, subject: Subject) -> Result<()> {
        let (user_id, idsite, idvisitor) = match subject {
            Subject::User(uid, site) => {
                let id = visitor_id_for_user(&uid);
                (Some(uid), site, id)
            }
            Subject::Anonymous(id, site) => (None, site, id),
        };
        let s = usize::from(idsite - 1);
        let history = self.histories.get(&(idsite, idvisitor)).copied();

        let actions = self.actions(s, start);
        let first = &actions[0];
        let last = &actions[actions.len() - 1];
        let end = last.ts;
        let pageviews = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Pageview)
            .count();
        let searches = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Search)
            .count();
        let events = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Event)
            .count();

        let conversions = self.conversion_plan(s);
        let ordered = conversions.iter().any(|c| c.idgoal == 0);
        let carted = conversions.iter().any(|c| c.idgoal == -1);
        let device = &DEVICES[self.rng.gen_range(0..DEVICES.len())];
        let place = PLACES[self.rng.gen_range(0..PLACES.len())];
        let referrer = self.referrer();
        let plan_dimension = if self.rng.gen_ratio(2, 3) {
            Some(PLANS[self.rng.gen_range(0..PLANS.len())])
        } else {
            None
        };
        // A visit-scope dimension holding a CRM id is personal data the erase tool must remove.
        let crm_dimension = user_id
            .as_ref()
            .map(|uid| format!("crm-{:08x}", splitmix64(fnv1a(uid.as_bytes())) as u32));
        let visit_count = history.map_or(1, |h| h.visits + 1);
        // Jittered start times can make two visits of one visitor overlap; Matomo never stores
        // negative durations, so they are clamped.
        let since_first = history.map_or(0, |h| (start - h.first_ts).max(0));
        let since_last = history.map_or(0, |h| (start - h.last_ts).max(0));
        let since_order = history
            .and_then(|h| h.last_order_ts)
            .map(|t| (start - t).max(0));

        // log_visit
        {
            let config_id: u64 = self.rng.gen();
            let ip: u32 = self.rng.gen();
            let localtime =
                (start + i64::from(self.rng.gen_range(0..24u32)) * 3600).rem_euclid(86_400);
            let b = self.batches[T_VISIT].row();
            write!(b, "({idvisit},{idsite},").unwrap();
            push_hex(b, &idvisitor);
            b.push(',');
            push_datetime(b, end);
            b.push(',');
            push_hex(b, &config_id.to_be_bytes());
            b.push(',');
            push_hex(b, &ip.to_be_bytes());
            b.push_str(",1,");
            push_opt_str(b, user_id.as_deref());
            b.push(',');
            push_datetime(b, start);
            write!(
                b,
                ",{},{},{},{since_first},",
                match (ordered, carted) {
                    (true, true) => 3,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 0,
                },
                u8::from(conversions.iter().any(|c| c.idgoal > 0) || ordered),
                u8::from(history.is_some()),
            )
            .unwrap();
            push_opt(b, since_order);
            write!(
                b,
                ",{visit_count},{},{},{},{},{},{pageviews},{searches},",
                opt_num(first.idaction_name),
                opt_num(first.idaction_url),
                opt_num(last.idaction_name),
                opt_num(last.idaction_url),
                actions.len(),
            )
            .unwrap();
            push_opt_str(b, referrer.keyword.as_deref());
            b.push(',');
            push_opt_str(b, referrer.name);
            write!(b, ",{},", referrer.kind).unwrap();
            push_opt_str(b, referrer.url.as_deref());
            write!(
                b,
                ",'{}','{}','{}','{}',1,'{}','{}',{},'{}','{}',{events},",
                place.5,
                device.engine,
                device.browser,
                device.version,
                device.brand,
                device.model,
                device.device_type,
                device.os,
                device.os_version,
            )
            .unwrap();
            write!(
                b,
                "'{:02}:{:02}:{:02}',{since_last},'{}',1,{},'{}','{}',{},{},'{}',{},",
                localtime / 3600,
                localtime / 60 % 60,
                localtime % 60,
                device.resolution,
                end - start + 10,
                place.2,
                place.0,
                place.3,
                place.4,
                place.1,
                last.idlink_va,
            )
            .unwrap();
            push_opt_str(b, plan_dimension);
            b.push(',');
            push_opt_str(b, crm_dimension.as_deref());
            b.push(')');
        }
        self.count(T_VISIT)?;

        // log_link_visit_action
        let mut pageview_position = 0u32;
        let mut previous: Option<&ActionRow> = None;
        for action in &actions {
            if action.kind == ActionKind::Pageview {
                pageview_position += 1;
            }
            let stream = match action.kind {
                ActionKind::Pageview if self.rng.gen_ratio(1, 3) => S_PAGEVIEW_TIMED,
                ActionKind::Pageview => S_PAGEVIEW,
                ActionKind::Event => S_EVENT,
                ActionKind::Search => S_SEARCH,
                ActionKind::ProductView => S_PRODUCT,
                ActionKind::Download | ActionKind::Outlink => S_LINK,
            };
            let product = self.rng.gen_range(0..PRODUCTS);
            let time_spent = self.rng.gen_range(5..240u32);
            let extra: [u32; 6] = std::array::from_fn(|_| self.rng.gen_range(1..1000));

            let b = self.batches[stream].row();
            write!(b, "({},{idsite},", action.idlink_va).unwrap();
            push_hex(b, &idvisitor);
            // The first action of a visit refers to no previous action: Matomo stores 0 there.
            write!(
                b,
                ",{idvisit},{},{},{pageview_position},",
                previous.and_then(|p| p.idaction_url).unwrap_or(0),
                previous.and_then(|p| p.idaction_name).unwrap_or(0),
            )
            .unwrap();
            push_datetime(b, action.ts);
            b.push_str(",'");
            b.push_str(std::str::from_utf8(&action.idpageview).unwrap());
            write!(
                b,
                "',{},{},{time_spent}",
                opt_num(action.idaction_url),
                opt_num(previous.map(|p| action.ts - p.ts)),
            )
            .unwrap();
            match stream {
                S_PAGEVIEW | S_PAGEVIEW_TIMED => {
                    let section = SECTIONS[extra[0] as usize % SECTIONS.len()];
                    write!(b, ",{},'{section}'", opt_num(action.idaction_name)).unwrap();
                    if stream == S_PAGEVIEW_TIMED {
                        // network, server, transfer, DOM processing, DOM completion, on load (ms)
                        for (value, scale) in extra.iter().zip([5, 3, 20, 1, 1, 4]) {
                            write!(b, ",{}", value / scale).unwrap();
                        }
                    }
                }
                S_EVENT => {
                    let value = if extra[0].is_multiple_of(2) {
                        Some(extra[1] % 100)
                    } else {
                        None
                    };
                    write!(
                        b,
                        ",{},{},{},{}",
                        opt_num(action.idaction_name),
                        opt_num(value),
                        self.dict.event_action + product % EVENT_ACTIONS,
                        self.dict.event_category + product % EVENT_CATEGORIES
                    )
                    .unwrap();
                }
                S_SEARCH => write!(b, ",'docs',{}", extra[0] % 40).unwrap(),
                S_PRODUCT => write!(
                    b,
                    ",{},{},{},{}.99,{}",
                    opt_num(action.idaction_name),
                    self.dict.product_category + product % PRODUCT_CATEGORIES,
                    self.dict.product_name + product,
                    9 + product,
                    self.dict.sku + product
                )
                .unwrap(),
                _ => {}
            }
            b.push(')');
            self.count(stream)?;
            previous = Some(action);
        }

        // log_conversion and log_conversion_item
        for conversion in &conversions {
            let at = &actions[self.rng.gen_range(0..actions.len())];
            let pageviews_before = actions
                .iter()
                .filter(|a| a.kind == ActionKind::Pageview && a.ts <= at.ts)
                .count();
            let items = &conversion.items;
            let subtotal: f64 = items
                .iter()
                .map(|(_, price, qty)| price * f64::from(*qty))
                .sum();
            let (revenue, shipping, tax) = if conversion.idgoal <= 0 {
                let shipping = if subtotal > 50.0 { 0.0 } else { 4.9 };
                let tax = (subtotal * 0.19 * 100.0).round() / 100.0;
                (subtotal + shipping + tax, Some(shipping), Some(tax))
            } else {
                (f64::from(conversion.idgoal) * 5.0, None, None)
            };
            let b = self.batches[T_CONVERSION].row();
            write!(b, "({idvisit},{idsite},").unwrap();
            push_hex(b, &idvisitor);
            b.push(',');
            push_datetime(b, at.ts);
            write!(
                b,
                ",{},{},{},{},",
                opt_num(at.idaction_url),
                at.idlink_va,
                conversion.idgoal,
                conversion.buster
            )
            .unwrap();
            push_opt_str(
                b,
                conversion
                    .idorder
                    .as_deref()
                    .filter(|_| conversion.idgoal == 0),
            );
            let item_count = if conversion.idgoal <= 0 {
                items.len().to_string()
            } else {
                "NULL".to_string()
            };
            write!(
                b,
                ",{item_count},'https://{}/{}',{revenue:.2},{},",
                SITES[s].host,
                if conversion.idgoal <= 0 {
                    "checkout"
                } else {
                    "signup"
                },
                opt_num(shipping)
            )
            .unwrap();
            if conversion.idgoal <= 0 {
                write!(b, "{subtotal:.2},{},0,", opt_num(tax)).unwrap();
            } else {
                b.push_str("NULL,NULL,NULL,");
            }
            write!(
                b,
                "{pageviews_before},{},{since_first},{},{visit_count},",
                u8::from(history.is_some()),
                opt_num(since_order)
            )
            .unwrap();
            push_opt_str(b, referrer.keyword.as_deref());
            b.push(',');
            push_opt_str(b, referrer.name);
            write!(
                b,
                ",{},'{}',1,'{}','{}',{},'{}','{}',{},{},'{}',",
                referrer.kind,
                device.browser,
                device.brand,
                device.model,
                device.device_type,
                place.2,
                place.0,
                place.3,
                place.4,
                place.1,
            )
            .unwrap();
            push_opt_str(b, plan_dimension);
            b.push(',');
            push_opt_str(b, crm_dimension.as_deref());
            b.push(')');
            self.count(T_CONVERSION)?;

            // Matomo files the items of an abandoned cart under idorder '0'.
            let idorder = conversion
                .idorder
                .clone()
                .unwrap_or_else(|| "0".to_string());
            for (product_index, price, quantity) in items {
                let b = self.batches[T_ITEM].row();
                write!(b, "({idsite},").unwrap();
                push_hex(b, &idvisitor);
                b.push(',');
                push_datetime(b, at.ts);
                write!(b, ",{idvisit},").unwrap();
                push_str_lit(b, &idorder);
                write!(
                    b,
                    ",{},{},{},0,0,0,0,{price:.2},{quantity},0)",
                    self.dict.sku + product_index,
                    self.dict.product_name + product_index,
                    self.dict.product_category + product_index % PRODUCT_CATEGORIES
                )
                .unwrap();
                self.count(T_ITEM)?;
            }
        }

        self.plugin_rows(idvisit, idsite, &idvisitor, &actions, &referrer)?;

        self.histories.insert(
            (idsite, idvisitor),
            VisitorHistory {
                visits: visit_count,
                first_ts: history.map_or(start, |h| h.first_ts),
                last_ts: end,
                last_order_ts: if ordered {
                    Some(end)
                } else {
                    history.and_then(|h| h.last_order_ts)
                },
            },
        );
        Ok(())
    }

    /// 1..16 actions (8 on average), seconds to minutes apart, so some visits cross midnight.
    fn actions(&mut self, s: usize, start: i64) -> Vec<ActionRow> {
        let n = 1 + self.rng.gen_range(0..=7) + self.rng.gen_range(0..=8);
        let mut ts = start;
        let mut rows = Vec::with_capacity(n);
        for k in 0..n {
            if k > 0 {
                ts += self.rng.gen_range(5..=300);
            }
            let roll = self.rng.gen_range(0..100);
            let kind = match roll {
                _ if k == 0 => ActionKind::Pageview,
                0..=69 => ActionKind::Pageview,
                70..=79 => ActionKind::Event,
                80..=84 => ActionKind::Search,
                85..=89 => ActionKind::ProductView,
                90..=95 => ActionKind::Download,
                _ => ActionKind::Outlink,
            };
            // Squaring a uniform number makes a few pages popular and most of them rare.
            let popular = |rng: &mut StdRng, n: u32| {
                let u: f64 = rng.gen();
                ((u * u) * f64::from(n)) as u32
            };
            let page = popular(&mut self.rng, PAGES_PER_SITE);
            let (url, name) = match kind {
                ActionKind::Pageview | ActionKind::Event | ActionKind::ProductView => (
                    Some(self.dict.page_url[s] + page),
                    Some(self.dict.page_title[s] + page),
                ),
                ActionKind::Search => (
                    Some(self.dict.search + popular(&mut self.rng, SEARCH_TERMS)),
                    None,
                ),
                ActionKind::Download => (
                    Some(self.dict.download[s] + self.rng.gen_range(0..DOWNLOADS_PER_SITE)),
                    None,
                ),
                ActionKind::Outlink => (
                    Some(self.dict.outlink + self.rng.gen_range(0..OUTLINKS)),
                    None,
                ),
            };
            let name = if kind == ActionKind::Event {
                Some(self.dict.event_name + page % EVENT_NAMES)
            } else {
                name
            };
            rows.push(ActionRow {
                idlink_va: self.next_idlink_va,
                ts,
                kind,
                idaction_url: url,
                idaction_name: name,
                idpageview: random_token(&mut self.rng),
            });
            self.next_idlink_va += 1;
        }
        rows
    }

    /// About two visits in three convert: ecommerce orders, abandoned carts or goals.
    fn conversion_plan(&mut self, s: usize) -> Vec<ConversionPlan> {
        let mut conversions = Vec::new();
        if !self.rng.gen_ratio(2, 3) {
            return conversions;
        }
        let roll = self.rng.gen_range(0..100);
        if roll < 30 {
            let idorder = format!("ORD-{}-{:08}", s + 1, self.next_order[s]);
            self.next_order[s] += 1;
            let items = self.items();
            conversions.push(ConversionPlan {
                idgoal: 0,
                buster: self.rng.gen(),
                idorder: Some(idorder),
                items,
            });
        } else if roll < 40 {
            let items = self.items();
            conversions.push(ConversionPlan {
                idgoal: -1,
                buster: self.rng.gen(),
                idorder: None,
                items,
            });
        }
        if roll >= 40 || self.rng.gen_ratio(1, 10) {
            conversions.push(ConversionPlan {
                idgoal: self.rng.gen_range(1..=3),
                buster: 0,
                idorder: None,
                items: Vec::new(),
            });
        }
        conversions
    }

    /// 1..4 distinct products with a price and a quantity.
    fn items(&mut self) -> Vec<(u32, f64, u32)> {
        let n = self.rng.gen_range(1..=4);
        let mut items: Vec<(u32, f64, u32)> = Vec::with_capacity(n);
        while items.len() < n {
            let product = self.rng.gen_range(0..PRODUCTS);
            if items.iter().all(|(p, _, _)| *p != product) {
                items.push((
                    product,
                    f64::from(9 + product) + 0.99,
                    self.rng.gen_range(1..=3),
                ));
            }
        }
        items
    }

    fn referrer(&mut self) -> Referrer {
        match self.rng.gen_range(0..100) {
            0..=39 => Referrer {
                kind: 1,
                name: None,
                keyword: None,
                url: None,
            },
            40..=69 => {
                let engine = ["Google", "DuckDuckGo", "Bing"][self.rng.gen_range(0..3)];
                let word = SEARCH_WORDS[self.rng.gen_range(0..SEARCH_WORDS.len())];
                Referrer {
                    kind: 2,
                    name: Some(engine),
                    keyword: Some(word.to_string()),
                    url: Some(format!(
                        "https://www.{}.com/search?q={word}",
                        engine.to_lowercase()
                    )),
                }
            }
            70..=89 => {
                let site = ["news.example.net", "forum.example.io", "wiki.example.org"]
                    [self.rng.gen_range(0..3)];
                Referrer {
                    kind: 3,
                    name: Some(site),
                    keyword: None,
                    url: Some(format!(
                        "https://{site}/thread/{}",
                        self.rng.gen_range(1..5000)
                    )),
                }
            }
            _ => Referrer {
                kind: 6,
                name: Some(["spring-sale", "newsletter", "retargeting"][self.rng.gen_range(0..3)]),
                keyword: Some("ad-group-1".to_string()),
                url: None,
            },
        }
    }

    /// Premium plugin rows for about 1% of the visits each.
    fn plugin_rows(
        &mut self,
        idvisit: u64,
        idsite: u8,
        idvisitor: &[u8; 8],
        actions: &[ActionRow],
        referrer: &Referrer,
    ) -> Result<()> {
        let pageviews: Vec<&ActionRow> = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Pageview)
            .collect();

        if self.rng.gen_ratio(1, 100) {
            let recorded = self.rng.gen_range(1..=pageviews.len().min(2));
            for pageview in pageviews.iter().take(recorded) {
                let idloghsr = self.next_idloghsr;
                self.next_idloghsr += 1;
                let view = random_token(&mut self.rng);
                let values = (
                    self.rng.gen_range(1..=3u8),
                    self.rng.gen_range(5_000..300_000u32),
                    self.rng.gen_range(320..1920u32),
                    self.rng.gen_range(480..1200u32),
                    self.rng.gen_range(0..=1000u32),
                    self.rng.gen_range(100..=1000u32),
                );
                let b = self.batches[T_HSR].row();
                write!(
                    b,
                    "({idloghsr},{idsite},{idvisit},'{}','{}',{},{},",
                    std::str::from_utf8(&view).unwrap(),
                    std::str::from_utf8(&pageview.idpageview).unwrap(),
                    pageview.idaction_url.unwrap_or(0),
                    values.0
                )
                .unwrap();
                push_datetime(b, pageview.ts);
                write!(
                    b,
                    ",{},{},{},{},{})",
                    values.1, values.2, values.3, values.4, values.5
                )
                .unwrap();
                self.count(T_HSR)?;

                let events = self.rng.gen_range(5..=30);
                for e in 0..events {
                    let id = self.next_idhsrevent;
                    self.next_idhsrevent += 1;
                    let kind = [1u8, 2, 3, 6, 9][self.rng.gen_range(0..5)];
                    let selector = self.dict.hsr_selector + self.rng.gen_range(0..HSR_SELECTORS);
                    let blob = if kind == 6 {
                        (1 + self.rng.gen_range(0..HSR_BLOBS)).to_string()
                    } else {
                        "NULL".to_string()
                    };
                    let (x, y) = (self.rng.gen_range(0..1000), self.rng.gen_range(0..1000));
                    let b = self.batches[T_HSR_EVENT].row();
                    write!(
                        b,
                        "({id},{idloghsr},{},{kind},{selector},{x},{y},{blob})",
                        e * 700
                    )
                    .unwrap();
                    self.count(T_HSR_EVENT)?;
                }

                let configured = u64::from(idsite) * 2 - 1;
                for idsitehsr in configured..configured + self.rng.gen_range(1..=2) {
                    let b = self.batches[T_HSR_SITE].row();
                    write!(b, "({idsitehsr},{idloghsr})").unwrap();
                    self.count(T_HSR_SITE)?;
                }
            }
        }

        if self.rng.gen_ratio(1, 100) {
            let idlogform = self.next_idlogform;
            self.next_idlogform += 1;
            let pageview = pageviews[self.rng.gen_range(0..pageviews.len())];
            let formview = random_token(&mut self.rng);
            let submitted = self.rng.gen_ratio(1, 2);
            let (hesitation, spent) = (
                self.rng.gen_range(500..20_000u32),
                self.rng.gen_range(2_000..120_000u32),
            );
            let b = self.batches[T_FORM].row();
            write!(
                b,
                "({idlogform},{},{idsite},{idvisit},",
                u32::from(idsite) * 10 + 1
            )
            .unwrap();
            push_hex(b, idvisitor);
            let view = std::str::from_utf8(&formview).unwrap();
            write!(
                b,
                ",'{view}','{view}',1,1,{},{},",
                u8::from(submitted),
                u8::from(submitted)
            )
            .unwrap();
            push_datetime(b, pageview.ts + i64::from(spent / 1000));
            write!(
                b,
                ",{hesitation},{spent},{})",
                if submitted { spent } else { 0 }
            )
            .unwrap();
            self.count(T_FORM)?;

            let pages = self.rng.gen_range(1..=2);
            for _ in 0..pages {
                let idlogformpage = self.next_idlogformpage;
                self.next_idlogformpage += 1;
                let fields = self.rng.gen_range(3..=FORM_FIELDS.len());
                let b = self.batches[T_FORM_PAGE].row();
                write!(
                    b,
                    "({idlogformpage},{idlogform},{},1,1,{},{hesitation},{spent},{},'{}','{}')",
                    pageview.idaction_url.unwrap_or(0),
                    u8::from(submitted),
                    if submitted { spent } else { 0 },
                    FORM_FIELDS[0],
                    FORM_FIELDS[fields - 1]
                )
                .unwrap();
                self.count(T_FORM_PAGE)?;
                for field in FORM_FIELDS.iter().take(fields) {
                    let values: [u32; 6] = [
                        self.rng.gen_range(500..30_000),
                        self.rng.gen_range(0..5_000),
                        self.rng.gen_range(0..60),
                        self.rng.gen_range(0..5),
                        self.rng.gen_range(1..4),
                        self.rng.gen_range(0..8),
                    ];
                    let b = self.batches[T_FORM_FIELD].row();
                    write!(
                        b,
                        "({idlogform},{idlogformpage},'{view}','{}','{field}',{},{},{},{},{},{},{},{},0)",
                        std::str::from_utf8(&pageview.idpageview).unwrap(),
                        values[0],
                        values[1],
                        values[2],
                        u8::from(values[2] == 0),
                        u8::from(submitted),
                        values[3],
                        values[4],
                        values[5],
                    )
                    .unwrap();
                    self.count(T_FORM_FIELD)?;
                }
            }
        }

        if self.rng.gen_ratio(1, 100) {
            let views = self.rng.gen_range(1..=2);
            for v in 0..views {
                let pageview = pageviews[self.rng.gen_range(0..pageviews.len())];
                let idview = random_token(&mut self.rng);
                let length = self.rng.gen_range(30..1800u32);
                let watched = self.rng.gen_range(0..=length);
                let video = self.rng.gen_ratio(3, 4);
                let b = self.batches[T_MEDIA].row();
                b.push('(');
                push_hex(b, idvisitor);
                write!(
                    b,
                    ",{idvisit},{idsite},'{}','html5',{},{},{},'Clip {v}','https://{}/media/clip-{v}.mp4',",
                    std::str::from_utf8(&idview).unwrap(),
                    if video { 1 } else { 2 },
                    if video { "'1280x720'" } else { "NULL" },
                    u8::from(video && watched > length / 2),
                    SITES[usize::from(idsite - 1)].host,
                )
                .unwrap();
                push_datetime(b, pageview.ts);
                write!(b, ",{},{watched},{watched},{length})", watched.min(3)).unwrap();
                self.count(T_MEDIA)?;
            }
        }

        if self.rng.gen_ratio(1, 100) {
            let experiment = u32::from(idsite);
            let variation = experiment * 10 + self.rng.gen_range(0..3);
            let b = self.batches[T_AB].row();
            b.push('(');
            push_hex(b, idvisitor);
            write!(b, ",{idvisit},{idsite},{experiment},{variation},1,").unwrap();
            push_datetime(b, actions[0].ts);
            b.push(')');
            self.count(T_AB)?;
        }

        // Ad click ids arrive with paid campaign traffic.
        if referrer.kind == 6 && self.rng.gen_ratio(1, 5) {
            let click: u64 = self.rng.gen();
            let b = self.batches[T_CLICK].row();
            write!(b, "({idvisit},{idsite},").unwrap();
            push_hex(b, idvisitor);
            b.push(',');
            push_datetime(b, actions[0].ts);
            write!(b, ",'Cj0KCQ{click:016x}','google')").unwrap();
            self.count(T_CLICK)?;
        }
        Ok(())
    }

    /// Counts the row just written and sends the batch once it is full.
    fn count(&mut self, stream: usize) -> Result<()> {
        self.generated[stream_table(stream)] += 1;
        if self.batches[stream].is_full() {
            self.flush(stream)?;
        }
        Ok(())
    }

    fn flush(&mut self, stream: usize) -> Result<()> {
        let batch = &mut self.batches[stream];
        if batch.rows == 0 {
            return Ok(());
        }
        let table = stream_table(stream);
        let statement = Statement {
            table,
            rows: batch.rows,
            sql: std::mem::replace(&mut batch.sql, String::with_capacity(BATCH_MAX_BYTES)),
        };
        batch.rows = 0;
        let routes = &self.routes[table];
        let writer = routes[self.routed[table] % routes.len()];
        self.routed[table] += 1;
        self.senders[writer]
            .blocking_send(statement)
            .map_err(|_| anyhow::anyhow!("the writer for {} stopped", LOG_TABLES[table]))
    }
}

enum Subject {
    User(String, u8),
    Anonymous([u8; 8], u8),
}

struct ConversionPlan {
    idgoal: i32,
    buster: u32,
    idorder: Option<String>,
    items: Vec<(u32, f64, u32)>,
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Matomo's visitor id for a user id: the first 8 bytes of SHA-1 of the (already escaped) id.
fn visitor_id_for_user(user_id: &str) -> [u8; 8] {
    let digest = Sha1::digest(user_id.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Six lowercase alphanumerics, the shape of Matomo's pageview and view ids.
fn random_token(rng: &mut StdRng) -> [u8; 6] {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut token = [0u8; 6];
    for c in &mut token {
        *c = ALPHABET[rng.gen_range(0..ALPHABET.len())];
    }
    token
}

fn push_hex(buf: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    buf.push_str("0x");
    for b in bytes {
        buf.push(DIGITS[usize::from(b >> 4)] as char);
        buf.push(DIGITS[usize::from(b & 15)] as char);
    }
}

fn push_str_lit(buf: &mut String, value: &str) {
    buf.push('\'');
    for c in value.chars() {
        match c {
            '\'' => buf.push_str("''"),
            '\\' => buf.push_str("\\\\"),
            _ => buf.push(c),
        }
    }
    buf.push('\'');
}

fn push_opt_str(buf: &mut String, value: Option<&str>) {
    match value {
        Some(v) => push_str_lit(buf, v),
        None => buf.push_str("NULL"),
    }
}

fn push_opt<T: std::fmt::Display>(buf: &mut String, value: Option<T>) {
    match value {
        Some(v) => write!(buf, "{v}").unwrap(),
        None => buf.push_str("NULL"),
    }
}

fn opt_num<T: std::fmt::Display>(value: Option<T>) -> OptNum<T> {
    OptNum(value)
}

/// Displays a value or SQL `NULL`, so optional numbers can go straight into `write!`.
struct OptNum<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OptNum<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("NULL"),
        }
    }
}

fn push_datetime(buf: &mut String, ts: i64) {
    buf.push('\'');
    buf.push_str(&fmt_datetime(ts));
    buf.push('\'');
}

/// `YYYY-MM-DD HH:MM:SS` for a UTC unix timestamp, without chrono's format-string parsing in
/// the hot loop.
fn fmt_datetime(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Gregorian date for days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
