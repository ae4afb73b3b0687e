//! Faults on the wire: a TCP proxy that cuts, freezes or swallows connections (and, in
//! front of nothing, a silent server), and an HTTP proxy in front of LocalStack that records
//! and refuses SQS calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{TestQueues, free_port};

/// A TCP proxy on a fixed local port in front of `upstream`, for network partitions: `stop`
/// closes the listener and cuts every open connection (with a reset), so new connections
/// are refused and existing ones fail; `resume` listens again on the same port.
///
/// It also plays an address that went dark, which answers nothing, not even a reset:
/// `freeze` stops forwarding on every connection open at that moment and holds it open
/// (new connections pass), and `swallow` does the same to new connections too, until
/// `unswallow`. In front of nothing ([`TcpProxy::silent`]) it swallows every connection:
/// a port whose process hung, or a load balancer in front of nothing.
pub struct TcpProxy {
    pub port: u16,
    /// None: a silent server, which holds every connection and forwards nothing.
    upstream: Option<std::net::SocketAddr>,
    running: std::sync::Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancelled by `freeze`: each connection watches the token current when it opened.
    frozen: Arc<std::sync::Mutex<CancellationToken>>,
    swallowing: Arc<std::sync::atomic::AtomicBool>,
}

impl TcpProxy {
    /// Starts a proxy in front of `upstream` (host:port or an http:// URL) on a free port.
    pub async fn start(upstream: &str) -> Self {
        use std::net::ToSocketAddrs;
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream = authority
            .to_socket_addrs()
            .expect("resolve the proxy's upstream")
            .next()
            .expect("the upstream has an address");
        Self::listen(Some(upstream)).await
    }

    /// A server that accepts connections and never says a word. Connections are held until
    /// it is dropped.
    pub async fn silent() -> Self {
        Self::listen(None).await
    }

    async fn listen(upstream: Option<std::net::SocketAddr>) -> Self {
        let proxy = Self {
            port: free_port(),
            upstream,
            running: std::sync::Mutex::new(None),
            accepted: Arc::default(),
            frozen: Arc::default(),
            swallowing: Arc::default(),
        };
        proxy.resume().await;
        proxy
    }

    /// Stops forwarding on every open connection and holds it open: no data, no FIN, no
    /// reset. New connections pass.
    pub fn freeze(&self) {
        let previous = std::mem::take(&mut *self.frozen.lock().expect("not poisoned"));
        previous.cancel();
    }

    /// Freezes every open connection, and every new one until `unswallow`.
    pub fn swallow(&self) {
        self.swallowing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.freeze();
    }

    /// New connections pass again (those frozen stay frozen).
    pub fn unswallow(&self) {
        self.swallowing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The proxy as an http:// endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens again on the same port (after `stop`). Panics if the port stays taken.
    pub async fn resume(&self) {
        let started = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("rebinding the proxy on port {}: {error}", self.port),
            }
        };
        let token = CancellationToken::new();
        let upstream = self.upstream;
        let accepted = Arc::clone(&self.accepted);
        let frozen = Arc::clone(&self.frozen);
        let swallowing = Arc::clone(&self.swallowing);
        let stop = token.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let inbound = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let stop = stop.clone();
                let frozen = frozen.lock().expect("not poisoned").clone();
                let swallowed = swallowing.load(std::sync::atomic::Ordering::SeqCst);
                connections.spawn(async move {
                    let mut inbound = inbound;
                    let Some(upstream) = upstream.filter(|_| !swallowed) else {
                        stop.cancelled().await;
                        let _ = inbound.set_zero_linger();
                        return;
                    };
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        () = stop.cancelled() => true,
                        () = frozen.cancelled() => {
                            // Dark: both sockets stay open, and nothing moves.
                            stop.cancelled().await;
                            true
                        }
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    };
                    if cut {
                        // A cut, not a goodbye: both sides get a reset.
                        let _ = inbound.set_zero_linger();
                        let _ = outbound.set_zero_linger();
                    }
                });
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        let previous = self
            .running
            .lock()
            .expect("not poisoned")
            .replace((token, task));
        assert!(previous.is_none(), "the proxy was already running");
    }

    /// Closes the listener and cuts every open connection; returns once both are done.
    pub async fn stop(&self) {
        let running = self.running.lock().expect("not poisoned").take();
        if let Some((token, task)) = running {
            token.cancel();
            let _ = task.await;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some((token, _)) = self.running.lock().expect("not poisoned").take() {
            token.cancel();
        }
    }
}

/// An HTTP proxy in front of LocalStack that records every SendMessageBatch call and can
/// refuse the first one whose request holds a marker, as SQS refuses a whole batch; and can
/// fail every entry of the DeleteMessageBatch calls on one queue, as SQS does in an outage.
pub struct SqsProxy {
    url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    /// (request bytes, entries) of each SendMessageBatch call.
    send_batches: Mutex<Vec<(usize, usize)>>,
    refuse_marker: Mutex<Option<String>>,
    /// The queue whose deletes fail, entry by entry, and how many entries failed so far.
    fail_deletes_on: Mutex<Option<String>>,
    failed_deletes: std::sync::atomic::AtomicUsize,
    /// How long each SendMessageBatch call is held before it is forwarded.
    send_delay: Mutex<Duration>,
    /// SendMessageBatch calls in the proxy now, and the most seen at once.
    sending: std::sync::atomic::AtomicUsize,
    most_concurrent_sends: std::sync::atomic::AtomicUsize,
}

impl SqsProxy {
    pub async fn start() -> Self {
        let state = Arc::new(ProxyState {
            upstream: std::env::var("AWS_ENDPOINT_URL")
                .unwrap()
                .trim_end_matches('/')
                .to_owned(),
            ..ProxyState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    /// An SQS client that goes through the proxy.
    pub fn client(&self, queues: &TestQueues) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            queues
                .client
                .config()
                .to_builder()
                .endpoint_url(&self.url)
                .build(),
        )
    }

    /// (request bytes, entries) of each SendMessageBatch call so far.
    pub fn send_batches(&self) -> Vec<(usize, usize)> {
        self.state.send_batches.lock().unwrap().clone()
    }

    /// Refuses the first SendMessageBatch call whose request holds `marker`, as SQS refuses
    /// a whole batch (BatchRequestTooLong).
    pub fn refuse_first_batch_holding(&self, marker: &str) {
        *self.state.refuse_marker.lock().unwrap() = Some(marker.to_owned());
    }

    /// Answers every DeleteMessageBatch call on `queue_url` itself, with each entry failed
    /// (`InternalError`, not the sender's fault): nothing is deleted.
    pub fn fail_deletes_on(&self, queue_url: &str) {
        *self.state.fail_deletes_on.lock().unwrap() = Some(queue_url.to_owned());
    }

    /// Delete entries failed so far.
    pub fn failed_deletes(&self) -> usize {
        self.state
            .failed_deletes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Holds every SendMessageBatch call this long before forwarding it.
    pub fn delay_sends(&self, delay: Duration) {
        *self.state.send_delay.lock().unwrap() = delay;
    }

    /// The most SendMessageBatch calls seen in the proxy at once.
    pub fn most_concurrent_sends(&self) -> usize {
        self.state
            .most_concurrent_sends
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The proxy as an endpoint URL (AWS_ENDPOINT_URL for a child process).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for SqsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if target.ends_with(".SendMessageBatch") {
        let entries = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|request| request["Entries"].as_array().map(Vec::len))
            .unwrap_or(0);
        state
            .send_batches
            .lock()
            .unwrap()
            .push((body.len(), entries));
        let now = state
            .sending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        state
            .most_concurrent_sends
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        let delay = *state.send_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        state
            .sending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let text = String::from_utf8_lossy(&body);
        let refuse = {
            let mut marker = state.refuse_marker.lock().unwrap();
            marker
                .take_if(|marker| text.contains(marker.as_str()))
                .is_some()
        };
        if refuse {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [
                    ("content-type", "application/x-amz-json-1.0"),
                    (
                        "x-amzn-query-error",
                        "AWS.SimpleQueueService.BatchRequestTooLong;Sender",
                    ),
                ],
                r#"{"__type": "com.amazonaws.sqs#BatchRequestTooLong", "message": "refused by the test proxy"}"#,
            )
                .into_response();
        }
    }
    if target.ends_with(".DeleteMessageBatch") {
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        let failing = state.fail_deletes_on.lock().unwrap().clone();
        if failing.is_some_and(|url| request["QueueUrl"] == url.as_str()) {
            let failed: Vec<Value> = request["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    serde_json::json!({
                        "Id": entry["Id"], "Code": "InternalError", "SenderFault": false,
                        "Message": "failed by the test proxy",
                    })
                })
                .collect();
            state
                .failed_deletes
                .fetch_add(failed.len(), std::sync::atomic::Ordering::SeqCst);
            return (
                axum::http::StatusCode::OK,
                [("content-type", "application/x-amz-json-1.0")],
                serde_json::json!({ "Successful": [], "Failed": failed }).to_string(),
            )
                .into_response();
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut upstream = state
        .http
        .request(parts.method, format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let response = upstream.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = status;
    for (name, value) in &headers {
        if name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::TRANSFER_ENCODING
        {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}
