//! `sqs2pg status`: where a deployment stands, on one screen or as one JSON object, and an
//! exit code a cron check can act on. Reads SQS's queue attributes and the database; never
//! receives a message (that would count toward the DLQ's maxReceiveCount).

mod report;

use std::process::ExitCode;

use anyhow::Context;

use crate::adapters::postgres::status::{known_migration_version, read_status};
use crate::adapters::sqs::{Queue as _, SqsQueue};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, StatusArgs};
use report::{Observed, Thresholds};

/// The exit code when some check needs attention; 1 is an error, so "could not check".
pub const ATTENTION: u8 = 2;

/// `sqs2pg status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let database = args.database.database()?;
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await
    .context("finding the dead-letter queue")?;
    // The name `run` records its dead letters under.
    let source_queue = queue
        .queue_url()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (depth, dlq_depth, database) = tokio::join!(
        queue.depth(),
        queue.dead_letter_depth(),
        read_status(&database, &source_queue, args.dlq_window),
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
