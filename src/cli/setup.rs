//! `sqs2pg setup`: create the queue and its dead-letter queue if absent, with a redrive
//! policy, and print both URLs.

use anyhow::Context;
use serde::Serialize;

use crate::adapters::sqs::{self, RedriveChange, SetupOutcome};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, SetupArgs};

/// `sqs2pg setup`. Idempotent; an existing queue whose redrive policy differs is changed
/// only with `--update`.
pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
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
