//! The PostgreSQL adapter: idempotent inserts keyed on the message id, the record of
//! dead-lettered messages, and the migrations.
//!
//! Errors say what they blame ([`Blame`], in [`refusal`]): no answer (a lost connection, a
//! deadline) and a busy database (serialization failures, deadlocks, a full disk, a
//! read-only primary) are [`ErrorClass::Transient`], retried while the messages wait in
//! flight; any other refusal (a constraint, a trigger, a missing table or column) is
//! [`ErrorClass::Permanent`], and the write path decides by isolation whether the rows or
//! the database are at fault. [`SinkError::Connect`] from the connection `migrate` opens at
//! start is permanent when the settings are wrong: a wrong password or a missing database
//! will not fix itself, so start-up fails at once.
//!
//! Errors render on one line with their cause, and only with what PostgreSQL's message and
//! SQLSTATE say: never its DETAIL, which can quote row values.

#[cfg(test)]
pub mod fake;
pub mod refusal;
pub mod schema;
pub mod status;
pub mod table;

pub use refusal::{Blame, Refusal};
pub use table::TableWriter;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::domain::dead_letter::DeadLetter;
use crate::domain::stream::{Row, Stream};
use crate::retry::{Classify, ErrorClass};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The default client-side deadline of one database call (a statement, a commit, a
/// checkout from the pool): `SQS2PG_STATEMENT_TIMEOUT`. A call past it is abandoned, its
/// connection dropped, and the call retried on a fresh one: an address that went dark
/// answers nothing, not even a reset, and must not hold a batch forever. A commit that did
/// land is then seen as duplicates on retry.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default deadline of establishing a connection (TCP, TLS and the start-up exchange),
/// when `DATABASE_URL` sets no `connect_timeout`. tokio-postgres applies its
/// `connect_timeout` to the socket's connect only; like libpq, we apply it to the whole.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalives and the kernel's limit on unacknowledged data: a peer that vanished
/// (failover, a dark address) breaks the connection in well under a minute instead of the
/// kernel's default two hours, idle or busy.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Serialises concurrent `migrate` runs from several starting instances.
const MIGRATION_LOCK_KEY: i64 = 0x7371_7332_7067; // "sqs2pg"

const SELECT_DEAD_LETTERED: &str =
    "SELECT sqs_message_id FROM dead_letters WHERE sqs_message_id = ANY($1)";

const INSERT_DEAD_LETTERS: &str = "\
INSERT INTO dead_letters (sqs_message_id, message_id, reason, detail, source_queue, first_received_at) \
SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
ON CONFLICT (sqs_message_id) DO NOTHING";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("DATABASE_URL is not a valid PostgreSQL connection string")]
    InvalidUrl,
    /// The pool could not hand out a connection. Not a `#[source]`: its chain would print
    /// PostgreSQL's DETAIL; the message carries the safe rendering instead.
    #[error("no database connection: {}", describe_pool_error(.0))]
    Pool(deadpool_postgres::PoolError),
    /// Opening the connection that `migrate` uses, at start.
    #[error("database connect failed: {}", describe_postgres_error(.cause))]
    Connect { cause: tokio_postgres::Error },
    #[error("database {operation} failed: {}", describe_postgres_error(.cause))]
    Postgres {
        operation: &'static str,
        cause: tokio_postgres::Error,
    },
    #[error("database {operation} did not answer within {after:?}; its connection was dropped")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error(
        "connecting to the database did not finish within {after:?} (connect_timeout in DATABASE_URL)"
    )]
    ConnectTimeout { after: Duration },
    #[error("migrations failed: {}", describe_migration_error(.0))]
    Migration(refinery::Error),
    #[error("SQS2PG_DATABASE_CA_FILE {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error(
        "SQS2PG_DATABASE_CA_FILE is set, but DATABASE_URL does not ask for TLS: add sslmode=require"
    )]
    CaFileWithoutTls,
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// A sink made without a stream was asked to write rows: a bug, not a fault.
    #[error("this database sink writes no stream's rows")]
    NoStream,
}

impl From<deadpool_postgres::PoolError> for SinkError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Pool(error)
    }
}

impl From<refinery::Error> for SinkError {
    fn from(error: refinery::Error) -> Self {
        Self::Migration(error)
    }
}

/// PostgreSQL's own words for an error it raised (severity, message, SQLSTATE), or else the
/// driver's error with its causes (`error connecting to server: Connection refused (os error
/// 111)`). Never DETAIL or HINT: DETAIL can quote the values of a failing row.
pub fn describe_postgres_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => describe_db_error(db),
        None => describe_chain(error),
    }
}

fn describe_db_error(db: &tokio_postgres::error::DbError) -> String {
    format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    )
}

/// `error` and its sources, joined by ": ", with any PostgreSQL error among them reduced
/// to its safe parts.
fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        if let Some(db) = error.downcast_ref::<tokio_postgres::error::DbError>() {
            text = format!("{text}: {}", describe_db_error(db));
            break;
        }
        if let Some(postgres) = error.downcast_ref::<tokio_postgres::Error>() {
            text = format!("{text}: {}", describe_postgres_error(postgres));
            break;
        }
        text = format!("{text}: {error}");
        cause = error.source();
    }
    text
}

fn describe_pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(cause) => describe_postgres_error(cause),
        other => other.to_string(),
    }
}

fn describe_migration_error(error: &refinery::Error) -> String {
    match error.kind() {
        // Its text is "`what it was doing`, `the driver's Display`"; the cause is rendered
        // safely instead.
        refinery::error::Kind::Connection(what, cause) => {
            match cause.downcast_ref::<tokio_postgres::Error>() {
                Some(postgres) => format!("{what}: {}", describe_postgres_error(postgres)),
                None => format!("{what}: {}", describe_chain(cause.as_ref())),
            }
        }
        other => other.to_string(),
    }
}

/// Whether a failure to open a connection says the settings are wrong, not that the server
/// is unwell: authentication (class 28: a wrong password, an unknown role, no pg_hba.conf
/// entry), a database that does not exist (3D000), or no CONNECT privilege (42501).
fn is_permanent_connect_failure(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        let code = code.code();
        code.starts_with("28") || code == "3D000" || code == "42501"
    })
}

impl SinkError {
    fn postgres(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |cause| Self::Postgres { operation, cause }
    }

    /// A description safe for logs and the dead-letter queue: a refusal's SQLSTATE and the
    /// names it gives (constraint, table, column, type), with its message only where that
    /// never quotes a value ([`Refusal`]); never its DETAIL line, which quotes the row.
    pub fn safe_detail(&self) -> String {
        match self.blame() {
            Blame::Refused(refusal) => format!("database rejected the row: {refusal}"),
            _ => self.to_string(),
        }
    }

    /// What this error blames (see [`Blame`]).
    pub fn blame(&self) -> Blame {
        let cause = match self {
            Self::Postgres { cause, .. } | Self::Connect { cause } => Some(cause),
            Self::Pool(deadpool_postgres::PoolError::Backend(cause)) => Some(cause),
            _ => None,
        };
        match cause.and_then(tokio_postgres::Error::as_db_error) {
            Some(db) => Blame::of(db),
            None => Blame::Unreachable,
        }
    }
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Postgres { .. } => match self.blame() {
                Blame::Refused(_) => ErrorClass::Permanent,
                Blame::Unreachable | Blame::Busy(_) => ErrorClass::Transient,
            },
            // Only the connection `migrate` opens at start: there a wrong password or a
            // missing database is a configuration error, best reported at once.
            Self::Connect { cause } if is_permanent_connect_failure(cause) => ErrorClass::Permanent,
            Self::Connect { .. } => ErrorClass::Transient,
            Self::InvalidUrl
            | Self::Migration(_)
            | Self::CaFile { .. }
            | Self::CaFileWithoutTls
            | Self::Tls(_)
            | Self::NoStream => ErrorClass::Permanent,
            // The pool's connections are the running consumer's. An authentication failure
            // there (a password rotated before the new secret is deployed, a database being
            // recreated) stays transient on purpose: the messages are safe in flight, and a
            // write path that keeps failing pauses ingestion (the circuit breaker) until the
            // operator fixes the setting, losing nothing.
            Self::Pool(_) | Self::Timeout { .. } | Self::ConnectTimeout { .. } => {
                ErrorClass::Transient
            }
        }
    }
}

/// What the canary write found: see [`Sink::canary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canary {
    /// A row already in the table was written again and accepted: the table takes rows.
    Accepted,
    /// The table is empty: nothing to try, so no evidence either way.
    NoRow,
}

/// How one committed batch went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: u64,
    /// Rows whose message id was already there: redeliveries, skipped.
    pub duplicates: u64,
}

/// Where the database is and how to reach it: the parsed `DATABASE_URL` and its TLS.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    tls: DatabaseTls,
    /// The deadline of establishing one connection: `connect_timeout`, applied to the whole.
    connect_timeout: Duration,
    /// The deadline of each call on a connection.
    statement_timeout: Duration,
}

/// Names the database without its credentials.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.uses_tls())
            .finish_non_exhaustive()
    }
}

/// How connections are secured. `sslmode=require` in `DATABASE_URL` gets TLS with the
/// server's certificate verified against the system's roots and, if given, a CA file of
/// its own (managed databases such as RDS sign with a private CA): stricter than libpq's
/// `require`, which encrypts without verifying. Any other sslmode connects in plain text.
#[derive(Clone)]
enum DatabaseTls {
    Plain,
    Verified(MakeRustlsConnect),
}

/// Parses `DATABASE_URL`. The error never echoes the URL: it may hold a password.
pub fn parse_database_url(url: &str) -> Result<Database, SinkError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| SinkError::InvalidUrl)?;
    // libpq reads connect_timeout=0 as "wait forever"; here every I/O has a deadline.
    let connect_timeout = match config.get_connect_timeout() {
        Some(timeout) if !timeout.is_zero() => *timeout,
        _ => DEFAULT_CONNECT_TIMEOUT,
    };
    config.connect_timeout(connect_timeout);
    config.keepalives(true);
    // The URL's own keepalive settings win; tokio-postgres's defaults (2 h idle) do not.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("sqs2pg");
    }
    let tls = match config.get_ssl_mode() {
        SslMode::Require => DatabaseTls::Verified(verifying_connector(None)?),
        _ => DatabaseTls::Plain,
    };
    Ok(Database {
        config,
        tls,
        connect_timeout,
        statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
    })
}

impl Database {
    /// Trusts the CA certificates in `path` (PEM) too, for `sslmode=require`.
    pub fn with_ca_file(self, path: &Path) -> Result<Self, SinkError> {
        match self.config.get_ssl_mode() {
            SslMode::Require => Ok(Self {
                tls: DatabaseTls::Verified(verifying_connector(Some(path))?),
                ..self
            }),
            _ => Err(SinkError::CaFileWithoutTls),
        }
    }

    /// Sets the client-side deadline of each call (`SQS2PG_STATEMENT_TIMEOUT`).
    pub fn with_statement_timeout(self, statement_timeout: Duration) -> Self {
        Self {
            statement_timeout,
            ..self
        }
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The deadline of establishing one connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The deadline of each call on a connection.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.tls, DatabaseTls::Verified(_))
    }

    /// One connection, its driver spawned onto the runtime, within the connect deadline: a
    /// port that accepts and then says nothing must not hang `migrate` or `run`.
    async fn connect(&self) -> Result<tokio_postgres::Client, SinkError> {
        tokio::time::timeout(self.connect_timeout, self.connect_unbounded())
            .await
            .unwrap_or(Err(SinkError::ConnectTimeout {
                after: self.connect_timeout,
            }))
    }

    async fn connect_unbounded(&self) -> Result<tokio_postgres::Client, SinkError> {
        let connect = |cause| SinkError::Connect { cause };
        match &self.tls {
            DatabaseTls::Plain => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(connect)?;
                tokio::spawn(connection);
                Ok(client)
            }
            DatabaseTls::Verified(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(connect)?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }
}

/// A TLS connector that verifies the server against the system's roots plus `ca_file`.
fn verifying_connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a CA file may be all that is needed.
    let (_, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let unreadable = |detail: String| SinkError::CaFile {
            path: path.to_owned(),
            detail,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|error| unreadable(error.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| unreadable(error.to_string()))?;
        if certificates.is_empty() {
            return Err(unreadable("no PEM certificates in it".to_owned()));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| unreadable(error.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| SinkError::Tls(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Applies the migrations in `migrations/`. Safe to run from several instances at once:
/// an advisory lock makes them take turns.
pub async fn migrate(database: &Database) -> Result<refinery::Report, SinkError> {
    let mut client = database.connect().await?;
    // The migrations' `CREATE TABLE IF NOT EXISTS` would otherwise draw a NOTICE on every
    // start, which tokio-postgres logs at INFO.
    client
        .batch_execute("SET client_min_messages = warning")
        .await
        .map_err(SinkError::postgres("configure the migration session"))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(SinkError::postgres("lock migrations"))?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    // Released explicitly, not left to the session's end: the connection's driver task may
    // not run again soon, and another instance is waiting for the lock.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(SinkError::postgres("unlock migrations"))?;
    Ok(report?)
}

/// A pool of connections that reconnects by itself after the database comes back. Every
/// call runs under the statement deadline, and a connection whose call overran is dropped,
/// not returned to the pool (see [`PostgresSink::on_connection`]).
///
/// Each session also sets `idle_in_transaction_session_timeout` to the statement deadline.
/// A connection we dropped because its address went dark may still be alive on the server,
/// idle inside its transaction and holding the row locks of its batch's message ids; the
/// retry's insert of those same ids would wait on those locks until the server's own
/// keepalives notice (two hours by default). With the timeout the server rolls the orphan
/// back. Our own transactions are never idle between statements, so it never cuts them.
#[derive(Clone)]
pub struct PostgresSink {
    pool: Pool,
    statement_timeout: Duration,
    /// The stream whose rows `insert` writes; `None` for a sink that only records dead
    /// letters and answers pings.
    table: Option<Arc<TableWriter>>,
}

/// A failure of a [`Sink`] call: classified for retries, and describable without quoting
/// the row it failed on (the description goes to logs and to the dead-letter queue).
pub trait SinkFailure: Classify + std::fmt::Display + Send + Sync + 'static {
    fn safe_detail(&self) -> String {
        self.to_string()
    }

    /// What the failure blames: the write path retries the unreachable and the busy, and
    /// isolates refusals to tell poison rows from a database that refuses everything.
    fn blame(&self) -> Blame;
}

impl SinkFailure for SinkError {
    fn safe_detail(&self) -> String {
        SinkError::safe_detail(self)
    }

    fn blame(&self) -> Blame {
        SinkError::blame(self)
    }
}

/// What the pipeline needs from the database. [`PostgresSink`] is the real one; the
/// pipeline's unit tests use an in-memory fake.
pub trait Sink: Send + Sync + 'static {
    type Error: SinkFailure;

    /// Inserts `rows` in one transaction; existing message ids are skipped, not errors.
    /// Borrowed rows: a refused batch is retried in halves without copying them.
    fn insert(
        &self,
        rows: &[&Row],
    ) -> impl Future<Output = Result<InsertOutcome, Self::Error>> + Send;

    /// Which of these message copies (SQS ids) were already sent to the dead-letter queue.
    fn dead_lettered(
        &self,
        sqs_message_ids: &[&str],
    ) -> impl Future<Output = Result<HashSet<String>, Self::Error>> + Send;

    /// Records that `letters` were sent to the dead-letter queue.
    fn record_dead_letters(
        &self,
        letters: &[DeadLetter],
        source_queue: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A cheap round trip, for readiness.
    fn ping(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Writes a row the table already holds again, through its constraints and triggers,
    /// and rolls back: whether the table takes a row known to be valid. `SELECT 1` answers
    /// while a constraint, a trigger, a missing column or a read-only primary refuses every
    /// insert; this does not.
    fn canary(&self) -> impl Future<Output = Result<Canary, Self::Error>> + Send;
}

impl Sink for PostgresSink {
    type Error = SinkError;

    async fn insert(&self, rows: &[&Row]) -> Result<InsertOutcome, SinkError> {
        PostgresSink::insert(self, rows).await
    }

    async fn dead_lettered(&self, sqs_message_ids: &[&str]) -> Result<HashSet<String>, SinkError> {
        PostgresSink::dead_lettered(self, sqs_message_ids).await
    }

    async fn record_dead_letters(
        &self,
        letters: &[DeadLetter],
        source_queue: &str,
    ) -> Result<(), SinkError> {
        PostgresSink::record_dead_letters(self, letters, source_queue).await
    }

    async fn ping(&self) -> Result<(), SinkError> {
        PostgresSink::ping(self).await
    }

    async fn canary(&self) -> Result<Canary, SinkError> {
        PostgresSink::canary(self).await
    }
}

impl PostgresSink {
    pub fn new(database: Database, max_connections: usize) -> Self {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let statement_timeout = database.statement_timeout;
        let connect_timeout = database.connect_timeout;
        let manager = match database.tls {
            DatabaseTls::Plain => Manager::from_config(database.config, NoTls, manager_config),
            DatabaseTls::Verified(tls) => {
                Manager::from_config(database.config, tls, manager_config)
            }
        };
        let bound_idle_transactions = deadpool_postgres::Hook::async_fn(move |client, _| {
            Box::pin(async move {
                let set = format!(
                    "SET idle_in_transaction_session_timeout = {}",
                    statement_timeout.as_millis()
                );
                tokio::time::timeout(statement_timeout, client.batch_execute(&set))
                    .await
                    .map_err(|_| deadpool_postgres::HookError::message("SET timed out"))?
                    .map_err(deadpool_postgres::HookError::Backend)
            })
        });
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .post_create(bound_idle_transactions)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(statement_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .expect("a runtime is configured, so the pool builds");
        Self {
            pool,
            statement_timeout,
            table: None,
        }
    }

    /// Runs `call` on a pooled connection within the statement deadline. A connection whose
    /// call overran is taken out of the pool and dropped (its driver task with it): a
    /// frozen connection (no RST, no FIN) would otherwise go back to the pool, since it
    /// is not closed, and every retry would queue behind the call that never ends.
    async fn on_connection<T>(
        &self,
        operation: &'static str,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let mut client = self.pool.get().await?;
        match tokio::time::timeout(self.statement_timeout, call(&mut client)).await {
            Ok(result) => result,
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err(SinkError::Timeout {
                    operation,
                    after: self.statement_timeout,
                })
            }
        }
    }

    /// Inserts `rows` in one transaction; existing message ids are skipped, not errors.
    pub async fn insert(&self, rows: &[&Row]) -> Result<InsertOutcome, SinkError> {
        let table = self.table()?;
        self.on_connection("insert", async |client| table.insert_on(client, rows).await)
            .await
    }

    /// The stream this sink writes, if it writes one ([`PostgresSink::for_stream`]).
    fn table(&self) -> Result<&TableWriter, SinkError> {
        self.table.as_deref().ok_or(SinkError::NoStream)
    }

    /// A sink that writes `stream`'s table, on this sink's pool: every stream of a process
    /// shares the writers' connections.
    pub fn for_stream(&self, stream: &Stream) -> Self {
        Self {
            table: Some(Arc::new(TableWriter::of(stream))),
            ..self.clone()
        }
    }

    /// Which of these message copies (SQS ids) were already sent to the dead-letter queue.
    pub async fn dead_lettered(
        &self,
        sqs_message_ids: &[&str],
    ) -> Result<HashSet<String>, SinkError> {
        self.on_connection("select dead letters", async |client| {
            let statement = client
                .prepare_cached(SELECT_DEAD_LETTERED)
                .await
                .map_err(SinkError::postgres("prepare select dead letters"))?;
            let rows = client
                .query(&statement, &[&sqs_message_ids])
                .await
                .map_err(SinkError::postgres("select dead letters"))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// Records that `letters` were sent to the dead-letter queue.
    pub async fn record_dead_letters(
        &self,
        letters: &[DeadLetter],
        source_queue: &str,
    ) -> Result<(), SinkError> {
        let sqs_message_ids: Vec<&str> =
            letters.iter().map(|l| l.sqs_message_id.as_str()).collect();
        let message_ids: Vec<&str> = letters.iter().map(|l| l.message_id.as_str()).collect();
        let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
        let details: Vec<&str> = letters.iter().map(|l| l.detail.as_str()).collect();
        let sources: Vec<&str> = vec![source_queue; letters.len()];
        let received: Vec<DateTime<Utc>> = letters.iter().map(|l| l.first_received_at).collect();
        self.on_connection("record dead letters", async |client| {
            let statement = client
                .prepare_cached(INSERT_DEAD_LETTERS)
                .await
                .map_err(SinkError::postgres("prepare record dead letters"))?;
            client
                .execute(
                    &statement,
                    &[
                        &sqs_message_ids,
                        &message_ids,
                        &reasons,
                        &details,
                        &sources,
                        &received,
                    ],
                )
                .await
                .map_err(SinkError::postgres("record dead letters"))?;
            Ok(())
        })
        .await
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.on_connection("ping", async |client| {
            client
                .simple_query("SELECT 1")
                .await
                .map_err(SinkError::postgres("ping"))?;
            Ok(())
        })
        .await
    }
}

impl PostgresSink {
    /// See [`Sink::canary`].
    pub async fn canary(&self) -> Result<Canary, SinkError> {
        let table = self.table()?;
        self.on_connection("canary insert", async |client| {
            table.canary_on(client).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_is_reported_without_echoing_it() {
        let error = parse_database_url("postgres://user:hunter2@host:notaport/db").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        assert!(error.to_string().contains("DATABASE_URL"));
    }

    #[test]
    fn defaults_are_added_to_a_valid_url() {
        let database = parse_database_url("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        assert_eq!(
            database.config().get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        assert_eq!(database.config().get_application_name(), Some("sqs2pg"));
    }

    #[tokio::test]
    async fn a_refused_connection_says_so_and_is_retried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // free once the listener is dropped
        let database =
            parse_database_url(&format!("postgres://u:hunter2@127.0.0.1:{port}/db")).unwrap();
        let error = database.connect().await.err().unwrap();
        let text = error.to_string();
        assert!(
            text.starts_with("database connect failed: error connecting to server:")
                && text.contains("Connection refused"),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains('\n'), "{text}");
        assert_eq!(error.class(), ErrorClass::Transient);
    }

    #[test]
    fn only_sslmode_require_turns_tls_on() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert!(!parse_database_url(url).unwrap().uses_tls());
        assert!(
            !parse_database_url(&format!("{url}?sslmode=prefer"))
                .unwrap()
                .uses_tls()
        );
        assert!(
            parse_database_url(&format!("{url}?sslmode=require"))
                .unwrap()
                .uses_tls()
        );
    }

    #[test]
    fn a_ca_file_needs_tls_and_must_hold_certificates() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        let plain = parse_database_url(url).unwrap();
        assert!(matches!(
            plain.with_ca_file(Path::new("/dev/null")),
            Err(SinkError::CaFileWithoutTls)
        ));
        let tls = parse_database_url(&format!("{url}?sslmode=require")).unwrap();
        let error = tls.with_ca_file(Path::new("/dev/null")).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("SQS2PG_DATABASE_CA_FILE /dev/null"),
            "{error}"
        );
    }
}
