//! The command line: commands, selectors and options. Parsing only; `run` does the work.

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (for verify: nothing of the subjects remains)
  1  unexpected failure
  2  bad usage or input: bad option, unreadable file, wrong prefix, not a Matomo database
  3  cannot connect, log in, or a privilege is missing
  4  stopped part-way (signal, stop file, --max-runtime, --critical-load, too many retries):
     every finished chunk is committed; run the same command again to finish
  5  verify found rows or visits that should be gone, or a missing invalidation";

#[derive(Parser, Debug)]
#[command(
    name = "matomo-erase",
    version,
    about = "Erase data subjects (GDPR Art. 17) straight from a Matomo MySQL/MariaDB database",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v: info, -vv: debug with SQL).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress bar and only warnings on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// mysql://USER:PASS@HOST:PORT/DB; ?socket=/path for a unix socket, ?ssl-mode=REQUIRED
    /// for TLS.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Read the connection and table prefix from Matomo's config/config.ini.php.
    #[arg(long, global = true, value_name = "PATH")]
    pub matomo_config: Option<PathBuf>,

    /// Table prefix (e.g. matomo_); an empty value means no prefix. Found from the schema when
    /// neither this nor --matomo-config gives it.
    #[arg(long, global = true)]
    pub prefix: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the Matomo version, prefix, sites, log tables and how each reaches a visit.
    Inspect,
    /// List the visits of the subjects. Writes nothing.
    Find(SelectArgs),
    /// Plan (default) or, with --execute, erase the visits of the subjects.
    Erase(Box<EraseArgs>),
    /// Check that nothing of the subjects remains and that every site-day is queued.
    Verify(SelectArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Lookup {
    /// Measure whether idvisitor is derived from the user id; use the index if it is.
    #[default]
    Auto,
    /// Probe the (idsite, idvisitor) index with the derived visitor id.
    Index,
    /// Scan log_visit in primary-key ranges (also lists near matches).
    Scan,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum MatchMode {
    /// Byte-exact user id, as the application sent it.
    #[default]
    Exact,
    /// Also ids equal under the column collation (case, accents, trailing spaces), as Matomo's
    /// own GDPR tool matches. Implies a scan.
    Collation,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// A user id as the application sent it to Matomo (repeatable).
    #[arg(long = "user-id", value_name = "ID")]
    pub user_ids: Vec<String>,

    /// A file with one user id a line; - reads standard input.
    #[arg(long, value_name = "PATH")]
    pub user_ids_file: Option<PathBuf>,

    /// A visitor id, 16 hex digits (repeatable).
    #[arg(long = "visitor-id", value_name = "HEX16")]
    pub visitor_ids: Vec<String>,

    /// A visit id, log_visit.idvisit (repeatable).
    #[arg(long = "visit-id", value_name = "N")]
    pub visit_ids: Vec<u64>,

    /// A file with one visit id (log_visit.idvisit) a line, streamed.
    #[arg(long, value_name = "PATH")]
    pub visit_ids_file: Option<PathBuf>,

    /// Only these sites (repeatable).
    #[arg(long = "site", value_name = "IDSITE")]
    pub sites: Vec<u32>,

    /// How user ids are looked up.
    #[arg(long, value_enum, default_value_t)]
    pub lookup: Lookup,

    /// How user ids are compared.
    #[arg(long = "match", value_enum, default_value_t)]
    pub match_mode: MatchMode,

    /// Only visits whose last action is on or after this UTC date (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<NaiveDate>,

    /// Only visits whose last action is before this UTC date (YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<NaiveDate>,
}

#[derive(Args, Debug, Clone)]
pub struct EraseArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Erase. Without it the plan is printed and nothing is written.
    #[arg(long)]
    pub execute: bool,

    /// Visits in the first chunk; later chunks adapt to --chunk-time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk_size: u32,

    /// Largest chunk, in visits.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_chunk_size: u32,

    /// Time target of one chunk transaction (e.g. 0.5s, 500ms); 0 keeps --chunk-size fixed.
    #[arg(long, default_value = "0.5s", value_parser = parse_duration)]
    pub chunk_time: Duration,

    #[command(flatten)]
    pub throttle: ThrottleArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ThrottleArgs {
    /// A replica to watch for lag: a database URL (repeatable). Without it, replicas that the
    /// primary lists in SHOW REPLICA HOSTS are tried with the primary's credentials.
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,

    /// Pause while a replica lags more than this or cannot be read.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub max_lag: Duration,

    /// Pause while a global status variable is at or above N, e.g. Threads_running=25
    /// (repeatable).
    #[arg(long = "max-load", value_name = "VAR=N", value_parser = parse_threshold)]
    pub max_load: Vec<(String, f64)>,

    /// Stop cleanly (between chunks) when a global status variable reaches N (repeatable).
    #[arg(long = "critical-load", value_name = "VAR=N", value_parser = parse_threshold)]
    pub critical_load: Vec<(String, f64)>,

    /// Pause while InnoDB's history list length is above N.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_history: u64,

    /// Galera: pause while wsrep_flow_control_paused is above this fraction.
    #[arg(long, default_value_t = 0.1)]
    pub max_flow_control: f64,

    /// Galera: pause while wsrep_local_recv_queue is above N.
    #[arg(long, default_value_t = 100)]
    pub max_recv_queue: u64,

    /// Pause while this file exists.
    #[arg(long, value_name = "PATH")]
    pub pause_file: Option<PathBuf>,

    /// Stop cleanly (between chunks) once this file exists.
    #[arg(long, value_name = "PATH")]
    pub stop_file: Option<PathBuf>,

    /// Stop cleanly (between chunks) after this long, e.g. 30m.
    #[arg(long, value_parser = parse_duration)]
    pub max_runtime: Option<Duration>,

    /// Sleep between chunks.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub sleep: Duration,

    /// innodb_lock_wait_timeout of the erasing session, in seconds.
    #[arg(long, default_value_t = 3)]
    pub lock_wait_timeout: u32,

    /// Retries of one chunk after a deadlock, lock wait timeout or lost connection.
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,
}

/// A duration as a number of seconds (`0.5`) or with units (`500ms`, `2s`, `1m 30s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    if let Some(num) = t.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        if num.is_finite() && num >= 0.0 {
            return Ok(Duration::from_secs_f64(num));
        }
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{e}; give seconds (0.5) or a duration such as 500ms, 2s, 10m"))
}

/// `VAR=N` as gh-ost's --max-load takes it.
pub fn parse_threshold(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not VAR=N, e.g. Threads_running=25"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{name:?} is not a status variable name"));
    }
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number in {text:?}"))?;
    Ok((name.to_owned(), value))
}
