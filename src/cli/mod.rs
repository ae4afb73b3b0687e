//! The command line: flags and environment variables ([`config`]), and one module per
//! subcommand. Each subcommand is one public function taking its parsed arguments.
//!
//! - [`run`]: consume the queue (migrate first); [`progress`] draws a drain's bar.
//! - [`migrate`]: apply the migrations and exit.
//! - [`setup`]: create the queue pair with its redrive policy, or the streams' tables.
//! - [`schema`]: print the streams' tables' DDL.
//! - [`send`]: send synthetic events.
//! - [`dlq`]: `dlq inspect` and `dlq redrive`.
//! - [`healthcheck`]: probe `/readyz` for a container runtime.
//! - [`status`]: where a deployment stands, with an exit code for cron checks.
//! - [`digest`]: a known value's digest under every key of the keyring, for lookups.
//! - [`streams`]: the streams a command works on (a stream file, or the login stream).
//! - [`aws`]: the SQS client they share.

pub mod aws;
pub mod config;
pub mod digest;
pub mod dlq;
pub mod healthcheck;
pub mod migrate;
pub mod progress;
pub mod run;
pub mod schema;
pub mod send;
pub mod setup;
pub mod status;
pub mod streams;

use std::process::ExitCode;

use config::{Command, DlqCommand, SchemaCommand};

/// Runs a subcommand to its end; the exit code on success, else the error that ended it.
pub async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Migrate(args) => migrate::migrate(args).await.map(done),
        Command::Setup(args) => setup::setup(args).await.map(done),
        Command::Schema(SchemaCommand::Ddl(args)) => schema::ddl(args).map(done),
        Command::Send(args) => send::send(args).await.map(done),
        Command::Dlq(DlqCommand::Inspect(args)) => dlq::inspect(args).await.map(done),
        Command::Dlq(DlqCommand::Redrive(args)) => dlq::redrive(args).await.map(done),
        Command::Healthcheck(args) => Ok(healthcheck::healthcheck(args).await),
        Command::Status(args) => status::status(args).await,
        Command::Digest(args) => digest::digest(args).map(done),
    }
}

/// `count` and the noun, singular for one: "1 message", "3 messages". For the commands'
/// text output.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
