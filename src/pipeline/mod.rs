//! The consumer loop, in one place: receive → transform → commit → dead-letter → delete.
//!
//! The ordering is the whole exactly-once argument:
//! - a message is deleted only after its row is committed (or its dead letter is sent and
//!   recorded), so a crash at any instant leaves it in the queue, never lost;
//! - the insert is keyed on the message id, so whatever comes back is skipped, never doubled;
//! - a dead letter is sent only if `dead_letters` has no record of it, so a poison message
//!   whose delete was lost is not sent twice.
//!
//! While a batch is in flight a heartbeat extends its visibility, so a slow database or a
//! long retry does not hand the messages to another consumer. Memory is bounded by design:
//! each of the `concurrency` loops holds at most one batch (of at most `batch_messages`,
//! gathered from consecutive receives: group commit) and receives the next only when the
//! last is acknowledged, so a slow writer pauses the receivers.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::{InsertOutcome, Sink, SinkError};
use crate::adapters::sqs::{
    MAX_BATCH, MAX_VISIBILITY, Queue, QueueError, ReceivedMessage, split_by_failures,
};
use crate::domain::dead_letter::{DeadLetter, DeadLetterReason};
use crate::domain::envelope::{self, EnvelopeMode};
use crate::domain::event::{Envelope as MessageMeta, LoginRow, Masker, transform};
use crate::retry::{Classify, ErrorClass, RetryPolicy, Stage, retry};
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::{Metrics, QueueRole};

/// How a batch whose delete keeps failing is given up on: the message then comes back after
/// its visibility timeout and is skipped as a duplicate.
const DELETE_ROUNDS: usize = 5;
/// The long-poll wait in drain mode: short, so the drain notices an empty queue promptly.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// How often readiness re-checks the database when nothing else has.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Group commit: the most messages a loop gathers from consecutive receives into one
/// transaction. A commit costs a round trip and a WAL flush whatever its size, so rows per
/// commit set the database's throughput (see the benchmark in the README).
pub const DEFAULT_BATCH_MESSAGES: usize = 100;
/// Group commit: how long a loop keeps gathering after its first message arrived. It bounds
/// the latency that batching adds.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(20);
/// The longest a batch may stay in flight before it is abandoned (`SQS2PG_BATCH_TIMEOUT`):
/// far above a healthy batch (milliseconds) and a database restart (seconds), so only work
/// that cannot finish reaches it.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Receivers kept polling while the queue is idle.
pub const DEFAULT_RECEIVERS_MIN: usize = 1;
/// Receivers at most: enough to hide a real region's round trip (see the README).
pub const DEFAULT_RECEIVERS_MAX: usize = 16;
/// Writers, each with one database connection.
pub const DEFAULT_WRITERS: usize = 4;
/// Messages received and not yet deleted or released.
pub const DEFAULT_IN_FLIGHT_MESSAGES: usize = 1_000;
/// How often the queue depth is polled with GetQueueAttributes.
pub const QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// How long a receive in flight at a signal may still land before it is cancelled.
const SHUTDOWN_RECEIVE_GRACE: Duration = Duration::from_secs(1);
/// How often a loop whose batch was abandoned checks the database before it receives again.
const RECOVERY_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent receive loops, each with at most one batch in flight.
    pub concurrency: usize,
    /// Most messages per batch, gathered from consecutive receives (group commit).
    pub batch_messages: usize,
    /// Longest a loop keeps gathering a batch after its first message arrived.
    pub batch_window: Duration,
    /// Requested on each receive and renewed by the heartbeat while work runs.
    pub visibility_timeout: Duration,
    /// Long-poll wait of each receive (SQS allows up to 20 s).
    pub wait_time: Duration,
    /// The longest a batch may stay in flight, from its receipt to its last delete. Past
    /// it the batch is abandoned: its heartbeat stops and its messages are released to
    /// come back (to this instance or another), and the loop waits for the database to
    /// answer before it receives again. Its heartbeat never extends visibility beyond it.
    pub batch_timeout: Duration,
    /// Which envelopes (SNS, EventBridge) around an event are unwrapped.
    pub envelope: EnvelopeMode,
    /// Stop once the queue is empty and everything received is acknowledged.
    pub drain: bool,
    /// For transient failures of the database and SQS.
    pub retry: RetryPolicy,
    /// Name of the source queue, recorded with each dead letter.
    pub source_queue: String,
}

/// What a run did, printed at the end of `sqs2pg run`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub received: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub deleted: u64,
    pub elapsed: Duration,
    /// From the first message received to the last batch done: the run without its start-up,
    /// idle polls and a drain's closing checks.
    pub busy: Duration,
}

impl Summary {
    fn processed(&self) -> u64 {
        self.inserted + self.duplicates + self.dead_lettered
    }

    pub fn messages_per_second(&self) -> f64 {
        self.processed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The rate while there was work: what a backlog drains at.
    pub fn busy_messages_per_second(&self) -> f64 {
        self.processed() as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows inserted: {}, duplicates skipped: {}, dead-lettered: {}, received: {}, deleted: {}, elapsed: {:.2} s, {:.1} messages/s; busy: {:.2} s, {:.1} messages/s while busy",
            self.inserted,
            self.duplicates,
            self.dead_lettered,
            self.received,
            self.deleted,
            self.elapsed.as_secs_f64(),
            self.messages_per_second(),
            self.busy.as_secs_f64(),
            self.busy_messages_per_second()
        )
    }
}

/// Why the consumer stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("receiving failed permanently, so the consumer stopped: {0}")]
    Receive(#[source] QueueError),
}

/// How one batch went; what a test can assert after driving [`Consumer::process`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: Vec<DeadLetterReason>,
    pub deleted: usize,
    /// Acknowledged messages whose delete failed for good; they will come back.
    pub undeleted: usize,
    /// Messages of a batch abandoned at its deadline, released to come back.
    pub abandoned: usize,
}

pub struct Consumer<Q> {
    queue: Arc<Q>,
    sink: Sink,
    masker: Masker,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    settings: Settings,
    /// Messages between receive and acknowledgement, across all loops (for the drain check).
    processing: AtomicUsize,
    /// Age in seconds of the oldest message in each loop's latest receive. The gauge shows
    /// their maximum: one loop's empty receive must not hide another's old batch.
    oldest_by_loop: Vec<AtomicI64>,
    failure: Mutex<Option<ConsumerError>>,
    /// Nanoseconds since `clock` when the first batch arrived and the latest one was done.
    clock: Instant,
    first_batch_at: AtomicU64,
    last_batch_done_at: AtomicU64,
}

impl<Q: Queue> Consumer<Q> {
    pub fn new(
        queue: Arc<Q>,
        sink: Sink,
        masker: Masker,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        settings: Settings,
    ) -> Self {
        let loops = settings.concurrency.max(1);
        Self {
            queue,
            sink,
            masker,
            metrics,
            readiness,
            settings,
            processing: AtomicUsize::new(0),
            oldest_by_loop: (0..loops).map(|_| AtomicI64::new(0)).collect(),
            failure: Mutex::new(None),
            clock: Instant::now(),
            first_batch_at: AtomicU64::new(u64::MAX),
            last_batch_done_at: AtomicU64::new(0),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs the receive loops until `shutdown` is cancelled (or, with `drain`, until the
    /// queue is empty), then lets in-flight batches finish. Never deletes anything that is
    /// not committed, so stopping at any point is safe.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<Summary, ConsumerError> {
        let started = Instant::now();
        let stop = shutdown.child_token();
        let mut tasks = JoinSet::new();
        for slot in 0..self.oldest_by_loop.len() {
            tasks.spawn(Arc::clone(&self).receive_loop(slot, shutdown.clone(), stop.clone()));
        }
        tasks.spawn(Arc::clone(&self).watch(stop.clone()));
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        if let Some(error) = self.failure.lock().expect("not poisoned").take() {
            return Err(error);
        }
        Ok(self.summary(started.elapsed()))
    }

    /// The counts so far.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let metrics = &self.metrics;
        Summary {
            received: metrics.messages_received.get(),
            inserted: metrics.messages_inserted.get(),
            duplicates: metrics.messages_duplicate.get(),
            dead_lettered: DeadLetterReason::ALL
                .into_iter()
                .map(|reason| metrics.dead_lettered_total(reason))
                .sum(),
            deleted: metrics.messages_deleted.get(),
            elapsed,
            busy: Duration::from_nanos(
                self.last_batch_done_at
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.first_batch_at.load(Ordering::Relaxed)),
            ),
        }
    }

    /// `shutdown` is the signal; `stop` also ends the loops when a drain is complete.
    async fn receive_loop(
        self: Arc<Self>,
        slot: usize,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) {
        // Consecutive empty receives that found the queue drained. One is not proof: SQS
        // counts are approximate, and LocalStack's receive holds messages in neither count
        // for a moment. Two, a poll apart, are.
        let mut drained_checks = 0;
        while !stop.is_cancelled() {
            let messages = match self.receive(slot, &shutdown, &stop).await {
                Ok(messages) => messages,
                Err(Some(error)) => {
                    tracing::error!(message = "Receiving failed permanently; stopping the consumer.", %error);
                    self.failure
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(ConsumerError::Receive(error));
                    stop.cancel();
                    return;
                }
                Err(None) => return, // stopped while retrying
            };
            if messages.is_empty() {
                if self.settings.drain && !stop.is_cancelled() && self.is_drained().await {
                    drained_checks += 1;
                    if drained_checks >= 2 && !stop.is_cancelled() {
                        tracing::info!(message = "Queue drained.");
                        stop.cancel();
                    }
                } else {
                    drained_checks = 0;
                }
                continue;
            }
            drained_checks = 0;
            let messages = self.gather(messages, &shutdown).await;
            if shutdown.is_cancelled() {
                // Received after the signal and not started: hand back at once. (After a
                // completed drain, a late receive is processed instead: the drain's promise
                // is an empty queue.)
                self.release(&messages, "received during shutdown").await;
                return;
            }
            if self.process(messages).await.abandoned > 0 {
                self.await_database(&stop).await;
            }
        }
    }

    /// After an abandoned batch: receive again only once the database answers, so messages
    /// are not taken and abandoned over and over (each time costs a receive count, and
    /// SQS moves a message to the DLQ itself at maxReceiveCount).
    async fn await_database(&self, stop: &CancellationToken) {
        let mut waiting_since: Option<Instant> = None;
        while !stop.is_cancelled() {
            match self.sink.ping().await {
                Ok(()) => {
                    self.readiness.set_database_reachable(true);
                    if let Some(since) = waiting_since {
                        tracing::info!(
                            message = "Database answers again; receiving resumes.",
                            waited_s = since.elapsed().as_secs()
                        );
                    }
                    return;
                }
                Err(error) => {
                    self.readiness.set_database_reachable(false);
                    if waiting_since.is_none() {
                        tracing::warn!(message = "Database does not answer; receiving pauses until it does.", %error);
                        waiting_since = Some(Instant::now());
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECOVERY_PROBE_INTERVAL) => {}
            }
        }
    }

    /// One receive, retried while transient. `Err(None)` means "stopped".
    ///
    /// A signal cancels the long poll in flight after [`SHUTDOWN_RECEIVE_GRACE`], so an
    /// idle instance exits within about a second instead of waiting out `wait_time` (a
    /// rolling deploy or a scale-in waits on every pod). A receive that finds messages
    /// answers within a round trip, so the grace lets it land and its messages are released
    /// at once; only a poll still waiting on an empty queue is cancelled. A message that
    /// arrives in the very instant of the cancel reappears after its visibility timeout: a
    /// delay, never a loss. A completed drain cancels nothing: the drain's promise is an
    /// empty queue, so a late receive is processed.
    async fn receive(
        &self,
        slot: usize,
        shutdown: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<Vec<ReceivedMessage>, Option<QueueError>> {
        let wait = if self.settings.drain {
            DRAIN_WAIT.min(self.settings.wait_time)
        } else {
            self.settings.wait_time
        };
        let received = retry(
            self.settings.retry,
            Stage::Receive,
            &self.metrics.retry_reporter(),
            || async {
                if stop.is_cancelled() {
                    return Err(ReceiveAttempt::Stopped);
                }
                let receive = self.queue.receive(
                    self.settings.batch_messages.min(MAX_BATCH),
                    wait,
                    self.settings.visibility_timeout,
                );
                let given_up = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_RECEIVE_GRACE).await;
                };
                let result = tokio::select! {
                    result = receive => result,
                    () = given_up => return Err(ReceiveAttempt::Stopped),
                };
                self.readiness.set_queue_reachable(result.is_ok());
                result.map_err(ReceiveAttempt::Failed)
            },
        )
        .await;
        match received {
            Ok(messages) => {
                let now = Utc::now();
                let oldest = messages
                    .iter()
                    .map(|m| (now - m.sent_at).num_seconds().max(0))
                    .max()
                    .unwrap_or(0);
                self.oldest_by_loop[slot].store(oldest, Ordering::Relaxed);
                let across_loops = self
                    .oldest_by_loop
                    .iter()
                    .map(|age| age.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                self.metrics.oldest_message_age.set(across_loops);
                Ok(messages)
            }
            Err(ReceiveAttempt::Stopped) => Err(None),
            Err(ReceiveAttempt::Failed(error)) => {
                self.metrics.failed(Stage::Receive, error.class());
                Err(Some(error))
            }
        }
    }

    /// Group commit: after a receive, keeps receiving without waiting until the batch is
    /// full, the window has passed or nothing more is ready, so one transaction (and one
    /// round of deletes) serves many receives. A receive is never cut short: its messages
    /// would stay invisible until their timeout; the window is checked between receives.
    async fn gather(
        &self,
        mut messages: Vec<ReceivedMessage>,
        shutdown: &CancellationToken,
    ) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + self.settings.batch_window;
        while !shutdown.is_cancelled() && Instant::now() < deadline {
            let room = self.settings.batch_messages.saturating_sub(messages.len());
            if room == 0 {
                break;
            }
            match self
                .queue
                .receive(
                    room.min(MAX_BATCH),
                    Duration::ZERO,
                    self.settings.visibility_timeout,
                )
                .await
            {
                Ok(more) if !more.is_empty() => messages.extend(more),
                Ok(_) => break,
                Err(error) => {
                    // The batch so far goes ahead; the next regular receive retries.
                    tracing::debug!(message = "A receive while gathering a batch failed.", %error);
                    break;
                }
            }
        }
        messages
    }

    /// Drained: nothing of ours in flight, and SQS reports nothing visible, in flight
    /// (another consumer's, or a crashed one's waiting for its timeout) or delayed.
    async fn is_drained(&self) -> bool {
        if self.processing.load(Ordering::SeqCst) > 0 {
            return false;
        }
        match self.queue.depth().await {
            Ok(depth) => depth.is_empty(),
            Err(error) => {
                tracing::warn!(message = "Could not read the queue depth; still draining.", %error);
                false
            }
        }
    }

    /// Processes one received batch to the end: every message is committed, dead-lettered,
    /// or left to come back. Public so tests can drive one batch at a time.
    pub async fn process(&self, messages: Vec<ReceivedMessage>) -> BatchOutcome {
        let count = messages.len();
        self.first_batch_at
            .fetch_min(self.nanos_since_start(), Ordering::Relaxed);
        self.processing.fetch_add(count, Ordering::SeqCst);
        self.metrics.messages_received.inc_by(count as u64);
        self.metrics.batch_size.observe(count as f64);
        self.metrics.messages_in_flight.add(count as i64);
        let deadline = Instant::now() + self.settings.batch_timeout;
        let heartbeat = Heartbeat::start(
            Arc::clone(&self.queue),
            messages.iter().map(|m| m.receipt_handle.clone()).collect(),
            self.settings.visibility_timeout,
            deadline,
            Arc::clone(&self.metrics),
        );

        let mut rows = Vec::with_capacity(count);
        let mut poison = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.transform(message) {
                Ok(row) => rows.push((index, row)),
                Err((reason, detail)) => {
                    poison.push((index, dead_letter(message, reason, detail)));
                }
            }
        }

        let mut outcome = BatchOutcome::default();
        let settled = tokio::time::timeout_at(deadline.into(), async {
            let (mut acknowledged, rejected) = self.write(rows, &mut outcome).await;
            poison.extend(rejected.into_iter().map(|(index, error)| {
                (
                    index,
                    dead_letter(
                        &messages[index],
                        DeadLetterReason::DatabaseRejected,
                        error.safe_detail(),
                    ),
                )
            }));
            acknowledged.extend(self.dead_letter(poison, &mut outcome).await);
            acknowledged
        })
        .await;
        match settled {
            Ok(acknowledged) => {
                self.delete(&messages, acknowledged, &heartbeat, &mut outcome)
                    .await;
                drop(heartbeat);
            }
            Err(_) => {
                // Nothing is deleted: whatever did commit comes back as a duplicate.
                drop(heartbeat);
                self.metrics.batches_abandoned.inc();
                tracing::warn!(
                    message = "Batch exceeded SQS2PG_BATCH_TIMEOUT; abandoning it and releasing its messages for redelivery.",
                    messages = count,
                    timeout_s = self.settings.batch_timeout.as_secs_f64(),
                );
                self.release(&messages, "of an abandoned batch").await;
                outcome.abandoned = count;
            }
        }

        self.last_batch_done_at
            .fetch_max(self.nanos_since_start(), Ordering::Relaxed);
        self.metrics.messages_in_flight.sub(count as i64);
        self.processing.fetch_sub(count, Ordering::SeqCst);
        outcome
    }

    /// The row of one message, or why it is poison: its envelope (SNS, EventBridge) is
    /// unwrapped first, and the event inside validated as if it had been sent alone. The
    /// dead letter always carries the whole original body.
    fn transform(&self, message: &ReceivedMessage) -> Result<LoginRow, (DeadLetterReason, String)> {
        let inner = envelope::unwrap(&message.body, self.settings.envelope)
            .map_err(|rejection| (rejection.reason(), rejection.to_string()))?;
        let meta = MessageMeta {
            message_id: &message.key,
            sent_at: message.sent_at,
        };
        transform(&inner.body, meta, &self.masker)
            .map_err(|rejection| (rejection.reason(), inner.detail(&rejection)))
    }

    fn nanos_since_start(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Inserts the valid rows. A batch the database refuses for a permanent reason is split
    /// in halves until the guilty rows stand alone; the rest commit. Returns the indexes
    /// committed (inserted or duplicate) and those refused.
    async fn write(
        &self,
        rows: Vec<(usize, LoginRow)>,
        outcome: &mut BatchOutcome,
    ) -> (Vec<usize>, Vec<(usize, SinkError)>) {
        let (indexes, rows): (Vec<usize>, Vec<LoginRow>) = rows.into_iter().unzip();
        let mut committed = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
        if !rows.is_empty() {
            pending.push(0..rows.len());
        }
        while let Some(range) = pending.pop() {
            let slice = &rows[range.clone()];
            let result = retry(
                self.settings.retry,
                Stage::Write,
                &self.metrics.retry_reporter(),
                || async {
                    let started = Instant::now();
                    let result = self.sink.insert(slice).await;
                    if result.is_ok() {
                        self.metrics
                            .commit_duration
                            .observe(started.elapsed().as_secs_f64());
                    }
                    let unreachable =
                        matches!(&result, Err(error) if error.class() == ErrorClass::Transient);
                    self.readiness.set_database_reachable(!unreachable);
                    result
                },
            )
            .await;
            match result {
                Ok(InsertOutcome {
                    inserted,
                    duplicates,
                }) => {
                    self.record_commit(slice, inserted, duplicates);
                    outcome.inserted += inserted;
                    outcome.duplicates += duplicates;
                    committed.extend(range.map(|i| indexes[i]));
                }
                Err(error) if range.len() == 1 => {
                    self.metrics.failed(Stage::Write, ErrorClass::Permanent);
                    tracing::warn!(
                        message = "Database refused a row; dead-lettering its message.",
                        message_id = %slice[0].message_id,
                        error = %error.safe_detail(),
                    );
                    rejected.push((indexes[range.start], error));
                }
                Err(error) => {
                    tracing::info!(
                        message = "Database refused a batch; splitting it to isolate the guilty rows.",
                        rows = range.len(),
                        error = %error.safe_detail(),
                    );
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
        (committed, rejected)
    }

    fn record_commit(&self, rows: &[LoginRow], inserted: u64, duplicates: u64) {
        self.metrics.messages_inserted.inc_by(inserted);
        self.metrics.messages_duplicate.inc_by(duplicates);
        let now = Utc::now();
        for row in rows {
            let latency = (now - row.sent_at).to_std().unwrap_or_default();
            self.metrics
                .end_to_end_latency
                .observe(latency.as_secs_f64());
        }
        if duplicates > 0 {
            tracing::debug!(message = "Skipped redelivered messages.", duplicates);
        }
    }

    /// Sends poison to the dead-letter queue once: copies already recorded in
    /// `dead_letters` (a lost delete brought them back) are only acknowledged. Returns the
    /// indexes that may be deleted.
    async fn dead_letter(
        &self,
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
        // The record is read again before every attempt to send, not once before them all:
        // while sends keep failing (SQS unreachable, so the heartbeat fails too), these
        // messages can come back to another loop and be dead-lettered there meanwhile.
        let attempt = || async {
            let already = self
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
                self.queue
                    .dead_letter(&letters)
                    .await
                    .map_err(DeadLetterAttempt::Send)?
            };
            Ok::<_, DeadLetterAttempt>((already, letters, failures))
        };
        let (already, letters, failures) = match retry(
            self.settings.retry,
            Stage::DeadLetter,
            &self.metrics.retry_reporter(),
            attempt,
        )
        .await
        {
            Ok(attempted) => attempted,
            Err(error) => {
                self.metrics.failed(Stage::DeadLetter, error.class());
                tracing::error!(message = "Could not dead-letter the poison messages; they will come back.", %error);
                return Vec::new();
            }
        };
        let (done, to_send): (Vec<_>, Vec<_>) = poison
            .into_iter()
            .partition(|(_, letter)| already.contains(&letter.sqs_message_id));
        // Copies already dead-lettered came back because a delete was lost: redeliveries,
        // skipped like duplicate rows.
        let mut acknowledged: Vec<usize> = done.iter().map(|(index, _)| *index).collect();
        self.metrics.messages_duplicate.inc_by(done.len() as u64);
        outcome.duplicates += done.len() as u64;
        if to_send.is_empty() {
            return acknowledged;
        }
        for failure in &failures {
            self.metrics
                .failed(Stage::DeadLetter, ErrorClass::Transient);
            tracing::warn!(
                message = "Dead-letter queue refused a message; it will come back and be tried again.",
                message_id = %letters[failure.index].message_id,
                code = %failure.code,
            );
        }
        let (sent, _) = split_by_failures(to_send, &failures);
        let sent_letters: Vec<DeadLetter> = sent.iter().map(|(_, letter)| letter.clone()).collect();
        if let Err(error) = retry(
            self.settings.retry,
            Stage::DeadLetter,
            &self.metrics.retry_reporter(),
            || {
                self.sink
                    .record_dead_letters(&sent_letters, &self.settings.source_queue)
            },
        )
        .await
        {
            // The letters are in the DLQ; acknowledging them is still right. Only a later
            // lost delete could now duplicate them.
            self.metrics.failed(Stage::DeadLetter, error.class());
            tracing::error!(message = "Could not record dead letters; they are in the DLQ regardless.", %error);
        }
        for (index, letter) in sent {
            self.metrics.dead_lettered(letter.reason);
            outcome.dead_lettered.push(letter.reason);
            tracing::warn!(
                message = "Dead-lettered a poison message.",
                message_id = %letter.message_id,
                reason = letter.reason.as_str(),
                detail = %letter.detail,
            );
            acknowledged.push(index);
        }
        acknowledged
    }

    /// Deletes acknowledged messages. Entries that fail for a transient reason are tried
    /// again; a delete lost for good only means a redelivery, skipped as a duplicate.
    async fn delete(
        &self,
        messages: &[ReceivedMessage],
        acknowledged: Vec<usize>,
        heartbeat: &Heartbeat,
        outcome: &mut BatchOutcome,
    ) {
        let mut outstanding = acknowledged;
        heartbeat.forget(
            outstanding
                .iter()
                .map(|&i| messages[i].receipt_handle.as_str()),
        );
        let mut pause = Duration::from_millis(200);
        for round in 0..DELETE_ROUNDS {
            if outstanding.is_empty() {
                break;
            }
            let handles: Vec<&str> = outstanding
                .iter()
                .map(|&i| messages[i].receipt_handle.as_str())
                .collect();
            let failures = match retry(
                RetryPolicy::BRIEF,
                Stage::Delete,
                &self.metrics.retry_reporter(),
                || self.queue.delete(&handles),
            )
            .await
            {
                Ok(failures) => failures,
                Err(error) => {
                    self.metrics.failed(Stage::Delete, error.class());
                    tracing::warn!(message = "Delete failed; the messages will be redelivered and skipped as duplicates.", %error);
                    break;
                }
            };
            let deleted = outstanding.len() - failures.len();
            self.metrics.messages_deleted.inc_by(deleted as u64);
            outcome.deleted += deleted;
            let mut again = Vec::new();
            for failure in failures {
                let index = outstanding[failure.index];
                if failure.sender_fault {
                    self.metrics.delete_failures.inc();
                    self.metrics.failed(Stage::Delete, ErrorClass::Permanent);
                    outcome.undeleted += 1;
                    tracing::warn!(
                        message = "Delete refused; the message will be redelivered and skipped as a duplicate.",
                        message_id = %messages[index].key,
                        code = %failure.code,
                    );
                } else {
                    self.metrics.retried(Stage::Delete);
                    again.push(index);
                }
            }
            outstanding = again;
            if !outstanding.is_empty() && round + 1 < DELETE_ROUNDS {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        if !outstanding.is_empty() {
            self.metrics
                .delete_failures
                .inc_by(outstanding.len() as u64);
            outcome.undeleted += outstanding.len();
            tracing::warn!(
                message = "Gave up deleting committed messages; they will be redelivered and skipped as duplicates.",
                count = outstanding.len(),
            );
        }
    }

    /// Hands messages back to the queue at once (visibility 0): those received after
    /// shutdown began, and those of an abandoned batch. `why` says which, in the log.
    async fn release(&self, messages: &[ReceivedMessage], why: &'static str) {
        let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
        match retry(
            RetryPolicy::BRIEF,
            Stage::Release,
            &self.metrics.retry_reporter(),
            || self.queue.change_visibility(&handles, Duration::ZERO),
        )
        .await
        {
            Ok(failures) => {
                self.metrics
                    .messages_released
                    .inc_by((handles.len() - failures.len()) as u64);
                tracing::info!(
                    message = "Released messages for redelivery.",
                    why,
                    count = handles.len() - failures.len()
                );
            }
            Err(error) => {
                self.metrics.failed(Stage::Release, error.class());
                tracing::warn!(message = "Could not release messages; they return after their visibility timeout.", %error);
            }
        }
    }

    /// Keeps the queue-depth gauges and readiness fresh until `stop`.
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut last_depth_poll: Option<Instant> = None;
        loop {
            let database = self.sink.ping().await;
            self.readiness.set_database_reachable(database.is_ok());
            if last_depth_poll.is_none_or(|at| at.elapsed() >= QUEUE_POLL_INTERVAL) {
                last_depth_poll = Some(Instant::now());
                let source = self.queue.depth().await;
                let dead_letter = self.queue.dead_letter_depth().await;
                self.readiness.set_queue_reachable(source.is_ok());
                match (source, dead_letter) {
                    (Ok(source), Ok(dead_letter)) => {
                        self.metrics.set_queue_depth(QueueRole::Source, source);
                        self.metrics
                            .set_queue_depth(QueueRole::DeadLetter, dead_letter);
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::warn!(message = "Could not read queue depth; the gauges keep their last values.", %error);
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
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

/// One attempt to dead-letter a batch's poison: read the record, then send what it lacks.
#[derive(Debug, thiserror::Error)]
enum DeadLetterAttempt {
    #[error("could not check the dead-letter record: {0}")]
    Check(SinkError),
    #[error("could not send to the dead-letter queue: {0}")]
    Send(QueueError),
}

impl Classify for DeadLetterAttempt {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Check(error) => error.class(),
            Self::Send(error) => error.class(),
        }
    }
}

impl Classify for ReceiveAttempt {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Stopped => ErrorClass::Permanent,
            Self::Failed(error) => error.class(),
        }
    }
}

fn dead_letter(message: &ReceivedMessage, reason: DeadLetterReason, detail: String) -> DeadLetter {
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

/// Extends the visibility of a batch's messages at half the timeout, until dropped or the
/// batch's deadline: never longer than the work can really last, so a batch that can no
/// longer finish does not keep its messages from another consumer. A failed extension is
/// logged and counted, never fatal: the worst case is a redelivery, which the idempotent
/// insert absorbs.
struct Heartbeat {
    pending: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Heartbeat {
    fn start<Q: Queue>(
        queue: Arc<Q>,
        receipt_handles: Vec<String>,
        visibility: Duration,
        deadline: Instant,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pending = Arc::new(Mutex::new(receipt_handles));
        let handles = Arc::clone(&pending);
        let task = tokio::spawn(async move {
            let received = Instant::now();
            let period = (visibility / 2).max(Duration::from_millis(500));
            loop {
                tokio::time::sleep(period).await;
                // Hidden until the next beat or the deadline, whichever the work reaches
                // first; and SQS refuses to extend past 12 hours from the receive.
                let until_deadline = deadline.saturating_duration_since(Instant::now());
                if until_deadline.is_zero() {
                    return;
                }
                let timeout = visibility
                    .min(until_deadline + period)
                    .min(MAX_VISIBILITY.saturating_sub(received.elapsed()));
                if timeout < Duration::from_secs(1) {
                    tracing::warn!(
                        message = "Messages reached the 12-hour visibility cap; no longer extending them."
                    );
                    return;
                }
                let snapshot = handles.lock().expect("not poisoned").clone();
                if snapshot.is_empty() {
                    return;
                }
                let refs: Vec<&str> = snapshot.iter().map(String::as_str).collect();
                match queue.change_visibility(&refs, timeout).await {
                    Ok(failures) => {
                        metrics
                            .visibility_extensions
                            .inc_by((refs.len() - failures.len()) as u64);
                        if !failures.is_empty() {
                            metrics
                                .visibility_extension_failures
                                .inc_by(failures.len() as u64);
                            metrics.failed(Stage::ExtendVisibility, ErrorClass::Transient);
                            tracing::warn!(
                                message = "Some visibility extensions failed; trying again at the next beat.",
                                count = failures.len()
                            );
                        }
                    }
                    Err(error) => {
                        metrics
                            .visibility_extension_failures
                            .inc_by(refs.len() as u64);
                        metrics.failed(Stage::ExtendVisibility, error.class());
                        tracing::warn!(message = "Failed to extend visibility; trying again at the next beat.", %error);
                    }
                }
            }
        });
        Self { pending, task }
    }

    /// Stops extending these messages (they are being deleted).
    fn forget<'a>(&self, receipt_handles: impl Iterator<Item = &'a str>) {
        let gone: std::collections::HashSet<&str> = receipt_handles.collect();
        self.pending
            .lock()
            .expect("not poisoned")
            .retain(|handle| !gone.contains(handle.as_str()));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
