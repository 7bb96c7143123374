//! The command line: commands, selectors and options. Parsing only; `run` does the work.

use chrono::{Datelike, NaiveDate};
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
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    /// More log output on stderr (-v: info, -vv: debug with SQL).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Output")]
    pub verbose: u8,

    /// No progress bar and only warnings on stderr.
    #[arg(short, long, global = true, help_heading = "Output")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// mysql://USER:PASS@HOST:PORT/DB; ?socket=/path for a unix socket, ?ssl-mode=REQUIRED
    /// for TLS. Without it and without --matomo-config, the DATABASE_URL variable is used.
    #[arg(long, global = true)]
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
#[command(next_help_heading = "Subjects and selection")]
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
    #[arg(long = "visit-id", value_name = "N", value_parser = VisitIdParser)]
    pub visit_ids: Vec<u64>,

    /// A file with one visit id (log_visit.idvisit) a line, streamed.
    #[arg(long, value_name = "PATH")]
    pub visit_ids_file: Option<PathBuf>,

    /// Only these sites (repeatable).
    #[arg(
        long = "site",
        value_name = "IDSITE",
        value_parser = whole_number::<u32>(1, u32::MAX.into())
    )]
    pub sites: Vec<u32>,

    /// How user ids are looked up.
    #[arg(long, value_enum, default_value_t)]
    pub lookup: Lookup,

    /// How user ids are compared.
    #[arg(long = "match", value_enum, default_value_t)]
    pub match_mode: MatchMode,

    /// Only visits whose last action is on or after this UTC date (inclusive).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub since: Option<NaiveDate>,

    /// Only visits whose last action is before this UTC date (exclusive: --until 2024-02-01
    /// ends with the visits of January 31).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub until: Option<NaiveDate>,
}

#[derive(Args, Debug, Clone)]
pub struct EraseArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Erase. Without it the plan is printed and nothing is written.
    #[arg(long, help_heading = "Erasing")]
    pub execute: bool,

    /// Visits in the first chunk, capped by --max-chunk-size; later chunks adapt to
    /// --chunk-time.
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = whole_number::<u32>(1, 100_000),
        help_heading = "Erasing"
    )]
    pub chunk_size: u32,

    /// Largest chunk, in visits, the first one included.
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = whole_number::<u32>(1, 100_000),
        help_heading = "Erasing"
    )]
    pub max_chunk_size: u32,

    /// Time target of one chunk transaction (e.g. 0.5s, 500ms); 0 keeps --chunk-size fixed.
    #[arg(long, default_value = "0.5s", value_parser = parse_duration, help_heading = "Erasing")]
    pub chunk_time: Duration,

    /// Never delete archive rows. Without it, the archives of a day, week, month or year of a
    /// site that the erase leaves without any visit are deleted in the chunk, since Matomo's
    /// archiver skips such a period and keeps showing its old report.
    #[arg(long, help_heading = "Erasing")]
    pub keep_archives: bool,

    #[command(flatten)]
    pub throttle: ThrottleArgs,
}

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Throttling and faults")]
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
    #[arg(long, default_value_t = 1_000_000, value_parser = whole_number::<u64>(0, u64::MAX))]
    pub max_history: u64,

    /// Galera: pause while flow control held the cluster for more than this share of the time
    /// since the last check (from wsrep_flow_control_paused_ns), 0 to 1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub max_flow_control: f64,

    /// Galera: pause while wsrep_local_recv_queue is above N.
    #[arg(long, default_value_t = 100, value_parser = whole_number::<u64>(0, u64::MAX))]
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
    #[arg(long, default_value_t = 3, value_parser = whole_number::<u32>(0, u32::MAX.into()))]
    pub lock_wait_timeout: u32,

    /// Retries of one chunk after a deadlock, lock wait timeout or lost connection.
    #[arg(long, default_value_t = 10, value_parser = whole_number::<u32>(0, u32::MAX.into()))]
    pub max_retries: u32,
}

impl EraseArgs {
    /// The size of the first chunk: --chunk-size, capped by --max-chunk-size.
    pub fn first_chunk_size(&self) -> u32 {
        self.chunk_size.min(self.max_chunk_size)
    }
}

/// The longest duration an option takes. Longer is a typo, and `Duration::from_secs_f64`
/// panics on a number of seconds that does not fit in 64 bits.
const MAX_DURATION: Duration = Duration::from_secs(3653 * 24 * 3600);

/// A duration as a number of seconds (`0.5`) or with units (`500ms`, `2s`, `1m 30s`), from 0 to
/// 10 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "give seconds (0.5) or a duration such as 500ms, 2s, 10m";
    let too_long = || format!("more than 10 years is not a useful limit; {HINT}");
    let t = text.trim();
    let seconds = t
        .parse::<f64>()
        .ok()
        .or_else(|| t.strip_suffix('s')?.trim_end().parse::<f64>().ok());
    let duration = match seconds {
        Some(s) if !s.is_finite() => return Err(format!("not a finite number; {HINT}")),
        Some(s) if s < 0.0 => return Err(format!("a duration cannot be negative; {HINT}")),
        Some(s) if s > MAX_DURATION.as_secs_f64() => return Err(too_long()),
        // `max` turns -0 into 0, which from_secs_f64 would refuse.
        Some(s) => Duration::from_secs_f64(s.max(0.0)),
        None if t.starts_with('-') => {
            return Err(format!("a duration cannot be negative; {HINT}"));
        }
        // humantime's own messages repeat parts of the text (`unknown time unit "alice"`).
        None => humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::UnknownUnit { .. } => {
                format!("a unit is missing or unknown; {HINT}")
            }
            humantime::DurationError::NumberOverflow => too_long(),
            _ => format!("not a duration; {HINT}"),
        })?,
    };

    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// `VAR=N` as gh-ost's --max-load takes it. N is a finite number, not negative: a NaN limit
/// would silently never trigger (every comparison with NaN is false). The error never repeats
/// the text (see `redact_error`).
pub fn parse_threshold(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or("not VAR=N, e.g. Threads_running=25")?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("the part before = is not a status variable name, e.g. Threads_running".into());
    }

    let number: f64 = value
        .trim()
        .parse()
        .map_err(|_| "the part after = is not a number, e.g. Threads_running=25")?;
    if !number.is_finite() || number < 0.0 {
        return Err(
            "the part after = is not a limit: give a number of 0 or more, e.g. Threads_running=25"
                .into(),
        );
    }
    Ok((name.to_owned(), number))
}

/// A fraction from 0 to 1 (--max-flow-control); NaN, infinity and negatives are refused, since
/// a comparison with them never pauses or always does.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("give a fraction from 0 to 1, e.g. 0.1 (1 never pauses)".into()),
    }
}

/// A UTC date in the form YYYY-MM-DD, from 1970-01-01 to 9999-12-31. chrono alone also reads
/// `+10000-01-01`, which as SQL text is no DATETIME: MariaDB would compare it as a string and
/// turn the --since/--until window around.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    const HINT: &str = "give a date from 1970-01-01 to 9999-12-31 as YYYY-MM-DD";
    let t = text.trim();
    let shape = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(format!("not in the form YYYY-MM-DD; {HINT}"));
    }

    let date =
        NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| format!("no such day; {HINT}"))?;
    if date.year() < 1970 {
        return Err(format!("before 1970; {HINT}"));
    }
    Ok(date)
}

/// Parses --visit-id itself: clap's own number parser repeats a wrong value in its error, and a
/// value given to the wrong option may be a person's email address.
#[derive(Clone)]
struct VisitIdParser;

impl clap::builder::TypedValueParser for VisitIdParser {
    type Value = u64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<u64, clap::Error> {
        crate::subject::parse_visit_id(&value.to_string_lossy(), "a --visit-id value").map_err(
            |e| {
                let mut cmd = cmd.clone();
                cmd.error(clap::error::ErrorKind::ValueValidation, e)
            },
        )
    }
}

/// What stands in an error message for what was typed.
const NOT_SHOWN: &str = "…";

/// clap's error for a refused command line, with every value and every unknown argument that
/// was typed replaced by `…`: an id typed without its option (`--user-id alice bob@example.org`),
/// or into the wrong one, would otherwise reach stderr, logs that keep it, and the `--json`
/// document. The rest of clap's message stays, and so do the names of this program's own options
/// and commands, which are no one's identifier.
///
/// This relies on the value parsers: what they say after the value must not repeat it. Ours do
/// not (`whole_number`, `parse_threshold`, ...), and a test runs every option with a bad value.
pub fn redact_error(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let typed = |e: &clap::Error, kind| match e.get(kind) {
        Some(ContextValue::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let mut tip = None;

    // A value given to an option, or to a flag that takes none. An empty one ("a value is
    // required") says so and holds nothing.
    if typed(&e, ContextKind::InvalidValue).is_some() {
        e.insert(
            ContextKind::InvalidValue,
            ContextValue::String(NOT_SHOWN.to_owned()),
        );
        tip = Some("the value is not shown, since it may be a person's identifier");
    }

    // An argument clap could not place, or a command it does not know. For other kinds the
    // InvalidArg is the option's own name, as clap spells it (`--site <IDSITE>`).
    let context = match e.kind() {
        ErrorKind::UnknownArgument => Some(ContextKind::InvalidArg),
        ErrorKind::InvalidSubcommand => Some(ContextKind::InvalidSubcommand),
        _ => None,
    };
    if let Some(kind) = context {
        if let Some(arg) = typed(&e, kind).filter(|a| !is_own_name(a)) {
            e.insert(kind, ContextValue::String(NOT_SHOWN.to_owned()));
            tip = Some(if arg.starts_with('-') {
                "the argument is not shown, since it may be a person's identifier"
            } else {
                "matomo-erase takes no positional arguments: each id goes after its own option, \
                 e.g. --user-id ID1 --user-id ID2 (the argument is not shown, since it may be a \
                 person's identifier)"
            });
        }
    }

    // clap's own tips repeat what was typed ("to pass 'x' as a value, use '-- x'"); a similar
    // option or command it suggests is one of ours and stays.
    if let Some(tip) = tip {
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

/// Whether an argument, up to an `=`, is the name of one of this program's options or commands.
fn is_own_name(arg: &str) -> bool {
    use clap::CommandFactory;
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    let cmd = Cli::command();
    let mut names = vec!["--help".to_owned(), "-h".to_owned(), "--version".to_owned()];
    let mut commands = vec![&cmd];
    while let Some(c) = commands.pop() {
        names.push(c.get_name().to_owned());
        for a in c.get_arguments() {
            names.extend(a.get_long().map(|l| format!("--{l}")));
            names.extend(a.get_short().map(|s| format!("-{s}")));
        }
        commands.extend(c.get_subcommands());
    }
    names.iter().any(|n| n == name)
}

/// A whole number from `min` to `max`, for the options that take one. clap's own number parser
/// repeats an out-of-range value in its error (`123456 is not in 1..=100000`), and a number
/// typed into the wrong option may be a person's customer number.
fn whole_number<T>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: TryFrom<u64>,
{
    move |text: &str| {
        let t = text.trim();
        t.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("not a whole number from {min} to {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_are_refused_when_not_finite_negative_or_over_ten_years() {
        for bad in [
            "1e20",
            "1e30",
            "1e300",
            "99999999999999999999s",
            "100000000h",
            "3654days",
            "nan",
            "inf",
            "-inf",
            "infs",
            "-1",
            "-1s",
            "-5m",
            "10 parsecs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("-0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("3650days").unwrap(),
            Duration::from_secs(3650 * 86_400)
        );
        assert_eq!(
            parse_duration("315576000").unwrap(),
            Duration::from_secs(315_576_000)
        );
    }

    #[test]
    fn thresholds_and_fractions_are_finite_and_not_negative() {
        for bad in [
            "Threads_running=nan",
            "Threads_running=NaN",
            "x=inf",
            "x=-1",
            "x=",
            "=3",
        ] {
            assert!(parse_threshold(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_threshold(" Threads_running = 25 ").unwrap(),
            ("Threads_running".to_owned(), 25.0)
        );
        for bad in ["nan", "inf", "-0.1", "1.5", "x"] {
            assert!(parse_fraction(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_fraction("0").unwrap(), 0.0);
        assert_eq!(parse_fraction("1").unwrap(), 1.0);
    }

    #[test]
    fn dates_are_yyyy_mm_dd_from_1970_to_9999() {
        for bad in [
            "+10000-01-01",
            "10000-01-01",
            "+2024-01-01",
            "1969-12-31",
            "0000-01-01",
            "2024-02-30",
            "2024-2-3",
            "20240101",
            "2024/01/01",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_date("1970-01-01").unwrap(),
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
        );
        assert_eq!(
            parse_date("9999-12-31").unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()
        );
    }

    #[test]
    fn options_refuse_bad_values_at_parse_time() {
        for bad in [
            ["--chunk-time", "1e20"],
            ["--max-lag", "1e30"],
            ["--max-runtime", "1e300"],
            ["--max-load", "Threads_running=nan"],
            ["--critical-load", "Threads_running=inf"],
            ["--max-flow-control", "nan"],
            ["--since", "+10000-01-01"],
            ["--until", "+10000-01-01"],
        ] {
            let parsed =
                Cli::try_parse_from(["matomo-erase", "erase", "--user-id", "x", bad[0], bad[1]]);
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_wrong_visit_id_is_not_repeated_in_the_error() {
        let email = "alice.peer@example.org";
        let err = Cli::try_parse_from(["matomo-erase", "find", "--visit-id", email]).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains("--visit-id"), "{text}");

        let cli = Cli::try_parse_from([
            "matomo-erase",
            "find",
            "--visit-id",
            "12",
            "--visit-id",
            "7",
        ])
        .unwrap();
        let Command::Find(select) = cli.command else {
            panic!("not find");
        };
        assert_eq!(select.visit_ids, [12, 7]);
    }

    /// The rendered, redacted error of a command line clap refuses.
    fn refused(args: &[&str]) -> String {
        let mut line = vec!["matomo-erase"];
        line.extend_from_slice(args);
        let err = Cli::try_parse_from(&line).expect_err("refused");
        redact_error(err).render().to_string()
    }

    #[test]
    fn a_refused_command_line_keeps_clap_advice_but_not_what_was_typed() {
        let text = refused(&["erase", "--user-id", "a", "alice.peer@example.org"]);
        assert_eq!(
            text,
            "error: unexpected argument '…' found\n\n  tip: matomo-erase takes no positional \
             arguments: each id goes after its own option, e.g. --user-id ID1 --user-id ID2 (the \
             argument is not shown, since it may be a person's identifier)\n\nUsage: \
             matomo-erase erase [OPTIONS]\n\nFor more information, try '--help'.\n"
        );
        // A misspelt option: clap's suggestion of ours stays.
        let text = refused(&["find", "--user-idd", "x"]);
        assert!(
            text.starts_with(
                "error: unexpected argument '…' found\n\n  tip: a similar argument exists: \
                 '--user-id'\n  tip: the argument is not shown"
            ),
            "{text}"
        );
        let text = refused(&["finde", "--user-id", "x"]);
        assert!(
            text.starts_with(
                "error: unrecognized subcommand '…'\n\n  tip: a similar subcommand exists: \
                 'find'\n"
            ),
            "{text}"
        );
        // Our own names are no one's identifier.
        let text = refused(&["find", "--user-id", "x", "--execute"]);
        assert!(
            text.starts_with("error: unexpected argument '--execute' found\n"),
            "{text}"
        );
        let text = refused(&["find", "--since", "2024-13-01"]);
        assert!(
            text.starts_with(
                "error: invalid value '…' for '--since <YYYY-MM-DD>': no such day; give a date"
            ),
            "{text}"
        );
        let text = refused(&["find", "--user-id"]);
        assert!(
            text.starts_with("error: a value is required for '--user-id <ID>' but none was"),
            "{text}"
        );
    }

    #[test]
    fn no_option_repeats_a_bad_value_in_its_error() {
        let values = [
            "alice.peer@example.org",
            "5alice.peer",
            "99999999999999999999999",
            "123456",
            "-12345678",
            "=alice.peer",
        ];
        // Every option of every command that takes a value; global ones through each command.
        let mut options = Vec::new();
        for sub in Cli::command().get_subcommands() {
            let mut built = sub.clone();
            built.build();
            for arg in built.get_arguments() {
                if let (Some(long), true) = (arg.get_long(), arg.get_action().takes_values()) {
                    options.push((sub.get_name().to_owned(), format!("--{long}")));
                }
            }
        }

        let mut checked = 0;
        for ((command, option), value) in options
            .iter()
            .flat_map(|o| values.iter().map(move |v| (o, *v)))
        {
            let joined = format!("{option}={value}");
            for form in [vec![option.as_str(), value], vec![joined.as_str()]] {
                let mut line = vec!["matomo-erase", command.as_str()];
                if command != "inspect" {
                    line.extend(["--user-id", "x"]);
                }
                line.extend(form);
                let Err(e) = Cli::try_parse_from(&line) else {
                    continue;
                };
                let text = redact_error(e).render().to_string();
                for part in ["alice", "99999999999999999999999", "123456", "12345678"] {
                    assert!(!text.contains(part), "{line:?}: {text}");
                }
                checked += 1;
            }
        }
        assert!(
            checked > 40,
            "only {checked} refused command lines were checked"
        );
    }

    #[test]
    fn help_says_until_is_exclusive_and_chunk_size_is_capped() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("erase")
            .unwrap()
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("before this UTC date (exclusive"), "{help}");
        assert!(help.contains("capped by --max-chunk-size"), "{help}");
    }

    #[test]
    fn the_first_chunk_is_capped_by_max_chunk_size() {
        let cli = Cli::try_parse_from([
            "matomo-erase",
            "erase",
            "--user-id",
            "x",
            "--chunk-size",
            "50",
            "--max-chunk-size",
            "5",
        ])
        .unwrap();
        let Command::Erase(erase) = cli.command else {
            panic!("not erase");
        };
        assert_eq!(erase.first_chunk_size(), 5);
    }
}
