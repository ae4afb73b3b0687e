//! Systemic failures, against the real binary, PostgreSQL and LocalStack: a database that
//! answers `SELECT 1` but refuses every write pauses ingestion (the circuit breaker) instead
//! of sending valid messages to the dead-letter queue, or letting SQS move them there itself
//! at maxReceiveCount; `/readyz` says so meanwhile; and once the fault goes every event is
//! one row. Each runs alone: they measure receives and wait on real timeouts.

use std::time::{Duration, Instant};

use crate::chaos::{DeadLetterCopies, Workload, assert_exactly_once, rows_beyond, run};
use crate::helpers::*;

/// `/readyz` and `sqs2pg_writes_paused` of the service on `port`.
async fn readiness(port: u16) -> (Option<u16>, f64) {
    let ready = http_get(&format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|(status, _)| status);
    let paused = match http_get(&format!("http://127.0.0.1:{port}/metrics")).await {
        Some((_, page)) => scraped_value(&page, "sqs2pg_writes_paused").unwrap_or(-1.0),
        None => -1.0,
    };
    (ready, paused)
}

/// Waits until every valid message is a row and the source queue is empty.
async fn all_ingested(db: &TestDb, queues: &TestQueues, work: &Workload, limit: Duration) {
    let expected = work.valid.len() as i64;
    eventually(
        limit,
        "every valid message a row, the queue empty",
        || async { db.row_count().await >= expected && queues.source_total().await == 0 },
    )
    .await;
}

/// A bad migration: for 10 s a CHECK constraint added NOT VALID refuses every new row (the
/// stored rows too, so the canary fails), while events keep arriving. Nothing valid is
/// dead-lettered, `/readyz` answers 503 meanwhile, one ERROR line names the constraint,
/// and every event is a row once the constraint is dropped. maxReceiveCount is 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_that_refuses_every_row_for_a_while_dead_letters_nothing_valid() {
    let test = Test::alone().await;
    let logs = &test.logs;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_with(3));
    let mut work = Workload::send(&queues, 300, 51, 0.02).await;
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut service = run(
        logs,
        "consumer",
        &db,
        &queues,
        &["--metrics-addr", &metrics_addr, "--visibility-timeout", "5"],
    );
    rows_beyond(&db, 99, "the first 100 rows").await;
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE user_logins ADD CONSTRAINT bad_migration \
             CHECK (device_type = 'none of them') NOT VALID",
        )
        .await
        .unwrap();
    let fault = Instant::now();
    work.send_more(&queues, 1_000, 52, 0.02).await;
    eventually(
        Duration::from_secs(30),
        "/readyz 503 and the writes paused",
        || async { readiness(port).await == (Some(503), 1.0) },
    )
    .await;
    let paused_after = fault.elapsed();
    while fault.elapsed() < Duration::from_secs(10) {
        service.assert_running("the refusal");
        assert_eq!(
            readiness(port).await,
            (Some(503), 1.0),
            "not ready while the writes are paused"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows_during = db.row_count().await;
    db.client()
        .await
        .batch_execute("ALTER TABLE user_logins DROP CONSTRAINT bad_migration")
        .await
        .unwrap();
    let dropped = Instant::now();
    all_ingested(&db, &queues, &work, Duration::from_secs(120)).await;
    let recovered_in = dropped.elapsed();
    eventually(Duration::from_secs(10), "/readyz 200 again", || async {
        readiness(port).await == (Some(200), 0.0)
    })
    .await;
    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(service.wait_within(Duration::from_secs(60)).success());

    let letters = DeadLetterCopies::read(&queues).await;
    let paused = service.log_events(
        "Writes fail systemically; ingestion pauses until a probe write commits. Messages go back to the queue, none to the dead-letter queue.",
    );
    println!(
        "bad migration: {} messages ({} poison); paused {paused_after:.1?} after the constraint; \
         {rows_during} rows when it was dropped; all ingested {recovered_in:.1?} after; {} \
         pauses logged; dead-letter queue: {} copies",
        work.sent,
        work.poison.len(),
        paused.len(),
        letters.raw,
    );
    assert_exactly_once(&db, &work).await;
    letters.assert_exactly_the_poison(&work);
    assert_eq!(paused.len(), 1, "one ERROR line for the pause");
    let cause = paused[0]["fields"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("SQLSTATE 23514") && cause.contains("bad_migration"),
        "{cause}"
    );
    assert_eq!(paused[0]["level"], "ERROR");
    assert!(
        !service
            .log_events("A probe write committed; writes and receiving resume.")
            .is_empty()
    );
}

/// The table is renamed away for 30 s, six batch deadlines of 5 s, with a backlog and
/// maxReceiveCount 3: every insert fails with 42P01 while `SELECT 1` answers. Before the
/// breaker, each abandoned batch was released and received again until SQS moved the whole
/// backlog to the dead-letter queue. Now nothing valid reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_path_that_fails_for_many_batch_deadlines_moves_nothing_valid_to_the_dlq() {
    let test = Test::alone().await;
    let logs = &test.logs;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_with(3));
    let work = Workload::send(&queues, 1_000, 53, 0.02).await;
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut service = crate::chaos::start_service(logs, "consumer", |command| {
        run_env(command, &db, &queues);
        command.env("SQS2PG_BATCH_TIMEOUT", "5").args([
            "run",
            "--metrics-addr",
            &metrics_addr,
            "--visibility-timeout",
            "5",
        ]);
    });
    rows_beyond(&db, 49, "the first 50 rows").await;
    let client = db.client().await;
    client
        .batch_execute("ALTER TABLE user_logins RENAME TO user_logins_away")
        .await
        .unwrap();
    let renamed = Instant::now();
    while renamed.elapsed() < Duration::from_secs(30) {
        service.assert_running("the missing table");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (ready, paused) = readiness(port).await;
    client
        .batch_execute("ALTER TABLE user_logins_away RENAME TO user_logins")
        .await
        .unwrap();
    all_ingested(&db, &queues, &work, Duration::from_secs(120)).await;
    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(service.wait_within(Duration::from_secs(60)).success());
    let letters = DeadLetterCopies::read(&queues).await;
    println!(
        "table away 30 s: {} messages ({} poison); readyz {ready:?}, paused {paused}; \
         dead-letter queue: {} copies",
        work.sent,
        work.poison.len(),
        letters.raw,
    );
    assert_eq!((ready, paused), (Some(503), 1.0));
    assert_exactly_once(&db, &work).await;
    letters.assert_exactly_the_poison(&work);
}

/// A storm of transient refusals: for 10 s half of the insert statements fail with a
/// SQLSTATE that retrying clears (serialization failure, deadlock, disk full, out of
/// memory, statement timeout, lock not available, I/O error). They are retried: nothing is
/// lost, nothing valid is dead-lettered, and the writes never pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_transient_refusals_loses_nothing_and_dead_letters_nothing() {
    let test = Test::alone().await;
    let logs = &test.logs;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_with(3));
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE storm (until timestamptz NOT NULL); \
             CREATE FUNCTION storm() RETURNS trigger LANGUAGE plpgsql AS $$ \
             DECLARE codes text[] := ARRAY['40001','40P01','53100','53200','57014','55P03','58030']; \
             BEGIN \
               IF EXISTS (SELECT 1 FROM storm WHERE until > clock_timestamp()) AND random() < 0.5 THEN \
                 RAISE EXCEPTION 'storm' USING ERRCODE = codes[1 + floor(random() * 7)::int]; \
               END IF; \
               RETURN NULL; \
             END $$; \
             CREATE TRIGGER storm BEFORE INSERT ON user_logins \
             FOR EACH STATEMENT EXECUTE FUNCTION storm(); \
             INSERT INTO storm VALUES (clock_timestamp() + interval '10 seconds');",
        )
        .await
        .unwrap();
    let work = Workload::send(&queues, 1_000, 54, 0.02).await;
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut service = run(
        logs,
        "consumer",
        &db,
        &queues,
        &["--metrics-addr", &metrics_addr, "--visibility-timeout", "5"],
    );
    all_ingested(&db, &queues, &work, Duration::from_secs(120)).await;
    let page = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map(|(_, page)| page)
        .unwrap_or_default();
    let retries = scraped_samples(&page)
        .into_iter()
        .filter(|sample| sample.name == "sqs2pg_retries_total")
        .map(|sample| sample.value)
        .sum::<f64>();
    let pauses = scraped_samples(&page)
        .into_iter()
        .filter(|sample| sample.name == "sqs2pg_write_pauses_total")
        .map(|sample| sample.value)
        .sum::<f64>();
    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(service.wait_within(Duration::from_secs(60)).success());
    let letters = DeadLetterCopies::read(&queues).await;
    println!(
        "transient storm: {} messages ({} poison); {retries} retries, {pauses} pauses; \
         dead-letter queue: {} copies",
        work.sent,
        work.poison.len(),
        letters.raw,
    );
    assert!(retries > 0.0, "the storm was met");
    assert_eq!(
        pauses, 0.0,
        "a storm shorter than the write patience pauses nothing"
    );
    assert_exactly_once(&db, &work).await;
    letters.assert_exactly_the_poison(&work);
}
