//! Core ingestion against real LocalStack and PostgreSQL: rows, digests, redeliveries,
//! poison, and a database outage.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::helpers::*;
use sqs2pg::domain::dead_letter::attribute;
use sqs2pg::domain::synthetic::{Recipe, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_events_give_hundred_rows_with_independently_computed_digests() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = generate(Recipe {
        count: 100,
        seed: 1,
        duplicate_share: 0.2,
        malformed_share: 0.0,
    });
    let ids = queues.send(&bodies).await;

    let started = Instant::now();
    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    println!("100 events: {summary}; wall {:?}", started.elapsed());

    assert_eq!(summary.inserted, 100);
    assert_eq!(summary.deleted, 100);
    // Busy time is the part of the run from the first receive to the last batch done.
    assert!(
        summary.busy > Duration::ZERO && summary.busy <= summary.elapsed,
        "busy {:?} of {:?}",
        summary.busy,
        summary.elapsed
    );
    assert_eq!(db.row_count().await, 100);
    assert_eq!(queues.source_total().await, 0);

    let events: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let ips: Vec<String> = events
        .iter()
        .map(|e| e["ip"].as_str().unwrap().to_owned())
        .collect();
    let devices: Vec<String> = events
        .iter()
        .map(|e| e["device_id"].as_str().unwrap().to_owned())
        .collect();
    let (ip_digests, device_digests) = (
        independent_digests(&test.logs, &ips),
        independent_digests(&test.logs, &devices),
    );

    let client = db.client().await;
    let rows = client
        .query("SELECT message_id, user_id, device_type, hashed_ip, hashed_device_id, locale, app_version, create_date::text FROM user_logins", &[])
        .await
        .unwrap();
    let by_id: HashMap<String, tokio_postgres::Row> = rows
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r))
        .collect();
    for (index, id) in ids.iter().enumerate() {
        let row = &by_id[id];
        let event = &events[index];
        assert_eq!(row.get::<_, String>(1), event["user_id"].as_str().unwrap());
        assert_eq!(
            row.get::<_, String>(2),
            event["device_type"].as_str().unwrap()
        );
        assert_eq!(
            row.get::<_, String>(3),
            ip_digests[index],
            "hashed_ip of message {index}"
        );
        assert_eq!(
            row.get::<_, String>(4),
            device_digests[index],
            "hashed_device_id of message {index}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(5).as_deref(),
            event["locale"].as_str(),
            "null locale stays NULL"
        );
        assert_eq!(
            row.get::<_, String>(6),
            event["app_version"].as_str().unwrap()
        );
        assert_eq!(
            row.get::<_, String>(7),
            chrono::Utc::now().date_naive().to_string()
        );
    }
    // Repeated ips give repeated digests, so duplicates stay findable.
    let distinct_ips = ips.iter().collect::<std::collections::HashSet<_>>().len() as i64;
    assert!(distinct_ips < 100, "the recipe repeats ips");
    assert_eq!(
        db.count("SELECT count(DISTINCT hashed_ip) FROM user_logins")
            .await,
        distinct_ips
    );
    assert_eq!(
        db.count("SELECT count(*) FROM user_logins WHERE locale = 'None'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_once_with_its_reason_and_never_blocks_the_queue() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let not_json = r#"{"user_id": "truncated"#.to_owned();
    let bad_ip = SAMPLE.replace("199.172.111.135", "999.0.0.1");
    let bodies = vec![
        SAMPLE.to_owned(),
        GARBAGE.to_owned(),
        not_json.clone(),
        bad_ip.clone(),
    ];
    let ids = queues.send(&bodies).await;

    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    println!("poison: {summary}");
    assert_eq!(
        (summary.inserted, summary.dead_lettered, summary.deleted),
        (1, 3, 4)
    );
    assert_eq!(db.row_count().await, 1);
    assert_eq!(queues.source_total().await, 0);

    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 3);
    let mut seen = HashMap::new();
    for letter in &letters {
        let original = attribute_of(letter, attribute::ORIGINAL_MESSAGE_ID).unwrap();
        seen.insert(original.clone(), letter);
        assert_eq!(
            attribute_of(letter, attribute::SOURCE_QUEUE).as_deref(),
            Some(queues.name.as_str())
        );
        assert!(attribute_of(letter, attribute::FIRST_RECEIVED_AT).is_some());
        let detail = attribute_of(letter, attribute::DETAIL).unwrap();
        assert!(
            !detail.contains("999.0.0.1"),
            "detail leaks the ip: {detail}"
        );
    }
    let expect = |index: usize, body: &str, reason: &str| {
        let letter = seen[&ids[index]];
        assert_eq!(
            letter.body().unwrap(),
            body,
            "the body is forwarded byte for byte"
        );
        assert_eq!(
            attribute_of(letter, attribute::REASON).as_deref(),
            Some(reason)
        );
    };
    expect(1, GARBAGE, "missing_field");
    expect(2, &not_json, "invalid_json");
    expect(3, &bad_ip, "invalid_value");
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_after_its_visibility_expired_gives_one_row() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues.send(&[SAMPLE.to_owned()]).await;
    // The first delete is held past the 1 s visibility timeout and the heartbeat is
    // disabled, so a second loop receives the committed message again before it is deleted.
    let faults = Arc::new(Faults {
        slow_deletes: 1.into(),
        delete_delay: Duration::from_secs(3),
        freeze_visibility: true.into(),
        ..Faults::default()
    });
    let queue = queues.faulty(&faults);
    let mut settings = drain_settings(&queues);
    settings.visibility_timeout = Duration::from_secs(1);
    settings.receivers_max = 2;
    let summary = drain(&consumer(queue, &db, settings), Duration::from_secs(60)).await;
    println!("visibility expired: {summary}");
    assert!(
        summary.received >= 2,
        "the message was received twice: {summary}"
    );
    assert_eq!(summary.inserted, 1);
    assert!(summary.duplicates >= 1);
    assert_eq!(db.row_count().await, 1);
    assert_eq!(queues.source_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delete_brings_the_message_back_and_it_is_skipped_as_a_duplicate() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = generate(Recipe {
        count: 5,
        seed: 2,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    let faults = Arc::new(Faults {
        lose_deletes: 1.into(),
        ..Faults::default()
    });
    let queue = queues.faulty(&faults);
    let mut settings = drain_settings(&queues);
    settings.visibility_timeout = Duration::from_secs(1);
    let summary = drain(&consumer(queue, &db, settings), Duration::from_secs(60)).await;
    let lost = faults.lost_deletes.load(Ordering::SeqCst) as u64;
    println!("lost delete: {summary}; deletes lost: {lost}");
    assert!(lost >= 1);
    assert_eq!(summary.inserted, 5);
    assert_eq!(
        summary.duplicates, lost,
        "every message whose delete was lost came back once"
    );
    assert_eq!(db.row_count().await, 5);
    assert_eq!(queues.source_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_nothing_is_deleted_and_rows_appear_once_it_is_back() {
    let test = Test::shared().await;
    let postgres = PrivatePostgres::start(&test.logs);
    let admin_url = postgres.admin_url();
    let (db, queues) = tokio::join!(TestDb::create_on(&admin_url), TestQueues::create());
    let (bodies, _) = generate(Recipe {
        count: 20,
        seed: 3,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    postgres.stop_server();

    let mut settings = drain_settings(&queues);
    // Shorter than the outage, so only the heartbeat keeps the batches in flight; long
    // enough that a beat delayed on a loaded machine still lands in time.
    settings.visibility_timeout = Duration::from_secs(4);
    // No faults: the wrapper only counts the delete calls the consumer makes.
    let faults = Arc::new(Faults::default());
    let queue = queues.faulty(&faults);
    let consumer = consumer(queue, &db, settings);
    let running = tokio::spawn({
        let consumer = Arc::clone(&consumer);
        async move { drain(&consumer, Duration::from_secs(120)).await }
    });

    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            faults.delete_calls.load(Ordering::SeqCst),
            0,
            "no delete may be attempted while PostgreSQL is down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // SQS agrees: all 20 are still there, visible or in flight. Poll, because LocalStack's
    // receive takes messages off the visible queue before adding them to the in-flight set,
    // without a lock against attribute reads: a read during a receive can miss a few.
    eventually(
        Duration::from_secs(10),
        "SQS to hold all 20 messages",
        || async { queues.source_total().await == 20 },
    )
    .await;
    assert_eq!(
        metric_value(consumer.metrics(), "sqs2pg_messages_deleted_total") as u64,
        0
    );
    assert!(
        consumer
            .metrics()
            .retries_total(sqs2pg::retry::Stage::Write)
            > 0
    );
    // The heartbeat kept the batches in flight through the outage: none was received twice.
    let received_during_outage = consumer.metrics().messages_received();

    postgres.start_server();
    let summary = running.await.unwrap();
    println!("postgres down for {:?}: {summary}", outage.elapsed());
    assert_eq!(summary.inserted, 20);
    assert_eq!(
        summary.duplicates, 0,
        "received during outage: {received_during_outage}"
    );
    assert_eq!(db.row_count().await, 20);
    assert_eq!(queues.source_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_isolated_and_dead_lettered_while_the_rest_commit() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE user_logins ADD CONSTRAINT no_toasters CHECK (device_type <> 'toaster')",
        )
        .await
        .unwrap();
    let (mut bodies, _) = generate(Recipe {
        count: 10,
        seed: 4,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    bodies[6] = SAMPLE.replace("android", "toaster");
    let ids = queues.send(&bodies).await;

    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    println!("database refusal: {summary}");
    assert_eq!((summary.inserted, summary.dead_lettered), (9, 1));
    assert_eq!(db.row_count().await, 9);
    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        attribute_of(&letters[0], attribute::ORIGINAL_MESSAGE_ID).as_deref(),
        Some(ids[6].as_str())
    );
    assert_eq!(
        attribute_of(&letters[0], attribute::REASON).as_deref(),
        Some("database_rejected")
    );
    assert!(
        attribute_of(&letters[0], attribute::DETAIL)
            .unwrap()
            .contains("no_toasters")
    );
}

/// A trigger refuses one row with RAISE (P0001, a SQLSTATE outside classes 22 and 23, which
/// used to be retried forever with its whole batch): that row alone is dead-lettered, its
/// batch-mates commit, and the detail names the SQLSTATE but not the trigger's message,
/// which quotes the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_a_trigger_refuses_is_isolated_and_dead_lettered_alone() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_toasters() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.device_type = 'toaster' THEN \
               RAISE EXCEPTION 'no device of type %', NEW.device_type; \
             END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_toasters BEFORE INSERT ON user_logins \
             FOR EACH ROW EXECUTE FUNCTION refuse_toasters();",
        )
        .await
        .unwrap();
    let (mut bodies, _) = generate(Recipe {
        count: 10,
        seed: 5,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    bodies[3] = SAMPLE.replace("android", "toaster");
    let ids = queues.send(&bodies).await;

    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    println!("trigger refusal: {summary}");
    assert_eq!((summary.inserted, summary.dead_lettered), (9, 1));
    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        attribute_of(&letters[0], attribute::ORIGINAL_MESSAGE_ID).as_deref(),
        Some(ids[3].as_str())
    );
    let detail = attribute_of(&letters[0], attribute::DETAIL).unwrap();
    assert!(detail.contains("SQLSTATE P0001"), "{detail}");
    assert!(
        !detail.contains("toaster"),
        "a value in the detail: {detail}"
    );
}

/// SQS's counts are approximate: a single "empty" reading must not end a drain while
/// messages remain. Here one receive finds nothing and one depth read says "empty" while
/// all 20 messages still wait; the drain must go on until the queue really is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_not_fooled_by_one_empty_reading() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = generate(Recipe {
        count: 20,
        seed: 5,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    let faults = Arc::new(Faults {
        empty_receives: 1.into(),
        falsely_empty_depths: 1.into(),
        ..Faults::default()
    });
    let queue = queues.faulty(&faults);
    let mut settings = drain_settings(&queues);
    settings.receivers_max = 1;
    let summary = drain(&consumer(queue, &db, settings), Duration::from_secs(60)).await;
    println!("false empty reading: {summary}");
    assert_eq!(
        faults.falsely_empty_depths.load(Ordering::SeqCst),
        0,
        "the false reading was taken"
    );
    assert_eq!(summary.inserted, 20);
    assert_eq!(db.row_count().await, 20);
    assert_eq!(queues.source_total().await, 0);
}

/// The oldest-message gauge is the maximum over the receive loops: while one loop is stuck
/// on an old batch (here, behind a table lock), another loop's empty receives must not
/// reset it to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_message_gauge_is_not_hidden_by_another_loops_empty_receive() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues.send(&[SAMPLE.to_owned()]).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the message is now 2 s old

    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut settings = drain_settings(&queues);
    settings.receivers_max = 2;
    let consumer = consumer(queues.sqs_queue(), &db, settings);
    let running = tokio::spawn({
        let consumer = Arc::clone(&consumer);
        async move { drain(&consumer, Duration::from_secs(60)).await }
    });
    let metrics = Arc::clone(consumer.metrics());
    eventually(
        Duration::from_secs(10),
        "the message to be received",
        || {
            let metrics = Arc::clone(&metrics);
            async move { metrics.messages_received() == 1 }
        },
    )
    .await;
    // The other loop polls the empty queue every second meanwhile.
    let mut samples = Vec::new();
    for _ in 0..15 {
        samples.push(metrics.oldest_message_age_seconds());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lock.rollback().await.unwrap();
    let summary = running.await.unwrap();
    println!("oldest-message gauge while one loop was blocked: {samples:?}; {summary}");
    assert!(
        samples.iter().all(|&age| age >= 2),
        "the gauge dropped: {samples:?}"
    );
    assert_eq!(summary.inserted, 1);
}

/// Group commit: one loop gathers consecutive receives into batches of up to
/// `batch_messages`, and never more, and every message still becomes exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_are_gathered_into_batches_no_larger_than_the_cap() {
    let _test = Test::shared().await;
    let (bodies, _) = generate(Recipe {
        count: 200,
        seed: 5,
        duplicate_share: 0.1,
        malformed_share: 0.0,
    });
    for (cap, expect_gathering) in [(25, false), (100, true)] {
        let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
        queues.send(&bodies).await;
        let mut settings = drain_settings(&queues);
        settings.receivers_max = 1;
        settings.batch_messages = cap;
        // Generous, so a busy machine still gathers; the cap is what ends a batch here.
        settings.batch_window = Duration::from_secs(2);
        let consumer = consumer(queues.sqs_queue(), &db, settings);
        let summary = drain(&consumer, Duration::from_secs(60)).await;
        let batches = metric_value(consumer.metrics(), "sqs2pg_batch_size_messages") as u64;
        let largest_possible = batches as f64 * cap as f64;
        println!("cap {cap}: {summary}; {batches} batches");
        assert_eq!(summary.inserted, 200);
        assert_eq!(db.row_count().await, 200);
        // No batch above the cap: 200 messages need at least 200 / cap of them.
        assert!(
            largest_possible >= 200.0,
            "{batches} batches with cap {cap}"
        );
        if expect_gathering {
            // One receive returns at most 10: fewer than 20 batches means they were gathered.
            assert!(
                batches < 20,
                "{batches} batches: receives were not gathered"
            );
        }
    }
}
