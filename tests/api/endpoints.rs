//! The HTTP endpoints of a running consumer: /healthz, /readyz (database and SQS reachable,
//! not shutting down) and /metrics.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A running `sqs2pg run`, killed on drop if still alive.
struct Running {
    child: Child,
    base: String,
}

impl Running {
    fn start(db: &TestDb, queues: &TestQueues) -> Self {
        let port = free_port();
        let mut command = sqs2pg_command();
        command
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_env(&mut command, db, queues);
        Self {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
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

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_metrics_answer_and_readiness_ends_when_shutdown_begins() {
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&db, &queues);

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
        metrics.contains("sqs2pg_build_info{version=\""),
        "{metrics}"
    );
    assert!(metrics.contains("sqs2pg_ready 1"), "{metrics}");

    // Idle, each loop sits in a 20 s long poll, so the process outlives the signal for a
    // while: /readyz must turn unready at once, before the exit.
    let signalled = Instant::now();
    running.signal("TERM");
    let body = running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    assert!(body.contains("shutting down"), "{body}");
    let status = running.wait_exit(Duration::from_secs(35));
    println!(
        "unready at once; exited {status} {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_database_and_recovers_with_it() {
    let postgres = PrivatePostgres::start();
    let admin_url = postgres.admin_url();
    let (db, queues) = tokio::join!(TestDb::create_on(&admin_url), TestQueues::create());
    let running = Running::start(&db, &queues);
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
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&db, &queues);
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;
    running.signal("TERM");
    running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    let signalled = Instant::now();
    running.signal("INT");
    let status = running.wait_exit(Duration::from_secs(5));
    println!(
        "second signal: exited {status} after {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(130));
}

/// `sqs2pg healthcheck` with SQS2PG_METRICS_ADDR as a container sets it (0.0.0.0:PORT).
fn healthcheck(port: u16) -> std::process::Output {
    let mut command = sqs2pg_command();
    command
        .arg("healthcheck")
        .env("SQS2PG_METRICS_ADDR", format!("0.0.0.0:{port}"));
    output_within(&mut command, Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_when_ready_and_1_with_a_reason_otherwise() {
    let closed = free_port();
    let started = Instant::now();
    let output = healthcheck(closed);
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
    let output = healthcheck(hung.local_addr().unwrap().port());
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("hung server: {} in {took:?}: {stderr}", output.status);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        took >= sqs2pg::cli::healthcheck::HEALTHCHECK_TIMEOUT && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(stderr.contains("timed out"), "{stderr}");
    drop(hung);

    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start(&db, &queues);
    let port: u16 = running.base.rsplit(':').next().unwrap().parse().unwrap();
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;
    let output = healthcheck(port);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ready\n");

    // Shutting down (idle, so the process lingers in its long poll): not ready, and why.
    running.signal("TERM");
    running
        .wait_for("/readyz", 503, Duration::from_secs(5))
        .await;
    let output = healthcheck(port);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("shutting down: {}: {stderr}", output.status);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered 503") && stderr.contains("shutting down"),
        "{stderr}"
    );
    running.wait_exit(Duration::from_secs(35));
}
