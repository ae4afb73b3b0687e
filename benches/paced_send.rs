//! A paced producer for the latency measurement: sends realistic events (none malformed) to
//! a queue at a steady rate, in batches of 10 on a fixed schedule, with sqs2pg's own SQS
//! client and adapter. A batch whose turn comes is sent even while earlier ones are still in
//! flight, so a slow call does not slow the schedule.
//!
//! Run by `scripts/bench.sh`. Environment:
//!   SQS2PG_QUEUE_URL       the queue (plus the usual AWS_* settings)
//!   BENCH_LATENCY_RATE     messages per second (default 500)
//!   BENCH_LATENCY_SECONDS  for how long (default 30)
//! Prints one JSON line with what it sent and the rate it achieved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqs2pg::adapters::sqs::{MAX_BATCH, OutgoingMessage, SqsQueue};
use sqs2pg::domain::synthetic::{Recipe, generate};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

/// Most batch calls in flight at once.
const IN_FLIGHT: usize = 64;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let queue_url =
        std::env::var("SQS2PG_QUEUE_URL").map_err(|_| anyhow::anyhow!("set SQS2PG_QUEUE_URL"))?;
    let rate: f64 = env_or("BENCH_LATENCY_RATE", 500.0);
    let seconds: f64 = env_or("BENCH_LATENCY_SECONDS", 30.0);
    anyhow::ensure!(
        rate > 0.0 && seconds > 0.0,
        "rate and seconds must be positive"
    );
    let count = (rate * seconds).round() as u64;
    let (bodies, _) = generate(Recipe {
        count,
        seed: 11,
        duplicate_share: 0.1,
        malformed_share: 0.0,
    });
    let client = sqs2pg::cli::aws::sqs_client().await?;
    let queue = Arc::new(SqsQueue::new(client, queue_url, String::new()));

    let period = Duration::from_secs_f64(MAX_BATCH as f64 / rate);
    let mut schedule = tokio::time::interval(period);
    // Behind schedule, catch up at once: the rate is the point.
    schedule.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut late_batches = 0u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, chunk) in bodies.chunks(MAX_BATCH).enumerate() {
        schedule.tick().await;
        if started.elapsed() > period * (index as u32 + 1) {
            late_batches += 1;
        }
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let batch: Vec<OutgoingMessage> = chunk
            .iter()
            .map(|body| OutgoingMessage::new(body.clone()))
            .collect();
        let (queue, sent, failed) = (Arc::clone(&queue), Arc::clone(&sent), Arc::clone(&failed));
        tasks.spawn(async move {
            let _permit = permit;
            match queue.send(&batch).await {
                Ok(failures) => {
                    sent.fetch_add((batch.len() - failures.len()) as u64, Ordering::Relaxed);
                    failed.fetch_add(failures.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    eprintln!("paced_send: a batch failed: {error}");
                    failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "target_rate": rate,
            "target_seconds": seconds,
            "sent": sent,
            "failed": failed.load(Ordering::Relaxed),
            "seconds": elapsed,
            "messages_per_second": sent as f64 / elapsed,
            "late_batches": late_batches,
        })
    );
    Ok(())
}
