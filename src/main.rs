//! The `sqs2pg` binary: parse the configuration, set up logging, run the subcommand.

use std::process::ExitCode;

use sqs2pg::cli::app;
use sqs2pg::cli::config::{Cli, Command, DlqCommand, LogFormat};
use sqs2pg::error_chain::ErrorChain;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    if let Err(error) = sqs2pg::telemetry::logging::init_tracing(cli.log_format) {
        // No logger yet: plain text, and the exit code of a usage error, as clap's.
        eprintln!("sqs2pg: error: {}", ErrorChain(&error));
        return ExitCode::from(2);
    }
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
        report_fatal(cli.log_format, &error);
        ExitCode::FAILURE
    })
}

/// Says why the process exits, once, with its causes on one line: as a log event in JSON
/// mode, so stderr stays a stream of JSON lines, unless `RUST_LOG` turned errors off; else
/// as one plain line, which reads best in a terminal.
fn report_fatal(format: LogFormat, error: &anyhow::Error) {
    let error = ErrorChain(error.as_ref());
    if matches!(format, LogFormat::Json) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(message = "Exiting on error.", error = %error);
    } else {
        eprintln!("sqs2pg: error: {error}");
    }
}
