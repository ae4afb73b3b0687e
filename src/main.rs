//! The `sqs2pg` binary: parse the configuration, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use sqs2pg::app;
use sqs2pg::config::{Cli, Command, DlqCommand};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => app::run(args).await,
        Command::Migrate(args) => app::migrate(args).await.map(|()| ExitCode::SUCCESS),
        Command::Setup(args) => app::setup(args).await.map(|()| ExitCode::SUCCESS),
        Command::Send(args) => app::send(args).await.map(|()| ExitCode::SUCCESS),
        Command::Dlq(DlqCommand::Inspect(args)) => {
            app::dlq_inspect(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Redrive(args)) => {
            app::dlq_redrive(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => Ok(app::healthcheck(args).await),
    };
    result.unwrap_or_else(|error| {
        tracing::error!(message = "Exiting on error.", error = format!("{error:#}"));
        eprintln!("sqs2pg: error: {error:#}");
        ExitCode::FAILURE
    })
}
