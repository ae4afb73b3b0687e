//! Command-line and environment configuration. Every option has a flag and an environment
//! variable; the value names are the variable names, so an error about a missing or
//! invalid setting names the variable to set. Secrets redact themselves in `Debug` and are
//! never echoed in errors.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dead_letter::DeadLetterReason;

const ENVIRONMENT_HELP: &str = "\
Environment (each also has a flag on the subcommands that use it; see `sqs2pg <command> --help`):
  DATABASE_URL               PostgreSQL connection string (postgres://user:pass@host:port/db)
  SQS2PG_DATABASE_CA_FILE    PEM CA certificates to trust for the database (with sslmode=require)
  SQS2PG_QUEUE_URL           URL of the source queue
  SQS2PG_DLQ_URL             URL of the dead-letter queue [default: the source queue's redrive target]
  SQS2PG_HMAC_KEY            key for masking ip and device_id (at least 16 bytes)
  SQS2PG_HMAC_KEY_FILE       file holding that key instead (a trailing newline is ignored)
  SQS2PG_METRICS_ADDR        address of /metrics, /healthz and /readyz [default: 127.0.0.1:9898]
  SQS2PG_VISIBILITY_TIMEOUT  seconds requested on each receive, renewed while work runs [default: 30]
  SQS2PG_CONCURRENCY         concurrent receive loops, one batch in flight each [default: 4]
  SQS2PG_BATCH_SIZE          most messages per transaction (group commit) [default: 100]
  SQS2PG_BATCH_WINDOW_MS     how long a loop gathers a batch after its first message [default: 20]
  SQS2PG_WAIT_TIME           long-poll wait in seconds, 0 to 20 [default: 20]
  SQS2PG_SHUTDOWN_TIMEOUT    seconds to finish in-flight work after SIGTERM/SIGINT [default: 30]
  SQS2PG_ENVELOPE            envelopes unwrapped around events: auto, sns, eventbridge, none [default: auto]
  SQS2PG_BATCH_TIMEOUT       seconds a batch may stay in flight before it is released [default: 120]
  SQS2PG_STATEMENT_TIMEOUT   deadline of each database statement and commit, seconds [default: 30]
  SQS2PG_SQS_TIMEOUT         deadline of each SQS call attempt besides the long poll, seconds [default: 10]
  SQS2PG_QUEUE_NAME          queue name for `setup` [default: user-logins]
  SQS2PG_DLQ_NAME            dead-letter queue name for `setup` [default: <queue name>-dlq]
  SQS2PG_MAX_RECEIVE_COUNT   receives before SQS itself moves a message to the DLQ [default: 5]
  SQS2PG_LOG_FORMAT          text or json [default: text]
  RUST_LOG                   log filter [default: info]
  AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...
                             the standard AWS SDK settings and credentials chain";

/// sqs2pg: exactly-once ingestion of login events from SQS into PostgreSQL, with PII masked.
#[derive(Debug, Parser)]
#[command(name = "sqs2pg", version, after_help = ENVIRONMENT_HELP)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "SQS2PG_LOG_FORMAT",
        value_name = "SQS2PG_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the queue: mask, insert, delete. Applies migrations first.
    Run(RunArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Create the queue and its dead-letter queue if absent, with a redrive policy; print both URLs.
    Setup(SetupArgs),
    /// Send realistic synthetic login events, in batches of 10.
    Send(SendArgs),
    /// Inspect or redrive the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Exit 0 if the instance at SQS2PG_METRICS_ADDR is ready (/readyz answers 200).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string; with sslmode=require, TLS with a verified certificate.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Secret,

    /// PEM file of CA certificates to trust for the database (e.g. the RDS bundle), besides
    /// the system's. Needs sslmode=require in DATABASE_URL.
    #[arg(
        long,
        env = "SQS2PG_DATABASE_CA_FILE",
        value_name = "SQS2PG_DATABASE_CA_FILE"
    )]
    pub database_ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The parsed connection settings, with the CA file applied.
    pub fn database(&self) -> Result<crate::sink::Database, crate::sink::SinkError> {
        let database = crate::sink::parse_database_url(self.database_url.expose())?;
        match &self.database_ca_file {
            Some(path) => database.with_ca_file(path),
            None => Ok(database),
        }
    }
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// URL of the source queue.
    #[arg(long, env = "SQS2PG_QUEUE_URL", value_name = "SQS2PG_QUEUE_URL")]
    pub queue_url: String,

    /// URL of the dead-letter queue; defaults to the source queue's redrive target.
    #[arg(long, env = "SQS2PG_DLQ_URL", value_name = "SQS2PG_DLQ_URL")]
    pub dlq_url: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct HmacKeyArgs {
    /// Key for masking ip and device_id with HMAC-SHA256 (at least 16 bytes).
    #[arg(
        long,
        env = "SQS2PG_HMAC_KEY",
        value_name = "SQS2PG_HMAC_KEY",
        hide_env_values = true
    )]
    pub hmac_key: Option<Secret>,

    /// File holding the HMAC key (a trailing newline is ignored).
    #[arg(
        long,
        env = "SQS2PG_HMAC_KEY_FILE",
        value_name = "SQS2PG_HMAC_KEY_FILE"
    )]
    pub hmac_key_file: Option<PathBuf>,
}

/// Below this, a key is guessable; 16 bytes is 128 bits when random.
pub const MIN_HMAC_KEY_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("SQS2PG_HMAC_KEY_FILE {path} cannot be read")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} must be at least {MIN_HMAC_KEY_BYTES} bytes (it has {len})")]
    TooShort { setting: &'static str, len: usize },
}

impl HmacKeyArgs {
    /// The key bytes, from the variable or the file.
    pub fn load(&self) -> Result<Vec<u8>, KeyError> {
        let (setting, key) = match (&self.hmac_key, &self.hmac_key_file) {
            (Some(key), _) => ("SQS2PG_HMAC_KEY", key.expose().as_bytes().to_vec()),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|source| KeyError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                ("SQS2PG_HMAC_KEY_FILE", bytes)
            }
            (None, None) => unreachable!("clap requires one of the two"),
        };
        if key.len() < MIN_HMAC_KEY_BYTES {
            return Err(KeyError::TooShort {
                setting,
                len: key.len(),
            });
        }
        Ok(key)
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub key: HmacKeyArgs,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SQS2PG_METRICS_ADDR",
        value_name = "SQS2PG_METRICS_ADDR",
        default_value = "127.0.0.1:9898"
    )]
    pub metrics_addr: SocketAddr,

    /// Seconds requested on each receive; the heartbeat renews it while work runs.
    #[arg(long, env = "SQS2PG_VISIBILITY_TIMEOUT", value_name = "SQS2PG_VISIBILITY_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub visibility_timeout: u64,

    /// Concurrent receive loops, each with one batch (up to SQS2PG_BATCH_SIZE) in flight.
    #[arg(long, env = "SQS2PG_CONCURRENCY", value_name = "SQS2PG_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,

    /// Most messages per transaction, gathered from consecutive receives (group commit).
    #[arg(long, env = "SQS2PG_BATCH_SIZE", value_name = "SQS2PG_BATCH_SIZE",
          default_value_t = crate::consumer::DEFAULT_BATCH_MESSAGES as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,

    /// Milliseconds a loop keeps gathering a batch after its first message arrived.
    #[arg(long, env = "SQS2PG_BATCH_WINDOW_MS", value_name = "SQS2PG_BATCH_WINDOW_MS",
          default_value_t = crate::consumer::DEFAULT_BATCH_WINDOW.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub batch_window_ms: u64,

    /// Long-poll wait of each receive, in seconds.
    #[arg(long, env = "SQS2PG_WAIT_TIME", value_name = "SQS2PG_WAIT_TIME", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_time: u64,

    /// Seconds allowed after SIGTERM/SIGINT to finish in-flight work before exiting anyway.
    #[arg(
        long,
        env = "SQS2PG_SHUTDOWN_TIMEOUT",
        value_name = "SQS2PG_SHUTDOWN_TIMEOUT",
        default_value_t = 30
    )]
    pub shutdown_timeout: u64,

    /// Longest a batch may stay in flight, in seconds; past it the batch is abandoned and
    /// its messages released for redelivery (and the heartbeat never extends beyond it).
    #[arg(long, env = "SQS2PG_BATCH_TIMEOUT", value_name = "SECONDS",
          default_value_t = crate::consumer::DEFAULT_BATCH_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(5..=43_200))]
    pub batch_timeout: u64,

    /// Client-side deadline of each database statement, commit and connection checkout, in
    /// seconds; past it the connection is dropped and the call retried on a fresh one.
    #[arg(long, env = "SQS2PG_STATEMENT_TIMEOUT", value_name = "SECONDS",
          default_value_t = crate::sink::DEFAULT_STATEMENT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub statement_timeout: u64,

    /// Deadline of each SQS call attempt other than the long poll, in seconds (a receive
    /// gets its wait time on top); past it the call is retried with backoff.
    #[arg(long, env = "SQS2PG_SQS_TIMEOUT", value_name = "SECONDS",
          default_value_t = crate::queue::DEFAULT_SQS_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub sqs_timeout: u64,

    /// Envelopes to unwrap around each event: `auto` (SNS notifications and EventBridge
    /// events, detected by shape), `sns`, `eventbridge` (every body must be one), `none`.
    #[arg(long, env = "SQS2PG_ENVELOPE", value_name = "MODE", default_value = "auto",
          value_parser = clap::builder::PossibleValuesParser::new(crate::envelope::EnvelopeMode::ALL.map(|mode| mode.as_str()))
              .map(|mode| mode.parse::<crate::envelope::EnvelopeMode>().expect("a listed mode")))]
    pub envelope: crate::envelope::EnvelopeMode,

    /// Exit 0 once the queue is empty and all work is committed and deleted (one-shot ETL).
    #[arg(long)]
    pub drain: bool,
}

impl RunArgs {
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.visibility_timeout)
    }
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Name of the source queue.
    #[arg(
        long,
        env = "SQS2PG_QUEUE_NAME",
        value_name = "SQS2PG_QUEUE_NAME",
        default_value = "user-logins"
    )]
    pub queue_name: String,

    /// Name of the dead-letter queue [default: <queue name>-dlq].
    #[arg(long, env = "SQS2PG_DLQ_NAME", value_name = "SQS2PG_DLQ_NAME")]
    pub dlq_name: Option<String>,

    /// Receives after which SQS itself moves a message to the DLQ (a backstop for messages
    /// that crash the consumer).
    #[arg(long, env = "SQS2PG_MAX_RECEIVE_COUNT", value_name = "SQS2PG_MAX_RECEIVE_COUNT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// URL of the queue to send to.
    #[arg(long, env = "SQS2PG_QUEUE_URL", value_name = "SQS2PG_QUEUE_URL")]
    pub queue_url: String,

    /// Number of events.
    #[arg(long)]
    pub count: u64,

    /// Seed of the generator: the same seed sends the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Share of events that reuse an earlier event's ip or device id.
    #[arg(long, default_value_t = 0.1, value_parser = parse_share)]
    pub duplicate_share: f64,

    /// Share of events with a malformed body (rounded to a whole number of events).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub malformed_share: f64,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show counts by reason and sample bodies, with PII masked.
    Inspect(DlqInspectArgs),
    /// Send dead-lettered messages back to the source queue, keeping their original ids.
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub struct DlqInspectArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub key: HmacKeyArgs,

    /// Sample bodies to show per reason.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Only messages dead-lettered for this reason.
    #[arg(long)]
    pub reason: Option<DeadLetterReason>,

    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// For Docker's HEALTHCHECK and other probes that can only run a command.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Address the instance serves /readyz on; 0.0.0.0 and [::] are asked on loopback.
    #[arg(
        long,
        env = "SQS2PG_METRICS_ADDR",
        value_name = "SQS2PG_METRICS_ADDR",
        default_value = "127.0.0.1:9898"
    )]
    pub metrics_addr: SocketAddr,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("expected a number from 0 to 1".to_owned()),
    }
}

/// A setting that must not be printed: `Debug` shows `<redacted>`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_are_redacted() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "<redacted>");
    }

    #[test]
    fn a_short_key_is_refused_naming_the_setting() {
        let args = HmacKeyArgs {
            hmac_key: Some("short".parse().unwrap()),
            hmac_key_file: None,
        };
        let error = args.load().unwrap_err().to_string();
        assert!(error.contains("SQS2PG_HMAC_KEY"), "{error}");
        assert!(!error.contains("short"), "{error}");
    }

    #[test]
    fn a_key_file_loses_its_trailing_newline() {
        let path = std::env::temp_dir().join(format!("sqs2pg-key-{}", std::process::id()));
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let args = HmacKeyArgs {
            hmac_key: None,
            hmac_key_file: Some(path.clone()),
        };
        assert_eq!(args.load().unwrap(), b"0123456789abcdef0123");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn shares_are_between_zero_and_one() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("x").is_err());
    }
}
