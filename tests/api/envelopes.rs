//! Events that reach the queue inside an envelope, as they do on AWS: through an SNS topic
//! the queue subscribes to (raw message delivery off, LocalStack's real SNS), and as
//! EventBridge events. Each valid event inside becomes its row; poison inside an envelope is
//! dead-lettered with the whole original body, byte for byte, and a reason that says where
//! it failed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::helpers::*;
use sqs2pg::domain::envelope::EnvelopeMode;
use sqs2pg::domain::event::Masker;

/// A valid event whose ip and device id are unique to `n`, so each row can be traced.
fn event(n: usize) -> serde_json::Value {
    serde_json::json!({
        "user_id": format!("user-{n}"),
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": format!("10.20.{}.{}", n / 250, n % 250),
        "locale": if n.is_multiple_of(3) { serde_json::Value::Null } else { "RU".into() },
        "device_id": format!("dev-{n}"),
    })
}

async fn sns_client() -> aws_sdk_sns::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_sns::Client::new(&config)
}

/// The rows' user ids with their hashed ip, for comparing with what was published.
async fn rows(db: &TestDb) -> HashMap<String, String> {
    db.client()
        .await
        .query("SELECT user_id, hashed_ip FROM user_logins", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_to_an_sns_topic_land_once_and_enveloped_poison_keeps_its_envelope() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let sns = sns_client().await;
    let topic_arn = sns
        .create_topic()
        .name(unique("topic"))
        .send()
        .await
        .expect("CreateTopic (LocalStack needs SERVICES=sqs,sns and moto-ext)")
        .topic_arn
        .unwrap();
    let queue_arn = queues
        .client
        .get_queue_attributes()
        .queue_url(&queues.urls.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .expect("Subscribe");

    let valid = 200;
    let mut published = Vec::new();
    for n in 0..valid {
        published.push(event(n).to_string());
    }
    let poison = [
        ("not json at all", "invalid_json"),
        (
            r#"{"app_version": "1", "device_type": "ios", "ip": "10.0.0.1", "locale": null, "device_id": "d"}"#,
            "missing_field",
        ),
        (
            r#"{"user_id": "u", "app_version": "1", "device_type": "ios", "ip": 7, "locale": null, "device_id": "d"}"#,
            "wrong_type",
        ),
    ];
    published.extend(poison.iter().map(|(body, _)| (*body).to_owned()));
    let publishes = published
        .iter()
        .map(|message| sns.publish().topic_arn(&topic_arn).message(message).send());
    for result in futures::future::join_all(publishes).await {
        result.expect("Publish");
    }
    eventually(
        Duration::from_secs(30),
        "every notification queued",
        || async { queues.source_total().await as usize == published.len() },
    )
    .await;

    let consumer = consumer(queues.sqs_queue(), &db, drain_settings(&queues));
    let summary = drain(&consumer, Duration::from_secs(120)).await;
    println!("sns fan-out: {} published; {summary:?}", published.len());

    let masker = Masker::new(HMAC_KEY.as_bytes());
    let rows = rows(&db).await;
    assert_eq!(rows.len(), valid, "one row per valid event");
    for n in 0..valid {
        let ip = event(n)["ip"].as_str().unwrap().to_owned();
        assert_eq!(
            rows.get(&format!("user-{n}")),
            Some(&masker.digest(&ip)),
            "event {n}'s row, its ip masked"
        );
    }
    let letters = queues.dead_letters().await;
    assert_eq!(
        letters.len(),
        poison.len(),
        "each poison message dead-lettered once"
    );
    let mut reasons = HashSet::new();
    for letter in &letters {
        let body = letter.body().unwrap();
        let envelope: serde_json::Value = serde_json::from_str(body).expect("the whole envelope");
        assert_eq!(envelope["Type"], "Notification", "{body}");
        assert_eq!(envelope["TopicArn"], topic_arn.as_str());
        let message = envelope["Message"].as_str().unwrap();
        let (_, reason) = poison
            .iter()
            .find(|(published, _)| *published == message)
            .expect("a published poison message");
        assert_eq!(
            attribute_of(letter, attribute::REASON).as_deref(),
            Some(*reason)
        );
        let detail = attribute_of(letter, attribute::DETAIL).unwrap_or_default();
        assert!(
            detail.contains("Message"),
            "the detail says where: {detail}"
        );
        reasons.insert(*reason);
    }
    assert_eq!(reasons.len(), poison.len());
    assert_eq!(queues.source_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_events_land_once_and_a_broken_envelope_is_dead_lettered_as_such() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let wrap = |detail: serde_json::Value| {
        serde_json::json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "UserLoggedIn",
            "source": "com.example.auth",
            "account": "000000000000",
            "time": "2026-12-02T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        })
        .to_string()
    };
    let mut bodies: Vec<String> = (0..30).map(|n| wrap(event(n))).collect();
    let broken = r#"{"version": "0", "detail-type": "UserLoggedIn", "source": "com.example.auth"}"#;
    bodies.push(broken.to_owned());
    queues.send(&bodies).await;

    let consumer = consumer(queues.sqs_queue(), &db, drain_settings(&queues));
    let summary = drain(&consumer, Duration::from_secs(60)).await;
    println!("eventbridge: {} bodies; {summary:?}", bodies.len());
    assert_eq!(rows(&db).await.len(), 30);
    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body(), Some(broken), "byte for byte");
    assert_eq!(
        attribute_of(&letters[0], attribute::REASON).as_deref(),
        Some("invalid_envelope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_envelopes_off_an_sns_notification_is_poison() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let notification = serde_json::json!({
        "Type": "Notification",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
        "Message": event(1).to_string(),
    })
    .to_string();
    queues.send(&[notification, event(2).to_string()]).await;
    let settings = drain_settings(&queues);
    let consumer = consumer_of(
        queues.sqs_queue(),
        &db,
        settings,
        login_stream(EnvelopeMode::None),
    );
    drain(&consumer, Duration::from_secs(60)).await;
    assert_eq!(rows(&db).await.len(), 1, "only the bare event");
    let letters = queues.dead_letters().await;
    assert_eq!(
        attribute_of(&letters[0], attribute::REASON).as_deref(),
        Some("missing_field")
    );
}
