//! Probes: readiness (the database answers, SQS answers) and the queue-depth gauges, kept
//! fresh while nothing else touches them. (The write path's own probe, while writes are
//! paused, is the breaker's: [`super::breaker`].)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::Sink;
use crate::adapters::sqs::Queue;
use crate::telemetry::events::{QueueDepthPolled, QueueDepthUnavailable};
use crate::telemetry::metrics::QueueRole;

use super::report::Backlog;
use super::{Context, DRAIN_QUEUE_POLL_INTERVAL, QUEUE_POLL_INTERVAL};

/// How often readiness re-checks the database when nothing else has.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Until `done`: pings the database every few seconds and polls the queue depths.
/// A drain polls the depths more often: they are its progress's backlog and ETA.
pub(super) async fn run<Q: Queue, S: Sink>(context: Arc<Context<Q, S>>, done: CancellationToken) {
    let (depth_interval, interval) = if context.settings.drain {
        (DRAIN_QUEUE_POLL_INTERVAL, DRAIN_QUEUE_POLL_INTERVAL)
    } else {
        (QUEUE_POLL_INTERVAL, PROBE_INTERVAL)
    };
    let mut last_depth_poll: Option<Instant> = None;
    let mut last_ping: Option<Instant> = None;
    loop {
        if last_ping.is_none_or(|at| at.elapsed() >= PROBE_INTERVAL) {
            last_ping = Some(Instant::now());
            let database = context.sink.ping().await;
            context.readiness.set_database_reachable(database.is_ok());
        }
        if last_depth_poll.is_none_or(|at| at.elapsed() >= depth_interval) {
            last_depth_poll = Some(Instant::now());
            let source = context.queue.depth().await;
            let dead_letter = context.queue.dead_letter_depth().await;
            context.readiness.set_queue_reachable(source.is_ok());
            match (source, dead_letter) {
                (Ok(source), Ok(dead_letter)) => {
                    context
                        .backlog
                        .send_replace(Some(Backlog::now(&context, source)));
                    context.metrics.emit(QueueDepthPolled {
                        role: QueueRole::Source,
                        depth: source,
                    });
                    context.metrics.emit(QueueDepthPolled {
                        role: QueueRole::DeadLetter,
                        depth: dead_letter,
                    });
                }
                (Err(error), _) | (_, Err(error)) => context.metrics.emit(QueueDepthUnavailable {
                    error: &error,
                    consequence: "Could not read queue depth; the gauges keep their last values.",
                }),
            }
        }
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
