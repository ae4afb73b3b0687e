//! `sqs2pg dlq inspect`: counts by reason and redacted sample bodies ([`redact`]). Leaves
//! the DLQ as it was.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Scan, plural};
use crate::adapters::sqs::{
    self, Queue as _, QueueDepth, SqsQueue, dead_letter_attributes, string_attributes,
};
use crate::cli::aws::sqs_client;
use crate::cli::config::{DlqInspectArgs, OutputFormat};
use crate::domain::dead_letter::{CarriedIdentity, DeadLetterAttributes, RecordedReason};
use crate::domain::redact::redact;

/// `sqs2pg dlq inspect`.
pub async fn inspect(args: DlqInspectArgs) -> anyhow::Result<()> {
    // The current key: the one a redriven message's row would be masked with (see redact).
    let keyring = args.key.keyring()?;
    let masker = keyring.current().1;
    let stream = crate::cli::streams::choose(&args.streams, &args.queue, &args.stream)?;
    let queue = SqsQueue::connect(
        sqs_client().await?,
        stream.stream.queue_url.clone(),
        stream.dlq_url.clone(),
    )
    .await?;
    // Read before the scan hides anything: on a FIFO DLQ the scan cannot see them all.
    let depth = queue.dead_letter_depth().await?;
    let mut by_reason: BTreeMap<&'static str, ReasonShape> = BTreeMap::new();
    let mut tags = Tags::default();
    let mut scan = Scan::new(&queue);
    loop {
        let fresh = scan.next().await?;
        if fresh.is_empty() {
            break;
        }
        for message in fresh {
            let attributes = dead_letter_attributes(&message);
            tags.count(&message, &attributes, &keyring);
            let entry = by_reason.entry(reason_key(&attributes)).or_default();
            entry.count += 1;
            if entry.samples.len() < args.samples {
                entry.samples.push(Sample {
                    body: redact(message.body().unwrap_or_default(), masker).to_string(),
                    // The detail of one of our reasons is built from a typed rejection: no
                    // values. Any other detail is withheld with its reason.
                    detail: attributes.known_reason().and(attributes.detail.clone()),
                });
            }
            if let Some(handle) = message.receipt_handle() {
                scan.leave(handle);
            }
        }
    }
    let seen = scan.seen() as u64;
    scan.release().await?;
    let total = depth.visible + depth.in_flight + depth.delayed;
    let inspected = Inspected {
        dlq_url: queue.dlq_url(),
        depth: depth.into(),
        read: seen,
        // SQS hands out no more of a FIFO group while some of it is being read, so a scan
        // that leaves the queue as it was sees only the first messages of each group.
        complete: !(sqs::is_fifo_queue_url(queue.dlq_url()) && seen < total),
        tags,
        by_reason,
    };
    match args.output {
        OutputFormat::Text => print!("{}", inspected.text(total)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&inspected).expect("an inspection serializes")
        ),
    }
    Ok(())
}

/// `dlq inspect --output json` prints this shape; fields are only ever added.
#[derive(Debug, Serialize)]
struct Inspected<'a> {
    dlq_url: &'a str,
    /// As SQS reported it before the scan.
    depth: Depth,
    /// Dead letters the scan read (and left in place).
    read: u64,
    /// Whether the scan read them all: on a FIFO DLQ it may not, and the counts are of
    /// those it read.
    complete: bool,
    /// How many of them carry a tag that verifies with the keyring.
    tags: Tags,
    /// By [`reason_key`].
    by_reason: BTreeMap<&'static str, ReasonShape>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Depth {
    visible: u64,
    in_flight: u64,
    delayed: u64,
}

impl From<QueueDepth> for Depth {
    fn from(depth: QueueDepth) -> Self {
        Self {
            visible: depth.visible,
            in_flight: depth.in_flight,
            delayed: depth.delayed,
        }
    }
}

/// The dead letters read, by what their [`attribute tag`](crate::domain::dead_letter::AttributesTag)
/// says: what a redrive of each would do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Tags {
    /// Written by sqs2pg under a key of the ring: redriven, it keeps its id and date.
    verified: u64,
    /// A tag that does not verify (forged, or under a key no longer in the ring): redriven,
    /// it is keyed and dated as a new message, and counted as untrusted.
    failed: u64,
    /// No tag (moved by SQS itself, or dead-lettered before tags): redriven, it is a new
    /// message.
    absent: u64,
}

impl Tags {
    fn count(
        &mut self,
        message: &aws_sdk_sqs::types::Message,
        attributes: &DeadLetterAttributes,
        keyring: &crate::domain::keyring::Keyring,
    ) {
        let carried = CarriedIdentity::of(
            string_attributes(message),
            message.body().unwrap_or_default(),
            Some(keyring),
        );
        match (&attributes.tag, carried) {
            (None, _) => self.absent += 1,
            (Some(_), CarriedIdentity::Verified { .. }) => self.verified += 1,
            (Some(_), _) => self.failed += 1,
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct ReasonShape {
    count: u64,
    samples: Vec<Sample>,
}

/// A dead letter's body as [`redact`] shows it, and the detail of one of our reasons.
#[derive(Debug, Serialize)]
struct Sample {
    body: String,
    detail: Option<String>,
}

impl Inspected<'_> {
    /// The text for people: a line for the queue, then each reason with its samples.
    fn text(&self, total: u64) -> String {
        let mut text = format!(
            "dead-letter queue {}: {}\n",
            self.dlq_url,
            plural(self.read, "message")
        );
        let Tags {
            verified,
            failed,
            absent,
        } = self.tags;
        text += &format!(
            "  tags: {verified} verified, {failed} not verifying, {absent} absent (only a verified one keeps its id on redrive)\n"
        );
        for (reason, shape) in &self.by_reason {
            text += &format!("  {}: {}\n", reason_label(reason), shape.count);
            for sample in &shape.samples {
                text += &match &sample.detail {
                    Some(detail) => format!("    {}  [{detail}]\n", sample.body),
                    None => format!("    {}\n", sample.body),
                };
            }
        }
        if !self.complete {
            text += &format!(
                "  (a FIFO queue: {} of its {total} messages could be read without removing any; the counts above are of those)\n",
                self.read
            );
        }
        text
    }
}

/// A dead letter's reason, as a stable key: one of our codes; `unknown` when it has none
/// (moved by SQS's own redrive after too many receives); `unrecognized` when the attribute is
/// not one of our codes. Anyone who can send to the DLQ can set it, so any other text is
/// data of unknown origin, and so is the detail that travels with it: both are withheld.
fn reason_key(attributes: &DeadLetterAttributes) -> &'static str {
    match &attributes.reason {
        None => UNKNOWN,
        Some(RecordedReason::Known(reason)) => reason.as_str(),
        Some(RecordedReason::Unrecognized(_)) => UNRECOGNIZED,
    }
}

const UNKNOWN: &str = "unknown";
const UNRECOGNIZED: &str = "unrecognized";

/// How the text names a reason key.
fn reason_label(key: &str) -> String {
    match key {
        UNKNOWN => "unknown (moved by SQS redrive)".to_owned(),
        UNRECOGNIZED => "unrecognized (not one of our codes; withheld)".to_owned(),
        code => code.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_show_the_same_counts_and_samples() {
        let mut by_reason = BTreeMap::new();
        by_reason.insert(
            "invalid_json",
            ReasonShape {
                count: 2,
                samples: vec![Sample {
                    body: "<9 bytes withheld: not JSON, so no part of it can be shown safely>"
                        .to_owned(),
                    detail: Some("expected value at line 1 column 1".to_owned()),
                }],
            },
        );
        by_reason.insert(
            UNKNOWN,
            ReasonShape {
                count: 1,
                samples: vec![],
            },
        );
        let inspected = Inspected {
            dlq_url: "http://h/000000000000/q-dlq",
            depth: Depth {
                visible: 3,
                in_flight: 0,
                delayed: 0,
            },
            read: 3,
            complete: true,
            tags: Tags {
                verified: 2,
                failed: 0,
                absent: 1,
            },
            by_reason,
        };
        assert_eq!(
            inspected.text(3),
            "dead-letter queue http://h/000000000000/q-dlq: 3 messages\n  tags: 2 verified, 0 not verifying, 1 absent (only a verified one keeps its id on redrive)\n  invalid_json: 2\n    <9 bytes withheld: not JSON, so no part of it can be shown safely>  [expected value at line 1 column 1]\n  unknown (moved by SQS redrive): 1\n"
        );
        let json = serde_json::to_value(&inspected).unwrap();
        assert_eq!(json["by_reason"]["invalid_json"]["count"], 2);
        assert_eq!(json["by_reason"]["unknown"]["count"], 1);
        assert_eq!(json["depth"]["visible"], 3);
        assert_eq!(json["complete"], true);
        assert_eq!(
            json["tags"],
            serde_json::json!({"verified": 2, "failed": 0, "absent": 1})
        );
        assert_eq!(
            json["by_reason"]["invalid_json"]["samples"][0]["detail"],
            "expected value at line 1 column 1"
        );
    }
}
