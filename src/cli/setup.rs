//! `sqs2pg setup`: create the queue and its dead-letter queue if absent, with a redrive
//! policy, and print both URLs; with a stream file, prepare the streams' tables instead.

use anyhow::Context;
use serde::Serialize;

use crate::adapters::postgres;
use crate::adapters::postgres::schema::{self, live_table};
use crate::adapters::sqs::{self, RedriveChange, SetupOutcome};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, SetupArgs};
use crate::cli::streams;
use crate::domain::stream::ddl::plan;

/// `sqs2pg setup`. Idempotent; an existing queue whose redrive policy differs is changed
/// only with `--update`.
pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    if let Some(file) = args.streams.clone() {
        return tables(file, args).await;
    }
    let client = sqs_client().await?;
    let queue_name = match args.fifo && !args.queue_name.ends_with(".fifo") {
        true => format!("{}.fifo", args.queue_name),
        false => args.queue_name,
    };
    let dlq_name = args
        .dlq_name
        .unwrap_or_else(|| dead_letter_queue_name(&queue_name));
    let outcome = sqs::setup_queues(
        &client,
        &queue_name,
        &dlq_name,
        args.max_receive_count,
        args.update,
    )
    .await
    .context("setting up the queues")?;
    if let RedriveChange::Updated { previous } = &outcome.change {
        tracing::warn!(
            message = "Changed the redrive policy of an existing queue, as --update asked.",
            queue_url = %outcome.urls.queue_url,
            %previous,
            max_receive_count = args.max_receive_count,
        );
    }
    match args.output {
        OutputFormat::Text => {
            println!("SQS2PG_QUEUE_URL={}", outcome.urls.queue_url);
            println!("SQS2PG_DLQ_URL={}", outcome.urls.dlq_url);
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&SetupShape::of(&outcome, args.max_receive_count))
                .expect("a setup result serializes")
        ),
    }
    Ok(())
}

/// `setup --output json` prints this shape; fields are only ever added.
#[derive(Debug, Serialize)]
struct SetupShape<'a> {
    queue: QueueShape<'a>,
    dlq: QueueShape<'a>,
    fifo: bool,
    max_receive_count: u32,
    /// `created` (with a new queue), `unchanged`, or `updated` (by `--update`).
    redrive_policy: &'static str,
}

#[derive(Debug, Serialize)]
struct QueueShape<'a> {
    url: &'a str,
    arn: Option<&'a str>,
    /// Whether this run made it (else it was there).
    created: bool,
}

impl<'a> SetupShape<'a> {
    fn of(outcome: &'a SetupOutcome, max_receive_count: u32) -> Self {
        Self {
            queue: QueueShape {
                url: &outcome.urls.queue_url,
                arn: outcome.queue_arn.as_deref(),
                created: outcome.change == RedriveChange::Created,
            },
            dlq: QueueShape {
                url: &outcome.urls.dlq_url,
                arn: outcome.dlq_arn.as_deref(),
                created: outcome.dlq_created,
            },
            fifo: sqs::is_fifo_queue_url(&outcome.urls.queue_url),
            max_receive_count,
            redrive_policy: match outcome.change {
                RedriveChange::Created => "created",
                RedriveChange::Unchanged => "unchanged",
                RedriveChange::Updated { .. } => "updated",
            },
        }
    }
}

/// The default name of a queue's DLQ: `<name>-dlq`, and `<stem>-dlq.fifo` for a FIFO queue,
/// whose DLQ must be FIFO and named so.
fn dead_letter_queue_name(queue_name: &str) -> String {
    match queue_name.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-dlq.fifo"),
        None => format!("{queue_name}-dlq"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_shape_names_both_queues() {
        let outcome = SetupOutcome {
            urls: sqs::QueueUrls {
                queue_url: "http://h/000000000000/q".to_owned(),
                dlq_url: "http://h/000000000000/q-dlq".to_owned(),
            },
            queue_arn: Some("arn:aws:sqs:us-east-1:000000000000:q".to_owned()),
            dlq_arn: Some("arn:aws:sqs:us-east-1:000000000000:q-dlq".to_owned()),
            dlq_created: false,
            change: RedriveChange::Unchanged,
        };
        let shape = serde_json::to_value(SetupShape::of(&outcome, 5)).unwrap();
        assert_eq!(
            shape,
            serde_json::json!({
                "queue": {"url": "http://h/000000000000/q", "arn": "arn:aws:sqs:us-east-1:000000000000:q", "created": false},
                "dlq": {"url": "http://h/000000000000/q-dlq", "arn": "arn:aws:sqs:us-east-1:000000000000:q-dlq", "created": false},
                "fifo": false,
                "max_receive_count": 5,
                "redrive_policy": "unchanged",
            })
        );
    }

    #[test]
    fn a_fifo_queue_gets_a_fifo_dead_letter_queue_name() {
        assert_eq!(dead_letter_queue_name("logins"), "logins-dlq");
        assert_eq!(dead_letter_queue_name("logins.fifo"), "logins-dlq.fifo");
    }
}

/// `setup --streams`: migrations first (sqs2pg's own tables), then each stream's table
/// created if absent, or its additive changes applied. Refused changes are printed with
/// the statement to run, and fail the command.
async fn tables(file: std::path::PathBuf, args: SetupArgs) -> anyhow::Result<()> {
    let Some(database) = &args.database else {
        anyhow::bail!("setup --streams prepares the streams' tables: set DATABASE_URL");
    };
    let database = database.database()?;
    postgres::migrate(&database)
        .await
        .context("applying migrations")?;
    let mut shapes = Vec::new();
    let streams = streams::declarations(&crate::cli::config::StreamsArgs {
        streams: Some(file),
    })?;
    for stream in streams {
        let table = stream.table.to_string();
        let mut shape = TableShape {
            stream: stream.name.clone(),
            table: table.clone(),
            created: false,
            applied: Vec::new(),
            refused: Vec::new(),
        };
        match live_table(&database, &table).await? {
            None => {
                schema::apply(&database, &stream.ddl())
                    .await
                    .with_context(|| format!("creating table {table}"))?;
                shape.created = true;
            }
            Some(live) => {
                let plan = plan(&stream, &live);
                let statements: Vec<String> = plan
                    .additive
                    .iter()
                    .map(|change| change.sql.clone())
                    .collect();
                if !statements.is_empty() {
                    schema::apply(&database, &statements)
                        .await
                        .with_context(|| format!("changing table {table}"))?;
                }
                shape.applied = plan.additive.iter().map(ToString::to_string).collect();
                shape.refused = plan.refused.iter().map(ToString::to_string).collect();
            }
        }
        shapes.push(shape);
    }
    match args.output {
        OutputFormat::Text => {
            for shape in &shapes {
                let stream = &shape.stream;
                let table = &shape.table;
                if shape.created {
                    println!("stream {stream}: created table {table}");
                } else if shape.applied.is_empty() && shape.refused.is_empty() {
                    println!("stream {stream}: table {table} is as the file declares");
                }
                for change in &shape.applied {
                    println!("stream {stream}: table {table}: applied: {change}");
                }
                for refusal in &shape.refused {
                    println!("stream {stream}: table {table}: refused: {refusal}");
                }
            }
        }
        OutputFormat::Json => println!("{}", serde_json::json!({ "tables": shapes })),
    }
    let refused: usize = shapes.iter().map(|shape| shape.refused.len()).sum();
    anyhow::ensure!(
        refused == 0,
        "{refused} change(s) to the streams' tables not applied: they could lose or rewrite data; each is printed above with the statement to run yourself"
    );
    Ok(())
}

/// A stream's table in `setup --streams --output json`: `{"tables": [...]}`.
#[derive(Debug, Serialize)]
struct TableShape {
    stream: String,
    table: String,
    /// Whether this run created it.
    created: bool,
    /// The changes this run applied, each `column `c`: what: SQL`.
    applied: Vec<String>,
    /// The changes it refused, each with the statement to run yourself.
    refused: Vec<String>,
}
