//! The only place that names a metric (exposed by [`crate::telemetry::http`]), in one list:
//! the struct, the registration and [`names::ALL`] are all generated from it.
//!
//! Every label value comes from a closed enum, and every combination is created at start,
//! so each series exists (at zero) from the first scrape: dashboards and alerts see a flat
//! line instead of "no data" before the first event of its kind. Only
//! [`crate::telemetry::events`] updates these; the pipeline emits events.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use strum::IntoEnumIterator;

use crate::adapters::sqs::QueueDepth;
use crate::domain::dead_letter::{DeadLetterReason, Distrust};
use crate::retry::{ErrorClass, Stage};
use crate::telemetry::http::ShedReason;
use crate::telemetry::throttle::DeadLetterLog;

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn float_gauge(name: &str, help: &str) -> Gauge {
    Gauge::new(name, help).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
}

/// Declares every metric once: `field (NAME): Type = constructor("name", "help", extra…)`.
macro_rules! metrics {
    ($( $field:ident ($constant:ident) : $kind:ty = $make:ident($name:literal, $help:literal $(, $extra:expr)* ); )*) => {
        /// Every metric name the service exports. Dashboards and alert rules may use only
        /// these (a test checks it).
        pub mod names {
            $( pub const $constant: &str = $name; )*
            pub const ALL: [&str; [$($name),*].len()] = [$($name),*];
        }

        /// The service's metrics, in a registry of their own so that tests can run several
        /// pipelines in one process and read each one's counts.
        pub struct Metrics {
            registry: Registry,
            /// Not a metric: which dead letters are logged one by one
            /// ([`crate::telemetry::throttle`]).
            pub(crate) dead_letter_log: DeadLetterLog,
            $( pub(crate) $field: $kind, )*
        }

        impl Metrics {
            fn unregistered(registry: Registry) -> Self {
                Self {
                    registry,
                    dead_letter_log: DeadLetterLog::default(),
                    $( $field: $make($name, $help $(, $extra)*), )*
                }
            }

            /// Registers the metrics whose names `keep` says.
            fn register_where(&self, keep: impl Fn(&str) -> bool) {
                $(
                    if keep($name) {
                        self.registry
                            .register(Box::new(self.$field.clone()))
                            .expect("metric names are unique");
                    }
                )*
            }
        }
    };
}

metrics! {
    messages_received (MESSAGES_RECEIVED): IntCounter = counter(
        "sqs2pg_messages_received_total", "Messages received from the source queue.");
    messages_inserted (MESSAGES_INSERTED): IntCounter = counter(
        "sqs2pg_messages_inserted_total", "Messages that became a new row.");
    messages_duplicate (MESSAGES_DUPLICATE): IntCounter = counter(
        "sqs2pg_messages_duplicate_total",
        "Redelivered messages skipped: their row already existed, or this copy was already dead-lettered.");
    messages_dead_lettered (MESSAGES_DEAD_LETTERED): IntCounterVec = counter_vec(
        "sqs2pg_messages_dead_lettered_total",
        "Messages sent to the dead-letter queue, by reason.", &["reason"]);
    messages_deleted (MESSAGES_DELETED): IntCounter = counter(
        "sqs2pg_messages_deleted_total", "Messages deleted from the source queue after commit.");
    messages_released (MESSAGES_RELEASED): IntCounter = counter(
        "sqs2pg_messages_released_total",
        "Messages handed back to the queue unprocessed: while the writes are paused, of an abandoned batch, or still held when a shutdown timed out.");
    batches_abandoned (BATCHES_ABANDONED): IntCounter = counter(
        "sqs2pg_batches_abandoned_total",
        "Batches abandoned at SQS2PG_BATCH_TIMEOUT; their messages were let go for redelivery and the writes paused.");
    untrusted_attributes (UNTRUSTED_ATTRIBUTES): IntCounterVec = counter_vec(
        "sqs2pg_untrusted_attributes_total",
        "Messages whose original id or timestamp attributes sqs2pg did not write (no tag, or one that does not verify): keyed and dated as fresh messages. By why.",
        &["reason"]);
    delete_failures (DELETE_FAILURES): IntCounter = counter(
        "sqs2pg_delete_failures_total",
        "Deletes that failed for good; the message will be redelivered and skipped as a duplicate.");
    retries (RETRIES): IntCounterVec = counter_vec(
        "sqs2pg_retries_total", "Failed calls retried after a transient failure, by stage.",
        &["stage"]);
    errors (ERRORS): IntCounterVec = counter_vec(
        "sqs2pg_errors_total", "Failed calls, retried or not, by stage and error class.",
        &["stage", "class"]);
    visibility_extensions (VISIBILITY_EXTENSIONS): IntCounter = counter(
        "sqs2pg_visibility_extensions_total",
        "Visibility-timeout extensions of in-flight messages.");
    visibility_extension_failures (VISIBILITY_EXTENSION_FAILURES): IntCounter = counter(
        "sqs2pg_visibility_extension_failures_total",
        "Visibility-timeout extensions that failed.");
    batch_size (BATCH_SIZE): Histogram = histogram(
        "sqs2pg_batch_size_messages",
        "Messages per batch: gathered from one or more receives, committed together.",
        vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
    commit_duration (COMMIT_DURATION): Histogram = histogram(
        "sqs2pg_commit_duration_seconds", "Time to insert and commit one batch in PostgreSQL.",
        prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"));
    end_to_end_latency (END_TO_END_LATENCY): Histogram = histogram(
        "sqs2pg_end_to_end_latency_seconds", "Commit time minus the message's SentTimestamp.",
        prometheus::exponential_buckets(0.01, 2.0, 20).expect("valid buckets"));
    messages_in_flight (MESSAGES_IN_FLIGHT): IntGauge = gauge(
        "sqs2pg_messages_in_flight", "Messages received and not yet deleted or released.");
    receivers (RECEIVERS): IntGauge = gauge(
        "sqs2pg_receivers",
        "Receive loops polling now: between SQS2PG_RECEIVERS_MIN and SQS2PG_RECEIVERS_MAX, more while receives come back full.");
    queue_messages (QUEUE_MESSAGES): IntGaugeVec = gauge_vec(
        "sqs2pg_queue_messages", "Queue depth from GetQueueAttributes, by queue and state.",
        &["queue", "state"]);
    oldest_message_age (OLDEST_MESSAGE_AGE): IntGauge = gauge(
        "sqs2pg_oldest_message_age_seconds",
        "Age of the oldest message in the latest receives (0 when they were empty).");
    last_commit (LAST_COMMIT): Gauge = float_gauge(
        "sqs2pg_last_commit_timestamp_seconds",
        "Unix time of the latest committed batch, or of the start before the first: time() minus it is how long nothing was committed.");
    writes_paused (WRITES_PAUSED): IntGauge = gauge(
        "sqs2pg_writes_paused",
        "1 while writes fail systemically and ingestion is paused (the circuit breaker is open), until a probe write commits.");
    write_pauses (WRITE_PAUSES): IntCounterVec = counter_vec(
        "sqs2pg_write_pauses_total",
        "Times the writes paused, by cause: refused (rows refused alike), deadline (a batch past SQS2PG_BATCH_TIMEOUT), failing (writes failing past SQS2PG_WRITE_PATIENCE).",
        &["cause"]);
    write_probes (WRITE_PROBES): IntCounter = counter(
        "sqs2pg_write_probes_total",
        "Probes of a paused write path: a canary write, then a real write of a few messages.");
    ready (READY): IntGauge = gauge(
        "sqs2pg_ready",
        "1 when the database and SQS are reachable and the service is not shutting down.");
    http_connections_shed (HTTP_CONNECTIONS_SHED): IntCounterVec = counter_vec(
        "sqs2pg_http_connections_shed_total",
        "Connections to the metrics port closed by the server to protect itself, by reason: evicted (the least recently active idle one, at the connection cap, to admit a new one), refused (a new one, at the cap with every connection answering), header_timeout (no complete request within 5 s of its accept).",
        &["reason"]);
    http_accept_errors (HTTP_ACCEPT_ERRORS): IntCounter = counter(
        "sqs2pg_http_accept_errors_total",
        "Failed accepts on the metrics port (EMFILE: the process is out of file descriptors), each followed by a 100 ms pause.");
    build_info (BUILD_INFO): IntGaugeVec = gauge_vec(
        "sqs2pg_build_info", "Always 1; labels carry the build.", &["version"]);
}

/// Which queue a depth gauge describes: its `queue` label (`dead_letter`).
#[derive(Debug, Clone, Copy, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum QueueRole {
    Source,
    DeadLetter,
}

/// Why the writes paused: the `cause` label of `sqs2pg_write_pauses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum PauseKind {
    /// Rows refused alike, the table seen taking none.
    Refused,
    /// A batch past `SQS2PG_BATCH_TIMEOUT`.
    Deadline,
    /// Writes failing, unreachable or busy, past `SQS2PG_WRITE_PATIENCE`.
    Failing,
}

impl PauseKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The metrics of the process as a whole, not of one stream: readiness, the build, and the
/// metrics port's own. The others are each stream's, labelled `stream` in a process that
/// runs several ([`Metrics::process`], [`Metrics::stream`]).
pub const PROCESS_METRICS: [&str; 4] = [
    names::READY,
    names::HTTP_CONNECTIONS_SHED,
    names::HTTP_ACCEPT_ERRORS,
    names::BUILD_INFO,
];

impl Metrics {
    /// Every metric, in a registry of its own, without a `stream` label: one pipeline's
    /// view, as tests and tools use it.
    pub fn new() -> Self {
        Self::registered(Registry::new(), |_| true)
    }

    /// The process's own metrics ([`PROCESS_METRICS`]); each stream's are in
    /// [`Metrics::stream`]s, and [`render`] shows them all on one page.
    pub fn process() -> Self {
        Self::registered(Registry::new(), |name| PROCESS_METRICS.contains(&name))
    }

    /// The metrics of the stream named `stream`: every one but the process's, each series
    /// labelled `stream="<name>"`.
    pub fn stream(stream: &str) -> Self {
        let labels = std::collections::HashMap::from([("stream".to_owned(), stream.to_owned())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("a valid label");
        Self::registered(registry, |name| !PROCESS_METRICS.contains(&name))
    }

    fn registered(registry: Registry, keep: impl Fn(&str) -> bool) -> Self {
        let metrics = Self::unregistered(registry);
        metrics.register_where(keep);
        metrics.set_last_commit(chrono::Utc::now());
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in DeadLetterReason::iter() {
            metrics
                .messages_dead_lettered
                .with_label_values(&[reason.as_str()]);
        }
        for distrust in Distrust::iter() {
            metrics
                .untrusted_attributes
                .with_label_values(&[distrust.as_str()]);
        }
        for stage in Stage::iter() {
            metrics.retries.with_label_values(&[stage.as_str()]);
            for class in ErrorClass::iter() {
                metrics
                    .errors
                    .with_label_values(&[stage.as_str(), class.as_str()]);
            }
        }
        for role in QueueRole::iter() {
            metrics.set_queue_depth(role, QueueDepth::default());
        }
        for kind in PauseKind::iter() {
            metrics.write_pauses.with_label_values(&[kind.as_str()]);
        }
        for reason in ShedReason::iter() {
            metrics
                .http_connections_shed
                .with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    pub fn write_pauses_total(&self, kind: PauseKind) -> u64 {
        self.write_pauses.with_label_values(&[kind.as_str()]).get()
    }

    pub(crate) fn set_last_commit(&self, at: chrono::DateTime<chrono::Utc>) {
        self.last_commit
            .set(at.timestamp_micros() as f64 / 1_000_000.0);
    }

    /// The registry, for tests that read counts with `gather()`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) {
        self.messages_dead_lettered
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn dead_lettered_total(&self, reason: DeadLetterReason) -> u64 {
        self.messages_dead_lettered
            .with_label_values(&[reason.as_str()])
            .get()
    }

    pub fn untrusted_attributes_total(&self, distrust: Distrust) -> u64 {
        self.untrusted_attributes
            .with_label_values(&[distrust.as_str()])
            .get()
    }

    pub(crate) fn retried(&self, stage: Stage) {
        self.retries.with_label_values(&[stage.as_str()]).inc();
        self.failed(stage, ErrorClass::Transient);
    }

    pub fn retries_total(&self, stage: Stage) -> u64 {
        self.retries.with_label_values(&[stage.as_str()]).get()
    }

    /// A failed call, retried or not.
    pub(crate) fn failed(&self, stage: Stage, class: ErrorClass) {
        self.errors
            .with_label_values(&[stage.as_str(), class.as_str()])
            .inc();
    }

    pub fn errors_total(&self, stage: Stage, class: ErrorClass) -> u64 {
        self.errors
            .with_label_values(&[stage.as_str(), class.as_str()])
            .get()
    }

    pub(crate) fn set_queue_depth(&self, role: QueueRole, depth: QueueDepth) {
        for (state, value) in [
            ("visible", depth.visible),
            ("in_flight", depth.in_flight),
            ("delayed", depth.delayed),
        ] {
            self.queue_messages
                .with_label_values(&[role.into(), state])
                .set(value as i64);
        }
    }

    pub(crate) fn connection_shed(&self, reason: ShedReason) {
        self.http_connections_shed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn connections_shed_total(&self, reason: ShedReason) -> u64 {
        self.http_connections_shed
            .with_label_values(&[reason.as_str()])
            .get()
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Counters a test may read.
    pub fn messages_received(&self) -> u64 {
        self.messages_received.get()
    }

    pub fn oldest_message_age_seconds(&self) -> i64 {
        self.oldest_message_age.get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render([self])
    }
}

/// The Prometheus text exposition of the metrics of several registries (the process's and
/// each stream's), a family's series from all of them under one `# HELP` and `# TYPE`.
pub fn render<'a>(sets: impl IntoIterator<Item = &'a Metrics>) -> String {
    let mut families: Vec<prometheus::proto::MetricFamily> = Vec::new();
    for family in sets.into_iter().flat_map(|set| set.registry.gather()) {
        match families.iter_mut().find(|f| f.name() == family.name()) {
            Some(merged) => merged
                .mut_metric()
                .extend(family.get_metric().iter().cloned()),
            None => families.push(family),
        }
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buffer)
        .expect("text encoding of gathered metrics cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_metric_is_exported_from_the_start() {
        let gathered: Vec<String> = Metrics::new()
            .registry()
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert_eq!(gathered.len(), names::ALL.len());
        for name in names::ALL {
            assert!(gathered.iter().any(|g| g == name), "{name} is not exported");
        }
    }
}
