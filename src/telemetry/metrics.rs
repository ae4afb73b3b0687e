//! The only place that names a metric (exposed by [`crate::telemetry::http`]).
//!
//! Every label value comes from a closed enum, and every combination is created at start,
//! so each series exists (at zero) from the first scrape: dashboards and alerts see a flat
//! line instead of "no data" before the first event of its kind.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::adapters::sqs::QueueDepth;
use crate::domain::dead_letter::DeadLetterReason;
use crate::retry::{ErrorClass, Stage};

/// Every metric name the service exports. Dashboards and alert rules may use only these
/// (a test checks it).
pub mod names {
    pub const MESSAGES_RECEIVED: &str = "sqs2pg_messages_received_total";
    pub const MESSAGES_INSERTED: &str = "sqs2pg_messages_inserted_total";
    pub const MESSAGES_DUPLICATE: &str = "sqs2pg_messages_duplicate_total";
    pub const MESSAGES_DEAD_LETTERED: &str = "sqs2pg_messages_dead_lettered_total";
    pub const MESSAGES_DELETED: &str = "sqs2pg_messages_deleted_total";
    pub const MESSAGES_RELEASED: &str = "sqs2pg_messages_released_total";
    pub const BATCHES_ABANDONED: &str = "sqs2pg_batches_abandoned_total";
    pub const DELETE_FAILURES: &str = "sqs2pg_delete_failures_total";
    pub const RETRIES: &str = "sqs2pg_retries_total";
    pub const ERRORS: &str = "sqs2pg_errors_total";
    pub const VISIBILITY_EXTENSIONS: &str = "sqs2pg_visibility_extensions_total";
    pub const VISIBILITY_EXTENSION_FAILURES: &str = "sqs2pg_visibility_extension_failures_total";
    pub const BATCH_SIZE: &str = "sqs2pg_batch_size_messages";
    pub const COMMIT_DURATION: &str = "sqs2pg_commit_duration_seconds";
    pub const END_TO_END_LATENCY: &str = "sqs2pg_end_to_end_latency_seconds";
    pub const MESSAGES_IN_FLIGHT: &str = "sqs2pg_messages_in_flight";
    pub const QUEUE_MESSAGES: &str = "sqs2pg_queue_messages";
    pub const OLDEST_MESSAGE_AGE: &str = "sqs2pg_oldest_message_age_seconds";
    pub const READY: &str = "sqs2pg_ready";
    pub const BUILD_INFO: &str = "sqs2pg_build_info";

    /// All of the above, for consistency checks.
    pub const ALL: [&str; 20] = [
        MESSAGES_RECEIVED,
        MESSAGES_INSERTED,
        MESSAGES_DUPLICATE,
        MESSAGES_DEAD_LETTERED,
        MESSAGES_DELETED,
        MESSAGES_RELEASED,
        BATCHES_ABANDONED,
        DELETE_FAILURES,
        RETRIES,
        ERRORS,
        VISIBILITY_EXTENSIONS,
        VISIBILITY_EXTENSION_FAILURES,
        BATCH_SIZE,
        COMMIT_DURATION,
        END_TO_END_LATENCY,
        MESSAGES_IN_FLIGHT,
        QUEUE_MESSAGES,
        OLDEST_MESSAGE_AGE,
        READY,
        BUILD_INFO,
    ];
}

/// Which queue a depth gauge describes.
#[derive(Debug, Clone, Copy)]
pub enum QueueRole {
    Source,
    DeadLetter,
}

impl QueueRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// The service's metrics, in a registry of their own so that tests can run several
/// consumers in one process and read each one's counts.
pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounter,
    pub messages_inserted: IntCounter,
    pub messages_duplicate: IntCounter,
    messages_dead_lettered: IntCounterVec,
    pub messages_deleted: IntCounter,
    pub messages_released: IntCounter,
    pub batches_abandoned: IntCounter,
    pub delete_failures: IntCounter,
    retries: IntCounterVec,
    errors: IntCounterVec,
    pub visibility_extensions: IntCounter,
    pub visibility_extension_failures: IntCounter,
    pub batch_size: Histogram,
    pub commit_duration: Histogram,
    pub end_to_end_latency: Histogram,
    pub messages_in_flight: IntGauge,
    queue_messages: IntGaugeVec,
    pub oldest_message_age: IntGauge,
    ready: IntGauge,
    build_info: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric")
        };
        let metrics = Self {
            registry: Registry::new(),
            messages_received: counter(
                names::MESSAGES_RECEIVED,
                "Messages received from the source queue.",
            ),
            messages_inserted: counter(names::MESSAGES_INSERTED, "Messages that became a new row."),
            messages_duplicate: counter(
                names::MESSAGES_DUPLICATE,
                "Redelivered messages skipped: their row already existed, or this copy was already dead-lettered.",
            ),
            messages_dead_lettered: counter_vec(
                names::MESSAGES_DEAD_LETTERED,
                "Messages sent to the dead-letter queue, by reason.",
                &["reason"],
            ),
            messages_deleted: counter(
                names::MESSAGES_DELETED,
                "Messages deleted from the source queue after commit.",
            ),
            messages_released: counter(
                names::MESSAGES_RELEASED,
                "Messages handed back to the queue unprocessed: received during shutdown, or of an abandoned batch.",
            ),
            batches_abandoned: counter(
                names::BATCHES_ABANDONED,
                "Batches abandoned at SQS2PG_BATCH_TIMEOUT; their messages were released for redelivery.",
            ),
            delete_failures: counter(
                names::DELETE_FAILURES,
                "Deletes that failed for good; the message will be redelivered and skipped as a duplicate.",
            ),
            retries: counter_vec(
                names::RETRIES,
                "Retried failures, by stage and error class.",
                &["stage", "class"],
            ),
            errors: counter_vec(
                names::ERRORS,
                "Failed calls, retried or not, by stage and error class.",
                &["stage", "class"],
            ),
            visibility_extensions: counter(
                names::VISIBILITY_EXTENSIONS,
                "Visibility-timeout extensions of in-flight messages.",
            ),
            visibility_extension_failures: counter(
                names::VISIBILITY_EXTENSION_FAILURES,
                "Visibility-timeout extensions that failed.",
            ),
            batch_size: histogram(
                names::BATCH_SIZE,
                "Messages per batch: gathered from one or more receives, committed together.",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            ),
            commit_duration: histogram(
                names::COMMIT_DURATION,
                "Time to insert and commit one batch in PostgreSQL.",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"),
            ),
            end_to_end_latency: histogram(
                names::END_TO_END_LATENCY,
                "Commit time minus the message's SentTimestamp.",
                prometheus::exponential_buckets(0.01, 2.0, 20).expect("valid buckets"),
            ),
            messages_in_flight: gauge(
                names::MESSAGES_IN_FLIGHT,
                "Messages received and not yet deleted or released.",
            ),
            queue_messages: IntGaugeVec::new(
                Opts::new(
                    names::QUEUE_MESSAGES,
                    "Queue depth from GetQueueAttributes, by queue and state.",
                ),
                &["queue", "state"],
            )
            .expect("valid metric"),
            oldest_message_age: gauge(
                names::OLDEST_MESSAGE_AGE,
                "Age of the oldest message in each receive loop's latest batch, the maximum over loops (0 when all were empty).",
            ),
            ready: gauge(
                names::READY,
                "1 when the database and SQS are reachable and the service is not shutting down.",
            ),
            build_info: IntGaugeVec::new(
                Opts::new(names::BUILD_INFO, "Always 1; labels carry the build."),
                &["version"],
            )
            .expect("valid metric"),
        };
        metrics.register_all();
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in DeadLetterReason::ALL {
            metrics
                .messages_dead_lettered
                .with_label_values(&[reason.as_str()]);
        }
        for stage in Stage::ALL {
            for class in [ErrorClass::Transient, ErrorClass::Permanent] {
                metrics
                    .retries
                    .with_label_values(&[stage.as_str(), class.as_str()]);
                metrics
                    .errors
                    .with_label_values(&[stage.as_str(), class.as_str()]);
            }
        }
        for role in [QueueRole::Source, QueueRole::DeadLetter] {
            metrics.set_queue_depth(role, QueueDepth::default());
        }
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.messages_received.clone()),
            Box::new(self.messages_inserted.clone()),
            Box::new(self.messages_duplicate.clone()),
            Box::new(self.messages_dead_lettered.clone()),
            Box::new(self.messages_deleted.clone()),
            Box::new(self.messages_released.clone()),
            Box::new(self.batches_abandoned.clone()),
            Box::new(self.delete_failures.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.visibility_extensions.clone()),
            Box::new(self.visibility_extension_failures.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.commit_duration.clone()),
            Box::new(self.end_to_end_latency.clone()),
            Box::new(self.messages_in_flight.clone()),
            Box::new(self.queue_messages.clone()),
            Box::new(self.oldest_message_age.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.build_info.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    pub fn dead_lettered(&self, reason: DeadLetterReason) {
        self.messages_dead_lettered
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn dead_lettered_total(&self, reason: DeadLetterReason) -> u64 {
        self.messages_dead_lettered
            .with_label_values(&[reason.as_str()])
            .get()
    }

    pub fn retry(&self, stage: Stage, class: ErrorClass) {
        self.retries
            .with_label_values(&[stage.as_str(), class.as_str()])
            .inc();
        self.error(stage, class);
    }

    pub fn retries_total(&self, stage: Stage, class: ErrorClass) -> u64 {
        self.retries
            .with_label_values(&[stage.as_str(), class.as_str()])
            .get()
    }

    /// A failure that is not retried (or not retried any more).
    pub fn error(&self, stage: Stage, class: ErrorClass) {
        self.errors
            .with_label_values(&[stage.as_str(), class.as_str()])
            .inc();
    }

    pub fn set_queue_depth(&self, role: QueueRole, depth: QueueDepth) {
        for (state, value) in [
            ("visible", depth.visible),
            ("in_flight", depth.in_flight),
            ("delayed", depth.delayed),
        ] {
            self.queue_messages
                .with_label_values(&[role.as_str(), state])
                .set(value as i64);
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How often the queue depth is polled with GetQueueAttributes.
pub const QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_metric_is_exported_from_the_start() {
        let text = Metrics::new().render();
        for name in names::ALL {
            let base = name.trim_end_matches("_total");
            assert!(
                text.contains(&format!("# TYPE {base}")),
                "{name} is not exported"
            );
        }
    }
}
