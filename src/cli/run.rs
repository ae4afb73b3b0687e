//! `sqs2pg run`: migrate, then consume until a signal (or, with `--drain`, an empty queue).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::{self, PostgresSink};
use crate::adapters::sqs::{self, SqsQueue, check_credentials};
use crate::cli::aws::sqs_client_for_run;
use crate::cli::config::{OutputFormat, RunArgs};
use crate::cli::migrate::applied_migrations;
use crate::cli::progress::DrainBar;
use crate::cli::streams::{self, Configured};
use crate::pipeline::report::Progress;
use crate::pipeline::{self, Pipeline, Settings, Summary};
use crate::retry::{RetryPolicy, Stage, retry};
use crate::telemetry::events::{KeyringLoaded, OpenFileLimit};
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::Metrics;

/// How long `run` keeps retrying at start while the database or SQS is unreachable.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
/// What the exit at `SQS2PG_SHUTDOWN_TIMEOUT` may spend handing back the messages still
/// held: well inside the 15 s the manifests leave before the kubelet's SIGKILL.
const RELEASE_AT_TIMEOUT: Duration = Duration::from_secs(5);

/// `sqs2pg run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Before any connection: each one is a file descriptor. Logged with the cheap checks'
    // success, so that a bad setting still fails on one line.
    let open_file_limit = raise_open_file_limit();
    // The keyring keeps each key's keyed HMAC state; the keys' own bytes are wiped at once.
    let keyring = args.key.keyring()?;
    let database = args
        .database
        .database()?
        .with_statement_timeout(args.statement_timeout);
    let configured = streams::load(&args.streams, &args.queue, args.envelope)?;
    let (client, credentials) = sqs_client_for_run(args.sqs_timeout).await?;
    for stream in &configured {
        if let Some(dlq_url) = &stream.dlq_url {
            sqs::check_fifo_pair(&stream.stream.queue_url, dlq_url)?;
        }
    }
    // The process's own metrics, and each stream's, labelled with its name.
    let metrics = Arc::new(Metrics::process());
    let stream_metrics: Vec<Arc<Metrics>> = configured
        .iter()
        .map(|configured| Arc::new(Metrics::stream(&configured.stream.name)))
        .collect();
    // Cheap checks before side effects: a busy metrics port fails before any migration.
    metrics.emit(open_file_limit);
    metrics.emit(KeyringLoaded { keyring: &keyring });
    let readiness = Arc::new(Readiness::default());
    // Signals are handled from here on: /healthz answers from the next step, so a
    // supervisor may stop the process while it is still starting.
    let shutdown = CancellationToken::new();
    tokio::spawn(handle_signals(shutdown.clone(), Arc::clone(&readiness)));
    let server_stop = CancellationToken::new();
    let (metrics_addr, server) = crate::telemetry::http::serve(
        args.metrics_addr,
        Arc::clone(&metrics),
        stream_metrics.clone(),
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
        // First, before any side effect: without credentials nothing can be received, and
        // a missing one is reported at once, on one line. A provider that does not answer
        // yet (instance metadata) is waited for with the same patience as the rest.
        retry(startup, Stage::Connect, &metrics.retry_reporter(), || {
            check_credentials(credentials.as_ref())
        })
        .await?;
        let report = retry(startup, Stage::Migrate, &metrics.retry_reporter(), || {
            postgres::migrate(&database)
        })
        .await
        .context("applying migrations at start")?;
        // Before anything is received: a table that does not fit its stream would refuse
        // every row.
        streams::check_tables(&database, &configured).await?;
        let mut queues = Vec::with_capacity(configured.len());
        for stream in &configured {
            // SQS may be unreachable for a moment at start too (a restarting endpoint):
            // retried with the same patience as the database.
            let queue = retry(startup, Stage::Connect, &metrics.retry_reporter(), || {
                SqsQueue::connect(
                    client.clone(),
                    stream.stream.queue_url.clone(),
                    stream.dlq_url.clone(),
                )
            })
            .await
            .with_context(|| {
                format!(
                    "stream `{}`: finding the dead-letter queue",
                    stream.stream.name
                )
            })?
            // Tags its dead letters and checks the tags of redriven messages.
            .with_keyring(keyring.clone());
            queues.push(queue);
        }
        anyhow::Ok((report, queues))
    };
    // A signal while starting (perhaps retrying an unreachable database) stops at once:
    // nothing has been received yet, and a dropped migration rolls back.
    let (report, queues) = tokio::select! {
        started = starting => started?,
        () = shutdown.cancelled() => {
            tracing::info!(message = "Stopped while starting; nothing was received.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(applied) = applied_migrations(&report) {
        tracing::info!(message = "Applied migrations.", migrations = %applied);
    }
    let progress_bar = args.drain && std::io::stderr().is_terminal();
    let shares = Shares::of(&args, configured.len());
    // The writers' connections, shared by every stream through one pool.
    let sink = PostgresSink::new(database, shares.connections);
    let consumers: Vec<Arc<Pipeline<SqsQueue, PostgresSink>>> = configured
        .iter()
        .zip(queues)
        .zip(stream_metrics)
        .map(|((configured, queue), metrics)| {
            let settings = Settings {
                receivers_min: args.receivers_min as usize,
                receivers_max: args.receivers_max as usize,
                writers: shares.writers,
                in_flight_messages: shares.in_flight_messages,
                in_flight_bytes: shares.in_flight_bytes,
                batch_messages: args.batch_size as usize,
                batch_window: args.batch_window,
                visibility_timeout: args.visibility_timeout,
                wait_time: args.wait_time,
                batch_timeout: args.batch_timeout,
                write_patience: args.write_patience,
                poison_per_minute: usize::try_from(args.poison_refusals_per_minute)
                    .unwrap_or(usize::MAX),
                drain: args.drain,
                retry: RetryPolicy::FOREVER,
                source_queue: configured.queue_name().to_owned(),
                // On a terminal a drain draws a bar; elsewhere it logs progress lines.
                progress_interval: (!progress_bar).then_some(args.progress_interval),
                summary_interval: Some(args.summary_interval),
            };
            // One on a FIFO queue, whatever SQS2PG_WRITERS says.
            let writers = pipeline::writers_for(&queue, &settings);
            tracing::info!(
                message = "Starting.",
                stream = %configured.stream.name,
                table = %configured.stream.table,
                queue_url = %queue.queue_url(),
                dlq_url = %queue.dlq_url(),
                receivers_min = args.receivers_min,
                receivers_max = args.receivers_max,
                writers,
                in_flight_messages = settings.in_flight_messages,
                visibility_timeout_s = args.visibility_timeout.as_secs(),
                drain = args.drain,
            );
            Arc::new(Pipeline::new(
                Arc::new(queue),
                sink.for_stream(&configured.stream),
                Arc::clone(&configured.stream),
                keyring.clone(),
                metrics,
                Arc::clone(&readiness),
                settings,
            ))
        })
        .collect();

    let bar = progress_bar.then(|| {
        let consumers = consumers.clone();
        DrainBar::start(move || Progress::combined(consumers.iter().map(|c| c.progress())))
    });
    let started = std::time::Instant::now();
    let grace = args.shutdown_timeout;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let runs = futures::future::join_all(consumers.iter().map(|c| c.run(shutdown.clone())));
    let results = tokio::select! {
        results = runs => results,
        () = deadline => {
            tracing::error!(
                message = "Shutdown timed out with work in flight; releasing what is held and exiting anyway. Nothing uncommitted was deleted.",
                timeout_s = grace.as_secs_f64(),
            );
            // Not released in time: back after its visibility timeout, as after a kill.
            let abandon = futures::future::join_all(consumers.iter().map(|c| c.abandon()));
            let _ = tokio::time::timeout(RELEASE_AT_TIMEOUT, abandon).await;
            let summaries: Vec<_> = consumers
                .iter()
                .map(|c| c.summary(started.elapsed()))
                .collect();
            print_summary(&configured, &summaries, started.elapsed(), args.output);
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(bar) = bar {
        bar.finish().await;
    }
    readiness.begin_shutdown();
    server_stop.cancel();
    let _ = server.await;
    let summaries = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    for (configured, summary) in configured.iter().zip(&summaries) {
        tracing::info!(
            message = "Stopped.",
            stream = %configured.stream.name,
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
    }
    print_summary(&configured, &summaries, started.elapsed(), args.output);
    Ok(ExitCode::SUCCESS)
}

/// How the streams of one process share its connections and its in-flight budget.
///
/// The connections are one pool of `SQS2PG_WRITERS` (at least one per stream), which
/// serves waiting writers in turn; each stream may use all of them but one for every other
/// stream, so a stream with a backlog never takes the connection another needs. The
/// in-flight budget is split evenly: a backlog on one stream fills its own share, and the
/// other streams' receivers still find room in theirs.
struct Shares {
    connections: usize,
    writers: usize,
    in_flight_messages: usize,
    in_flight_bytes: usize,
}

impl Shares {
    fn of(args: &RunArgs, streams: usize) -> Self {
        let streams = streams.max(1);
        let connections = (args.writers as usize).max(streams);
        Self {
            connections,
            writers: connections - (streams - 1),
            in_flight_messages: (args.in_flight_messages as usize / streams).max(10),
            in_flight_bytes: (args.in_flight_mib as usize * 1024 * 1024 / streams).max(1024 * 1024),
        }
    }
}

/// Raises the open-file soft limit to the hard limit, as Go's runtime does at start; Rust
/// leaves it where it is, and containers now start at 1024. That low soft limit exists for
/// programs that use select(2), whose descriptor sets end at 1024; tokio uses epoll.
fn raise_open_file_limit() -> OpenFileLimit {
    let (before, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => return OpenFileLimit::Unknown { error },
    };
    match rlimit::increase_nofile_limit(hard) {
        Ok(after) => OpenFileLimit::Raised {
            before,
            after,
            hard,
        },
        Err(error) => OpenFileLimit::NotRaised {
            before,
            hard,
            error,
        },
    }
}

/// The closing summary on stdout: one line (one object) for a single stream, as before; for
/// several, the totals with each stream's summary beside them.
fn print_summary(
    configured: &[Configured],
    summaries: &[Summary],
    elapsed: std::time::Duration,
    output: OutputFormat,
) {
    let total = match summaries {
        [one] => *one,
        all => Summary::combined(all, elapsed),
    };
    match output {
        OutputFormat::Text => {
            println!("sqs2pg: {total}");
            if summaries.len() > 1 {
                for (configured, summary) in configured.iter().zip(summaries) {
                    println!("  stream {}: {summary}", configured.stream.name);
                }
            }
        }
        OutputFormat::Json => {
            let mut json = serde_json::to_value(total).expect("a summary serializes");
            if summaries.len() > 1 {
                json["streams"] = configured
                    .iter()
                    .zip(summaries)
                    .map(|(configured, summary)| {
                        (
                            configured.stream.name.clone(),
                            serde_json::to_value(summary).expect("a summary serializes"),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            println!("{json}");
        }
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
