//! The benchmark's producer: sends realistic events (`synthetic::generate`) to a queue with
//! sqs2pg's own SQS client and adapter, either at a steady rate (the latency measurement)
//! or as fast as it can (preloading a queue), and says in JSON what it sent.
//!
//! Paced, it sends batches on a fixed schedule: a batch whose turn comes is sent even while
//! earlier ones are still in flight, so a slow call does not slow the schedule. A batch holds
//! up to 10 messages and at most `BATCH_BYTES` of bodies (SQS refuses a `SendMessageBatch`
//! over 256 KiB), so 200 KB bodies go one per call.
//!
//! Run by `scripts/bench.sh`. Environment:
//!   SQS2PG_QUEUE_URL       the queue (plus the usual AWS_* settings)
//!   BENCH_LATENCY_RATE     messages per second (default 500); 0 sends unpaced
//!   BENCH_LATENCY_SECONDS  for how long (default 30), unless BENCH_SEND_COUNT is given
//!   BENCH_SEND_COUNT       how many messages to send
//!   BENCH_MALFORMED_SHARE  share of malformed bodies (default 0)
//!   BENCH_SEED             the generator's seed (default 11): the same seed, the same bodies
//!   BENCH_BODY_BYTES       pad each valid body to about this many bytes with a field the
//!                          transform ignores (default: no padding, about 200 bytes)
//!   BENCH_EVENTS           `logins` (default) or `orders`: the events of streams/orders.toml,
//!                          1 % malformed whatever BENCH_MALFORMED_SHARE says
//! Prints one JSON line with what it sent and the rate it achieved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqs2pg::adapters::sqs::{MAX_BATCH, OutgoingMessage, SqsQueue};
use sqs2pg::domain::synthetic::{Recipe, generate, orders};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Most batch calls in flight at once.
const IN_FLIGHT: usize = 64;
/// Most body bytes in one batch call: SQS's 256 KiB, less room for attributes.
const BATCH_BYTES: usize = 250 * 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A valid event padded with an ignored field to about `size` bytes; anything else as it is.
fn padded(body: String, size: usize) -> String {
    let is_object = serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v.is_object());
    let filler = size.saturating_sub(body.len() + r#","padding":"""#.len());
    if !is_object || filler == 0 {
        return body;
    }
    let mut padded = body;
    padded.pop(); // the closing brace
    padded.push_str(r#","padding":""#);
    padded.extend(std::iter::repeat_n('x', filler));
    padded.push_str("\"}");
    padded
}

/// Consecutive bodies in batches of at most `MAX_BATCH` messages and `BATCH_BYTES` bytes.
fn batches(bodies: Vec<String>) -> Vec<Vec<OutgoingMessage>> {
    let mut batches: Vec<Vec<OutgoingMessage>> = Vec::new();
    let mut bytes = 0;
    for body in bodies {
        let full = batches
            .last()
            .is_none_or(|batch| batch.len() == MAX_BATCH || bytes + body.len() > BATCH_BYTES);
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += body.len();
        batches
            .last_mut()
            .expect("one was just pushed")
            .push(OutgoingMessage::new(body));
    }
    batches
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let queue_url =
        std::env::var("SQS2PG_QUEUE_URL").map_err(|_| anyhow::anyhow!("set SQS2PG_QUEUE_URL"))?;
    let rate: f64 = env_or("BENCH_LATENCY_RATE", 500.0);
    let seconds: f64 = env_or("BENCH_LATENCY_SECONDS", 30.0);
    anyhow::ensure!(
        rate >= 0.0 && seconds > 0.0,
        "the rate must not be negative, and the seconds must be positive"
    );
    let count: u64 = env_or("BENCH_SEND_COUNT", (rate * seconds).round() as u64);
    anyhow::ensure!(
        count > 0,
        "nothing to send: set BENCH_SEND_COUNT, or a positive rate"
    );
    let body_bytes: usize = env_or("BENCH_BODY_BYTES", 0);
    let seed = env_or("BENCH_SEED", 11);
    let (bodies, malformed) = match std::env::var("BENCH_EVENTS").as_deref() {
        Ok("orders") => {
            let (bodies, malformed) = orders(count as usize, seed);
            (bodies, malformed as u64)
        }
        Ok("logins") | Err(_) => generate(Recipe {
            count,
            seed,
            duplicate_share: 0.1,
            malformed_share: env_or("BENCH_MALFORMED_SHARE", 0.0),
        }),
        Ok(other) => anyhow::bail!("BENCH_EVENTS={other}: expected logins or orders"),
    };
    let bodies: Vec<String> = bodies
        .into_iter()
        .map(|body| padded(body, body_bytes))
        .collect();
    let total_bytes: usize = bodies.iter().map(String::len).sum();
    let batches = batches(bodies);

    let client = sqs2pg::cli::aws::sqs_client().await?;
    let queue = Arc::new(SqsQueue::new(client, queue_url, String::new()));
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut late_batches = 0u64;
    let mut scheduled = 0usize;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for batch in batches {
        if rate > 0.0 {
            // Each batch is due when the messages before it have had their time.
            let due = started + Duration::from_secs_f64(scheduled as f64 / rate);
            let next_due = due + Duration::from_secs_f64(batch.len() as f64 / rate);
            tokio::time::sleep_until(due).await;
            if Instant::now() > next_due {
                late_batches += 1;
            }
        }
        scheduled += batch.len();
        let permit = Arc::clone(&permits).acquire_owned().await?;
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
            "count": count,
            "sent": sent,
            "malformed": malformed,
            "failed": failed.load(Ordering::Relaxed),
            "mean_body_bytes": total_bytes as f64 / count as f64,
            "seconds": elapsed,
            "messages_per_second": sent as f64 / elapsed,
            "late_batches": late_batches,
        })
    );
    Ok(())
}
