//! The dead-letter queue tools: `dlq inspect` masks PII; `dlq redrive` keeps the original
//! message id, so an ingested message stays deduplicated and poison returns to the DLQ once.
//! The original id and timestamp count only beside a tag sqs2pg wrote: forged ones on a
//! fresh event are ignored and counted. A fair queue's groups survive the DLQ and redrive,
//! and a redrive whose DLQ delete fails says so.

use std::time::Duration;

use crate::helpers::*;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use sqs2pg::domain::envelope::EnvelopeMode;

fn string(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .unwrap()
}

/// The original SentTimestamp of the dead letters [`put_dead_letter`] makes (2020-09-13).
const ORIGINAL_SENT_MS: i64 = 1_600_000_000_000;

/// The tag sqs2pg writes beside an original id and timestamp, under the tests' key.
fn tag_for(original_id: &str, sent_ms: i64, body: &str) -> String {
    let identity = Identity {
        message_id: original_id,
        sent_at: DateTime::from_timestamp_millis(sent_ms).unwrap(),
        body,
    };
    AttributesTag::seal(&test_keyring(), &identity).to_string()
}

/// Puts a message straight into the DLQ as the consumer would have, tag included.
async fn put_dead_letter(queues: &TestQueues, body: &str, original_id: &str, reason: &str) {
    let tag = tag_for(original_id, ORIGINAL_SENT_MS, body);
    put_with_attributes(
        queues,
        body,
        &[
            (attribute::ORIGINAL_MESSAGE_ID, original_id),
            (
                attribute::ORIGINAL_SENT_TIMESTAMP,
                &ORIGINAL_SENT_MS.to_string(),
            ),
            (attribute::ATTRIBUTES_TAG, &tag),
            (attribute::REASON, reason),
            (attribute::DETAIL, "test"),
        ],
    )
    .await;
}

/// Puts a message into the DLQ with exactly these attributes (none: as SQS's redrive would).
async fn put_with_attributes(queues: &TestQueues, body: &str, attributes: &[(&str, &str)]) {
    send_with_attributes(queues, &queues.urls.dlq_url, body, attributes, None).await;
}

/// Sends one message to `queue_url` with exactly these attributes (and a message group, as
/// a fair queue's producer would); its SQS id.
async fn send_with_attributes(
    queues: &TestQueues,
    queue_url: &str,
    body: &str,
    attributes: &[(&str, &str)],
    group_id: Option<&str>,
) -> String {
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id("0")
        .message_body(body)
        .set_message_group_id(group_id.map(str::to_owned));
    for (name, value) in attributes {
        entry = entry.message_attributes(*name, string(value));
    }
    let output = queues
        .client
        .send_message_batch()
        .queue_url(queue_url)
        .entries(entry.build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(output.failed().is_empty(), "{:?}", output.failed());
    output.successful()[0].message_id().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_counts_by_reason_and_masks_pii_without_consuming() {
    let test = Test::shared().await;
    let queues = TestQueues::create().await;
    let leaky = SAMPLE.replace("\"device_type\": \"android\"", "\"device_type\": 7");
    put_dead_letter(&queues, &leaky, "id-1", "wrong_type").await;
    put_dead_letter(&queues, r#"{"ip": "10.9.8.7""#, "id-2", "invalid_json").await;
    put_dead_letter(&queues, GARBAGE, "id-3", "missing_field").await;

    let mut command = sqs2pg_command();
    command
        .args(["dlq", "inspect"])
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url);
    let output = Process::output(&test.logs, &mut command, Duration::from_secs(120));
    let text = text(&output);
    println!("{text}");
    assert!(output.status.success(), "{text}");
    assert!(text.contains("3 messages"), "{text}");
    for reason in ["wrong_type: 1", "invalid_json: 1", "missing_field: 1"] {
        assert!(text.contains(reason), "{reason} missing: {text}");
    }
    for secret in ["199.172.111.135", "593-47-5928", "10.9.8.7"] {
        assert!(
            !text.contains(secret),
            "inspect printed PII {secret}: {text}"
        );
    }
    let masker = sqs2pg::domain::event::Masker::new(HMAC_KEY.as_bytes());
    assert!(
        text.contains(&masker.digest("199.172.111.135")[..16]),
        "the start of the ip's digest is shown for lookup"
    );
    // Inspecting leaves the messages in the DLQ, visible again.
    eventually(
        Duration::from_secs(10),
        "messages visible again",
        || async { queues.sqs_queue_dead_letter_visible().await == 3 },
    )
    .await;

    // The same, as one JSON object: counts, depth and samples, redacted alike.
    command.args(["--output", "json"]);
    let output = Process::output(&test.logs, &mut command, Duration::from_secs(120));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let inspected: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    println!("{inspected:#}");
    assert_eq!(inspected["dlq_url"], queues.urls.dlq_url.as_str());
    assert_eq!(inspected["read"], 3);
    assert_eq!(inspected["complete"], true);
    assert_eq!(
        inspected["tags"],
        serde_json::json!({"verified": 3, "failed": 0, "absent": 0}),
        "each was tagged under the tests' key"
    );
    assert_eq!(
        inspected["depth"],
        serde_json::json!({"visible": 3, "in_flight": 0, "delayed": 0})
    );
    for reason in ["wrong_type", "invalid_json", "missing_field"] {
        assert_eq!(inspected["by_reason"][reason]["count"], 1, "{inspected}");
        let sample = &inspected["by_reason"][reason]["samples"][0];
        assert!(sample["body"].is_string(), "{inspected}");
        assert_eq!(sample["detail"], "test", "{inspected}");
    }
    let sample = inspected["by_reason"]["wrong_type"]["samples"][0]["body"]
        .as_str()
        .unwrap();
    assert!(
        sample.contains(&masker.digest("199.172.111.135")[..16]),
        "{sample}"
    );
    for secret in ["199.172.111.135", "593-47-5928", "10.9.8.7"] {
        assert!(
            !stdout.contains(secret),
            "inspect printed PII {secret}: {stdout}"
        );
    }
}

/// Every shape a raw value can hide in, through the real binary: nothing raw comes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_never_shows_a_raw_value_whatever_the_body() {
    let test = Test::shared().await;
    let queues = TestQueues::create().await;
    let sns = serde_json::json!({
        "Type": "Notification",
        "MessageId": "5f1c7a52-sns-0001",
        "TopicArn": "arn:aws:sns:us-east-1:493817265001:logins",
        "Message": SAMPLE,
        "Timestamp": "2026-12-01T10:00:00.000Z",
    })
    .to_string();
    let eventbridge = serde_json::json!({
        "detail-type": "login", "source": "app.logins", "account": "493817265002",
        "detail": {"ip": "100.64.7.1", "device_id": "EB-DEV-11"},
    })
    .to_string();
    let deep = format!(
        r#"{}{{"ip": "100.64.9.9"}}{}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let huge = format!(
        r#"{{"ip": "100.64.200.1", "pad": "{}"}}"#,
        "x".repeat(200_000)
    );
    let huge_withheld = format!("{} bytes withheld: larger than", huge.len());
    let long = serde_json::to_string(&vec!["100.64.50.5"; 3000]).unwrap();
    // (body, reason attribute) in the DLQ.
    let letters: Vec<(String, Option<&str>)> =
        vec![
        (sns, Some("missing_field")),
        (eventbridge, Some("missing_field")),
        (
            r#"{"data": {"ip": "10.9.8.7", "device_id": "DEV-NESTED-1"}}"#.into(),
            Some("missing_field"),
        ),
        (
            r#"{"IP": "172.16.5.4", "Device_Id": "CASE-DEV-77", "DEVICE_ID": "CASE-DEV-78"}"#
                .into(),
            Some("missing_field"),
        ),
        (
            r#"{"ips": ["192.0.2.44", ["198.51.100.7"]], "devices": [{"device_id": "ARR-DEV-3"}]}"#
                .into(),
            Some("missing_field"),
        ),
        (
            SAMPLE
                .replace(r#""199.172.111.135""#, "3232235777")
                .replace(r#""593-47-5928""#, "8675309"),
            Some("wrong_type"),
        ),
        (
            r#"{"10.20.30.40": "v", "KEY-DEV-9": 1, "ok": {"203.0.113.5": true}}"#.into(),
            Some("missing_field"),
        ),
        ("ip=203.0.113.9 device=RAW-DEV-5".into(), Some("invalid_json")),
        (r#"{"ip": "\ud800 203.0.113.10", "device_id": "ESC-DEV-1"}"#.into(), Some("invalid_json")),
        (r#"{"ip": "203.0.113.11""#.into(), Some("invalid_json")),
        (deep, Some("invalid_json")),
        (huge, Some("invalid_value")),
        (long, Some("not_an_object")),
        (r#""203.0.113.77""#.into(), Some("not_an_object")),
        ("6502530000".into(), Some("not_an_object")),
        (
            r#"{"ip": "203.0.113.12\u0000", "device_id": "NUL-DEV\u0000"}"#.into(),
            Some("invalid_value"),
        ),
        // A reason that is not one of ours is data too; so is a body SQS moved on its own.
        (r#"{"note": "forged"}"#.into(), Some("reason-203.0.113.99")),
        (r#"{"ip": "203.0.113.13", "device_id": "REDRIVE-DEV-4"}"#.into(), None),
    ];
    let secrets = [
        "199.172.111.135",
        "593-47-5928",
        "424cdd21",
        "493817265001",
        "5f1c7a52",
        "Notification",
        "493817265002",
        "100.64.7.1",
        "EB-DEV-11",
        "10.9.8.7",
        "DEV-NESTED-1",
        "172.16.5.4",
        "CASE-DEV-77",
        "CASE-DEV-78",
        "192.0.2.44",
        "198.51.100.7",
        "ARR-DEV-3",
        "3232235777",
        "8675309",
        "10.20.30.40",
        "KEY-DEV-9",
        "203.0.113.5",
        "203.0.113.9",
        "RAW-DEV-5",
        "203.0.113.10",
        "ESC-DEV-1",
        "203.0.113.11",
        "100.64.9.9",
        "100.64.200.1",
        "100.64.50.5",
        "203.0.113.77",
        "6502530000",
        "203.0.113.12",
        "NUL-DEV",
        "203.0.113.99",
        "forged",
        "203.0.113.13",
        "REDRIVE-DEV-4",
    ];
    for (index, (body, reason)) in letters.iter().enumerate() {
        let id = format!("leak-{index}");
        let mut attributes = vec![(attribute::ORIGINAL_MESSAGE_ID, id.as_str())];
        if let Some(reason) = reason {
            attributes.push((attribute::REASON, reason));
            attributes.push((attribute::DETAIL, "field `user_id` is missing or null"));
        }
        put_with_attributes(&queues, body, &attributes).await;
    }

    let total = letters.len() as u64;
    let mut command = sqs2pg_command();
    command
        .args(["dlq", "inspect", "--samples", "50"])
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url);
    let output = Process::output(&test.logs, &mut command, Duration::from_secs(120));
    let text = text(&output);
    println!("{text}");
    assert!(output.status.success(), "{text}");
    for secret in secrets {
        assert!(!text.contains(secret), "inspect printed {secret}: {text}");
    }
    assert!(text.contains(&format!(": {total} messages\n")), "{text}");
    for count in [
        "  missing_field: 6\n",
        "  wrong_type: 1\n",
        "  invalid_json: 4\n",
        "  invalid_value: 2\n",
        "  not_an_object: 3\n",
        "  unrecognized (not one of our codes; withheld): 1\n",
        "  unknown (moved by SQS redrive): 1\n",
    ] {
        assert!(text.contains(count), "{count:?} missing: {text}");
    }
    assert_eq!(
        text.matches("bytes withheld: not JSON").count(),
        4,
        "{text}"
    );
    assert_eq!(text.matches(&huge_withheld).count(), 1, "{text}");
    // What is shown keeps its shape, with digests a key holder can match.
    let masker = sqs2pg::domain::event::Masker::new(HMAC_KEY.as_bytes());
    for value in ["199.172.111.135", "DEV-NESTED-1", "8675309", "KEY-DEV-9"] {
        let digest = format!("hmac:{}", &masker.digest(value)[..16]);
        assert!(text.contains(&digest), "{value}'s digest missing: {text}");
    }
    assert!(text.contains(r#"{"data":{"#), "{text}");
    eventually(
        Duration::from_secs(10),
        "messages visible again",
        || async { queues.sqs_queue_dead_letter_visible().await == total },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_keeps_the_original_id_so_ingested_messages_stay_deduplicated() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    // One valid message is ingested normally...
    let ids = queues.send(&[SAMPLE.to_owned()]).await;
    let first = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(first.inserted, 1);
    // ...and a copy of it sits in the DLQ (say an operator dead-lettered it by hand), next to
    // a poison message and a valid message that was never ingested.
    let other = SAMPLE.replace("424cdd21", "99999999");
    put_dead_letter(&queues, SAMPLE, &ids[0], "database_rejected").await;
    put_dead_letter(&queues, GARBAGE, "poison-original-id", "missing_field").await;
    put_dead_letter(&queues, &other, "never-ingested-id", "database_rejected").await;

    // --reason filters: only the missing_field one moves.
    let redrive = |extra: &[&str]| {
        let mut command = sqs2pg_command();
        command
            .args(["dlq", "redrive"])
            .args(extra)
            .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url);
        Process::output(&test.logs, &mut command, Duration::from_secs(120))
    };
    let output = redrive(&["--reason", "missing_field"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("redriven: 1"), "{}", text(&output));
    // --limit bounds the count.
    let output = redrive(&["--limit", "1"]);
    assert!(text(&output).contains("redriven: 1"), "{}", text(&output));
    let output = redrive(&[]);
    assert!(text(&output).contains("redriven: 1"), "{}", text(&output));
    assert_eq!(queues.sqs_queue_dead_letter_visible().await, 0);

    let second = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    println!("after redrive: {second}");
    assert_eq!(second.received, 3);
    assert_eq!(
        second.duplicates, 1,
        "the already-ingested message is skipped by its original id"
    );
    assert_eq!(second.inserted, 1, "the never-ingested one lands");
    assert_eq!(second.dead_lettered, 1, "the poison goes back to the DLQ");
    assert_eq!(db.row_count().await, 2);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM user_logins WHERE message_id = '{}'",
            ids[0]
        ))
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM user_logins WHERE message_id = 'never-ingested-id'")
            .await,
        1
    );

    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 1, "the poison is in the DLQ once");
    assert_eq!(
        attribute_of(&letters[0], attribute::ORIGINAL_MESSAGE_ID).as_deref(),
        Some("poison-original-id")
    );
    assert_eq!(letters[0].body(), Some(GARBAGE));
}

#[test]
fn an_unknown_reason_is_refused() {
    let test = Test::shared_blocking();
    let output = Process::output(
        &test.logs,
        sqs2pg_command().args([
            "dlq",
            "redrive",
            "--reason",
            "bogus",
            "--queue-url",
            "http://127.0.0.1:1/q",
        ]),
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("unknown dead-letter reason"),
        "{}",
        text(&output)
    );
}

/// The rows of `ids` whose `sent_at` is at or after `since`.
async fn rows_sent_since(db: &TestDb, ids: &[String], since: DateTime<Utc>) -> i64 {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    db.count(&format!(
        "SELECT count(*) FROM user_logins WHERE message_id IN ({list}) AND sent_at >= '{}'",
        since.to_rfc3339()
    ))
    .await
}

/// Whoever can send to the source queue can set `sqs2pg.original_message_id` and
/// `sqs2pg.original_sent_timestamp`. Without a tag that verifies they are ignored: each
/// forged event is keyed by its own SQS id and dated by its own SentTimestamp, so it lands
/// as a row instead of vanishing as a "duplicate" of an existing one, and it is counted
/// and logged by its id, never by the forged values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_attributes_on_a_fresh_event_are_ignored_and_counted() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let ingested = queues.send(&[SAMPLE.to_owned()]).await.remove(0);
    drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(db.row_count().await, 1);

    let started = Utc::now() - chrono::Duration::seconds(60);
    let forged_ms = "1234567890123";
    let event = |n: usize| SAMPLE.replace("424cdd21", &format!("f0{n:06}"));
    // A tag made with a key the consumer does not hold.
    let stranger = sqs2pg::domain::keyring::Keyring::single(
        "retired".parse().unwrap(),
        sqs2pg::domain::event::Masker::new(b"a-key-nobody-here-holds-0123"),
    );
    let foreign_tag = AttributesTag::seal(
        &stranger,
        &Identity {
            message_id: &ingested,
            sent_at: DateTime::from_timestamp_millis(1_234_567_890_123).unwrap(),
            body: &event(2),
        },
    )
    .to_string();
    // A genuine tag, read off another body's dead letter.
    let copied_tag = tag_for(&ingested, 1_234_567_890_123, SAMPLE);
    let zeros = format!("default:{}", "0".repeat(64));
    let cases: Vec<(Vec<(&str, &str)>, Distrust)> = vec![
        (
            vec![
                (attribute::ORIGINAL_MESSAGE_ID, ingested.as_str()),
                (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
            ],
            Distrust::Untagged,
        ),
        (
            vec![
                (attribute::ORIGINAL_MESSAGE_ID, ingested.as_str()),
                (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
                (attribute::ATTRIBUTES_TAG, zeros.as_str()),
            ],
            Distrust::Mismatch,
        ),
        (
            vec![
                (attribute::ORIGINAL_MESSAGE_ID, ingested.as_str()),
                (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
                (attribute::ATTRIBUTES_TAG, foreign_tag.as_str()),
            ],
            Distrust::UnknownKey,
        ),
        (
            vec![
                (attribute::ORIGINAL_MESSAGE_ID, ingested.as_str()),
                (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
                (attribute::ATTRIBUTES_TAG, copied_tag.as_str()),
            ],
            Distrust::Mismatch,
        ),
        (
            vec![(attribute::ATTRIBUTES_TAG, copied_tag.as_str())],
            Distrust::Incomplete,
        ),
        (
            vec![
                (attribute::ORIGINAL_MESSAGE_ID, ingested.as_str()),
                (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
                (attribute::ATTRIBUTES_TAG, "forged"),
            ],
            Distrust::MalformedTag,
        ),
    ];
    let mut ids = Vec::new();
    for (n, (attributes, _)) in cases.iter().enumerate() {
        let url = &queues.urls.queue_url;
        ids.push(send_with_attributes(&queues, url, &event(n), attributes, None).await);
    }
    let pipeline = consumer(queues.sqs_queue(), &db, drain_settings(&queues));
    let summary = drain(&pipeline, Duration::from_secs(60)).await;
    println!("forged: {summary}");
    assert_eq!(
        (summary.inserted, summary.duplicates),
        (cases.len() as u64, 0),
        "none vanished as a duplicate of {ingested}"
    );
    assert_eq!(
        rows_sent_since(&db, &ids, started).await,
        cases.len() as i64,
        "each keyed by its own id and dated by its own SentTimestamp"
    );
    let metrics = pipeline.metrics();
    for (attributes, distrust) in &cases {
        let expected = cases.iter().filter(|(_, d)| d == distrust).count() as u64;
        assert_eq!(
            metrics.untrusted_attributes_total(*distrust),
            expected,
            "{distrust}: {attributes:?}"
        );
    }
    assert_eq!(
        metric_value(metrics, "sqs2pg_untrusted_attributes_total"),
        cases.len() as f64
    );

    // The binary logs one line per message, naming its id and never a forged value.
    let forged_id = "forged-id-7f3a9c";
    let id = send_with_attributes(
        &queues,
        &queues.urls.queue_url,
        &event(99),
        &[
            (attribute::ORIGINAL_MESSAGE_ID, forged_id),
            (attribute::ORIGINAL_SENT_TIMESTAMP, forged_ms),
        ],
        None,
    )
    .await;
    let mut command = sqs2pg_command();
    run_env(&mut command, &db, &queues);
    command.args(["--log-format", "json", "run", "--drain"]);
    let mut run = Process::spawn(&test.logs, "run", &mut command);
    let status = run.exit_within(Duration::from_secs(120)).await;
    assert!(
        status.is_some_and(|status| status.success()),
        "{}",
        run.stderr_tail(20)
    );
    let events = run.log_events(
        "Ignored an original id and timestamp that sqs2pg did not write; the message is keyed and dated as a fresh one.",
    );
    assert_eq!(events.len(), 1, "{}", run.stderr_tail(20));
    assert_eq!(events[0]["fields"]["message_id"], id.as_str());
    assert_eq!(events[0]["fields"]["reason"], "untagged");
    let stderr = run.stderr();
    for forged in [forged_id, forged_ms] {
        assert!(!stderr.contains(forged), "{forged} was logged: {stderr}");
    }
    assert_eq!(rows_sent_since(&db, &[id], started).await, 1);
}

/// The whole round trip of a tag: the consumer writes it when it dead-letters (here, SNS
/// notifications read with envelopes off), redrive carries it, and the consumer (envelopes
/// on again) dates each row by the original SentTimestamp and keys it by the notification's
/// id, the stream's `auto` key, which no redrive changes. The first
/// redrive's DLQ deletes fail: it names those messages, counts none as redriven and exits
/// 1; the next redrive sends them again, and the tag makes the second copies duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_whose_dlq_delete_fails_says_so_and_its_second_send_is_harmless() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let notifications: Vec<String> = (0..4)
        .map(|n| {
            serde_json::json!({
                "Type": "Notification",
                "MessageId": uuid::Uuid::new_v4().to_string(),
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
                "Message": SAMPLE.replace("424cdd21", &format!("e0{n:06}")),
            })
            .to_string()
        })
        .collect();
    let ids = queues.send(&notifications).await;
    let settings = drain_settings(&queues);
    let first = drain(
        &consumer_of(
            queues.sqs_queue(),
            &db,
            settings,
            login_stream(EnvelopeMode::None),
        ),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(first.dead_lettered, 4, "{first}");
    let dead_lettered_by = Utc::now();

    let sqs2pg = |endpoint: &str, args: &[&str]| {
        let mut command = sqs2pg_command();
        command
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
            .env_remove("RUST_LOG")
            .args(args)
            .args(["--output", "json"]);
        let output = tokio::task::block_in_place(|| {
            Process::output(&test.logs, &mut command, Duration::from_secs(120))
        });
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(&output)));
        (output, json)
    };
    let localstack = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let (_, inspected) = sqs2pg(&localstack, &["dlq", "inspect"]);
    assert_eq!(
        inspected["tags"],
        serde_json::json!({"verified": 4, "failed": 0, "absent": 0}),
        "the consumer tagged its dead letters: {inspected}"
    );

    let proxy = SqsProxy::start().await;
    proxy.fail_deletes_on(&queues.urls.dlq_url);
    let (output, redriven) = sqs2pg(proxy.url(), &["dlq", "redrive"]);
    println!("{redriven:#}");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(redriven["redriven"], 0, "nothing deleted, nothing redriven");
    assert_eq!(redriven["complete"], false);
    assert_eq!(redriven["not_taken"], serde_json::json!([]));
    let not_deleted = redriven["not_deleted"].as_array().unwrap();
    assert_eq!(not_deleted.len(), 4, "{redriven}");
    assert!(
        not_deleted
            .iter()
            .all(|unmoved| unmoved["code"] == "InternalError"),
        "{redriven}"
    );
    assert_eq!(proxy.failed_deletes(), 4);
    let stderr = stderr_of(&output);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("4 dead letters sent back but not deleted from the dead-letter queue"),
        "{stderr}"
    );
    assert_eq!(queues.source_total().await, 4, "sent back");
    eventually(
        Duration::from_secs(10),
        "still in the DLQ, visible",
        || async { queues.sqs_queue_dead_letter_visible().await == 4 },
    )
    .await;

    // The next redrive sends them again, and deletes them this time.
    let (output, redriven) = sqs2pg(&localstack, &["dlq", "redrive"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(redriven["redriven"], 4, "{redriven}");
    assert_eq!(redriven["complete"], true);
    assert_eq!(queues.source_total().await, 8, "each one twice");

    let pipeline = consumer(queues.sqs_queue(), &db, drain_settings(&queues));
    let second = drain(&pipeline, Duration::from_secs(60)).await;
    println!("after the redrives: {second}");
    assert_eq!(
        (second.inserted, second.duplicates, second.dead_lettered),
        (4, 4, 0),
        "one row per original message: {second}"
    );
    assert_eq!(db.row_count().await, 4);
    let list = ids
        .iter()
        .zip(&notifications)
        .map(|(id, body)| format!("'{}'", login_key(id, body).unwrap()))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM user_logins WHERE message_id IN ({list}) AND sent_at < '{}'",
            dead_lettered_by.to_rfc3339()
        ))
        .await,
        4,
        "keyed by the notifications' ids, dated by the original SentTimestamps"
    );
    assert_eq!(
        metric_value(pipeline.metrics(), "sqs2pg_untrusted_attributes_total"),
        0.0
    );
}

/// A fair queue is a standard queue whose producers set a MessageGroupId. Its dead letters
/// keep their group, and so do the copies a redrive sends back: here through dead-lettering,
/// redrive and dead-lettering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_queue_s_dead_letters_and_redriven_messages_keep_their_group() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let poison: Vec<(String, String)> = (0..8)
        .map(|n| (format!(r#"{{"poison": {n}}}"#), format!("tenant-{}", n % 3)))
        .collect();
    for (body, group) in &poison {
        let url = &queues.urls.queue_url;
        send_with_attributes(&queues, url, body, &[], Some(group)).await;
    }
    let run = || async {
        drain(
            &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
            Duration::from_secs(60),
        )
        .await
    };
    assert_eq!(run().await.dead_lettered, 8);
    let mut command = sqs2pg_command();
    command
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
        .args(["dlq", "redrive"]);
    let output = tokio::task::block_in_place(|| {
        Process::output(&test.logs, &mut command, Duration::from_secs(120))
    });
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("redriven: 8 "), "{}", text(&output));
    assert_eq!(run().await.dead_lettered, 8, "still poison");

    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 8);
    let kept = letters
        .iter()
        .filter(|letter| {
            let sent = poison
                .iter()
                .find(|(body, _)| Some(body.as_str()) == letter.body())
                .map(|(_, group)| group.as_str());
            let group = letter
                .attributes()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
                .map(String::as_str);
            sent.is_some() && group == sent
        })
        .count();
    println!(
        "dead letters that kept their group: {kept} of {}",
        letters.len()
    );
    assert_eq!(kept, 8);
}
