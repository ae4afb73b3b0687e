//! The HTTP endpoints of a running consumer: /healthz, /readyz (database and SQS reachable,
//! not shutting down) and /metrics.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// A running `sqs2pg run`, and where its endpoints are.
struct Running {
    process: Process,
    base: String,
}

impl Running {
    fn start(logs: &Logs, db: &TestDb, queues: &TestQueues) -> Self {
        let port = free_port();
        let mut command = sqs2pg_command();
        command.args(["run", "--metrics-addr", &format!("127.0.0.1:{port}")]);
        run_env(&mut command, db, queues);
        Self {
            process: Process::spawn(logs, "run", &mut command),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&format!("{}{path}", self.base)).await
    }

    async fn wait_for(&self, path: &str, status: u16, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some((got, body)) = self.get(path).await
                && got == status
            {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "{path} did not answer {status} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_metrics_answer_and_readiness_ends_when_shutdown_begins() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&test.logs, &db, &queues);

    assert_eq!(
        running
            .wait_for("/healthz", 200, Duration::from_secs(30))
            .await,
        "ok\n"
    );
    assert_eq!(
        running
            .wait_for("/readyz", 200, Duration::from_secs(30))
            .await,
        "ready\n"
    );
    let metrics = running
        .wait_for("/metrics", 200, Duration::from_secs(5))
        .await;
    assert!(
        scraped_samples(&metrics)
            .iter()
            .any(|sample| sample.name == "sqs2pg_build_info"
                && sample.labels.contains_key("version")),
        "{metrics}"
    );
    assert_eq!(
        scraped_value(&metrics, "sqs2pg_ready"),
        Some(1.0),
        "{metrics}"
    );

    // Idle, each loop sits in a 20 s long poll, so the process outlives the signal for a
    // while: /readyz must turn unready at once, before the exit.
    let signalled = Instant::now();
    running.process.signal(Signal::SIGTERM);
    let body = running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    assert!(body.contains("shutting down"), "{body}");
    let status = running.process.wait_within(Duration::from_secs(35));
    println!(
        "unready at once; exited {status} {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_database_and_recovers_with_it() {
    let test = Test::shared().await;
    let postgres = PrivatePostgres::start(&test.logs);
    let admin_url = postgres.admin_url();
    let (db, queues) = tokio::join!(TestDb::create_on(&admin_url), TestQueues::create());
    let running = Running::start(&test.logs, &db, &queues);
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;

    postgres.stop_server();
    let started = Instant::now();
    let body = running
        .wait_for("/readyz", 503, Duration::from_secs(20))
        .await;
    assert!(body.contains("database unreachable"), "{body}");
    assert_eq!(
        running.get("/healthz").await.map(|(status, _)| status),
        Some(200),
        "still alive"
    );
    println!("unready {:?} after the database stopped", started.elapsed());

    postgres.start_server();
    let started = Instant::now();
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;
    println!(
        "ready again {:?} after the database came back",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&test.logs, &db, &queues);
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;
    running.process.signal(Signal::SIGTERM);
    running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    let signalled = Instant::now();
    running.process.signal(Signal::SIGINT);
    let status = running.process.wait_within(Duration::from_secs(5));
    println!(
        "second signal: exited {status} after {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(130));
}

/// `sqs2pg healthcheck` with SQS2PG_METRICS_ADDR as a container sets it (0.0.0.0:PORT).
fn healthcheck(logs: &Logs, port: u16) -> std::process::Output {
    let mut command = sqs2pg_command();
    command
        .arg("healthcheck")
        .env("SQS2PG_METRICS_ADDR", format!("0.0.0.0:{port}"));
    Process::output(logs, &mut command, Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_when_ready_and_1_with_a_reason_otherwise() {
    let test = Test::shared().await;
    let closed = free_port();
    let started = Instant::now();
    let output = healthcheck(&test.logs, closed);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "closed port: {} in {:?}: {stderr}",
        output.status,
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{closed}/readyz")) && stderr.contains("refused"),
        "{stderr}"
    );

    // A server that accepts and never answers (a hung instance): failed within the timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let output = healthcheck(&test.logs, hung.local_addr().unwrap().port());
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("hung server: {} in {took:?}: {stderr}", output.status);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        took >= HEALTHCHECK_TIMEOUT && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(stderr.contains("timed out"), "{stderr}");
    drop(hung);

    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&test.logs, &db, &queues);
    let port: u16 = running.base.rsplit(':').next().unwrap().parse().unwrap();
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;
    let output = healthcheck(&test.logs, port);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ready\n");

    // Shutting down (idle, so the process lingers in its long poll): not ready, and why.
    running.process.signal(Signal::SIGTERM);
    running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    let output = healthcheck(&test.logs, port);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("shutting down: {}: {stderr}", output.status);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered 503") && stderr.contains("shutting down"),
        "{stderr}"
    );
    running.process.wait_within(Duration::from_secs(35));
}
