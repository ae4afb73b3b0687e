//! The one harness of the integration tests, as zero-to-production keeps `tests/api/helpers`:
//! every test gets its own database and its own queues on the real PostgreSQL and
//! LocalStack that `scripts/services.sh up` starts (the test command does it).
//!
//! - [`Test`]: every test that starts a process or uses the services begins with one. It
//!   holds the test's turn (heavy and timing-sensitive tests run alone, the rest beside
//!   each other) and its [`Logs`].
//! - [`Process`]: every child process a test starts, its output in the test's folder
//!   `target/test-logs/<test name>/`, kept when the test fails.
//! - [`TestDb`], [`PrivatePostgres`], [`TestQueues`]: the services, per test.
//! - [`FaultyQueue`] and [`TcpProxy`], [`SqsProxy`]: faults in front of the real queue, and
//!   on the wire.
//! - [`consumer`] and [`drain`]: an in-process pipeline; [`metric_value`] reads its metrics
//!   from the registry, [`scraped_value`] a child's from its /metrics page.
//!
//! Logs of in-process pipelines are quiet unless `TEST_LOG` is set.

mod database;
mod faults;
mod pipeline;
mod process;
mod prometheus;
mod proxy;
mod queues;
mod test;

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

pub use database::*;
pub use faults::*;
pub use pipeline::*;
pub use process::*;
pub use prometheus::*;
pub use proxy::*;
pub use queues::*;
pub use test::*;

// Items of the crate whose paths move more often than the rest (the subcommands, the
// dead-letter attributes, the pipeline), named here once, so that a move changes this list
// and nothing else.
use sqs2pg::cli::aws::sqs_client as service_sqs_client;
pub use sqs2pg::cli::config::Cli;
pub use sqs2pg::cli::healthcheck::HEALTHCHECK_TIMEOUT;
pub use sqs2pg::domain::dead_letter::{
    AttributesTag, DeadLetterReason, Distrust, Identity, attribute,
};
pub use sqs2pg::pipeline::{Pipeline, Settings, Summary};

/// The HMAC key every test uses.
pub const HMAC_KEY: &str = "test-hmac-key-0123456789abcdef";

pub const SAMPLE: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;
pub const GARBAGE: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

/// The checkout: manifests, dashboards and documentation that tests read.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

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

/// A port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url`: its status and body, or None if either could not be read.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
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

/// HMAC-SHA256 hex digests computed by Python's standard library: an implementation
/// independent of the service's.
pub fn independent_digests(logs: &Logs, values: &[String]) -> Vec<String> {
    let input = logs.file("digest-input.json");
    std::fs::write(&input, serde_json::to_string(values).unwrap()).unwrap();
    let script = "import hmac,hashlib,json,sys\n\
                  key=sys.argv[1].encode()\n\
                  for v in json.load(open(sys.argv[2])): print(hmac.new(key, v.encode(), hashlib.sha256).hexdigest())";
    let output = Process::output(
        logs,
        std::process::Command::new("python3")
            .args(["-c", script, HMAC_KEY])
            .arg(&input),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
