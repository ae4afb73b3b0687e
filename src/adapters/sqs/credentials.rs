//! AWS credentials, checked once at start and recognised in a failed call.
//!
//! The SDK resolves credentials lazily, on the first call, and reports a failure to get
//! them as a dispatch failure: without this a deployment with no credentials (or an
//! instance metadata service that refuses, 403) would retry forever as if the endpoint
//! were down, and blame the endpoint. So every command resolves them once at start through
//! the provider chain, within [`CREDENTIALS_DEADLINE`], and a call that fails for want of
//! them is classified here too: no credentials, or a provider that refuses, is permanent;
//! a provider that does not answer within the deadline, or whose connection fails, is
//! transient. (Instance metadata that cannot be reached, or does not answer the SDK's token
//! request within 1 s, the SDK itself reports as no credentials: off EC2 there is none.)

use std::error::Error;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::config::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sdk_sqs::error::ConnectorError;

use crate::error_chain::one_line;
use crate::retry::{Classify, ErrorClass};

/// How long the start-up check waits for the provider chain. The slowest link is instance
/// metadata: the SDK gives it 1 s to connect and 1 s to answer, with retries.
pub const CREDENTIALS_DEADLINE: Duration = Duration::from_secs(10);

/// The settings to check when no credentials could be had.
pub(super) const CHECK_CREDENTIALS: &str =
    "check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)";

/// Why no AWS credentials could be had, on one line: the provider's own cause, never the
/// SDK's `Debug` output (which holds whole HTTP responses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsFailure {
    /// No provider of the chain is configured (none of the environment, a profile, web
    /// identity, ECS or instance metadata). Permanent.
    #[error(
        "no AWS credentials found (tried the environment, the profile, web identity, ECS and instance metadata); {CHECK_CREDENTIALS}"
    )]
    NotFound,
    /// A provider is configured but refuses or is misconfigured: instance metadata answers
    /// 403, a profile names what does not exist, STS denies the role. Permanent.
    #[error("could not load AWS credentials: {cause}; {CHECK_CREDENTIALS}")]
    Refused { cause: String },
    /// A provider did not answer in time, or could not be reached. Transient.
    #[error("could not load AWS credentials: {cause}; the provider may answer later")]
    Unavailable { cause: String },
}

impl Classify for CredentialsFailure {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotFound | Self::Refused { .. } => ErrorClass::Permanent,
            Self::Unavailable { .. } => ErrorClass::Transient,
        }
    }
}

impl CredentialsFailure {
    /// What a provider chain's error means.
    pub fn of(error: &CredentialsError) -> Self {
        // The variant's own text ("an error occurred while loading credentials") says
        // nothing its causes do not.
        let cause = || {
            let cause = error
                .source()
                .map(one_line)
                .unwrap_or_else(|| error.to_string());
            cause.trim_end_matches('.').to_owned()
        };
        match error {
            // Also what the SDK says of instance metadata that cannot be reached or does
            // not answer a token request within its 1 s: off EC2 that means there is none,
            // and the chain keeps no cause to tell a slow one apart.
            CredentialsError::CredentialsNotLoaded(_) => Self::NotFound,
            CredentialsError::ProviderTimedOut(_) => Self::Unavailable {
                cause: error.to_string(),
            },
            CredentialsError::InvalidConfiguration(_) => Self::Refused { cause: cause() },
            _ if unreachable(error) => Self::Unavailable { cause: cause() },
            _ => Self::Refused { cause: cause() },
        }
    }

    /// The credentials failure behind a failed call, if that is what failed it: the SDK
    /// wraps the provider's error in a dispatch failure.
    pub fn behind(error: &(dyn Error + 'static)) -> Option<Self> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(credentials) = error.downcast_ref::<CredentialsError>() {
                return Some(Self::of(credentials));
            }
            cause = error.source();
        }
        None
    }
}

/// Whether a provider's error comes from the network (a refused or reset connection, a
/// timeout) rather than from an answer.
fn unreachable(error: &(dyn Error + 'static)) -> bool {
    connector_error(error).is_some_and(|connector| connector.is_io() || connector.is_timeout())
}

fn connector_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a ConnectorError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(connector) = error.downcast_ref::<ConnectorError>() {
            return Some(connector);
        }
        cause = error.source();
    }
    None
}

/// Resolves credentials once through `provider` (the SDK configuration's chain), within
/// [`CREDENTIALS_DEADLINE`]. `None`: the configuration has no provider at all.
pub async fn check_credentials(
    provider: Option<&SharedCredentialsProvider>,
) -> Result<(), CredentialsFailure> {
    let Some(provider) = provider else {
        return Err(CredentialsFailure::NotFound);
    };
    match tokio::time::timeout(CREDENTIALS_DEADLINE, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(CredentialsFailure::of(&error)),
        Err(_) => Err(CredentialsFailure::Unavailable {
            cause: format!(
                "the provider chain did not answer within {} s",
                CREDENTIALS_DEADLINE.as_secs()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::future;

    /// A provider that fails as told.
    #[derive(Debug)]
    struct Failing(fn() -> CredentialsError);

    impl aws_sdk_sqs::config::ProvideCredentials for Failing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err((self.0)()))
        }
    }

    fn forbidden() -> CredentialsError {
        CredentialsError::provider_error(std::io::Error::other(
            "failed to load IMDS session token: request forbidden",
        ))
    }

    fn refused_connection() -> CredentialsError {
        CredentialsError::provider_error(ConnectorError::io(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))))
    }

    #[test]
    fn no_credentials_or_a_refusing_provider_is_permanent_a_silent_one_transient() {
        let cases = [
            (
                CredentialsError::not_loaded_no_source(),
                ErrorClass::Permanent,
            ),
            (forbidden(), ErrorClass::Permanent),
            (
                CredentialsError::invalid_configuration("no such profile"),
                ErrorClass::Permanent,
            ),
            (
                CredentialsError::provider_timed_out(Duration::from_secs(5)),
                ErrorClass::Transient,
            ),
            (refused_connection(), ErrorClass::Transient),
            // A provider that answered, slowly, after a connection timed out.
            (
                CredentialsError::provider_error(ConnectorError::timeout("read timed out".into())),
                ErrorClass::Transient,
            ),
        ];
        for (error, class) in cases {
            let failure = CredentialsFailure::of(&error);
            assert_eq!(failure.class(), class, "{failure}");
            assert_eq!(failure.to_string().lines().count(), 1);
        }
        assert_eq!(
            CredentialsFailure::of(&forbidden()).to_string(),
            format!(
                "could not load AWS credentials: failed to load IMDS session token: request forbidden; {CHECK_CREDENTIALS}"
            )
        );
    }

    #[tokio::test]
    async fn the_start_check_resolves_through_the_provider() {
        let good = SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "t"));
        assert_eq!(check_credentials(Some(&good)).await, Ok(()));
        assert_eq!(
            check_credentials(None).await,
            Err(CredentialsFailure::NotFound)
        );
        let refusing = SharedCredentialsProvider::new(Failing(forbidden));
        assert!(matches!(
            check_credentials(Some(&refusing)).await,
            Err(CredentialsFailure::Refused { .. })
        ));
    }

    /// A call that fails for want of credentials: what `QueueError` sees mid-run.
    #[tokio::test]
    async fn a_call_without_credentials_fails_for_good_saying_so() {
        let stub = crate::adapters::sqs::stub::StubSqs::start(|_, _| serde_json::json!({})).await;
        for (provider, class) in [
            (
                Failing(CredentialsError::not_loaded_no_source),
                ErrorClass::Permanent,
            ),
            (Failing(forbidden), ErrorClass::Permanent),
            (Failing(refused_connection), ErrorClass::Transient),
        ] {
            let queue = stub.queue_with_credentials(SharedCredentialsProvider::new(provider));
            let error = crate::adapters::sqs::Queue::depth(&queue)
                .await
                .unwrap_err();
            assert_eq!(error.class, class, "{error}");
            assert!(error.detail.contains("AWS credentials"), "{error}");
            assert!(!error.detail.contains("AWS_ENDPOINT_URL"), "{error}");
            assert_eq!(error.to_string().lines().count(), 1);
        }
        assert!(
            stub.calls("GetQueueAttributes").is_empty(),
            "nothing was sent without credentials"
        );
    }
}
