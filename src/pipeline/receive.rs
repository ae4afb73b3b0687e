//! Receivers: concurrent long polls that never wait on the database, only on the in-flight
//! budget (and, while the writes are paused, on the breaker closing).
//!
//! Their number adapts, as Lambda's SQS poller does: a receive that comes back full adds a
//! receiver while the budget has room, up to `receivers_max`; one that comes back less than
//! half full retires its receiver, down to `receivers_min`. Receivers are added at most
//! one per round trip, so each one's effect shows before the next. So an idle instance
//! makes one long poll every `wait_time` (5 s by default), and a backlog behind a slow
//! round trip gets as many polls in flight as it takes to hide it.
//!
//! A receive that comes back short means the queue holds a trickle. Its receiver waits half
//! the batch window before polling again, so the next receive gathers more: at a steady few
//! hundred messages a second that makes several times fewer calls, for a few milliseconds
//! of latency that the batch window bounds anyway.
//!
//! Each message is transformed (unwrapped, validated, masked) as it arrives, so what
//! reaches the batcher is a row or a dead letter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::{Queue, QueueError, ReceivedMessage};
use crate::domain::dead_letter::{DeadLetter, DeadLetterReason};
use crate::domain::stream::MessageMeta;
use crate::retry::{Classify, ErrorClass, Stage, retry};
use crate::telemetry::events::{
    CallFailed, MessagesReceived, QueueDepthUnavailable, QueueDrained, ReceiversChanged,
    UntrustedAttributes,
};

use super::budget::Reservation;
use super::report::Backlog;
use super::{Context, InFlight, PipelineError, Tally, Work, heartbeat};

/// The long-poll wait in drain mode while the queue reports messages we cannot receive yet
/// (delayed, or in flight elsewhere): short, so the drain notices their end promptly.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// When a receiver was last added: at most one per round trip, so the effect of one is
/// seen before the next is added (additive increase, as TCP's).
#[derive(Debug, Default)]
struct Growth {
    grown_at: Option<tokio::time::Instant>,
}

impl Growth {
    /// Whether a receiver may be added now, after a full receive that took `round_trip`.
    fn due(&mut self, round_trip: Duration) -> bool {
        let now = tokio::time::Instant::now();
        let due = self.grown_at.is_none_or(|at| now - at >= round_trip);
        if due {
            self.grown_at = Some(now);
        }
        due
    }
}

/// The receivers polling now, between the configured bounds.
struct Receivers<Q, S> {
    context: Arc<Context<Q, S>>,
    active: AtomicUsize,
    growth: Mutex<Growth>,
    /// Shared by the receivers: "two empty receives in a row" means in time, whichever
    /// receivers made them, and any receive that finds messages starts the check over.
    drain: Mutex<DrainCheck>,
    tracker: TaskTracker,
    to_batcher: mpsc::Sender<Vec<InFlight>>,
    stop: CancellationToken,
}

/// Starts `receivers_min` receivers on `tracker`. They stop on `stop`; the batcher's
/// channel closes when the last is gone.
pub(super) fn start<Q: Queue, S: Sink>(
    context: Arc<Context<Q, S>>,
    tracker: &TaskTracker,
    to_batcher: mpsc::Sender<Vec<InFlight>>,
    stop: CancellationToken,
) {
    let minimum = context.settings.receivers_min.max(1);
    let receivers = Arc::new(Receivers {
        context,
        active: AtomicUsize::new(minimum),
        growth: Mutex::new(Growth::default()),
        drain: Mutex::new(DrainCheck::default()),
        tracker: tracker.clone(),
        to_batcher,
        stop,
    });
    receivers.context.metrics.emit(ReceiversChanged {
        receivers: minimum,
        why: "start",
    });
    for _ in 0..minimum {
        let span = receivers.context.span.clone();
        tracker.spawn(Arc::clone(&receivers).receive_loop().instrument(span));
    }
}

impl<Q: Queue, S: Sink> Receivers<Q, S> {
    fn limits(&self) -> (usize, usize) {
        let settings = &self.context.settings;
        let minimum = settings.receivers_min.max(1);
        (minimum, settings.receivers_max.max(minimum))
    }

    /// A full receive: add a receiver if below the maximum and the budget has room.
    fn grow(self: &Arc<Self>) {
        let (_, maximum) = self.limits();
        let per_receive = self.context.settings.per_receive();
        if self.stop.is_cancelled() || !self.context.budget.has_room_for(per_receive) {
            return;
        }
        let grown = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |active| {
                (active < maximum).then_some(active + 1)
            });
        if let Ok(before) = grown {
            self.context.metrics.emit(ReceiversChanged {
                receivers: before + 1,
                why: "receives come back full",
            });
            let span = self.context.span.clone();
            self.tracker
                .spawn(Arc::clone(self).receive_loop().instrument(span));
        }
    }

    /// A short or empty receive: retire this receiver if above the minimum. `true` if retired.
    fn shrink(&self, why: &'static str) -> bool {
        let (minimum, _) = self.limits();
        let shrunk = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |active| {
                (active > minimum).then(|| active - 1)
            });
        if let Ok(before) = shrunk {
            self.context.metrics.emit(ReceiversChanged {
                receivers: before - 1,
                why,
            });
        }
        shrunk.is_ok()
    }

    async fn receive_loop(self: Arc<Self>) {
        let context = &self.context;
        while !self.stop.is_cancelled() {
            if !context.breaker.wait_closed(&self.stop).await {
                break;
            }
            let per_receive = context.settings.per_receive();
            let reservation = tokio::select! {
                reservation = context.budget.reserve_receive(per_receive) => reservation,
                () = self.stop.cancelled() => break,
            };
            let started = tokio::time::Instant::now();
            let wait = self.drain_check().wait(&context.settings);
            let messages = match self.receive(per_receive, wait).await {
                Ok(messages) => messages,
                Err(Some(error)) => {
                    context.metrics.emit(CallFailed {
                        stage: Stage::Receive,
                        class: error.class(),
                        error: &error,
                        consequence: "Receiving failed permanently; stopping the consumer.",
                    });
                    context
                        .failure
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(PipelineError::Receive(error));
                    self.stop.cancel();
                    break;
                }
                Err(None) => break, // stopped while retrying
            };
            if messages.is_empty() {
                drop(reservation);
                if context.settings.drain {
                    if self.confirm_drained().await && !self.stop.is_cancelled() {
                        context.metrics.emit(QueueDrained);
                        self.stop.cancel();
                    }
                } else if self.shrink("receives come back empty") {
                    break;
                }
                continue;
            }
            let received = messages.len();
            self.drain_check().found();
            let may_grow = received >= per_receive
                && self
                    .growth
                    .lock()
                    .expect("not poisoned")
                    .due(started.elapsed());
            // Received after the signal (or a completed drain) too: processed like the rest,
            // since the writers finish their work anyway. Released instead, it would be
            // taken again by this instance's other polls still open, once per poll, each
            // time spending a receive count.
            let batch = admit(context, messages, reservation).await;
            if context.breaker.is_open() {
                // A poll in flight when the writes paused: its messages would only wait.
                heartbeat::let_go(context, batch, "received while writes are paused");
                continue;
            }
            if let Err(mpsc::error::SendError(batch)) = self.to_batcher.send(batch).await {
                heartbeat::release(context, batch, "received with no batcher left").await;
                break;
            }
            if may_grow {
                self.grow();
            } else if received * 2 < per_receive {
                if self.shrink("receives come back short") {
                    break;
                }
                self.linger().await;
            }
        }
    }

    /// After a short receive: half the batch window, so the next receive gathers more.
    async fn linger(&self) {
        let linger = self.context.settings.batch_window / 2;
        if !linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    /// One receive, retried while transient. `Err(None)` means "stopped".
    ///
    /// A signal never cancels a long poll in flight: SQS keeps a poll open after its client
    /// has gone, and a message that arrives in the rest of its wait is handed to it and
    /// stays hidden for its visibility timeout (measured on LocalStack: the next instance
    /// ingested such messages 30.4 s later; aws-sdk-js#2350 and aws-sdk-java-v2#1395 show
    /// the same on AWS). So the poll is waited out, at most `wait_time` (5 s by default),
    /// and whatever it brings is processed (`receive_loop`): a shutdown strands nothing,
    /// and an idle instance exits within one wait. After a signal no attempt starts, so a
    /// failed one is not retried.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, Option<QueueError>> {
        let context = &self.context;
        let settings = &context.settings;
        let reporter = context.metrics.retry_reporter();
        let received = retry(settings.retry, Stage::Receive, &reporter, || async {
            if self.stop.is_cancelled() {
                return Err(ReceiveAttempt::Stopped);
            }
            let result = context
                .queue
                .receive(max, wait, settings.visibility_timeout)
                .await;
            context.readiness.set_queue_reachable(result.is_ok());
            result.map_err(ReceiveAttempt::Failed)
        })
        .await;
        match received {
            Ok(messages) => Ok(messages),
            Err(ReceiveAttempt::Stopped) => Err(None),
            Err(ReceiveAttempt::Failed(error)) => Err(Some(error)),
        }
    }

    /// One step of the drain's end check after an empty receive: waits until every message
    /// of ours is settled, then asks SQS whether anything is visible, in flight (another
    /// consumer's, or a crashed one's waiting for its timeout) or delayed. `true` once two
    /// receives in a row came back empty and SQS reported the queue empty after each.
    ///
    /// The wait for our own work is bounded by [`DRAIN_WAIT`]: then the next receive goes
    /// ahead, so a message that came back meanwhile (its visibility lapsed while a call
    /// hung) is received again as it would be without a drain.
    async fn confirm_drained(&self) -> bool {
        let settled = tokio::select! {
            () = self.context.budget.settled() => true,
            () = tokio::time::sleep(DRAIN_WAIT) => false,
            () = self.stop.cancelled() => return false,
        };
        if !settled {
            self.drain_check().found();
            return false;
        }
        let empty = match self.context.queue.depth().await {
            Ok(depth) => {
                self.context
                    .backlog
                    .send_replace(Some(Backlog::now(&self.context, depth)));
                depth.is_empty()
            }
            Err(error) => {
                self.context.metrics.emit(QueueDepthUnavailable {
                    error: &error,
                    consequence: "Could not read the queue depth; still draining.",
                });
                false
            }
        };
        self.drain_check().confirmed(empty)
    }

    fn drain_check(&self) -> std::sync::MutexGuard<'_, DrainCheck> {
        self.drain.lock().expect("not poisoned")
    }
}

/// A drain's end check. Its safety is in what it asks, not in how long it waits: it ends
/// only after two receives in a row came back empty, and after each one, with every
/// message of ours settled, SQS reported nothing visible, in flight or delayed. A receive
/// still in flight when it ends is processed, not dropped (see `receive_loop`).
///
/// What is fast is the wait: a drain's receives are short polls (no wait), which return at
/// once whether or not they find messages, so the end costs a few round trips instead of
/// two empty 1 s long polls. A short poll on AWS samples a subset of SQS's servers and may
/// miss a message, which is why the queue's counts must agree; while they report messages
/// that a receive cannot take yet (delayed, or another consumer's in flight), the next
/// receive long-polls for [`DRAIN_WAIT`] rather than spin.
#[derive(Debug, Default)]
struct DrainCheck {
    /// Empty receives in a row, each followed by an empty queue depth.
    confirmations: u8,
    /// The queue's counts showed messages that the last receive could not take.
    waiting_for_messages: bool,
}

impl DrainCheck {
    /// Empty receives, each confirmed by the queue's counts, that end a drain.
    const CONFIRMATIONS: u8 = 2;

    /// How long the next receive waits for messages.
    fn wait(&self, settings: &super::Settings) -> Duration {
        if !settings.drain {
            settings.wait_time
        } else if self.waiting_for_messages {
            DRAIN_WAIT.min(settings.wait_time)
        } else {
            Duration::ZERO
        }
    }

    /// A receive brought messages, or ours are still at work: the check starts over.
    fn found(&mut self) {
        self.confirmations = 0;
        self.waiting_for_messages = false;
    }

    /// An empty receive was followed by a depth read; `true` once the drain is complete.
    fn confirmed(&mut self, queue_empty: bool) -> bool {
        if queue_empty {
            self.confirmations += 1;
        } else {
            self.confirmations = 0;
        }
        self.waiting_for_messages = !queue_empty;
        self.confirmations >= Self::CONFIRMATIONS
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    #[test]
    fn a_drain_ends_after_two_empty_receives_each_confirmed_by_an_empty_queue() {
        let settings = super::super::Settings {
            drain: true,
            ..super::super::Settings::new("q")
        };
        let mut check = DrainCheck::default();
        assert_eq!(check.wait(&settings), Duration::ZERO, "short polls at once");
        assert!(!check.confirmed(true), "one confirmation is not proof");
        check.found();
        assert!(!check.confirmed(true), "messages in between start it over");
        assert!(!check.confirmed(false));
        assert_eq!(
            check.wait(&settings),
            DRAIN_WAIT,
            "while SQS counts messages, receives long-poll instead of spinning"
        );
        assert!(!check.confirmed(true));
        assert_eq!(check.wait(&settings), Duration::ZERO);
        assert!(check.confirmed(true));
    }
}

/// Takes received messages into the pipeline: their budget shares, their heartbeat, their
/// transform into a row or a dead letter.
pub(super) async fn admit<Q: Queue, S: Sink>(
    context: &Context<Q, S>,
    messages: Vec<ReceivedMessage>,
    reservation: Reservation,
) -> Vec<InFlight> {
    let shares = context.budget.admit(reservation, &messages).await;
    let now = Utc::now();
    let oldest_age = messages
        .iter()
        .map(|m| (now - m.sent_at).to_std().unwrap_or_default())
        .max()
        .unwrap_or_default();
    let count = messages.len();
    context
        .tally
        .first_received_at
        .fetch_min(context.nanos_since_start(), Ordering::Relaxed);
    Tally::add(&context.tally.received, count);
    context.metrics.emit(MessagesReceived { count, oldest_age });
    for message in &messages {
        if let Some(why) = message.untrusted_attributes {
            let message_id = &message.sqs_message_id;
            context
                .metrics
                .emit(UntrustedAttributes { message_id, why });
        }
    }
    let deadline = tokio::time::Instant::now() + context.settings.batch_timeout;
    messages
        .into_iter()
        .zip(shares)
        .map(|(message, share)| {
            context.heartbeat.track(&message.receipt_handle, deadline);
            let work = transformed(context, &message);
            InFlight {
                message,
                work,
                deadline,
                _share: share,
            }
        })
        .collect()
}

/// The row of one message, or why it is poison: its stream unwraps its envelope (SNS,
/// EventBridge), validates the event inside as if it had been sent alone, masks it and keys
/// it. The dead letter always carries the whole original body.
fn transformed<Q, S>(context: &Context<Q, S>, message: &ReceivedMessage) -> Work {
    let meta = MessageMeta {
        sqs_message_id: &message.sqs_message_id,
        // A redrive's original id (its tag verified) stands for the SQS id.
        original_message_id: (message.key != message.sqs_message_id).then_some(&message.key),
        sent_at: message.sent_at,
    };
    match context
        .stream
        .transform(&message.body, &meta, &context.keyring)
    {
        Ok(row) => Work::Row(row),
        Err(poison) => Work::Poison(dead_letter(message, poison.reason, poison.detail)),
    }
}

pub(super) fn dead_letter(
    message: &ReceivedMessage,
    reason: DeadLetterReason,
    detail: String,
) -> DeadLetter {
    DeadLetter {
        sqs_message_id: message.sqs_message_id.clone(),
        message_id: message.key.clone(),
        body: message.body.clone(),
        reason,
        detail,
        sent_at: message.sent_at,
        first_received_at: message.first_received_at,
        group_id: message.group_id.clone(),
    }
}

/// The outcome of one receive attempt inside the retry loop.
#[derive(Debug, thiserror::Error)]
enum ReceiveAttempt {
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Failed(QueueError),
}

impl Classify for ReceiveAttempt {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Stopped => ErrorClass::Permanent,
            Self::Failed(error) => error.class(),
        }
    }
}
