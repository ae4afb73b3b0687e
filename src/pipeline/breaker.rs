//! The circuit breaker on the write path: when writes fail systemically, ingestion pauses
//! instead of taking messages only to fail them.
//!
//! Closed, every stage runs. It **opens** when the write path finds that the database, not
//! the messages, is at fault:
//! - rows refused alike with no sign that the table takes rows ([`super::verdict`]);
//! - a batch abandoned at `SQS2PG_BATCH_TIMEOUT`;
//! - writes failing (unreachable or busy) for longer than `SQS2PG_WRITE_PATIENCE`.
//!
//! Open, nothing is received, batches on their way to a writer are released (visibility 0),
//! and a write in progress gives up and releases its rows; `/readyz` answers 503. One
//! ERROR line names the cause (SQLSTATE, constraint, table, never a value), then a reminder
//! every [`REMINDER_INTERVAL`] while it lasts.
//!
//! **Half-open**, a probe runs with backoff: first the canary (a row the table holds, written
//! again and rolled back: it fails while a constraint, a trigger, a missing table or column
//! or a dead connection would fail any insert), then, if the canary passes, a real write of
//! a few messages. The probe keeps its messages between attempts, their visibility
//! extended, so a long outage costs each of them one receive, not one per attempt. When
//! the probe commits a row (or has nothing left to write), the breaker **closes**, one line
//! says so, and receiving resumes.
//!
//! What an outage of any length costs a message: the receive before the pause and the one
//! after it, or the probe's one receive. SQS's `maxReceiveCount` (5 by default) is never
//! reached by valid messages for an outage alone. FIFO order holds: the probe writes the
//! first messages of their groups, and SQS delivers nothing later in a group while they are
//! held.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::adapters::postgres::{Blame, Canary, Refusal, Sink, SinkFailure};
use crate::adapters::sqs::Queue;
use crate::retry::RetryPolicy;
use crate::telemetry::events::{WriteProbeFailed, WritesPaused, WritesResumed, WritesStillPaused};
use crate::telemetry::metrics::PauseKind;

use super::write::{self, Mode, Settled};
use super::{BatchOutcome, Context, InFlight, heartbeat, receive};

/// The most messages a probe writes.
pub const PROBE_MESSAGES: usize = 10;
/// How long a probe's receive waits for messages to top up its batch.
const PROBE_RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// Between probes: from half a second, doubling with jitter, to at most ten seconds.
const PROBE_BACKOFF: RetryPolicy = RetryPolicy {
    initial_interval: Duration::from_millis(500),
    max_interval: Duration::from_secs(10),
    max_elapsed: None,
};
/// How often a pause that goes on is logged again.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(60);

/// Why writes pause. Its `Display` is one line that never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseCause {
    /// Rows refused alike, with no sign that the table takes other rows.
    Refused(Refusal),
    /// A batch did not finish within `SQS2PG_BATCH_TIMEOUT`.
    Deadline(Duration),
    /// Writes kept failing, unreachable or busy, for `SQS2PG_WRITE_PATIENCE`.
    Failing(String),
}

impl PauseCause {
    /// Its bounded metric label.
    pub fn kind(&self) -> PauseKind {
        match self {
            Self::Refused(_) => PauseKind::Refused,
            Self::Deadline(_) => PauseKind::Deadline,
            Self::Failing(_) => PauseKind::Failing,
        }
    }

    /// The cause of `error`, a write that failed past its patience.
    pub fn failing(error: &impl SinkFailure) -> Self {
        match error.blame() {
            Blame::Refused(refusal) => Self::Refused(refusal),
            _ => Self::Failing(error.safe_detail()),
        }
    }
}

impl std::fmt::Display for PauseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(refusal) => write!(f, "the database refuses every row alike: {refusal}"),
            Self::Deadline(timeout) => write!(
                f,
                "a batch did not finish within SQS2PG_BATCH_TIMEOUT ({})",
                humantime::format_duration(*timeout)
            ),
            Self::Failing(detail) => write!(f, "writes keep failing: {detail}"),
        }
    }
}

/// The breaker's state: closed (`None`), or open since an instant, for a cause.
#[derive(Debug)]
pub struct Breaker {
    open: watch::Sender<Option<Arc<Paused>>>,
}

#[derive(Debug)]
pub struct Paused {
    pub cause: PauseCause,
    pub since: Instant,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(None),
        }
    }
}

impl Breaker {
    /// Opens it; `true` if it was closed (the caller then starts the probe).
    fn open(&self, cause: PauseCause) -> bool {
        self.open.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(Arc::new(Paused {
                cause,
                since: Instant::now(),
            }));
            true
        })
    }

    /// Closes it; how long it was open.
    fn close(&self) -> Option<Duration> {
        self.open
            .send_replace(None)
            .map(|paused| paused.since.elapsed())
    }

    pub fn is_open(&self) -> bool {
        self.open.borrow().is_some()
    }

    /// Why it is open, if it is.
    pub fn paused(&self) -> Option<Arc<Paused>> {
        self.open.borrow().clone()
    }

    /// Waits until it is closed; `false` if `stop` came first.
    pub async fn wait_closed(&self, stop: &CancellationToken) -> bool {
        let mut open = self.open.subscribe();
        tokio::select! {
            result = open.wait_for(Option::is_none) => result.is_ok(),
            () = stop.cancelled() => false,
        }
    }

    /// Returns once it is open.
    pub async fn opened(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`, so the watch cannot close while this waits.
        let _ = open.wait_for(Option::is_some).await;
    }
}

/// Opens the breaker for `cause`, unless it is open already: logs and counts it, marks
/// `/readyz` not ready, and starts the probe that closes it again.
pub(super) fn trip<Q: Queue, S: Sink>(context: &Arc<Context<Q, S>>, cause: PauseCause) {
    if !context.breaker.open(cause.clone()) {
        return;
    }
    context.readiness.set_writes_paused(true);
    context.metrics.emit(WritesPaused {
        cause: &cause,
        kind: cause.kind(),
    });
    let probing = Arc::clone(context);
    context
        .background
        .spawn(async move { probe(probing).await }.instrument(context.span.clone()));
}

/// Half-open: probes until a write commits, then closes the breaker. Gives up when the
/// pipeline is done, releasing the messages it holds.
async fn probe<Q: Queue, S: Sink>(context: Arc<Context<Q, S>>) {
    let mut held: Vec<InFlight> = Vec::new();
    let mut waits = PROBE_BACKOFF.waits();
    let mut reminded = Instant::now();
    let mut probes = 0u64;
    loop {
        let wait = waits.next().unwrap_or(PROBE_BACKOFF.max_interval);
        tokio::select! {
            () = context.done.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        probes += 1;
        if let Some(paused) = context.breaker.paused()
            && reminded.elapsed() >= REMINDER_INTERVAL
        {
            reminded = Instant::now();
            context.metrics.emit(WritesStillPaused {
                cause: &paused.cause,
                paused_for: paused.since.elapsed(),
                probes,
            });
        }
        let canary = match context.sink.canary().await {
            Ok(canary) => canary,
            Err(error) => {
                context
                    .readiness
                    .set_database_reachable(error.blame() != Blame::Unreachable);
                context.metrics.emit(WriteProbeFailed {
                    step: "canary",
                    error: &error.safe_detail(),
                });
                continue;
            }
        };
        context.readiness.set_database_reachable(true);
        if held.len() < PROBE_MESSAGES {
            held.extend(top_up(&context, PROBE_MESSAGES - held.len()).await);
        }
        let closes = if held.is_empty() {
            // Nothing waits to be written: the canary alone decides. An empty table says
            // nothing either way, so the probe waits for a message to write.
            canary == Canary::Accepted
        } else {
            let written = probe_write(&context, std::mem::take(&mut held)).await;
            held = written.kept;
            let committed = written.outcome.inserted + written.outcome.duplicates > 0;
            if !committed && let Some(cause) = &written.pause {
                context.metrics.emit(WriteProbeFailed {
                    step: "write",
                    error: cause,
                });
            }
            committed || held.is_empty()
        };
        if closes {
            if let Some(paused_for) = context.breaker.close() {
                context.readiness.set_writes_paused(false);
                context.metrics.emit(WritesResumed { paused_for, probes });
            }
            break;
        }
    }
    heartbeat::release(&context, held, "held by a probe when the consumer stopped").await;
}

/// Receives up to `wanted` messages for the probe; none if the receive fails.
async fn top_up<Q: Queue, S: Sink>(context: &Context<Q, S>, wanted: usize) -> Vec<InFlight> {
    let reservation = context.budget.reserve_receive(wanted).await;
    let wait = PROBE_RECEIVE_WAIT.min(context.settings.wait_time);
    match context
        .queue
        .receive(wanted, wait, context.settings.visibility_timeout)
        .await
    {
        Ok(messages) if !messages.is_empty() => {
            receive::admit(context, messages, reservation).await
        }
        Ok(_) => Vec::new(),
        Err(error) => {
            context.readiness.set_queue_reachable(false);
            context.metrics.emit(WriteProbeFailed {
                step: "receive",
                error: &error,
            });
            Vec::new()
        }
    }
}

/// One probe write of `held`, one attempt, under a fresh batch deadline. Returns what it did
/// and the messages it keeps for the next probe (their visibility extended meanwhile).
async fn probe_write<Q: Queue, S: Sink>(
    context: &Arc<Context<Q, S>>,
    mut held: Vec<InFlight>,
) -> Settled {
    let deadline = Instant::now() + context.settings.batch_timeout;
    for message in &mut held {
        message.deadline = deadline;
    }
    context.heartbeat.renew(
        held.iter().map(|m| m.message.receipt_handle.as_str()),
        deadline,
    );
    let Ok(writer) = Arc::clone(&context.writers).acquire_owned().await else {
        return Settled {
            outcome: BatchOutcome::default(),
            kept: held,
            pause: None,
        };
    };
    write::write_and_settle(context, held, writer, Mode::Probe).await
}
