//! Retries with exponential backoff and jitter. The only module that knows the `backoff`
//! crate, so the policy can be swapped in one place.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoff;

use crate::telemetry::metrics::Metrics;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The same call may succeed later: connection refused or reset, the database
    /// restarting, serialization failures, throttling, 5xx, timeouts.
    Transient,
    /// It never will: bad input, a constraint, a missing queue, bad credentials.
    Permanent,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// An error that knows whether it is worth retrying.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// The step that failed, as a bounded metric label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Receive,
    Write,
    Delete,
    DeadLetter,
    ExtendVisibility,
    Release,
    /// Sending to the source queue (`send`, `dlq redrive`).
    Send,
}

impl Stage {
    pub const ALL: [Self; 7] = [
        Self::Receive,
        Self::Write,
        Self::Delete,
        Self::DeadLetter,
        Self::ExtendVisibility,
        Self::Release,
        Self::Send,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receive => "receive",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::DeadLetter => "dead_letter",
            Self::ExtendVisibility => "extend_visibility",
            Self::Release => "release",
            Self::Send => "send",
        }
    }
}

/// How long to wait between attempts, and for how long to keep trying.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// `None` retries transient errors forever: right for the always-on consumer, whose
    /// messages stay safely in flight (the heartbeat extends them) until the fault clears.
    pub max_elapsed: Option<Duration>,
}

impl RetryPolicy {
    /// The consumer's policy: retry transient errors forever, at most 10 s apart.
    pub const FOREVER: Self = Self {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(10),
        max_elapsed: None,
    };

    /// For best-effort calls whose failure is tolerable (deletes, releases).
    pub const BRIEF: Self = Self {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(2),
        max_elapsed: Some(Duration::from_secs(10)),
    };

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            initial_interval: self.initial_interval,
            max_interval: self.max_interval,
            max_elapsed_time: self.max_elapsed,
            // Full-ish jitter: each wait is drawn from ±50% of the nominal interval, so
            // many consumers that failed together do not retry together.
            randomization_factor: 0.5,
            multiplier: 2.0,
            ..ExponentialBackoff::default()
        }
    }
}

/// After a retry loop's first warning, how long before it warns again while the failure
/// lasts: an outage should say it started, that it goes on, and that it ended, not fill
/// the log with one line per attempt.
pub const RETRY_REMINDER_INTERVAL: Duration = Duration::from_secs(10);

/// Runs `operation` until it succeeds, fails permanently, or the policy gives up. Every
/// retry is counted under `stage`; the first is logged with its cause, then at most one
/// reminder per [`RETRY_REMINDER_INTERVAL`] (the others at DEBUG), and a success after
/// failures logs one line saying it recovered.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    stage: Stage,
    metrics: &Metrics,
    operation: F,
) -> Result<T, E>
where
    E: Classify + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_reminding_every(RETRY_REMINDER_INTERVAL, policy, stage, metrics, operation).await
}

/// [`retry`], with the interval between reminders as a parameter (for tests).
async fn retry_reminding_every<T, E, F, Fut>(
    reminder_interval: Duration,
    policy: RetryPolicy,
    stage: Stage,
    metrics: &Metrics,
    mut operation: F,
) -> Result<T, E>
where
    E: Classify + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut retries = 0u64;
    let mut last_warned: Option<Instant> = None;
    let result = backoff::future::retry_notify(
        policy.backoff(),
        || {
            let attempt = operation();
            async move {
                attempt.await.map_err(|error| match error.class() {
                    ErrorClass::Transient => backoff::Error::transient(error),
                    ErrorClass::Permanent => backoff::Error::permanent(error),
                })
            }
        },
        |error: E, wait: Duration| {
            metrics.retry(stage, ErrorClass::Transient);
            retries += 1;
            let retry_in_ms = wait.as_millis() as u64;
            match last_warned {
                None => {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        message = "Transient failure; retrying.",
                        stage = stage.as_str(),
                        %error,
                        retry_in_ms,
                    );
                }
                Some(at) if at.elapsed() >= reminder_interval => {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        message = "Still failing; retrying.",
                        stage = stage.as_str(),
                        %error,
                        attempts = retries,
                        failing_for_s = started.elapsed().as_secs(),
                        retry_in_ms,
                    );
                }
                Some(_) => tracing::debug!(
                    message = "Transient failure; retrying.",
                    stage = stage.as_str(),
                    %error,
                    retry_in_ms,
                ),
            }
        },
    )
    .await;
    if result.is_ok() && retries > 0 {
        tracing::info!(
            message = "Recovered; the retried call succeeded.",
            stage = stage.as_str(),
            attempts = retries + 1,
            failing_for_s = started.elapsed().as_secs_f64(),
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Failure(ErrorClass);
    impl Classify for Failure {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }
    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    const QUICK: RetryPolicy = RetryPolicy {
        initial_interval: Duration::from_millis(1),
        max_interval: Duration::from_millis(2),
        max_elapsed: None,
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let metrics = Metrics::new();
        let attempts = AtomicU32::new(0);
        let result = retry(QUICK, Stage::Write, &metrics, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(Failure(ErrorClass::Transient)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(
            metrics.retries_total(Stage::Write, ErrorClass::Transient),
            3
        );
    }

    #[tokio::test]
    async fn permanent_errors_stop_at_once() {
        let metrics = Metrics::new();
        let attempts = AtomicU32::new(0);
        let result: Result<(), _> = retry(QUICK, Stage::Write, &metrics, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(Failure(ErrorClass::Permanent))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    /// The level and message of each event logged while `run` runs.
    async fn logged_while<T>(run: impl Future<Output = T>) -> (T, Vec<(tracing::Level, String)>) {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        struct Record(Arc<Mutex<Vec<(tracing::Level, String)>>>);
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    value.clone_into(&mut self.0);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Record {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let mut message = Message(String::new());
                event.record(&mut message);
                self.0
                    .lock()
                    .unwrap()
                    .push((*event.metadata().level(), message.0));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Record(Arc::clone(&seen)));
        let _guard = tracing::subscriber::set_default(subscriber);
        let output = run.await;
        let events = seen.lock().unwrap().clone();
        (output, events)
    }

    #[tokio::test]
    async fn an_outage_logs_its_start_and_its_end_not_every_attempt() {
        let metrics = Metrics::new();
        let attempts = AtomicU32::new(0);
        let (result, events) = logged_while(retry(QUICK, Stage::Write, &metrics, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..=29 => Err(Failure(ErrorClass::Transient)),
                n => Ok(n),
            }
        }))
        .await;
        assert_eq!(result.unwrap(), 30);
        assert_eq!(
            metrics.retries_total(Stage::Write, ErrorClass::Transient),
            30
        );
        let at = |level| {
            events
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, message)| message.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(at(tracing::Level::WARN), ["Transient failure; retrying."]);
        assert_eq!(
            at(tracing::Level::INFO),
            ["Recovered; the retried call succeeded."]
        );
        assert_eq!(at(tracing::Level::DEBUG).len(), 29);
    }

    #[tokio::test]
    async fn a_long_outage_is_reminded_of_at_most_every_interval() {
        let metrics = Metrics::new();
        let interval = Duration::from_millis(50);
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(10),
            max_elapsed: None,
        };
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let (result, events) = logged_while(retry_reminding_every(
            interval,
            policy,
            Stage::Write,
            &metrics,
            || async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0..=29 => Err(Failure(ErrorClass::Transient)),
                    n => Ok(n),
                }
            },
        ))
        .await;
        assert_eq!(result.unwrap(), 30);
        let failing_for = started.elapsed();
        let warnings = events
            .iter()
            .filter(|(level, _)| *level == tracing::Level::WARN)
            .count();
        // 30 waits of 5 to 15 ms: the first warning, then a reminder per full interval.
        let most = 1 + (failing_for.as_millis() / interval.as_millis()) as usize;
        assert!(
            (2..=most).contains(&warnings) && warnings < 30,
            "{warnings} warnings in {failing_for:?}: {events:?}"
        );
        assert_eq!(
            events.last().map(|(level, _)| *level),
            Some(tracing::Level::INFO)
        );
    }

    #[tokio::test]
    async fn a_bounded_policy_gives_up() {
        let metrics = Metrics::new();
        let policy = RetryPolicy {
            max_elapsed: Some(Duration::from_millis(30)),
            ..QUICK
        };
        let result: Result<(), _> = retry(policy, Stage::Delete, &metrics, || async {
            Err(Failure(ErrorClass::Transient))
        })
        .await;
        assert!(result.is_err());
    }
}
