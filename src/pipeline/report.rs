//! What the run has done so far, told to people: a drain's progress every
//! `progress_interval` (off a terminal; on one, `sqs2pg run` draws a bar from
//! [`super::Pipeline::progress`] instead), an always-on run's summary every
//! `summary_interval`, and, once a minute, the dead letters that were only counted
//! ([`crate::telemetry::throttle`]). Counted by the pipeline as it goes, like the summary.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::{Queue, QueueDepth};
use crate::telemetry::events::{DeadLetterWindowEnded, DrainProgress, RunReport};

use super::Context;

/// The window of the dead-letter log: "N more dead-lettered for reason R in the last minute".
pub const DEAD_LETTER_LOG_WINDOW: Duration = Duration::from_secs(60);

/// The run's counts so far, and the backlog last seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub received: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// The source queue's depth as SQS last reported it; `None` before the first read.
    pub backlog: Option<QueueDepth>,
    /// Messages this run has received or SQS still holds for it: those received when the
    /// depth was read, plus those then visible or delayed. Unlike "done + depth", it does
    /// not count twice what was received since the read, nor what is in flight here.
    pub total: Option<u64>,
    /// Sum of the committed rows' ingestion lag, in milliseconds.
    pub lag_sum_ms: u64,
}

impl Progress {
    pub(super) fn of<Q, S>(context: &Context<Q, S>) -> Self {
        let tally = &context.tally;
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let backlog = *context.backlog.borrow();
        Self {
            received: count(&tally.received),
            inserted: count(&tally.inserted),
            duplicates: count(&tally.duplicates),
            dead_lettered: count(&tally.dead_lettered),
            backlog: backlog.map(|backlog| backlog.depth),
            total: backlog
                .map(|backlog| backlog.received + backlog.depth.visible + backlog.depth.delayed),
            lag_sum_ms: count(&tally.lag_sum_ms),
        }
    }

    /// The progress of several streams' pipelines as one: counts summed; the backlog and
    /// total known only once every stream has read its queue's depth.
    pub fn combined(all: impl IntoIterator<Item = Progress>) -> Self {
        let mut combined = Self {
            backlog: Some(QueueDepth::default()),
            total: Some(0),
            ..Self::default()
        };
        for progress in all {
            combined.received += progress.received;
            combined.inserted += progress.inserted;
            combined.duplicates += progress.duplicates;
            combined.dead_lettered += progress.dead_lettered;
            combined.lag_sum_ms += progress.lag_sum_ms;
            combined.backlog = combined
                .backlog
                .zip(progress.backlog)
                .map(|(a, b)| QueueDepth {
                    visible: a.visible + b.visible,
                    in_flight: a.in_flight + b.in_flight,
                    delayed: a.delayed + b.delayed,
                });
            combined.total = combined.total.zip(progress.total).map(|(a, b)| a + b);
        }
        combined
    }

    /// Messages done: rows inserted, duplicates skipped, dead letters.
    pub fn processed(&self) -> u64 {
        self.inserted + self.duplicates + self.dead_lettered
    }

    /// Messages left to do: of [`Self::total`], those not done yet. Approximate on AWS,
    /// where SQS's counts are, and as fresh as the last depth poll.
    pub fn remaining(&self) -> Option<u64> {
        self.total
            .map(|total| total.saturating_sub(self.processed()))
    }
}

/// The source queue's depth as last read, and the messages received by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backlog {
    pub depth: QueueDepth,
    pub received: u64,
}

impl Backlog {
    /// `depth`, read just now.
    pub fn now<Q, S>(context: &Context<Q, S>, depth: QueueDepth) -> Self {
        Self {
            depth,
            received: context.tally.received.load(Ordering::Relaxed),
        }
    }
}

/// Until `done`: the periodic lines. The dead letters still only counted are reported
/// at the end too, so none goes untold.
pub(super) async fn run<Q: Queue, S: Sink>(context: Arc<Context<Q, S>>, done: CancellationToken) {
    let settings = &context.settings;
    let every = if settings.drain {
        settings.progress_interval
    } else {
        settings.summary_interval
    };
    let mut report = every.filter(|every| !every.is_zero()).map(ticker);
    let mut dead_letter_window = ticker(DEAD_LETTER_LOG_WINDOW);
    let mut window_started = Instant::now();
    let mut last = Progress::of(&context);
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = dead_letter_window.tick() => {
                context.metrics.emit(DeadLetterWindowEnded { window: window_started.elapsed() });
                window_started = Instant::now();
            }
            () = tick(&mut report) => {
                let now = Progress::of(&context);
                let interval = last_at.elapsed();
                if settings.drain {
                    context.metrics.emit(drain_progress(&last, &now, interval));
                } else {
                    let lag_max = context.tally.lag_max_ms.swap(0, Ordering::Relaxed);
                    context.metrics.emit(run_report(&last, &now, interval, lag_max));
                }
                (last, last_at) = (now, Instant::now());
            }
        }
    }
    context.metrics.emit(DeadLetterWindowEnded {
        window: window_started.elapsed(),
    });
}

/// An interval whose first tick is one period from now, not at once.
fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// The next tick of `interval`, or never without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn drain_progress(last: &Progress, now: &Progress, interval: Duration) -> DrainProgress {
    DrainProgress {
        processed: now.processed(),
        inserted: now.inserted,
        dead_lettered: now.dead_lettered,
        per_second: (now.processed() - last.processed()) as f64 / interval.as_secs_f64().max(1e-9),
        remaining: now.remaining(),
    }
}

fn run_report(last: &Progress, now: &Progress, interval: Duration, lag_max_ms: u64) -> RunReport {
    let rows = (now.inserted + now.duplicates) - (last.inserted + last.duplicates);
    let lag_mean =
        (rows > 0).then(|| Duration::from_millis((now.lag_sum_ms - last.lag_sum_ms) / rows));
    RunReport {
        interval,
        processed: now.processed() - last.processed(),
        inserted: now.inserted - last.inserted,
        duplicates: now.duplicates - last.duplicates,
        dead_lettered: now.dead_lettered - last.dead_lettered,
        lag_mean,
        lag_max: (rows > 0).then(|| Duration::from_millis(lag_max_ms)),
        backlog: now.backlog,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(inserted: u64, dead_lettered: u64, lag_sum_ms: u64) -> Progress {
        Progress {
            received: inserted + dead_lettered,
            inserted,
            duplicates: 0,
            dead_lettered,
            backlog: Some(QueueDepth {
                visible: 900,
                in_flight: 100,
                delayed: 0,
            }),
            total: Some(1600),
            lag_sum_ms,
        }
    }

    #[test]
    fn a_drain_line_gives_the_rate_since_the_last_and_what_is_left() {
        let line = drain_progress(
            &progress(100, 0, 0),
            &progress(590, 10, 0),
            Duration::from_secs(10),
        );
        assert_eq!(line.processed, 600);
        assert_eq!(line.dead_lettered, 10);
        assert!((line.per_second - 50.0).abs() < 1e-9, "{}", line.per_second);
        assert_eq!(line.remaining, Some(1000), "1600 known, 600 done");
    }

    #[test]
    fn a_run_report_covers_its_interval_only_with_the_mean_lag_of_its_rows() {
        let report = run_report(
            &progress(100, 1, 10_000),
            &progress(300, 3, 10_000 + 200 * 50),
            Duration::from_secs(60),
            400,
        );
        assert_eq!((report.processed, report.inserted), (202, 200));
        assert_eq!(report.dead_lettered, 2);
        assert_eq!(report.lag_mean, Some(Duration::from_millis(50)));
        assert_eq!(report.lag_max, Some(Duration::from_millis(400)));
        let idle = run_report(
            &progress(300, 3, 0),
            &progress(300, 3, 0),
            Duration::from_secs(60),
            0,
        );
        assert_eq!(
            (idle.processed, idle.lag_mean, idle.lag_max),
            (0, None, None)
        );
    }
}
