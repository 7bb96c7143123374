//! matomo-erase: erase data subjects (GDPR Art. 17) straight from a Matomo MySQL/MariaDB
//! database.
//!
//! The pipeline, one module a role: `connect` opens the database, `inspect` reads the server and
//! the schema, `subject` turns what the DBA typed into what Matomo stored, `select` finds the
//! visits of the subjects, `erase` is the only writer of log rows, `invalidate` queues report
//! re-processing, `journal` makes runs resumable and provable, `throttle` decides when to pause,
//! `verify` proves the result, `progress` and `report` tell the DBA what happened.

pub mod cli;
pub mod connect;
pub mod erase;
pub mod error;
pub mod inspect;
pub mod invalidate;
pub mod journal;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod select;
pub mod sql;
pub mod subject;
pub mod throttle;
pub mod timezone;
pub mod verify;
