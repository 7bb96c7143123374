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
    galera: bool,
    /// Galera's per-writeset row limit (0 = none).
    pub ws_max_rows: u64,
    /// What the plan says about replicas.
    pub replica_note: String,
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
                if !status.contains_key(&n.to_ascii_lowercase()) {
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
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_max_ws_rows')",
        )
        .fetch_all(&mut *primary)
        .await?;
        let mut galera = false;
        let mut ws_max_rows = 0;
        for r in vars {
            let name: String = text(&r, 0);
            let value: String = text(&r, 1);
            match name.as_str() {
                "wsrep_on" => galera = value.eq_ignore_ascii_case("ON"),
                "wsrep_max_ws_rows" => ws_max_rows = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(Throttle {
            args: args.clone(),
            replicas,
            started: Instant::now(),
            galera,
            ws_max_rows: if galera { ws_max_rows } else { 0 },
            replica_note,
        })
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
        let need_status =
            !self.args.max_load.is_empty() || !self.args.critical_load.is_empty() || self.galera;
        let status = if need_status {
            global_status(primary).await?
        } else {
            HashMap::new()
        };
        for (name, limit) in &self.args.critical_load {
            if let Some(v) = status.get(&name.to_ascii_lowercase()) {
                if v >= limit {
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
            if let Some(v) = status.get(&name.to_ascii_lowercase()) {
                if v >= limit {
                    return Ok(Verdict::Pause(format!("max-load {name}={v} >= {limit}")));
                }
            }
        }
        if self.galera {
            let paused = status
                .get("wsrep_flow_control_paused")
                .copied()
                .unwrap_or(0.0);
            if paused > self.args.max_flow_control {
                return Ok(Verdict::Pause(format!(
                    "galera wsrep_flow_control_paused={paused:.3} > {}",
                    self.args.max_flow_control
                )));
            }
            let queue = status.get("wsrep_local_recv_queue").copied().unwrap_or(0.0);
            if queue > self.args.max_recv_queue as f64 {
                return Ok(Verdict::Pause(format!(
                    "galera wsrep_local_recv_queue={queue} > {}",
                    self.args.max_recv_queue
                )));
            }
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

/// Numeric global status variables, keyed by lower-case name.
async fn global_status(conn: &mut MySqlConnection) -> anyhow::Result<HashMap<String, f64>> {
    let rows = sqlx::query("SHOW GLOBAL STATUS")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let v: f64 = text(r, 1).trim().parse().ok()?;
            Some((text(r, 0).to_ascii_lowercase(), v))
        })
        .collect())
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
