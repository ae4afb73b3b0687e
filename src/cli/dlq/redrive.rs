//! `sqs2pg dlq redrive`: dead letters back to the source queue, each with its original id,
//! so a message that was already ingested is still deduplicated. Sent first, deleted from
//! the DLQ after: a crash in between only makes a duplicate in the source, which the
//! consumer skips.

use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::{Scan, message_attribute, plural};
use crate::adapters::sqs::{self, FifoIds, OutgoingMessage, SqsQueue};
use crate::cli::aws::sqs_client;
use crate::cli::config::DlqRedriveArgs;
use crate::domain::dead_letter::{DeadLetterReason, attribute};

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
            let reason = message_attribute(&message, attribute::REASON)
                .and_then(|r| r.parse::<DeadLetterReason>().ok());
            let wanted = args.reason.is_none() || reason == args.reason;
            let handle = message.receipt_handle().unwrap_or_default().to_owned();
            if !wanted || redriven + batch.len() as u64 >= limit {
                scan.leave(handle);
                continue;
            }
            let original_id = message_attribute(&message, attribute::ORIGINAL_MESSAGE_ID)
                .or_else(|| message.message_id().map(str::to_owned))
                .unwrap_or_default();
            let sent_timestamp = message_attribute(&message, attribute::ORIGINAL_SENT_TIMESTAMP)
                .or_else(|| {
                    message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .cloned()
                })
                .unwrap_or_default();
            // Into a FIFO source: the group the message had, and the DLQ copy's id as the
            // deduplication id, so a redrive that crashed and is run again within SQS's
            // five minutes does not send it twice.
            let fifo = queue.is_fifo().then(|| FifoIds {
                group_id: message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| sqs::DEFAULT_GROUP_ID.to_owned()),
                deduplication_id: message.message_id().unwrap_or_default().to_owned(),
            });
            let outgoing = OutgoingMessage {
                body: message.body().unwrap_or_default().to_owned(),
                attributes: vec![
                    (attribute::ORIGINAL_MESSAGE_ID, original_id),
                    (attribute::ORIGINAL_SENT_TIMESTAMP, sent_timestamp),
                ],
                fifo,
            };
            batch.push((outgoing, handle));
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
