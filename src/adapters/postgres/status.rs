//! What `sqs2pg status` reads from the database: recent rows, ingestion lag, the record of
//! dead letters, the migration version. One connection and one read-only snapshot, so the
//! numbers agree with each other and with one `now()`, the database's clock (the clock
//! `ingested_at` and `dead_lettered_at` were written with). Every query on the stream's table
//! is served by its `ingested_at` index (migration V4 for `user_logins`, the stream's DDL for
//! the others); those on `dead_letters` need none: it holds only poison and stays small.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::IsolationLevel;

use super::{Database, SinkError, embedded};

/// The ingestion lag is measured over the rows of this last stretch...
pub const LAG_WINDOW: Duration = Duration::from_secs(60 * 60);
/// ...and at most this many of its newest rows, so its cost is bounded on a busy table.
pub const LAG_MAX_ROWS: i64 = 10_000;

/// Which tables exist: the stream's (`$1`), `dead_letters`, the migrations' history.
const TABLES: &str = "SELECT to_regclass($1) IS NOT NULL, \
                             to_regclass('dead_letters') IS NOT NULL, \
                             to_regclass('refinery_schema_history') IS NOT NULL, \
                             now()";

const APPLIED_VERSION: &str = "SELECT max(version)::int8 FROM refinery_schema_history";

/// Rows of the last minute, hour and day of `table`, and its newest.
fn rows_query(table: &str) -> String {
    format!(
        "SELECT count(*) FILTER (WHERE ingested_at > now() - interval '1 minute'), \
                count(*) FILTER (WHERE ingested_at > now() - interval '1 hour'), \
                count(*), \
                (SELECT max(ingested_at) FROM {table}) \
         FROM {table} WHERE ingested_at > now() - interval '1 day'"
    )
}

/// The ingestion lag (commit minus `sent_at`, the column holding SentTimestamp) of the
/// newest rows of `table`.
fn lag_query(table: &str, sent_at: &str) -> String {
    format!(
        "SELECT count(*), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) \
         FROM (SELECT extract(epoch FROM ingested_at - {sent_at})::float8 AS lag FROM {table} \
               WHERE ingested_at > now() - make_interval(secs => $1) \
               ORDER BY ingested_at DESC LIMIT $2) AS recent"
    )
}

const DEAD_LETTERS: &str = "\
SELECT reason, count(*), \
       count(*) FILTER (WHERE dead_lettered_at > now() - interval '1 hour'), \
       count(*) FILTER (WHERE dead_lettered_at > now() - make_interval(secs => $2)), \
       max(dead_lettered_at) \
FROM dead_letters WHERE source_queue = $1 GROUP BY reason ORDER BY reason";

/// The database's side of a status, as of `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseStatus {
    /// The database's clock when the snapshot was taken.
    pub now: DateTime<Utc>,
    /// The highest migration applied; `None` if none ever was.
    pub applied_version: Option<i64>,
    /// Whether the stream's table and `dead_letters` exist.
    pub tables_exist: bool,
    pub rows: RowCounts,
    pub lag: Lag,
    /// The newest `ingested_at`.
    pub last_row_at: Option<DateTime<Utc>>,
    /// Dead letters recorded for this source queue, by reason code.
    pub dead_letters: BTreeMap<String, DeadLetterCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub last_minute: u64,
    pub last_hour: u64,
    pub last_day: u64,
}

/// `ingested_at - sent_at` over recent rows, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// The rows measured.
    pub rows: u64,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    pub total: u64,
    pub last_hour: u64,
    /// Within the window the caller asked about.
    pub in_window: u64,
    pub last_at: Option<DateTime<Utc>>,
}

/// The highest migration this binary carries.
pub fn known_migration_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| i64::from(migration.version()))
        .max()
        .unwrap_or(0)
}

/// The stream a status reads: its table, the column that holds SentTimestamp (for the
/// lag; `None` if it keeps none), and its queue's name, as `run` records it in
/// `dead_letters`.
#[derive(Debug, Clone, Copy)]
pub struct StatusOf<'a> {
    pub table: &'a str,
    pub sent_at_column: Option<&'a str>,
    pub source_queue: &'a str,
}

/// Reads the status of the database for `of`, counting dead letters recorded within
/// `dead_letter_window` apart. Within the connect deadline, then the statement deadline for
/// the whole snapshot.
pub async fn read_status(
    database: &Database,
    of: StatusOf<'_>,
    dead_letter_window: Duration,
) -> Result<DatabaseStatus, SinkError> {
    let mut client = database.connect().await?;
    let after = database.statement_timeout();
    tokio::time::timeout(after, snapshot(&mut client, of, dead_letter_window, after))
        .await
        .unwrap_or(Err(SinkError::Timeout {
            operation: "status",
            after,
        }))
}

async fn snapshot(
    client: &mut tokio_postgres::Client,
    of: StatusOf<'_>,
    dead_letter_window: Duration,
    statement_timeout: Duration,
) -> Result<DatabaseStatus, SinkError> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(SinkError::postgres("begin status snapshot"))?;
    // The server gives up too, not only this client: a read must never outlive its caller.
    let deadline = format!(
        "SET LOCAL statement_timeout = {}",
        statement_timeout.as_millis()
    );
    transaction
        .batch_execute(&deadline)
        .await
        .map_err(SinkError::postgres("set the status deadline"))?;
    let tables = transaction
        .query_one(TABLES, &[&of.table])
        .await
        .map_err(SinkError::postgres("find tables"))?;
    let (table, dead_letters, history): (bool, bool, bool) =
        (tables.get(0), tables.get(1), tables.get(2));
    let mut status = DatabaseStatus {
        now: tables.get(3),
        applied_version: None,
        tables_exist: table && dead_letters,
        rows: RowCounts::default(),
        lag: Lag::default(),
        last_row_at: None,
        dead_letters: BTreeMap::new(),
    };
    if history {
        status.applied_version = transaction
            .query_one(APPLIED_VERSION, &[])
            .await
            .map_err(SinkError::postgres("read migration version"))?
            .get(0);
    }
    if !status.tables_exist {
        return Ok(status);
    }
    let count = |value: i64| value.max(0) as u64;
    let rows = transaction
        .query_one(&rows_query(of.table), &[])
        .await
        .map_err(SinkError::postgres("count recent rows"))?;
    status.rows = RowCounts {
        last_minute: count(rows.get(0)),
        last_hour: count(rows.get(1)),
        last_day: count(rows.get(2)),
    };
    status.last_row_at = rows.get(3);
    if let Some(sent_at) = of.sent_at_column {
        let lag = transaction
            .query_one(
                &lag_query(of.table, sent_at),
                &[&LAG_WINDOW.as_secs_f64(), &LAG_MAX_ROWS],
            )
            .await
            .map_err(SinkError::postgres("measure ingestion lag"))?;
        status.lag = Lag {
            rows: count(lag.get(0)),
            p50_s: lag.get(1),
            p99_s: lag.get(2),
        };
    }
    for row in transaction
        .query(
            DEAD_LETTERS,
            &[&of.source_queue, &dead_letter_window.as_secs_f64()],
        )
        .await
        .map_err(SinkError::postgres("count dead letters"))?
    {
        status.dead_letters.insert(
            row.get(0),
            DeadLetterCounts {
                total: count(row.get(1)),
                last_hour: count(row.get(2)),
                in_window: count(row.get(3)),
                last_at: row.get(4),
            },
        );
    }
    transaction
        .commit()
        .await
        .map_err(SinkError::postgres("end status snapshot"))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_version_is_the_newest_migration_file() {
        let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.strip_prefix('V')?
                    .split_once("__")?
                    .0
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap();
        assert_eq!(known_migration_version(), newest);
    }
}
