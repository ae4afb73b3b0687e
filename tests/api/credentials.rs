//! Missing AWS credentials fail every command that calls AWS at once, on one line that
//! names the credentials, also where an instance metadata endpoint answers 403 (the SDK
//! then reports a provider error, not "no credentials").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::*;

/// An instance metadata endpoint that answers 403 to everything, as one does where IMDS is
/// disabled or a hop limit cuts it off; counts the requests.
struct ForbiddingImds {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ForbiddingImds {
    async fn start() -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::FORBIDDEN }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            requests,
            task,
        }
    }
}

impl Drop for ForbiddingImds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_every_aws_command_fails_at_once_naming_them() {
    let test = Test::shared().await;
    let imds = ForbiddingImds::start().await;
    let home = test.logs.dir().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let queue_url = format!("{endpoint}/000000000000/{}", unique("nocredentials"));
    // A database that refuses: `run` checks the credentials before touching it.
    let database_url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let commands: [&[&str]; 6] = [
        &["run", "--drain"],
        &["status"],
        &["dlq", "inspect"],
        &["dlq", "redrive"],
        &["setup", "--queue-name", "nocredentials"],
        &["send", "--count", "1"],
    ];
    for args in commands {
        // Only what the command needs: no AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        // AWS_PROFILE or container credentials, and a HOME without ~/.aws.
        let mut command = bare_sqs2pg_command();
        command
            .args(args)
            .env("HOME", &home)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("SQS2PG_HMAC_KEY", HMAC_KEY)
            .env("SQS2PG_METRICS_ADDR", "127.0.0.1:0")
            .env("SQS2PG_QUEUE_URL", &queue_url)
            .env("DATABASE_URL", &database_url);
        // The limit only guards against a hang: before the start-up check, `run` retried
        // for its 60 s of start-up patience.
        let output = tokio::task::block_in_place(|| {
            Process::output(&test.logs, &mut command, Duration::from_secs(20))
        });
        let stderr = stderr_of(&output);
        println!("{args:?}: {}", stderr.trim());
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let error: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(error.len(), 1, "{args:?}: one line: {stderr}");
        let error = error[0];
        assert!(
            error.len() < 400,
            "{args:?}: {} chars: {error}",
            error.len()
        );
        for wanted in [
            "could not load AWS credentials",
            "IMDS",
            "AWS_ACCESS_KEY_ID",
        ] {
            assert!(error.contains(wanted), "{args:?}: no {wanted:?} in {error}");
        }
        for unwanted in ["AWS_ENDPOINT_URL", "ProviderError", "dispatch failure"] {
            assert!(
                !stderr.contains(unwanted),
                "{args:?}: {unwanted:?} in {stderr}"
            );
        }
        assert!(
            !stderr.contains("Transient failure; retrying."),
            "{args:?}: a refusal is not retried: {stderr}"
        );
    }
    assert!(
        imds.requests.load(Ordering::SeqCst) >= commands.len(),
        "each command asked the metadata endpoint"
    );
}
