//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (alive) and
//! `/readyz` (database and SQS reachable, not shutting down), on a port that any pod of the
//! cluster may reach, so a client can hold only so much of it.
//!
//! `axum::serve` accepts every connection and keeps it for as long as the client likes:
//! 1,140 idle sockets once took every file descriptor of a process at the soft limit of
//! 1024, and ingestion stopped with them (`Too many open files`), the probes too. Here:
//! - at most [`MAX_CONNECTIONS`] connections are open at once, each a file descriptor;
//! - at the cap, a new connection closes the least recently active idle one: a probe sends
//!   its request as soon as it connects, so a flood of idle sockets cannot starve it;
//! - a connection that sends no complete request head within [`HEADER_READ_TIMEOUT`] of its
//!   accept or of its previous response is closed (hyper's header-read timeout, which needs
//!   the timer that `axum::serve` does not give it): idle sockets do not linger;
//! - the kernel queues up to `LISTEN_BACKLOG` (4,096) connections for the accept loop, so
//!   a burst waits there rather than having its SYNs dropped;
//! - a failed accept (EMFILE) is counted and followed by a pause, not retried in a hot loop.
//!
//! HTTP/1.1 only: the kubelet, Prometheus and `sqs2pg healthcheck` all speak it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::events::{AcceptFailed, ConnectionShed};
use crate::telemetry::metrics::Metrics;

/// Connections open at once on the metrics port. Its honest clients need a handful: each
/// kubelet probe opens one and closes it, each Prometheus keeps one, an operator's `curl`
/// one more. 128 leaves ten times that, and even at a soft limit of 1024 that could not be
/// raised it leaves seven descriptors in eight to SQS, PostgreSQL and the rest.
pub const MAX_CONNECTIONS: usize = 128;

/// How long a connection may take to send a complete request head, counted from its accept
/// and again from each response: past it the connection is closed. An honest client sends
/// its ~200 bytes at once; a probe's own timeout is 1-2 s. Prometheus, which scrapes every
/// 15-60 s, reconnects for each scrape: one connection a scrape is nothing.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause after a failed accept (EMFILE: the process is out of descriptors), as hyper's
/// old server and axum do it, shorter: a probe waiting in the backlog is answered as soon
/// as a descriptor is free again, and ten tries a second cost nothing.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections the kernel queues for the accept loop. tokio's `bind` asks for 1024; past
/// the queue's end the kernel drops a new connection's SYN, and the client (a probe) tries
/// again only after 1 s. The kernel caps it at `net.core.somaxconn` (4096 by default since
/// Linux 5.4). Queued connections cost the process no descriptor.
const LISTEN_BACKLOG: u32 = 4096;

/// How long a new connection waits for the one it evicted to close (it closes at once).
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// At shutdown, how long a connection may take to finish the response it is writing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Shed connections and failed accepts are counted each, and logged at WARN at most once
/// in this long (at DEBUG otherwise): a flood would bury every other line.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the server closed a connection itself: the `reason` label of
/// `sqs2pg_http_connections_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum ShedReason {
    /// At the cap, the least recently active idle connection, to admit a new one.
    Evicted,
    /// At the cap with every connection answering a request: the new one.
    Refused,
    /// No complete request within [`HEADER_READ_TIMEOUT`] of its accept.
    HeaderTimeout,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What `/readyz` reports. The consumer and the probes update it; shutdown clears it first.
#[derive(Debug, Default)]
pub struct Readiness {
    database_reachable: AtomicBool,
    queue_reachable: AtomicBool,
    /// Streams whose writes are paused now.
    writes_paused: AtomicUsize,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_database_reachable(&self, reachable: bool) {
        self.database_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn set_queue_reachable(&self, reachable: bool) {
        self.queue_reachable.store(reachable, Ordering::Relaxed);
    }

    /// While writes fail systemically, the instance takes no work: not ready.
    /// One stream's writes paused (`true`) or resumed (`false`): each pause is followed by
    /// one resume, so the count says how many streams are paused.
    pub fn set_writes_paused(&self, paused: bool) {
        if paused {
            self.writes_paused.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .writes_paused
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `Err` names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Err("shutting down")
        } else if !self.database_reachable.load(Ordering::Relaxed) {
            Err("database unreachable")
        } else if !self.queue_reachable.load(Ordering::Relaxed) {
            Err("SQS unreachable")
        } else if self.writes_paused.load(Ordering::Relaxed) > 0 {
            Err("writes paused: the database refuses them (see the log)")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct Endpoints {
    /// The process's own metrics ([`Metrics::process`], or all of one pipeline's).
    metrics: Arc<Metrics>,
    /// Each stream's, shown on the same page.
    streams: Arc<[Arc<Metrics>]>,
    readiness: Arc<Readiness>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` is cancelled.
/// Binds before returning, so a taken port fails the start, not a later request. Once
/// `shutdown` is cancelled the server accepts no more; the task ends when every connection
/// has closed (at most `SHUTDOWN_GRACE`, 1 s, for one that is answering).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    streams: Vec<Arc<Metrics>>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = listen(addr)?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints {
            metrics: Arc::clone(&metrics),
            streams: streams.into(),
            readiness,
        });
    let server = Arc::new(Server {
        router,
        metrics,
        connections: Connections::new(MAX_CONNECTIONS),
        shed_warning: Reminder::default(),
        accept_warning: Reminder::default(),
    });
    Ok((bound, tokio::spawn(server.accept_loop(listener, shutdown))))
}

/// What `TcpListener::bind` does (SO_REUSEADDR on Unix), with a longer accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

struct Server {
    router: Router,
    metrics: Arc<Metrics>,
    connections: Connections,
    shed_warning: Reminder,
    accept_warning: Reminder,
}

impl Server {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    if let Some(permit) = self.admit().await {
                        self.spawn_connection(stream, permit, shutdown.clone());
                    }
                }
                Err(error) => {
                    // A connection reset before its accept is that client's problem alone.
                    let pause = !matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    );
                    self.metrics.emit(AcceptFailed {
                        error: &error,
                        pause: pause.then_some(ACCEPT_ERROR_PAUSE),
                        loud: self.accept_warning.due(self.connections.now_ms()),
                    });
                    if pause {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                }
            }
        }
        drop(listener);
        // Every connection holds a permit until it has closed.
        let _all_closed = self
            .connections
            .permits
            .acquire_many(MAX_CONNECTIONS as u32)
            .await;
    }

    /// A permit for a new connection: a free one, or the one of the least recently active
    /// idle connection, closed for it. None when every connection is answering a request.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.connections.permits).try_acquire_owned() {
            return Some(permit);
        }
        let Some(victim) = self.connections.take_least_recently_active_idle() else {
            self.shed(ShedReason::Refused);
            return None;
        };
        victim.evict.cancel();
        self.shed(ShedReason::Evicted);
        let permits = Arc::clone(&self.connections.permits);
        match tokio::time::timeout(EVICTION_WAIT, permits.acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                self.shed(ShedReason::Refused);
                None
            }
        }
    }

    fn shed(&self, reason: ShedReason) {
        self.metrics.emit(ConnectionShed {
            reason,
            open: self.connections.open(),
            loud: self.shed_warning.due(self.connections.now_ms()),
        });
    }

    fn spawn_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        let server = Arc::clone(self);
        let registered = self.register(permit);
        tokio::spawn(async move {
            let activity = Arc::clone(&registered.activity);
            let router = TowerToHyperService::new(server.router.clone());
            let epoch = server.connections.epoch;
            let answering = Arc::clone(&activity);
            let service = hyper::service::service_fn(move |request| {
                let busy = Busy::begin(Arc::clone(&answering), epoch);
                let response = hyper::service::Service::call(&router, request);
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let closed = tokio::select! {
                closed = connection.as_mut() => closed,
                // Dropped: the socket closes at once, its permit goes to the new connection.
                () = activity.evict.cancelled() => return,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                        Ok(closed) => closed,
                        Err(_) => return,
                    }
                }
            };
            // After a response the same timeout closes an idle keep-alive connection:
            // only one that never sent a whole request is shed.
            if let Err(error) = closed
                && error.is_timeout()
                && activity.requests.load(Ordering::Relaxed) == 0
            {
                drop(registered);
                server.shed(ShedReason::HeaderTimeout);
            }
        });
    }
}

/// The open connections and their permits: one per file descriptor the server may hold.
struct Connections {
    permits: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Activity times are milliseconds since this.
    epoch: Instant,
}

/// What the eviction needs to know of one connection.
#[derive(Default)]
struct Activity {
    /// When it last began or finished answering a request (or was accepted).
    last_active_ms: AtomicU64,
    answering: AtomicBool,
    requests: AtomicU64,
    /// Cancelled to close it at once.
    evict: CancellationToken,
}

/// A connection's place among the open ones, and its permit: both given back when it ends,
/// however it ends.
struct Registered {
    server: Arc<Server>,
    id: u64,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.server.connections.forget(self.id);
    }
}

impl Server {
    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Registered {
        let (id, activity) = self.connections.insert();
        Registered {
            server: Arc::clone(self),
            id,
            activity,
            _permit: permit,
        }
    }
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn open(&self) -> usize {
        self.open.lock().expect("not poisoned").len()
    }

    fn insert(&self) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        activity.touch(self.epoch);
        self.open
            .lock()
            .expect("not poisoned")
            .insert(id, Arc::clone(&activity));
        (id, activity)
    }

    fn forget(&self, id: u64) {
        self.open.lock().expect("not poisoned").remove(&id);
    }

    /// Removes and returns the connection that has waited longest since it last did
    /// anything, of those not answering a request (the older one on a tie).
    fn take_least_recently_active_idle(&self) -> Option<Arc<Activity>> {
        let mut open = self.open.lock().expect("not poisoned");
        let (&id, _) = open
            .iter()
            .filter(|(_, activity)| !activity.answering.load(Ordering::Relaxed))
            .min_by_key(|(_, activity)| activity.last_active_ms.load(Ordering::Relaxed))?;
        open.remove(&id)
    }
}

impl Activity {
    fn touch(&self, epoch: Instant) {
        self.last_active_ms
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// A request being answered: its connection is not evicted meanwhile.
struct Busy {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Busy {
    fn begin(activity: Arc<Activity>, epoch: Instant) -> Self {
        activity.answering.store(true, Ordering::Relaxed);
        activity.touch(epoch);
        Self { activity, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.touch(self.epoch);
        self.activity.requests.fetch_add(1, Ordering::Relaxed);
        self.activity.answering.store(false, Ordering::Relaxed);
    }
}

/// Says when a throttled WARN line is due: the first time, then once per [`WARN_EVERY`].
#[derive(Default)]
struct Reminder {
    next_ms: AtomicU64,
}

impl Reminder {
    fn due(&self, now_ms: u64) -> bool {
        let next = self.next_ms.load(Ordering::Relaxed);
        now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + WARN_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let ready = endpoints.readiness.check().is_ok();
    endpoints.metrics.set_ready(ready);
    let page = crate::telemetry::metrics::render(
        std::iter::once(&*endpoints.metrics).chain(endpoints.streams.iter().map(|m| &**m)),
    );
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], page)
}

async fn ready(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reports_the_first_problem() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(), Err("database unreachable"));
        readiness.set_database_reachable(true);
        assert_eq!(readiness.check(), Err("SQS unreachable"));
        readiness.set_queue_reachable(true);
        assert_eq!(readiness.check(), Ok(()));
        readiness.set_writes_paused(true);
        assert_eq!(
            readiness.check(),
            Err("writes paused: the database refuses them (see the log)")
        );
        readiness.set_writes_paused(false);
        readiness.begin_shutdown();
        assert_eq!(readiness.check(), Err("shutting down"));
    }

    #[test]
    fn the_eviction_takes_the_least_recently_active_connection_not_answering() {
        let connections = Connections::new(4);
        let activity: Vec<(u64, Arc<Activity>)> = (0..4).map(|_| connections.insert()).collect();
        for (n, (_, each)) in activity.iter().enumerate() {
            each.last_active_ms.store(100 - n as u64, Ordering::Relaxed);
        }
        // The least recently active (the last one) is answering a request: spared.
        activity[3].1.answering.store(true, Ordering::Relaxed);
        let taken = connections.take_least_recently_active_idle().unwrap();
        assert!(Arc::ptr_eq(&taken, &activity[2].1));
        assert_eq!(connections.open(), 3);
        // Every one left is answering: nothing to take.
        for (_, each) in &activity {
            each.answering.store(true, Ordering::Relaxed);
        }
        assert!(connections.take_least_recently_active_idle().is_none());
    }

    #[test]
    fn a_reminder_is_due_at_first_then_once_per_interval() {
        let reminder = Reminder::default();
        let every = WARN_EVERY.as_millis() as u64;
        assert!(reminder.due(5));
        assert!(!reminder.due(6));
        assert!(!reminder.due(5 + every - 1));
        assert!(reminder.due(5 + every));
        assert!(!reminder.due(5 + every));
    }

    /// The help texts name the constants' values, which the macro cannot interpolate.
    #[test]
    fn the_metrics_help_texts_name_the_timeout_and_the_pause() {
        let rendered = Metrics::new().render();
        let help = |name: &str| {
            rendered
                .lines()
                .find(|line| line.starts_with(&format!("# HELP {name} ")))
                .unwrap_or_else(|| panic!("no help for {name}"))
                .to_owned()
        };
        assert!(
            help("sqs2pg_http_connections_shed_total")
                .contains(&format!("within {} s", HEADER_READ_TIMEOUT.as_secs()))
        );
        assert!(
            help("sqs2pg_http_accept_errors_total")
                .contains(&format!("{} ms", ACCEPT_ERROR_PAUSE.as_millis()))
        );
    }

    /// A burst of connections larger than tokio's default accept queue (1024) is queued
    /// whole while the accept loop is behind (here it does not run): no SYN is dropped, so
    /// no client, a probe among them, waits out a retransmission.
    #[tokio::test]
    async fn a_burst_beyond_1024_connections_is_queued_not_dropped() {
        const BURST: usize = 1_500;
        let own = rlimit::increase_nofile_limit(u64::MAX).unwrap();
        assert!(own as usize > BURST + 100, "open-file limit {own}");
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            somaxconn >= BURST,
            "net.core.somaxconn {somaxconn} caps the queue"
        );
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::with_capacity(BURST);
        for n in 0..BURST {
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                Ok(Ok(client)) => clients.push(client),
                other => panic!("connection {n} was not queued: {other:?}"),
            }
        }
    }

    /// Idle sockets up to the cap, then a probe: it is answered, and the socket that waited
    /// longest is closed for it.
    #[tokio::test]
    async fn a_probe_beyond_the_cap_is_answered_and_the_oldest_idle_connection_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (addr, server) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::clone(&metrics),
            Vec::new(),
            Arc::new(Readiness::default()),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
            // Accepted in this order, so the first is the least recently active.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut probe = TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        // The first idle socket was closed: end of stream, not a timeout.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), idle[0].read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let read = tokio::time::timeout(Duration::from_millis(100), idle[1].read(&mut byte)).await;
        assert!(
            read.is_err(),
            "the second idle socket is still open: {read:?}"
        );
        assert_eq!(metrics.connections_shed_total(ShedReason::Evicted), 1);
        assert_eq!(metrics.connections_shed_total(ShedReason::Refused), 0);

        // Shutdown: the server ends, closing the idle sockets, within its grace.
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 3, server)
            .await
            .expect("the server ends")
            .unwrap();
    }
}
