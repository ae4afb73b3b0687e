//! The consumer as a pipeline of stages joined by bounded channels:
//!
//! ```text
//!  receivers (adaptive, min..max) ──► batcher ──► writers (≤ SQS2PG_WRITERS connections)
//!        │                                          │  insert, then dead-letter the poison
//!        │                                          ▼
//!        └── heartbeat: every message in flight ◄── deleters (after the commit)
//! ```
//!
//! - [`receive`]: concurrent long polls that never wait on the database, only on the
//!   in-flight budget ([`budget`]); more of them while receives come back full.
//! - [`batch`]: group commit across receivers: a batch closes at `batch_messages` or
//!   `batch_window` after its first message, waiting on the channel, not on extra SQS calls.
//! - [`write`]: one transaction per batch, the idempotent insert, a refused batch split in
//!   halves until the guilty rows stand alone.
//! - [`dead_letter`]: record check, send, record.
//! - [`delete`]: `DeleteMessageBatch` after the commit, concurrently with later batches.
//! - [`heartbeat`]: extends the visibility of every message in flight, in batched calls,
//!   never past its batch's deadline; and releases messages (visibility 0).
//! - [`verdict`] and [`breaker`]: a refused row is poison only if the database was seen to
//!   take other rows meanwhile; otherwise the fault is the database's, and the writes pause
//!   (nothing received, `/readyz` 503) until a probe write commits.
//! - [`probe`]: readiness and queue-depth gauges.
//! - [`report`]: what the run has done so far, for people: a drain's progress lines, an
//!   always-on run's periodic summary, and poison floods summarised rather than logged
//!   one by one. [`Pipeline::progress`] gives the same figures to a progress bar.
//!
//! # Invariants
//! - Nothing is deleted before its row is committed or its dead letter is sent and
//!   recorded: a crash at any instant leaves the message in the queue, never lost.
//! - At most one row per message id: the insert is keyed on it, so whatever comes back is
//!   skipped, never doubled; and a dead letter is sent only if the record lacks its copy.
//! - Every received message ends committed (and deleted), dead-lettered (and deleted),
//!   released, or left to return after its visibility timeout: an [`InFlight`] returns its
//!   share of the budget when dropped, whichever of these it met.
//! - Memory is bounded by the in-flight budget, in messages and in bytes; receivers wait
//!   while it is spent, which is the backpressure from a slow database.
//! - A shutdown strands nothing: a long poll open at the signal is waited out, never
//!   cancelled (SQS would keep it open and hide what it takes for the visibility timeout),
//!   what it brings is processed with the rest, and whatever is still held at the shutdown
//!   timeout is released ([`Pipeline::abandon`]).

pub mod batch;
pub mod breaker;
pub mod budget;
pub mod dead_letter;
pub mod delete;
pub mod heartbeat;
pub mod probe;
pub mod receive;
pub mod report;
pub mod verdict;
pub mod write;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::{Queue, QueueError, ReceivedMessage};
use crate::domain::dead_letter::{DeadLetter, DeadLetterReason};
use crate::domain::keyring::Keyring;
use crate::domain::stream::{Row, Stream};
use crate::retry::RetryPolicy;
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::Metrics;

use budget::{Budget, Share};
use heartbeat::Heartbeat;

/// Group commit: the most messages in one transaction. A commit costs a round trip and a
/// WAL flush whatever its size, so rows per commit set the database's throughput.
pub const DEFAULT_BATCH_MESSAGES: usize = 100;
/// Group commit: how long a batch stays open after its first message. It bounds the
/// latency that batching adds.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(20);
/// The longest a message may stay in flight before its batch is abandoned
/// (`SQS2PG_BATCH_TIMEOUT`): far above a healthy batch (milliseconds) and a database
/// restart (seconds), so only work that cannot finish reaches it.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a write may keep failing, unreachable or busy, before the writes pause
/// (`SQS2PG_WRITE_PATIENCE`): longer than a restart or a failover of the database, which
/// retries ride out with the messages held in flight, and short enough that an outage
/// pauses ingestion long before SQS's maxReceiveCount comes into play.
pub const DEFAULT_WRITE_PATIENCE: Duration = Duration::from_secs(30);
/// Receivers kept polling while the queue is idle: one long poll every `wait_time`.
pub const DEFAULT_RECEIVERS_MIN: usize = 1;
/// The long-poll wait. A shutdown waits out the polls in flight (a cancelled poll stays
/// open at SQS and hides what it takes for the visibility timeout), so this bounds how
/// long an idle instance takes to exit; 5 s costs an idle receiver 0.2 requests a second
/// where SQS's longest, 20 s, costs 0.05 and may hold a rolling deploy 20 s per pod.
pub const DEFAULT_WAIT_TIME: Duration = Duration::from_secs(5);
/// Receivers at most. Each receive brings at most 10 messages a round trip, so hiding a
/// real region's 5–30 ms takes many in flight at once (see the README's measurements).
pub const DEFAULT_RECEIVERS_MAX: usize = 16;
/// Writers, each one transaction (and one database connection) at a time.
pub const DEFAULT_WRITERS: usize = 4;
/// Messages received and not yet deleted or released.
pub const DEFAULT_IN_FLIGHT_MESSAGES: usize = 1_000;
/// Bytes of message bodies held in flight (they are kept until the commit, to dead-letter a
/// row the database refuses), so that 256 KB bodies cannot multiply memory.
pub const DEFAULT_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;
/// How often the queue depth is polled with GetQueueAttributes.
pub const QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// How often a drain polls it: the backlog and ETA its progress shows.
pub const DRAIN_QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A drain's progress line off a terminal (`SQS2PG_PROGRESS_INTERVAL`).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// An always-on run's summary line (`SQS2PG_SUMMARY_INTERVAL`).
pub const DEFAULT_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Receivers kept polling while the queue is idle.
    pub receivers_min: usize,
    /// Receivers at most, while receives come back full and the budget has room.
    pub receivers_max: usize,
    /// Concurrent transactions: the database connections this instance uses.
    pub writers: usize,
    /// Messages in flight at most.
    pub in_flight_messages: usize,
    /// Bytes of bodies in flight at most.
    pub in_flight_bytes: usize,
    /// Most messages per batch (group commit).
    pub batch_messages: usize,
    /// Longest a batch stays open after its first message.
    pub batch_window: Duration,
    /// Requested on each receive and renewed by the heartbeat while work runs.
    pub visibility_timeout: Duration,
    /// Long-poll wait of each receive (SQS allows up to 20 s).
    pub wait_time: Duration,
    /// The longest a message may stay in flight, from its receipt to its delete. Past it
    /// its batch is abandoned: the messages are released to come back (here or elsewhere),
    /// and the writes pause (the breaker) until a probe commits. The heartbeat never
    /// extends visibility beyond it.
    pub batch_timeout: Duration,
    /// How long a write may keep failing, unreachable or busy, before the writes pause.
    pub write_patience: Duration,
    /// Rows one database refusal may dead-letter per minute; past it the refusal is judged
    /// the database's fault ([`verdict`]).
    pub poison_per_minute: usize,
    /// Stop once the queue is empty and everything received is acknowledged.
    pub drain: bool,
    /// For transient failures of the database and SQS.
    pub retry: RetryPolicy,
    /// Name of the source queue, recorded with each dead letter.
    pub source_queue: String,
    /// A drain logs its progress this often; `None` when a progress bar shows it instead.
    pub progress_interval: Option<Duration>,
    /// An always-on run logs a summary (rates, lag, backlog) this often; `None`: never.
    pub summary_interval: Option<Duration>,
}

impl Settings {
    /// The defaults, for the queue named `source_queue`.
    pub fn new(source_queue: impl Into<String>) -> Self {
        Self {
            receivers_min: DEFAULT_RECEIVERS_MIN,
            receivers_max: DEFAULT_RECEIVERS_MAX,
            writers: DEFAULT_WRITERS,
            in_flight_messages: DEFAULT_IN_FLIGHT_MESSAGES,
            in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES,
            batch_messages: DEFAULT_BATCH_MESSAGES,
            batch_window: DEFAULT_BATCH_WINDOW,
            visibility_timeout: Duration::from_secs(30),
            wait_time: DEFAULT_WAIT_TIME,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            write_patience: DEFAULT_WRITE_PATIENCE,
            poison_per_minute: verdict::DEFAULT_POISON_PER_MINUTE,
            drain: false,
            retry: RetryPolicy::FOREVER,
            source_queue: source_queue.into(),
            progress_interval: Some(DEFAULT_PROGRESS_INTERVAL),
            summary_interval: Some(DEFAULT_SUMMARY_INTERVAL),
        }
    }

    /// Messages asked for in one receive: SQS's limit, or less for smaller batches.
    fn per_receive(&self) -> usize {
        self.batch_messages
            .clamp(1, crate::adapters::sqs::MAX_BATCH)
            .min(self.in_flight_messages.max(1))
    }
}

/// What a run did, printed at the end of `sqs2pg run`. Counted by the pipeline as it goes,
/// not read back from the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub received: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub deleted: u64,
    pub released: u64,
    pub elapsed: Duration,
    /// From the first message received to the last batch done: the run without its start-up,
    /// idle polls and a drain's closing checks.
    pub busy: Duration,
}

/// `run --output json` prints this shape; fields are only ever added.
impl serde::Serialize for Summary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Shape {
            received: u64,
            inserted: u64,
            duplicates: u64,
            dead_lettered: u64,
            deleted: u64,
            released: u64,
            elapsed_s: f64,
            messages_per_second: f64,
            busy_s: f64,
            busy_messages_per_second: f64,
        }
        let shape = Shape {
            received: self.received,
            inserted: self.inserted,
            duplicates: self.duplicates,
            dead_lettered: self.dead_lettered,
            deleted: self.deleted,
            released: self.released,
            elapsed_s: self.elapsed.as_secs_f64(),
            messages_per_second: self.messages_per_second(),
            busy_s: self.busy.as_secs_f64(),
            busy_messages_per_second: self.busy_messages_per_second(),
        };
        serde::Serialize::serialize(&shape, serializer)
    }
}

impl Summary {
    /// Several streams' summaries as one: counts summed, busy from the earliest stream's
    /// first message to the latest's last batch (as the longest of them, approximately).
    pub fn combined(all: &[Summary], elapsed: Duration) -> Self {
        let mut combined = Self {
            elapsed,
            ..Self::default()
        };
        for summary in all {
            combined.received += summary.received;
            combined.inserted += summary.inserted;
            combined.duplicates += summary.duplicates;
            combined.dead_lettered += summary.dead_lettered;
            combined.deleted += summary.deleted;
            combined.released += summary.released;
            combined.busy = combined.busy.max(summary.busy);
        }
        combined
    }

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

/// Leads with the rate a backlog drains at (while busy, from the first message received
/// to the last batch done): the whole run's rate also counts start-up, idle polls and a
/// drain's end check, which on a short drain would understate the speed many times over.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages in {:.2} s, {:.1} messages/s (rows inserted: {}, duplicates skipped: {}, dead-lettered: {}; received: {}, deleted: {}, released: {}); {:.2} s in all, counting start-up and idle polls",
            self.processed(),
            self.busy.as_secs_f64(),
            self.busy_messages_per_second(),
            self.inserted,
            self.duplicates,
            self.dead_lettered,
            self.received,
            self.deleted,
            self.released,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Why the pipeline stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("receiving failed permanently, so the consumer stopped: {0}")]
    Receive(#[source] QueueError),
}

/// How one batch went; what a test can assert after driving [`Pipeline::process`].
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

/// What a received message became: a row to insert, or poison to dead-letter.
#[derive(Debug)]
pub enum Work {
    Row(Row),
    Poison(DeadLetter),
}

/// A received message on its way through the pipeline. Dropping it (deleted, released or
/// left to return) gives its share of the in-flight budget back.
#[derive(Debug)]
pub struct InFlight {
    pub message: ReceivedMessage,
    pub work: Work,
    /// Receipt plus `batch_timeout`: past it, the work on this message is abandoned.
    pub deadline: tokio::time::Instant,
    _share: Share,
}

/// The run's counts, kept by the pipeline itself.
#[derive(Debug)]
struct Tally {
    received: AtomicU64,
    inserted: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    deleted: AtomicU64,
    released: AtomicU64,
    /// Nanoseconds since the pipeline's clock when the first message arrived and the
    /// latest batch was done.
    first_received_at: AtomicU64,
    last_done_at: AtomicU64,
    /// Ingestion lag of committed rows (SentTimestamp to commit), in milliseconds: the sum,
    /// for a mean between two reports, and the largest since the last report.
    lag_sum_ms: AtomicU64,
    lag_max_ms: AtomicU64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            released: AtomicU64::new(0),
            first_received_at: AtomicU64::new(u64::MAX),
            last_done_at: AtomicU64::new(0),
            lag_sum_ms: AtomicU64::new(0),
            lag_max_ms: AtomicU64::new(0),
        }
    }
}

impl Tally {
    fn add(counter: &AtomicU64, count: impl TryInto<u64>) {
        counter.fetch_add(count.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Rows committed just now, sent at `sent_at`.
    fn committed(&self, sent_at: &[chrono::DateTime<chrono::Utc>]) {
        let now = chrono::Utc::now();
        let (mut sum, mut max) = (0u64, 0u64);
        for sent_at in sent_at {
            let lag = u64::try_from((now - *sent_at).num_milliseconds()).unwrap_or(0);
            sum = sum.saturating_add(lag);
            max = max.max(lag);
        }
        Self::add(&self.lag_sum_ms, sum);
        self.lag_max_ms.fetch_max(max, Ordering::Relaxed);
    }
}

/// Everything the stages share.
struct Context<Q, S> {
    queue: Arc<Q>,
    sink: S,
    /// What a body becomes: its envelope, key, columns, rules and masks.
    stream: Arc<Stream>,
    /// Every task of the pipeline runs in it, so each log line names its stream.
    span: tracing::Span,
    /// Its current key masks each row; the row records that key's id.
    keyring: Keyring,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    settings: Settings,
    budget: Budget,
    heartbeat: Heartbeat,
    tally: Tally,
    /// Open while writes fail systemically: nothing is received, the probe tries to write.
    breaker: breaker::Breaker,
    /// How many rows each database refusal dead-lettered lately.
    poison: verdict::PoisonLedger,
    /// The source queue's latest depth (from the probe or a drain's end check).
    backlog: watch::Sender<Option<report::Backlog>>,
    /// Transactions at a time: one permit per writer.
    writers: Arc<Semaphore>,
    /// The heartbeat, the probes and the breaker's probe: they outlive the stages, and stop
    /// on `done` once all work is over.
    background: TaskTracker,
    done: CancellationToken,
    clock: Instant,
    failure: Mutex<Option<PipelineError>>,
}

impl<Q, S> Context<Q, S> {
    fn nanos_since_start(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn batch_done(&self) {
        self.tally
            .last_done_at
            .fetch_max(self.nanos_since_start(), Ordering::Relaxed);
    }
}

/// The consumer: build it with [`Pipeline::new`], run it with [`Pipeline::run`].
pub struct Pipeline<Q, S> {
    context: Arc<Context<Q, S>>,
}

/// The writers a pipeline on `queue` runs: one on a queue that keeps an order within its
/// message groups (FIFO), whatever `settings` ask, so batches commit in the order they
/// closed.
pub fn writers_for(queue: &impl Queue, settings: &Settings) -> usize {
    if queue.keeps_group_order() {
        1
    } else {
        settings.writers.max(1)
    }
}

impl<Q: Queue, S: Sink> Pipeline<Q, S> {
    pub fn new(
        queue: Arc<Q>,
        sink: S,
        stream: Arc<Stream>,
        keyring: Keyring,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        settings: Settings,
    ) -> Self {
        let budget = Budget::new(
            settings.in_flight_messages,
            settings.in_flight_bytes,
            Arc::clone(&metrics),
        );
        let heartbeat = Heartbeat::new(settings.visibility_timeout);
        let poison = verdict::PoisonLedger::new(settings.poison_per_minute);
        let writers = Arc::new(Semaphore::new(writers_for(&*queue, &settings)));
        Self {
            context: Arc::new(Context {
                queue,
                sink,
                span: tracing::info_span!("stream", stream = %stream.name),
                stream,
                keyring,
                metrics,
                readiness,
                settings,
                budget,
                heartbeat,
                tally: Tally::default(),
                breaker: breaker::Breaker::default(),
                poison,
                backlog: watch::Sender::new(None),
                writers,
                background: TaskTracker::new(),
                done: CancellationToken::new(),
                clock: Instant::now(),
                failure: Mutex::new(None),
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.context.metrics
    }

    /// Runs the stages until `shutdown` is cancelled (or, with `drain`, until the queue is
    /// empty), then lets the work in flight finish. Never deletes anything that is not
    /// committed, so stopping at any point is safe.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<Summary, PipelineError> {
        let span = self.context.span.clone();
        self.run_stages(shutdown).instrument(span).await
    }

    async fn run_stages(&self, shutdown: CancellationToken) -> Result<Summary, PipelineError> {
        let started = Instant::now();
        let context = &self.context;
        // `stop` ends receiving: on the signal, on a completed drain, or on a fatal error.
        let stop = shutdown.child_token();
        let background = &context.background;
        let span = &context.span;
        background.spawn(
            heartbeat::run(Arc::clone(context), context.done.clone()).instrument(span.clone()),
        );
        background
            .spawn(probe::run(Arc::clone(context), context.done.clone()).instrument(span.clone()));
        background
            .spawn(report::run(Arc::clone(context), context.done.clone()).instrument(span.clone()));

        let (to_batcher, from_receivers) = mpsc::channel(context.settings.receivers_max.max(1));
        let work = TaskTracker::new();
        receive::start(Arc::clone(context), &work, to_batcher, stop.clone());
        let batcher_context = Arc::clone(context);
        let writes = work.clone();
        batch::run(
            from_receivers,
            context.settings.batch_messages,
            context.settings.batch_window,
            |batch| {
                let context = Arc::clone(&batcher_context);
                let writes = writes.clone();
                async move {
                    let Ok(permit) = Arc::clone(&context.writers).acquire_owned().await else {
                        return;
                    };
                    let span = context.span.clone();
                    writes.spawn(
                        async move {
                            write::write_and_delete(&context, batch, permit).await;
                        }
                        .instrument(span),
                    );
                }
            },
        )
        .await;
        // The batcher returns once every receiver is gone and its last batch is handed on.
        work.close();
        work.wait().await;
        context.done.cancel();
        background.close();
        background.wait().await;

        if let Some(error) = context.failure.lock().expect("not poisoned").take() {
            return Err(error);
        }
        Ok(self.summary(started.elapsed()))
    }

    /// The counts so far.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let tally = &self.context.tally;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Summary {
            received: count(&tally.received),
            inserted: count(&tally.inserted),
            duplicates: count(&tally.duplicates),
            dead_lettered: count(&tally.dead_lettered),
            deleted: count(&tally.deleted),
            released: count(&tally.released),
            elapsed,
            busy: Duration::from_nanos(
                count(&tally.last_done_at).saturating_sub(count(&tally.first_received_at)),
            ),
        }
    }

    /// For a shutdown that cannot wait for its work any longer (`SQS2PG_SHUTDOWN_TIMEOUT`):
    /// stops the heartbeat and hands back at once (visibility 0) every message still held,
    /// so another instance gets them now rather than after their visibility timeout.
    pub async fn abandon(&self) {
        self.context.done.cancel();
        heartbeat::release_held(&self.context, "held at the shutdown timeout").await;
    }

    /// What the run has done so far, and the backlog last seen: for a progress bar.
    pub fn progress(&self) -> report::Progress {
        report::Progress::of(&self.context)
    }

    /// Processes one received batch to the end, through the same stages as `run` (admit,
    /// write, dead-letter, delete): every message is committed, dead-lettered, or left to
    /// come back. For tests that drive one batch at a time.
    pub async fn process(&self, messages: Vec<ReceivedMessage>) -> BatchOutcome {
        let context = &self.context;
        let bytes = messages.iter().map(budget::message_bytes).sum();
        let reservation = context.budget.reserve(messages.len(), bytes).await;
        let batch = receive::admit(context, messages, reservation).await;
        let permit = Arc::clone(&context.writers)
            .acquire_owned()
            .await
            .expect("the writers' semaphore is never closed");
        write::write_and_delete(context, batch, permit).await
    }
}
