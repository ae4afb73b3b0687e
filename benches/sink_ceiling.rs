//! Sink ceiling: sqs2pg's transform and PostgreSQL write path fed from memory, without SQS,
//! against a plain binary `COPY` of the same rows into an identical table.
//!
//! 1. `synthetic::generate` makes N realistic bodies (1% malformed), each given a fresh
//!    UUID as its message id, like SQS's.
//! 2. Timed: `BENCH_CONCURRENCY` writers take chunks of `consumer::DEFAULT_BATCH_MESSAGES`
//!    bodies, run the real `transform` on each and commit the valid rows with
//!    `PostgresSink::insert` (one transaction per chunk), into the database `postgres::migrate` made.
//! 3. Timed: one binary `COPY ... FROM STDIN` of the same rows, in one transaction, into
//!    `copy_target`, made `LIKE user_logins INCLUDING ALL` (same columns, key and indexes).
//!
//! Run by `scripts/bench.sh`. Environment:
//!   DATABASE_URL       a fresh, empty database (plain connections)
//!   SQS2PG_HMAC_KEY    the masking key
//!   BENCH_MESSAGES     bodies to generate (default 20000)
//!   BENCH_CONCURRENCY  concurrent writers (default: sqs2pg's, `DEFAULT_WRITERS`)
//!   BENCH_BATCH_SIZE   rows per transaction (default: sqs2pg's, `DEFAULT_BATCH_MESSAGES`)
//! Prints one JSON line; asserts nothing about speed.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use sqs2pg::adapters::postgres::{self, PostgresSink};
use sqs2pg::domain::event::Masker;
use sqs2pg::domain::keyring::{KeyId, Keyring};
use sqs2pg::domain::stream::{ColumnType, MessageMeta, Row, Stream, Value, login};
use sqs2pg::domain::synthetic::{Recipe, generate};
use sqs2pg::pipeline::{DEFAULT_BATCH_MESSAGES, DEFAULT_WRITERS};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Message {
    id: String,
    body: String,
}

fn transform_all(
    stream: &Stream,
    messages: &[Message],
    sent_at: chrono::DateTime<chrono::Utc>,
    keyring: &Keyring,
) -> Vec<Row> {
    messages
        .iter()
        .filter_map(|message| {
            let meta = MessageMeta {
                sqs_message_id: &message.id,
                original_message_id: None,
                sent_at,
            };
            stream.transform(&message.body, &meta, keyring).ok()
        })
        .collect()
}

/// The binary COPY type of a login column, as the migrations made it.
fn copy_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Text { max_chars: None } => Type::TEXT,
        ColumnType::Text { .. } => Type::VARCHAR,
        ColumnType::Digest => Type::BPCHAR,
        ColumnType::Date => Type::DATE,
        ColumnType::Timestamptz => Type::TIMESTAMPTZ,
        other => unreachable!("the login stream has no {} column", other.sql()),
    }
}

/// A login value, for the binary COPY.
fn copy_value(value: &Value) -> &(dyn ToSql + Sync) {
    const NULL: Option<&str> = None;
    match value {
        Value::Null => &NULL,
        Value::Text(text) => text,
        Value::Date(date) => date,
        Value::Timestamptz(at) => at,
        _ => unreachable!("the login stream makes only text, dates and timestamps"),
    }
}

/// Flushes what earlier phases left dirty, so that each timed phase starts alike. Needs a
/// superuser; skipped without one.
async fn checkpoint(client: &tokio_postgres::Client) {
    let _ = client.batch_execute("CHECKPOINT").await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("set DATABASE_URL to a fresh database")?;
    let key = std::env::var("SQS2PG_HMAC_KEY").context("set SQS2PG_HMAC_KEY")?;
    let count: u64 = env_or("BENCH_MESSAGES", 20_000);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", DEFAULT_WRITERS);

    let (bodies, malformed) = generate(Recipe {
        count,
        seed: 7,
        duplicate_share: 0.1,
        malformed_share: 0.01,
    });
    let messages: Arc<Vec<Message>> = Arc::new(
        bodies
            .into_iter()
            .map(|body| Message {
                id: uuid::Uuid::new_v4().to_string(),
                body,
            })
            .collect(),
    );
    let keyring = Keyring::single(KeyId::default(), Masker::new(key.as_bytes()));
    let sent_at = chrono::Utc::now();
    // The built-in login stream, as `sqs2pg run` runs without a stream file.
    let stream = Arc::new(login::stream(
        "http://localhost/000000000000/bench",
        Default::default(),
    ));

    let database = postgres::parse_database_url(&url)?;
    postgres::migrate(&database).await?;
    let (admin, connection) = database.config().connect(NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute("CREATE TABLE copy_target (LIKE user_logins INCLUDING ALL)")
        .await?;

    // The sink path. Connections are opened before the clock starts, as in a running service.
    // Rows per transaction: the service's group-commit size unless BENCH_BATCH_SIZE says
    // otherwise (10, one receive's worth, shows what group commit buys).
    let batch: usize = env_or("BENCH_BATCH_SIZE", DEFAULT_BATCH_MESSAGES).max(1);
    let sink = PostgresSink::new(database.clone(), concurrency).for_stream(&stream);
    futures::future::try_join_all((0..concurrency).map(|_| sink.ping())).await?;
    checkpoint(&admin).await;
    let chunks = messages.len().div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (sink, keyring, messages, next, stream) = (
                sink.clone(),
                keyring.clone(),
                Arc::clone(&messages),
                Arc::clone(&next),
                Arc::clone(&stream),
            );
            tokio::spawn(async move {
                let mut inserted = 0u64;
                loop {
                    let chunk = next.fetch_add(1, Ordering::Relaxed);
                    if chunk >= chunks {
                        return anyhow::Ok(inserted);
                    }
                    let end = ((chunk + 1) * batch).min(messages.len());
                    let rows =
                        transform_all(&stream, &messages[chunk * batch..end], sent_at, &keyring);
                    let rows: Vec<_> = rows.iter().collect();
                    inserted += sink.insert(&rows).await?.inserted;
                }
            })
        })
        .collect();
    let mut sink_rows = 0;
    for writer in writers {
        sink_rows += writer.await??;
    }
    let sink_seconds = started.elapsed().as_secs_f64();

    // The same rows again (untimed), then COPY them.
    let rows = transform_all(&stream, &messages, sent_at, &keyring);
    checkpoint(&admin).await;
    let started = Instant::now();
    let names: Vec<&str> = stream.columns.iter().map(|c| c.name.as_str()).collect();
    let copy_in = admin
        .copy_in(&format!(
            "COPY copy_target ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))
        .await?;
    let types: Vec<Type> = stream.columns.iter().map(|c| copy_type(c.stored)).collect();
    let mut writer = pin!(BinaryCopyInWriter::new(copy_in, &types));
    for row in &rows {
        let values: Vec<&(dyn ToSql + Sync)> = row.values.iter().map(copy_value).collect();
        writer.as_mut().write(&values).await?;
    }
    let copy_rows = writer.as_mut().finish().await?;
    let copy_seconds = started.elapsed().as_secs_f64();

    let count_of = |table: &'static str| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?;
            anyhow::Ok(row.get::<_, i64>(0))
        }
    };
    let sink_table_rows = count_of("user_logins").await?;
    let copy_table_rows = count_of("copy_target").await?;
    let sink_rate = sink_rows as f64 / sink_seconds;
    let copy_rate = copy_rows as f64 / copy_seconds;
    println!(
        "{}",
        serde_json::json!({
            "messages": count,
            "malformed": malformed,
            "valid_rows": rows.len(),
            "concurrency": concurrency,
            "batch_messages": batch,
            "sink_rows": sink_rows,
            "sink_table_rows": sink_table_rows,
            "sink_seconds": sink_seconds,
            "sink_rows_per_second": sink_rate,
            "sink_messages_per_second": count as f64 / sink_seconds,
            "copy_rows": copy_rows,
            "copy_table_rows": copy_table_rows,
            "copy_seconds": copy_seconds,
            "copy_rows_per_second": copy_rate,
            "share_of_copy": sink_rate / copy_rate,
        })
    );
    Ok(())
}
