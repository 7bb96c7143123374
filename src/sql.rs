//! Small helpers for building SQL text: identifier quoting, IN lists, LIKE escaping.
//!
//! Table names cannot be bound as parameters, so they are quoted here. Numbers from our own
//! typed values (idvisit, idsite) are written inline; every string that came from a DBA or a
//! row is bound as a parameter instead.

use std::fmt::Write;

/// A backquoted identifier; a backquote inside is doubled.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `1,2,3` for an IN list of our own integers.
pub fn int_list<T: std::fmt::Display>(values: &[T]) -> String {
    let mut out = String::with_capacity(values.len() * 8);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v}");
    }
    out
}

/// `?,?,?` for n bound parameters.
pub fn placeholders(n: usize) -> String {
    let mut out = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push('?');
    }
    out
}

/// Escapes `\`, `%` and `_` for a LIKE pattern (default escape character).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True for MySQL errors that a retry of the whole transaction may cure: deadlock (1213) and
/// lock wait timeout (1205).
pub fn is_lock_conflict(e: &sqlx::Error) -> bool {
    matches!(db_code(e).as_deref(), Some("1213") | Some("1205"))
}

/// True when the connection is gone: I/O errors and the server's "gone away"/"lost" codes.
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        _ => matches!(
            db_code(e).as_deref(),
            Some("2006") | Some("2013") | Some("1927") | Some("4031") | Some("1053")
        ),
    }
}

/// True when a Galera node refuses work because it is not part of the primary component
/// (1047, "WSREP has not yet prepared node for application use"): nothing was applied, and
/// the node may be back in a moment.
pub fn is_node_not_ready(e: &sqlx::Error) -> bool {
    db_code(e).as_deref() == Some("1047")
}

/// The Galera writeset limit that a statement or commit went over, if that is what failed:
/// the row limit fails the statement that passes it (1180, "wsrep_max_ws_rows exceeded"),
/// the size limit fails the COMMIT (1105, "Maximum writeset size exceeded"). Both codes also
/// stand for other errors, so the message decides. The transaction is rolled back either way.
pub fn writeset_limit(e: &sqlx::Error) -> Option<crate::throttle::WritesetLimit> {
    use crate::throttle::WritesetLimit;
    let code = db_code(e)?;
    let message = e.as_database_error()?.message().to_ascii_lowercase();
    match code.as_str() {
        "1180" if message.contains("wsrep_max_ws_rows") => Some(WritesetLimit::Rows),
        "1105" | "1180" if message.contains("writeset size") => Some(WritesetLimit::Bytes),
        _ => None,
    }
}

/// The server's numeric error code, when the error came from the server.
pub fn db_code(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    // sqlx reports the SQLSTATE through code(); the MySQL error number is in the concrete type.
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|m| m.number().to_string())
        .or_else(|| db.code().map(|c| c.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_lists() {
        assert_eq!(ident("log`x"), "`log``x`");
        assert_eq!(int_list(&[1u64, 22, 333]), "1,22,333");
        assert_eq!(placeholders(3), "?,?,?");
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
