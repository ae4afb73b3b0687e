//! `sqs2pg dlq inspect`: counts by reason and redacted sample bodies ([`redact`]). Leaves
//! the DLQ as it was.

use std::collections::BTreeMap;

use super::{Scan, plural};
use crate::adapters::sqs::{self, Queue as _, SqsQueue, dead_letter_attributes};
use crate::cli::aws::sqs_client;
use crate::cli::config::DlqInspectArgs;
use crate::domain::dead_letter::{DeadLetterAttributes, RecordedReason};
use crate::domain::redact::redact;

/// `sqs2pg dlq inspect`.
pub async fn inspect(args: DlqInspectArgs) -> anyhow::Result<()> {
    // The current key: the one a redriven message's row would be masked with (see redact).
    let keyring = args.key.keyring()?;
    let masker = keyring.current().1;
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await?;
    // Read before the scan hides anything: on a FIFO DLQ the scan cannot see them all.
    let depth = queue.dead_letter_depth().await?;
    let mut by_reason: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut scan = Scan::new(&queue);
    loop {
        let fresh = scan.next().await?;
        if fresh.is_empty() {
            break;
        }
        for message in fresh {
            let attributes = dead_letter_attributes(&message);
            let entry = by_reason.entry(shown_reason(&attributes)).or_default();
            entry.0 += 1;
            if entry.1.len() < args.samples {
                let body = redact(message.body().unwrap_or_default(), masker);
                // The detail of one of our reasons is built from a typed rejection: no values.
                entry
                    .1
                    .push(match (&attributes.detail, attributes.known_reason()) {
                        (Some(detail), Some(_)) => format!("{body}  [{detail}]"),
                        _ => body.to_string(),
                    });
            }
            if let Some(handle) = message.receipt_handle() {
                scan.leave(handle);
            }
        }
    }
    let seen = scan.seen() as u64;
    scan.release().await?;
    println!(
        "dead-letter queue {}: {}",
        queue.dlq_url(),
        plural(seen, "message")
    );
    for (reason, (count, samples)) in by_reason {
        println!("  {reason}: {count}");
        for sample in samples {
            println!("    {sample}");
        }
    }
    let total = depth.visible + depth.in_flight + depth.delayed;
    if sqs::is_fifo_queue_url(queue.dlq_url()) && seen < total {
        // SQS hands out no more of a FIFO group while some of it is being read, so a scan
        // that leaves the queue as it was sees only the first messages of each group.
        println!(
            "  (a FIFO queue: {seen} of its {total} messages could be read without removing any; the counts above are of those)"
        );
    }
    Ok(())
}

/// How `dlq inspect` names a dead letter's reason. The attribute is printed only when it is
/// one of our codes: anyone who can send to the DLQ can set it, so any other text is data
/// of unknown origin, and so is the detail that travels with it.
fn shown_reason(attributes: &DeadLetterAttributes) -> String {
    match &attributes.reason {
        None => "unknown (moved by SQS redrive)".to_owned(),
        Some(RecordedReason::Known(reason)) => reason.as_str().to_owned(),
        Some(RecordedReason::Unrecognized(_)) => {
            "unrecognized (not one of our codes; withheld)".to_owned()
        }
    }
}
