//! The `sqs2pg` binary: parse the configuration, set up logging, run the subcommand.

use std::process::ExitCode;

use sqs2pg::cli::config::{Cli, LogFormat};
use sqs2pg::error_chain::ErrorChain;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    if let Err(error) = sqs2pg::telemetry::logging::init_tracing(cli.log_format) {
        // No logger yet: plain text, and the exit code of a usage error, as clap's.
        eprintln!("sqs2pg: error: {}", ErrorChain(&error));
        return ExitCode::from(2);
    }
    sqs2pg::cli::execute(cli.command)
        .await
        .unwrap_or_else(|error| {
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
