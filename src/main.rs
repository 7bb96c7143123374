//! Entry point: parse the command line, set up logging, run one command, map the outcome to an
//! exit code (see `matomo-erase --help`).

use clap::Parser;
use matomo_erase::cli::{redact_error, Cli};
use matomo_erase::error::{code, exit_code_for};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("MATOMO_ERASE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("matomo_erase={level},sqlx::query={level},warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(matomo_erase::run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let (code, number) = exit_code_for(&e);
            // A stopped erase and a failed verification have printed their document already;
            // other failures print their error as the one JSON document.
            let printed = [code::STOPPED, code::VERIFY_FAILED].contains(&number);
            if json && !printed {
                let doc = serde_json::json!({ "error": format!("{e:#}"), "exit_code": number });
                println!("{doc}");
            }
            code
        }
    }
}

/// A command line clap refuses: its message on stderr, exit 2; with `--json` anywhere on the
/// line, also the one JSON document on stdout that every failure gives. Neither repeats what
/// was typed (`redact_error`). Help and version are not failures.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let e = redact_error(e);
    let _ = e.print();
    let number = code::USAGE;
    if std::env::args_os().any(|a| a == "--json") {
        let message = e.render().to_string();
        let first = message
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        let doc = serde_json::json!({ "error": first, "exit_code": number });
        println!("{doc}");
    }
    ExitCode::from(number)
}
