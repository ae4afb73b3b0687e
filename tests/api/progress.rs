//! What `sqs2pg run` tells an operator while it works: a drain's progress lines off a
//! terminal, an always-on run's periodic summary, a poison flood summarised instead of
//! logged line by line, the last-commit gauge, and a prompt drain end that still waits
//! for every message (here, a delayed one).

use std::time::Duration;

use crate::helpers::*;
use sqs2pg::domain::synthetic::{Recipe, generate};
use sqs2pg::telemetry::throttle::LOGGED_PER_WINDOW;

/// Every JSON log line of a process's stderr.
fn log_lines(process: &Process) -> Vec<serde_json::Value> {
    process
        .stderr()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &line["fields"][name]
}

/// A drain that is not on a terminal (the test's pipes) logs a progress line every
/// interval, summarises a flood of poison of one reason, waits for a delayed message
/// before it ends, and prints its summary as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_off_a_terminal_logs_progress_lines_and_summarises_a_poison_flood() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (mut bodies, _) = generate(Recipe {
        count: 300,
        seed: 14,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    let poison = 30;
    bodies.extend(std::iter::repeat_n(GARBAGE.to_owned(), poison));
    queues.send(&bodies).await;
    // Delayed: the drain must wait for it, and it keeps the drain running for a few
    // progress lines.
    queues
        .client
        .send_message()
        .queue_url(&queues.urls.queue_url)
        .message_body(SAMPLE)
        .delay_seconds(4)
        .send()
        .await
        .unwrap();

    let mut command = sqs2pg_command();
    command.args([
        "--log-format",
        "json",
        "run",
        "--drain",
        "--progress-interval",
        "1s",
        "--output",
        "json",
    ]);
    run_env(&mut command, &db, &queues);
    let mut drain = Process::spawn(&test.logs, "drain", &mut command);
    let status = drain.exit_within(Duration::from_secs(120)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "the drain failed ({status:?}):\n{}",
        drain.stderr_tail(30)
    );
    let lines = log_lines(&drain);

    let progress: Vec<_> = lines
        .iter()
        .filter(|line| field(line, "message") == "Draining.")
        .collect();
    println!("{} progress lines: {progress:?}", progress.len());
    assert!(
        progress.len() >= 2,
        "a drain of over 4 s logs a line every second: {progress:?}"
    );
    let mut last = 0;
    for line in &progress {
        let processed = field(line, "processed").as_u64().expect("processed");
        assert!(processed >= last, "progress went back: {progress:?}");
        assert!(processed <= bodies.len() as u64 + 1);
        last = processed;
        for name in ["inserted", "dead_lettered", "messages_per_second"] {
            assert!(!field(line, name).is_null(), "no {name} in {line}");
        }
    }
    assert!(
        progress
            .iter()
            .any(|line| field(line, "remaining").as_u64().is_some()),
        "no line tells the backlog: {progress:?}"
    );

    // The flood: a few lines one by one, then one line with the rest.
    let one_by_one = lines
        .iter()
        .filter(|line| field(line, "message") == "Dead-lettered a poison message.")
        .count();
    assert_eq!(one_by_one, LOGGED_PER_WINDOW as usize, "{lines:?}");
    let summarised: Vec<_> = lines
        .iter()
        .filter(|line| {
            field(line, "message")
                .as_str()
                .is_some_and(|message| message.contains("more dead-lettered for reason"))
        })
        .collect();
    assert_eq!(summarised.len(), 1, "{summarised:?}");
    assert_eq!(
        field(summarised[0], "count").as_u64(),
        Some(poison as u64 - u64::from(LOGGED_PER_WINDOW))
    );
    assert_eq!(field(summarised[0], "reason"), "missing_field");

    // Every message, the delayed one included, and the summary as JSON.
    let stdout = drain.stdout();
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(summary["inserted"], 301, "{summary}");
    assert_eq!(summary["dead_lettered"], poison, "{summary}");
    assert_eq!(summary["deleted"], 301 + poison, "{summary}");
    assert_eq!(db.row_count().await, 301);
    assert_eq!(queues.source_total().await, 0);
}

/// An always-on run logs a one-line summary every interval, with rates, lag and backlog,
/// and its last-commit gauge moves with each commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_on_run_logs_a_summary_each_interval_and_exports_its_last_commit() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let port = free_port();
    let mut command = sqs2pg_command();
    command
        .args(["--log-format", "json", "run", "--summary-interval", "1s"])
        .env("SQS2PG_METRICS_ADDR", format!("127.0.0.1:{port}"));
    run_env(&mut command, &db, &queues);
    let mut consumer = Process::spawn(&test.logs, "run", &mut command);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let last_commit = || async {
        let (_, page) = http_get(&metrics).await?;
        scraped_value(&page, "sqs2pg_last_commit_timestamp_seconds")
    };
    eventually(
        Duration::from_secs(60),
        "the consumer to serve /metrics",
        || async { last_commit().await.is_some() },
    )
    .await;
    let started = last_commit().await.unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    assert!(
        (now() - started).abs() < 120.0,
        "before any commit the gauge holds the start: {started}"
    );

    let sent_at = now();
    let (bodies, _) = generate(Recipe {
        count: 50,
        seed: 15,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    let summarised = || {
        log_lines(&consumer)
            .iter()
            .filter(|line| field(line, "message") == "Ingestion summary.")
            .filter_map(|line| field(line, "processed").as_u64())
            .sum::<u64>()
    };
    eventually(
        Duration::from_secs(60),
        "summaries covering all 50",
        || async { summarised() == 50 },
    )
    .await;
    let committed = last_commit().await.unwrap();
    assert!(
        committed >= sent_at - 1.0 && committed <= now() + 1.0,
        "the gauge is the last commit's time: {committed} (sent at {sent_at})"
    );
    consumer.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        consumer
            .exit_within(Duration::from_secs(30))
            .await
            .is_some_and(|status| status.success())
    );

    let lines = log_lines(&consumer);
    let summaries: Vec<_> = lines
        .iter()
        .filter(|line| field(line, "message") == "Ingestion summary.")
        .collect();
    let busy = summaries
        .iter()
        .find(|line| field(line, "processed").as_u64() > Some(0))
        .expect("a summary of the busy interval");
    for name in [
        "interval_s",
        "messages_per_second",
        "inserted",
        "dead_lettered",
        "lag_mean_s",
        "lag_max_s",
        "backlog_visible",
    ] {
        assert!(!field(busy, name).is_null(), "no {name} in {busy}");
    }
    let lag_max = field(busy, "lag_max_s").as_f64().expect("seconds");
    assert!((0.0..60.0).contains(&lag_max), "{busy}");
    assert_eq!(db.row_count().await, 50);
}
