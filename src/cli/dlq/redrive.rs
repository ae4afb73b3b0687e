//! `sqs2pg dlq redrive`: dead letters back to the source queue, each with its original id,
//! timestamp and their tag, so a message that was already ingested is still deduplicated.
//! Sent first, deleted from the DLQ after: a crash in between, or a delete that fails, only
//! makes a duplicate in the source, which the consumer skips by the same tagged id.

use std::fmt;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde::Serialize;

use super::{Scan, plural};
use crate::adapters::sqs::{OutgoingMessage, QueueError, SqsQueue, dead_letter_attributes};
use crate::cli::aws::sqs_client;
use crate::cli::config::{DlqRedriveArgs, OutputFormat};
use crate::domain::dead_letter::{DeadLetterAttributes, DeadLetterReason};
use crate::error_chain::{ErrorChain, one_line};
use crate::retry::RetryPolicy;
use crate::telemetry::events::log_retry;

/// A redrive that did not move everything it read: some dead letters the source queue
/// would not take (they stay in the DLQ), some it took but the DLQ would not delete (the
/// next redrive sends them again), or a call that kept failing stopped it.
#[derive(Debug, thiserror::Error)]
#[error(
    "dlq redrive is incomplete: {}{}",
    problems(.not_taken.len(), .not_deleted.len()),
    .stopped.as_ref().map(|error| format!("; stopped: {}", one_line(error))).unwrap_or_default()
)]
pub struct RedriveIncomplete {
    /// Dead letters the source queue would not take, even after retries: left in the DLQ.
    pub not_taken: Vec<Unmoved>,
    /// Dead letters sent back whose delete from the DLQ failed: still in the DLQ.
    pub not_deleted: Vec<Unmoved>,
    /// Why the redrive stopped early, when a whole call kept failing.
    pub stopped: Option<QueueError>,
}

fn problems(not_taken: usize, not_deleted: usize) -> String {
    let mut parts = Vec::new();
    if not_taken > 0 {
        parts.push(format!(
            "{} not taken back into the source queue (left in the dead-letter queue)",
            plural(not_taken as u64, "dead letter")
        ));
    }
    if not_deleted > 0 {
        parts.push(format!(
            "{} sent back but not deleted from the dead-letter queue (the next redrive sends them again)",
            plural(not_deleted as u64, "dead letter")
        ));
    }
    match parts.is_empty() {
        true => "a call kept failing".to_owned(),
        false => parts.join(", "),
    }
}

/// A dead letter that did not move, by its id in the DLQ, with SQS's code (or the
/// operation, when the whole call failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmoved {
    pub dlq_message_id: String,
    pub code: String,
}

impl fmt::Display for Unmoved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.dlq_message_id, self.code)
    }
}

/// `sqs2pg dlq redrive`. Exits non-zero, naming them, if some dead letters did not move.
pub async fn redrive(args: DlqRedriveArgs) -> anyhow::Result<()> {
    let stream = crate::cli::streams::choose(&args.streams, &args.queue, &args.stream)?;
    let queue = SqsQueue::connect(
        sqs_client().await?,
        stream.stream.queue_url.clone(),
        stream.dlq_url.clone(),
    )
    .await?;
    let redriven = redrive_queue(&queue, args.reason, args.limit.unwrap_or(u64::MAX)).await?;
    match args.output {
        OutputFormat::Text => print!("{}", redriven.text(&queue)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&redriven.shape(&queue)).expect("a redrive serializes")
        ),
    }
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

/// `dlq redrive --output json` prints this shape; fields are only ever added.
#[derive(Debug, Serialize)]
struct Shape<'a> {
    /// Sent back and deleted from the DLQ.
    redriven: u64,
    dlq_url: &'a str,
    queue_url: &'a str,
    not_taken: &'a [Unmoved],
    not_deleted: &'a [Unmoved],
    /// Why the redrive stopped early, on one line; `null` when it did not.
    stopped: Option<String>,
    /// Nothing left undone: the exit code is 0.
    complete: bool,
}

/// How many unmoved dead letters the text names; `--output json` lists them all.
const NAMED: usize = 10;

impl Redriven {
    fn is_complete(&self) -> bool {
        let incomplete = &self.incomplete;
        incomplete.not_taken.is_empty()
            && incomplete.not_deleted.is_empty()
            && incomplete.stopped.is_none()
    }

    fn into_result(self) -> Result<(), RedriveIncomplete> {
        match self.is_complete() {
            true => Ok(()),
            false => Err(self.incomplete),
        }
    }

    fn shape<'a>(&'a self, queue: &'a SqsQueue) -> Shape<'a> {
        Shape {
            redriven: self.count,
            dlq_url: queue.dlq_url(),
            queue_url: queue.queue_url(),
            not_taken: &self.incomplete.not_taken,
            not_deleted: &self.incomplete.not_deleted,
            stopped: self
                .incomplete
                .stopped
                .as_ref()
                .map(|error| one_line(error)),
            complete: self.is_complete(),
        }
    }

    /// The text for people: the count, then each kind of dead letter that did not move.
    fn text(&self, queue: &SqsQueue) -> String {
        let mut text = format!(
            "redriven: {} from {} to {}\n",
            plural(self.count, "message"),
            queue.dlq_url(),
            queue.queue_url()
        );
        let named = |unmoved: &[Unmoved]| {
            let mut names: Vec<String> =
                unmoved.iter().take(NAMED).map(|u| u.to_string()).collect();
            if unmoved.len() > NAMED {
                names.push(format!("and {} more", unmoved.len() - NAMED));
            }
            names.join(", ")
        };
        let incomplete = &self.incomplete;
        if !incomplete.not_taken.is_empty() {
            text += &format!(
                "not taken back, left in the dead-letter queue: {}: {}\n",
                plural(incomplete.not_taken.len() as u64, "message"),
                named(&incomplete.not_taken)
            );
        }
        if !incomplete.not_deleted.is_empty() {
            text += &format!(
                "sent back but not deleted from the dead-letter queue: {}: {}; the next redrive sends them again, and their tags key them to the same rows\n",
                plural(incomplete.not_deleted.len() as u64, "message"),
                named(&incomplete.not_deleted)
            );
        }
        text
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
        not_taken: Vec::new(),
        not_deleted: Vec::new(),
        stopped: None,
    };
    let mut scan = Scan::new(queue);
    while count < limit && incomplete.stopped.is_none() {
        let fresh = match scan.next().await {
            Ok(fresh) => fresh,
            // Before anything moved, the error alone; after, what moved is told too.
            Err(error) if count == 0 && incomplete.not_deleted.is_empty() => return Err(error),
            Err(error) => {
                incomplete.stopped = Some(error);
                break;
            }
        };
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
        let mut refusals: Vec<Option<String>> = vec![None; batch.len()];
        if let Err(not_taken) = queue
            .send_until_taken(&outgoing, RetryPolicy::BRIEF, &log_retry)
            .await
        {
            tracing::warn!(
                message = "The source queue did not take some dead letters; they stay in the DLQ.",
                error = %ErrorChain(&not_taken),
            );
            // A whole call that kept failing stops the redrive: the rest stay untouched.
            incomplete.stopped = not_taken.call;
            for failure in not_taken.refused {
                refusals[failure.index] = Some(failure.code);
            }
        }
        let mut sent: Vec<(String, String)> = Vec::new();
        for ((_, handle, dlq_message_id), refusal) in batch.into_iter().zip(refusals) {
            match refusal {
                None => sent.push((handle, dlq_message_id)),
                Some(code) => {
                    incomplete.not_taken.push(Unmoved {
                        dlq_message_id,
                        code,
                    });
                    scan.leave(handle);
                }
            }
        }
        let handles: Vec<&str> = sent.iter().map(|(handle, _)| handle.as_str()).collect();
        // A delete that fails leaves a dead letter that is also in the source queue now:
        // never counted as redriven, named, and made visible again with the rest.
        let failed: Vec<(usize, String)> = match queue.delete_dead_letters(&handles).await {
            Ok(failures) => failures
                .into_iter()
                .map(|failure| (failure.index, failure.code))
                .collect(),
            Err(error) => {
                tracing::warn!(
                    message = "Could not delete redriven messages from the DLQ; the next redrive sends them again.",
                    error = %ErrorChain(&error),
                );
                let failed = (0..sent.len())
                    .map(|index| (index, error.operation.to_owned()))
                    .collect();
                incomplete.stopped.get_or_insert(error);
                failed
            }
        };
        count += (sent.len() - failed.len()) as u64;
        for (index, code) in failed {
            let (handle, dlq_message_id) = sent[index].clone();
            incomplete.not_deleted.push(Unmoved {
                dlq_message_id,
                code,
            });
            scan.leave(handle);
        }
    }
    if let Err(error) = scan.release().await {
        // They come back by themselves when the scan's visibility lapses.
        tracing::warn!(
            message = "Could not make the dead letters left in the DLQ visible again; they will be within a minute.",
            error = %ErrorChain(&error),
        );
        incomplete.stopped.get_or_insert(error);
    }
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
    use std::sync::atomic::{AtomicBool, Ordering};

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

    /// The receipt handles of every `operation` call the stub received, in order.
    fn handles(stub: &StubSqs, operation: &str) -> Vec<String> {
        stub.calls(operation)
            .iter()
            .flat_map(|request| {
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
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A stub DLQ that hands out `letters` once, and answers the other calls with `answer`
    /// (or success).
    async fn stub_with(
        letters: Vec<Value>,
        answer: impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static,
    ) -> StubSqs {
        let received = AtomicBool::new(false);
        StubSqs::start(move |operation, request| {
            if let Some(answer) = answer(operation, request) {
                return answer;
            }
            match operation {
                "ReceiveMessage" if !received.swap(true, Ordering::SeqCst) => {
                    json!({ "Messages": letters })
                }
                "ReceiveMessage" => json!({}),
                _ => batch_answer(request, |_| None),
            }
        })
        .await
    }

    /// An answer to `operation` that refuses the entries `refuse` gives a code for.
    fn refusing(
        operation: &'static str,
        refuse: impl Fn(&Value) -> Option<(&'static str, bool)> + Send + Sync + 'static,
    ) -> impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static {
        move |called, request| (called == operation).then(|| batch_answer(request, &refuse))
    }

    #[tokio::test]
    async fn dead_letters_sqs_will_not_take_back_are_named_and_stay_in_the_dlq() {
        let stub = stub_with(
            vec![
                dead_letter("dlq-1", "{}", "original-1"),
                dead_letter("dlq-2", "refused", "original-2"),
            ],
            refusing("SendMessageBatch", |entry| {
                (entry["MessageBody"] == "refused").then_some(("InvalidMessageContents", true))
            }),
        )
        .await;
        let redriven = redrive_queue(&stub.queue(), None, u64::MAX).await.unwrap();
        assert_eq!(redriven.count, 1);
        let error = redriven.into_result().unwrap_err();
        assert_eq!(
            error.not_taken,
            [Unmoved {
                dlq_message_id: "dlq-2".to_owned(),
                code: "InvalidMessageContents".to_owned()
            }]
        );
        assert_eq!(
            error.to_string(),
            "dlq redrive is incomplete: 1 dead letter not taken back into the source queue (left in the dead-letter queue)"
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
        let deleted = handles(&stub, "DeleteMessageBatch");
        assert_eq!(deleted, ["handle-dlq-1"]);
        let released = handles(&stub, "ChangeMessageVisibilityBatch");
        assert_eq!(released, ["handle-dlq-2"]);
    }

    #[tokio::test]
    async fn an_untagged_dead_letter_goes_back_as_a_fresh_message() {
        let mut untagged = dead_letter("dlq-1", "{}", "original-1");
        untagged["MessageAttributes"]
            .as_object_mut()
            .unwrap()
            .remove(attribute::ATTRIBUTES_TAG);
        let stub = stub_with(vec![untagged], |_, _| None).await;
        let redriven = redrive_queue(&stub.queue(), None, u64::MAX).await.unwrap();
        assert_eq!(redriven.count, 1);
        let sends = stub.calls("SendMessageBatch");
        assert_eq!(
            sends[0]["Entries"][0]["MessageAttributes"],
            Value::Null,
            "no id or timestamp the consumer would not believe: {sends:?}"
        );
    }

    #[tokio::test]
    async fn a_dead_letter_sent_back_but_not_deleted_is_named_and_never_counted() {
        let stub = stub_with(
            vec![
                dead_letter("dlq-1", "{}", "original-1"),
                dead_letter("dlq-2", "{}", "original-2"),
                dead_letter("dlq-3", "{}", "original-3"),
            ],
            refusing("DeleteMessageBatch", |entry| {
                (entry["ReceiptHandle"] == "handle-dlq-2").then_some(("InternalError", false))
            }),
        )
        .await;
        let queue = stub.queue();
        let redriven = redrive_queue(&queue, None, u64::MAX).await.unwrap();
        assert_eq!(redriven.count, 2, "only what was deleted counts");
        let text = redriven.text(&queue);
        assert!(
            text.contains("sent back but not deleted from the dead-letter queue: 1 message: dlq-2 (InternalError); the next redrive sends them again"),
            "{text}"
        );
        let json = serde_json::to_value(redriven.shape(&queue)).unwrap();
        assert_eq!(json["redriven"], 2);
        assert_eq!(
            json["not_deleted"],
            json!([{"dlq_message_id": "dlq-2", "code": "InternalError"}])
        );
        assert_eq!(json["not_taken"], json!([]));
        assert_eq!(json["complete"], false);
        let error = redriven.into_result().unwrap_err();
        assert_eq!(
            error.to_string(),
            "dlq redrive is incomplete: 1 dead letter sent back but not deleted from the dead-letter queue (the next redrive sends them again)"
        );
        // It is made visible again, so the DLQ shows what is left at once.
        let released = handles(&stub, "ChangeMessageVisibilityBatch");
        assert_eq!(released, ["handle-dlq-2"]);
    }

    #[tokio::test]
    async fn a_failed_delete_call_stops_the_redrive_and_names_what_it_held() {
        let stub = stub_with(
            vec![
                dead_letter("dlq-1", "{}", "original-1"),
                dead_letter("dlq-2", "{}", "original-2"),
            ],
            |operation, _| {
                (operation == "DeleteMessageBatch").then(|| {
                    json!({
                        "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                        "message": "The specified queue does not exist.",
                    })
                })
            },
        )
        .await;
        let queue = stub.queue();
        let redriven = redrive_queue(&queue, None, u64::MAX).await.unwrap();
        assert_eq!(redriven.count, 0);
        let json = serde_json::to_value(redriven.shape(&queue)).unwrap();
        assert_eq!(
            json["not_deleted"],
            json!([
                {"dlq_message_id": "dlq-1", "code": "DeleteMessageBatch"},
                {"dlq_message_id": "dlq-2", "code": "DeleteMessageBatch"},
            ])
        );
        assert!(
            json["stopped"]
                .as_str()
                .is_some_and(|stopped| stopped.contains("QueueDoesNotExist")),
            "{json}"
        );
        assert!(redriven.into_result().is_err());
    }
}
