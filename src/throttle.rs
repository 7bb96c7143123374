//! Decides, before every chunk, whether to go, pause or stop, and says why in plain words with
//! numbers (`replica 127.0.0.1:3308 lag=12s > 10s`, `max-load Threads_running=31 >= 25`).
//!
//! Watches replica lag, global status thresholds, InnoDB's history list length, Galera flow
//! control, pause and stop files and the runtime limit. It only reads server state; pausing and
//! keeping the connection alive is the caller's loop.

use crate::cli::ThrottleArgs;
use crate::connect::{self, describe_options, Target};
use crate::error::usage;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Column, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;

/// Which Galera writeset limit a chunk went over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WritesetLimit {
    Rows,
    Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Go,
    Pause(String),
    Stop(String),
}

struct Replica {
    label: String,
    options: MySqlConnectOptions,
    conn: Option<MySqlConnection>,
}

pub struct Throttle {
    args: ThrottleArgs,
    replicas: Vec<Replica>,
    started: Instant,
    /// Set when the server is a Galera node (wsrep_on).
    galera: Option<Galera>,
    /// What the plan says about replicas.
    pub replica_note: String,
}

/// What the erase learns of the Galera node it writes to: the writeset limits and, chunk by
/// chunk, how many rows and bytes a visit weighs there.
#[derive(Debug, Default)]
struct Galera {
    /// wsrep_max_ws_rows (0 = no limit).
    max_rows: u64,
    /// wsrep_max_ws_size in bytes (0 = no limit).
    max_bytes: u64,
    /// The previous look at flow control: when, and the node's total paused nanoseconds then.
    flow_control: Option<(Instant, f64)>,
    /// wsrep_replicated_bytes at the previous look.
    replicated_bytes: Option<f64>,
    /// Visits committed since that look.
    visits_since: u64,
    rows_per_visit: Option<f64>,
    bytes_per_visit: Option<f64>,
}

/// Before a chunk has been measured, a visit is assumed heavy: 20 rows of 2 KiB each.
const HEAVY_VISIT_ROWS: f64 = 20.0;
const HEAVY_VISIT_BYTES: f64 = 20.0 * 2048.0;

impl Galera {
    /// The visits a chunk may hold to stay under half of each writeset limit.
    fn cap(&self) -> usize {
        let mut cap = f64::INFINITY;
        if self.max_rows > 0 {
            let per_visit = self.rows_per_visit.unwrap_or(HEAVY_VISIT_ROWS).max(1.0);
            cap = cap.min(self.max_rows as f64 / 2.0 / per_visit);
        }
        if self.max_bytes > 0 {
            let per_visit = self.bytes_per_visit.unwrap_or(HEAVY_VISIT_BYTES).max(1.0);
            cap = cap.min(self.max_bytes as f64 / 2.0 / per_visit);
        }
        if cap.is_finite() {
            (cap as usize).max(1)
        } else {
            usize::MAX
        }
    }

    /// Reads the node's state from one SHOW GLOBAL STATUS: a reason to pause, if any, and the
    /// bytes the chunks since the previous look replicated.
    fn look(&mut self, status: &Status, args: &ThrottleArgs) -> Option<String> {
        let now = Instant::now();
        let bytes = status.number("wsrep_replicated_bytes");
        if let (Some(before), Some(after)) = (self.replicated_bytes, bytes) {
            // Other writers on this node count too, which only makes the estimate safer.
            if self.visits_since > 0 && after > before {
                self.bytes_per_visit = Some((after - before) / self.visits_since as f64);
            }
        }
        self.replicated_bytes = bytes;
        self.visits_since = 0;

        // wsrep_flow_control_paused is an average since the last FLUSH STATUS, which on a
        // server up for weeks hardly moves; the nanosecond total gives the share of the time
        // since the previous look.
        let paused = match status.number("wsrep_flow_control_paused_ns") {
            Some(ns) => {
                let share = self.flow_control.map(|(at, before)| {
                    let window = now.duration_since(at).as_nanos().max(1) as f64;
                    ((ns - before) / window, now.duration_since(at))
                });
                self.flow_control = Some((now, ns));
                share.map(|(share, window)| {
                    (share, format!("of the last {:.1}s", window.as_secs_f64()))
                })
            }
            None => status
                .number("wsrep_flow_control_paused")
                .map(|share| (share, "since FLUSH STATUS".to_string())),
        };

        let ready = status.text("wsrep_ready").unwrap_or_default();
        if !ready.eq_ignore_ascii_case("ON") {
            return Some(format!(
                "galera node not ready: wsrep_ready={ready}, wsrep_cluster_status={}, \
                 wsrep_local_state_comment={}",
                status.text("wsrep_cluster_status").unwrap_or_default(),
                status.text("wsrep_local_state_comment").unwrap_or_default()
            ));
        }
        if let Some((share, window)) = paused {
            if share > args.max_flow_control {
                return Some(format!(
                    "galera flow control paused {:.0}% {window} > {:.0}%",
                    share * 100.0,
                    args.max_flow_control * 100.0
                ));
            }
        }
        let queue = status.number("wsrep_local_recv_queue").unwrap_or(0.0);
        if queue > args.max_recv_queue as f64 {
            return Some(format!(
                "galera wsrep_local_recv_queue={queue} > {}",
                args.max_recv_queue
            ));
        }
        None
    }
}

/// One SHOW GLOBAL STATUS, keyed by lower-case name.
#[derive(Debug, Default)]
struct Status(HashMap<String, String>);

impl Status {
    fn number(&self, name: &str) -> Option<f64> {
        self.0.get(name)?.trim().parse().ok()
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl Throttle {
    /// Connects to replicas (given or discovered) and validates the thresholds.
    pub async fn new(
        primary: &mut MySqlConnection,
        target: &Target,
        args: &ThrottleArgs,
    ) -> anyhow::Result<Throttle> {
        let names: Vec<&String> = args
            .max_load
            .iter()
            .chain(args.critical_load.iter())
            .map(|(n, _)| n)
            .collect();
        if !names.is_empty() {
            let status = global_status(primary).await?;
            for n in names {
                if status.number(&n.to_ascii_lowercase()).is_none() {
                    return Err(usage(format!(
                        "status variable {n} does not exist on this server; see SHOW GLOBAL \
                         STATUS for the names (e.g. Threads_running)"
                    )));
                }
            }
        }

        let mut replicas = Vec::new();
        let replica_note;
        if args.replicas.is_empty() {
            let found = discover_replicas(primary, &target.options).await;
            replica_note = match &found {
                Ok(list) if list.is_empty() => "no replica listed by SHOW REPLICA HOSTS (a \
                    replica shows there only with report_host set); lag is not watched: pass \
                    --replica URL to watch one"
                    .to_string(),
                Ok(list) => format!(
                    "watching {} replica(s) found by SHOW REPLICA HOSTS, --max-lag {:?}",
                    list.len(),
                    args.max_lag
                ),
                Err(e) => {
                    format!("could not list replicas ({e}); lag is not watched: pass --replica URL")
                }
            };
            for o in found.unwrap_or_default() {
                replicas.push(Replica {
                    label: describe_options(&o),
                    options: o,
                    conn: None,
                });
            }
        } else {
            for url in &args.replicas {
                let o = MySqlConnectOptions::from_str(url).map_err(|e| {
                    usage(format!(
                        "cannot read --replica {}: {e}",
                        connect::redact_url(url)
                    ))
                })?;
                replicas.push(Replica {
                    label: describe_options(&o),
                    options: o,
                    conn: None,
                });
            }
            replica_note = format!(
                "watching {} replica(s) given with --replica, --max-lag {:?}",
                replicas.len(),
                args.max_lag
            );
        }

        let vars = sqlx::query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
             ('wsrep_on', 'wsrep_max_ws_rows', 'wsrep_max_ws_size')",
        )
        .fetch_all(&mut *primary)
        .await?;
        let var = |name: &str| {
            vars.iter()
                .find(|r| text(r, 0).eq_ignore_ascii_case(name))
                .map(|r| text(r, 1))
                .unwrap_or_default()
        };
        let mut galera = None;
        if var("wsrep_on").eq_ignore_ascii_case("ON") {
            let mut g = Galera {
                max_rows: var("wsrep_max_ws_rows").parse().unwrap_or(0),
                max_bytes: var("wsrep_max_ws_size").parse().unwrap_or(0),
                ..Galera::default()
            };
            // The first look starts the flow-control window and the byte count.
            g.look(&global_status(primary).await?, args);
            galera = Some(g);
        }
        Ok(Throttle {
            args: args.clone(),
            replicas,
            started: Instant::now(),
            galera,
            replica_note,
        })
    }

    /// The most visits a chunk may hold: on Galera, half of what fits in a writeset as far as
    /// the chunks so far tell; elsewhere no limit.
    pub fn chunk_cap(&self) -> usize {
        self.galera.as_ref().map_or(usize::MAX, Galera::cap)
    }

    /// Counts a committed chunk into the weight of a visit.
    pub fn chunk_committed(&mut self, visits: u64, rows: u64) {
        if let Some(g) = &mut self.galera {
            if visits > 0 {
                g.rows_per_visit = Some(rows as f64 / visits as f64);
                g.visits_since += visits;
            }
        }
    }

    /// A chunk of `visits` went over a writeset limit: a visit weighs at least that limit's
    /// share, so the next chunks are sized below it.
    pub fn chunk_too_big(&mut self, visits: usize, limit: WritesetLimit) {
        let Some(g) = &mut self.galera else { return };
        let visits = visits.max(1) as f64;
        match limit {
            WritesetLimit::Rows if g.max_rows > 0 => {
                let at_least = g.max_rows as f64 / visits;
                g.rows_per_visit = Some(g.rows_per_visit.unwrap_or(0.0).max(at_least));
            }
            WritesetLimit::Bytes if g.max_bytes > 0 => {
                let at_least = g.max_bytes as f64 / visits;
                g.bytes_per_visit = Some(g.bytes_per_visit.unwrap_or(0.0).max(at_least));
            }
            _ => {}
        }
    }

    /// The writeset limits, as words for an error message.
    pub fn writeset_limits(&self) -> String {
        match &self.galera {
            Some(g) => format!(
                "wsrep_max_ws_rows={}, wsrep_max_ws_size={}",
                g.max_rows, g.max_bytes
            ),
            None => "no writeset limits (not a Galera node)".into(),
        }
    }

    /// One look at everything; the first reason to stop wins over reasons to pause.
    pub async fn check(&mut self, primary: &mut MySqlConnection) -> anyhow::Result<Verdict> {
        if let Some(path) = &self.args.stop_file {
            if path.exists() {
                return Ok(Verdict::Stop(format!(
                    "stop-file {} exists",
                    path.display()
                )));
            }
        }
        if let Some(limit) = self.args.max_runtime {
            if self.started.elapsed() >= limit {
                return Ok(Verdict::Stop(format!("max-runtime {limit:?} reached")));
            }
        }
        let need_status = !self.args.max_load.is_empty()
            || !self.args.critical_load.is_empty()
            || self.galera.is_some();
        let status = if need_status {
            global_status(primary).await?
        } else {
            Status::default()
        };
        // Galera's look comes first and always, so its windows stay those between checks.
        let galera_pause = match &mut self.galera {
            Some(g) => g.look(&status, &self.args),
            None => None,
        };
        for (name, limit) in &self.args.critical_load {
            if let Some(v) = status.number(&name.to_ascii_lowercase()) {
                if v >= *limit {
                    return Ok(Verdict::Stop(format!(
                        "critical-load {name}={v} >= {limit}"
                    )));
                }
            }
        }
        if let Some(path) = &self.args.pause_file {
            if path.exists() {
                return Ok(Verdict::Pause(format!(
                    "pause-file {} exists",
                    path.display()
                )));
            }
        }
        for (name, limit) in &self.args.max_load {
            if let Some(v) = status.number(&name.to_ascii_lowercase()) {
                if v >= *limit {
                    return Ok(Verdict::Pause(format!("max-load {name}={v} >= {limit}")));
                }
            }
        }
        if let Some(why) = galera_pause {
            return Ok(Verdict::Pause(why));
        }
        if let Some(h) = history_length(primary).await? {
            if h > self.args.max_history {
                return Ok(Verdict::Pause(format!(
                    "history list length={h} > {}",
                    self.args.max_history
                )));
            }
        }
        let max_lag = self.args.max_lag.as_secs_f64();
        for r in &mut self.replicas {
            match replica_lag(r).await {
                Ok(lag) if lag > max_lag => {
                    return Ok(Verdict::Pause(format!(
                        "replica {} lag={lag}s > {max_lag}s",
                        r.label
                    )))
                }
                Ok(_) => {}
                Err(why) => return Ok(Verdict::Pause(format!("replica {} {why}", r.label))),
            }
        }
        Ok(Verdict::Go)
    }
}

fn text(r: &MySqlRow, i: usize) -> String {
    r.try_get::<String, _>(i)
        .or_else(|_| {
            r.try_get::<Vec<u8>, _>(i)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}

/// The position of a column, found by its name in the row's own column list. Looking a name up
/// with `try_get(name)` is not enough: for statements whose prepare step announces no columns
/// (MariaDB's SHOW REPLICA HOSTS), sqlx keeps an empty name map and finds no name at all.
fn column_index(r: &MySqlRow, name: &str) -> Option<usize> {
    r.columns()
        .iter()
        .position(|c| c.name().eq_ignore_ascii_case(name))
}

fn number(r: &MySqlRow, name: &str) -> Option<f64> {
    let i = column_index(r, name)?;
    if let Ok(v) = r.try_get::<Option<u64>, _>(i) {
        return v.map(|v| v as f64);
    }
    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
        return v.map(|v| v as f64);
    }
    if let Ok(v) = r.try_get::<Option<u32>, _>(i) {
        return v.map(f64::from);
    }
    if let Ok(v) = r.try_get::<Option<i32>, _>(i) {
        return v.map(f64::from);
    }
    column_text(r, name).and_then(|s| s.trim().parse().ok())
}

fn column_text(r: &MySqlRow, name: &str) -> Option<String> {
    let i = column_index(r, name)?;
    r.try_get::<Option<String>, _>(i)
        .ok()
        .flatten()
        .or_else(|| {
            r.try_get::<Option<Vec<u8>>, _>(i)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
}

async fn global_status(conn: &mut MySqlConnection) -> anyhow::Result<Status> {
    let rows = sqlx::query("SHOW GLOBAL STATUS")
        .fetch_all(&mut *conn)
        .await?;
    Ok(Status(
        rows.iter()
            .map(|r| (text(r, 0).to_ascii_lowercase(), text(r, 1)))
            .collect(),
    ))
}

/// InnoDB history list length: MariaDB's status variable, else the InnoDB metric.
async fn history_length(conn: &mut MySqlConnection) -> anyhow::Result<Option<u64>> {
    let row = sqlx::query("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(r) = row {
        if let Ok(v) = text(&r, 1).parse() {
            return Ok(Some(v));
        }
    }
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT `count` FROM information_schema.innodb_metrics \
         WHERE name = 'trx_rseg_history_len'",
    )
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten();
    Ok(v.map(|v| v.max(0) as u64))
}

/// Replicas that the primary lists, reached with the primary's credentials.
///
/// Limitation: the primary's database stays in the options, so a replica that filters that
/// database out (replicate-ignore-db) cannot be logged in to and holds the erase paused;
/// `--replica URL` without a database path avoids it.
async fn discover_replicas(
    primary: &mut MySqlConnection,
    options: &MySqlConnectOptions,
) -> anyhow::Result<Vec<MySqlConnectOptions>> {
    let rows = match sqlx::query("SHOW REPLICA HOSTS")
        .fetch_all(&mut *primary)
        .await
    {
        Ok(r) => r,
        Err(_) => {
            sqlx::query("SHOW SLAVE HOSTS")
                .fetch_all(&mut *primary)
                .await?
        }
    };
    let mut out = Vec::new();
    for r in rows {
        let host = column_text(&r, "Host").unwrap_or_default();
        let port = number(&r, "Port").unwrap_or(3306.0) as u16;
        if host.is_empty() {
            continue;
        }
        out.push(options.clone().host(&host).port(port));
    }
    Ok(out)
}

/// Seconds behind the primary, or why it cannot be told.
async fn replica_lag(r: &mut Replica) -> Result<f64, String> {
    if r.conn.is_none() {
        let c = connect::open_options(&r.options)
            .await
            .map_err(|e| format!("cannot be read ({e})"))?;
        r.conn = Some(c);
    }
    let conn = r.conn.as_mut().expect("connected above");
    let rows = match sqlx::query("SHOW REPLICA STATUS")
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => Ok(rows),
        Err(e) if crate::sql::is_connection_lost(&e) => Err(e),
        Err(_) => sqlx::query("SHOW SLAVE STATUS").fetch_all(&mut *conn).await,
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            r.conn = None;
            return Err(format!("cannot be read ({e})"));
        }
    };
    let Some(row) = rows.first() else {
        return Err("is not replicating (SHOW REPLICA STATUS is empty)".into());
    };
    let io = column_text(row, "Slave_IO_Running")
        .or_else(|| column_text(row, "Replica_IO_Running"))
        .unwrap_or_default();
    let sql = column_text(row, "Slave_SQL_Running")
        .or_else(|| column_text(row, "Replica_SQL_Running"))
        .unwrap_or_default();
    if !sql.eq_ignore_ascii_case("yes") || !io.eq_ignore_ascii_case("yes") {
        return Err(format!("replication stopped (IO={io}, SQL={sql})"));
    }
    number(row, "Seconds_Behind_Master")
        .or_else(|| number(row, "Seconds_Behind_Source"))
        .ok_or_else(|| "lag unknown (Seconds_Behind_Master is NULL)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(pairs: &[(&str, &str)]) -> Status {
        Status(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn args() -> ThrottleArgs {
        ThrottleArgs {
            max_flow_control: 0.1,
            max_recv_queue: 100,
            ..ThrottleArgs::default()
        }
    }

    #[test]
    fn flow_control_is_the_share_of_the_time_since_the_previous_look() {
        let mut g = Galera {
            flow_control: Some((Instant::now() - Duration::from_secs(2), 5e9)),
            ..Galera::default()
        };
        // 1.2 s paused in the last 2 s; the lifetime average (0.001) would hide it.
        let why = g.look(
            &status(&[
                ("wsrep_ready", "ON"),
                ("wsrep_flow_control_paused_ns", "6200000000"),
                ("wsrep_flow_control_paused", "0.001"),
            ]),
            &args(),
        );
        let why = why.expect("a pause");
        assert!(
            why.starts_with("galera flow control paused 60% of the last 2.0s > 10%"),
            "{why}"
        );

        // No pause since: the next look goes.
        let calm = status(&[
            ("wsrep_ready", "ON"),
            ("wsrep_flow_control_paused_ns", "6200000000"),
        ]);
        assert_eq!(g.look(&calm, &args()), None);
    }

    #[test]
    fn a_node_outside_the_primary_component_pauses() {
        let mut g = Galera::default();
        let why = g.look(
            &status(&[
                ("wsrep_ready", "OFF"),
                ("wsrep_cluster_status", "non-Primary"),
                ("wsrep_local_state_comment", "Initialized"),
            ]),
            &args(),
        );
        assert_eq!(
            why.as_deref(),
            Some(
                "galera node not ready: wsrep_ready=OFF, wsrep_cluster_status=non-Primary, \
                 wsrep_local_state_comment=Initialized"
            )
        );
    }

    #[test]
    fn receive_queue_over_the_limit_pauses() {
        let mut g = Galera::default();
        let s = status(&[("wsrep_ready", "ON"), ("wsrep_local_recv_queue", "101")]);
        assert_eq!(
            g.look(&s, &args()).as_deref(),
            Some("galera wsrep_local_recv_queue=101 > 100")
        );
        let s = status(&[("wsrep_ready", "ON"), ("wsrep_local_recv_queue", "100")]);
        assert_eq!(g.look(&s, &args()), None);
    }

    #[test]
    fn chunk_cap_follows_the_measured_weight_of_a_visit() {
        let mut g = Galera {
            max_rows: 1000,
            max_bytes: 1 << 20,
            ..Galera::default()
        };
        // Unmeasured: a visit is taken as 20 rows, 40 KiB: rows allow 25, bytes 12.
        assert_eq!(g.cap(), 12);

        // 40 visits replicated 400 KiB: 10 KiB a visit, so bytes allow 51; rows (8 a visit)
        // allow 62.
        g.look(
            &status(&[("wsrep_ready", "ON"), ("wsrep_replicated_bytes", "1000")]),
            &args(),
        );
        g.rows_per_visit = Some(8.0);
        g.visits_since = 40;
        let after = (1000 + 40 * 10 * 1024).to_string();
        g.look(
            &status(&[("wsrep_ready", "ON"), ("wsrep_replicated_bytes", &after)]),
            &args(),
        );
        assert_eq!(g.bytes_per_visit, Some(10240.0));
        assert_eq!(g.cap(), 51);

        // No limits: no cap.
        assert_eq!(Galera::default().cap(), usize::MAX);
    }
}
