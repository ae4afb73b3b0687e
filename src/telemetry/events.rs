//! Typed telemetry events, as Vector's `internal_events`: each event's one [`Event::emit`]
//! writes its log line and updates its metrics, so no other code logs an outcome and counts
//! it by hand, and the two cannot drift apart. Log style: a capitalized message ending in a
//! period, the error in a field named `error`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::adapters::sqs::QueueDepth;
use crate::domain::dead_letter::{DeadLetterReason, Distrust};
use crate::retry::{ErrorClass, Loudness, RetryReport, Stage};
use crate::telemetry::http::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, ShedReason};
use crate::telemetry::metrics::{Metrics, PauseKind, QueueRole};
use crate::telemetry::throttle::Verdict;

/// Something worth telling an operator.
pub trait Event {
    fn emit(self, metrics: &Metrics);
}

impl Metrics {
    /// Emits `event`: its log line and its metrics.
    pub fn emit(&self, event: impl Event) {
        event.emit(self);
    }

    /// The callback [`crate::retry::retry`] reports through.
    pub fn retry_reporter(&self) -> impl Fn(RetryReport<'_>) + Sync + '_ {
        move |report| self.emit(report)
    }
}

impl Event for RetryReport<'_> {
    fn emit(self, metrics: &Metrics) {
        if let RetryReport::Retrying { stage, .. } = self {
            metrics.retried(stage);
        }
        log_retry(self);
    }
}

/// The log line of a retry report, without metrics: for the one-shot commands (`send`, `dlq
/// redrive`), which export none. [`Metrics::retry_reporter`] logs through this too.
pub fn log_retry(report: RetryReport<'_>) {
    match report {
        RetryReport::Retrying {
            stage,
            error,
            retry_in,
            attempts,
            failing_for,
            loudness,
        } => {
            let retry_in_ms = retry_in.as_millis() as u64;
            let stage = stage.as_str();
            match loudness {
                Loudness::First => tracing::warn!(
                    message = "Transient failure; retrying.",
                    stage,
                    error = %error,
                    retry_in_ms,
                ),
                Loudness::Reminder => tracing::warn!(
                    message = "Still failing; retrying.",
                    stage,
                    error = %error,
                    attempts,
                    failing_for_s = failing_for.as_secs(),
                    retry_in_ms,
                ),
                Loudness::Quiet => tracing::debug!(
                    message = "Transient failure; retrying.",
                    stage,
                    error = %error,
                    retry_in_ms,
                ),
            }
        }
        RetryReport::Recovered {
            stage,
            attempts,
            failing_for,
        } => tracing::info!(
            message = "Recovered; the retried call succeeded.",
            stage = stage.as_str(),
            attempts,
            failing_for_s = failing_for.as_secs_f64(),
        ),
    }
}

/// A call that failed for good (permanently, or its retries gave up). `consequence` says
/// what happens now, for the log line: "Could not dead-letter …; they will come back."
pub struct CallFailed<'a> {
    pub stage: Stage,
    pub class: ErrorClass,
    pub error: &'a dyn std::fmt::Display,
    pub consequence: &'static str,
}

impl Event for CallFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.failed(self.stage, self.class);
        tracing::warn!(
            message = self.consequence,
            stage = self.stage.as_str(),
            class = self.class.as_str(),
            error = %self.error,
        );
    }
}

/// Messages arrived from the source queue.
#[derive(Debug)]
pub struct MessagesReceived {
    pub count: usize,
    /// Age of the oldest of them (0 for none).
    pub oldest_age: Duration,
}

impl Event for MessagesReceived {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_received.inc_by(self.count as u64);
        metrics.messages_in_flight.add(self.count as i64);
        metrics
            .oldest_message_age
            .set(self.oldest_age.as_secs() as i64);
        tracing::trace!(message = "Received messages.", count = self.count);
    }
}

/// How many receivers poll now (the adaptive concurrency moved).
#[derive(Debug)]
pub struct ReceiversChanged {
    pub receivers: usize,
    pub why: &'static str,
}

impl Event for ReceiversChanged {
    fn emit(self, metrics: &Metrics) {
        metrics.receivers.set(self.receivers as i64);
        tracing::debug!(
            message = "Receivers changed.",
            receivers = self.receivers,
            why = self.why
        );
    }
}

/// A batch was committed: `inserted` new rows, `duplicates` skipped.
#[derive(Debug)]
pub struct BatchCommitted<'a> {
    pub inserted: u64,
    pub duplicates: u64,
    pub commit: Duration,
    /// SentTimestamp of each committed row, for the end-to-end latency.
    pub sent_at: &'a [DateTime<Utc>],
}

impl Event for BatchCommitted<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_inserted.inc_by(self.inserted);
        metrics.messages_duplicate.inc_by(self.duplicates);
        metrics.commit_duration.observe(self.commit.as_secs_f64());
        let now = Utc::now();
        metrics.set_last_commit(now);
        for sent_at in self.sent_at {
            let latency = (now - *sent_at).to_std().unwrap_or_default();
            metrics.end_to_end_latency.observe(latency.as_secs_f64());
        }
        if self.duplicates > 0 {
            tracing::debug!(
                message = "Skipped redelivered messages.",
                duplicates = self.duplicates
            );
        }
    }
}

/// A batch closed and went to a writer.
#[derive(Debug)]
pub struct BatchClosed {
    pub messages: usize,
}

impl Event for BatchClosed {
    fn emit(self, metrics: &Metrics) {
        metrics.batch_size.observe(self.messages as f64);
    }
}

/// The database refused a batch for a permanent reason; it is split to find the guilty rows.
#[derive(Debug)]
pub struct BatchSplit<'a> {
    pub rows: usize,
    pub error: &'a str,
}

impl Event for BatchSplit<'_> {
    fn emit(self, _: &Metrics) {
        tracing::info!(
            message = "Database refused a batch; splitting it to isolate the guilty rows.",
            rows = self.rows,
            error = self.error,
        );
    }
}

/// The database refused one row for good; its message is dead-lettered.
#[derive(Debug)]
pub struct RowRefused<'a> {
    pub message_id: &'a str,
    pub error: &'a str,
}

impl Event for RowRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.failed(Stage::Write, ErrorClass::Permanent);
        tracing::warn!(
            message = "Database refused a row; dead-lettering its message.",
            message_id = self.message_id,
            error = self.error,
        );
    }
}

/// A poison message went to the dead-letter queue (and its copy was recorded).
#[derive(Debug)]
pub struct DeadLettered<'a> {
    pub message_id: &'a str,
    pub reason: DeadLetterReason,
    /// Why, without any raw value from the body.
    pub detail: &'a str,
}

impl Event for DeadLettered<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.dead_lettered(self.reason);
        let verdict = metrics.dead_letter_log.admit(self.reason);
        if verdict == Verdict::Count {
            return;
        }
        tracing::warn!(
            message = "Dead-lettered a poison message.",
            message_id = self.message_id,
            reason = self.reason.as_str(),
            detail = self.detail,
        );
        if verdict == Verdict::LogLast {
            tracing::warn!(
                message = "Many poison messages for one reason: the rest of this minute's are counted, then summarised in one line.",
                reason = self.reason.as_str(),
            );
        }
    }
}

/// A window of the dead-letter log ended: one line per reason for the dead letters that
/// were only counted in it ([`crate::telemetry::throttle`]).
#[derive(Debug)]
pub struct DeadLetterWindowEnded {
    /// How long the window lasted.
    pub window: Duration,
}

impl Event for DeadLetterWindowEnded {
    fn emit(self, metrics: &Metrics) {
        for (reason, count) in metrics.dead_letter_log.end_window() {
            let window = humantime::format_duration(Duration::from_secs(self.window.as_secs()));
            tracing::warn!(
                message = %format_args!(
                    "{count} more dead-lettered for reason {reason} in the last {window}."
                ),
                reason = reason.as_str(),
                count,
                window_s = self.window.as_secs_f64(),
            );
        }
    }
}

/// A received message carried an original id or timestamp that sqs2pg did not write (or
/// tagged under a key no longer in the ring): they were ignored. Names the message, never
/// the attributes' values: whoever sent them chose them.
#[derive(Debug)]
pub struct UntrustedAttributes<'a> {
    /// The message's own SQS id, now its key.
    pub message_id: &'a str,
    pub why: Distrust,
}

impl Event for UntrustedAttributes<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics
            .untrusted_attributes
            .with_label_values(&[self.why.as_str()])
            .inc();
        tracing::warn!(
            message = "Ignored an original id and timestamp that sqs2pg did not write; the message is keyed and dated as a fresh one.",
            message_id = self.message_id,
            reason = self.why.as_str(),
        );
    }
}

/// Copies already dead-lettered came back (a delete was lost): skipped like duplicates.
#[derive(Debug)]
pub struct DeadLetterRedelivered {
    pub count: usize,
}

impl Event for DeadLetterRedelivered {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_duplicate.inc_by(self.count as u64);
        tracing::debug!(
            message = "Skipped redelivered dead letters.",
            count = self.count
        );
    }
}

/// The dead-letter queue refused one message; it comes back and is tried again.
#[derive(Debug)]
pub struct DeadLetterRefused<'a> {
    pub message_id: &'a str,
    pub code: &'a str,
}

impl Event for DeadLetterRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.failed(Stage::DeadLetter, ErrorClass::Transient);
        tracing::warn!(
            message = "Dead-letter queue refused a message; it will come back and be tried again.",
            message_id = self.message_id,
            code = self.code,
        );
    }
}

/// Messages deleted from the source queue after their commit.
#[derive(Debug)]
pub struct MessagesDeleted {
    pub count: usize,
}

impl Event for MessagesDeleted {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_deleted.inc_by(self.count as u64);
    }
}

/// A committed message whose delete SQS refused for good; it comes back as a duplicate.
#[derive(Debug)]
pub struct DeleteRefused<'a> {
    pub message_id: &'a str,
    pub code: &'a str,
}

impl Event for DeleteRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.delete_failures.inc();
        metrics.failed(Stage::Delete, ErrorClass::Permanent);
        tracing::warn!(
            message = "Delete refused; the message will be redelivered and skipped as a duplicate.",
            message_id = self.message_id,
            code = self.code,
        );
    }
}

/// Deletes given up on after their retries: the messages come back as duplicates.
pub struct DeletesGivenUp<'a> {
    pub count: usize,
    pub error: &'a dyn std::fmt::Display,
}

impl Event for DeletesGivenUp<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.delete_failures.inc_by(self.count as u64);
        metrics.failed(Stage::Delete, ErrorClass::Transient);
        tracing::warn!(
            message = "Gave up deleting committed messages; they will be redelivered and skipped as duplicates.",
            count = self.count,
            error = %self.error,
        );
    }
}

/// Messages are no longer in flight here: deleted, released, or left to return.
#[derive(Debug)]
pub struct MessagesSettled {
    pub count: usize,
}

impl Event for MessagesSettled {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_in_flight.sub(self.count as i64);
    }
}

/// Messages handed back to the queue at once (visibility 0).
#[derive(Debug)]
pub struct MessagesReleased {
    pub count: usize,
    pub why: &'static str,
}

impl Event for MessagesReleased {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_released.inc_by(self.count as u64);
        tracing::info!(
            message = "Released messages for redelivery.",
            why = self.why,
            count = self.count
        );
    }
}

/// Messages handed back by no longer extending them: they return to the queue when their
/// visibility timeout runs out.
#[derive(Debug)]
pub struct MessagesLetGo {
    pub count: usize,
    pub why: &'static str,
}

impl Event for MessagesLetGo {
    fn emit(self, metrics: &Metrics) {
        metrics.messages_released.inc_by(self.count as u64);
        tracing::info!(
            message =
                "Let messages go; they return to the queue when their visibility timeout runs out.",
            why = self.why,
            count = self.count
        );
    }
}

/// A batch reached `SQS2PG_BATCH_TIMEOUT`; its messages are released.
#[derive(Debug)]
pub struct BatchAbandoned {
    pub messages: usize,
    pub timeout: Duration,
}

impl Event for BatchAbandoned {
    fn emit(self, metrics: &Metrics) {
        metrics.batches_abandoned.inc();
        tracing::warn!(
            message = "Batch exceeded SQS2PG_BATCH_TIMEOUT; abandoning it and releasing its messages for redelivery.",
            messages = self.messages,
            timeout_s = self.timeout.as_secs_f64(),
        );
    }
}

/// One heartbeat call: `extended` messages got more time, `failed` did not.
pub struct VisibilityExtended<'a> {
    pub extended: usize,
    pub failed: usize,
    /// The whole call's error, when it failed outright.
    pub error: Option<&'a dyn std::fmt::Display>,
    pub class: ErrorClass,
}

impl Event for VisibilityExtended<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.visibility_extensions.inc_by(self.extended as u64);
        if self.failed == 0 {
            return;
        }
        metrics
            .visibility_extension_failures
            .inc_by(self.failed as u64);
        metrics.failed(Stage::ExtendVisibility, self.class);
        match self.error {
            Some(error) => tracing::warn!(
                message = "Failed to extend visibility; trying again at the next beat.",
                count = self.failed,
                %error,
            ),
            None => tracing::warn!(
                message = "Some visibility extensions failed; trying again at the next beat.",
                count = self.failed,
            ),
        }
    }
}

/// A depth poll of one queue.
#[derive(Debug)]
pub struct QueueDepthPolled {
    pub role: QueueRole,
    pub depth: crate::adapters::sqs::QueueDepth,
}

impl Event for QueueDepthPolled {
    fn emit(self, metrics: &Metrics) {
        metrics.set_queue_depth(self.role, self.depth);
    }
}

/// The queue depth could not be read; `consequence` says what that means here.
pub struct QueueDepthUnavailable<'a> {
    pub error: &'a dyn std::fmt::Display,
    pub consequence: &'static str,
}

impl Event for QueueDepthUnavailable<'_> {
    fn emit(self, _: &Metrics) {
        tracing::warn!(message = self.consequence, error = %self.error);
    }
}

/// The writes pause: the breaker opened (see `crate::pipeline::breaker`).
pub struct WritesPaused<'a> {
    pub cause: &'a dyn std::fmt::Display,
    pub kind: PauseKind,
}

impl Event for WritesPaused<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.writes_paused.set(1);
        metrics
            .write_pauses
            .with_label_values(&[self.kind.as_str()])
            .inc();
        tracing::error!(
            message = "Writes fail systemically; ingestion pauses until a probe write commits. Messages go back to the queue, none to the dead-letter queue.",
            cause = %self.cause,
            kind = self.kind.as_str(),
        );
    }
}

/// The writes are still paused: a reminder, at most once a minute.
pub struct WritesStillPaused<'a> {
    pub cause: &'a dyn std::fmt::Display,
    pub paused_for: Duration,
    pub probes: u64,
}

impl Event for WritesStillPaused<'_> {
    fn emit(self, _: &Metrics) {
        tracing::error!(
            message = "Writes are still paused; probing.",
            cause = %self.cause,
            paused_for_s = self.paused_for.as_secs(),
            probes = self.probes,
        );
    }
}

/// A probe of the paused write path failed at `step` (canary, receive or write).
pub struct WriteProbeFailed<'a> {
    pub step: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl Event for WriteProbeFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.write_probes.inc();
        tracing::debug!(
            message = "Probe of the paused writes failed.",
            step = self.step,
            error = %self.error,
        );
    }
}

/// A probe write committed: the writes resume.
#[derive(Debug)]
pub struct WritesResumed {
    pub paused_for: Duration,
    pub probes: u64,
}

impl Event for WritesResumed {
    fn emit(self, metrics: &Metrics) {
        metrics.writes_paused.set(0);
        metrics.write_probes.inc();
        tracing::warn!(
            message = "A probe write committed; writes and receiving resume.",
            paused_for_s = self.paused_for.as_secs(),
            probes = self.probes,
        );
    }
}

/// A drain's progress line, off a terminal (on one, a progress bar shows the same).
#[derive(Debug)]
pub struct DrainProgress {
    /// Messages done: rows inserted, duplicates skipped and dead letters.
    pub processed: u64,
    pub inserted: u64,
    pub dead_lettered: u64,
    /// Messages done per second since the previous line.
    pub per_second: f64,
    /// What SQS counts still in the queue (visible, in flight, delayed), if read yet.
    pub remaining: Option<u64>,
}

impl Event for DrainProgress {
    fn emit(self, _: &Metrics) {
        let eta_s = self
            .remaining
            .filter(|_| self.per_second > 0.0)
            .map(|remaining| (remaining as f64 / self.per_second).ceil());
        tracing::info!(
            message = "Draining.",
            processed = self.processed,
            inserted = self.inserted,
            dead_lettered = self.dead_lettered,
            messages_per_second = rounded(self.per_second, 1),
            remaining = self.remaining,
            eta_s,
        );
    }
}

/// An always-on run's periodic summary: what the last interval did, and where it stands.
#[derive(Debug)]
pub struct RunReport {
    pub interval: Duration,
    /// Messages done in the interval: rows inserted, duplicates skipped and dead letters.
    pub processed: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// Mean and largest ingestion lag (SentTimestamp to commit) of the interval's rows.
    pub lag_mean: Option<Duration>,
    pub lag_max: Option<Duration>,
    /// The source queue's depth, last read.
    pub backlog: Option<QueueDepth>,
}

impl Event for RunReport {
    fn emit(self, _: &Metrics) {
        let interval_s = self.interval.as_secs_f64();
        let seconds = |lag: Option<Duration>| lag.map(|lag| rounded(lag.as_secs_f64(), 3));
        tracing::info!(
            message = "Ingestion summary.",
            interval_s = rounded(interval_s, 1),
            processed = self.processed,
            messages_per_second = rounded(self.processed as f64 / interval_s.max(1e-9), 1),
            inserted = self.inserted,
            duplicates = self.duplicates,
            dead_lettered = self.dead_lettered,
            lag_mean_s = seconds(self.lag_mean),
            lag_max_s = seconds(self.lag_max),
            backlog_visible = self.backlog.map(|depth| depth.visible),
            backlog_in_flight = self.backlog.map(|depth| depth.in_flight),
            backlog_delayed = self.backlog.map(|depth| depth.delayed),
        );
    }
}

/// `value` to `digits` decimals: log fields that people read stay short.
fn rounded(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A drain found the queue empty and everything acknowledged.
#[derive(Debug)]
pub struct QueueDrained;

impl Event for QueueDrained {
    fn emit(self, _: &Metrics) {
        tracing::info!(message = "Queue drained.");
    }
}

/// At start: which keys the ring holds and which one masks new rows. Ids only; they are
/// not secret, and an operator rotating keys needs to see which one is in use.
pub struct KeyringLoaded<'a> {
    pub keyring: &'a crate::domain::keyring::Keyring,
}

impl Event for KeyringLoaded<'_> {
    fn emit(self, _: &Metrics) {
        let ids: Vec<&str> = self.keyring.ids().map(|id| id.as_str()).collect();
        tracing::info!(
            message = "Masking with the current HMAC key; the others serve lookups only.",
            current_key_id = %self.keyring.current_id(),
            key_ids = %ids.join(","),
        );
    }
}

/// At start: the open-file soft limit, raised to the hard limit as Go's runtime does (Rust
/// leaves it, and containers now start at 1024): every socket to SQS, PostgreSQL and the
/// metrics port is a file descriptor.
#[derive(Debug)]
pub enum OpenFileLimit {
    Raised {
        before: u64,
        after: u64,
        hard: u64,
    },
    NotRaised {
        before: u64,
        hard: u64,
        error: std::io::Error,
    },
    /// The limit could not even be read.
    Unknown {
        error: std::io::Error,
    },
}

impl Event for OpenFileLimit {
    fn emit(self, _: &Metrics) {
        match self {
            Self::Raised {
                before,
                after,
                hard,
            } => tracing::info!(
                message = "Set the open-file soft limit to the hard limit.",
                before,
                after,
                hard,
            ),
            Self::NotRaised {
                before,
                hard,
                error,
            } => tracing::warn!(
                message = "Could not raise the open-file soft limit; running with it.",
                before,
                hard,
                %error,
            ),
            Self::Unknown { error } => tracing::warn!(
                message = "Could not read the open-file limit; running with it.",
                %error,
            ),
        }
    }
}

/// The metrics port's server closed a connection itself ([`crate::telemetry::http`]).
#[derive(Debug)]
pub struct ConnectionShed {
    pub reason: ShedReason,
    /// Connections open now.
    pub open: usize,
    /// Log at WARN (the first in a minute) rather than DEBUG: a flood would bury every
    /// other line, and the counter has every one.
    pub loud: bool,
}

impl Event for ConnectionShed {
    fn emit(self, metrics: &Metrics) {
        metrics.connection_shed(self.reason);
        let message = match self.reason {
            ShedReason::Evicted => {
                "Metrics port at its connection cap; closed the least recently active idle connection to admit a new one."
            }
            ShedReason::Refused => {
                "Metrics port at its connection cap with every connection answering; refused a new one."
            }
            ShedReason::HeaderTimeout => {
                "Closed a connection to the metrics port that sent no complete request in time."
            }
        };
        let reason = self.reason.as_str();
        if self.loud {
            tracing::warn!(
                message,
                reason,
                open = self.open,
                limit = MAX_CONNECTIONS,
                header_read_timeout_s = HEADER_READ_TIMEOUT.as_secs(),
                more =
                    "counted in sqs2pg_http_connections_shed_total, logged at most once a minute",
            );
        } else {
            tracing::debug!(message, reason, open = self.open);
        }
    }
}

/// An accept on the metrics port failed: EMFILE (out of file descriptors) or the like.
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
    /// The pause before the next accept, if any (none after a connection reset early).
    pub pause: Option<Duration>,
    /// Log at WARN (the first in a minute) rather than DEBUG.
    pub loud: bool,
}

impl Event for AcceptFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.http_accept_errors.inc();
        let pause_ms = self.pause.map(|pause| pause.as_millis() as u64);
        if self.loud {
            tracing::warn!(
                message = "Could not accept a connection on the metrics port; counted in sqs2pg_http_accept_errors_total, logged at most once a minute.",
                error = %self.error,
                pause_ms,
            );
        } else {
            tracing::debug!(
                message = "Could not accept a connection on the metrics port.",
                error = %self.error,
                pause_ms,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_counts_under_its_stage_and_as_a_transient_error() {
        let metrics = Metrics::new();
        let error = "connection refused";
        for loudness in [Loudness::First, Loudness::Quiet, Loudness::Reminder] {
            metrics.emit(RetryReport::Retrying {
                stage: Stage::Write,
                error: &error,
                retry_in: Duration::from_millis(100),
                attempts: 1,
                failing_for: Duration::ZERO,
                loudness,
            });
        }
        assert_eq!(metrics.retries_total(Stage::Write), 3);
        assert_eq!(metrics.errors_total(Stage::Write, ErrorClass::Transient), 3);
        assert_eq!(metrics.retries_total(Stage::Delete), 0);
    }

    #[test]
    fn received_then_settled_leaves_nothing_in_flight() {
        let metrics = Metrics::new();
        metrics.emit(MessagesReceived {
            count: 7,
            oldest_age: Duration::from_secs(3),
        });
        assert_eq!(metrics.messages_in_flight.get(), 7);
        metrics.emit(MessagesSettled { count: 7 });
        assert_eq!(metrics.messages_in_flight.get(), 0);
        assert_eq!(metrics.messages_received(), 7);
        assert_eq!(metrics.oldest_message_age_seconds(), 3);
    }
}
