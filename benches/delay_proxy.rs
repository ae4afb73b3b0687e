//! A delay line for the benchmark's latency mode: a TCP proxy in front of LocalStack that
//! holds every byte of every reply for a fixed time before passing it on, and counts the
//! requests that go through it.
//!
//! A real SQS endpoint is a round trip away; LocalStack on loopback is not. With this proxy
//! between a consumer and LocalStack, each request's reply arrives `BENCH_PROXY_DELAY_MS`
//! later than it would, as over a network. It is a delay *line*, not a sleep per request:
//! a reply's bytes are stamped when they arrive from LocalStack and written to the client
//! once their time comes, in order, while later bytes keep arriving. So the delay adds
//! latency without taking throughput: a connection that keeps several requests' replies in
//! the line delivers them all at LocalStack's rate, each the same time late. Requests go
//! upstream at once; only replies wait, so a request-reply exchange is late by the delay,
//! exactly once.
//!
//! Requests are counted from the client's bytes (HTTP/1.1 heads and `Content-Length`
//! bodies, the framing every AWS SDK uses against an `http://` endpoint), by the SQS action
//! in their `X-Amz-Target` header, so that the benchmark can measure an idle consumer's
//! request rate. A connection whose framing cannot be followed (a chunked body) stops being
//! counted, and is counted as `unframed_connections`.
//!
//! Run by `scripts/bench.sh`. Environment:
//!   BENCH_PROXY_UPSTREAM      LocalStack's `host:port` (required)
//!   BENCH_PROXY_DELAY_MS      delay of every reply, in milliseconds (default 20)
//!   BENCH_PROXY_LISTEN        where clients connect (default 127.0.0.1:0, a free port)
//!   BENCH_PROXY_STATS_LISTEN  where `GET /` returns the counts as JSON (default 127.0.0.1:0)
//! Prints one JSON line with both addresses once it listens, and the counts again on
//! SIGTERM or SIGINT, then exits 0.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read from a socket at a time.
const CHUNK: usize = 64 * 1024;
/// Reply chunks a connection may hold in the line before it stops reading from upstream.
const LINE_CHUNKS: usize = 4096;
/// A request head longer than this is not HTTP as the SDKs speak it: stop counting there.
const MAX_HEAD: usize = 64 * 1024;
/// How long a connection whose client has finished sending waits for replies beyond the delay.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    open_connections: AtomicU64,
    peak_open_connections: AtomicU64,
    requests: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_clients: AtomicU64,
    unframed_connections: AtomicU64,
    by_action: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn count_request(&self, action: String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.by_action.lock().unwrap().entry(action).or_default() += 1;
    }

    fn json(&self, delay: Duration) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "delay_ms": delay.as_secs_f64() * 1e3,
            "connections": load(&self.connections),
            "open_connections": load(&self.open_connections),
            "peak_open_connections": load(&self.peak_open_connections),
            "requests": load(&self.requests),
            "requests_by_action": *self.by_action.lock().unwrap(),
            "bytes_to_upstream": load(&self.bytes_to_upstream),
            "bytes_to_clients": load(&self.bytes_to_clients),
            "unframed_connections": load(&self.unframed_connections),
        })
    }
}

/// Follows the HTTP/1.1 requests in one connection's client bytes, to count them.
#[derive(Default)]
struct RequestFramer {
    /// The head read so far, while between bodies.
    head: Vec<u8>,
    /// Body bytes still to skip.
    body_left: usize,
    /// The framing could not be followed: count nothing more on this connection.
    lost: bool,
}

/// What one request head says about the request.
struct Head {
    action: String,
    content_length: usize,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parsed = Head {
        // Without an X-Amz-Target (a health check, say), the method and path name it.
        action: request_line
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        content_length: 0,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("x-amz-target") {
            // "AmazonSQS.ReceiveMessage" -> "ReceiveMessage".
            parsed.action = value.rsplit('.').next().unwrap_or(value).to_owned();
        }
    }
    parsed
}

impl RequestFramer {
    fn feed(&mut self, mut data: &[u8], stats: &Stats) {
        while !self.lost && !data.is_empty() {
            if self.body_left > 0 {
                let skipped = self.body_left.min(data.len());
                self.body_left -= skipped;
                data = &data[skipped..];
                continue;
            }
            // Only the new bytes, and the three before them, can complete "\r\n\r\n".
            let searched_from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(data);
            let Some(end) = self.head[searched_from..]
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .map(|at| searched_from + at)
            else {
                self.lost = self.head.len() > MAX_HEAD;
                if self.lost {
                    stats.unframed_connections.fetch_add(1, Ordering::Relaxed);
                }
                return;
            };
            let head = parse_head(&self.head[..end]);
            stats.count_request(head.action);
            if head.chunked {
                self.lost = true;
                stats.unframed_connections.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // What followed the head in this read: the body, and maybe the next request.
            let consumed_of_data = data.len() - (self.head.len() - (end + 4));
            self.head.clear();
            self.body_left = head.content_length;
            data = &data[consumed_of_data..];
        }
    }
}

/// Client to upstream: passed on at once, and counted.
async fn forward_requests(
    mut from_client: OwnedReadHalf,
    mut to_upstream: OwnedWriteHalf,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let mut framer = RequestFramer::default();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = from_client.read(&mut buffer).await?;
        if read == 0 {
            return to_upstream.shutdown().await;
        }
        framer.feed(&buffer[..read], &stats);
        to_upstream.write_all(&buffer[..read]).await?;
        stats
            .bytes_to_upstream
            .fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Upstream to client, through the line: each chunk is stamped as it arrives and written
/// once its time comes, while the next chunks keep arriving. An empty chunk is the end.
async fn forward_replies(
    mut from_upstream: OwnedReadHalf,
    mut to_client: OwnedWriteHalf,
    delay: Duration,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let (line_in, mut line_out) = mpsc::channel::<(Instant, Vec<u8>)>(LINE_CHUNKS);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = from_upstream.read(&mut buffer).await?;
            let due = Instant::now() + delay;
            if line_in.send((due, buffer[..read].to_vec())).await.is_err() || read == 0 {
                return std::io::Result::Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = line_out.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break;
            }
            to_client.write_all(&chunk).await?;
            stats
                .bytes_to_clients
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        to_client.shutdown().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

async fn serve(client: TcpStream, upstream: String, delay: Duration, stats: Arc<Stats>) {
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let open = stats.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
    stats
        .peak_open_connections
        .fetch_max(open, Ordering::Relaxed);
    match TcpStream::connect(&upstream).await {
        Ok(server) => {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let requests = forward_requests(client_read, server_write, Arc::clone(&stats));
            let replies = forward_replies(server_read, client_write, delay, Arc::clone(&stats));
            tokio::pin!(replies);
            // Either side failing ends the connection; the peer sees a reset, as it would.
            // A client that is done gets the replies still in the line, then the connection
            // closes, even if LocalStack would keep its side open.
            tokio::select! {
                _ = &mut replies => {}
                sent = requests => if sent.is_ok() {
                    let _ = tokio::time::timeout(delay + LINGER, &mut replies).await;
                },
            }
        }
        Err(error) => eprintln!("delay_proxy: cannot reach {upstream}: {error}"),
    }
    stats.open_connections.fetch_sub(1, Ordering::Relaxed);
}

/// `GET` anything: the counts as JSON, and the connection closed.
async fn serve_stats(mut connection: TcpStream, delay: Duration, stats: Arc<Stats>) {
    let mut request = vec![0u8; 4096];
    let _ = connection.read(&mut request).await;
    let body = stats.json(delay).to_string();
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = connection.write_all(reply.as_bytes()).await;
    let _ = connection.shutdown().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let upstream =
        std::env::var("BENCH_PROXY_UPSTREAM").context("set BENCH_PROXY_UPSTREAM to host:port")?;
    let delay_ms: f64 = std::env::var("BENCH_PROXY_DELAY_MS")
        .ok()
        .map(|value| value.parse())
        .transpose()
        .context("BENCH_PROXY_DELAY_MS must be a number of milliseconds")?
        .unwrap_or(20.0);
    anyhow::ensure!(delay_ms >= 0.0, "BENCH_PROXY_DELAY_MS must not be negative");
    let delay = Duration::from_secs_f64(delay_ms / 1e3);
    let address = |name: &str| std::env::var(name).unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = TcpListener::bind(address("BENCH_PROXY_LISTEN")).await?;
    let stats_listener = TcpListener::bind(address("BENCH_PROXY_STATS_LISTEN")).await?;
    println!(
        "{}",
        serde_json::json!({
            "listen": listener.local_addr()?.to_string(),
            "stats": stats_listener.local_addr()?.to_string(),
            "upstream": upstream,
            "delay_ms": delay_ms,
        })
    );

    let stats = Arc::new(Stats::default());
    let proxy = {
        let stats = Arc::clone(&stats);
        async move {
            loop {
                let (client, _) = listener.accept().await?;
                tokio::spawn(serve(client, upstream.clone(), delay, Arc::clone(&stats)));
            }
        }
    };
    let stats_server = {
        let stats = Arc::clone(&stats);
        async move {
            loop {
                let (connection, _) = stats_listener.accept().await?;
                tokio::spawn(serve_stats(connection, delay, Arc::clone(&stats)));
            }
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result: std::io::Result<()> = tokio::select! {
        result = proxy => result,
        result = stats_server => result,
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    println!("{}", stats.json(delay));
    Ok(result?)
}
