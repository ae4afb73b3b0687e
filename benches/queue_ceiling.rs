//! Queue ceiling: how fast a preloaded queue drains with receive plus `DeleteMessageBatch`
//! only, and no database. It uses sqs2pg's own SQS client (`app::sqs_client`) and adapter
//! (`SqsQueue`), with `BENCH_CONCURRENCY` loops, as many as sqs2pg's receivers may grow to:
//! each receives up to 10 with a 1 s long poll (as `sqs2pg run --drain`) and deletes what it
//! got in one batch call. The time runs from the first receive to the delete that completes
//! the count.
//!
//! Run by `scripts/bench.sh`, which preloads the queue with `sqs2pg send`. Environment:
//!   SQS2PG_QUEUE_URL   the preloaded queue (plus the usual AWS_* settings)
//!   BENCH_MESSAGES     how many messages it holds (default 20000)
//!   BENCH_CONCURRENCY  receive loops (default: sqs2pg's most receivers, `DEFAULT_RECEIVERS_MAX`)
//! Prints one JSON line; asserts nothing about speed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqs2pg::adapters::sqs::{MAX_BATCH, Queue, SqsQueue, split_by_failures};
use sqs2pg::pipeline::DEFAULT_RECEIVERS_MAX;

/// sqs2pg's long poll in drain mode.
const WAIT: Duration = Duration::from_secs(1);
const VISIBILITY: Duration = Duration::from_secs(30);
/// Give up when nothing was deleted for this long (a lost message, a dead LocalStack).
const STALL: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Progress {
    deleted: AtomicU64,
    receives: AtomicU64,
    empty_receives: AtomicU64,
    delete_calls: AtomicU64,
    delete_failures: AtomicU64,
    ids: Mutex<HashSet<String>>,
    finished: Mutex<Option<Instant>>,
    last_progress: Mutex<Option<Instant>>,
}

async fn drain_loop(
    queue: Arc<SqsQueue>,
    progress: Arc<Progress>,
    target: u64,
) -> anyhow::Result<()> {
    while progress.deleted.load(Ordering::SeqCst) < target {
        let stalled = progress
            .last_progress
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() > STALL);
        anyhow::ensure!(
            !stalled,
            "nothing deleted for {STALL:?}: {} of {target} deleted",
            progress.deleted.load(Ordering::SeqCst)
        );
        let messages = queue.receive(MAX_BATCH, WAIT, VISIBILITY).await?;
        progress.receives.fetch_add(1, Ordering::Relaxed);
        if messages.is_empty() {
            progress.empty_receives.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
        // A refused entry is tried again, as sqs2pg does; it does not happen on LocalStack.
        for _ in 0..5 {
            let failures = queue.delete(&handles).await?;
            progress.delete_calls.fetch_add(1, Ordering::Relaxed);
            progress
                .delete_failures
                .fetch_add(failures.len() as u64, Ordering::Relaxed);
            let (deleted, refused) = split_by_failures(handles, &failures);
            let done = deleted.len() as u64;
            let now = Instant::now();
            *progress.last_progress.lock().unwrap() = Some(now);
            let total = progress.deleted.fetch_add(done, Ordering::SeqCst) + done;
            if total >= target {
                progress.finished.lock().unwrap().get_or_insert(now);
            }
            if refused.is_empty() {
                break;
            }
            handles = refused;
        }
        let mut ids = progress.ids.lock().unwrap();
        ids.extend(messages.into_iter().map(|m| m.sqs_message_id));
    }
    Ok(())
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5), counted after the command name.
    (ticks(11) + ticks(12)) / env_or("BENCH_CLK_TCK", 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let queue_url = std::env::var("SQS2PG_QUEUE_URL")
        .map_err(|_| anyhow::anyhow!("set SQS2PG_QUEUE_URL to the preloaded queue"))?;
    let target: u64 = env_or("BENCH_MESSAGES", 20_000);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", DEFAULT_RECEIVERS_MAX);
    let client = sqs2pg::cli::aws::sqs_client().await?;
    let queue = Arc::new(SqsQueue::new(client, queue_url, String::new()));
    let progress = Arc::new(Progress::default());

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    *progress.last_progress.lock().unwrap() = Some(started);
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(drain_loop(
                Arc::clone(&queue),
                Arc::clone(&progress),
                target,
            ))
        })
        .collect();
    for task in loops {
        task.await??;
    }
    let cpu = cpu_seconds() - cpu_before;
    let finished = progress
        .finished
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let seconds = finished.duration_since(started).as_secs_f64();
    let deleted = progress.deleted.load(Ordering::SeqCst);
    let distinct = progress.ids.lock().unwrap().len();
    println!(
        "{}",
        serde_json::json!({
            "messages": target,
            "deleted": deleted,
            "distinct_messages": distinct,
            "concurrency": concurrency,
            "seconds": seconds,
            "messages_per_second": deleted as f64 / seconds,
            "cpu_seconds_in_window": cpu,
            "receives": progress.receives.load(Ordering::Relaxed),
            "empty_receives": progress.empty_receives.load(Ordering::Relaxed),
            "delete_calls": progress.delete_calls.load(Ordering::Relaxed),
            "delete_failures": progress.delete_failures.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
