//! Dead-lettering: poison goes to the dead-letter queue once, with its reason. Copies
//! already recorded in `dead_letters` (a lost delete brought them back) are only
//! acknowledged; the rest are sent ([`send`], under the batch's deadline), then recorded
//! ([`record`], after it: a copy that is in the DLQ is acknowledged whether or not its
//! record lands, so a record that keeps failing never makes the batch come back and be
//! sent again).

use std::time::Duration;

use crate::adapters::postgres::{Sink, SinkFailure};
use crate::adapters::sqs::{Queue, QueueError, split_by_failures};
use crate::domain::dead_letter::DeadLetter;
use crate::retry::{Classify, ErrorClass, RetryPolicy, Stage, retry};
use crate::telemetry::events::{
    CallFailed, DeadLetterRedelivered, DeadLetterRefused, DeadLettered,
};

use super::{BatchOutcome, Context, InFlight, Tally};

/// How long the messages of sent dead letters stay hidden while their record is written:
/// the record's retries ([`RetryPolicy::BRIEF`]) and a margin.
const RECORD_GRACE: Duration = Duration::from_secs(15);
/// The record's own deadline ends this long before the grace does.
const RECORD_MARGIN: Duration = Duration::from_secs(3);

/// What [`send`] did.
pub(super) struct Sent {
    /// Batch indexes that may be deleted: sent now, or found sent before.
    pub acknowledged: Vec<usize>,
    /// The letters sent now, for [`record`].
    pub letters: Vec<DeadLetter>,
}

/// Sends `poison` (batch index, letter) to the dead-letter queue, unless the record says a
/// copy was sent before.
pub(super) async fn send<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    poison: Vec<(usize, DeadLetter)>,
    outcome: &mut BatchOutcome,
) -> Sent {
    let mut sent = Sent {
        acknowledged: Vec::new(),
        letters: Vec::new(),
    };
    if poison.is_empty() {
        return sent;
    }
    let copies: Vec<&str> = poison
        .iter()
        .map(|(_, letter)| letter.sqs_message_id.as_str())
        .collect();
    let reporter = context.metrics.retry_reporter();
    // The record is read again before every attempt to send, not once before them all:
    // while sends keep failing (SQS unreachable, so the heartbeat fails too), these
    // messages can come back to another instance and be dead-lettered there meanwhile.
    let attempt = || async {
        let already = context
            .sink
            .dead_lettered(&copies)
            .await
            .map_err(DeadLetterAttempt::Check)?;
        let letters: Vec<DeadLetter> = poison
            .iter()
            .filter(|(_, letter)| !already.contains(&letter.sqs_message_id))
            .map(|(_, letter)| letter.clone())
            .collect();
        let failures = if letters.is_empty() {
            Vec::new()
        } else {
            context
                .queue
                .dead_letter(&letters)
                .await
                .map_err(DeadLetterAttempt::Send)?
        };
        Ok::<_, DeadLetterAttempt<S::Error>>((already, letters, failures))
    };
    let (already, letters, failures) = match retry(
        context.settings.retry,
        Stage::DeadLetter,
        &reporter,
        attempt,
    )
    .await
    {
        Ok(attempted) => attempted,
        Err(error) => {
            context.metrics.emit(CallFailed {
                stage: Stage::DeadLetter,
                class: error.class(),
                error: &error,
                consequence: "Could not dead-letter the poison messages; they will come back.",
            });
            return sent;
        }
    };
    let (done, to_send): (Vec<_>, Vec<_>) = poison
        .into_iter()
        .partition(|(_, letter)| already.contains(&letter.sqs_message_id));
    sent.acknowledged = done.iter().map(|(index, _)| *index).collect();
    if !done.is_empty() {
        context
            .metrics
            .emit(DeadLetterRedelivered { count: done.len() });
        Tally::add(&context.tally.duplicates, done.len());
        outcome.duplicates += done.len() as u64;
    }
    for failure in &failures {
        context.metrics.emit(DeadLetterRefused {
            message_id: &letters[failure.index].message_id,
            code: &failure.code,
        });
    }
    let (went, _) = split_by_failures(to_send, &failures);
    for (index, letter) in went {
        context.metrics.emit(DeadLettered {
            message_id: &letter.message_id,
            reason: letter.reason,
            detail: &letter.detail,
        });
        Tally::add(&context.tally.dead_lettered, 1u64);
        outcome.dead_lettered.push(letter.reason);
        sent.acknowledged.push(index);
        sent.letters.push(letter);
    }
    sent
}

/// Records that `letters` (of `batch`) are in the dead-letter queue, for a few seconds at
/// most and whatever the batch's deadline: their messages stay hidden meanwhile, and are
/// deleted afterwards even if the record failed (only a later lost delete could then bring
/// a second copy).
pub(super) async fn record<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    batch: &[InFlight],
    letters: &[DeadLetter],
) {
    if letters.is_empty() {
        return;
    }
    let copies: std::collections::HashSet<&str> =
        letters.iter().map(|l| l.sqs_message_id.as_str()).collect();
    context.heartbeat.renew(
        batch
            .iter()
            .filter(|m| copies.contains(m.message.sqs_message_id.as_str()))
            .map(|m| m.message.receipt_handle.as_str()),
        tokio::time::Instant::now() + RECORD_GRACE,
    );
    let reporter = context.metrics.retry_reporter();
    let recorded = tokio::time::timeout(
        RECORD_GRACE - RECORD_MARGIN,
        retry(RetryPolicy::BRIEF, Stage::DeadLetter, &reporter, || {
            context
                .sink
                .record_dead_letters(letters, &context.settings.source_queue)
        }),
    )
    .await;
    let failure = match recorded {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some((error.class(), error.safe_detail())),
        Err(_) => Some((
            ErrorClass::Transient,
            format!("no record within {:?}", RECORD_GRACE - RECORD_MARGIN),
        )),
    };
    if let Some((class, error)) = failure {
        context.metrics.emit(CallFailed {
            stage: Stage::DeadLetter,
            class,
            error: &error,
            consequence: "Could not record dead letters; they are in the DLQ regardless, and their messages are deleted.",
        });
    }
}

/// One attempt to dead-letter a batch's poison: read the record, then send what it lacks.
#[derive(Debug, thiserror::Error)]
enum DeadLetterAttempt<E> {
    #[error("could not check the dead-letter record: {0}")]
    Check(E),
    #[error("could not send to the dead-letter queue: {0}")]
    Send(QueueError),
}

impl<E: SinkFailure> Classify for DeadLetterAttempt<E> {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Check(error) => error.class(),
            Self::Send(error) => error.class(),
        }
    }
}
