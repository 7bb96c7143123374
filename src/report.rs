//! What the DBA reads: the plan, the erase receipt, find results and inspect output, as text or
//! as one JSON document. Raw subject identifiers never get here, only receipt hashes.

use serde::Serialize;
use std::io::Write;

/// Shortens a value for an error message.
pub fn elide(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

/// Writes a document as pretty JSON to stdout. A closed pipe is a normal end.
pub fn print_json<T: Serialize>(doc: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let r = serde_json::to_writer_pretty(&mut out, doc)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(out));
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Writes text to stdout. A closed pipe is a normal end.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
