//! Errors that the DBA must act on, and the exit code each one maps to.
//!
//! Anything not listed here is an unexpected failure (exit 1). The codes are part of the
//! interface: scripts that drive matomo-erase branch on them.

use std::process::ExitCode;

/// Exit codes, documented in `--help` and the README.
pub mod code {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CONNECTION: u8 = 3;
    pub const STOPPED: u8 = 4;
    pub const VERIFY_FAILED: u8 = 5;
}

/// A failure with a known cause and a fix the DBA can apply.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad command line, bad input file, wrong prefix, not a Matomo database.
    #[error("{0}")]
    Usage(String),
    /// Cannot connect, cannot log in, or a privilege is missing.
    #[error("{0}")]
    Connection(String),
    /// The run stopped before all chunks were done; running the same command again finishes it.
    #[error("{0}")]
    Stopped(String),
    /// `verify` found rows that should be gone or invalidations that are missing.
    #[error("{0}")]
    VerifyFailed(String),
}

impl Failure {
    pub fn number(&self) -> u8 {
        match self {
            Failure::Usage(_) => code::USAGE,
            Failure::Connection(_) => code::CONNECTION,
            Failure::Stopped(_) => code::STOPPED,
            Failure::VerifyFailed(_) => code::VERIFY_FAILED,
        }
    }
}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Failure::Usage(msg.into()).into()
}

pub fn connection(msg: impl Into<String>) -> anyhow::Error {
    Failure::Connection(msg.into()).into()
}

/// Maps any error to the process exit code (and its number): a `Failure` anywhere in the
/// chain decides it.
pub fn exit_code_for(err: &anyhow::Error) -> (ExitCode, u8) {
    let n = err
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(Failure::number)
        .unwrap_or(code::FAILURE);
    (ExitCode::from(n), n)
}
