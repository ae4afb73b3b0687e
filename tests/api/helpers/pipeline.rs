//! An in-process consumer: the real pipeline on the real queue (or a fault-injecting
//! wrapper of it) and the real database, in the test's own process.

use std::sync::Arc;
use std::time::Duration;

use sqs2pg::adapters::postgres::PostgresSink;
use sqs2pg::adapters::sqs::Queue;
use sqs2pg::domain::envelope::EnvelopeMode;
use sqs2pg::domain::event::Masker;
use sqs2pg::domain::keyring::{KeyId, Keyring};
use sqs2pg::domain::stream::{Lookups, MessageMeta, Stream, compile, login};
use sqs2pg::retry::RetryPolicy;
use sqs2pg::telemetry::http::Readiness;
use sqs2pg::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use super::{HMAC_KEY, Pipeline, Settings, Summary, TestDb, TestQueues};

/// The keyring of the binary's test environment: [`HMAC_KEY`] alone, with the default id.
pub fn test_keyring() -> Keyring {
    Keyring::single(KeyId::default(), Masker::new(HMAC_KEY.as_bytes()))
}

/// Settings for an in-process consumer that drains `queues`.
pub fn drain_settings(queues: &TestQueues) -> Settings {
    Settings {
        wait_time: Duration::from_secs(1),
        drain: true,
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(500),
            max_elapsed: None,
        },
        ..Settings::new(queues.name.clone())
    }
}

/// The login stream, unwrapping envelopes by `envelope`: the built-in one, or compiled
/// from `streams/logins.toml` as a user's file is (`SQS2PG_TEST_LOGIN_FILE=1`).
pub fn login_stream(envelope: EnvelopeMode) -> Arc<Stream> {
    let queue_url = "http://localhost/000000000000/test-logins";
    let mut stream = match super::login_stream_file() {
        None => login::stream(queue_url, envelope),
        Some(path) => {
            let text = std::fs::read_to_string(&path).unwrap();
            let env = |_: &str| Some(queue_url.to_owned());
            let no_schema = |_: &str| Err("the login stream has no schema".to_owned());
            compile(
                &text,
                &path.display().to_string(),
                &Lookups {
                    env: &env,
                    schema: &no_schema,
                },
            )
            .expect("streams/logins.toml compiles")
            .remove(0)
        }
    };
    stream.envelope = envelope;
    Arc::new(stream)
}

/// The idempotency key of the login row the message `sqs_message_id` with `body` becomes,
/// as the consumer judges it: its SQS id, or its envelope's id (SNS, EventBridge); `None`
/// if it is poison.
pub fn login_key(sqs_message_id: &str, body: &str) -> Option<String> {
    static STREAM: std::sync::OnceLock<Arc<Stream>> = std::sync::OnceLock::new();
    static KEYRING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    let stream = STREAM.get_or_init(|| login_stream(EnvelopeMode::Auto));
    let meta = MessageMeta {
        sqs_message_id,
        original_message_id: None,
        sent_at: chrono::Utc::now(),
    };
    stream
        .transform(body, &meta, KEYRING.get_or_init(test_keyring))
        .ok()
        .map(|row| row.key().to_owned())
}

/// An in-process consumer of login events over any queue (the real one, or a
/// fault-injecting wrapper), envelopes unwrapped by shape (`auto`).
pub fn consumer<Q: Queue>(
    queue: Q,
    db: &TestDb,
    settings: Settings,
) -> Arc<Pipeline<Q, PostgresSink>> {
    consumer_of(queue, db, settings, login_stream(EnvelopeMode::Auto))
}

/// An in-process consumer of `stream`.
pub fn consumer_of<Q: Queue>(
    queue: Q,
    db: &TestDb,
    settings: Settings,
    stream: Arc<Stream>,
) -> Arc<Pipeline<Q, PostgresSink>> {
    Arc::new(Pipeline::new(
        Arc::new(queue),
        db.sink(settings.writers).for_stream(&stream),
        stream,
        test_keyring(),
        Arc::new(Metrics::new()),
        Arc::new(Readiness::default()),
        settings,
    ))
}

/// Drains with an in-process consumer; fails the test if it takes longer than `limit`.
pub async fn drain<Q: Queue>(
    consumer: &Arc<Pipeline<Q, PostgresSink>>,
    limit: Duration,
) -> Summary {
    tokio::time::timeout(limit, consumer.run(CancellationToken::new()))
        .await
        .expect("the drain finished in time")
        .expect("the consumer ran")
}
