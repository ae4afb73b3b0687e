//! Writers: one transaction per batch, the idempotent insert, and a batch the database
//! refuses split in halves until the refused rows stand alone (the rest commit). Whether a
//! refused row is poison or the database is at fault is then judged by isolation
//! ([`super::verdict`]); poison is dead-lettered, a systemic fault pauses the writes
//! ([`super::breaker`]). Then the writer's connection is free for the next batch, and the
//! deletes go on concurrently with it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::adapters::postgres::{Blame, Canary, InsertOutcome, Refusal, Sink, SinkFailure};
use crate::adapters::sqs::Queue;
use crate::domain::dead_letter::{DeadLetter, DeadLetterReason};
use crate::domain::stream::Row;
use crate::retry::{Classify, ErrorClass, Stage, retry};
use crate::telemetry::events::{
    BatchAbandoned, BatchClosed, BatchCommitted, BatchSplit, RowRefused,
};

use super::breaker::{self, PauseCause};
use super::receive;
use super::verdict::{Evidence, Verdict};
use super::{BatchOutcome, Context, InFlight, Tally, Work, dead_letter, delete, heartbeat};

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// While writes run: transient failures retried for `SQS2PG_WRITE_PATIENCE`, a
    /// refusal with no committed batch-mate judged with the canary's help, and the write
    /// given up as soon as the breaker opens.
    Normal,
    /// The breaker's probe: one attempt, and a refused row is poison only if a batch-mate
    /// commits beside it.
    Probe,
}

/// Writes one batch, dead-letters its poison, frees the writer, then deletes what was
/// acknowledged. A batch that reaches a writer while the writes are paused is let go (it
/// returns after its visibility timeout, see [`heartbeat::let_go`]), and so is one whose
/// writes pause; one past its deadline is abandoned.
pub(super) async fn write_and_delete<Q: Queue, S: Sink>(
    context: &Arc<Context<Q, S>>,
    batch: Vec<InFlight>,
    writer: OwnedSemaphorePermit,
) -> BatchOutcome {
    if context.breaker.is_open() {
        drop(writer);
        heartbeat::let_go(context, batch, "received while writes are paused");
        context.batch_done();
        return BatchOutcome::default();
    }
    let settled = write_and_settle(context, batch, writer, Mode::Normal).await;
    heartbeat::let_go(context, settled.kept, "of a batch whose writes paused");
    settled.outcome
}

/// Writes one batch in `mode` and settles what it can: deletes what committed or was
/// dead-lettered, and abandons the batch if its deadline passes first. Returns the messages
/// kept back because the writes paused: the caller lets them go, or the probe holds them for
/// its next attempt.
pub(super) async fn write_and_settle<Q: Queue, S: Sink>(
    context: &Arc<Context<Q, S>>,
    batch: Vec<InFlight>,
    writer: OwnedSemaphorePermit,
    mode: Mode,
) -> Settled {
    let mut outcome = BatchOutcome::default();
    if batch.is_empty() {
        return Settled {
            outcome,
            kept: batch,
            pause: None,
        };
    }
    let count = batch.len();
    context.metrics.emit(BatchClosed { messages: count });
    let deadline = batch
        .iter()
        .map(|message| message.deadline)
        .min()
        .expect("the batch is not empty");

    let settled =
        tokio::time::timeout_at(deadline, acknowledge(context, &batch, &mut outcome, mode)).await;
    drop(writer);
    let (kept, pause) = match settled {
        Ok(Acknowledged {
            settled,
            sent,
            pause,
        }) => {
            // Sent is acknowledged, whether or not its record lands: a copy in the DLQ is
            // never followed by another because only its record failed.
            dead_letter::record(context, &batch, &sent).await;
            let paused = pause.is_some();
            if let Some(cause) = &pause {
                breaker::trip(context, cause.clone());
            }
            let (acknowledged, left): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .enumerate()
                .partition(|(index, _)| settled.contains(index));
            let left: Vec<InFlight> = left.into_iter().map(|(_, message)| message).collect();
            let kept = if paused {
                left
            } else {
                // Poison that could not be dead-lettered comes back after its timeout.
                context
                    .heartbeat
                    .forget(left.iter().map(|m| m.message.receipt_handle.as_str()));
                Vec::new()
            };
            let acknowledged = acknowledged
                .into_iter()
                .map(|(_, message)| message)
                .collect();
            delete::delete(context, acknowledged, &mut outcome).await;
            (kept, pause)
        }
        Err(_) => {
            // Nothing is deleted: whatever did commit comes back as a duplicate.
            context.metrics.emit(BatchAbandoned {
                messages: count,
                timeout: context.settings.batch_timeout,
            });
            outcome.abandoned = count;
            heartbeat::let_go(context, batch, "of an abandoned batch");
            let cause = PauseCause::Deadline(context.settings.batch_timeout);
            breaker::trip(context, cause.clone());
            (Vec::new(), Some(cause))
        }
    };
    context.batch_done();
    Settled {
        outcome,
        kept,
        pause,
    }
}

/// What [`write_and_settle`] did.
pub(super) struct Settled {
    pub outcome: BatchOutcome,
    /// Messages kept back because the writes paused.
    pub kept: Vec<InFlight>,
    /// Why the writes paused, if they did.
    pub pause: Option<PauseCause>,
}

/// What [`acknowledge`] settled.
struct Acknowledged {
    /// Indexes that may be deleted: committed, or sent to the dead-letter queue.
    settled: HashSet<usize>,
    /// Dead letters sent and not yet recorded.
    sent: Vec<DeadLetter>,
    /// Why the writes should pause; the rows not committed are kept.
    pause: Option<PauseCause>,
}

/// Commits the rows and dead-letters the poison, unless the writes pause.
async fn acknowledge<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    batch: &[InFlight],
    outcome: &mut BatchOutcome,
    mode: Mode,
) -> Acknowledged {
    let mut rows = Vec::with_capacity(batch.len());
    let mut poison = Vec::new();
    for (index, message) in batch.iter().enumerate() {
        match &message.work {
            Work::Row(row) => rows.push((index, row)),
            Work::Poison(letter) => poison.push((index, letter.clone())),
        }
    }
    let written = write(context, rows, outcome, mode).await;
    let mut settled: HashSet<usize> = written.committed.into_iter().collect();
    if written.pause.is_some() {
        // The poison waits too: dead-lettering needs the database that just failed.
        return Acknowledged {
            settled,
            sent: Vec::new(),
            pause: written.pause,
        };
    }
    poison.extend(written.poison.into_iter().map(|(index, detail)| {
        (
            index,
            receive::dead_letter(
                &batch[index].message,
                DeadLetterReason::DatabaseRejected,
                detail,
            ),
        )
    }));
    let sent = dead_letter::send(context, poison, outcome).await;
    settled.extend(sent.acknowledged);
    Acknowledged {
        settled,
        sent: sent.letters,
        pause: None,
    }
}

/// How the rows of one batch ended.
pub(super) struct Written {
    /// Indexes committed (inserted or duplicate).
    pub committed: Vec<usize>,
    /// Indexes judged poison, with the refusal, safe to log.
    pub poison: Vec<(usize, String)>,
    /// Set when the writes should pause: every row not committed is kept.
    pub pause: Option<PauseCause>,
}

/// One attempt to insert a range of rows.
#[derive(Debug, thiserror::Error)]
enum Attempt<E> {
    #[error("{0}")]
    Failed(E),
    /// Failing transiently for longer than the write patience.
    #[error("{0}")]
    Exhausted(E),
    /// The breaker opened: this write gives up.
    #[error("writes are paused")]
    Paused,
}

impl<E: Classify> Classify for Attempt<E> {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Failed(error) => error.class(),
            Self::Exhausted(_) | Self::Paused => ErrorClass::Permanent,
        }
    }
}

/// Inserts the rows, splitting a range the database refuses until the refused rows stand
/// alone, then judges those ([`super::verdict`]). Returns the indexes committed, those
/// judged poison with the refusal, and whether the writes should pause.
pub(super) async fn write<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    rows: Vec<(usize, &Row)>,
    outcome: &mut BatchOutcome,
    mode: Mode,
) -> Written {
    let (indexes, rows): (Vec<usize>, Vec<&Row>) = rows.into_iter().unzip();
    let mut written = Written {
        committed: Vec::with_capacity(rows.len()),
        poison: Vec::new(),
        pause: None,
    };
    // Rows refused alone: their position in `rows`, and the refusal.
    let mut refused: Vec<(usize, Refusal)> = Vec::new();
    let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
    if !rows.is_empty() {
        pending.push(0..rows.len());
    }
    while let Some(range) = pending.pop() {
        let slice = &rows[range.clone()];
        let result = match mode {
            Mode::Normal => insert_with_patience(context, slice).await,
            Mode::Probe => insert_once(context, slice).await.map_err(Attempt::Failed),
        };
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
                written.committed.extend(range.map(|i| indexes[i]));
            }
            Err(Attempt::Paused) => {
                written.pause = context.breaker.paused().map(|paused| paused.cause.clone());
                break;
            }
            Err(Attempt::Exhausted(error)) => {
                written.pause = Some(PauseCause::failing(&error));
                break;
            }
            Err(Attempt::Failed(error)) => match error.blame() {
                Blame::Refused(refusal) if range.len() == 1 => {
                    refused.push((range.start, refusal));
                }
                Blame::Refused(_) => {
                    context.metrics.emit(BatchSplit {
                        rows: range.len(),
                        error: &error.safe_detail(),
                    });
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
                // A probe's single attempt, unreachable or busy.
                Blame::Unreachable | Blame::Busy(_) => {
                    written.pause = Some(PauseCause::failing(&error));
                    break;
                }
            },
        }
    }
    if written.pause.is_none() && !refused.is_empty() {
        judge(context, refused, mode, &rows, &indexes, &mut written).await;
    }
    written
}

/// Judges the rows refused alone (`refused`: their position in `rows`, the refusal): poison,
/// or a sign that the database is at fault.
async fn judge<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    refused: Vec<(usize, Refusal)>,
    mode: Mode,
    rows: &[&Row],
    indexes: &[usize],
    written: &mut Written,
) {
    let evidence = if !written.committed.is_empty()
        || (mode == Mode::Normal && matches!(context.sink.canary().await, Ok(Canary::Accepted)))
    {
        Evidence::TakesRows
    } else {
        Evidence::None
    };
    // Refused alike: the same refusal, whichever rows it took.
    let mut alike: Vec<(Refusal, Vec<usize>)> = Vec::new();
    for (position, refusal) in refused {
        match alike.iter_mut().find(|(seen, _)| *seen == refusal) {
            Some((_, positions)) => positions.push(position),
            None => alike.push((refusal, vec![position])),
        }
    }
    let mut poison = Vec::new();
    for (refusal, positions) in alike {
        match context.poison.judge(&refusal, positions.len(), evidence) {
            Verdict::Poison => {
                let detail = format!("database rejected the row: {refusal}");
                poison.extend(positions.into_iter().map(|p| (p, detail.clone())));
            }
            Verdict::Systemic => {
                written.pause.get_or_insert(PauseCause::Refused(refusal));
            }
        }
    }
    if written.pause.is_some() {
        return;
    }
    for (position, detail) in poison {
        context.metrics.emit(RowRefused {
            message_id: rows[position].key(),
            error: &detail,
        });
        written.poison.push((indexes[position], detail));
    }
}

/// One insert, timed, with readiness kept in step.
async fn insert_once<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    rows: &[&Row],
) -> Result<(InsertOutcome, std::time::Duration), S::Error> {
    let started = std::time::Instant::now();
    let result = context.sink.insert(rows).await;
    let unreachable = matches!(&result, Err(error) if error.blame() == Blame::Unreachable);
    context.readiness.set_database_reachable(!unreachable);
    result.map(|inserted| (inserted, started.elapsed()))
}

/// The insert retried while it fails transiently, for at most the write patience, and
/// given up as soon as the breaker opens.
async fn insert_with_patience<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    rows: &[&Row],
) -> Result<(InsertOutcome, std::time::Duration), Attempt<S::Error>> {
    let started = Instant::now();
    let patience = context.settings.write_patience;
    let reporter = context.metrics.retry_reporter();
    let attempts = retry(context.settings.retry, Stage::Write, &reporter, || async {
        if context.breaker.is_open() {
            return Err(Attempt::Paused);
        }
        match insert_once(context, rows).await {
            Err(error)
                if error.class() == ErrorClass::Transient && started.elapsed() >= patience =>
            {
                Err(Attempt::Exhausted(error))
            }
            other => other.map_err(Attempt::Failed),
        }
    });
    tokio::select! {
        result = attempts => result,
        () = context.breaker.opened() => Err(Attempt::Paused),
    }
}
