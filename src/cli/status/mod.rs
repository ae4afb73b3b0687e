//! `sqs2pg status`: where a deployment stands, on one screen or as one JSON object, and an
//! exit code a cron check can act on. Reads SQS's queue attributes and the database; never
//! receives a message (that would count toward the DLQ's maxReceiveCount).

mod report;

use std::process::ExitCode;

use anyhow::Context;

use crate::adapters::postgres::Database;
use crate::adapters::postgres::status::{StatusOf, known_migration_version, read_status};
use crate::adapters::sqs::{Queue as _, SqsQueue};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, StatusArgs};
use crate::cli::streams::{self, Configured};
use crate::domain::envelope::EnvelopeMode;
use crate::domain::stream::{Meta, Source};
use report::{Observed, Thresholds};

/// The exit code when some check needs attention; 1 is an error, so "could not check".
pub const ATTENTION: u8 = 2;

/// `sqs2pg status`: of every stream, or of the one `--stream` names.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let database = args.database.database()?;
    let streams = match &args.stream.stream {
        Some(_) => vec![streams::choose(&args.streams, &args.queue, &args.stream)?],
        None => streams::load(&args.streams, &args.queue, EnvelopeMode::Auto)?,
    };
    let client = sqs_client().await?;
    let thresholds = Thresholds {
        stall_after: args.stall_after,
        dlq_window: args.dlq_window,
    };
    let mut reports = Vec::with_capacity(streams.len());
    for stream in &streams {
        let observed = observe(&client, &database, stream, args.dlq_window)
            .await
            .with_context(|| format!("stream `{}`", stream.stream.name))?;
        reports.push((
            stream.stream.name.clone(),
            report::assess(&observed, thresholds),
        ));
    }
    let attention = reports
        .iter()
        .any(|(_, report)| !report.attention.is_empty());
    match (&reports[..], args.output) {
        ([(_, report)], OutputFormat::Text) => print!("{report}"),
        ([(_, report)], OutputFormat::Json) => println!(
            "{}",
            serde_json::to_string(report).expect("a status serializes")
        ),
        (reports, OutputFormat::Text) => {
            for (index, (name, report)) in reports.iter().enumerate() {
                if index > 0 {
                    println!();
                }
                println!("== stream {name}");
                print!("{report}");
            }
        }
        (reports, OutputFormat::Json) => {
            let by_stream: serde_json::Map<String, serde_json::Value> = reports
                .iter()
                .map(|(name, report)| {
                    let report = serde_json::to_value(report).expect("a status serializes");
                    (name.clone(), report)
                })
                .collect();
            println!("{}", serde_json::json!({ "streams": by_stream }));
        }
    }
    Ok(match attention {
        false => ExitCode::SUCCESS,
        true => ExitCode::from(ATTENTION),
    })
}

/// What SQS and the database say of one stream.
async fn observe(
    client: &aws_sdk_sqs::Client,
    database: &Database,
    stream: &Configured,
    dlq_window: std::time::Duration,
) -> anyhow::Result<Observed> {
    let queue = SqsQueue::connect(
        client.clone(),
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
    let (depth, dlq_depth, status) = tokio::join!(
        queue.depth(),
        queue.dead_letter_depth(),
        read_status(
            database,
            StatusOf {
                table: &table,
                sent_at_column,
                source_queue: stream.queue_name(),
            },
            dlq_window
        ),
    );
    Ok(Observed {
        queue_url: queue.queue_url().to_owned(),
        dlq_url: queue.dlq_url().to_owned(),
        queue: depth.context("reading the source queue's depth")?,
        dlq: dlq_depth.context("reading the dead-letter queue's depth")?,
        database: status.context("reading the database's status")?,
        known_version: known_migration_version(),
    })
}
