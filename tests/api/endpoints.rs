//! The HTTP endpoints of a running consumer: /healthz, /readyz (database and SQS reachable,
//! not shutting down) and /metrics; and what a stranger on the metrics port can and cannot
//! take from it (a flood of idle connections, a client that stalls mid-request), with the
//! open-file limit that containers start with.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqs2pg::telemetry::http::HEADER_READ_TIMEOUT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A running `sqs2pg run`, and where its endpoints are.
struct Running {
    process: Process,
    base: String,
}

impl Running {
    fn start(logs: &Logs, db: &TestDb, queues: &TestQueues) -> Self {
        Self::start_with(logs, db, queues, None)
    }

    /// `sqs2pg run` with JSON logs at INFO, and with `limit` as its open-file limit (soft,
    /// hard) if given: set by `prlimit`, which then execs the binary (the same process).
    fn start_with(
        logs: &Logs,
        db: &TestDb,
        queues: &TestQueues,
        limit: Option<(u64, u64)>,
    ) -> Self {
        let port = free_port();
        let mut command = sqs2pg_command();
        command
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("SQS2PG_LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        run_env(&mut command, db, queues);
        if let Some((soft, hard)) = limit {
            command = under_open_file_limit(&command, soft, hard);
        }
        Self {
            process: Process::spawn(logs, "run", &mut command),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
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

/// `command` run by `prlimit --nofile=SOFT:HARD`, with the same environment.
fn under_open_file_limit(command: &Command, soft: u64, hard: u64) -> Command {
    let mut limited = Command::new("prlimit");
    limited
        .arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    limited
}

/// The soft and hard open-file limits of a running process, from /proc.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// The value of `name{label="value"}` on a /metrics page.
fn labelled_value(page: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    scraped_samples(page)
        .into_iter()
        .find(|sample| {
            sample.name == name && sample.labels.get(label).map(String::as_str) == Some(value)
        })
        .map(|sample| sample.value)
}

/// The soft limit containers start with now (containerd 2, Docker 25+), and a hard limit
/// above it, as they have.
const CONTAINER_NOFILE: (u64, u64) = (1024, 4096);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_raises_its_open_file_soft_limit_to_the_hard_limit_at_start() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (soft, hard) = CONTAINER_NOFILE;
    let running = Running::start_with(&test.logs, &db, &queues, Some((soft, hard)));
    running
        .wait_for("/healthz", 200, Duration::from_secs(30))
        .await;
    let events = running
        .process
        .log_events("Set the open-file soft limit to the hard limit.");
    assert_eq!(events.len(), 1, "{}", running.process.stderr_tail(20));
    let fields = &events[0]["fields"];
    assert_eq!(
        (&fields["before"], &fields["after"], &fields["hard"]),
        (
            &serde_json::json!(soft),
            &serde_json::json!(hard),
            &serde_json::json!(hard)
        ),
        "{fields}"
    );
    // The log is not all: the kernel says so too.
    assert_eq!(open_file_limits(running.process.id()), (hard, hard));
    println!("open-file limit {soft}:{hard} at exec, {hard}:{hard} once started: {fields}");
}

/// Idle TCP connections to `addr`, `size` of them at once, as a misbehaving pod (or a
/// pool of keep-alive sockets nobody closes) holds them: each connects, sends nothing,
/// and when the server closes it connects again after a pause of 2.5 to 7.5 s (seeded,
/// so that the sockets do not all come back in one wave). Ends on [`Flood::stop`], on
/// drop, or by itself after `limit`.
struct Flood {
    stop: CancellationToken,
    connects: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Flood {
    fn start(addr: SocketAddr, size: usize, limit: Duration) -> Self {
        let stop = CancellationToken::new();
        let connects = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let deadline = tokio::time::Instant::now() + limit;
        for index in 0..size {
            let (stop, connects) = (stop.clone(), Arc::clone(&connects));
            let mut rng = ChaCha8Rng::seed_from_u64(index as u64);
            tasks.spawn(async move {
                let ended = async {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                };
                tokio::pin!(ended);
                loop {
                    let connected = tokio::select! {
                        () = &mut ended => return,
                        connected = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)) => connected,
                    };
                    if let Ok(Ok(mut stream)) = connected {
                        connects.fetch_add(1, Ordering::Relaxed);
                        let mut byte = [0u8; 1];
                        tokio::select! {
                            () = &mut ended => return,
                            // End of stream or an error: the server closed it.
                            _ = stream.read(&mut byte) => {}
                        }
                    }
                    let pause = Duration::from_millis(rng.random_range(2_500..7_500));
                    tokio::select! {
                        () = &mut ended => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            });
        }
        Self {
            stop,
            connects,
            tasks,
        }
    }

    fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What a user measured: 1,140 idle connections to the metrics port of a process at the
/// soft limit of 1024 stopped ingestion (every connect to SQS and PostgreSQL failed with
/// `Too many open files`) and the probes with it. Here the hard limit is 1024 too, so the
/// raise cannot help: the connection cap alone must keep the descriptors for ingestion,
/// and the eviction the port for the probes, while 1,200 sockets keep coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_to_the_metrics_port_starves_neither_ingestion_nor_the_probes()
{
    const FLOOD: usize = 1_200;
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 60;
    let test = Test::alone().await;
    // This process holds the flood's sockets.
    let own = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        own >= 2 * FLOOD as u64,
        "the test's own open-file limit is {own}"
    );
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut running = Running::start_with(&test.logs, &db, &queues, Some((1024, 1024)));
    running
        .wait_for("/readyz", 200, Duration::from_secs(30))
        .await;

    let flood = Flood::start(running.addr(), FLOOD, Duration::from_secs(180));
    // Until every socket has connected once; a server whose backlog is full (the one before
    // the cap) never gets there, and fails on what follows instead.
    let connecting = Instant::now();
    while flood.connects() < FLOOD as u64 && connecting.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flooded = Instant::now();

    // Messages sent while the flood goes on, a round every 2 s.
    let (bodies, _) = sqs2pg::domain::synthetic::generate(sqs2pg::domain::synthetic::Recipe {
        count: (ROUNDS * PER_ROUND) as u64,
        seed: 211,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    let mut rounds = bodies.chunks(PER_ROUND);
    let mut last_round: Option<Instant> = None;

    // Probes as the kubelet sends them: a new connection each, failed past the timeout.
    let probe = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (mut answered, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
    loop {
        for path in ["/healthz", "/readyz"] {
            let asked = Instant::now();
            match probe.get(format!("{}{path}", running.base)).send().await {
                Ok(response) if response.status() == 200 => {
                    answered += 1;
                    slowest = slowest.max(asked.elapsed());
                }
                Ok(response) => failed.push(format!("{path}: {}", response.status())),
                Err(error) => failed.push(format!("{path} after {:?}: {error}", asked.elapsed())),
            }
        }
        running.process.assert_running("the flood");
        if last_round.is_none_or(|sent| sent.elapsed() >= Duration::from_secs(2))
            && let Some(round) = rounds.next()
        {
            queues.send(round).await;
            last_round = Some(Instant::now());
        }
        // Ingested is committed and deleted: every row in, the queue empty. And past three
        // header-read timeouts, so the flood has been closed and come back.
        let rows = db.row_count().await;
        let left = queues.source_total().await;
        if rows == (ROUNDS * PER_ROUND) as i64
            && left == 0
            && rounds.len() == 0
            && flooded.elapsed() > 3 * HEADER_READ_TIMEOUT
        {
            break;
        }
        assert!(
            flooded.elapsed() < Duration::from_secs(120),
            "{rows} of {} rows, {left} messages left in the queue after {:?} of flood; \
             {} probes failed: {failed:?}; stderr:\n{}",
            ROUNDS * PER_ROUND,
            flooded.elapsed(),
            failed.len(),
            running.process.stderr_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} probes failed during the flood: {failed:?}",
        failed.len(),
        failed.len() + answered
    );
    let metrics = probe
        .get(format!("{}/metrics", running.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let connects = flood.connects();
    let lasted = flooded.elapsed();
    flood.stop().await;
    let shed = |reason| {
        labelled_value(
            &metrics,
            "sqs2pg_http_connections_shed_total",
            "reason",
            reason,
        )
        .unwrap_or_else(|| panic!("no shed count for {reason}"))
    };
    let accept_errors = scraped_value(&metrics, "sqs2pg_http_accept_errors_total");
    let warnings = running.process.log_events(
        "Metrics port at its connection cap; closed the least recently active idle connection to admit a new one.",
    );
    println!(
        "flood of {FLOOD} idle sockets at an open-file limit of 1024: {connects} connects in \
         {lasted:.1?}; {} rows; {answered} probes answered (slowest {slowest:.0?}); \
         shed: {} evicted, {} refused, {} header timeouts; accept errors {accept_errors:?}; \
         {} eviction warnings logged",
        db.row_count().await,
        shed("evicted"),
        shed("refused"),
        shed("header_timeout"),
        warnings.len(),
    );
    assert!(
        !running.process.stderr().contains("Too many open files"),
        "{}",
        running.process.stderr_tail(20)
    );
    assert!(connects >= FLOOD as u64, "only {connects} connects");
    assert!(shed("evicted") > 0.0, "the flood never reached the cap");
    assert_eq!(
        accept_errors,
        Some(0.0),
        "the process ran out of descriptors"
    );
    // One WARN line a minute at most, the rest counted.
    let minutes = lasted.as_secs() / 60 + 1;
    assert!(
        (1..=minutes as usize).contains(&warnings.len()),
        "{} eviction warnings in {lasted:?}",
        warnings.len()
    );

    running.process.signal(Signal::SIGTERM);
    let status = running.process.wait_within(Duration::from_secs(35));
    assert!(status.success(), "{}", running.process.stderr_tail(20));
}

/// A client that sends part of a request line and stalls holds a connection only for the
/// header-read timeout: hyper's, which `axum::serve` never armed (it needs a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_request_is_disconnected_within_the_header_read_timeout() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let running = Running::start(&test.logs, &db, &queues);
    running
        .wait_for("/healthz", 200, Duration::from_secs(30))
        .await;

    let mut slow = tokio::net::TcpStream::connect(running.addr())
        .await
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: slo")
        .await
        .unwrap();
    let stalled = Instant::now();
    let mut answer = Vec::new();
    // Past the timeout, with a margin for a busy machine; a read that ends is the close.
    let read = tokio::time::timeout(
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
        slow.read_to_end(&mut answer),
    )
    .await;
    let closed_after = stalled.elapsed();
    println!(
        "a stalled request: closed after {closed_after:.2?} ({read:?}, {} bytes answered)",
        answer.len()
    );
    assert!(read.is_ok(), "still open after {closed_after:?}");
    assert!(
        answer.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        closed_after >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "{closed_after:?}"
    );

    let metrics = running
        .wait_for("/metrics", 200, Duration::from_secs(5))
        .await;
    assert_eq!(
        labelled_value(
            &metrics,
            "sqs2pg_http_connections_shed_total",
            "reason",
            "header_timeout"
        ),
        Some(1.0),
        "{metrics}"
    );
}
