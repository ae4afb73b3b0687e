//! Deleters: `DeleteMessageBatch` for acknowledged messages, after their commit (or dead
//! letter), concurrently with later batches. Entries SQS refuses for a transient reason
//! are tried again by the one retry mechanism; a delete lost for good only means a
//! redelivery, skipped as a duplicate.

use std::sync::Mutex;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::{EntryFailure, Queue, QueueError};
use crate::retry::{Classify, ErrorClass, RetryPolicy, Stage, retry};
use crate::telemetry::events::{DeleteRefused, DeletesGivenUp, MessagesDeleted};

use super::{BatchOutcome, Context, InFlight, Tally};

/// Where a batch's deletes stand between attempts.
#[derive(Debug, Default)]
struct Progress {
    /// Receipt handle and message id (for the log) of each entry still to delete.
    outstanding: Vec<(String, String)>,
    deleted: usize,
    /// Refused for good (a stale receipt handle, say): they will be redelivered.
    refused: usize,
}

/// Deletes `messages`, retrying refused entries; each settles when this returns.
pub(super) async fn delete<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    messages: Vec<InFlight>,
    outcome: &mut BatchOutcome,
) {
    if messages.is_empty() {
        return;
    }
    context
        .heartbeat
        .forget(messages.iter().map(|m| m.message.receipt_handle.as_str()));
    let progress = Mutex::new(Progress {
        outstanding: messages
            .iter()
            .map(|m| (m.message.receipt_handle.clone(), m.message.key.clone()))
            .collect(),
        ..Progress::default()
    });
    let reporter = context.metrics.retry_reporter();
    let attempt = || async {
        let handles: Vec<String> = progress
            .lock()
            .expect("not poisoned")
            .outstanding
            .iter()
            .map(|(handle, _)| handle.clone())
            .collect();
        let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
        let failures = context
            .queue
            .delete(&refs)
            .await
            .map_err(DeleteAttempt::Call)?;
        settle_round(
            context,
            &mut progress.lock().expect("not poisoned"),
            failures,
        )
    };
    let result = retry(RetryPolicy::BRIEF, Stage::Delete, &reporter, attempt).await;
    let progress = progress.into_inner().expect("not poisoned");
    outcome.deleted += progress.deleted;
    outcome.undeleted += progress.refused + progress.outstanding.len();
    if let Err(error) = result {
        context.metrics.emit(DeletesGivenUp {
            count: progress.outstanding.len(),
            error: &error,
        });
    }
    drop(messages);
}

/// Books one delete call: deleted entries leave the outstanding list, entries refused for
/// good too (counted), and transient refusals stay for the next attempt.
fn settle_round<Q, S>(
    context: &Context<Q, S>,
    progress: &mut Progress,
    failures: Vec<EntryFailure>,
) -> Result<(), DeleteAttempt> {
    let attempted = std::mem::take(&mut progress.outstanding);
    let deleted = attempted.len() - failures.len();
    progress.deleted += deleted;
    context.metrics.emit(MessagesDeleted { count: deleted });
    Tally::add(&context.tally.deleted, deleted);
    let mut entries: Vec<Option<(String, String)>> = attempted.into_iter().map(Some).collect();
    let mut codes = Vec::new();
    for failure in &failures {
        let Some((handle, message_id)) = entries.get_mut(failure.index).and_then(Option::take)
        else {
            continue;
        };
        if failure.sender_fault {
            progress.refused += 1;
            context.metrics.emit(DeleteRefused {
                message_id: &message_id,
                code: &failure.code,
            });
        } else {
            codes.push(failure.code.clone());
            progress.outstanding.push((handle, message_id));
        }
    }
    if progress.outstanding.is_empty() {
        Ok(())
    } else {
        Err(DeleteAttempt::Refused {
            count: progress.outstanding.len(),
            codes: codes.join(", "),
        })
    }
}

/// One round of deletes that did not finish.
#[derive(Debug, thiserror::Error)]
enum DeleteAttempt {
    #[error(transparent)]
    Call(QueueError),
    #[error("SQS refused to delete {count} messages for now ({codes})")]
    Refused { count: usize, codes: String },
}

impl Classify for DeleteAttempt {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Call(error) => error.class(),
            Self::Refused { .. } => ErrorClass::Transient,
        }
    }
}
