//! Shared test harness: every test gets its own database and its own queues on the real
//! PostgreSQL and LocalStack that `scripts/services.sh up` starts (the test command does it).
//!
//! Logs are quiet unless `TEST_LOG` is set.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use sqs2pg::adapters::postgres::{self, PostgresSink};
use sqs2pg::adapters::sqs::{Queue, QueueUrls, SqsQueue, create_queues};
use sqs2pg::domain::event::Masker;
use sqs2pg::pipeline::{Pipeline, Settings, Summary};
use sqs2pg::retry::RetryPolicy;
use sqs2pg::telemetry::http::Readiness;
use sqs2pg::telemetry::metrics::Metrics;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// The HMAC key every test uses.
pub const HMAC_KEY: &str = "test-hmac-key-0123456789abcdef";

pub const SAMPLE: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;
pub const GARBAGE: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. These tests need the real services: run `scripts/test.sh`, \
             or `scripts/services.sh up && source .run/env` first."
        )
    })
}

/// The service's own log filter (payload caps included), with `TEST_LOG` as `RUST_LOG`.
pub fn init_logging() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(directives) = std::env::var("TEST_LOG") {
            let layer = tracing_subscriber::fmt::layer().with_test_writer();
            tracing_subscriber::registry()
                .with(layer.with_filter(sqs2pg::telemetry::logging::log_filter(Some(&directives))))
                .init();
        }
    });
}

/// A short unique suffix for names of databases and queues.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The admin connection string of the shared test cluster.
pub fn admin_database_url() -> String {
    required_env("DATABASE_URL")
}

/// Replaces the database name at the end of a postgres:// URL.
pub fn with_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url);
    format!("{base}/{database}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// A fresh database with the migrations applied, on `admin_url`'s cluster.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&admin_database_url()).await
    }

    pub async fn create_on(admin_url: &str) -> Self {
        init_logging();
        let name = unique("sqs2pg_test");
        connect(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_database(admin_url, &name);
        postgres::migrate(&postgres::parse_database_url(&url).unwrap())
            .await
            .expect("migrate");
        Self { url, name }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub fn sink(&self, connections: usize) -> PostgresSink {
        PostgresSink::new(
            postgres::parse_database_url(&self.url).unwrap(),
            connections,
        )
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    /// The message ids of every row, duplicates included (for exactly-once checks).
    pub async fn message_ids(&self) -> Vec<String> {
        self.client()
            .await
            .query("SELECT message_id FROM user_logins", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    pub async fn row_count(&self) -> i64 {
        self.count("SELECT count(*) FROM user_logins").await
    }
}

pub async fn sqs_client() -> Client {
    required_env("AWS_ENDPOINT_URL");
    sqs2pg::cli::aws::sqs_client().await.expect("SQS client")
}

/// A queue and its dead-letter queue with unique names.
pub struct TestQueues {
    pub client: Client,
    pub urls: QueueUrls,
    pub name: String,
}

impl TestQueues {
    pub async fn create() -> Self {
        Self::create_with(5).await
    }

    /// A FIFO queue and its FIFO dead-letter queue.
    pub async fn create_fifo() -> Self {
        Self::create_fifo_with(5).await
    }

    pub async fn create_fifo_with(max_receive_count: u32) -> Self {
        Self::create_named(".fifo", max_receive_count).await
    }

    pub async fn create_with(max_receive_count: u32) -> Self {
        Self::create_named("", max_receive_count).await
    }

    /// A unique pair: `q_<id><suffix>` and `q_<id>-dlq<suffix>` (`.fifo` makes a FIFO pair).
    async fn create_named(suffix: &str, max_receive_count: u32) -> Self {
        init_logging();
        let client = sqs_client().await;
        let stem = unique("q");
        let name = format!("{stem}{suffix}");
        let urls = create_queues(
            &client,
            &name,
            &format!("{stem}-dlq{suffix}"),
            max_receive_count,
        )
        .await
        .expect("create queues");
        Self { client, urls, name }
    }

    pub fn sqs_queue(&self) -> SqsQueue {
        SqsQueue::new(
            self.client.clone(),
            self.urls.queue_url.clone(),
            self.urls.dlq_url.clone(),
        )
    }

    /// Sends bodies in batches of ten; returns the SQS message ids in order. On a FIFO
    /// queue the bodies are spread over sixteen message groups, each with a fresh
    /// deduplication id.
    pub async fn send(&self, bodies: &[String]) -> Vec<String> {
        let fifo = sqs2pg::adapters::sqs::is_fifo_queue_url(&self.urls.queue_url);
        let mut ids = Vec::with_capacity(bodies.len());
        for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
            let mut request = self
                .client
                .send_message_batch()
                .queue_url(&self.urls.queue_url);
            for (index, body) in chunk.iter().enumerate() {
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body);
                let entry = if fifo {
                    entry
                        .message_group_id(format!("g{}", (chunk_index * 10 + index) % 16))
                        .message_deduplication_id(uuid::Uuid::new_v4().to_string())
                } else {
                    entry
                };
                request = request.entries(entry.build().unwrap());
            }
            let output = request.send().await.expect("send batch");
            assert!(
                output.failed().is_empty(),
                "send failures: {:?}",
                output.failed()
            );
            let mut sent: Vec<_> = output.successful().to_vec();
            sent.sort_by_key(|entry| entry.id().parse::<usize>().unwrap());
            ids.extend(sent.iter().map(|entry| entry.message_id().to_owned()));
        }
        ids
    }

    /// Depth of the source queue, read in one call so the counts are consistent.
    pub async fn depth(&self) -> sqs2pg::adapters::sqs::QueueDepth {
        self.sqs_queue().depth().await.expect("queue depth")
    }

    /// Visible plus in-flight (plus delayed) messages in the source queue.
    pub async fn source_total(&self) -> u64 {
        let depth = self.depth().await;
        depth.visible + depth.in_flight + depth.delayed
    }

    /// Every message in the dead-letter queue, with its attributes and SentTimestamp
    /// (received with a long visibility, so each is seen once). A FIFO queue hands out no
    /// more of a group while some of it is in flight, so there each message read is
    /// deleted: this read empties a FIFO DLQ.
    pub async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        let fifo = sqs2pg::adapters::sqs::is_fifo_queue_url(&self.urls.dlq_url);
        let mut all = Vec::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.urls.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
                )
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
                )
                .send()
                .await
                .expect("receive dead letters");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_polls += 1;
            }
            if fifo {
                for message in &messages {
                    self.client
                        .delete_message()
                        .queue_url(&self.urls.dlq_url)
                        .receipt_handle(message.receipt_handle().unwrap())
                        .send()
                        .await
                        .expect("delete a FIFO dead letter once read");
                }
            }
            all.extend(messages);
        }
        all
    }
}

pub fn attribute_of(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    sqs2pg::adapters::sqs::string_attributes(message)
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

/// Settings for an in-process consumer that drains `queues`.
pub fn drain_settings(queues: &TestQueues) -> Settings {
    Settings {
        wait_time: Duration::from_secs(1),
        drain: true,
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(500),
            max_elapsed: None,
        },
        ..Settings::new(queues.name.clone())
    }
}

/// An in-process consumer over any queue (the real one, or a fault-injecting wrapper).
pub fn consumer<Q: Queue>(
    queue: Q,
    db: &TestDb,
    settings: Settings,
) -> Arc<Pipeline<Q, PostgresSink>> {
    Arc::new(Pipeline::new(
        Arc::new(queue),
        db.sink(settings.writers),
        Masker::new(HMAC_KEY.as_bytes()),
        Arc::new(Metrics::new()),
        Arc::new(Readiness::default()),
        settings,
    ))
}

/// Drains with an in-process consumer; fails the test if it takes longer than `limit`.
pub async fn drain<Q: Queue>(
    consumer: &Arc<Pipeline<Q, PostgresSink>>,
    limit: Duration,
) -> Summary {
    tokio::time::timeout(limit, consumer.run(CancellationToken::new()))
        .await
        .expect("the drain finished in time")
        .expect("the consumer ran")
}

/// HMAC-SHA256 hex digests computed by Python's standard library: an implementation
/// independent of the service's.
pub fn independent_digests(values: &[String]) -> Vec<String> {
    let script = "import hmac,hashlib,json,sys\n\
                  key=sys.argv[1].encode()\n\
                  for v in json.load(sys.stdin): print(hmac.new(key, v.encode(), hashlib.sha256).hexdigest())";
    let mut child = Command::new("python3")
        .args(["-c", script, HMAC_KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(values).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The service binary, with the environment of the test services.
pub fn sqs2pg_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sqs2pg"));
    command
        .env("SQS2PG_HMAC_KEY", HMAC_KEY)
        .env("SQS2PG_METRICS_ADDR", "127.0.0.1:0");
    command
}

/// Environment for the binary to consume `queues` into `db`.
pub fn run_env(command: &mut Command, db: &TestDb, queues: &TestQueues) {
    command
        .env("DATABASE_URL", &db.url)
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
        .env("SQS2PG_DLQ_URL", &queues.urls.dlq_url);
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 100 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PostgreSQL cluster of the test's own, for tests that stop and restart the database.
/// Stopped and deleted on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    fn init() -> Self {
        init_logging();
        let bin = PathBuf::from(
            std::env::var("SQS2PG_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = private_clusters_dir().join(unique("sqs2pg-test-pg"));
        std::fs::create_dir_all(&dir).unwrap();
        let this = Self {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&this.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the private cluster's folder");
        }
        this.pg(&[
            "initdb",
            "-D",
            &this.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        this
    }

    pub fn start() -> Self {
        let this = Self::init();
        this.start_server();
        this
    }

    /// A cluster that accepts TLS connections only (`hostssl` in pg_hba.conf), with the
    /// given server certificate and key.
    pub fn start_tls_only(certificate: &Path, key: &Path) -> Self {
        let this = Self::init();
        let data = PathBuf::from(this.data());
        std::fs::copy(certificate, data.join("server.crt")).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success());
        }
        this.start_server();
        this
    }

    /// A cluster where only `postgres` gets in without a password (for the admin URL);
    /// every other role must give its password over TCP (scram-sha-256).
    pub fn start_with_passwords() -> Self {
        let this = Self::init();
        let data = PathBuf::from(this.data());
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(data.join("pg_hba.conf"))
                .status()
                .unwrap();
            assert!(status.success());
        }
        this.start_server();
        this
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A command that runs a PostgreSQL binary, as the `postgres` OS user when we are root
    /// (initdb refuses to run as root).
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            // From /: that user may not be able to enter the current folder.
            command
                .args(["-u", "postgres", "--"])
                .arg(program)
                .current_dir("/");
            command
        } else {
            Command::new(program)
        }
    }

    fn pg(&self, args: &[&str]) {
        let output = self
            .pg_command(args[0])
            .args(&args[1..])
            .output()
            .expect("run a PostgreSQL binary");
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn start_server(&self) {
        let log = self.dir.join("log").display().to_string();
        let options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the server fast (open connections are cut, as in a crash or failover).
    pub fn stop_server(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where private clusters go: `.run/` in the checkout, unless we are root and the `postgres`
/// OS user, who runs the cluster then, cannot reach it (a checkout under /root, which is
/// drwx------); then the system's temporary folder, which every user can reach.
fn private_clusters_dir() -> PathBuf {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join(".run");
    std::fs::create_dir_all(&run).unwrap();
    if !is_root() || postgres_reaches(&run) {
        run
    } else {
        std::env::temp_dir()
    }
}

/// Whether the `postgres` OS user can reach (search) a folder.
fn postgres_reaches(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir)
        .output()
        .is_ok_and(|output| output.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Faults to inject in front of the real queue. Counters count down as faults fire.
#[derive(Debug, Default)]
pub struct Faults {
    /// Delete calls to swallow: answered as successful, nothing deleted (a lost response).
    pub lose_deletes: std::sync::atomic::AtomicUsize,
    /// Messages whose delete was swallowed so far.
    pub lost_deletes: std::sync::atomic::AtomicUsize,
    /// Delete calls to hold back for `delete_delay` before passing them on.
    pub slow_deletes: std::sync::atomic::AtomicUsize,
    pub delete_delay: Duration,
    /// Ignore visibility changes, so the heartbeat cannot keep messages in flight.
    pub freeze_visibility: std::sync::atomic::AtomicBool,
    /// Swallow every n-th delete call (0: never), like `lose_deletes` but as a pattern.
    pub lose_every_nth_delete: usize,
    /// Delete calls seen so far (for the pattern).
    pub delete_calls: std::sync::atomic::AtomicUsize,
    /// Receipt handles of every message whose delete was swallowed, in order.
    pub lost_receipt_handles: std::sync::Mutex<Vec<String>>,
    /// The key (idempotency id) of every received message, by receipt handle.
    pub received_keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Dead-letter sends to hold for `dead_letter_stall` and then fail as transient, like a
    /// call caught in an outage.
    pub stall_dead_letters: std::sync::atomic::AtomicUsize,
    pub dead_letter_stall: Duration,
    /// Receives to answer empty without asking SQS (a long poll that found nothing).
    pub empty_receives: std::sync::atomic::AtomicUsize,
    /// Depth reads to answer "empty" whatever the queue holds (approximate counts).
    pub falsely_empty_depths: std::sync::atomic::AtomicUsize,
}

/// The real SQS queue behind a fault injector.
pub struct FaultyQueue {
    pub inner: SqsQueue,
    pub faults: Arc<Faults>,
}

fn take_one(counter: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Queue for FaultyQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<sqs2pg::adapters::sqs::ReceivedMessage>, sqs2pg::adapters::sqs::QueueError>
    {
        if take_one(&self.faults.empty_receives) {
            return Ok(Vec::new());
        }
        let messages = self.inner.receive(max, wait, visibility).await?;
        let mut keys = self.faults.received_keys.lock().expect("not poisoned");
        for message in &messages {
            keys.insert(message.receipt_handle.clone(), message.key.clone());
        }
        Ok(messages)
    }

    async fn delete(
        &self,
        receipt_handles: &[&str],
    ) -> Result<Vec<sqs2pg::adapters::sqs::EntryFailure>, sqs2pg::adapters::sqs::QueueError> {
        let call = self
            .faults
            .delete_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let nth = self.faults.lose_every_nth_delete;
        if take_one(&self.faults.lose_deletes) || (nth > 0 && call.is_multiple_of(nth)) {
            self.faults
                .lost_deletes
                .fetch_add(receipt_handles.len(), std::sync::atomic::Ordering::SeqCst);
            self.faults
                .lost_receipt_handles
                .lock()
                .expect("not poisoned")
                .extend(receipt_handles.iter().map(|handle| (*handle).to_owned()));
            return Ok(Vec::new());
        }
        if take_one(&self.faults.slow_deletes) {
            tokio::time::sleep(self.faults.delete_delay).await;
        }
        self.inner.delete(receipt_handles).await
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<Vec<sqs2pg::adapters::sqs::EntryFailure>, sqs2pg::adapters::sqs::QueueError> {
        if self
            .faults
            .freeze_visibility
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Vec::new());
        }
        self.inner.change_visibility(receipt_handles, timeout).await
    }

    async fn dead_letter(
        &self,
        letters: &[sqs2pg::domain::dead_letter::DeadLetter],
    ) -> Result<Vec<sqs2pg::adapters::sqs::EntryFailure>, sqs2pg::adapters::sqs::QueueError> {
        if take_one(&self.faults.stall_dead_letters) {
            tokio::time::sleep(self.faults.dead_letter_stall).await;
            return Err(sqs2pg::adapters::sqs::QueueError {
                operation: "SendMessageBatch",
                class: sqs2pg::retry::ErrorClass::Transient,
                detail: "injected: the dead-letter queue was unreachable".to_owned(),
            });
        }
        self.inner.dead_letter(letters).await
    }

    async fn depth(
        &self,
    ) -> Result<sqs2pg::adapters::sqs::QueueDepth, sqs2pg::adapters::sqs::QueueError> {
        if take_one(&self.faults.falsely_empty_depths) {
            return Ok(sqs2pg::adapters::sqs::QueueDepth::default());
        }
        self.inner.depth().await
    }

    async fn dead_letter_depth(
        &self,
    ) -> Result<sqs2pg::adapters::sqs::QueueDepth, sqs2pg::adapters::sqs::QueueError> {
        self.inner.dead_letter_depth().await
    }
}

/// A TCP proxy on a fixed local port in front of `upstream`, for network partitions: `stop`
/// closes the listener and cuts every open connection (with a reset), so new connections
/// are refused and existing ones fail; `resume` listens again on the same port.
///
/// It also plays an address that went dark, which answers nothing, not even a reset:
/// `freeze` stops forwarding on every connection open at that moment and holds it open
/// (new connections pass), and `swallow` does the same to new connections too, until
/// `unswallow`.
pub struct TcpProxy {
    pub port: u16,
    upstream: std::net::SocketAddr,
    running: std::sync::Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancelled by `freeze`: each connection watches the token current when it opened.
    frozen: Arc<std::sync::Mutex<CancellationToken>>,
    swallowing: Arc<std::sync::atomic::AtomicBool>,
}

impl TcpProxy {
    /// Starts a proxy in front of `upstream` (host:port or an http:// URL) on a free port.
    pub async fn start(upstream: &str) -> Self {
        use std::net::ToSocketAddrs;
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream = authority
            .to_socket_addrs()
            .expect("resolve the proxy's upstream")
            .next()
            .expect("the upstream has an address");
        let proxy = Self {
            port: free_port(),
            upstream,
            running: std::sync::Mutex::new(None),
            accepted: Arc::default(),
            frozen: Arc::default(),
            swallowing: Arc::default(),
        };
        proxy.resume().await;
        proxy
    }

    /// Stops forwarding on every open connection and holds it open: no data, no FIN, no
    /// reset. New connections pass.
    pub fn freeze(&self) {
        let previous = std::mem::take(&mut *self.frozen.lock().expect("not poisoned"));
        previous.cancel();
    }

    /// Freezes every open connection, and every new one until `unswallow`.
    pub fn swallow(&self) {
        self.swallowing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.freeze();
    }

    /// New connections pass again (those frozen stay frozen).
    pub fn unswallow(&self) {
        self.swallowing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The proxy as an http:// endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens again on the same port (after `stop`). Panics if the port stays taken.
    pub async fn resume(&self) {
        let started = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("rebinding the proxy on port {}: {error}", self.port),
            }
        };
        let token = CancellationToken::new();
        let upstream = self.upstream;
        let accepted = Arc::clone(&self.accepted);
        let frozen = Arc::clone(&self.frozen);
        let swallowing = Arc::clone(&self.swallowing);
        let stop = token.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let inbound = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let stop = stop.clone();
                let frozen = frozen.lock().expect("not poisoned").clone();
                let swallowed = swallowing.load(std::sync::atomic::Ordering::SeqCst);
                connections.spawn(async move {
                    let mut inbound = inbound;
                    if swallowed {
                        stop.cancelled().await;
                        let _ = inbound.set_zero_linger();
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        () = stop.cancelled() => true,
                        () = frozen.cancelled() => {
                            // Dark: both sockets stay open, and nothing moves.
                            stop.cancelled().await;
                            true
                        }
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    };
                    if cut {
                        // A cut, not a goodbye: both sides get a reset.
                        let _ = inbound.set_zero_linger();
                        let _ = outbound.set_zero_linger();
                    }
                });
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        let previous = self
            .running
            .lock()
            .expect("not poisoned")
            .replace((token, task));
        assert!(previous.is_none(), "the proxy was already running");
    }

    /// Closes the listener and cuts every open connection; returns once both are done.
    pub async fn stop(&self) {
        let running = self.running.lock().expect("not poisoned").take();
        if let Some((token, task)) = running {
            token.cancel();
            let _ = task.await;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some((token, _)) = self.running.lock().expect("not poisoned").take() {
            token.cancel();
        }
    }
}

/// A server that accepts connections and never says a word: a port whose process hung, or
/// a load balancer in front of nothing. Connections are held until it is dropped.
pub struct SilentServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestQueues {
    /// Visible messages in the dead-letter queue.
    pub async fn sqs_queue_dead_letter_visible(&self) -> u64 {
        self.sqs_queue()
            .dead_letter_depth()
            .await
            .expect("DLQ depth")
            .visible
    }
}

/// Runs `command` to completion like `Command::output`, but kills it and fails the test if
/// it takes longer than `limit`: a hang must fail fast, not stall the whole suite.
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reap");
            panic!(
                "{command:?} did not finish within {limit:?}; its stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A child process whose stdout and stderr go to files, not pipes: a chatty child (trace
/// logs) never blocks on a full pipe, and its output so far can be read while it runs.
/// Killed on drop if still running.
pub struct LoggedChild {
    pub child: std::process::Child,
    dir: PathBuf,
}

impl LoggedChild {
    pub fn spawn(command: &mut Command) -> Self {
        let dir = std::env::temp_dir().join(unique("sqs2pg-child"));
        std::fs::create_dir_all(&dir).unwrap();
        let stdout = std::fs::File::create(dir.join("stdout")).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        Self { child, dir }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("stdout")).unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("stderr")).unwrap()).into_owned()
    }

    /// Waits for the exit; kills the child and fails the test if it takes longer than `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > limit {
                self.kill();
                let stderr = self.stderr();
                let mut from = stderr.len().saturating_sub(4000);
                while !stderr.is_char_boundary(from) {
                    from += 1;
                }
                let tail = &stderr[from..];
                panic!("the child did not exit within {limit:?}; the end of its stderr:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (e.g. "TERM") by the child's pid.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of an unlabelled counter or gauge, or the sample count of a histogram, read
/// from the registry (`gather`), not from the text format. Sums over label values.
pub fn metric_value(metrics: &Metrics, name: &str) -> f64 {
    let families = metrics.registry().gather();
    let family = families
        .iter()
        .find(|family| family.name() == name)
        .unwrap_or_else(|| panic!("{name} is not registered"));
    family
        .get_metric()
        .iter()
        .map(|metric| {
            if let Some(counter) = metric.counter.as_ref() {
                counter.value()
            } else if let Some(gauge) = metric.gauge.as_ref() {
                gauge.value()
            } else if let Some(histogram) = metric.histogram.as_ref() {
                histogram.sample_count() as f64
            } else {
                panic!("{name} is neither a counter, a gauge nor a histogram")
            }
        })
        .sum()
}
