//! Every I/O has a deadline: a dependency that accepts a connection and then never answers
//! (a hung process, a load balancer in front of nothing) is reported within its deadline
//! and retried or given up on, never waited on in silence. The frozen-connection faults
//! mid-run are in tests/chaos.rs.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// How long until `child` logs a line that `is_report` accepts; it must still be running
/// then, retrying rather than given up.
async fn first_report_while_retrying(
    child: &mut Process,
    what: &str,
    is_report: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    eventually(Duration::from_secs(20), what, || {
        let logged = child.stderr().lines().any(&is_report);
        async move { logged }
    })
    .await;
    let first_report = started.elapsed();
    assert!(
        child.exited().is_none(),
        "still retrying: {}",
        child.stderr()
    );
    first_report
}

/// tokio-postgres applies `connect_timeout` to the socket's connect only, so a port that
/// accepts and stays silent used to hang `migrate` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_against_a_silent_database_fails_at_its_connect_timeout() {
    let test = Test::shared().await;
    let silent = TcpProxy::silent().await;
    let started = Instant::now();
    let output = tokio::task::block_in_place(|| {
        Process::output(
            &test.logs,
            sqs2pg_command().arg("migrate").env(
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=2",
                    silent.port
                ),
            ),
            Duration::from_secs(30),
        )
    });
    let elapsed = started.elapsed();
    let stderr = stderr_of(&output);
    println!(
        "migrate against a silent database: exit {:?} after {elapsed:.1?}",
        output.status.code()
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not finish within 2s"),
        "names the timeout: {stderr}"
    );
    assert!(elapsed < Duration::from_secs(15), "gave up at the deadline");
}

/// `run` keeps retrying a silent database at start, and says so at each attempt's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_silent_database_reports_each_connect_timeout_while_it_retries() {
    let test = Test::shared().await;
    let silent = TcpProxy::silent().await;
    let queues = TestQueues::create().await;
    let mut child = Process::spawn(
        &test.logs,
        "run",
        sqs2pg_command()
            .arg("run")
            .env(
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=1",
                    silent.port
                ),
            )
            .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
            .env("SQS2PG_DLQ_URL", &queues.urls.dlq_url),
    );
    let first_report =
        first_report_while_retrying(&mut child, "a logged connect timeout", |line| {
            line.contains("did not finish within 1s")
        })
        .await;
    println!("run against a silent database: first timeout reported after {first_report:.1?}");
    child.kill();
}

/// An SQS endpoint that accepts and never answers: each attempt ends at SQS2PG_SQS_TIMEOUT
/// and is logged as it is retried, instead of the SDK's silent attempts of 30 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_silent_sqs_endpoint_reports_each_timeout_while_it_retries() {
    let test = Test::shared().await;
    let silent = TcpProxy::silent().await;
    let db = TestDb::create().await;
    let mut child = Process::spawn(
        &test.logs,
        "run",
        sqs2pg_command()
            .arg("run")
            .env("DATABASE_URL", &db.url)
            .env("AWS_ENDPOINT_URL", silent.url())
            .env("SQS2PG_SQS_TIMEOUT", "2")
            .env(
                "SQS2PG_QUEUE_URL",
                format!("{}/000000000000/silent", silent.url()),
            ),
    );
    let first_report = first_report_while_retrying(&mut child, "a logged SQS timeout", |line| {
        let line = line.to_lowercase();
        line.contains("timeout") && line.contains("retr")
    })
    .await;
    println!("run against a silent SQS endpoint: first timeout reported after {first_report:.1?}");
    assert!(
        first_report < Duration::from_secs(12),
        "reported within a few deadlines, not after the SDK's silent retries"
    );
    child.kill();
}

/// A long poll may rightly stay silent for its whole wait: its attempt deadline is the wait
/// plus SQS2PG_SQS_TIMEOUT. With the bare call deadline, every idle poll longer than it was
/// cut and retried with a warning, and a message sent mid-poll waited for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_long_poll_outlasting_the_sqs_timeout_is_not_cut() {
    let test = Test::shared().await;
    let db = TestDb::create().await;
    let queues = TestQueues::create().await;
    let mut command = sqs2pg_command();
    run_env(&mut command, &db, &queues);
    command
        .arg("run")
        .env("SQS2PG_SQS_TIMEOUT", "1")
        .env("SQS2PG_WAIT_TIME", "4")
        .env("SQS2PG_RECEIVERS_MAX", "1")
        .env("RUST_LOG", "info");
    let mut child = Process::spawn(&test.logs, "run", &mut command);
    eventually(Duration::from_secs(30), "the pipeline started", || {
        let started = child.stderr().contains("Starting.");
        async move { started }
    })
    .await;
    // Two long polls' worth of idle time, each four times the call deadline.
    tokio::time::sleep(Duration::from_secs(9)).await;
    queues.send(&[r#"{"user_id":"u","app_version":"1","device_type":"ios","ip":"10.0.0.1","locale":null,"device_id":"d"}"#.to_owned()]).await;
    eventually(Duration::from_secs(10), "the message sent mid-poll", || {
        let db = &db;
        async move { db.row_count().await == 1 }
    })
    .await;
    let stderr = child.stderr();
    child.kill();
    let cut = |line: &&str| {
        let line = line.to_lowercase();
        line.contains("timeout") && line.contains("retr")
    };
    assert!(
        !stderr.lines().any(|line| cut(&line)),
        "no idle poll was cut at the call deadline: {stderr}"
    );
}
