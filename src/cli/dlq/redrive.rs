//! `sqs2pg dlq redrive`: dead letters back to the source queue, each with its original id,
//! so a message that was already ingested is still deduplicated. Sent first, deleted from
//! the DLQ after: a crash in between only makes a duplicate in the source, which the
//! consumer skips.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use chrono::DateTime;

use super::{Scan, plural};
use crate::adapters::sqs::{self, FifoIds, OutgoingMessage, SqsQueue, dead_letter_attributes};
use crate::cli::aws::sqs_client;
use crate::cli::config::DlqRedriveArgs;
use crate::domain::dead_letter::DeadLetterAttributes;

/// `sqs2pg dlq redrive`.
pub async fn redrive(args: DlqRedriveArgs) -> anyhow::Result<()> {
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut redriven = 0u64;
    let mut scan = Scan::new(&queue);
    while redriven < limit {
        let fresh = scan.next().await?;
        if fresh.is_empty() {
            break;
        }
        let mut batch = Vec::new();
        for message in fresh {
            let attributes = dead_letter_attributes(&message);
            let wanted = args.reason.is_none() || attributes.known_reason() == args.reason;
            let handle = message.receipt_handle().unwrap_or_default().to_owned();
            if !wanted || redriven + batch.len() as u64 >= limit {
                scan.leave(handle);
                continue;
            }
            batch.push((redriven_message(&queue, &message, &attributes), handle));
        }
        let outgoing: Vec<OutgoingMessage> =
            batch.iter().map(|(message, _)| message.clone()).collect();
        let failures = queue.send(&outgoing).await?;
        let (sent, refused) = sqs::split_by_failures(batch, &failures);
        let sent: Vec<&str> = sent.iter().map(|(_, handle)| handle.as_str()).collect();
        queue.delete_dead_letters(&sent).await?;
        redriven += sent.len() as u64;
        for (_, handle) in refused {
            scan.leave(handle);
        }
    }
    scan.release().await?;
    println!(
        "redriven: {} from {} to {}",
        plural(redriven, "message"),
        queue.dlq_url(),
        queue.queue_url()
    );
    Ok(())
}

/// A dead letter as it goes back: its body unchanged, its original id and SentTimestamp
/// (those of the copy, for one SQS itself moved there), and on a FIFO source the group it
/// had, with the DLQ copy's id as deduplication id, so a redrive that crashed and is run
/// again within SQS's five minutes does not send it twice.
fn redriven_message(
    queue: &SqsQueue,
    message: &Message,
    attributes: &DeadLetterAttributes,
) -> OutgoingMessage {
    let system = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|attributes| attributes.get(&name))
            .cloned()
    };
    let original_id = attributes
        .original_message_id
        .clone()
        .or_else(|| message.message_id().map(str::to_owned))
        .unwrap_or_default();
    let sent_at = attributes.original_sent_at.or_else(|| {
        system(MessageSystemAttributeName::SentTimestamp)
            .and_then(|millis| millis.parse().ok())
            .and_then(DateTime::from_timestamp_millis)
    });
    OutgoingMessage {
        body: message.body().unwrap_or_default().to_owned(),
        attributes: DeadLetterAttributes::redriven(original_id, sent_at).encode(),
        fifo: queue.is_fifo().then(|| FifoIds {
            group_id: system(MessageSystemAttributeName::MessageGroupId)
                .unwrap_or_else(|| sqs::DEFAULT_GROUP_ID.to_owned()),
            deduplication_id: message.message_id().unwrap_or_default().to_owned(),
        }),
    }
}
