//! Retries with exponential backoff and jitter. The only module that knows the `backoff`
//! crate, so the policy can be swapped in one place.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoff;

/// Whether trying again can help. Its name (`transient`) labels metrics and logs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorClass {
    /// The same call may succeed later: connection refused or reset, the database
    /// restarting, serialization failures, throttling, 5xx, timeouts.
    Transient,
    /// It never will: bad input, a constraint, a missing queue, bad credentials.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An error that knows whether it is worth retrying.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// The step that failed, as a bounded metric label and log field (`dead_letter`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Stage {
    Receive,
    Write,
    Delete,
    DeadLetter,
    ExtendVisibility,
    Release,
    /// Sending to the source queue (`send`, `dlq redrive`).
    Send,
    /// Applying migrations at start (`run`, `migrate`).
    Migrate,
    /// Checking the queues at start: they exist, and the dead-letter queue is found.
    Connect,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        self.into()
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

    /// The waits between attempts under this policy, jittered, for loops that are not a
    /// single call's retries (the breaker's probe). Endless when `max_elapsed` is `None`.
    pub fn waits(&self) -> impl Iterator<Item = Duration> {
        use backoff::backoff::Backoff as _;
        let mut backoff = self.backoff();
        std::iter::from_fn(move || backoff.next_backoff())
    }

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

/// After a retry loop's first report, how long before it reports loudly again while the
/// failure lasts: an outage should say it started, that it goes on, and that it ended, not
/// fill the log with one line per attempt.
pub const RETRY_REMINDER_INTERVAL: Duration = Duration::from_secs(10);

/// How loudly a failed attempt should be told: the retry loop decides, the caller's
/// telemetry logs accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    /// The first failure of this call: an outage may be starting.
    First,
    /// A reminder, at most one per [`RETRY_REMINDER_INTERVAL`], while the failure lasts.
    Reminder,
    /// Any other failed attempt: worth counting, not worth a log line at the default level.
    Quiet,
}

/// What a retry loop reports to its caller, which logs and counts it: this module imports
/// neither metrics nor telemetry, so every caller (the pipeline, start-up, `send`, `dlq
/// redrive`) reports through its own.
#[derive(Clone, Copy)]
pub enum RetryReport<'a> {
    /// An attempt failed for a transient reason; the next one follows after `retry_in`.
    Retrying {
        stage: Stage,
        error: &'a dyn Display,
        retry_in: Duration,
        /// Failed attempts so far, this one included.
        attempts: u64,
        failing_for: Duration,
        loudness: Loudness,
    },
    /// The call succeeded after failing `attempts - 1` times.
    Recovered {
        stage: Stage,
        attempts: u64,
        failing_for: Duration,
    },
}

/// Runs `operation` until it succeeds, fails permanently, or the policy gives up, and tells
/// `report` about every retry (the first loudly, then at most one reminder per
/// [`RETRY_REMINDER_INTERVAL`]) and about a recovery.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    stage: Stage,
    report: &(dyn Fn(RetryReport<'_>) + Sync),
    operation: F,
) -> Result<T, E>
where
    E: Classify + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_reminding_every(RETRY_REMINDER_INTERVAL, policy, stage, report, operation).await
}

/// [`retry`], with the interval between reminders as a parameter (for tests).
async fn retry_reminding_every<T, E, F, Fut>(
    reminder_interval: Duration,
    policy: RetryPolicy,
    stage: Stage,
    report: &(dyn Fn(RetryReport<'_>) + Sync),
    mut operation: F,
) -> Result<T, E>
where
    E: Classify + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut attempts = 0u64;
    let mut last_loud: Option<Instant> = None;
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
        |error: E, retry_in: Duration| {
            attempts += 1;
            let loudness = match last_loud {
                None => Loudness::First,
                Some(at) if at.elapsed() >= reminder_interval => Loudness::Reminder,
                Some(_) => Loudness::Quiet,
            };
            if loudness != Loudness::Quiet {
                last_loud = Some(Instant::now());
            }
            report(RetryReport::Retrying {
                stage,
                error: &error,
                retry_in,
                attempts,
                failing_for: started.elapsed(),
                loudness,
            });
        },
    )
    .await;
    if result.is_ok() && attempts > 0 {
        report(RetryReport::Recovered {
            stage,
            attempts: attempts + 1,
            failing_for: started.elapsed(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
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

    /// Each report, reduced to the loudness of a retry or `None` for a recovery.
    #[derive(Default)]
    struct Reports(Mutex<Vec<Option<Loudness>>>);
    impl Reports {
        fn record(&self, report: RetryReport<'_>) {
            let entry = match report {
                RetryReport::Retrying { loudness, .. } => Some(loudness),
                RetryReport::Recovered { .. } => None,
            };
            self.0.lock().unwrap().push(entry);
        }
        fn taken(&self) -> Vec<Option<Loudness>> {
            self.0.lock().unwrap().clone()
        }
    }

    /// One attempt of an operation that fails transiently `failures` times, then returns
    /// its attempt count.
    async fn failing(failures: u32, attempts: &AtomicU32) -> Result<u32, Failure> {
        match attempts.fetch_add(1, Ordering::SeqCst) {
            n if n < failures => Err(Failure(ErrorClass::Transient)),
            n => Ok(n),
        }
    }

    #[test]
    fn labels_are_snake_case() {
        assert_eq!(Stage::ExtendVisibility.as_str(), "extend_visibility");
        assert_eq!(Stage::DeadLetter.to_string(), "dead_letter");
        assert_eq!(ErrorClass::Transient.as_str(), "transient");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success_and_each_retry_is_reported() {
        let reports = Reports::default();
        let attempts = AtomicU32::new(0);
        let result = retry(QUICK, Stage::Write, &|r| reports.record(r), || {
            failing(3, &attempts)
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        let taken = reports.taken();
        assert_eq!(taken.len(), 4, "{taken:?}");
        assert_eq!(taken[0], Some(Loudness::First));
        assert_eq!(taken[3], None, "a recovery is reported last");
    }

    #[tokio::test]
    async fn permanent_errors_stop_at_once_unreported() {
        let reports = Reports::default();
        let attempts = AtomicU32::new(0);
        let result: Result<(), _> = retry(QUICK, Stage::Write, &|r| reports.record(r), || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(Failure(ErrorClass::Permanent))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(reports.taken().is_empty());
    }

    #[tokio::test]
    async fn an_outage_is_loud_at_its_start_and_quiet_after() {
        let reports = Reports::default();
        let attempts = AtomicU32::new(0);
        let result = retry(QUICK, Stage::Write, &|r| reports.record(r), || {
            failing(30, &attempts)
        })
        .await;
        assert_eq!(result.unwrap(), 30);
        let taken = reports.taken();
        assert_eq!(taken[0], Some(Loudness::First));
        assert!(
            taken[1..30].iter().all(|r| *r == Some(Loudness::Quiet)),
            "{taken:?}"
        );
        assert_eq!(taken[30], None);
    }

    #[tokio::test]
    async fn a_long_outage_is_reminded_of_at_most_every_interval() {
        let reports = Reports::default();
        let interval = Duration::from_millis(50);
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(10),
            max_elapsed: None,
        };
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let result = retry_reminding_every(
            interval,
            policy,
            Stage::Write,
            &|r| reports.record(r),
            || failing(30, &attempts),
        )
        .await;
        assert_eq!(result.unwrap(), 30);
        let failing_for = started.elapsed();
        let loud = reports
            .taken()
            .iter()
            .filter(|r| matches!(r, Some(Loudness::First | Loudness::Reminder)))
            .count();
        // 30 waits of 5 to 15 ms: the first report, then a reminder per full interval.
        let most = 1 + (failing_for.as_millis() / interval.as_millis()) as usize;
        assert!(
            (2..=most).contains(&loud) && loud < 30,
            "{loud} loud reports in {failing_for:?}"
        );
    }

    #[tokio::test]
    async fn a_bounded_policy_gives_up() {
        let policy = RetryPolicy {
            max_elapsed: Some(Duration::from_millis(30)),
            ..QUICK
        };
        let result: Result<(), _> = retry(policy, Stage::Delete, &|_| {}, || async {
            Err(Failure(ErrorClass::Transient))
        })
        .await;
        assert!(result.is_err());
    }
}
