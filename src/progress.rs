//! Progress on stderr: a spinner line with visits, rows, rate and the current throttle reason,
//! and an info log line per chunk. Hidden when stderr is not a terminal or with --quiet.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    pub visits: u64,
    pub rows: u64,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            started: Instant::now(),
            visits: 0,
            rows: 0,
        }
    }

    pub fn chunk_done(&mut self, visits: u64, rows: u64, chunk_size: usize) {
        self.visits += visits;
        self.rows += rows;
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} visits, {} rows erased ({:.0} rows/s), chunk size {chunk_size}",
            self.visits,
            self.rows,
            self.rows as f64 / secs
        ));
    }

    pub fn paused(&self, reason: &str) {
        self.bar.set_message(format!(
            "{} visits, {} rows erased; paused: {reason}",
            self.visits, self.rows
        ));
    }

    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
