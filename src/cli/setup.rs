//! `sqs2pg setup`: create the queue and its dead-letter queue if absent, with a redrive
//! policy, and print both URLs.

use anyhow::Context;

use crate::adapters::sqs;
use crate::cli::aws::sqs_client;
use crate::cli::config::SetupArgs;

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
    let (urls, change) = sqs::setup_queues(
        &client,
        &queue_name,
        &dlq_name,
        args.max_receive_count,
        args.update,
    )
    .await
    .context("setting up the queues")?;
    if let sqs::RedriveChange::Updated { previous } = change {
        tracing::warn!(
            message = "Changed the redrive policy of an existing queue, as --update asked.",
            queue_url = %urls.queue_url,
            %previous,
            max_receive_count = args.max_receive_count,
        );
    }
    println!("SQS2PG_QUEUE_URL={}", urls.queue_url);
    println!("SQS2PG_DLQ_URL={}", urls.dlq_url);
    Ok(())
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
    fn a_fifo_queue_gets_a_fifo_dead_letter_queue_name() {
        assert_eq!(dead_letter_queue_name("logins"), "logins-dlq");
        assert_eq!(dead_letter_queue_name("logins.fifo"), "logins-dlq.fifo");
    }
}
