//! The SQS client the commands share, from the standard AWS settings (AWS_ENDPOINT_URL,
//! AWS_REGION, the credentials chain), with a deadline on every call, and the credentials
//! resolved once at start (see [`crate::adapters::sqs::check_credentials`]).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::SharedCredentialsProvider;

use crate::adapters::sqs::{self, check_credentials};

/// The client of the one-shot commands: the SDK's own retries, and the default call
/// deadline. Fails, with one line, when no credentials can be had.
pub async fn sqs_client() -> anyhow::Result<Client> {
    let (client, credentials) =
        sqs_client_with(sqs::DEFAULT_SQS_TIMEOUT, RetryConfig::standard()).await?;
    check_credentials(credentials.as_ref()).await?;
    Ok(client)
}

/// The client of `run`: every attempt has a deadline (a receive gets its wait on top, see
/// `SqsQueue::receive`), and the SDK does not retry by itself. `run`'s own retries log each
/// failure with its cause, so an endpoint that stops answering is reported within one
/// deadline instead of after the SDK's three silent attempts. With it, the credentials
/// provider, which `run` checks itself (retrying a provider that does not answer yet).
pub async fn sqs_client_for_run(
    attempt_timeout: Duration,
) -> anyhow::Result<(Client, Option<SharedCredentialsProvider>)> {
    sqs_client_with(
        attempt_timeout,
        RetryConfig::standard().with_max_attempts(1),
    )
    .await
}

async fn sqs_client_with(
    attempt_timeout: Duration,
    retries: RetryConfig,
) -> anyhow::Result<(Client, Option<SharedCredentialsProvider>)> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(sqs::SQS_CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt_timeout)
        .build();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries)
        .load()
        .await;
    anyhow::ensure!(
        config.region().is_some(),
        "AWS_REGION is not set (nor a region in the AWS profile); set it to the queue's region"
    );
    Ok((Client::new(&config), config.credentials_provider()))
}
