//! The dead-letter queue tools: `dlq inspect` masks PII; `dlq redrive` keeps the original
//! message id, so an ingested message stays deduplicated and poison returns to the DLQ once.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use common::*;
use sqs2pg::dead_letter::attribute;

fn string(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .unwrap()
}

/// Puts a message straight into the DLQ as the consumer would have.
async fn put_dead_letter(queues: &TestQueues, body: &str, original_id: &str, reason: &str) {
    queues
        .client
        .send_message_batch()
        .queue_url(&queues.urls.dlq_url)
        .entries(
            SendMessageBatchRequestEntry::builder()
                .id("0")
                .message_body(body)
                .message_attributes(attribute::ORIGINAL_MESSAGE_ID, string(original_id))
                .message_attributes(attribute::REASON, string(reason))
                .message_attributes(attribute::DETAIL, string("test"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_counts_by_reason_and_masks_pii_without_consuming() {
    let queues = TestQueues::create().await;
    let leaky = SAMPLE.replace("\"device_type\": \"android\"", "\"device_type\": 7");
    put_dead_letter(&queues, &leaky, "id-1", "wrong_type").await;
    put_dead_letter(&queues, r#"{"ip": "10.9.8.7""#, "id-2", "invalid_json").await;
    put_dead_letter(&queues, GARBAGE, "id-3", "missing_field").await;

    let mut command = sqs2pg_command();
    command
        .args(["dlq", "inspect"])
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url);
    let output = output_within(&mut command, Duration::from_secs(120));
    let text = output_text(&output);
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
    let masker = sqs2pg::event::Masker::new(HMAC_KEY.as_bytes());
    assert!(
        text.contains(&masker.digest("199.172.111.135")),
        "the ip's digest is shown for lookup"
    );
    // Inspecting leaves the messages in the DLQ, visible again.
    eventually(
        Duration::from_secs(10),
        "messages visible again",
        || async { queues.sqs_queue_dead_letter_visible().await == 3 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_keeps_the_original_id_so_ingested_messages_stay_deduplicated() {
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
        output_within(&mut command, Duration::from_secs(120))
    };
    let output = redrive(&["--reason", "missing_field"]);
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(
        output_text(&output).contains("redriven: 1"),
        "{}",
        output_text(&output)
    );
    // --limit bounds the count.
    let output = redrive(&["--limit", "1"]);
    assert!(
        output_text(&output).contains("redriven: 1"),
        "{}",
        output_text(&output)
    );
    let output = redrive(&[]);
    assert!(
        output_text(&output).contains("redriven: 1"),
        "{}",
        output_text(&output)
    );
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
    let output = sqs2pg_command()
        .args([
            "dlq",
            "redrive",
            "--reason",
            "bogus",
            "--queue-url",
            "http://127.0.0.1:1/q",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output_text(&output).contains("unknown dead-letter reason"),
        "{}",
        output_text(&output)
    );
}
