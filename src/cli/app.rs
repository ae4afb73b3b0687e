//! The subcommands, wired from the parts: `run`, `migrate`, `setup`, `send`, `dlq`.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::{self, PostgresSink};
use crate::adapters::sqs::{self, FifoIds, MAX_BATCH, OutgoingMessage, Queue as _, SqsQueue};
use crate::cli::config::{
    DatabaseArgs, DlqInspectArgs, DlqRedriveArgs, HealthcheckArgs, OutputFormat, RunArgs, SendArgs,
    SetupArgs,
};
use crate::domain::dead_letter::{DeadLetterReason, attribute};
use crate::domain::event::Masker;
use crate::domain::redact::redact;
use crate::domain::synthetic;
use crate::error_chain::ErrorChain;
use crate::pipeline::{Pipeline, Settings, Summary};
use crate::retry::{RetryPolicy, Stage, retry};
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::Metrics;

/// How long `run` keeps retrying at start while the database or SQS is unreachable.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// An SQS client from the standard AWS settings (AWS_ENDPOINT_URL, AWS_REGION, credentials),
/// for the one-shot commands: the SDK's own retries, and the default call deadline.
pub async fn sqs_client() -> anyhow::Result<Client> {
    sqs_client_with(sqs::DEFAULT_SQS_TIMEOUT, RetryConfig::standard()).await
}

/// The client of `run`: every attempt has a deadline (a receive gets its wait on top, see
/// `SqsQueue::receive`), and the SDK does not retry by itself. `run`'s own retries log each
/// failure with its cause, so an endpoint that stops answering is reported within one
/// deadline instead of after the SDK's three silent attempts.
pub async fn sqs_client_for_run(attempt_timeout: Duration) -> anyhow::Result<Client> {
    sqs_client_with(
        attempt_timeout,
        RetryConfig::standard().with_max_attempts(1),
    )
    .await
}

async fn sqs_client_with(
    attempt_timeout: Duration,
    retries: RetryConfig,
) -> anyhow::Result<Client> {
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
    Ok(Client::new(&config))
}

/// `sqs2pg migrate`.
pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let database = args.database()?;
    let report = postgres::migrate(&database)
        .await
        .context("applying migrations")?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    if applied.is_empty() {
        println!("migrations: up to date");
    } else {
        println!("migrations applied: {}", applied.join(", "));
    }
    Ok(())
}

/// `sqs2pg setup`.
pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let client = sqs_client().await?;
    let queue_name = match args.fifo && !args.queue_name.ends_with(".fifo") {
        true => format!("{}.fifo", args.queue_name),
        false => args.queue_name,
    };
    let dlq_name = args
        .dlq_name
        .unwrap_or_else(|| dead_letter_queue_name(&queue_name));
    let (urls, change) = sqs::setup_queues(
        &client,
        &queue_name,
        &dlq_name,
        args.max_receive_count,
        args.update,
    )
    .await
    .context("setting up the queues")?;
    if let sqs::RedriveChange::Updated { previous } = change {
        tracing::warn!(
            message = "Changed the redrive policy of an existing queue, as --update asked.",
            queue_url = %urls.queue_url,
            %previous,
            max_receive_count = args.max_receive_count,
        );
    }
    println!("SQS2PG_QUEUE_URL={}", urls.queue_url);
    println!("SQS2PG_DLQ_URL={}", urls.dlq_url);
    Ok(())
}

/// The default name of a queue's DLQ: `<name>-dlq`, and `<stem>-dlq.fifo` for a FIFO queue,
/// whose DLQ must be FIFO and named so.
fn dead_letter_queue_name(queue_name: &str) -> String {
    match queue_name.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-dlq.fifo"),
        None => format!("{queue_name}-dlq"),
    }
}

/// `sqs2pg send`.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let client = sqs_client().await?;
    let queue = SqsQueue::new(client, args.queue_url.clone(), String::new());
    let (bodies, malformed) = synthetic::generate(synthetic::Recipe {
        count: args.count,
        seed: args.seed,
        duplicate_share: args.duplicate_share,
        malformed_share: args.malformed_share,
    });
    let metrics = Metrics::new();
    let started = std::time::Instant::now();
    futures::stream::iter(bodies.chunks(MAX_BATCH))
        .map(|chunk| send_chunk(&queue, &metrics, chunk))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "sent {} events ({} malformed) to {} in {:.2} s",
        bodies.len(),
        malformed,
        args.queue_url,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The FIFO ids `send` gives an event: its user id as the group, so one user's events stay
/// in order (a body without one goes to a group of its own), and a fresh deduplication id,
/// since two events may rightly be identical.
fn event_fifo_ids(body: &str) -> FifoIds {
    let user_id = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|event| event.get("user_id")?.as_str().map(str::to_owned))
        // SQS takes 1 to 128 printable ASCII characters as a group id.
        .filter(|user_id| {
            (1..=128).contains(&user_id.len()) && user_id.bytes().all(|b| b.is_ascii_graphic())
        });
    FifoIds {
        group_id: user_id.unwrap_or_else(|| "no-user-id".to_owned()),
        deduplication_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Sends one batch, retrying the whole call and then any entries SQS refused.
async fn send_chunk(queue: &SqsQueue, metrics: &Metrics, chunk: &[String]) -> anyhow::Result<()> {
    let mut pending: Vec<OutgoingMessage> = chunk
        .iter()
        .map(|body| OutgoingMessage {
            fifo: queue.is_fifo().then(|| event_fifo_ids(body)),
            ..OutgoingMessage::new(body.clone())
        })
        .collect();
    for _ in 0..5 {
        let failures = retry(
            RetryPolicy::BRIEF,
            Stage::Send,
            &metrics.retry_reporter(),
            || queue.send(&pending),
        )
        .await
        .context("sending events")?;
        if failures.is_empty() {
            return Ok(());
        }
        pending = sqs::split_by_failures(pending, &failures).1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("SQS kept refusing {} events", pending.len())
}

/// `sqs2pg run`: migrate, then consume until a signal (or, with `--drain`, an empty queue).
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let key = args.key.load()?;
    let database = args
        .database
        .database()?
        .with_statement_timeout(Duration::from_secs(args.statement_timeout));
    let client = sqs_client_for_run(Duration::from_secs(args.sqs_timeout)).await?;

    if let Some(dlq_url) = &args.queue.dlq_url {
        sqs::check_fifo_pair(&args.queue.queue_url, dlq_url)?;
    }
    // Cheap checks before side effects: a busy metrics port fails before any migration.
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    // Signals are handled from here on: /healthz answers from the next step, so a
    // supervisor may stop the process while it is still starting.
    let shutdown = CancellationToken::new();
    tokio::spawn(handle_signals(shutdown.clone(), Arc::clone(&readiness)));
    let server_stop = CancellationToken::new();
    let (metrics_addr, server) = crate::telemetry::http::serve(
        args.metrics_addr,
        Arc::clone(&metrics),
        Arc::clone(&readiness),
        server_stop.clone(),
    )
    .await
    .with_context(|| format!("binding SQS2PG_METRICS_ADDR {}", args.metrics_addr))?;
    tracing::info!(message = "Serving /metrics, /healthz and /readyz.", addr = %metrics_addr);

    let startup = RetryPolicy {
        max_elapsed: Some(STARTUP_PATIENCE),
        ..RetryPolicy::FOREVER
    };
    let starting = async {
        let report = retry(startup, Stage::Migrate, &metrics.retry_reporter(), || {
            postgres::migrate(&database)
        })
        .await
        .context("applying migrations at start")?;
        // SQS may be unreachable for a moment at start too (a restarting endpoint): retried
        // with the same patience as the database.
        let queue = retry(startup, Stage::Connect, &metrics.retry_reporter(), || {
            SqsQueue::connect(
                client.clone(),
                args.queue.queue_url.clone(),
                args.queue.dlq_url.clone(),
            )
        })
        .await
        .context("finding the dead-letter queue")?;
        anyhow::Ok((report, queue))
    };
    // A signal while starting (perhaps retrying an unreachable database) stops at once:
    // nothing has been received yet, and a dropped migration rolls back.
    let (report, queue) = tokio::select! {
        started = starting => started?,
        () = shutdown.cancelled() => {
            tracing::info!(message = "Stopped while starting; nothing was received.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if !report.applied_migrations().is_empty() {
        let applied: Vec<String> = report
            .applied_migrations()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(message = "Applied migrations.", migrations = %applied.join(", "));
    }
    let source_queue = args
        .queue
        .queue_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // A FIFO group's messages can span two batches; one writer commits batches in the
    // order they closed, so a group's rows commit in its order.
    let writers = if queue.is_fifo() {
        1
    } else {
        args.writers as usize
    };
    tracing::info!(
        message = "Starting.",
        queue_url = %queue.queue_url(),
        dlq_url = %queue.dlq_url(),
        receivers_min = args.receivers_min,
        receivers_max = args.receivers_max,
        writers,
        in_flight_messages = args.in_flight_messages,
        visibility_timeout_s = args.visibility_timeout,
        drain = args.drain,
    );

    let consumer = Arc::new(Pipeline::new(
        Arc::new(queue),
        PostgresSink::new(database, writers),
        Masker::new(&key),
        metrics,
        Arc::clone(&readiness),
        Settings {
            receivers_min: args.receivers_min as usize,
            receivers_max: args.receivers_max as usize,
            writers,
            in_flight_messages: args.in_flight_messages as usize,
            in_flight_bytes: args.in_flight_mib as usize * 1024 * 1024,
            batch_messages: args.batch_size as usize,
            batch_window: Duration::from_millis(args.batch_window_ms),
            visibility_timeout: args.visibility_timeout(),
            wait_time: Duration::from_secs(args.wait_time),
            batch_timeout: Duration::from_secs(args.batch_timeout),
            envelope: args.envelope,
            drain: args.drain,
            retry: RetryPolicy::FOREVER,
            source_queue,
        },
    ));

    let started = std::time::Instant::now();
    let grace = Duration::from_secs(args.shutdown_timeout);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = consumer.run(shutdown.clone()) => result,
        () = deadline => {
            tracing::error!(
                message = "Shutdown timed out with work in flight; exiting anyway. Nothing uncommitted was deleted: those messages return after their visibility timeout.",
                timeout_s = args.shutdown_timeout,
            );
            print_summary(&consumer.summary(started.elapsed()), args.output);
            return Ok(ExitCode::FAILURE);
        }
    };
    readiness.begin_shutdown();
    server_stop.cancel();
    let _ = server.await;
    let summary = result?;
    tracing::info!(
        message = "Stopped.",
        inserted = summary.inserted,
        duplicates = summary.duplicates,
        dead_lettered = summary.dead_lettered,
        received = summary.received,
        deleted = summary.deleted,
        elapsed_s = summary.elapsed.as_secs_f64(),
        messages_per_second = summary.messages_per_second(),
        busy_s = summary.busy.as_secs_f64(),
        busy_messages_per_second = summary.busy_messages_per_second(),
    );
    print_summary(&summary, args.output);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &Summary, output: OutputFormat) {
    match output {
        OutputFormat::Text => println!("sqs2pg: {summary}"),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(summary).expect("a summary serializes")
        ),
    }
}

/// First SIGTERM/SIGINT: turn unready and stop receiving; in-flight work finishes.
/// Second: exit at once, which is still safe because nothing uncommitted was deleted.
async fn handle_signals(shutdown: CancellationToken, readiness: Arc<Readiness>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
    readiness.begin_shutdown();
    shutdown.cancel();
    tracing::info!(
        message = "Shutting down: finishing in-flight batches. Signal again to exit at once."
    );
    tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
    tracing::warn!(
        message = "Second signal: exiting now. Uncommitted messages return after their visibility timeout."
    );
    std::process::exit(130);
}

/// `sqs2pg dlq inspect`: counts by reason and redacted sample bodies ([`redact`]). Leaves
/// the DLQ as it was.
pub async fn dlq_inspect(args: DlqInspectArgs) -> anyhow::Result<()> {
    let masker = Masker::new(&args.key.load()?);
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await?;
    // Read before the scan hides anything: on a FIFO DLQ the scan cannot see them all.
    let depth = queue.dead_letter_depth().await?;
    let mut by_reason: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut handles = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let fresh = receive_unseen_dead_letters(&queue, &mut seen).await?;
        if fresh.is_empty() {
            break;
        }
        for message in fresh {
            let (reason, ours) = shown_reason(&message);
            let entry = by_reason.entry(reason).or_default();
            entry.0 += 1;
            if entry.1.len() < args.samples {
                let body = redact(message.body().unwrap_or_default(), &masker);
                // The detail of one of our reasons is built from a typed rejection: no values.
                entry
                    .1
                    .push(match message_attribute(&message, attribute::DETAIL) {
                        Some(detail) if ours => format!("{body}  [{detail}]"),
                        _ => body.to_string(),
                    });
            }
            handles.extend(message.receipt_handle().map(str::to_owned));
        }
    }
    release_dead_letters(&queue, &handles).await?;
    println!(
        "dead-letter queue {}: {}",
        queue.dlq_url(),
        plural(seen.len() as u64, "message")
    );
    for (reason, (count, samples)) in by_reason {
        println!("  {reason}: {count}");
        for sample in samples {
            println!("    {sample}");
        }
    }
    let total = depth.visible + depth.in_flight + depth.delayed;
    if sqs::is_fifo_queue_url(queue.dlq_url()) && (seen.len() as u64) < total {
        // SQS hands out no more of a FIFO group while some of it is being read, so a scan
        // that leaves the queue as it was sees only the first messages of each group.
        println!(
            "  (a FIFO queue: {} of its {total} messages could be read without removing any; the counts above are of those)",
            seen.len()
        );
    }
    Ok(())
}

/// `sqs2pg dlq redrive`: back to the source queue, each with its original id, so a message
/// that was already ingested is still deduplicated. Sent first, deleted from the DLQ after:
/// a crash in between only makes a duplicate in the source, which the consumer skips.
pub async fn dlq_redrive(args: DlqRedriveArgs) -> anyhow::Result<()> {
    let queue = SqsQueue::connect(
        sqs_client().await?,
        args.queue.queue_url,
        args.queue.dlq_url,
    )
    .await?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut redriven = 0u64;
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    while redriven < limit {
        let fresh = receive_unseen_dead_letters(&queue, &mut seen).await?;
        if fresh.is_empty() {
            break;
        }
        let mut batch = Vec::new();
        for message in fresh {
            let reason = message_attribute(&message, attribute::REASON)
                .and_then(|r| r.parse::<DeadLetterReason>().ok());
            let wanted = args.reason.is_none() || reason == args.reason;
            let handle = message.receipt_handle().unwrap_or_default().to_owned();
            if !wanted || redriven + batch.len() as u64 >= limit {
                skipped.push(handle);
                continue;
            }
            let original_id = message_attribute(&message, attribute::ORIGINAL_MESSAGE_ID)
                .or_else(|| message.message_id().map(str::to_owned))
                .unwrap_or_default();
            let sent_timestamp = message_attribute(&message, attribute::ORIGINAL_SENT_TIMESTAMP)
                .or_else(|| {
                    message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .cloned()
                })
                .unwrap_or_default();
            // Into a FIFO source: the group the message had, and the DLQ copy's id as the
            // deduplication id, so a redrive that crashed and is run again within SQS's
            // five minutes does not send it twice.
            let fifo = queue.is_fifo().then(|| FifoIds {
                group_id: message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| sqs::DEFAULT_GROUP_ID.to_owned()),
                deduplication_id: message.message_id().unwrap_or_default().to_owned(),
            });
            let outgoing = OutgoingMessage {
                body: message.body().unwrap_or_default().to_owned(),
                attributes: vec![
                    (attribute::ORIGINAL_MESSAGE_ID, original_id),
                    (attribute::ORIGINAL_SENT_TIMESTAMP, sent_timestamp),
                ],
                fifo,
            };
            batch.push((outgoing, handle));
        }
        let outgoing: Vec<OutgoingMessage> =
            batch.iter().map(|(message, _)| message.clone()).collect();
        let failures = queue.send(&outgoing).await?;
        let (sent, refused) = sqs::split_by_failures(batch, &failures);
        let sent: Vec<&str> = sent.iter().map(|(_, handle)| handle.as_str()).collect();
        queue.delete_dead_letters(&sent).await?;
        redriven += sent.len() as u64;
        skipped.extend(refused.into_iter().map(|(_, handle)| handle));
    }
    release_dead_letters(&queue, &skipped).await?;
    println!(
        "redriven: {} from {} to {}",
        plural(redriven, "message"),
        queue.dlq_url(),
        queue.queue_url()
    );
    Ok(())
}

/// How long `dlq inspect` and `dlq redrive` hide the dead letters they have read, so that a
/// scan sees each once; whatever they leave is released at the end.
const DEAD_LETTER_SCAN_VISIBILITY: Duration = Duration::from_secs(60);

/// The next dead letters this scan has not seen yet; empty once it has seen them all.
async fn receive_unseen_dead_letters(
    queue: &SqsQueue,
    seen: &mut HashSet<String>,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    let messages = queue
        .receive_dead_letters(MAX_BATCH, DEAD_LETTER_SCAN_VISIBILITY)
        .await?;
    Ok(messages
        .into_iter()
        .filter(|message| seen.insert(message.message_id().unwrap_or_default().to_owned()))
        .collect())
}

/// Makes dead letters visible again at once (those a scan read but did not move).
async fn release_dead_letters(queue: &SqsQueue, receipt_handles: &[String]) -> anyhow::Result<()> {
    for chunk in receipt_handles.chunks(MAX_BATCH) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        queue
            .change_dead_letter_visibility(&refs, Duration::ZERO)
            .await?;
    }
    Ok(())
}

fn message_attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
        .map(str::to_owned)
}

/// `count` and the noun, singular for one: "1 message", "3 messages".
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// How `dlq inspect` names a dead letter's reason. The attribute is printed only when it is
/// one of our codes: anyone who can send to the DLQ can set it, so any other text is data
/// of unknown origin, and so is the detail that travels with it.
fn shown_reason(message: &aws_sdk_sqs::types::Message) -> (String, bool) {
    match message_attribute(message, attribute::REASON) {
        None => ("unknown (moved by SQS redrive)".to_owned(), false),
        Some(code) => match code.parse::<DeadLetterReason>() {
            Ok(reason) => (reason.as_str().to_owned(), true),
            Err(_) => (
                "unrecognized (not one of our codes; withheld)".to_owned(),
                false,
            ),
        },
    }
}

/// How long `healthcheck` waits for an answer: a hung instance must fail the check well
/// within the prober's own timeout (Docker's default is 30 s), not hold it.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `healthcheck` failed, on one line.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("SQS2PG_METRICS_ADDR {0} has port 0, which a client cannot reach")]
    NoPort(std::net::SocketAddr),
    #[error("GET {url} failed: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("GET {url} answered {status}: {body}")]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where a client reaches a server bound to `addr`: an unspecified address (0.0.0.0, [::])
/// listens on every interface, loopback included, but cannot be connected to.
pub fn probe_addr(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// GET `/readyz` once, within [`HEALTHCHECK_TIMEOUT`].
pub async fn check_ready(addr: std::net::SocketAddr) -> Result<(), HealthcheckError> {
    if addr.port() == 0 {
        return Err(HealthcheckError::NoPort(addr));
    }
    let url = format!("http://{}/readyz", probe_addr(addr));
    // The causes too ("Connection refused"), on one line; the URL is said once, above.
    let unreachable = |error: reqwest::Error| HealthcheckError::Unreachable {
        url: url.clone(),
        reason: ErrorChain(&error.without_url()).to_string(),
    };
    let response = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        // Loopback, never through an HTTP_PROXY the container may set for other traffic.
        .no_proxy()
        .build()
        .map_err(unreachable)?
        .get(&url)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    // /readyz's body is a short reason ("database unreachable"), never a secret.
    let body = response.text().await.unwrap_or_default();
    Err(HealthcheckError::NotReady {
        url,
        status,
        body: body.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// `sqs2pg healthcheck`: exit 0 if ready, else 1 with the reason on one line of stderr.
pub async fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    match check_ready(args.metrics_addr).await {
        Ok(()) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sqs2pg healthcheck: not ready: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_reach_an_unspecified_address_on_loopback() {
        let probe = |addr: &str| probe_addr(addr.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9898"), "127.0.0.1:9898");
        assert_eq!(probe("[::]:9898"), "[::1]:9898");
        assert_eq!(probe("10.1.2.3:9898"), "10.1.2.3:9898");
        assert_eq!(probe("127.0.0.1:1"), "127.0.0.1:1");
    }

    #[test]
    fn a_fifo_queue_gets_a_fifo_dead_letter_queue_name() {
        assert_eq!(dead_letter_queue_name("logins"), "logins-dlq");
        assert_eq!(dead_letter_queue_name("logins.fifo"), "logins-dlq.fifo");
    }

    #[test]
    fn send_groups_events_by_user_and_never_reuses_a_deduplication_id() {
        let first = event_fifo_ids(r#"{"user_id": "u-1", "ip": "10.0.0.1"}"#);
        let again = event_fifo_ids(r#"{"user_id": "u-1", "ip": "10.0.0.1"}"#);
        assert_eq!(first.group_id, "u-1");
        assert_eq!(again.group_id, "u-1");
        assert_ne!(first.deduplication_id, again.deduplication_id);
        assert_eq!(event_fifo_ids("not json").group_id, "no-user-id");
        assert_eq!(
            event_fifo_ids(r#"{"user_id": "a user"}"#).group_id,
            "no-user-id",
            "SQS refuses a space in a group id"
        );
    }

    #[test]
    fn counts_are_pluralized() {
        assert_eq!(plural(0, "message"), "0 messages");
        assert_eq!(plural(1, "message"), "1 message");
        assert_eq!(plural(2, "message"), "2 messages");
    }
}
