//! The whole pipeline against the in-memory queue and sink, under tokio's paused clock:
//! no servers, and hours of visibility timeouts pass in milliseconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::fake::FakeSink;
use crate::adapters::sqs::fake::FakeQueue;
use crate::domain::dead_letter::DeadLetterReason;
use crate::domain::event::Masker;
use crate::domain::keyring::{KeyId, Keyring};
use crate::domain::stream::{Row, Value, login};
use crate::retry::RetryPolicy;
use crate::telemetry::http::Readiness;
use crate::telemetry::metrics::Metrics;

use super::{Pipeline, PipelineError, Settings, Summary};

const EVENT: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;
/// Not the default id, so a row that did not record its key's id would show.
const KEY_ID: &str = "pipeline-1";
const GARBAGE: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

fn settings() -> Settings {
    Settings {
        drain: true,
        wait_time: Duration::from_secs(1),
        retry: RetryPolicy {
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(100),
            max_elapsed: None,
        },
        ..Settings::new("logins")
    }
}

fn pipeline(
    queue: &Arc<FakeQueue>,
    sink: FakeSink,
    settings: Settings,
) -> Pipeline<FakeQueue, FakeSink> {
    Pipeline::new(
        Arc::clone(queue),
        sink,
        Arc::new(login::stream(
            "http://localhost/000000000000/logins",
            Default::default(),
        )),
        Keyring::single(
            KeyId::parse(KEY_ID).unwrap(),
            Masker::new(b"test-hmac-key-0123456789abcdef"),
        ),
        Arc::new(Metrics::new()),
        Arc::new(Readiness::default()),
        settings,
    )
}

async fn drained(pipeline: &Pipeline<FakeQueue, FakeSink>) -> Summary {
    tokio::time::timeout(
        Duration::from_secs(3600),
        pipeline.run(CancellationToken::new()),
    )
    .await
    .expect("the drain finished")
    .expect("the pipeline ran")
}

/// Runs `pipeline` (not draining) until the returned token is cancelled.
fn run_until_shutdown(
    pipeline: &Arc<Pipeline<FakeQueue, FakeSink>>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<Summary, PipelineError>>,
) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (pipeline, shutdown) = (Arc::clone(pipeline), shutdown.clone());
        async move { pipeline.run(shutdown).await }
    });
    (shutdown, running)
}

fn sink(pipeline: &Pipeline<FakeQueue, FakeSink>) -> &FakeSink {
    &pipeline.context.sink
}

#[tokio::test(start_paused = true)]
async fn a_drain_commits_every_event_once_and_deletes_it() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 1_000]));
    let pipeline = pipeline(&queue, FakeSink::default(), settings());
    let summary = drained(&pipeline).await;
    assert_eq!(summary.inserted, 1_000, "{summary}");
    assert_eq!(summary.deleted, 1_000, "{summary}");
    assert_eq!(summary.received, 1_000, "{summary}");
    let rows = sink(&pipeline).rows.lock().unwrap().clone();
    assert_eq!(rows.len(), 1_000);
    assert!(
        rows.values()
            .all(|row| row.values.contains(&Value::Text(KEY_ID.to_owned()))),
        "each row records the key that masked it"
    );
    assert_eq!(queue.remaining(), 0);
    assert_eq!(pipeline.context.budget.admitted(), 0, "everything settled");
    assert_eq!(pipeline.context.heartbeat.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn receivers_grow_while_receives_come_back_full_and_retire_when_empty() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 3_000]));
    let settings = Settings {
        receivers_min: 1,
        receivers_max: 8,
        drain: false,
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    while queue.remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        queue.most_concurrent_receives.load(Ordering::SeqCst),
        8,
        "a backlog brings the receivers to their maximum"
    );
    // Idle now: empty receives retire receivers down to the minimum.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(pipeline.metrics().receivers.get(), 1);
    let calls_before = queue.receive_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle_calls = queue.receive_calls.load(Ordering::SeqCst) - calls_before;
    assert!(
        idle_calls <= 60,
        "an idle pipeline makes one receive per wait time: {idle_calls} in 60 s"
    );
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.inserted, 3_000, "{summary}");
}

/// A trickle comes back in short receives: the receivers retire to the minimum, and each
/// waits half the batch window before polling again, so receives gather several messages.
#[tokio::test(start_paused = true)]
async fn a_trickle_is_received_by_the_fewest_receivers_in_few_calls() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 2_000]));
    let settings = Settings {
        receivers_min: 1,
        receivers_max: 8,
        batch_window: Duration::from_millis(40),
        drain: false,
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    while queue.remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pipeline.metrics().receivers.get(),
        8,
        "the backlog grew them"
    );
    // 100 messages a second for 10 s, one every 10 ms.
    let calls_before = queue.receive_calls.load(Ordering::SeqCst);
    for _ in 0..1_000 {
        queue.send([EVENT]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = queue.receive_calls.load(Ordering::SeqCst) - calls_before;
    assert_eq!(
        pipeline.metrics().receivers.get(),
        1,
        "short receives retired them"
    );
    assert!(
        calls <= 300,
        "1,000 messages of a trickle in {calls} receives: several per call"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.inserted, 3_000, "{summary}");
}

#[tokio::test(start_paused = true)]
async fn writers_are_capped_whatever_the_receive_concurrency() {
    let queue = FakeQueue::with_bodies(vec![EVENT; 2_000]);
    let most = most_transactions_at_once(queue, 2_000, 3).await;
    assert_eq!(most, 3, "at most 3 transactions at once, and all 3 used");
}

/// A group's messages can span two batches: two writers could commit the later one first.
#[tokio::test(start_paused = true)]
async fn a_queue_that_keeps_group_order_gets_one_writer_whatever_the_settings() {
    let queue = FakeQueue::fifo();
    queue.send(vec![EVENT; 500]);
    let most = most_transactions_at_once(queue, 500, 4).await;
    assert_eq!(most, 1, "one transaction at a time");
}

/// Drains `queue` (`messages` long) with many receivers, `writers` writers and a slow
/// database; returns the most transactions seen at once.
async fn most_transactions_at_once(queue: FakeQueue, messages: u64, writers: usize) -> usize {
    let queue = Arc::new(queue);
    let settings = Settings {
        receivers_max: 32,
        writers,
        batch_messages: 20,
        ..settings()
    };
    let slow = FakeSink {
        insert_delay: Duration::from_millis(50),
        ..FakeSink::default()
    };
    let pipeline = pipeline(&queue, slow, settings);
    let summary = drained(&pipeline).await;
    assert_eq!(summary.inserted, messages);
    sink(&pipeline)
        .most_concurrent_inserts
        .load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_budget_bounds_what_is_held_while_the_database_is_slow() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 500]));
    let settings = Settings {
        in_flight_messages: 50,
        receivers_max: 16,
        ..settings()
    };
    let sink = FakeSink {
        insert_delay: Duration::from_secs(1),
        ..FakeSink::default()
    };
    let pipeline = Arc::new(pipeline(&queue, sink, settings));
    let running = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { drained(&pipeline).await }
    });
    let mut most = 0;
    while !running.is_finished() {
        most = most.max(pipeline.context.budget.admitted());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most <= 50, "{most} messages held at once");
    assert!(most >= 40, "the budget is used: {most}");
    assert_eq!(running.await.unwrap().inserted, 500);
}

#[tokio::test(start_paused = true)]
async fn a_refused_row_is_isolated_and_dead_lettered_while_the_rest_commit() {
    // Masked rows all look alike; refuse the ones whose message id ends in 7.
    fn refused(row: &Row) -> bool {
        row.key().ends_with('7')
    }
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 100]));
    let sink = FakeSink {
        refuse: Some(refused),
        ..FakeSink::default()
    };
    let pipeline = pipeline(&queue, sink, settings());
    let summary = drained(&pipeline).await;
    assert_eq!(summary.inserted, 90, "{summary}");
    assert_eq!(summary.dead_lettered, 10, "{summary}");
    let letters = queue.dead_letters.lock().unwrap();
    assert!(
        letters
            .iter()
            .all(|letter| letter.reason == DeadLetterReason::DatabaseRejected
                && letter.message_id.ends_with('7')
                && letter.body == EVENT)
    );
    assert_eq!(queue.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn poison_is_dead_lettered_once_even_when_it_comes_back() {
    let queue = Arc::new(FakeQueue::with_bodies([GARBAGE, EVENT, GARBAGE]));
    let pipeline = pipeline(&queue, FakeSink::default(), settings());
    let first = drained(&pipeline).await;
    assert_eq!((first.inserted, first.dead_lettered), (1, 2), "{first}");
    assert_eq!(queue.dead_letters.lock().unwrap().len(), 2);

    // The same copies again, as after a lost delete: recorded, so not sent twice.
    let letters = queue.dead_letters.lock().unwrap().clone();
    let again = letters
        .iter()
        .map(|letter| letter.sqs_message_id.clone())
        .collect::<Vec<_>>();
    let messages = again
        .iter()
        .map(|id| crate::adapters::sqs::ReceivedMessage {
            sqs_message_id: id.clone(),
            key: id.clone(),
            receipt_handle: format!("{id}#again"),
            body: GARBAGE.to_owned(),
            sent_at: chrono::Utc::now(),
            first_received_at: chrono::Utc::now(),
            receive_count: 2,
            group_id: None,
            untrusted_attributes: None,
        })
        .collect();
    let outcome = pipeline.process(messages).await;
    assert_eq!(outcome.duplicates, 2, "{outcome:?}");
    assert!(outcome.dead_lettered.is_empty());
    assert_eq!(queue.dead_letters.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn refused_deletes_are_retried_and_stale_handles_counted() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 30]));
    queue
        .faults
        .transient_delete_refusals
        .store(12, Ordering::SeqCst);
    let retried = pipeline(&queue, FakeSink::default(), settings());
    let summary = drained(&retried).await;
    assert_eq!(
        summary.deleted, 30,
        "transient refusals are retried: {summary}"
    );
    assert_eq!(queue.remaining(), 0);
    assert!(retried.metrics().retries_total(crate::retry::Stage::Delete) >= 1);

    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 5]));
    queue
        .faults
        .permanent_delete_refusals
        .store(5, Ordering::SeqCst);
    let stale = pipeline(&queue, FakeSink::default(), settings());
    let messages = queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    let outcome = stale.process(messages).await;
    assert_eq!(
        (outcome.inserted, outcome.deleted, outcome.undeleted),
        (5, 0, 5)
    );
    assert_eq!(stale.metrics().delete_failures.get(), 5);
}

use crate::adapters::sqs::Queue as _;

#[tokio::test(start_paused = true)]
async fn a_slow_batch_keeps_its_visibility_extended_and_never_past_its_deadline() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 10]));
    let settings = Settings {
        visibility_timeout: Duration::from_secs(30),
        batch_timeout: Duration::from_secs(120),
        ..settings()
    };
    let sink = FakeSink {
        insert_delay: Duration::from_secs(100),
        ..FakeSink::default()
    };
    let pipeline = pipeline(&queue, sink, settings);
    let started = tokio::time::Instant::now();
    let summary = drained(&pipeline).await;
    assert_eq!(summary.inserted, 10, "{summary}");
    let changes = queue.visibility_changes.lock().unwrap().clone();
    assert!(!changes.is_empty(), "a 100 s insert needs extensions");
    for (at, handles, timeout) in &changes {
        assert_eq!(handles.len(), 10, "one call for the whole batch");
        // Never hidden past the deadline (120 s after receipt) by more than a beat.
        let hidden_until = at.duration_since(started) + *timeout;
        assert!(
            hidden_until <= Duration::from_secs(120 + 8 + 1),
            "hidden until {hidden_until:?}"
        );
    }
    // Never uncovered while the insert ran: each extension came before the last expired.
    let mut hidden_until = Duration::from_secs(30);
    for (at, _, timeout) in &changes {
        let at = at.duration_since(started);
        assert!(
            at < hidden_until,
            "extended at {at:?}, hidden only until {hidden_until:?}"
        );
        hidden_until = at + *timeout;
    }
    assert!(hidden_until >= Duration::from_secs(101));
}

#[tokio::test(start_paused = true)]
async fn a_batch_past_its_deadline_is_abandoned_released_and_receiving_waits_for_the_database() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 10]));
    let settings = Settings {
        batch_timeout: Duration::from_secs(20),
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    sink(&pipeline).down.store(true, Ordering::SeqCst);
    let running = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { drained(&pipeline).await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(pipeline.metrics().batches_abandoned.get(), 1);
    // Polls in flight when the gate closed hand what they got straight back.
    let released = pipeline.metrics().messages_released.get();
    assert!(released >= 10, "{released}");
    // Closed gate: no receive while the database stays down.
    let calls = queue.receive_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(queue.receive_calls.load(Ordering::SeqCst), calls);
    assert_eq!(pipeline.metrics().batches_abandoned.get(), 1);

    sink(&pipeline).down.store(false, Ordering::SeqCst);
    let summary = running.await.unwrap();
    assert_eq!(summary.inserted, 10, "{summary}");
    assert_eq!(queue.remaining(), 0);
}

/// What the polls open at the signal bring is processed with the work in flight: released
/// instead, it would be taken again by the instance's other open polls, each time spending
/// a receive count.
#[tokio::test(start_paused = true)]
async fn messages_received_after_the_signal_are_processed_with_the_work_in_flight() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 10]));
    let settings = Settings {
        drain: false,
        receivers_min: 2,
        receivers_max: 2,
        ..settings()
    };
    let sink = FakeSink {
        insert_delay: Duration::from_secs(2),
        ..FakeSink::default()
    };
    let pipeline = Arc::new(pipeline(&queue, sink, settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    // The first ten are being written; the receivers' next polls are waiting on an empty
    // queue when the signal comes, and ten more arrive while they wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    queue.send(vec![EVENT; 10]);
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("shutdown finishes the work in flight promptly")
        .unwrap()
        .unwrap();
    assert_eq!(
        (summary.received, summary.inserted, summary.released),
        (20, 20, 0),
        "{summary}"
    );
    assert_eq!(queue.remaining(), 0);
}

/// SQS keeps a long poll open after its client has gone and hides what it then takes for
/// the visibility timeout (the fake does too). So a shutdown waits out its polls instead of
/// cancelling them: messages that arrive while an idle instance stops are ingested, not
/// stranded for 30 s.
#[tokio::test(start_paused = true)]
async fn an_idle_shutdown_waits_out_its_long_poll_and_processes_what_it_brings() {
    let queue = Arc::new(FakeQueue::default());
    let settings = Settings {
        drain: false,
        wait_time: Duration::from_secs(5),
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    // Well after the signal, with the poll's wait not over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    queue.send(vec![EVENT; 10]);
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the shutdown ends")
        .unwrap()
        .unwrap();
    assert_eq!((summary.received, summary.inserted), (10, 10), "{summary}");
    assert_eq!(
        queue.remaining(),
        0,
        "none hidden for the visibility timeout"
    );
}

/// With nothing arriving, an idle instance exits once its poll's wait is over: within one
/// `wait_time`, whatever the visibility timeout.
#[tokio::test(start_paused = true)]
async fn an_idle_shutdown_ends_within_one_long_poll_wait() {
    let queue = Arc::new(FakeQueue::default());
    let wait_time = Duration::from_secs(5);
    let settings = Settings {
        drain: false,
        wait_time,
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let signalled = tokio::time::Instant::now();
    let summary = running.await.unwrap().unwrap();
    let took = signalled.elapsed();
    assert!(took <= wait_time, "{took:?}");
    assert_eq!(summary.received, 0);
    queue.send(vec![EVENT; 10]);
    assert_eq!(
        queue.depth().await.unwrap().visible,
        10,
        "no poll left open"
    );
}

/// A shutdown that times out (the database hangs) hands back what it holds, wherever it
/// is: in a writer, in the batcher, waiting for a writer.
#[tokio::test(start_paused = true)]
async fn an_abandoned_shutdown_releases_every_message_it_holds() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 300]));
    let settings = Settings {
        drain: false,
        writers: 1,
        batch_messages: 50,
        ..settings()
    };
    let sink = FakeSink {
        insert_delay: Duration::from_secs(3600),
        ..FakeSink::default()
    };
    let pipeline = Arc::new(pipeline(&queue, sink, settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!running.is_finished(), "the hung insert holds the shutdown");
    let held = queue.depth().await.unwrap().in_flight;
    assert!(held > 50, "more than one batch held: {held}");
    pipeline.abandon().await;
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (300, 0));
    assert_eq!(pipeline.summary(Duration::ZERO).released, held);
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn a_transient_receive_failure_is_retried() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 5]));
    queue.faults.failing_receives.store(3, Ordering::SeqCst);
    let pipeline = pipeline(&queue, FakeSink::default(), settings());
    let summary = drained(&pipeline).await;
    assert_eq!(summary.inserted, 5);
    assert!(
        pipeline
            .metrics()
            .retries_total(crate::retry::Stage::Receive)
            >= 3
    );
}

// ---------------------------------------------------------------------------------------------
// Systemic failures: the breaker

/// A bad migration: for a while every row is refused alike, while `SELECT 1` answers. No
/// valid message is dead-lettered, readiness says so, nothing more is received than one
/// probe's worth, and once the refusal goes every event is a row, each received at most
/// twice.
#[tokio::test(start_paused = true)]
async fn a_database_that_refuses_every_row_pauses_ingestion_and_dead_letters_nothing() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 50]));
    let settings = Settings {
        drain: false,
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    while sink(&pipeline).rows.lock().unwrap().len() < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink(&pipeline)
        .refuse_every_row
        .store(true, Ordering::SeqCst);
    queue.send(vec![EVENT; 500]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = pipeline.metrics();
    assert_eq!(metrics.writes_paused.get(), 1, "the breaker is open");
    assert_eq!(
        metrics.write_pauses_total(crate::telemetry::metrics::PauseKind::Refused),
        1
    );
    assert_eq!(
        pipeline.context.readiness.check(),
        Err("writes paused: the database refuses them (see the log)")
    );
    let calls = queue.receive_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        queue.receive_calls.load(Ordering::SeqCst),
        calls,
        "while the canary is refused, nothing is received"
    );
    assert!(queue.dead_letters.lock().unwrap().is_empty());

    sink(&pipeline)
        .refuse_every_row
        .store(false, Ordering::SeqCst);
    while queue.remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metrics.writes_paused.get(), 0, "a probe committed: closed");
    assert_eq!(pipeline.context.readiness.check(), Ok(()));
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.inserted, 550, "{summary}");
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    assert!(queue.dead_letters.lock().unwrap().is_empty());
    assert!(
        queue.most_receives_of_one.load(Ordering::SeqCst) <= 2,
        "an outage of any length costs a message at most two receives: {}",
        queue.most_receives_of_one.load(Ordering::SeqCst)
    );
}

/// A rejection that only new rows meet (the canary, a stored row, passes): the probe
/// holds its few messages and writes them again and again, so a ten-minute outage costs
/// each message a receive or two, not one per attempt.
#[tokio::test(start_paused = true)]
async fn a_long_outage_costs_each_message_at_most_two_receives() {
    fn refused(_: &Row) -> bool {
        true
    }
    let sink = FakeSink {
        refuse: Some(refused),
        ..FakeSink::default()
    };
    // A row stored before the fault: the canary writes it again, and passes.
    let stored = login::stream("http://localhost/000000000000/logins", Default::default())
        .transform(
            EVENT,
            &crate::domain::stream::MessageMeta {
                sqs_message_id: "stored",
                original_message_id: None,
                sent_at: chrono::Utc::now(),
            },
            &Keyring::single(KeyId::default(), Masker::new(b"k")),
        )
        .unwrap();
    sink.rows
        .lock()
        .unwrap()
        .insert("stored".to_owned(), stored);
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 100]));
    let settings = Settings {
        drain: false,
        // Every refusal is the database's fault: the probe can never dead-letter.
        poison_per_minute: 0,
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, sink, settings));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(pipeline.metrics().writes_paused.get(), 1);
    assert!(queue.dead_letters.lock().unwrap().is_empty());
    let most = queue.most_receives_of_one.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "ten minutes paused, yet a message was received {most} times"
    );
    assert!(
        pipeline.metrics().write_probes.get() > 50,
        "probes went on: {}",
        pipeline.metrics().write_probes.get()
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(queue.remaining(), 100, "nothing lost");
    assert_eq!(pipeline.context.heartbeat.tracked(), 0, "the probe let go");
    assert_eq!(
        queue.depth().await.unwrap().in_flight,
        0,
        "what the probe held went back at once"
    );
}

/// One poison row alone in its batch: no batch-mate commits, but the canary (a stored row
/// written again) passes, so the table takes rows and the refused one is poison.
#[tokio::test(start_paused = true)]
async fn a_row_refused_alone_is_poison_when_the_canary_passes() {
    fn refused(row: &Row) -> bool {
        row.key().ends_with('1')
    }
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 1]));
    let sink = FakeSink {
        refuse: Some(refused),
        ..FakeSink::default()
    };
    let pipeline = pipeline(&queue, sink, settings());
    assert_eq!(drained(&pipeline).await.inserted, 1);
    queue.send([EVENT]);
    let summary = drained(&pipeline).await;
    assert_eq!(summary.dead_lettered, 1, "{summary}");
    assert_eq!(pipeline.metrics().writes_paused.get(), 0, "no pause");
    let letters = queue.dead_letters.lock().unwrap();
    assert_eq!(letters[0].reason, DeadLetterReason::DatabaseRejected);
    assert!(
        letters[0].detail.contains("SQLSTATE 23514"),
        "{}",
        letters[0].detail
    );
}

/// The same row on an empty table: there is no stored row to try, so no evidence that the
/// table takes any row. The writes pause; when a valid message arrives, the probe writes
/// both, the valid one commits, and the refused one is isolated as poison.
#[tokio::test(start_paused = true)]
async fn a_row_refused_alone_on_an_empty_table_waits_for_a_batch_mate() {
    fn refused(row: &Row) -> bool {
        row.key().ends_with('0')
    }
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 1]));
    let sink = FakeSink {
        refuse: Some(refused),
        ..FakeSink::default()
    };
    let pipeline = Arc::new(pipeline(
        &queue,
        sink,
        Settings {
            drain: false,
            ..settings()
        },
    ));
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(pipeline.metrics().writes_paused.get(), 1);
    assert!(queue.dead_letters.lock().unwrap().is_empty());
    queue.send([EVENT]);
    while queue.remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pipeline.metrics().writes_paused.get(), 0);
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(
        (summary.inserted, summary.dead_lettered),
        (1, 1),
        "{summary}"
    );
}

/// A full disk (53100): busy, so retried, but past the write patience the writes pause
/// instead of holding the batch to its deadline and releasing it over and over.
#[tokio::test(start_paused = true)]
async fn writes_busy_past_their_patience_pause_and_resume_when_the_database_recovers() {
    let queue = Arc::new(FakeQueue::with_bodies(vec![EVENT; 20]));
    let settings = Settings {
        drain: false,
        write_patience: Duration::from_secs(5),
        ..settings()
    };
    let pipeline = Arc::new(pipeline(&queue, FakeSink::default(), settings));
    sink(&pipeline).busy.store(true, Ordering::SeqCst);
    let (shutdown, running) = run_until_shutdown(&pipeline);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let metrics = pipeline.metrics();
    assert_eq!(
        metrics.write_pauses_total(crate::telemetry::metrics::PauseKind::Failing),
        1
    );
    assert_eq!(
        metrics.batches_abandoned.get(),
        0,
        "paused before its deadline"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    sink(&pipeline).busy.store(false, Ordering::SeqCst);
    while queue.remaining() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.inserted, 20, "{summary}");
    assert!(queue.most_receives_of_one.load(Ordering::SeqCst) <= 2);
}

/// The dead letter went to the DLQ, but its record keeps failing, past the batch deadline:
/// the message is still deleted, and never sent a second time.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_whose_record_fails_is_still_acknowledged_and_sent_once() {
    let queue = Arc::new(FakeQueue::with_bodies([GARBAGE]));
    let settings = Settings {
        batch_timeout: Duration::from_secs(5),
        ..settings()
    };
    let pipeline = pipeline(&queue, FakeSink::default(), settings);
    sink(&pipeline)
        .failing_records
        .store(true, Ordering::SeqCst);
    let summary = drained(&pipeline).await;
    assert_eq!(summary.dead_lettered, 1, "{summary}");
    assert_eq!(summary.deleted, 1, "{summary}");
    assert_eq!(queue.dead_letters.lock().unwrap().len(), 1);
    assert_eq!(queue.remaining(), 0);
}
