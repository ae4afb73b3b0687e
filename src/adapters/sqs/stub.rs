//! A stand-in SQS endpoint on loopback for unit tests of [`SqsQueue`] code paths that the
//! real service (LocalStack) will not produce on demand, such as a batch send that refuses
//! some entries. It speaks SQS's JSON protocol: each request is recorded, and a test's
//! closure answers it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::Value;

use super::SqsQueue;

/// How the stub answers one call: the operation (`SendMessageBatch`) and its JSON request.
/// An answer with a `__type` is an error, sent with status 400 as SQS does.
pub type Respond = dyn Fn(&str, &Value) -> Value + Send + Sync;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Call {
    pub operation: String,
    pub request: Value,
}

struct Stub {
    respond: Box<Respond>,
    calls: Mutex<Vec<Call>>,
}

/// A running stub; it stops with the test's runtime.
pub struct StubSqs {
    addr: SocketAddr,
    stub: Arc<Stub>,
}

impl StubSqs {
    pub async fn start(respond: impl Fn(&str, &Value) -> Value + Send + Sync + 'static) -> Self {
        let stub = Arc::new(Stub {
            respond: Box::new(respond),
            calls: Mutex::default(),
        });
        let app = Router::new()
            .route("/", post(answer))
            .with_state(Arc::clone(&stub));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, stub }
    }

    /// A queue pair whose calls all reach this stub.
    pub fn queue(&self) -> SqsQueue {
        self.queue_with_credentials(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "stub",
        )))
    }

    /// [`StubSqs::queue`] whose client gets its credentials from `credentials`.
    pub fn queue_with_credentials(&self, credentials: SharedCredentialsProvider) -> SqsQueue {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", self.addr))
            .credentials_provider(credentials)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build();
        SqsQueue::new(
            Client::from_conf(config),
            "http://stub/000000000000/source".to_owned(),
            "http://stub/000000000000/source-dlq".to_owned(),
        )
    }

    /// The calls of one operation, in order.
    pub fn calls(&self, operation: &str) -> Vec<Value> {
        self.stub
            .calls
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|call| call.operation == operation)
            .map(|call| call.request.clone())
            .collect()
    }
}

async fn answer(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let operation = headers
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.strip_prefix("AmazonSQS."))
        .unwrap_or_default()
        .to_owned();
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    let response = (stub.respond)(&operation, &request);
    stub.calls
        .lock()
        .expect("not poisoned")
        .push(Call { operation, request });
    let status = match response.get("__type") {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        response.to_string(),
    )
}

/// A batch answer: every entry of `request` succeeds except those `refuse` gives a
/// `(code, sender_fault)` for.
pub fn batch_answer(
    request: &Value,
    refuse: impl Fn(&Value) -> Option<(&'static str, bool)>,
) -> Value {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for entry in request["Entries"].as_array().into_iter().flatten() {
        let id = entry["Id"].clone();
        match refuse(entry) {
            None => successful.push(serde_json::json!({
                "Id": id,
                "MessageId": format!("sent-{}", id.as_str().unwrap_or_default()),
                "MD5OfMessageBody": "00000000000000000000000000000000",
            })),
            Some((code, sender_fault)) => failed.push(serde_json::json!({
                "Id": id, "Code": code, "SenderFault": sender_fault, "Message": "stub",
            })),
        }
    }
    serde_json::json!({ "Successful": successful, "Failed": failed })
}
