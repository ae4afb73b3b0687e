//! Dead-lettering: poison goes to the dead-letter queue once, with its reason. Copies
//! already recorded in `dead_letters` (a lost delete brought them back) are only
//! acknowledged; the rest are sent, then recorded.

use crate::adapters::postgres::{Sink, SinkFailure};
use crate::adapters::sqs::{Queue, QueueError, split_by_failures};
use crate::domain::dead_letter::DeadLetter;
use crate::retry::{Classify, ErrorClass, Stage, retry};
use crate::telemetry::events::{
    CallFailed, DeadLetterRedelivered, DeadLetterRefused, DeadLettered,
};

use super::{BatchOutcome, Context, Tally};

/// Sends `poison` (batch index, letter) to the dead-letter queue; returns the indexes that
/// may be deleted: those sent (or found sent before).
pub(super) async fn dead_letter<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    poison: Vec<(usize, DeadLetter)>,
    outcome: &mut BatchOutcome,
) -> Vec<usize> {
    if poison.is_empty() {
        return Vec::new();
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
            return Vec::new();
        }
    };
    let (done, to_send): (Vec<_>, Vec<_>) = poison
        .into_iter()
        .partition(|(_, letter)| already.contains(&letter.sqs_message_id));
    let mut acknowledged: Vec<usize> = done.iter().map(|(index, _)| *index).collect();
    if !done.is_empty() {
        context
            .metrics
            .emit(DeadLetterRedelivered { count: done.len() });
        Tally::add(&context.tally.duplicates, done.len());
        outcome.duplicates += done.len() as u64;
    }
    if to_send.is_empty() {
        return acknowledged;
    }
    for failure in &failures {
        context.metrics.emit(DeadLetterRefused {
            message_id: &letters[failure.index].message_id,
            code: &failure.code,
        });
    }
    let (sent, _) = split_by_failures(to_send, &failures);
    let sent_letters: Vec<DeadLetter> = sent.iter().map(|(_, letter)| letter.clone()).collect();
    if let Err(error) = retry(context.settings.retry, Stage::DeadLetter, &reporter, || {
        context
            .sink
            .record_dead_letters(&sent_letters, &context.settings.source_queue)
    })
    .await
    {
        // The letters are in the DLQ; acknowledging them is still right. Only a later lost
        // delete could now duplicate them.
        context.metrics.emit(CallFailed {
            stage: Stage::DeadLetter,
            class: error.class(),
            error: &error.safe_detail(),
            consequence: "Could not record dead letters; they are in the DLQ regardless.",
        });
    }
    for (index, letter) in sent {
        context.metrics.emit(DeadLettered {
            message_id: &letter.message_id,
            reason: letter.reason,
            detail: &letter.detail,
        });
        Tally::add(&context.tally.dead_lettered, 1u64);
        outcome.dead_lettered.push(letter.reason);
        acknowledged.push(index);
    }
    acknowledged
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
