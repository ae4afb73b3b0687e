//! `run --drain`'s progress bar, drawn on stderr when it is a terminal: messages done of
//! those known, rows, dead letters, rate, what SQS still counts in the queue, and ETA.
//! Log lines are written around it ([`log_around`]). Off a terminal the pipeline logs
//! progress lines instead (`SQS2PG_PROGRESS_INTERVAL`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use indicatif::{HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::report::Progress;
use crate::telemetry::logging::log_around;

/// How often the bar is redrawn.
const REFRESH: Duration = Duration::from_millis(200);
/// The rate shown is over this much of the recent past: steady, yet quick to follow.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// A progress bar, redrawn until [`DrainBar::finish`].
pub struct DrainBar {
    bar: ProgressBar,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl DrainBar {
    /// Starts drawing what `progress` reports.
    pub fn start(progress: impl Fn() -> Progress + Send + 'static) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} messages\n  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        log_around(Some(bar.clone()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(redraw(bar.clone(), progress, stop.clone()));
        Self { bar, stop, task }
    }

    /// Stops drawing and clears the bar: the closing summary gives the final figures, and
    /// logs go straight to stderr again.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.bar.finish_and_clear();
        log_around(None);
    }
}

async fn redraw(bar: ProgressBar, progress: impl Fn() -> Progress, stop: CancellationToken) {
    let mut rate = Rate::default();
    loop {
        let now = progress();
        let per_second = rate.sample(Instant::now(), now.processed());
        bar.set_position(now.processed());
        if let Some(total) = now.total {
            bar.set_length(total.max(now.processed()));
        }
        bar.set_message(message(&now, per_second));
        bar.tick();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// The bar's words after the count: rows, dead letters, rate, what is left, ETA.
fn message(progress: &Progress, per_second: Option<f64>) -> String {
    let mut parts = vec![
        format!("{} rows", HumanCount(progress.inserted)),
        format!("{} dead-lettered", HumanCount(progress.dead_lettered)),
    ];
    if let Some(per_second) = per_second {
        parts.push(format!(
            "{} messages/s",
            HumanCount(per_second.round() as u64)
        ));
    }
    match progress.remaining() {
        Some(remaining) => {
            parts.push(format!("~{} left", HumanCount(remaining)));
            if let Some(per_second) = per_second.filter(|rate| *rate > 0.0) {
                let eta = Duration::from_secs_f64(remaining as f64 / per_second);
                parts.push(format!("ETA {}", HumanDuration(eta)));
            }
        }
        None => parts.push("queue depth not read yet".to_owned()),
    }
    parts.join(" · ")
}

/// Messages done per second over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Adds a sample; the rate since the oldest kept, once there are two.
    fn sample(&mut self, at: Instant, processed: u64) -> Option<f64> {
        self.samples.push_back((at, processed));
        while self
            .samples
            .front()
            .is_some_and(|(then, _)| at.duration_since(*then) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (then, before) = *self.samples.front()?;
        let elapsed = at.duration_since(then).as_secs_f64();
        (elapsed > 0.0).then(|| (processed - before) as f64 / elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sqs::QueueDepth;

    #[test]
    fn the_rate_follows_the_last_few_seconds_only() {
        let start = Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.sample(start, 0), None);
        // 100/s for 10 s, then 1000/s: five seconds later the rate is the new one.
        let mut processed = 0;
        for second in 1..=10 {
            processed += 100;
            rate.sample(start + Duration::from_secs(second), processed);
        }
        let mut last = None;
        for second in 11..=15 {
            processed += 1000;
            last = rate.sample(start + Duration::from_secs(second), processed);
        }
        assert_eq!(last, Some(1000.0));
    }

    #[test]
    fn the_message_names_rows_dead_letters_rate_backlog_and_eta() {
        let progress = Progress {
            inserted: 12_300,
            dead_lettered: 45,
            backlog: Some(QueueDepth {
                visible: 37_000,
                in_flight: 655,
                delayed: 0,
            }),
            total: Some(50_000),
            ..Progress::default()
        };
        assert_eq!(
            message(&progress, Some(2_354.2)),
            "12,300 rows · 45 dead-lettered · 2,354 messages/s · ~37,655 left · ETA 16 seconds"
        );
        assert_eq!(
            message(&Progress::default(), None),
            "0 rows · 0 dead-lettered · queue depth not read yet"
        );
    }
}
