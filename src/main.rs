//! The `sqs2pg` binary: parse the configuration, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use sqs2pg::app;
use sqs2pg::config::{Cli, Command, DlqCommand, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
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
    };
    result.unwrap_or_else(|error| {
        tracing::error!(message = "Exiting on error.", error = format!("{error:#}"));
        eprintln!("sqs2pg: error: {error:#}");
        ExitCode::FAILURE
    })
}

/// Structured logs on stderr; `RUST_LOG` filters (default: info, the AWS SDK at warn).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_sqs=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
