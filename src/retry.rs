//! Retries with exponential backoff and jitter. The only module that knows the `backoff`
//! crate, so the policy can be swapped in one place.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoff;

use crate::metrics::Metrics;

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

/// Runs `operation` until it succeeds, fails permanently, or the policy gives up. Each
/// retry is logged with its cause and counted under `stage`.
pub async fn retry<T, E, F, Fut>(
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
    backoff::future::retry_notify(
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
            tracing::warn!(
                message = "Transient failure; retrying.",
                stage = stage.as_str(),
                %error,
                retry_in_ms = wait.as_millis() as u64,
            );
        },
    )
    .await
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
