//! Command-line and environment configuration. Every option has a flag and an environment
//! variable. Help shows placeholders (`<DURATION>`, `<URL>`) and each option's variable in
//! `[env: …]`; every error about a setting names its variable too, so the message says what
//! to set. Secrets are `secrecy` types: redacted in `Debug`, never echoed in errors, and
//! exposed only where they are used. Durations take humantime's forms (`30s`, `1m`,
//! `500ms`) or a plain number in the setting's historical unit.

pub use crate::telemetry::logging::LogFormat;
use std::ffi::OsStr;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use strum::VariantNames;

use crate::domain::dead_letter::DeadLetterReason;
use crate::domain::envelope::EnvelopeMode;
use crate::domain::event::Masker;
use crate::domain::keyring::{InvalidKeyId, KeyId, Keyring, KeyringError};

const ENVIRONMENT_HELP: &str = "\
Environment (each also has a flag on the subcommands that use it; see `sqs2pg <command> --help`):
  DATABASE_URL               PostgreSQL connection string (postgres://user:pass@host:port/db)
  SQS2PG_DATABASE_CA_FILE    PEM CA certificates to trust for the database (with sslmode=require)
  SQS2PG_STREAMS             a stream file (TOML) declaring what to ingest [default: login events
                             from SQS2PG_QUEUE_URL into user_logins]
  SQS2PG_QUEUE_URL           URL of the source queue (http(s)://host/<account id>/<queue name>)
  SQS2PG_DLQ_URL             URL of the dead-letter queue [default: the source queue's redrive target]
  SQS2PG_HMAC_KEY            key for masking ip and device_id (at least 16 bytes)
  SQS2PG_HMAC_KEY_FILE       file holding that key instead (a trailing newline is ignored)
  SQS2PG_HMAC_KEYRING_DIR    directory of keys instead, for rotation: one file per key, named by its id
  SQS2PG_HMAC_KEY_ID         id of the key that masks new rows, recorded in each row
                             [default: `default`, or the keyring's only key]
  SQS2PG_METRICS_ADDR        host:port of /metrics, /healthz and /readyz; :PORT is 127.0.0.1:PORT,
                             :0 a free port [default: 127.0.0.1:9898]
  SQS2PG_VISIBILITY_TIMEOUT  visibility requested on each receive, 1s to 12h, renewed while work runs [default: 30s]
  SQS2PG_RECEIVERS_MIN       fewest concurrent long polls, 1 to 256 [default: 1]
  SQS2PG_RECEIVERS_MAX       most concurrent long polls, added while receives come back full [default: 16]
  SQS2PG_WRITERS             concurrent database writers (connections), 1 to 64 [default: 4]
  SQS2PG_IN_FLIGHT_MESSAGES  most messages received and not yet deleted, 10 to 100000 [default: 1000]
  SQS2PG_IN_FLIGHT_MIB       most MiB of message bodies in flight, 1 to 4096 [default: 16]
  SQS2PG_BATCH_SIZE          most messages per transaction (group commit), 1 to 10000 [default: 100]
  SQS2PG_BATCH_WINDOW_MS     how long a batch stays open after its first message, 0 to 1m;
                             a plain number is milliseconds [default: 20ms]
  SQS2PG_WAIT_TIME           long-poll wait, 0 to 20s; a shutdown waits out the polls in flight [default: 5s]
  SQS2PG_SHUTDOWN_TIMEOUT    time to finish in-flight work after SIGTERM/SIGINT [default: 30s]
  SQS2PG_ENVELOPE            envelopes unwrapped around events: auto, sns, eventbridge, none [default: auto]
  SQS2PG_BATCH_TIMEOUT       how long a batch may stay in flight before it is released, 5s to 12h [default: 2m]
  SQS2PG_WRITE_PATIENCE      how long writes may keep failing (database unreachable or busy) before
                             ingestion pauses until a probe write commits, 1s to 1h [default: 30s]
  SQS2PG_POISON_REFUSALS_PER_MINUTE
                             rows one database refusal (same SQLSTATE, constraint, table, column) may
                             dead-letter per minute; past it the refusal pauses ingestion, 0 to 100000 [default: 20]
  SQS2PG_STATEMENT_TIMEOUT   deadline of each database statement and commit, 1s to 1h [default: 30s]
  SQS2PG_SQS_TIMEOUT         deadline of each SQS call attempt besides the long poll, 1s to 5m [default: 10s]
  SQS2PG_QUEUE_NAME          queue name for `setup` [default: user-logins]
  SQS2PG_DLQ_NAME            dead-letter queue name for `setup` [default: <queue name>-dlq]
  SQS2PG_MAX_RECEIVE_COUNT   receives before SQS itself moves a message to the DLQ, 1 to 1000 [default: 5]
  SQS2PG_STALL_AFTER         `status`: a backlog with no commit for this long needs attention [default: 5m]
  SQS2PG_DLQ_WINDOW          `status`: a dead letter recorded this recently needs attention [default: 5m]
  SQS2PG_OUTPUT              how `run --drain`, `setup`, `send`, `dlq inspect`, `dlq redrive`, `status`
                             and `digest` print their result on stdout: text or json (shapes in the
                             README) [default: text]
  SQS2PG_PROGRESS_INTERVAL   how often `run --drain` logs its progress off a terminal, 0 = never [default: 10s]
  SQS2PG_SUMMARY_INTERVAL    how often `run` logs a one-line summary (rates, lag, backlog), 0 = never [default: 1m]
  SQS2PG_LOG_FORMAT          text or json [default: text]
  RUST_LOG                   log filter: a level (trace, debug, info, warn, error, off) and/or
                             target=level directives [default: info]
  AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...
                             the standard AWS SDK settings and credentials chain

Durations (<DURATION>) are written 30s, 1m, 500ms, 1h 30m, ...; a plain number is seconds
(milliseconds for SQS2PG_BATCH_WINDOW_MS). SQS takes whole seconds for the visibility
timeout and the wait time.";

/// sqs2pg: exactly-once ingestion of login events from SQS into PostgreSQL, with PII masked.
#[derive(Debug, Parser)]
#[command(name = "sqs2pg", version, after_help = ENVIRONMENT_HELP)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "SQS2PG_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        global = true,
        value_parser = log_format_parser()
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and environment, or exits with clap's message. A missing
    /// required option is also named by its environment variable, which is how a service
    /// is usually configured.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|error| {
            if error.kind() == ErrorKind::MissingRequiredArgument {
                let variables = missing_variables(&error);
                if !variables.is_empty() {
                    let _ = error.print();
                    eprintln!(
                        "Each can be set in the environment instead: {}.",
                        variables.join(", ")
                    );
                    std::process::exit(error.exit_code());
                }
            }
            error.exit()
        })
    }
}

/// The environment variables of the options a missing-argument error lists.
fn missing_variables(error: &clap::Error) -> Vec<String> {
    let Some(ContextValue::Strings(missing)) = error.get(ContextKind::InvalidArg) else {
        return Vec::new();
    };
    let mut variables = Vec::new();
    let command = Cli::command();
    for long in missing
        .iter()
        .flat_map(|text| text.split(|c: char| c.is_whitespace() || "<>|[]".contains(c)))
        .filter_map(|token| token.strip_prefix("--"))
    {
        if let Some(env) = find_env(&command, long)
            && !variables.contains(&env)
        {
            variables.push(env);
        }
    }
    variables
}

fn find_env(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|subcommand| find_env(subcommand, long))
        })
}

/// A value parser from a plain function whose errors say what was expected, and name the
/// option by its environment variable and flag (`SQS2PG_WRITERS (--writers)`).
#[derive(Clone)]
struct Setting<T>(Arc<ParseFn<T>>);

type ParseFn<T> = dyn Fn(&str) -> Result<T, String> + Send + Sync;

fn setting<T>(parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static) -> Setting<T> {
    Setting(Arc::new(parse))
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Setting<T> {
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg
            .map(describe_arg)
            .unwrap_or_else(|| "a value".to_owned());
        let fail = |reason: String| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{name}: {reason}\n"))
                .with_cmd(command)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail("not valid UTF-8".to_owned()))?;
        (self.0)(text).map_err(|reason| fail(format!("invalid value '{text}': {reason}")))
    }
}

fn describe_arg(arg: &clap::Arg) -> String {
    match (arg.get_env(), arg.get_long()) {
        (Some(env), Some(long)) => format!("{} (--{long})", env.to_string_lossy()),
        (None, Some(long)) => format!("--{long}"),
        _ => arg.get_id().to_string(),
    }
}

/// A whole number from `min` to `max`; the error says so in words (a negative number too).
fn whole_number(min: u64, max: u64) -> Setting<u64> {
    setting(move |text| match text.trim().parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ if max == u64::MAX => Err(format!("expected a whole number, at least {min}")),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    })
}

/// The unit a plain number is read in: each duration setting keeps the unit it had when it
/// took only numbers, so existing configurations mean what they meant.
#[derive(Debug, Clone, Copy)]
enum PlainUnit {
    Seconds,
    Milliseconds,
}

/// The limits of a duration setting, and whose they are (for the error: "above the most
/// SQS allows, 12h").
#[derive(Debug, Clone, Copy)]
struct DurationLimits {
    unit: PlainUnit,
    min: Duration,
    max: Duration,
    /// SQS takes whole seconds only.
    whole_seconds: bool,
    /// Who sets the limits: "SQS allows", "sqs2pg allows".
    set_by: &'static str,
}

impl DurationLimits {
    const fn seconds(min: u64, max: u64) -> Self {
        Self {
            unit: PlainUnit::Seconds,
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
            whole_seconds: false,
            set_by: "sqs2pg allows",
        }
    }

    /// SQS's own limits, in whole seconds.
    const fn sqs_seconds(min: u64, max: u64) -> Self {
        Self {
            whole_seconds: true,
            set_by: "SQS allows",
            ..Self::seconds(min, max)
        }
    }

    const fn milliseconds(min: u64, max: u64) -> Self {
        Self {
            unit: PlainUnit::Milliseconds,
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
            ..Self::seconds(0, 0)
        }
    }

    const fn at_least_seconds(min: u64) -> Self {
        Self {
            max: Duration::MAX,
            ..Self::seconds(min, 0)
        }
    }
}

/// A duration within `limits`: humantime's forms (`30s`, `1m`, `500ms`, `1h 30m`), or a
/// plain whole number in the setting's unit.
fn parse_duration(text: &str, limits: DurationLimits) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match (text.parse::<u64>(), limits.unit) {
        (Ok(seconds), PlainUnit::Seconds) => Duration::from_secs(seconds),
        (Ok(millis), PlainUnit::Milliseconds) => Duration::from_millis(millis),
        (Err(_), unit) => humantime::parse_duration(text).map_err(|_| {
            let plain = match unit {
                PlainUnit::Seconds => "seconds",
                PlainUnit::Milliseconds => "milliseconds",
            };
            format!("expected a duration such as 30s, 1m or 500ms, or a whole number of {plain}")
        })?,
    };
    let shown = |duration: Duration| humantime::format_duration(duration).to_string();
    if limits.whole_seconds && duration.subsec_nanos() != 0 {
        return Err("SQS takes whole seconds only".to_owned());
    }
    if duration < limits.min {
        return Err(format!(
            "below the least {}, {}",
            limits.set_by,
            shown(limits.min)
        ));
    }
    if duration > limits.max {
        return Err(format!(
            "above the most {}, {}",
            limits.set_by,
            shown(limits.max)
        ));
    }
    Ok(duration)
}

fn duration(limits: DurationLimits) -> Setting<Duration> {
    setting(move |text| parse_duration(text, limits))
}

/// `host:port` for the metrics server. `:PORT` means `127.0.0.1:PORT` (loopback, like the
/// default; `:0` picks a free port); a host name is resolved now, preferring IPv4.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let expected = || "expected host:port, such as 127.0.0.1:9898, localhost:9898 or :0".to_owned();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| expected())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(expected());
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host}: {error}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// An SQS queue URL: `http(s)://host[:port]/<12-digit account id>/<queue name>`. Checked
/// at start, so a typo fails here with what is wrong, not later as a missing queue.
pub fn parse_queue_url(text: &str) -> Result<String, String> {
    let shape = "expected an SQS queue URL, http(s)://host/<account id>/<queue name>";
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{shape}; it does not start with http:// or https://"))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{shape}; it has no path"))?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c));
    if !host_ok {
        return Err(format!("{shape}; its host is empty or not a host name"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let [account, name] = segments[..] else {
        return Err(format!(
            "{shape}; its path must be /<account id>/<queue name>"
        ));
    };
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{shape}; the account id must be 12 digits"));
    }
    if !is_valid_queue_name(name) {
        return Err(format!(
            "{shape}; a queue name is 1 to 80 letters, digits, - or _ (a FIFO queue's ends in .fifo)"
        ));
    }
    Ok(text.to_owned())
}

/// SQS's rule for queue names.
pub fn is_valid_queue_name(name: &str) -> bool {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    (1..=80).contains(&name.len())
        && !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn queue_url_parser() -> Setting<String> {
    setting(parse_queue_url)
}

fn queue_name_parser() -> Setting<String> {
    setting(|name: &str| {
        if is_valid_queue_name(name) {
            Ok(name.to_owned())
        } else {
            Err(
                "a queue name is 1 to 80 letters, digits, - or _ (a FIFO queue's ends in .fifo)"
                    .to_owned(),
            )
        }
    })
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start and moved once: boxing `run`'s settings buys nothing \
              (allowed, not expected: whether it fires depends on `status`'s size beside `run`'s)"
)]
pub enum Command {
    /// Consume the queue: mask, insert, delete. Applies migrations first.
    Run(RunArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Create the queue and its dead-letter queue if absent, with a redrive policy; print both
    /// URLs. An existing queue whose redrive policy differs is reported, and changed only
    /// with --update. With --streams, prepare the database instead: each stream's table is
    /// created if absent, and what the file added to it (a nullable column, a wider text
    /// limit, an index) is applied; a change that could lose or rewrite data is refused,
    /// with the statement to run yourself.
    Setup(SetupArgs),
    /// The streams' tables: `schema ddl` prints the CREATE TABLE and indexes of each.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Send realistic synthetic login events, in batches of 10.
    Send(SendArgs),
    /// Inspect or redrive the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Exit 0 if the instance at SQS2PG_METRICS_ADDR is ready (/readyz answers 200).
    Healthcheck(HealthcheckArgs),
    /// Where the deployment stands: the queues' depths, recent rows and lag, the last
    /// commit, dead letters by reason, the migration version. Exits 0 when all is well, 2
    /// when something needs attention (each reason printed), 1 when it could not check.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Print a known ip's or device id's digest under every key of the keyring, to find its
    /// rows across key rotations. Give the value on stdin (`printf '%s' 203.0.113.7 |
    /// sqs2pg digest`): an argument shows in `ps` and in shell history. Never logged.
    Digest(DigestArgs),
}

const STATUS_HELP: &str = "\
Attention (exit code 2):
  dlq_growing        dead letters were recorded for this queue within --dlq-window
  stalled            messages wait (visible or in flight) and nothing was committed (no row,
                     no dead letter) for longer than --stall-after
  migrations_behind  the database lacks migrations this binary has
Exit codes: 0 all well, 2 attention needed, 1 could not check (an error, on stderr).
A usage error (a bad flag) exits 2 too, as for every command, with clap's message on stderr.";

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string; with sslmode=require, TLS with a verified certificate.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// PEM file of CA certificates to trust for the database (e.g. the RDS bundle), besides
    /// the system's. Needs sslmode=require in DATABASE_URL.
    #[arg(long, env = "SQS2PG_DATABASE_CA_FILE", value_name = "FILE")]
    pub database_ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The parsed connection settings, with the CA file applied.
    pub fn database(
        &self,
    ) -> Result<crate::adapters::postgres::Database, crate::adapters::postgres::SinkError> {
        let database =
            crate::adapters::postgres::parse_database_url(self.database_url.expose_secret())?;
        match &self.database_ca_file {
            Some(path) => database.with_ca_file(path),
            None => Ok(database),
        }
    }
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// URL of the source queue: http(s)://host/<account id>/<queue name>. The queue of the
    /// built-in login stream; a stream file names its streams' queues itself (and may use
    /// `${SQS2PG_QUEUE_URL}`).
    #[arg(long, env = "SQS2PG_QUEUE_URL", value_name = "URL", value_parser = queue_url_parser(),
          required_unless_present = "streams")]
    pub queue_url: Option<String>,

    /// URL of the dead-letter queue; defaults to the source queue's redrive target.
    #[arg(long, env = "SQS2PG_DLQ_URL", value_name = "URL", value_parser = queue_url_parser())]
    pub dlq_url: Option<String>,
}

/// What to ingest: a stream file, or the built-in login stream.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// A stream file (TOML) declaring the streams to ingest: each one's queue, table,
    /// idempotency key and columns (docs/streams.md). Without it, login events from
    /// SQS2PG_QUEUE_URL go into `user_logins`, as `streams/logins.toml` declares them.
    #[arg(long, env = "SQS2PG_STREAMS", value_name = "FILE")]
    pub streams: Option<PathBuf>,
}

/// Which stream of the file a command is about.
#[derive(Debug, Args)]
pub struct StreamChoice {
    /// The stream of the stream file to work on, by name. `dlq` needs it when the file
    /// declares several; `status` without it shows every stream.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
}

/// Where the masking keys come from: one key (the variable or a file), or a keyring
/// directory. Exactly one of the three (the group); `--hmac-key-id`, outside it, names the
/// key. The group is declared by hand: one derived from the struct would take in every
/// field, the id too.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("hmac-key-source").required(true).multiple(false)))]
pub struct HmacKeyArgs {
    /// Key for masking ip and device_id with HMAC-SHA256 (at least 16 bytes).
    #[arg(
        long,
        env = "SQS2PG_HMAC_KEY",
        value_name = "KEY",
        hide_env_values = true,
        group = "hmac-key-source"
    )]
    pub hmac_key: Option<SecretString>,

    /// File holding the HMAC key (a trailing newline is ignored).
    #[arg(
        long,
        env = "SQS2PG_HMAC_KEY_FILE",
        value_name = "FILE",
        group = "hmac-key-source"
    )]
    pub hmac_key_file: Option<PathBuf>,

    /// Directory of HMAC keys for rotation: one file per key, named by the key's id (a
    /// Kubernetes Secret mounted as a volume; names starting with `.` are skipped).
    #[arg(
        long,
        env = "SQS2PG_HMAC_KEYRING_DIR",
        value_name = "DIR",
        group = "hmac-key-source"
    )]
    pub hmac_keyring_dir: Option<PathBuf>,

    /// Id of the key that masks new rows, recorded in each row's hmac_key_id: with one key,
    /// that key's id; with a keyring directory, the file name of the current key (required
    /// when it holds several). Ids are 1 to 32 letters, digits, '.', '_' or '-'.
    #[arg(long, env = "SQS2PG_HMAC_KEY_ID", value_name = "ID",
          value_parser = setting(|text: &str| KeyId::parse(text).map_err(|error| error.to_string())))]
    pub hmac_key_id: Option<KeyId>,
}

/// Below this, a key is guessable; 16 bytes is 128 bits when random.
pub const MIN_HMAC_KEY_BYTES: usize = 16;

/// Why the keys cannot be loaded. Names settings, paths and key ids, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{setting} {path} cannot be read")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} must be at least {MIN_HMAC_KEY_BYTES} bytes (it has {len})")]
    TooShort { setting: &'static str, len: usize },
    #[error(
        "key {id} of SQS2PG_HMAC_KEYRING_DIR must be at least {MIN_HMAC_KEY_BYTES} bytes (it has {len})"
    )]
    RingKeyTooShort { id: KeyId, len: usize },
    #[error("SQS2PG_HMAC_KEYRING_DIR {dir}: the file name {name:?} is not a key id")]
    FileNameNotAnId {
        dir: PathBuf,
        name: String,
        #[source]
        source: InvalidKeyId,
    },
    #[error("SQS2PG_HMAC_KEYRING_DIR {dir} holds no key (names starting with . are skipped)")]
    NoKeys { dir: PathBuf },
    #[error(
        "SQS2PG_HMAC_KEY_ID must name the current key: SQS2PG_HMAC_KEYRING_DIR holds several ({ids})"
    )]
    CurrentNotNamed { ids: String },
    #[error(
        "SQS2PG_HMAC_KEY_ID is {current}, which SQS2PG_HMAC_KEYRING_DIR does not hold (its keys: {known})"
    )]
    UnknownCurrent { current: KeyId, known: String },
    #[error("the keyring is invalid")]
    Keyring(#[source] KeyringError),
}

impl HmacKeyArgs {
    /// The keyring: a ring of one key from the variable or the file (id `SQS2PG_HMAC_KEY_ID`,
    /// default `default`), or every key of the directory, sorted by id. Each key's bytes are
    /// wiped from memory once its HMAC state is keyed.
    pub fn keyring(&self) -> Result<Keyring, KeyError> {
        let single = |setting, key: SecretSlice<u8>| {
            let len = key.expose_secret().len();
            if len < MIN_HMAC_KEY_BYTES {
                return Err(KeyError::TooShort { setting, len });
            }
            let id = self.hmac_key_id.clone().unwrap_or_default();
            Ok(Keyring::single(id, Masker::new(key.expose_secret())))
        };
        match (&self.hmac_key, &self.hmac_key_file, &self.hmac_keyring_dir) {
            (Some(key), _, _) => single(
                "SQS2PG_HMAC_KEY",
                SecretSlice::from(key.expose_secret().as_bytes().to_vec()),
            ),
            (None, Some(path), _) => single(
                "SQS2PG_HMAC_KEY_FILE",
                read_key_file("SQS2PG_HMAC_KEY_FILE", path)?,
            ),
            (None, None, Some(dir)) => self.keyring_from_dir(dir),
            (None, None, None) => unreachable!("clap requires one of the three"),
        }
    }

    fn keyring_from_dir(&self, dir: &std::path::Path) -> Result<Keyring, KeyError> {
        let unreadable = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| KeyError::Unreadable {
                setting: "SQS2PG_HMAC_KEYRING_DIR",
                path,
                source,
            }
        };
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable(dir))? {
            let entry = entry.map_err(unreadable(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A mounted Secret's `..data` and its timestamped folder; editors' dotfiles.
            if name.starts_with('.') {
                continue;
            }
            let id = KeyId::parse(&name).map_err(|source| KeyError::FileNameNotAnId {
                dir: dir.to_owned(),
                name: name.clone(),
                source,
            })?;
            // `read` follows symlinks, which is what a mounted Secret's entries are.
            let key = read_key_file("SQS2PG_HMAC_KEYRING_DIR", &entry.path())?;
            let len = key.expose_secret().len();
            if len < MIN_HMAC_KEY_BYTES {
                return Err(KeyError::RingKeyTooShort { id, len });
            }
            keys.push((id, Masker::new(key.expose_secret())));
        }
        keys.sort_by(|(a, _), (b, _)| a.cmp(b));
        let ids = || {
            keys.iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let current = match (&self.hmac_key_id, keys.as_slice()) {
            (_, []) => {
                return Err(KeyError::NoKeys {
                    dir: dir.to_owned(),
                });
            }
            (Some(current), _) => current.clone(),
            (None, [(only, _)]) => only.clone(),
            (None, _) => return Err(KeyError::CurrentNotNamed { ids: ids() }),
        };
        if !keys.iter().any(|(id, _)| *id == current) {
            return Err(KeyError::UnknownCurrent {
                current,
                known: ids(),
            });
        }
        Keyring::new(keys, &current).map_err(KeyError::Keyring)
    }
}

/// A key file's bytes without trailing newlines; wiped from memory when dropped.
fn read_key_file(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<SecretSlice<u8>, KeyError> {
    let mut bytes = std::fs::read(path).map_err(|source| KeyError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(SecretSlice::from(bytes))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub streams: StreamsArgs,
    #[command(flatten)]
    pub key: HmacKeyArgs,

    /// host:port for /metrics, /healthz and /readyz; :PORT means 127.0.0.1:PORT, and :0
    /// picks a free port.
    #[arg(long, env = "SQS2PG_METRICS_ADDR", value_name = "ADDR", default_value = "127.0.0.1:9898",
          value_parser = setting(parse_metrics_addr))]
    pub metrics_addr: SocketAddr,

    /// Visibility timeout requested on each receive, 1s to 12h in whole seconds (a plain
    /// number is seconds); the heartbeat renews it while work runs.
    #[arg(long, env = "SQS2PG_VISIBILITY_TIMEOUT", value_name = "DURATION", default_value = "30s",
          allow_negative_numbers = true, value_parser = duration(VISIBILITY_TIMEOUT))]
    pub visibility_timeout: Duration,

    /// Fewest concurrent long polls, 1 to 256: the receivers kept polling while the queue
    /// is idle.
    #[arg(long, env = "SQS2PG_RECEIVERS_MIN", value_name = "COUNT",
          default_value_t = crate::pipeline::DEFAULT_RECEIVERS_MIN as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 256))]
    pub receivers_min: u64,

    /// Most concurrent long polls, 1 to 256: receivers are added while receives come back
    /// full and the in-flight budget has room, and retire when they come back empty.
    #[arg(long, env = "SQS2PG_RECEIVERS_MAX", value_name = "COUNT",
          default_value_t = crate::pipeline::DEFAULT_RECEIVERS_MAX as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 256))]
    pub receivers_max: u64,

    /// Concurrent database writers, 1 to 64, each one transaction at a time: the database
    /// connections this instance opens, whatever the receive concurrency.
    #[arg(long, env = "SQS2PG_WRITERS", value_name = "COUNT",
          default_value_t = crate::pipeline::DEFAULT_WRITERS as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 64))]
    pub writers: u64,

    /// Most messages received and not yet deleted or released, 10 to 100000: bounds memory,
    /// and receivers wait while it is spent (backpressure).
    #[arg(long, env = "SQS2PG_IN_FLIGHT_MESSAGES", value_name = "COUNT",
          default_value_t = crate::pipeline::DEFAULT_IN_FLIGHT_MESSAGES as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(10, 100_000))]
    pub in_flight_messages: u64,

    /// Most MiB of message bodies in flight, 1 to 4096 (bodies are kept until their commit,
    /// to dead-letter a row the database refuses): bounds memory when bodies are large.
    #[arg(long, env = "SQS2PG_IN_FLIGHT_MIB", value_name = "MIB",
          default_value_t = (crate::pipeline::DEFAULT_IN_FLIGHT_BYTES / (1024 * 1024)) as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 4096))]
    pub in_flight_mib: u64,

    /// Most messages per transaction, 1 to 10000, gathered across receivers (group commit).
    #[arg(long, env = "SQS2PG_BATCH_SIZE", value_name = "COUNT",
          default_value_t = crate::pipeline::DEFAULT_BATCH_MESSAGES as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 10_000))]
    pub batch_size: u64,

    /// How long a batch stays open after its first message arrived, 0 to 1m (a plain number
    /// is milliseconds): what batching adds to latency at most.
    #[arg(long = "batch-window-ms", env = "SQS2PG_BATCH_WINDOW_MS", value_name = "DURATION",
          default_value = "20ms", allow_negative_numbers = true,
          value_parser = duration(BATCH_WINDOW))]
    pub batch_window: Duration,

    /// Long-poll wait of each receive, 0 to 20s in whole seconds (a plain number is seconds).
    /// A shutdown waits out the polls in flight, so this bounds an idle instance's exit.
    #[arg(long, env = "SQS2PG_WAIT_TIME", value_name = "DURATION", default_value = "5s",
          allow_negative_numbers = true, value_parser = duration(WAIT_TIME))]
    pub wait_time: Duration,

    /// Time allowed after SIGTERM/SIGINT to finish in-flight work before exiting anyway (a
    /// plain number is seconds).
    #[arg(long, env = "SQS2PG_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "30s",
          allow_negative_numbers = true, value_parser = duration(SHUTDOWN_TIMEOUT))]
    pub shutdown_timeout: Duration,

    /// Longest a batch may stay in flight, 5s to 12h (a plain number is seconds); past it the
    /// batch is abandoned and its messages released for redelivery (and the heartbeat never
    /// extends beyond it).
    #[arg(long, env = "SQS2PG_BATCH_TIMEOUT", value_name = "DURATION", default_value = "2m",
          allow_negative_numbers = true, value_parser = duration(BATCH_TIMEOUT))]
    pub batch_timeout: Duration,

    /// How long a write may keep failing, the database unreachable or busy (a full disk, a
    /// read-only primary), before ingestion pauses: nothing is received, what is held goes
    /// back to the queue, /readyz answers 503, and a probe retries with backoff until a
    /// write commits. 1s to 1h (a plain number is seconds).
    #[arg(long, env = "SQS2PG_WRITE_PATIENCE", value_name = "DURATION", default_value = "30s",
          allow_negative_numbers = true, value_parser = duration(WRITE_PATIENCE))]
    pub write_patience: Duration,

    /// Rows one database refusal (the same SQLSTATE, constraint, table and column) may
    /// dead-letter per minute, 0 to 100000. A refused row is dead-lettered only if other
    /// rows commit beside it (or a canary write of a stored row passes); a refusal that
    /// takes more rows than this is the database's fault, and pauses ingestion instead.
    #[arg(long, env = "SQS2PG_POISON_REFUSALS_PER_MINUTE", value_name = "COUNT",
          default_value_t = crate::pipeline::verdict::DEFAULT_POISON_PER_MINUTE as u64,
          allow_negative_numbers = true,
          value_parser = whole_number(0, 100_000))]
    pub poison_refusals_per_minute: u64,

    /// Client-side deadline of each database statement, commit and connection checkout, 1s
    /// to 1h (a plain number is seconds); past it the connection is dropped and the call
    /// retried on a fresh one.
    #[arg(long, env = "SQS2PG_STATEMENT_TIMEOUT", value_name = "DURATION",
          default_value = "30s", allow_negative_numbers = true,
          value_parser = duration(STATEMENT_TIMEOUT))]
    pub statement_timeout: Duration,

    /// Deadline of each SQS call attempt other than the long poll, 1s to 5m (a plain number
    /// is seconds; a receive gets its wait time on top); past it the call is retried with
    /// backoff.
    #[arg(long, env = "SQS2PG_SQS_TIMEOUT", value_name = "DURATION", default_value = "10s",
          allow_negative_numbers = true, value_parser = duration(SQS_TIMEOUT))]
    pub sqs_timeout: Duration,

    /// Envelopes to unwrap around each event: `auto` (SNS notifications and EventBridge
    /// events, detected by shape), `sns`, `eventbridge` (every body must be one), `none`.
    #[arg(long, env = "SQS2PG_ENVELOPE", value_name = "MODE", default_value = "auto",
          value_parser = envelope_parser())]
    pub envelope: EnvelopeMode,

    /// Exit 0 once the queue is empty and all work is committed and deleted (one-shot ETL).
    /// On a terminal it shows a progress bar; elsewhere it logs a progress line every
    /// SQS2PG_PROGRESS_INTERVAL.
    #[arg(long)]
    pub drain: bool,

    /// How often a drain logs its progress (done, rate, what is left, ETA) when stderr is
    /// not a terminal, 0 (never) to 1h; on a terminal a progress bar shows it instead.
    #[arg(long, env = "SQS2PG_PROGRESS_INTERVAL", value_name = "DURATION", default_value = "10s",
          allow_negative_numbers = true, value_parser = duration(REPORT_INTERVAL))]
    pub progress_interval: Duration,

    /// How often an always-on run logs a one-line summary at info (rates, lag, backlog), 0
    /// (never) to 1h.
    #[arg(long, env = "SQS2PG_SUMMARY_INTERVAL", value_name = "DURATION", default_value = "1m",
          allow_negative_numbers = true, value_parser = duration(REPORT_INTERVAL))]
    pub summary_interval: Duration,

    /// How the closing summary is printed on stdout: `text` for people, `json` (one object,
    /// the shape in the README) for scripts.
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

/// How a command prints its result on stdout. Logs go to stderr either way. One variable,
/// `SQS2PG_OUTPUT`, for every command that has a result: a script that wants JSON wants it
/// from each command it runs, as `SQS2PG_LOG_FORMAT` is one setting for every log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object for scripts; its fields are documented and only ever added to.
    Json,
}

/// The limits of `run`'s duration settings. SQS caps visibility at 12 hours and the long
/// poll at 20 seconds, in whole seconds; a batch's deadline cannot outlive the visibility
/// its heartbeat may ask for.
const VISIBILITY_TIMEOUT: DurationLimits = DurationLimits::sqs_seconds(1, 43_200);
const WAIT_TIME: DurationLimits = DurationLimits::sqs_seconds(0, 20);
const BATCH_WINDOW: DurationLimits = DurationLimits::milliseconds(0, 60_000);
const SHUTDOWN_TIMEOUT: DurationLimits = DurationLimits::at_least_seconds(0);
const BATCH_TIMEOUT: DurationLimits = DurationLimits::seconds(5, 43_200);
const WRITE_PATIENCE: DurationLimits = DurationLimits::seconds(1, 3_600);
const REPORT_INTERVAL: DurationLimits = DurationLimits::seconds(0, 3_600);
const STATEMENT_TIMEOUT: DurationLimits = DurationLimits::seconds(1, 3_600);
const SQS_TIMEOUT: DurationLimits = DurationLimits::seconds(1, 300);
/// `status`'s windows: a week at most, since each counts the table's rows within it.
const STATUS_WINDOW: DurationLimits = DurationLimits::seconds(1, 7 * 24 * 60 * 60);

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Prepare the database for this stream file instead of creating queues: migrations,
    /// then each stream's table created if absent, or what the file added to it applied.
    /// A flag only, not SQS2PG_STREAMS: with the variable exported, `setup` still makes
    /// queues unless asked for tables.
    #[arg(long, value_name = "FILE")]
    pub streams: Option<PathBuf>,
    /// The database, for --streams: its tables are what setup prepares then.
    #[command(flatten)]
    pub database: Option<DatabaseArgs>,

    /// Name of the source queue.
    #[arg(long, env = "SQS2PG_QUEUE_NAME", value_name = "NAME", default_value = "user-logins",
          value_parser = queue_name_parser())]
    pub queue_name: String,

    /// Name of the dead-letter queue; defaults to the queue's name with -dlq appended.
    #[arg(long, env = "SQS2PG_DLQ_NAME", value_name = "NAME", value_parser = queue_name_parser())]
    pub dlq_name: Option<String>,

    /// Receives, 1 to 1000, after which SQS itself moves a message to the DLQ (a backstop for
    /// messages that crash the consumer).
    #[arg(long, env = "SQS2PG_MAX_RECEIVE_COUNT", value_name = "COUNT", default_value_t = 5,
          allow_negative_numbers = true,
          value_parser = whole_number(1, 1000).map(|count| count as u32))]
    pub max_receive_count: u32,

    /// Change an existing queue whose redrive policy differs from the one asked for. Without
    /// it, setup reports the difference and leaves the queue as it is.
    #[arg(long)]
    pub update: bool,

    /// Create a FIFO pair (both names then end in .fifo; a queue name ending in .fifo
    /// implies it). The DLQ defaults to <stem>-dlq.fifo.
    #[arg(long)]
    pub fifo: bool,

    /// How the result is printed on stdout: `text`, the two URLs as `SQS2PG_QUEUE_URL=` and
    /// `SQS2PG_DLQ_URL=` lines, or `json` (one object, the shape in the README).
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

/// `sqs2pg status`'s settings.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub streams: StreamsArgs,
    #[command(flatten)]
    pub stream: StreamChoice,

    /// Messages waiting (visible or in flight) with nothing committed for this long, 1s to
    /// 7d, need attention (`stalled`): the consumer is down or stuck.
    #[arg(long, env = "SQS2PG_STALL_AFTER", value_name = "DURATION", default_value = "5m",
          allow_negative_numbers = true, value_parser = duration(STATUS_WINDOW))]
    pub stall_after: Duration,

    /// Dead letters recorded within this last stretch, 1s to 7d, need attention
    /// (`dlq_growing`); set it to the interval a cron check runs at, to hear of each once.
    #[arg(long, env = "SQS2PG_DLQ_WINDOW", value_name = "DURATION", default_value = "5m",
          allow_negative_numbers = true, value_parser = duration(STATUS_WINDOW))]
    pub dlq_window: Duration,

    /// How the status is printed on stdout: `text`, one screen for people, or `json` (one
    /// object, the shape in the README) for scripts.
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// URL of the queue to send to.
    #[arg(long, env = "SQS2PG_QUEUE_URL", value_name = "URL", value_parser = queue_url_parser())]
    pub queue_url: String,

    /// Number of events, at least 1.
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true,
          value_parser = whole_number(1, u64::MAX))]
    pub count: u64,

    /// Seed of the generator: the same seed sends the same events.
    #[arg(long, value_name = "SEED", default_value_t = 42, allow_negative_numbers = true,
          value_parser = whole_number(0, u64::MAX))]
    pub seed: u64,

    /// Share of events, 0 to 1, that reuse an earlier event's ip or device id.
    #[arg(long, value_name = "SHARE", default_value_t = 0.1, allow_negative_numbers = true,
          value_parser = setting(parse_share))]
    pub duplicate_share: f64,

    /// Share of events, 0 to 1, with a malformed body (rounded to a whole number of events).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = setting(parse_share))]
    pub malformed_share: f64,

    /// How the result is printed on stdout: `text`, one line, or `json` (one object, the
    /// shape in the README).
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print each stream's CREATE TABLE and CREATE INDEX statements (the built-in login
    /// stream's without --streams), as `setup --streams` would run them.
    Ddl(SchemaDdlArgs),
}

#[derive(Debug, Args)]
pub struct SchemaDdlArgs {
    #[command(flatten)]
    pub streams: StreamsArgs,
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
    pub streams: StreamsArgs,
    #[command(flatten)]
    pub stream: StreamChoice,
    #[command(flatten)]
    pub key: HmacKeyArgs,

    /// Sample bodies to show per reason.
    #[arg(long, value_name = "COUNT", default_value_t = 3, allow_negative_numbers = true,
          value_parser = whole_number(0, 1000).map(|count| count as usize))]
    pub samples: usize,

    /// How the result is printed on stdout: `text` for people, or `json` (one object, the
    /// shape in the README; samples redacted as in text).
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub streams: StreamsArgs,
    #[command(flatten)]
    pub stream: StreamChoice,

    /// Only messages dead-lettered for this reason.
    #[arg(long, value_name = "REASON", value_parser = reason_parser())]
    pub reason: Option<DeadLetterReason>,

    /// At most this many messages, at least 1.
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true,
          value_parser = whole_number(1, u64::MAX))]
    pub limit: Option<u64>,

    /// How the result is printed on stdout: `text` for people, or `json` (one object, the
    /// shape in the README), also when some dead letters did not move.
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    #[command(flatten)]
    pub key: HmacKeyArgs,

    /// The value, exactly as producers send it (the digest is of its UTF-8 bytes). Omitted
    /// or `-`: read from stdin, one line (a trailing newline is dropped), which keeps it out
    /// of `ps` and shell history. (Several are taken only to be refused by `digest` itself,
    /// whose error quotes none, where clap's would quote the extra one.)
    #[arg(value_name = "VALUE", num_args = 0..)]
    pub value: Vec<SecretString>,

    /// Also print the SQL that finds the value's rows under every key: `ip` looks in
    /// hashed_ip, `device_id` in hashed_device_id.
    #[arg(long, value_name = "FIELD")]
    pub sql: Option<LookupField>,

    /// `text`: one line per key, `<key id> TAB <digest> TAB current|-`; `json`: one object,
    /// the shape in the README.
    #[arg(
        long,
        env = "SQS2PG_OUTPUT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub output: OutputFormat,
}

/// The masked field a lookup matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LookupField {
    /// `hashed_ip`.
    #[value(name = "ip")]
    Ip,
    /// `hashed_device_id`.
    #[value(name = "device_id")]
    DeviceId,
}

/// For Docker's HEALTHCHECK and other probes that can only run a command.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Address the instance serves /readyz on (as `run` reads it); 0.0.0.0 and [::] are
    /// asked on loopback.
    #[arg(long, env = "SQS2PG_METRICS_ADDR", value_name = "ADDR", default_value = "127.0.0.1:9898",
          value_parser = setting(parse_metrics_addr))]
    pub metrics_addr: SocketAddr,
}

/// The reason codes: listed in `--help`, and any other value refused with the list.
fn reason_parser() -> Listed<DeadLetterReason> {
    Listed {
        parse: setting(|text: &str| {
            text.parse::<DeadLetterReason>()
                .map_err(|error| error.to_string())
        }),
        values: DeadLetterReason::VARIANTS.to_vec(),
    }
}

fn envelope_parser() -> Listed<EnvelopeMode> {
    Listed {
        parse: setting(|text: &str| {
            text.parse::<EnvelopeMode>()
                .map_err(|error| error.to_string())
        }),
        values: EnvelopeMode::VARIANTS.to_vec(),
    }
}

fn log_format_parser() -> Listed<LogFormat> {
    Listed {
        parse: setting(|text: &str| {
            LogFormat::from_str(text, true).map_err(|_| "expected text or json".to_owned())
        }),
        values: vec!["text", "json"],
    }
}

/// A [`Setting`] with a closed set of values, which `--help` lists.
#[derive(Clone)]
struct Listed<T> {
    parse: Setting<T>,
    values: Vec<&'static str>,
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Listed<T> {
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        self.parse.parse_ref(command, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.values
                .iter()
                .map(|value| clap::builder::PossibleValue::new(*value)),
        ))
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("expected a number from 0 to 1".to_owned()),
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
        let args = Cli::try_parse_from([
            "sqs2pg",
            "run",
            "--database-url",
            "postgres://u:hunter2@h/d",
            "--queue-url",
            "http://h/000000000000/q",
            "--hmac-key",
            "0123456789abcdef-key",
        ])
        .unwrap();
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("0123456789abcdef-key"),
            "{shown}"
        );
        assert!(shown.contains("REDACTED"), "{shown}");
        let Command::Run(run) = args.command else {
            panic!("not run")
        };
        let keyring = run.key.keyring().unwrap();
        assert!(!format!("{keyring:?}").contains("0123456789abcdef-key"));
        assert_eq!(
            keyring.current().1.digest("10.0.0.1"),
            Masker::new(b"0123456789abcdef-key").digest("10.0.0.1")
        );
        assert_eq!(keyring.current_id().as_str(), "default");
    }

    fn key_args(
        key: Option<&str>,
        file: Option<PathBuf>,
        dir: Option<PathBuf>,
        id: Option<&str>,
    ) -> HmacKeyArgs {
        HmacKeyArgs {
            hmac_key: key.map(SecretString::from),
            hmac_key_file: file,
            hmac_keyring_dir: dir,
            hmac_key_id: id.map(|id| KeyId::parse(id).unwrap()),
        }
    }

    #[test]
    fn a_short_key_is_refused_naming_the_setting() {
        let error = key_args(Some("short"), None, None, None)
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(error.contains("SQS2PG_HMAC_KEY"), "{error}");
        assert!(!error.contains("short"), "{error}");
    }

    #[test]
    fn a_single_key_takes_the_id_it_is_given() {
        let keyring = key_args(Some("0123456789abcdef"), None, None, Some("2026-01"))
            .keyring()
            .unwrap();
        assert_eq!(
            keyring.ids().map(KeyId::as_str).collect::<Vec<_>>(),
            ["2026-01"]
        );
        assert_eq!(keyring.current_id().as_str(), "2026-01");
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("sqs2pg-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) -> &Self {
            std::fs::write(self.0.join(name), contents).unwrap();
            self
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_key_file_loses_its_trailing_newline() {
        let dir = TempDir::new("key-file");
        dir.write("key", "0123456789abcdef0123\n");
        let keyring = key_args(None, Some(dir.0.join("key")), None, None)
            .keyring()
            .unwrap();
        assert_eq!(
            keyring.current().1.digest("x"),
            Masker::new(b"0123456789abcdef0123").digest("x")
        );
    }

    /// A keyring directory as Kubernetes mounts a Secret: each key a symlink into a
    /// timestamped folder through `..data`, all of which start with a dot.
    #[test]
    fn a_keyring_directory_holds_one_key_per_file_named_by_its_id() {
        let dir = TempDir::new("keyring");
        std::fs::create_dir_all(dir.0.join("..2026_12_01")).unwrap();
        dir.write("..2026_12_01/2026-12", "new-key-0123456789abcdef\n")
            .write("..2026_12_01/default", "old-key-0123456789abcdef")
            .write(".editor.swp", "not a key");
        std::os::unix::fs::symlink("..2026_12_01", dir.0.join("..data")).unwrap();
        for id in ["2026-12", "default"] {
            std::os::unix::fs::symlink(format!("..data/{id}"), dir.0.join(id)).unwrap();
        }
        let keyring = key_args(None, None, Some(dir.0.clone()), Some("2026-12"))
            .keyring()
            .unwrap();
        assert_eq!(
            keyring.ids().map(KeyId::as_str).collect::<Vec<_>>(),
            ["2026-12", "default"],
            "dotfiles skipped, sorted by id"
        );
        assert_eq!(keyring.current_id().as_str(), "2026-12");
        let digests: Vec<_> = keyring.digests("x").map(|d| d.digest).collect();
        assert_eq!(
            digests,
            [
                Masker::new(b"new-key-0123456789abcdef").digest("x"),
                Masker::new(b"old-key-0123456789abcdef").digest("x")
            ]
        );

        // With several keys the current one must be named, and be one of them.
        let error = key_args(None, None, Some(dir.0.clone()), None)
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("SQS2PG_HMAC_KEY_ID") && error.contains("2026-12, default"),
            "{error}"
        );
        let error = key_args(None, None, Some(dir.0.clone()), Some("2027-01"))
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("2027-01") && error.contains("2026-12, default"),
            "{error}"
        );
    }

    #[test]
    fn a_keyring_of_one_key_needs_no_id() {
        let dir = TempDir::new("keyring-one");
        dir.write("k1", "0123456789abcdef");
        let keyring = key_args(None, None, Some(dir.0.clone()), None)
            .keyring()
            .unwrap();
        assert_eq!(keyring.current_id().as_str(), "k1");
    }

    #[test]
    fn bad_keyring_directories_are_refused_naming_the_key_never_its_bytes() {
        let dir = TempDir::new("keyring-short");
        dir.write("good", "0123456789abcdef")
            .write("short", "SHORTKEY\n");
        let error = key_args(None, None, Some(dir.0.clone()), Some("good"))
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("key short") && error.contains("16 bytes") && error.contains("it has 8"),
            "{error}"
        );
        assert!(!error.contains("SHORTKEY"), "{error}");

        let dir = TempDir::new("keyring-bad-name");
        dir.write("bad name", "0123456789abcdef");
        let error = key_args(None, None, Some(dir.0.clone()), None)
            .keyring()
            .unwrap_err();
        assert!(
            matches!(error, KeyError::FileNameNotAnId { ref name, .. } if name == "bad name"),
            "{error}"
        );

        let dir = TempDir::new("keyring-empty");
        dir.write(".hidden", "0123456789abcdef");
        let error = key_args(None, None, Some(dir.0.clone()), None)
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds no key"), "{error}");

        let missing = dir.0.join("missing");
        let error = key_args(None, None, Some(missing.clone()), None)
            .keyring()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("SQS2PG_HMAC_KEYRING_DIR")
                && error.contains(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn the_key_settings_exclude_each_other_but_not_the_id() {
        let base = ["sqs2pg", "digest", "--hmac-key", "0123456789abcdef"];
        for other in [["--hmac-key-file", "/k"], ["--hmac-keyring-dir", "/d"]] {
            let error = Cli::try_parse_from(base.iter().chain(&other)).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{error}");
        }
        let parsed = Cli::try_parse_from(base.iter().chain(&["--hmac-key-id", "k1"])).unwrap();
        let Command::Digest(digest) = parsed.command else {
            panic!("not digest")
        };
        assert_eq!(digest.key.hmac_key_id.unwrap().as_str(), "k1");
        let error = Cli::try_parse_from(base.iter().chain(&["--hmac-key-id", "bad id"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("SQS2PG_HMAC_KEY_ID (--hmac-key-id)"),
            "{error}"
        );
        let error = Cli::try_parse_from(["sqs2pg", "digest", "--hmac-key-id", "k1"]).unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::MissingRequiredArgument,
            "an id alone is no key"
        );
    }

    #[test]
    fn queue_urls_must_look_like_sqs_queue_urls() {
        for good in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/user-logins",
            "http://127.0.0.1:4566/000000000000/user_logins-dlq",
            "http://localhost.localstack.cloud:4566/000000000000/orders.fifo",
        ] {
            assert_eq!(parse_queue_url(good).as_deref(), Ok(good));
        }
        for (bad, why) in [
            ("not a url", "http:// or https://"),
            ("ftp://host/123456789012/q", "http:// or https://"),
            ("http://q", "no path"),
            ("http:///123456789012/q", "host"),
            ("http://host/q", "/<account id>/<queue name>"),
            (
                "http://host/123456789012/q/extra",
                "/<account id>/<queue name>",
            ),
            ("http://host/12345/q", "12 digits"),
            ("http://host/123456789012/bad name!", "queue name"),
            ("http://host/123456789012/", "queue name"),
            ("http://host/123456789012/q?x=1", "queue name"),
        ] {
            let error = parse_queue_url(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(!is_valid_queue_name(&"q".repeat(81)));
        assert!(!is_valid_queue_name(".fifo"));
    }

    #[test]
    fn metrics_addresses_accept_a_bare_port_and_host_names() {
        assert_eq!(parse_metrics_addr(":0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            parse_metrics_addr(":9898"),
            Ok("127.0.0.1:9898".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("0.0.0.0:9898"),
            Ok("0.0.0.0:9898".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("[::1]:9898"),
            Ok("[::1]:9898".parse().unwrap())
        );
        let localhost = parse_metrics_addr("localhost:9898").unwrap();
        assert!(localhost.ip().is_loopback() && localhost.port() == 9898);
        for bad in [
            "not-an-address",
            ":",
            ":http",
            "host:",
            ":99999",
            "localhost",
        ] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad} was accepted");
        }
    }

    /// `run` with the required settings and these arguments.
    fn parse_run(args: &[&str]) -> Result<Cli, clap::Error> {
        let base = [
            "sqs2pg",
            "run",
            "--database-url",
            "postgres://u@h/d",
            "--queue-url",
            "http://h/000000000000/q",
            "--hmac-key",
            "0123456789abcdef",
        ];
        Cli::try_parse_from(base.iter().chain(args))
    }

    /// The error clap prints for these arguments.
    fn parse_error(args: &[&str]) -> String {
        parse_run(args).unwrap_err().to_string()
    }

    #[test]
    fn invalid_numbers_name_the_variable_and_the_range() {
        let error = parse_error(&["--receivers-max", "0"]);
        assert!(
            error.contains("SQS2PG_RECEIVERS_MAX (--receivers-max)")
                && error.contains("from 1 to 256"),
            "{error}"
        );
        let error = parse_error(&["--visibility-timeout", "-5"]);
        assert!(
            error.contains("SQS2PG_VISIBILITY_TIMEOUT") && error.contains("such as 30s"),
            "{error}"
        );
        let error = parse_error(&["--visibility-timeout", "50000s"]);
        assert!(
            error.contains("SQS2PG_VISIBILITY_TIMEOUT (--visibility-timeout)")
                && error.contains("above the most SQS allows, 12h"),
            "{error}"
        );
        let error = Cli::try_parse_from([
            "sqs2pg",
            "send",
            "--queue-url",
            "http://h/000000000000/q",
            "--count",
            "-3",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--count") && error.contains("at least 1"),
            "{error}"
        );
    }

    #[test]
    fn a_value_outside_a_closed_set_names_the_variable_and_help_lists_the_set() {
        let error = parse_error(&["--log-format", "xml"]);
        assert!(
            error.contains("SQS2PG_LOG_FORMAT (--log-format)") && error.contains("text or json"),
            "{error}"
        );
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("[possible values: text, json]"), "{help}");
    }

    #[test]
    fn redrive_reasons_are_listed() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("dlq")
            .unwrap()
            .find_subcommand_mut("redrive")
            .unwrap()
            .render_help()
            .to_string();
        for reason in DeadLetterReason::VARIANTS {
            assert!(help.contains(reason), "{help}");
        }
    }

    #[test]
    fn help_uses_placeholders_not_variable_names() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("run")
            .unwrap()
            .render_help()
            .to_string();
        assert!(!help.contains("<SQS2PG_"), "{help}");
        assert!(!help.contains("<DATABASE_URL>"), "{help}");
        assert!(
            help.contains("--visibility-timeout <DURATION>")
                && help.contains("--queue-url <URL>")
                && help.contains("1 to 256"),
            "{help}"
        );
    }

    #[test]
    fn durations_take_humantime_forms_and_plain_numbers_in_their_old_unit() {
        let seconds = |text| parse_duration(text, VISIBILITY_TIMEOUT);
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds(" 1m "), Ok(Duration::from_secs(60)));
        assert_eq!(seconds("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(seconds("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(
            seconds("50000s"),
            Err("above the most SQS allows, 12h".to_owned())
        );
        assert_eq!(
            seconds("0"),
            Err("below the least SQS allows, 1s".to_owned())
        );
        assert_eq!(
            seconds("1500ms"),
            Err("SQS takes whole seconds only".to_owned())
        );
        for bad in ["soon", "-5", "5 parsecs", ""] {
            let error = seconds(bad).unwrap_err();
            assert!(error.contains("such as 30s, 1m or 500ms"), "{bad}: {error}");
        }
        let window = |text| parse_duration(text, BATCH_WINDOW);
        assert_eq!(window("20"), Ok(Duration::from_millis(20)));
        assert_eq!(window("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(window("1m"), Ok(Duration::from_secs(60)));
        assert!(window("60001").unwrap_err().contains("1m"));
        assert!(window("x").unwrap_err().contains("milliseconds"));
        assert_eq!(
            parse_duration("1500ms", STATEMENT_TIMEOUT),
            Ok(Duration::from_millis(1500)),
            "sub-second where it makes sense"
        );
        assert_eq!(
            parse_duration("999999999", SHUTDOWN_TIMEOUT),
            Ok(Duration::from_secs(999_999_999))
        );
    }

    #[test]
    fn duration_defaults_are_the_documented_constants() {
        let Command::Run(run) = parse_run(&[]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(run.batch_window, crate::pipeline::DEFAULT_BATCH_WINDOW);
        assert_eq!(run.batch_timeout, crate::pipeline::DEFAULT_BATCH_TIMEOUT);
        assert_eq!(
            run.statement_timeout,
            crate::adapters::postgres::DEFAULT_STATEMENT_TIMEOUT
        );
        assert_eq!(run.sqs_timeout, crate::adapters::sqs::DEFAULT_SQS_TIMEOUT);
        assert_eq!(run.visibility_timeout, Duration::from_secs(30));
        assert_eq!(run.wait_time, crate::pipeline::DEFAULT_WAIT_TIME);
        assert_eq!(run.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn shares_are_between_zero_and_one() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("x").is_err());
    }
}
