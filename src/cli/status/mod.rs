//! `sqs2pg status`: where a deployment stands, on one screen or as one JSON object, and an
//! exit code a cron check can act on. Reads SQS's queue attributes and the database; never
//! receives a message (that would count toward the DLQ's maxReceiveCount).

mod report;

use std::process::ExitCode;

use anyhow::Context;

use crate::adapters::postgres::status::{StatusOf, known_migration_version, read_status};
use crate::adapters::sqs::{Queue as _, SqsQueue};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, StatusArgs};
use crate::domain::stream::{Meta, Source};
use report::{Observed, Thresholds};

/// The exit code when some check needs attention; 1 is an error, so "could not check".
pub const ATTENTION: u8 = 2;

/// `sqs2pg status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let database = args.database.database()?;
    let stream = crate::cli::streams::choose(&args.streams, &args.queue, &args.stream)?;
    let queue = SqsQueue::connect(
        sqs_client().await?,
        stream.stream.queue_url.clone(),
        stream.dlq_url.clone(),
    )
    .await
    .context("finding the dead-letter queue")?;
    // The table's name as SQL writes it, and the column holding SentTimestamp, if any.
    let table = stream.stream.table.to_string();
    let sent_at_column = stream
        .stream
        .columns
        .iter()
        .find(|column| column.source == Source::Meta(Meta::SentTimestamp))
        .map(|column| column.name.as_str());
    let (depth, dlq_depth, database) = tokio::join!(
        queue.depth(),
        queue.dead_letter_depth(),
        read_status(
            &database,
            StatusOf {
                table: &table,
                sent_at_column,
                source_queue: stream.queue_name(),
            },
            args.dlq_window
        ),
    );
    let observed = Observed {
        queue_url: queue.queue_url().to_owned(),
        dlq_url: queue.dlq_url().to_owned(),
        queue: depth.context("reading the source queue's depth")?,
        dlq: dlq_depth.context("reading the dead-letter queue's depth")?,
        database: database.context("reading the database's status")?,
        known_version: known_migration_version(),
    };
    let report = report::assess(
        &observed,
        Thresholds {
            stall_after: args.stall_after,
            dlq_window: args.dlq_window,
        },
    );
    match args.output {
        OutputFormat::Text => print!("{report}"),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&report).expect("a status serializes")
        ),
    }
    Ok(match report.attention.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(ATTENTION),
    })
}
