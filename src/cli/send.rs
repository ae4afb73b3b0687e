//! `sqs2pg send`: realistic synthetic login events, for demos, tests and the benchmark.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};

use crate::adapters::sqs::{FifoIds, MAX_BATCH, NotTaken, OutgoingMessage, SqsQueue};
use crate::cli::aws::sqs_client;
use crate::cli::config::{OutputFormat, SendArgs};
use crate::domain::synthetic;
use crate::retry::RetryPolicy;
use crate::telemetry::events::log_retry;

/// Batch calls in flight at once.
const CONCURRENT_SENDS: usize = 8;

/// `sqs2pg send`: sends the events in batches of ten, each until SQS has taken it all.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let queue = SqsQueue::new(sqs_client().await?, args.queue_url.clone(), String::new());
    let (bodies, malformed) = synthetic::generate(synthetic::Recipe {
        count: args.count,
        seed: args.seed,
        duplicate_share: args.duplicate_share,
        malformed_share: args.malformed_share,
    });
    let started = std::time::Instant::now();
    futures::stream::iter(bodies.chunks(MAX_BATCH))
        .map(|chunk| send_chunk(&queue, chunk))
        .buffer_unordered(CONCURRENT_SENDS)
        .try_collect::<Vec<()>>()
        .await
        .context("sending events")?;
    let sent = Sent {
        sent: bodies.len() as u64,
        malformed,
        queue_url: &args.queue_url,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    match args.output {
        OutputFormat::Text => println!(
            "sent {} events ({} malformed) to {} in {:.2} s",
            sent.sent, sent.malformed, sent.queue_url, sent.elapsed_s
        ),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&sent).expect("a send result serializes")
        ),
    }
    Ok(())
}

/// `send --output json` prints this shape; fields are only ever added.
#[derive(Debug, serde::Serialize)]
struct Sent<'a> {
    /// Events SQS took, malformed ones included.
    sent: u64,
    /// Of those, the malformed (poison) ones.
    malformed: u64,
    queue_url: &'a str,
    elapsed_s: f64,
}

/// Sends one batch; what SQS refuses is sent again (see [`SqsQueue::send_until_taken`]).
async fn send_chunk(queue: &SqsQueue, chunk: &[String]) -> Result<(), NotTaken> {
    let messages: Vec<OutgoingMessage> = chunk
        .iter()
        .map(|body| OutgoingMessage {
            fifo: queue.is_fifo().then(|| event_fifo_ids(body)),
            ..OutgoingMessage::new(body.clone())
        })
        .collect();
    queue
        .send_until_taken(&messages, RetryPolicy::BRIEF, &log_retry)
        .await
}

/// The FIFO ids `send` gives an event: its user id as the group, so one user's events stay
/// in order (a body without one goes to a group of its own), and a fresh deduplication id,
/// since two events may rightly be identical.
fn event_fifo_ids(body: &str) -> FifoIds {
    let user_id = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|event| event.get("user_id")?.as_str().map(str::to_owned))
        // SQS takes 1 to 128 printable ASCII characters as a group id.
        .filter(|user_id| {
            (1..=128).contains(&user_id.len()) && user_id.bytes().all(|b| b.is_ascii_graphic())
        });
    FifoIds {
        group_id: user_id.unwrap_or_else(|| "no-user-id".to_owned()),
        deduplication_id: uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_groups_events_by_user_and_never_reuses_a_deduplication_id() {
        let first = event_fifo_ids(r#"{"user_id": "u-1", "ip": "10.0.0.1"}"#);
        let again = event_fifo_ids(r#"{"user_id": "u-1", "ip": "10.0.0.1"}"#);
        assert_eq!(first.group_id, "u-1");
        assert_eq!(again.group_id, "u-1");
        assert_ne!(first.deduplication_id, again.deduplication_id);
        assert_eq!(event_fifo_ids("not json").group_id, "no-user-id");
        assert_eq!(
            event_fifo_ids(r#"{"user_id": "a user"}"#).group_id,
            "no-user-id",
            "SQS refuses a space in a group id"
        );
    }
}
