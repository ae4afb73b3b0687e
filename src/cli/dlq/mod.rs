//! `sqs2pg dlq inspect` and `sqs2pg dlq redrive`, and the scan of the dead-letter queue
//! they share: each reads every dead letter once, hiding what it has read, and hands back
//! whatever it leaves.

mod inspect;
mod redrive;

pub use inspect::inspect;
pub use redrive::{RedriveIncomplete, redrive};

use super::plural;
use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::Message;

use crate::adapters::sqs::{MAX_BATCH, QueueError, SqsQueue};

/// How long a scan hides the dead letters it has read, so that it sees each once; whatever
/// it leaves is released at the end.
const SCAN_VISIBILITY: Duration = Duration::from_secs(60);

/// The dead letters of one scan: which it has seen, and which it read but leaves in place.
struct Scan<'a> {
    queue: &'a SqsQueue,
    seen: HashSet<String>,
    left: Vec<String>,
}

impl<'a> Scan<'a> {
    fn new(queue: &'a SqsQueue) -> Self {
        Self {
            queue,
            seen: HashSet::new(),
            left: Vec::new(),
        }
    }

    /// The next dead letters this scan has not seen yet; empty once it has seen them all.
    async fn next(&mut self) -> Result<Vec<Message>, QueueError> {
        let messages = self
            .queue
            .receive_dead_letters(MAX_BATCH, SCAN_VISIBILITY)
            .await?;
        Ok(messages
            .into_iter()
            .filter(|message| {
                self.seen
                    .insert(message.message_id().unwrap_or_default().to_owned())
            })
            .collect())
    }

    /// Marks a dead letter read to be left in the DLQ, visible again when the scan ends.
    fn leave(&mut self, receipt_handle: impl Into<String>) {
        self.left.push(receipt_handle.into());
    }

    /// How many dead letters the scan has seen.
    fn seen(&self) -> usize {
        self.seen.len()
    }

    /// Makes every dead letter the scan left visible again at once.
    async fn release(self) -> Result<(), QueueError> {
        for chunk in self.left.chunks(MAX_BATCH) {
            let handles: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.queue
                .change_dead_letter_visibility(&handles, Duration::ZERO)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_pluralized() {
        assert_eq!(plural(0, "message"), "0 messages");
        assert_eq!(plural(1, "message"), "1 message");
        assert_eq!(plural(2, "message"), "2 messages");
    }
}
