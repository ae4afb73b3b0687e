//! `sqs2pg dlq redrive`: dead letters back to the source queue, each with its original id,
//! timestamp and their tag, so a message that was already ingested is still deduplicated. Sent first, deleted from
//! the DLQ after: a crash in between only makes a duplicate in the source, which the
//! consumer skips.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use super::{Scan, plural};
use crate::adapters::sqs::{OutgoingMessage, QueueError, SqsQueue, dead_letter_attributes};
use crate::cli::aws::sqs_client;
use crate::cli::config::DlqRedriveArgs;
use crate::domain::dead_letter::{DeadLetterAttributes, DeadLetterReason};
use crate::error_chain::ErrorChain;
use crate::retry::RetryPolicy;
use crate::telemetry::events::log_retry;

/// Dead letters the source queue would not take, even after retries: they stay in the DLQ.
#[derive(Debug, thiserror::Error)]
#[error(
    "SQS did not take {} back into the source queue; left in the dead-letter queue: {}",
    plural(.refused.len() as u64, "dead letter"),
    .refused.join(", ")
)]
pub struct RedriveIncomplete {
    /// Each one as `<its id in the DLQ> (SQS's code)`.
    pub refused: Vec<String>,
    /// Why the redrive stopped early, when a whole call kept failing.
    #[source]
    pub stopped: Option<QueueError>,
}

/// `sqs2pg dlq redrive`. Exits non-zero, naming them, if SQS would not take some back.
pub async fn redrive(args: DlqRedriveArgs) -> anyhow::Result<()> {
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await?;
    let redriven = redrive_queue(&queue, args.reason, args.limit.unwrap_or(u64::MAX)).await?;
    println!(
        "redriven: {} from {} to {}",
        plural(redriven.count, "message"),
        queue.dlq_url(),
        queue.queue_url()
    );
    redriven.into_result()?;
    Ok(())
}

/// What a redrive did.
#[derive(Debug)]
struct Redriven {
    /// Messages sent back and deleted from the DLQ.
    count: u64,
    incomplete: RedriveIncomplete,
}

impl Redriven {
    fn into_result(self) -> Result<(), RedriveIncomplete> {
        match self.incomplete.refused.is_empty() && self.incomplete.stopped.is_none() {
            true => Ok(()),
            false => Err(self.incomplete),
        }
    }
}

/// Redrives up to `limit` dead letters (of `reason`, if given) from the queue's DLQ.
async fn redrive_queue(
    queue: &SqsQueue,
    reason: Option<DeadLetterReason>,
    limit: u64,
) -> Result<Redriven, QueueError> {
    let mut count = 0u64;
    let mut incomplete = RedriveIncomplete {
        refused: Vec::new(),
        stopped: None,
    };
    let mut scan = Scan::new(queue);
    while count < limit && incomplete.stopped.is_none() {
        let fresh = scan.next().await?;
        if fresh.is_empty() {
            break;
        }
        // Each message to send, with the receipt handle and id of its copy in the DLQ.
        let mut batch: Vec<(OutgoingMessage, String, String)> = Vec::new();
        for message in fresh {
            let attributes = dead_letter_attributes(&message);
            let wanted = reason.is_none() || attributes.known_reason() == reason;
            let handle = message.receipt_handle().unwrap_or_default().to_owned();
            if !wanted || count + batch.len() as u64 >= limit {
                scan.leave(handle);
                continue;
            }
            let dlq_id = message.message_id().unwrap_or_default().to_owned();
            batch.push((
                redriven_message(queue, &message, &attributes),
                handle,
                dlq_id,
            ));
        }
        let outgoing: Vec<OutgoingMessage> =
            batch.iter().map(|(message, ..)| message.clone()).collect();
        let codes: HashMap<usize, String> = match queue
            .send_until_taken(&outgoing, RetryPolicy::BRIEF, &log_retry)
            .await
        {
            Ok(()) => HashMap::new(),
            Err(not_taken) => {
                tracing::warn!(
                    message = "The source queue did not take some dead letters; they stay in the DLQ.",
                    error = %ErrorChain(&not_taken),
                );
                // A whole call that kept failing stops the redrive: the rest stay untouched.
                incomplete.stopped = not_taken.call;
                not_taken
                    .refused
                    .into_iter()
                    .map(|failure| (failure.index, failure.code))
                    .collect()
            }
        };
        let mut sent = Vec::new();
        for (index, (_, handle, dlq_id)) in batch.into_iter().enumerate() {
            match codes.get(&index) {
                None => sent.push(handle),
                Some(code) => {
                    incomplete.refused.push(format!("{dlq_id} ({code})"));
                    scan.leave(handle);
                }
            }
        }
        let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
        queue.delete_dead_letters(&sent).await?;
        count += sent.len() as u64;
    }
    scan.release().await?;
    Ok(Redriven { count, incomplete })
}

/// A dead letter as it goes back: its body unchanged, with its original id, SentTimestamp
/// and their tag if it has one (see [`DeadLetterAttributes::redriven`]: without one it goes
/// back as a fresh message); its group kept (a FIFO queue's, or a fair queue's), and on a
/// FIFO source the DLQ copy's id as deduplication id, so a redrive that crashed and is run
/// again within SQS's five minutes does not send it twice.
fn redriven_message(
    queue: &SqsQueue,
    message: &Message,
    attributes: &DeadLetterAttributes,
) -> OutgoingMessage {
    let group_id = message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
        .cloned();
    OutgoingMessage {
        attributes: DeadLetterAttributes::redriven(attributes).encode(),
        ..OutgoingMessage::new(message.body().unwrap_or_default().to_owned())
    }
    .in_group(
        queue.is_fifo(),
        group_id,
        message.message_id().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::adapters::sqs::stub::{StubSqs, batch_answer};
    use crate::domain::dead_letter::attribute;

    /// The tag of a dead letter: redrive carries it without reading it.
    const TAG: &str = "default:0123abcd";

    /// A dead letter as ReceiveMessage returns it, as sqs2pg writes one.
    fn dead_letter(id: &str, body: &str, original_id: &str) -> Value {
        json!({
            "MessageId": id,
            "ReceiptHandle": format!("handle-{id}"),
            "Body": body,
            "MD5OfBody": "00000000000000000000000000000000",
            "Attributes": { "SentTimestamp": "1700000000000", "MessageGroupId": "tenant-7" },
            "MessageAttributes": {
                attribute::REASON: { "DataType": "String", "StringValue": "invalid_json" },
                attribute::ORIGINAL_MESSAGE_ID: { "DataType": "String", "StringValue": original_id },
                attribute::ORIGINAL_SENT_TIMESTAMP: { "DataType": "String", "StringValue": "1600000000000" },
                attribute::ATTRIBUTES_TAG: { "DataType": "String", "StringValue": TAG },
            },
        })
    }

    fn handles(request: &Value) -> Vec<String> {
        request["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                entry["ReceiptHandle"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn dead_letters_sqs_will_not_take_back_are_named_and_stay_in_the_dlq() {
        let received = std::sync::atomic::AtomicBool::new(false);
        let stub = StubSqs::start(move |operation, request| match operation {
            "ReceiveMessage" if !received.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                json!({ "Messages": [
                    dead_letter("dlq-1", "{}", "original-1"),
                    dead_letter("dlq-2", "refused", "original-2"),
                ]})
            }
            "ReceiveMessage" => json!({}),
            "SendMessageBatch" => batch_answer(request, |entry| {
                (entry["MessageBody"] == "refused").then_some(("InvalidMessageContents", true))
            }),
            _ => batch_answer(request, |_| None),
        })
        .await;
        let redriven = redrive_queue(&stub.queue(), None, u64::MAX).await.unwrap();
        assert_eq!(redriven.count, 1);
        let error = redriven.into_result().unwrap_err();
        assert_eq!(error.refused, ["dlq-2 (InvalidMessageContents)"]);
        assert_eq!(
            error.to_string(),
            "SQS did not take 1 dead letter back into the source queue; left in the dead-letter queue: dlq-2 (InvalidMessageContents)"
        );

        let sends = stub.calls("SendMessageBatch");
        assert_eq!(sends.len(), 1, "a sender's fault is not retried");
        let sent = &sends[0]["Entries"][0];
        assert_eq!(sent["MessageBody"], "{}");
        let carried = |name: &str| sent["MessageAttributes"][name]["StringValue"].clone();
        assert_eq!(carried(attribute::ORIGINAL_MESSAGE_ID), "original-1");
        assert_eq!(carried(attribute::ORIGINAL_SENT_TIMESTAMP), "1600000000000");
        assert_eq!(
            carried(attribute::ATTRIBUTES_TAG),
            TAG,
            "the tag, unchanged"
        );
        assert_eq!(
            carried(attribute::REASON),
            Value::Null,
            "the reason stays behind"
        );
        assert_eq!(
            sent["MessageGroupId"], "tenant-7",
            "a fair queue's group is kept on a standard queue"
        );
        assert_eq!(
            sent["MessageDeduplicationId"],
            Value::Null,
            "which refuses a deduplication id"
        );
        let deleted: Vec<String> = stub
            .calls("DeleteMessageBatch")
            .iter()
            .flat_map(handles)
            .collect();
        assert_eq!(deleted, ["handle-dlq-1"]);
        let released: Vec<String> = stub
            .calls("ChangeMessageVisibilityBatch")
            .iter()
            .flat_map(handles)
            .collect();
        assert_eq!(released, ["handle-dlq-2"]);
    }
}
