//! Writers: one transaction per batch, the idempotent insert, and a batch the database
//! refuses for a permanent reason split in halves until the guilty rows stand alone (the
//! rest commit). Then the batch's poison is dead-lettered, the writer's connection is free
//! for the next batch, and the deletes go on concurrently with it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::adapters::postgres::{InsertOutcome, Sink, SinkFailure};
use crate::adapters::sqs::Queue;
use crate::domain::dead_letter::DeadLetterReason;
use crate::domain::event::LoginRow;
use crate::retry::{Classify, ErrorClass, Stage, retry};
use crate::telemetry::events::{
    BatchAbandoned, BatchClosed, BatchCommitted, BatchSplit, RowRefused,
};

use super::{BatchOutcome, Context, InFlight, Tally, Work, dead_letter, delete, heartbeat};
use super::{probe, receive};

/// Writes one batch, dead-letters its poison, frees the writer, then deletes what was
/// acknowledged. Abandons the batch (releasing its messages) if its deadline passes first.
pub(super) async fn write_and_delete<Q: Queue, S: Sink>(
    context: &Arc<Context<Q, S>>,
    batch: Vec<InFlight>,
    writer: OwnedSemaphorePermit,
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    if batch.is_empty() {
        return outcome;
    }
    let count = batch.len();
    context.metrics.emit(BatchClosed { messages: count });
    let deadline = batch
        .iter()
        .map(|message| message.deadline)
        .min()
        .expect("the batch is not empty");

    let settled =
        tokio::time::timeout_at(deadline, acknowledge(context, &batch, &mut outcome)).await;
    drop(writer);
    match settled {
        Ok(acknowledged) => {
            let (acknowledged, left): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .enumerate()
                .partition(|(index, _)| acknowledged.contains(index));
            // Poison that could not be dead-lettered comes back after its timeout.
            let left: Vec<InFlight> = left.into_iter().map(|(_, message)| message).collect();
            context
                .heartbeat
                .forget(left.iter().map(|m| m.message.receipt_handle.as_str()));
            drop(left);
            let acknowledged = acknowledged
                .into_iter()
                .map(|(_, message)| message)
                .collect();
            delete::delete(context, acknowledged, &mut outcome).await;
        }
        Err(_) => {
            // Nothing is deleted: whatever did commit comes back as a duplicate.
            context.metrics.emit(BatchAbandoned {
                messages: count,
                timeout: context.settings.batch_timeout,
            });
            outcome.abandoned = count;
            heartbeat::release(context, batch, "of an abandoned batch").await;
            if context.database.close() {
                let watched = Arc::clone(context);
                context.background.spawn(async move {
                    probe::reopen_when_database_answers(&watched).await;
                });
            }
        }
    }
    context.batch_done();
    outcome
}

/// Commits the rows and dead-letters the poison; returns the indexes that may be deleted.
async fn acknowledge<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    batch: &[InFlight],
    outcome: &mut BatchOutcome,
) -> HashSet<usize> {
    let mut rows = Vec::with_capacity(batch.len());
    let mut poison = Vec::new();
    for (index, message) in batch.iter().enumerate() {
        match &message.work {
            Work::Row(row) => rows.push((index, row)),
            Work::Poison(letter) => poison.push((index, letter.clone())),
        }
    }
    let (mut acknowledged, refused) = write(context, rows, outcome).await;
    poison.extend(refused.into_iter().map(|(index, detail)| {
        (
            index,
            receive::dead_letter(
                &batch[index].message,
                DeadLetterReason::DatabaseRejected,
                detail,
            ),
        )
    }));
    acknowledged.extend(dead_letter::dead_letter(context, poison, outcome).await);
    acknowledged.into_iter().collect()
}

/// Inserts the rows, splitting a batch the database refuses for a permanent reason until
/// the guilty rows stand alone. Returns the indexes committed (inserted or duplicate), and
/// those refused with the reason, safe to log.
pub(super) async fn write<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    rows: Vec<(usize, &LoginRow)>,
    outcome: &mut BatchOutcome,
) -> (Vec<usize>, Vec<(usize, String)>) {
    let (indexes, rows): (Vec<usize>, Vec<&LoginRow>) = rows.into_iter().unzip();
    let mut committed = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
    if !rows.is_empty() {
        pending.push(0..rows.len());
    }
    let reporter = context.metrics.retry_reporter();
    while let Some(range) = pending.pop() {
        let slice = &rows[range.clone()];
        let result = retry(context.settings.retry, Stage::Write, &reporter, || async {
            let started = Instant::now();
            let result = context.sink.insert(slice).await;
            let unreachable =
                matches!(&result, Err(error) if error.class() == ErrorClass::Transient);
            context.readiness.set_database_reachable(!unreachable);
            result.map(|inserted| (inserted, started.elapsed()))
        })
        .await;
        match result {
            Ok((
                InsertOutcome {
                    inserted,
                    duplicates,
                },
                commit,
            )) => {
                let sent_at: Vec<_> = slice.iter().map(|row| row.sent_at).collect();
                context.metrics.emit(BatchCommitted {
                    inserted,
                    duplicates,
                    commit,
                    sent_at: &sent_at,
                });
                context.tally.committed(&sent_at);
                Tally::add(&context.tally.inserted, inserted);
                Tally::add(&context.tally.duplicates, duplicates);
                outcome.inserted += inserted;
                outcome.duplicates += duplicates;
                committed.extend(range.map(|i| indexes[i]));
            }
            Err(error) if range.len() == 1 => {
                let detail = error.safe_detail();
                context.metrics.emit(RowRefused {
                    message_id: &slice[0].message_id,
                    error: &detail,
                });
                refused.push((indexes[range.start], detail));
            }
            Err(error) => {
                context.metrics.emit(BatchSplit {
                    rows: range.len(),
                    error: &error.safe_detail(),
                });
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
        }
    }
    (committed, refused)
}
