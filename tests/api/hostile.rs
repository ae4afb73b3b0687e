//! A hostile corpus through the real pipeline (LocalStack SQS, PostgreSQL, the real
//! consumer): every body ends as exactly one row or exactly one dead letter with the
//! expected reason, never both and never neither, and the consumer then still serves
//! normal traffic. The corpus runs bare, with every case as the `Message` of an SNS
//! notification (each must end exactly as the bare case, the dead letter's body being the
//! whole notification), on a FIFO pair, and both. Also: dead letters near SQS's size limit,
//! and dead-letter sends that must be split by bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::helpers::*;
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use serde_json::{Map, Value, json};
use sqs2pg::adapters::sqs::{Queue, ReceivedMessage, SqsQueue};
use sqs2pg::domain::event::{
    MAX_APP_VERSION_CHARS, MAX_DEVICE_ID_CHARS, MAX_DEVICE_TYPE_CHARS, MAX_LOCALE_CHARS,
    MAX_USER_ID_CHARS, Masker,
};
use sqs2pg::domain::synthetic::{Recipe, generate};

/// The text fields of an event (all but `ip` may hold any text).
const TEXT_FIELDS: [&str; 5] = [
    "user_id",
    "device_type",
    "device_id",
    "app_version",
    "locale",
];
const REQUIRED_FIELDS: [&str; 5] = ["user_id", "device_type", "ip", "device_id", "app_version"];

#[derive(Debug, Clone)]
enum Expect {
    Row,
    /// Dead-lettered with this `sqs2pg.reason` (None: no room was left for it) and a
    /// `sqs2pg.detail` containing each of these strings.
    Dead {
        reason: Option<&'static str>,
        detail: Vec<String>,
    },
}

/// How each case's body goes on the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Wrapping {
    /// As it is.
    #[default]
    Bare,
    /// As the `Message` string of an SNS notification (raw message delivery off).
    Sns,
}

impl Wrapping {
    /// What is sent for `body`, the `n`th case. Every notification has the same length
    /// around its `Message`, so the sizes of the cases can be set by the wrapped length.
    fn wrap(self, body: &str, n: usize) -> String {
        match self {
            Self::Bare => body.to_owned(),
            Self::Sns => json!({
                "Type": "Notification",
                "MessageId": uuid::Uuid::from_u128(0x5e5_0000 + n as u128).to_string(),
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:t",
                "Message": body,
                "Timestamp": "2026-12-02T00:00:00.000Z",
                "SignatureVersion": "1",
            })
            .to_string(),
        }
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    /// The event as the consumer validates it (the body, or the `Message` inside it).
    body: String,
    /// What goes on the queue, and what a dead letter must hold byte for byte.
    sent: String,
    expect: Expect,
}

impl Case {
    fn bare(name: impl Into<String>, body: impl Into<String>, expect: Expect) -> Self {
        let body = body.into();
        Self {
            name: name.into(),
            sent: body.clone(),
            body,
            expect,
        }
    }
}

#[derive(Default)]
struct Corpus {
    cases: Vec<Case>,
    wrapping: Wrapping,
}

impl Corpus {
    fn row(&mut self, name: impl Into<String>, body: impl Into<String>) {
        self.push(name, body, Expect::Row);
    }

    fn dead(&mut self, name: impl Into<String>, body: impl Into<String>, reason: &'static str) {
        let expect = Expect::Dead {
            reason: Some(reason),
            detail: Vec::new(),
        };
        self.push(name, body, expect);
    }

    fn push(&mut self, name: impl Into<String>, body: impl Into<String>, expect: Expect) {
        let body = body.into();
        let sent = self.wrapping.wrap(&body, self.cases.len());
        self.cases.push(Case {
            name: name.into(),
            body,
            sent,
            expect,
        });
    }

    /// `prefix` followed by as many `x` as make the message on the queue `total` bytes
    /// (an `x` is one byte, wrapped or not).
    fn filled(&self, prefix: &str, total: usize) -> String {
        let empty = self.wrapping.wrap(prefix, 0).len();
        assert!(total > empty, "{total} bytes is too small");
        let body = format!("{prefix}{}", "x".repeat(total - empty));
        assert_eq!(self.wrapping.wrap(&body, 0).len(), total);
        body
    }

    /// `{"field": "<filler>", ...the sample...}`, sized so that the message on the queue is
    /// exactly `total` bytes.
    fn sized(&self, field: &str, total: usize) -> String {
        let empty = self.wrapping.wrap(&with(field, "".into()), 0).len();
        assert!(total > empty, "{total} bytes is too small");
        let body = with(field, "x".repeat(total - empty).into());
        assert_eq!(self.wrapping.wrap(&body, 0).len(), total);
        body
    }
}

fn sample() -> Map<String, Value> {
    serde_json::from_str(SAMPLE).unwrap()
}

fn with(field: &str, value: Value) -> String {
    let mut event = sample();
    event.insert(field.to_owned(), value);
    Value::Object(event).to_string()
}

fn without(field: &str) -> String {
    let mut event = sample();
    event.remove(field);
    Value::Object(event).to_string()
}

/// An event whose every text field is `text` (cut to the field's limit).
fn all_text_fields(text: &str) -> String {
    let limits = [
        MAX_USER_ID_CHARS,
        MAX_DEVICE_TYPE_CHARS,
        MAX_DEVICE_ID_CHARS,
        MAX_APP_VERSION_CHARS,
        MAX_LOCALE_CHARS,
    ];
    let mut event = sample();
    for (field, limit) in TEXT_FIELDS.into_iter().zip(limits) {
        let value: String = text.chars().take(limit).collect();
        event.insert(field.to_owned(), value.into());
    }
    Value::Object(event).to_string()
}

/// The largest message the queue accepts (LocalStack 4.9 and SQS since 2025: 1 MiB).
async fn max_message_bytes(queues: &TestQueues, url: &str) -> usize {
    queues
        .client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::MaximumMessageSize]
        .parse()
        .unwrap()
}

/// Sets MaximumMessageSize on both queues (as a queue created before 2025 has: 256 KiB).
async fn set_max_message_bytes(queues: &TestQueues, bytes: usize) {
    for url in [&queues.urls.queue_url, &queues.urls.dlq_url] {
        queues
            .client
            .set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::MaximumMessageSize, bytes.to_string())
            .send()
            .await
            .unwrap();
    }
}

/// Sends every body; returns the SQS message ids in order. Large bodies go one per call,
/// as a batch call is capped at the size of one message. On a FIFO queue each has a group
/// and a fresh deduplication id (as `TestQueues::send` gives the small ones).
async fn send_all(queues: &TestQueues, bodies: &[String]) -> Vec<String> {
    let fifo = sqs2pg::adapters::sqs::is_fifo_queue_url(&queues.urls.queue_url);
    let mut ids = vec![String::new(); bodies.len()];
    let mut small = Vec::new();
    for (index, body) in bodies.iter().enumerate() {
        if body.len() > 16 * 1024 {
            let request = queues
                .client
                .send_message()
                .queue_url(&queues.urls.queue_url)
                .message_body(body);
            let request = if fifo {
                request
                    .message_group_id(format!("big{}", index % 4))
                    .message_deduplication_id(uuid::Uuid::new_v4().to_string())
            } else {
                request
            };
            ids[index] = request
                .send()
                .await
                .unwrap_or_else(|error| panic!("send {} bytes: {error:?}", body.len()))
                .message_id
                .unwrap();
        } else {
            small.push(index);
        }
    }
    for chunk in small.chunks(10) {
        let chunk_bodies: Vec<String> = chunk.iter().map(|&i| bodies[i].clone()).collect();
        for (&index, id) in chunk.iter().zip(queues.send(&chunk_bodies).await) {
            ids[index] = id;
        }
    }
    ids
}

/// Receives until exactly `count` messages are in hand (hidden for `visibility`).
async fn receive_exactly(
    queue: &SqsQueue,
    count: usize,
    visibility: Duration,
) -> Vec<ReceivedMessage> {
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "received {} of {count}",
            messages.len()
        );
        messages.extend(
            queue
                .receive(count - messages.len(), Duration::from_secs(1), visibility)
                .await
                .unwrap(),
        );
    }
    assert_eq!(messages.len(), count);
    messages
}

/// The corpus for a queue that accepts messages of up to `max_bytes`, each case sent
/// `wrapping` as said.
fn corpus(max_bytes: usize, wrapping: Wrapping) -> Corpus {
    let mut corpus = Corpus {
        cases: Vec::new(),
        wrapping,
    };

    // Not JSON at all.
    corpus.dead("truncated", &SAMPLE[..SAMPLE.len() / 2], "invalid_json");
    corpus.dead(
        "trailing garbage",
        format!("{SAMPLE} trailing"),
        "invalid_json",
    );
    corpus.dead(
        "a second object",
        format!("{SAMPLE}{SAMPLE}"),
        "invalid_json",
    );
    corpus.dead("single quotes", SAMPLE.replace('"', "'"), "invalid_json");
    corpus.dead("bare word", "login", "invalid_json");
    corpus.dead("whitespace only", "   ", "invalid_json");
    corpus.dead(
        "byte order mark",
        format!("\u{feff}{SAMPLE}"),
        "invalid_json",
    );
    corpus.dead("NaN", SAMPLE.replace("\"2.3.0\"", "NaN"), "invalid_json");

    // JSON, but not an object.
    for (name, body) in [
        ("array", "[1, 2]"),
        ("empty array", "[]"),
        ("null", "null"),
        ("number", "42"),
        ("string", "\"text\""),
        ("true", "true"),
    ] {
        corpus.dead(name, body, "not_an_object");
    }

    // Each required field missing, null, empty, or not a string.
    for field in REQUIRED_FIELDS {
        corpus.dead(format!("{field} missing"), without(field), "missing_field");
        corpus.dead(
            format!("{field} null"),
            with(field, Value::Null),
            "missing_field",
        );
        corpus.dead(
            format!("{field} empty"),
            with(field, "".into()),
            "invalid_value",
        );
        for (kind, value) in [
            ("number", json!(593)),
            ("array", json!(["1.2.3.4"])),
            ("object", json!({"value": "x"})),
            ("bool", json!(true)),
        ] {
            corpus.dead(format!("{field} {kind}"), with(field, value), "wrong_type");
        }
    }
    corpus.row("locale null", with("locale", Value::Null));
    corpus.row("locale absent", without("locale"));
    corpus.dead("locale empty", with("locale", "".into()), "invalid_value");
    corpus.dead("locale number", with("locale", json!(5)), "wrong_type");

    // Addresses.
    for ip in [
        "999.1.1.1".to_owned(),
        "1.2.3".to_owned(),
        "::gg".to_owned(),
        "1.2.3.4 ".to_owned(),
        " 1.2.3.4".to_owned(),
        "localhost".to_owned(),
        "1".repeat(100),
    ] {
        corpus.dead(format!("ip {ip:?}"), with("ip", ip.into()), "invalid_value");
    }
    for ip in ["2001:db8::1", "::ffff:1.2.3.4"] {
        corpus.row(format!("ip {ip}"), with("ip", ip.into()));
    }

    // NUL, which PostgreSQL text cannot hold.
    for field in TEXT_FIELDS.into_iter().chain(["ip"]) {
        let value = if field == "ip" { "1.2.3.4\0" } else { "a\0b" };
        let body = with(field, value.into());
        assert!(body.contains("\\u0000"), "the NUL is escaped in the JSON");
        corpus.dead(format!("{field} with NUL"), body, "invalid_value");
    }

    // Length limits, in characters.
    for (field, limit) in [
        ("user_id", MAX_USER_ID_CHARS),
        ("device_type", MAX_DEVICE_TYPE_CHARS),
        ("device_id", MAX_DEVICE_ID_CHARS),
        ("app_version", MAX_APP_VERSION_CHARS),
        ("locale", MAX_LOCALE_CHARS),
    ] {
        corpus.row(
            format!("{field} at its limit"),
            with(field, "x".repeat(limit).into()),
        );
        corpus.dead(
            format!("{field} one over"),
            with(field, "x".repeat(limit + 1).into()),
            "invalid_value",
        );
        // Four bytes (and two UTF-16 units) each, yet one character.
        corpus.row(
            format!("{field} at its limit in emoji"),
            with(field, "😀".repeat(limit).into()),
        );
        corpus.dead(
            format!("{field} one over in accented letters"),
            with(field, "é".repeat(limit + 1).into()),
            "invalid_value",
        );
    }

    // Nesting deeper than any parser's stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    corpus.dead("deep nesting at the top", deep.clone(), "invalid_json");
    corpus.dead(
        "deep nesting in an extra field",
        SAMPLE.replacen('{', &format!(r#"{{"extra": {deep}, "#), 1),
        "invalid_json",
    );
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    corpus.dead(
        "deep object nesting in an extra field",
        SAMPLE.replacen('{', &format!(r#"{{"extra": {deep_objects}, "#), 1),
        "invalid_json",
    );

    // Text from everywhere, stored verbatim.
    for (name, text) in [
        ("Cyrillic", "Пользователь-Ёжик"),
        ("CJK", "用户标识・ユーザー・사용자"),
        ("emoji", "👩\u{200d}💻🔥🇺🇦"),
        ("combining marks", "e\u{301}a\u{327}\u{30a}Z\u{351}\u{35b}"),
        ("right to left", "\u{202e}مستخدم עברית\u{202c}"),
        ("control characters", "tab\there\nnew\u{7f}"),
    ] {
        corpus.row(format!("{name} in every text field"), all_text_fields(text));
    }

    // SQL is only text.
    for text in [
        "'; DROP TABLE user_logins; --",
        "Robert'); DELETE FROM dead_letters;--",
        "\\' OR 1=1 --",
        "$1",
        "E'\\x00'",
    ] {
        corpus.row(format!("SQL {text:?}"), all_text_fields(text));
    }

    // Duplicate keys: a field we read, given twice, is ambiguous; an unknown one is not.
    for field in sqs2pg::domain::event::FIELDS {
        let value = if field == "ip" { "10.0.0.1" } else { "RU" };
        corpus.push(
            format!("{field} twice"),
            SAMPLE.replacen('{', &format!(r#"{{"{field}": "{value}", "#), 1),
            Expect::Dead {
                reason: Some("invalid_json"),
                detail: vec![format!("`{field}`"), "appears more than once".to_owned()],
            },
        );
    }
    corpus.push(
        "user_id twice, once spelled with an escape",
        SAMPLE.replacen('{', r#"{"user\u005fid": "other", "#, 1),
        Expect::Dead {
            reason: Some("invalid_json"),
            detail: vec!["`user_id`".to_owned(), "appears more than once".to_owned()],
        },
    );
    corpus.row(
        "an unknown field twice",
        SAMPLE.replacen('{', r#"{"extra": 1, "extra": [2], "#, 1),
    );
    corpus.dead(
        "field names are case-sensitive",
        without("user_id").replacen('{', r#"{"User_ID": "u-1", "#, 1),
        "missing_field",
    );

    // Unknown fields are ignored whatever they hold.
    for (kind, value) in [
        ("string", json!("surprise")),
        (
            "object",
            json!({"nested": {"ip": "1.1.1.1", "device_id": 5}}),
        ),
        ("array", json!([1, "two", null, {"three": 3}])),
        ("number", json!(1.5e300)),
        ("null", Value::Null),
    ] {
        corpus.row(format!("unknown {kind} field"), with("extra", value));
    }

    // The real queue's stray message.
    corpus.dead("garbage from the real queue", GARBAGE, "missing_field");

    // Near the size limit: the message fills the queue's limit; a dead letter's attributes
    // must make way, but its body goes byte for byte. Sized by the message on the queue, so
    // in an envelope the event inside is shorter by the envelope's bytes.
    corpus.row("valid, at the size limit", corpus.sized("pad", max_bytes));
    corpus.row(
        "valid, just under the size limit",
        corpus.sized("pad", max_bytes - 1),
    );
    corpus.dead(
        "user_id far too long, leaving room for the key attributes",
        corpus.sized("user_id", max_bytes - 200),
        "invalid_value",
    );
    // Room for the reason and a shortened detail only (not the original id).
    corpus.push(
        "invalid JSON leaving room for the reason only",
        corpus.filled("{\"user_id\": \"", max_bytes - 64),
        Expect::Dead {
            reason: Some("invalid_json"),
            detail: vec!["…".to_owned()],
        },
    );
    corpus.push(
        "invalid JSON at the size limit, no room for any attribute",
        corpus.filled("{\"user_id\": \"", max_bytes),
        Expect::Dead {
            reason: None,
            detail: Vec::new(),
        },
    );
    for case in &corpus.cases {
        assert!(case.sent.len() <= max_bytes, "{}", case.name);
    }
    corpus
}

/// Checks every case against the database and the dead-letter queue: a row case has exactly
/// one row, verbatim, and no dead letter; a dead case exactly one dead letter, with its
/// reason and its body byte for byte, and no row; and nothing else is in either.
async fn check_outcomes(db: &TestDb, queues: &TestQueues, cases: &[Case], ids: &[String]) {
    let client = db.client().await;
    let rows: HashMap<String, tokio_postgres::Row> = client
        .query(
            "SELECT message_id, user_id, device_type, hashed_ip, hashed_device_id, locale, app_version FROM user_logins",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row))
        .collect();
    let letters = queues.dead_letters().await;
    let mut by_original: HashMap<String, Vec<&Message>> = HashMap::new();
    let mut anonymous = Vec::new();
    for letter in &letters {
        match attribute_of(letter, attribute::ORIGINAL_MESSAGE_ID) {
            Some(original) => by_original.entry(original).or_default().push(letter),
            None => anonymous.push(letter),
        }
    }
    let masker = Masker::new(HMAC_KEY.as_bytes());
    let mut matched = 0;
    let mut problems = Vec::new();
    for (case, id) in cases.iter().zip(ids) {
        let mut dead: Vec<&Message> = by_original.get(id).cloned().unwrap_or_default();
        dead.extend(
            anonymous
                .iter()
                .filter(|letter| letter.body() == Some(case.sent.as_str())),
        );
        matched += dead.len();
        // A row is keyed by its SQS id, or by its envelope's id (an SNS notification's).
        let key = login_key(id, &case.sent).unwrap_or_else(|| id.clone());
        let row = rows.get(&key);
        match &case.expect {
            Expect::Row => {
                if row.is_none() || !dead.is_empty() {
                    problems.push(format!(
                        "{}: expected a row and no dead letter; got row: {}, dead letters: {}",
                        case.name,
                        row.is_some(),
                        dead.len()
                    ));
                    continue;
                }
                let row = row.unwrap();
                let event: Value = serde_json::from_str(&case.body).unwrap();
                let text = |field: &str| event[field].as_str().map(str::to_owned);
                for (column, field) in [
                    (1, "user_id"),
                    (2, "device_type"),
                    (5, "locale"),
                    (6, "app_version"),
                ] {
                    let stored: Option<String> = row.get(column);
                    if stored != text(field) {
                        problems.push(format!(
                            "{}: {field} stored as {stored:?}, sent as {:?}",
                            case.name,
                            text(field)
                        ));
                    }
                }
                for (column, field) in [(3, "ip"), (4, "device_id")] {
                    let stored: String = row.get(column);
                    if stored != masker.digest(&text(field).unwrap()) {
                        problems.push(format!("{}: {field} digest differs", case.name));
                    }
                }
            }
            Expect::Dead { reason, detail } => {
                if row.is_some() || dead.len() != 1 {
                    problems.push(format!(
                        "{}: expected one dead letter and no row; got row: {}, dead letters: {}",
                        case.name,
                        row.is_some(),
                        dead.len()
                    ));
                    continue;
                }
                let letter = dead[0];
                if letter.body() != Some(case.sent.as_str()) {
                    problems.push(format!(
                        "{}: the body was not kept byte for byte",
                        case.name
                    ));
                }
                let got = attribute_of(letter, attribute::REASON);
                if got.as_deref() != *reason {
                    problems.push(format!(
                        "{}: reason {got:?}, expected {reason:?}",
                        case.name
                    ));
                }
                let got_detail = attribute_of(letter, attribute::DETAIL).unwrap_or_default();
                for part in detail {
                    if !got_detail.contains(part.as_str()) {
                        problems.push(format!(
                            "{}: detail {got_detail:?} lacks {part:?}",
                            case.name
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases went wrong:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    assert_eq!(matched, letters.len(), "dead letters that match no case");
    let dead_cases = cases
        .iter()
        .filter(|case| matches!(case.expect, Expect::Dead { .. }))
        .count();
    assert_eq!(rows.len(), cases.len() - dead_cases);
    assert_eq!(letters.len(), dead_cases);
    // The tables are intact and the record of dead letters agrees with the queue.
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters").await,
        dead_cases as i64
    );
}

/// The hostile corpus through the real pipeline on `queues`, each case sent `wrapping` as
/// said: every case ends as its one row (verbatim) or its one dead letter (reason, body byte
/// for byte), nothing is stuck, and the same consumer then ingests normal traffic (sent the
/// same way).
async fn hostile_corpus_ends_once_and_normal_traffic_flows(
    db: TestDb,
    queues: TestQueues,
    wrapping: Wrapping,
) {
    let kind = if sqs2pg::adapters::sqs::is_fifo_queue_url(&queues.urls.queue_url) {
        "FIFO"
    } else {
        "standard"
    };
    let label = format!("{kind} queues, {wrapping:?} bodies");
    let max_bytes = max_message_bytes(&queues, &queues.urls.queue_url).await;
    assert_eq!(
        max_message_bytes(&queues, &queues.urls.dlq_url).await,
        max_bytes,
        "setup gives both queues the same limit"
    );
    println!("{label}: queues accept messages of up to {max_bytes} bytes");
    let cases = corpus(max_bytes, wrapping).cases;
    let bodies: Vec<String> = cases.iter().map(|case| case.sent.clone()).collect();
    let started = Instant::now();
    let ids = send_all(&queues, &bodies).await;
    println!(
        "{label}: sent {} cases in {:?}",
        cases.len(),
        started.elapsed()
    );

    let consumer = consumer(queues.sqs_queue(), &db, drain_settings(&queues));
    let summary = drain(&consumer, Duration::from_secs(120)).await;
    println!("{label}: corpus: {summary}");
    assert_eq!(
        queues.source_total().await,
        0,
        "nothing is stuck in the queue"
    );
    check_outcomes(&db, &queues, &cases, &ids).await;
    let dead_cases = cases
        .iter()
        .filter(|case| matches!(case.expect, Expect::Dead { .. }))
        .count() as u64;
    assert_eq!(summary.received, cases.len() as u64);
    assert_eq!(
        summary.received,
        summary.inserted + summary.duplicates + summary.dead_lettered,
        "{summary}"
    );
    assert_eq!(summary.dead_lettered, dead_cases, "{summary}");

    // The same consumer still ingests normal traffic.
    let (normal, _) = generate(Recipe {
        count: 50,
        seed: 11,
        duplicate_share: 0.1,
        malformed_share: 0.0,
    });
    let normal: Vec<String> = normal
        .iter()
        .enumerate()
        .map(|(n, body)| wrapping.wrap(body, 1000 + n))
        .collect();
    let normal_ids = queues.send(&normal).await;
    // Their rows' keys: the SQS ids, or the notifications' ids.
    let normal_ids: Vec<String> = normal_ids
        .iter()
        .zip(&normal)
        .map(|(id, body)| login_key(id, body).expect("normal traffic is valid"))
        .collect();
    let after = drain(&consumer, Duration::from_secs(120)).await;
    println!("{label}: corpus and normal traffic: {after}");
    assert_eq!(after.received, cases.len() as u64 + 50, "{after}");
    assert_eq!(
        after.received,
        after.inserted + after.duplicates + after.dead_lettered,
        "{after}"
    );
    assert_eq!(after.dead_lettered, dead_cases, "{after}");
    let ingested = db
        .client()
        .await
        .query(
            "SELECT count(*) FROM user_logins WHERE message_id = ANY($1)",
            &[&normal_ids],
        )
        .await
        .unwrap()[0]
        .get::<_, i64>(0);
    assert_eq!(ingested, 50, "every normal event became a row");
    println!("{label}: total {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_body_ends_as_one_row_or_one_dead_letter_and_normal_traffic_still_flows() {
    let _test = Test::alone().await; // heavy: megabyte bodies, nesting 100,000 deep
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    hostile_corpus_ends_once_and_normal_traffic_flows(db, queues, Wrapping::Bare).await;
}

/// Every case as the `Message` of an SNS notification ends exactly as the bare case: the
/// same row, or one dead letter with the same reason whose body is the whole notification.
/// Cases near the size limit are sized by the notification, so their event is shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_body_in_an_sns_notification_ends_as_the_bare_body_does() {
    let _test = Test::alone().await; // heavy: megabyte bodies, nesting 100,000 deep
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    hostile_corpus_ends_once_and_normal_traffic_flows(db, queues, Wrapping::Sns).await;
}

/// The corpus on a FIFO pair (spread over message groups, poison among valid events in each
/// group): the same outcomes, and no group is left stuck behind its poison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_body_on_a_fifo_queue_ends_as_on_a_standard_one() {
    let _test = Test::alone().await; // heavy: megabyte bodies, nesting 100,000 deep
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_fifo());
    hostile_corpus_ends_once_and_normal_traffic_flows(db, queues, Wrapping::Bare).await;
}

/// Both at once: SNS notifications on a FIFO pair (an SNS FIFO topic feeds a FIFO queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_body_in_an_sns_notification_on_a_fifo_queue_ends_as_the_bare_body_does() {
    let _test = Test::alone().await; // heavy: megabyte bodies, nesting 100,000 deep
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_fifo());
    hostile_corpus_ends_once_and_normal_traffic_flows(db, queues, Wrapping::Sns).await;
}

/// Queues made before SQS raised its limit keep MaximumMessageSize at 256 KiB, and so does
/// their DLQ: a poison body of nearly 256 KiB leaves little room for the dead letter's
/// attributes. It must still be dead-lettered, body intact, rather than bounce back until
/// SQS moves it without a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_limit_of_a_256_kib_queue_poison_is_still_dead_lettered_once() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let max_bytes = 256 * 1024;
    set_max_message_bytes(&queues, max_bytes).await;
    // The limit is enforced, attributes included.
    let refused = queues
        .client
        .send_message()
        .queue_url(&queues.urls.dlq_url)
        .message_body("x".repeat(max_bytes - 10))
        .message_attributes(
            "a",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("y".repeat(10))
                .build()
                .unwrap(),
        )
        .send()
        .await;
    assert!(refused.is_err(), "a message over the limit is refused");

    let mut corpus = Corpus::default();
    corpus.row("valid, at the size limit", corpus.sized("pad", max_bytes));
    corpus.dead(
        "user_id far too long, just under the limit",
        corpus.sized("user_id", max_bytes - 200),
        "invalid_value",
    );
    corpus.dead(
        "invalid JSON, just under the limit",
        format!("{{\"user_id\": \"{}", "x".repeat(max_bytes - 300)),
        "invalid_json",
    );
    corpus.push(
        "invalid JSON at the size limit",
        format!("{{\"user_id\": \"{}", "x".repeat(max_bytes - 13)),
        Expect::Dead {
            reason: None,
            detail: Vec::new(),
        },
    );
    corpus.row("an ordinary event after them", SAMPLE);
    let cases = corpus.cases;
    let bodies: Vec<String> = cases.iter().map(|case| case.sent.clone()).collect();
    let ids = send_all(&queues, &bodies).await;

    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(30),
    )
    .await;
    println!("256 KiB queues: {summary}");
    assert_eq!(
        queues.source_total().await,
        0,
        "nothing is stuck in the queue"
    );
    check_outcomes(&db, &queues, &cases, &ids).await;
    assert_eq!(
        (summary.received, summary.inserted, summary.dead_lettered),
        (5, 2, 3),
        "each message was handled once: {summary}"
    );
}

/// A poison body of about `bytes` bytes (user_id far over its limit), tagged to tell apart.
fn big_poison(bytes: usize, tag: &str) -> String {
    let body = with("user_id", "u".repeat(bytes).into());
    body.replacen('{', &format!(r#"{{"tag": "{tag}", "#), 1)
}

/// Their sends are several calls, and they run at once (each held 300 ms by the proxy), as a
/// batch's deletes do: one after another, a batch of big poison took a round trip per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_poison_messages_of_200_kb_in_one_batch_are_dead_lettered_in_concurrent_byte_sized_sends()
 {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let bodies: Vec<String> = (0..10)
        .map(|i| big_poison(200_000, &format!("poison-{i}")))
        .collect();
    let ids = send_all(&queues, &bodies).await;
    let proxy = SqsProxy::start().await;
    proxy.delay_sends(Duration::from_millis(300));
    let through_proxy = SqsQueue::new(
        proxy.client(&queues),
        queues.urls.queue_url.clone(),
        queues.urls.dlq_url.clone(),
    );
    let consumer = consumer(through_proxy, &db, drain_settings(&queues));

    let messages = receive_exactly(&queues.sqs_queue(), 10, Duration::from_secs(60)).await;
    let outcome = consumer.process(messages).await;
    println!(
        "{outcome:?}; most sends at once: {}",
        proxy.most_concurrent_sends()
    );
    assert!(
        proxy.most_concurrent_sends() >= 2,
        "the sends of one batch run at once"
    );
    assert_eq!(outcome.dead_lettered.len(), 10, "{outcome:?}");
    assert_eq!(outcome.deleted, 10, "{outcome:?}");

    let sends = proxy.send_batches();
    println!("SendMessageBatch calls (bytes, entries): {sends:?}");
    assert_eq!(sends.iter().map(|(_, entries)| entries).sum::<usize>(), 10);
    assert!(sends.len() >= 2, "10 × 200 KB cannot go in one call");
    for (bytes, _) in &sends {
        assert!(
            *bytes <= 1024 * 1024,
            "a call of {bytes} bytes is over SQS's cap"
        );
    }
    let cases: Vec<Case> = bodies
        .iter()
        .map(|body| {
            let expect = Expect::Dead {
                reason: Some("invalid_value"),
                detail: vec!["`user_id` is longer than".to_owned()],
            };
            Case::bare(&body[..30], body.clone(), expect)
        })
        .collect();
    check_outcomes(&db, &queues, &cases, &ids).await;
}

/// Dead letters too big for one call go in several; when a later call fails after an earlier
/// one went through, the messages of the earlier one are acknowledged (they are in the DLQ)
/// and only the failed ones come back, so nothing is dead-lettered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_send_failing_after_an_earlier_call_went_through_duplicates_nothing() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let bodies = vec![
        big_poison(150_000, "first"),
        big_poison(150_000, "REFUSE-THIS-ONE"),
    ];
    let ids = send_all(&queues, &bodies).await;
    let proxy = SqsProxy::start().await;
    proxy.refuse_first_batch_holding("REFUSE-THIS-ONE");
    let through_proxy = SqsQueue::new(
        proxy.client(&queues),
        queues.urls.queue_url.clone(),
        queues.urls.dlq_url.clone(),
    );
    let consumer = consumer(through_proxy, &db, drain_settings(&queues));

    let visibility = Duration::from_secs(2);
    let mut messages = receive_exactly(&queues.sqs_queue(), 2, visibility).await;
    // The refused one goes in the second call.
    messages.sort_by_key(|message| message.body.contains("REFUSE-THIS-ONE"));
    let first = consumer.process(messages).await;
    println!("first: {first:?}; calls: {:?}", proxy.send_batches());
    assert_eq!(proxy.send_batches().len(), 2, "two calls, one refused");
    assert_eq!(
        (first.dead_lettered.len(), first.deleted),
        (1, 1),
        "the message that went through is acknowledged: {first:?}"
    );

    // The refused one comes back after its visibility timeout and goes through now.
    let again = receive_exactly(&queues.sqs_queue(), 1, Duration::from_secs(60)).await;
    assert!(again[0].body.contains("REFUSE-THIS-ONE"));
    let second = consumer.process(again).await;
    assert_eq!((second.dead_lettered.len(), second.deleted), (1, 1));

    let cases: Vec<Case> = bodies
        .iter()
        .map(|body| {
            let expect = Expect::Dead {
                reason: Some("invalid_value"),
                detail: Vec::new(),
            };
            Case::bare(&body[..30], body.clone(), expect)
        })
        .collect();
    check_outcomes(&db, &queues, &cases, &ids).await;
}
