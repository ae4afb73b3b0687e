//! PII and secrets never leak: not in logs (even with every crate at TRACE, text or JSON),
//! not in /metrics, /healthz or /readyz, not in dead-letter attributes, not in --help, not
//! in start-up errors; and the metrics endpoint listens on loopback unless told otherwise.
//! The traffic of the TRACE runs includes SNS and EventBridge envelopes (valid and poison
//! inside, and broken ones), on a standard pair and on a FIFO pair.
//!
//! Each run uses distinctive raw values, so finding one anywhere is a leak, not a
//! coincidence. (A dead letter's *body* is the original message and holds the raw values
//! by design: redrive re-sends it. It is not checked.)

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use serde_json::{Value, json};
use sqs2pg::domain::event::Masker;

const RAW_IP: &str = "203.0.113.77";
const RAW_IP6: &str = "2001:db8:1eac::77";
const INVALID_IP: &str = "203.0.113.999";
const RAW_DEVICE: &str = "LEAKCHECK-DEVICE-9f3a";
const KEY: &str = "LEAKCHECK-KEY-0123456789abcdef";
/// A key of the ring that is not current: it masks nothing, yet must not leak either.
const OLD_KEY: &str = "LEAKCHECK-OLDKEY-5a7b0123456789";
const KEY_ID: &str = "leak-2";
const DB_PASSWORD: &str = "LEAKCHECK-PW-7c1e";
const AWS_SECRET: &str = "LEAKCHECK-AWS-SECRET-55d0";

/// Everything that must never appear outside a dead letter's body.
const SECRETS: [&str; 8] = [
    RAW_IP,
    RAW_IP6,
    INVALID_IP,
    RAW_DEVICE,
    KEY,
    OLD_KEY,
    DB_PASSWORD,
    AWS_SECRET,
];

/// Fails listing every secret found in `haystack` (with some context around the first hit).
fn assert_no_secrets(place: &str, haystack: &str) {
    let found: Vec<String> = SECRETS
        .iter()
        .filter_map(|secret| {
            let at = haystack.find(secret)?;
            let mut from = at.saturating_sub(300);
            while !haystack.is_char_boundary(from) {
                from -= 1;
            }
            let mut to = (at + secret.len() + 100).min(haystack.len());
            while !haystack.is_char_boundary(to) {
                to += 1;
            }
            Some(format!(
                "{secret:?} ({} times), first in: …{}…",
                haystack.matches(secret).count(),
                &haystack[from..to]
            ))
        })
        .collect();
    assert!(found.is_empty(), "{place} leaks:\n{}", found.join("\n\n"));
}

/// `url` with `password` set in its user info.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("a user in the URL");
    let user = userinfo.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

/// A connection string for `db` that carries `DB_PASSWORD`. The test cluster trusts local
/// connections, so the password is accepted and ignored; on a cluster that checks passwords,
/// a role with that password is made.
async fn password_url(db: &TestDb) -> String {
    let url = with_password(&db.url, DB_PASSWORD);
    if tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_ok()
    {
        return url;
    }
    let role = unique("leakcheck");
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}';
             GRANT ALL ON SCHEMA public TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .expect("create a role with a password");
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').unwrap().1;
    let url = format!("{scheme}://{role}:{DB_PASSWORD}@{host}");
    let _authenticated = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect with the password");
    url
}

fn event(ip: Value, device_id: Value) -> String {
    let mut event: serde_json::Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
    event.insert("ip".into(), ip);
    event.insert("device_id".into(), device_id);
    Value::Object(event).to_string()
}

/// `message` as the `Message` of an SNS notification (with a raw value in its `Subject`
/// too, which is part of the body and must not leak either).
fn sns(message: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
        "Subject": format!("login from {RAW_IP}"),
        "Message": message,
        "Timestamp": "2026-12-02T00:00:00.000Z",
        "SignatureVersion": "1",
    })
    .to_string()
}

/// `detail` (JSON text) as the `detail` of an EventBridge event.
fn eventbridge(detail: &str) -> String {
    format!(
        r#"{{"version": "0", "id": "{}", "detail-type": "UserLoggedIn", "source": "com.example.auth", "account": "000000000000", "time": "2026-12-02T00:00:00Z", "region": "us-east-1", "resources": ["{RAW_DEVICE}"], "detail": {detail}}}"#,
        uuid::Uuid::new_v4()
    )
}

/// Valid events and poison whose rejection path meets the raw values, bare and in SNS and
/// EventBridge envelopes (valid events inside, poison inside, and broken envelopes).
fn leak_bodies() -> (Vec<String>, Vec<String>) {
    let valid = vec![
        event(RAW_IP.into(), RAW_DEVICE.into()),
        event(RAW_IP6.into(), RAW_DEVICE.into()),
        event(RAW_IP.into(), format!("{RAW_DEVICE}-2").into()),
        sns(&event(RAW_IP.into(), format!("{RAW_DEVICE}-3").into())),
        sns(&event(RAW_IP6.into(), RAW_DEVICE.into())),
        eventbridge(&event(RAW_IP.into(), format!("{RAW_DEVICE}-4").into())),
    ];
    let poison = vec![
        event(INVALID_IP.into(), RAW_DEVICE.into()),
        event(format!("{RAW_IP} ").into(), RAW_DEVICE.into()),
        event(format!("{RAW_IP}\0").into(), RAW_DEVICE.into()),
        event(RAW_IP.into(), RAW_DEVICE.repeat(20).into()),
        event(RAW_IP.into(), json!({ "id": RAW_DEVICE })),
        event(RAW_IP.into(), json!([RAW_DEVICE])),
        event(RAW_IP.into(), RAW_DEVICE.into()).replacen(
            '{',
            &format!(r#"{{"ip": "{RAW_IP6}", "#),
            1,
        ),
        format!(r#"{{"ip": "{RAW_IP}", "device_id": "{RAW_DEVICE}"#),
        format!(r#"{{"ip": "{RAW_IP}", "device_id": "{RAW_DEVICE}"}}"#),
        format!(r#""{RAW_IP} {RAW_DEVICE}""#),
        format!(r#"['{RAW_IP}', '{RAW_DEVICE}']"#),
        // Poison inside an SNS notification: each rejection of the event, as above.
        sns(&event(INVALID_IP.into(), RAW_DEVICE.into())),
        sns(&event(RAW_IP.into(), json!([RAW_DEVICE]))),
        sns(&format!(
            r#"{{"ip": "{RAW_IP}", "device_id": "{RAW_DEVICE}"#
        )),
        sns(&format!(r#"{RAW_IP} {RAW_DEVICE}"#)),
        sns(&event(RAW_IP.into(), RAW_DEVICE.into()).replacen(
            '{',
            &format!(r#"{{"device_id": "{RAW_DEVICE}-x", "#),
            1,
        )),
        // Broken SNS notifications: a `Message` that is not a string, a `Message` twice.
        json!({
            "Type": "Notification",
            "MessageId": uuid::Uuid::new_v4().to_string(),
            "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
            "Message": {"ip": RAW_IP, "device_id": RAW_DEVICE},
        })
        .to_string(),
        sns(&event(RAW_IP.into(), RAW_DEVICE.into())).replacen(
            '{',
            &format!(r#"{{"Message": "{RAW_IP} {RAW_DEVICE}", "#),
            1,
        ),
        // Poison inside an EventBridge event, and one without `detail`.
        eventbridge(&event(format!("{RAW_IP} ").into(), RAW_DEVICE.into())),
        format!(
            r#"{{"detail-type": "UserLoggedIn", "source": "com.example.auth", "resources": ["{RAW_IP}", "{RAW_DEVICE}"]}}"#
        ),
    ];
    (valid, poison)
}

/// How many of the valid bodies carry `RAW_IP` (each gives a row with its digest).
fn valid_with_raw_ip(valid: &[String]) -> i64 {
    valid
        .iter()
        .filter(|body| {
            let event = sqs2pg::domain::envelope::unwrap(body, Default::default()).unwrap();
            serde_json::from_str::<Value>(&event.body).unwrap()["ip"] == RAW_IP
        })
        .count() as i64
}

/// A keyring directory in `logs`: `KEY` as `KEY_ID` and `OLD_KEY` as `leak-1`.
fn leak_keyring(logs: &Logs) -> std::path::PathBuf {
    let dir = logs.file("keyring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(KEY_ID), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.join("leak-1"), OLD_KEY).unwrap();
    dir
}

/// Which keys a leak run masks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// `KEY` alone, from SQS2PG_HMAC_KEY.
    Single,
    /// A ring of `KEY` (current) and `OLD_KEY`, from SQS2PG_HMAC_KEYRING_DIR.
    Ring,
}

/// Runs `sqs2pg run --drain` at `rust_log` in `format` over valid events and poison holding
/// the distinctive values, scraping the endpoints while it runs; then checks that no secret
/// is in its stdout, stderr, endpoints, dead-letter attributes or dead-letter record.
async fn run_and_check_for_leaks(
    logs: &Logs,
    format: &str,
    rust_log: &str,
    fifo: bool,
    keys: Keys,
) {
    let queues = async {
        if fifo {
            TestQueues::create_fifo().await
        } else {
            TestQueues::create().await
        }
    };
    let (db, queues) = tokio::join!(TestDb::create(), queues);
    let database_url = password_url(&db).await;
    let (valid, poison) = leak_bodies();
    let mut bodies = valid.clone();
    bodies.extend(poison.iter().cloned());
    queues.send(&bodies).await;
    // One more, delayed, keeps the drain running while the endpoints are scraped.
    let delay = 8;
    let delayed = event(RAW_IP.into(), RAW_DEVICE.into());
    if fifo {
        // A FIFO queue has no per-message delay, only the queue's: set it for this send.
        set_queue_delay(&queues, delay).await;
        queues
            .client
            .send_message()
            .queue_url(&queues.urls.queue_url)
            .message_body(delayed)
            .message_group_id("delayed")
            .message_deduplication_id(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .unwrap();
        set_queue_delay(&queues, 0).await;
    } else {
        queues
            .client
            .send_message()
            .queue_url(&queues.urls.queue_url)
            .message_body(delayed)
            .delay_seconds(delay)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(queues.depth().await.delayed, 1, "one message is delayed");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = sqs2pg_command();
    command
        .args([
            "run",
            "--drain",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("SQS2PG_LOG_FORMAT", format)
        .env("RUST_LOG", rust_log);
    match keys {
        Keys::Single => command.env("SQS2PG_HMAC_KEY", KEY),
        Keys::Ring => command
            .env_remove("SQS2PG_HMAC_KEY")
            .env("SQS2PG_HMAC_KEYRING_DIR", leak_keyring(logs))
            .env("SQS2PG_HMAC_KEY_ID", KEY_ID),
    };
    run_env(&mut command, &db, &queues);
    command.env("DATABASE_URL", &database_url);
    let started = Instant::now();
    let mut child = Process::spawn(logs, "run", &mut command);

    // Scrape once everything but the delayed message is processed.
    let mut pages = Vec::new();
    loop {
        if let Some((200, page)) = http_get(&format!("{base}/metrics")).await
            && scraped_value(&page, "sqs2pg_messages_received_total")
                .is_some_and(|received| received >= bodies.len() as f64)
        {
            pages.push(("/metrics", page));
            break;
        }
        assert!(
            child.exited().is_none() && started.elapsed() < Duration::from_secs(30),
            "sqs2pg exited or took too long before the endpoints were scraped; stderr:\n{}",
            &child.stderr().chars().take(3000).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/healthz", "/readyz"] {
        let (status, page) = http_get(&format!("{base}{path}")).await.expect(path);
        assert_eq!(status, 200, "{path}: {page}");
        pages.push((path, page));
    }
    let status = tokio::task::block_in_place(|| child.wait_within(Duration::from_secs(60)));
    let (stdout, stderr) = (child.stdout(), child.stderr());
    assert!(
        status.success(),
        "{stdout}{}",
        &stderr[..stderr.len().min(3000)]
    );
    println!(
        "{format} at {rust_log}{}: {} bytes of logs in {:?}; {}",
        if fifo { ", FIFO queues" } else { "" },
        stderr.len(),
        started.elapsed(),
        stdout.trim()
    );

    // The run did what it should, at the level asked for: otherwise this proves nothing.
    assert_eq!(db.row_count().await, valid.len() as i64 + 1);
    // (On a FIFO DLQ this read also empties it.)
    let letters = queues.dead_letters().await;
    assert_eq!(letters.len(), poison.len());
    let mut bodies_in_dlq: Vec<&str> = letters.iter().filter_map(|letter| letter.body()).collect();
    let mut expected_bodies: Vec<&str> = poison.iter().map(String::as_str).collect();
    bodies_in_dlq.sort_unstable();
    expected_bodies.sort_unstable();
    assert!(
        bodies_in_dlq == expected_bodies,
        "each poison body, enveloped or not, is in the DLQ once, byte for byte"
    );
    if fifo {
        for letter in &letters {
            let group = letter
                .attributes()
                .and_then(|attributes| {
                    attributes.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                })
                .map(String::as_str);
            assert!(
                group.is_some_and(|group| group.starts_with('g')),
                "a FIFO dead letter keeps the group it was sent in: {group:?}"
            );
        }
    }
    let reasons: HashSet<String> = letters
        .iter()
        .filter_map(|letter| attribute_of(letter, sqs2pg::domain::dead_letter::attribute::REASON))
        .collect();
    assert!(
        reasons.contains("invalid_envelope") && reasons.contains("invalid_json"),
        "broken envelopes and poison inside them were dead-lettered: {reasons:?}"
    );
    let trace_marker = if format == "json" {
        r#""level":"TRACE""#
    } else {
        "TRACE"
    };
    assert!(
        stderr.contains(trace_marker) && stderr.contains("aws_smithy_runtime"),
        "the SDK logged at TRACE"
    );
    assert!(stderr.contains("ReceiveMessage") && stderr.contains("SendMessageBatch"));
    assert!(
        stderr.contains("tokio_postgres"),
        "the database client logged"
    );
    assert!(
        stderr.contains("Dead-lettered a poison message."),
        "the rejection path logged"
    );

    assert_no_secrets("stdout", &stdout);
    assert_no_secrets("stderr", &stderr);
    for (path, page) in &pages {
        assert_no_secrets(path, page);
    }
    for letter in &letters {
        for (name, value) in letter.message_attributes().into_iter().flatten() {
            assert_no_secrets(
                &format!("dead-letter attribute {name}"),
                &format!("{name}={value:?}"),
            );
        }
        // The system attributes too (on FIFO: the group id the dead letter kept).
        for (name, value) in letter.attributes().into_iter().flatten() {
            assert_no_secrets(
                &format!("dead-letter system attribute {name}"),
                &format!("{name}={value}"),
            );
        }
    }
    let record = db
        .client()
        .await
        .query("SELECT row_to_json(d)::text FROM dead_letters d", &[])
        .await
        .unwrap();
    assert_eq!(record.len(), poison.len());
    for row in record {
        assert_no_secrets("the dead_letters table", row.get(0));
    }
    // Rows hold digests made with the (current) key, never the raw values.
    let masker = Masker::new(KEY.as_bytes());
    let key_id = match keys {
        Keys::Single => "default",
        Keys::Ring => KEY_ID,
    };
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM user_logins WHERE hashed_ip = '{}' AND hmac_key_id = '{key_id}'",
            masker.digest(RAW_IP)
        ))
        .await,
        valid_with_raw_ip(&valid) + 1
    );
}

/// Sets the DelaySeconds of the source queue.
async fn set_queue_delay(queues: &TestQueues, seconds: i32) {
    queues
        .client
        .set_queue_attributes()
        .queue_url(&queues.urls.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::DelaySeconds,
            seconds.to_string(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaks_with_every_crate_logging_at_trace_in_text() {
    let test = Test::alone().await; // heavy: every crate logging at TRACE
    run_and_check_for_leaks(&test.logs, "text", "trace", false, Keys::Ring).await;
}

/// The same traffic on a FIFO pair: dead letters keep their group and carry a
/// deduplication id; none of it, nor anything logged on the way, holds a raw value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaks_with_every_crate_logging_at_trace_on_a_fifo_queue() {
    let test = Test::alone().await; // heavy: every crate logging at TRACE
    run_and_check_for_leaks(&test.logs, "text", "trace", true, Keys::Single).await;
}

/// The most specific directives for the SDK's payload-logging modules must not lift the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaks_with_every_crate_logging_at_trace_in_json() {
    let test = Test::alone().await; // heavy: every crate logging at TRACE
    run_and_check_for_leaks(
        &test.logs,
        "json",
        "trace,aws_smithy_runtime=trace,aws_smithy_runtime::client::orchestrator=trace,aws_smithy_runtime::client::orchestrator::http=trace",
        false,
        Keys::Ring,
    )
    .await;
}

#[test]
fn help_never_shows_the_database_password_or_the_key() {
    let test = Test::shared_blocking();
    let url = format!("postgres://sqs2pg:{DB_PASSWORD}@db.internal:5432/logins");
    for args in [
        &["--help"][..],
        &["-h"],
        &["help", "run"],
        &["run", "--help"],
        &["run", "-h"],
        &["migrate", "--help"],
        &["setup", "--help"],
        &["send", "--help"],
        &["dlq", "--help"],
        &["dlq", "inspect", "--help"],
        &["dlq", "redrive", "--help"],
        &["digest", "--help"],
    ] {
        let output = Process::output(
            &test.logs,
            sqs2pg_command()
                .args(args)
                .env("DATABASE_URL", &url)
                .env("SQS2PG_HMAC_KEY", KEY)
                .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            Duration::from_secs(10),
        );
        let help = text(&output);
        assert!(output.status.success(), "{args:?}: {help}");
        assert_no_secrets(&format!("sqs2pg {}", args.join(" ")), &help);
        // Not vacuous: the help does show the settings, just not their values.
        if matches!(args, ["run", _] | ["help", "run"] | ["migrate", _]) {
            assert!(help.contains("DATABASE_URL"), "{args:?} names the variable");
        }
        if matches!(
            args,
            ["run", _] | ["help", "run"] | ["dlq", "inspect", _] | ["digest", _]
        ) {
            assert!(
                help.contains("SQS2PG_HMAC_KEY"),
                "{args:?} names the variable"
            );
        }
    }
}

/// `sqs2pg run` with only the settings given (nothing inherited from the test's environment).
fn bare() -> Command {
    let mut command = bare_sqs2pg_command();
    command
        .env("AWS_REGION", "us-east-1")
        .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/db")
        .arg("run");
    command
}

/// Runs `command`, which must fail within a few seconds; returns its output.
fn fails_fast(logs: &Logs, command: &mut Command, what: &str) -> String {
    let started = Instant::now();
    let output = Process::output(logs, command, Duration::from_secs(10));
    let text = text(&output);
    assert!(!output.status.success(), "{what} was accepted: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what} took {:?} to fail",
        started.elapsed()
    );
    println!("{what}: {}", text.trim());
    text
}

#[test]
fn start_up_errors_name_the_setting_and_never_echo_the_key() {
    let test = Test::shared_blocking();
    let message = fails_fast(&test.logs, &mut bare(), "no key");
    for name in [
        "SQS2PG_HMAC_KEY",
        "SQS2PG_HMAC_KEY_FILE",
        "SQS2PG_HMAC_KEYRING_DIR",
    ] {
        assert!(message.contains(name), "{name} is named: {message}");
    }

    let short = &KEY[..15];
    let message = fails_fast(
        &test.logs,
        bare().env("SQS2PG_HMAC_KEY", short),
        "a 15-byte key",
    );
    assert!(message.contains("SQS2PG_HMAC_KEY"), "{message}");
    assert!(
        message.contains("16 bytes"),
        "the minimum is named: {message}"
    );
    assert!(!message.contains(short), "the key was echoed: {message}");

    let dir = std::env::temp_dir().join(unique("sqs2pg-keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let short_file = dir.join("short.key");
    std::fs::write(&short_file, format!("{short}\n")).unwrap();
    let message = fails_fast(
        &test.logs,
        bare().env("SQS2PG_HMAC_KEY_FILE", &short_file),
        "a file with a 15-byte key",
    );
    assert!(message.contains("SQS2PG_HMAC_KEY_FILE"), "{message}");
    assert!(message.contains("16 bytes"), "{message}");
    assert!(!message.contains(short), "the key was echoed: {message}");

    // A keyring: a short key is named by its id, never shown; several keys need a current one.
    let ring = dir.join("ring");
    std::fs::create_dir_all(&ring).unwrap();
    std::fs::write(ring.join("k-old"), OLD_KEY).unwrap();
    std::fs::write(ring.join("k-short"), format!("{short}\n")).unwrap();
    let message = fails_fast(
        &test.logs,
        bare()
            .env("SQS2PG_HMAC_KEYRING_DIR", &ring)
            .env("SQS2PG_HMAC_KEY_ID", "k-old"),
        "a keyring with a 15-byte key",
    );
    assert!(
        message.contains("key k-short") && message.contains("16 bytes"),
        "{message}"
    );
    assert_no_secrets("the short-key error", &message);
    assert!(!message.contains(short), "the key was echoed: {message}");
    std::fs::remove_file(ring.join("k-short")).unwrap();
    std::fs::write(ring.join("k-new"), KEY).unwrap();
    let message = fails_fast(
        &test.logs,
        bare().env("SQS2PG_HMAC_KEYRING_DIR", &ring),
        "a keyring of two keys, none named current",
    );
    assert!(
        message.contains("SQS2PG_HMAC_KEY_ID") && message.contains("k-new, k-old"),
        "{message}"
    );
    assert_no_secrets("the no-current-key error", &message);
    let message = fails_fast(
        &test.logs,
        bare()
            .env("SQS2PG_HMAC_KEYRING_DIR", &ring)
            .env("SQS2PG_HMAC_KEY", KEY),
        "a keyring and a key",
    );
    assert!(
        message.contains("--hmac-keyring-dir") && message.contains("--hmac-key"),
        "{message}"
    );
    assert_no_secrets("the conflict error", &message);

    for path in [dir.join("missing.key"), dir.clone()] {
        let message = fails_fast(
            &test.logs,
            bare().env("SQS2PG_HMAC_KEY_FILE", &path),
            "an unreadable key file",
        );
        assert!(message.contains("SQS2PG_HMAC_KEY_FILE"), "{message}");
        assert!(
            message.contains(&path.display().to_string()),
            "the path is named: {message}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_is_used_in_place_of_the_variable() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues.send(&[SAMPLE.to_owned()]).await;
    let path = std::env::temp_dir().join(unique("sqs2pg-key"));
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let mut command = sqs2pg_command();
    command
        .args(["run", "--drain"])
        .env_remove("SQS2PG_HMAC_KEY")
        .env("SQS2PG_HMAC_KEY_FILE", &path);
    run_env(&mut command, &db, &queues);
    let output = tokio::task::block_in_place(|| {
        Process::output(&test.logs, &mut command, Duration::from_secs(60))
    });
    std::fs::remove_file(&path).unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let digest: String = db
        .client()
        .await
        .query_one("SELECT hashed_ip FROM user_logins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        digest,
        Masker::new(KEY.as_bytes()).digest("199.172.111.135"),
        "the file's key, without its newline, masks the ip"
    );
}

#[test]
fn database_url_errors_never_echo_the_password() {
    let test = Test::shared_blocking();
    let message = fails_fast(
        &test.logs,
        bare().env("SQS2PG_HMAC_KEY", KEY).env(
            "DATABASE_URL",
            format!("postgres://user:{DB_PASSWORD}@host:notaport/db"),
        ),
        "an invalid DATABASE_URL",
    );
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert_no_secrets("the invalid-URL error", &message);
}

/// Start-up retries the database for a minute; what it logs meanwhile (at TRACE, so the
/// database client's own logs are in) must not hold the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_retried_without_logging_the_password() {
    let test = Test::shared().await;
    let port = free_port();
    let mut command = sqs2pg_command();
    command
        .arg("run")
        .env("SQS2PG_HMAC_KEY", KEY)
        .env(
            "DATABASE_URL",
            format!("postgres://user:{DB_PASSWORD}@127.0.0.1:{port}/db"),
        )
        .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
        .env("RUST_LOG", "trace");
    let started = Instant::now();
    let mut child = Process::spawn(&test.logs, "run", &mut command);
    eventually(Duration::from_secs(20), "a few seconds of retries", || {
        let retries = child
            .stderr()
            .matches("Transient failure; retrying.")
            .count();
        let elapsed = started.elapsed();
        async move { retries >= 2 && elapsed >= Duration::from_secs(3) }
    })
    .await;
    assert!(child.exited().is_none(), "still retrying, not given up");
    child.kill();
    let (stdout, stderr) = (child.stdout(), child.stderr());
    println!(
        "{:?} of retries: {} bytes of logs; the last retry: {}",
        started.elapsed(),
        stderr.len(),
        stderr
            .lines()
            .rfind(|line| line.contains("Transient failure"))
            .unwrap_or_default()
    );
    assert_no_secrets("stdout", &stdout);
    assert_no_secrets("stderr", &stderr);
}

/// Listening sockets of process `pid` on `port`, from /proc/net/tcp and /proc/net/tcp6.
fn listeners(pid: u32, port: u16) -> Vec<IpAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.ok()?.path()).ok()?;
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(contents) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in contents.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields[1], fields[3], fields[9]);
            let (address, local_port) = local.split_once(':').unwrap();
            if state != "0A"
                || u16::from_str_radix(local_port, 16).unwrap() != port
                || !inodes.contains(inode)
            {
                continue;
            }
            // The kernel prints each 32-bit word of the address in host byte order.
            let words: Vec<[u8; 4]> = (0..address.len() / 8)
                .map(|i| {
                    u32::from_str_radix(&address[i * 8..i * 8 + 8], 16)
                        .unwrap()
                        .to_ne_bytes()
                })
                .collect();
            found.push(match words.as_slice() {
                [word] => IpAddr::V4(Ipv4Addr::from(*word)),
                _ => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(words.concat()).unwrap(),
                )),
            });
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_listens_on_loopback_by_default() {
    // Alone: any `sqs2pg run` of another test without SQS2PG_METRICS_ADDR binds this port.
    let test = Test::alone().await;
    let help = text(&Process::output(
        &test.logs,
        sqs2pg_command().args(["run", "--help"]),
        Duration::from_secs(10),
    ));
    assert!(
        help.contains("[default: 127.0.0.1:9898]"),
        "run --help shows the loopback default: {help}"
    );

    const PORT: u16 = 9898;
    if let Err(error) = std::net::TcpListener::bind(("0.0.0.0", PORT)) {
        println!("SKIPPED the listening check: port {PORT} is taken on this machine ({error})");
        return;
    }
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut command = sqs2pg_command();
    command
        .arg("run")
        .env_remove("SQS2PG_METRICS_ADDR")
        .env("SQS2PG_WAIT_TIME", "1");
    run_env(&mut command, &db, &queues);
    let mut child = Process::spawn(&test.logs, "run", &mut command);
    eventually(Duration::from_secs(30), "/healthz on port 9898", || async {
        matches!(
            http_get(&format!("http://127.0.0.1:{PORT}/healthz")).await,
            Some((200, _))
        )
    })
    .await;
    let bound = listeners(child.id(), PORT);
    println!("sqs2pg listens on port {PORT} at {bound:?}");
    child.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| child.wait_within(Duration::from_secs(30)));
    assert!(status.success(), "{}", child.stderr());
    assert!(!bound.is_empty(), "the listener was found in /proc/net");
    assert!(
        bound.iter().all(IpAddr::is_loopback),
        "the default address is loopback only, not {bound:?}"
    );
}

/// `sqs2pg digest` at TRACE, in text and JSON, with the value on stdin and as an argument:
/// neither the value nor any key of the ring is in its output or its logs, and its stdout
/// is the digests (and SQL made of them) and nothing else. Its errors do not quote the value.
#[test]
fn digest_never_shows_the_value_or_a_key() {
    let test = Test::shared_blocking();
    let ring = leak_keyring(&test.logs);
    let command = |args: &[&str]| {
        let mut command = bare_sqs2pg_command();
        command
            .env("SQS2PG_HMAC_KEYRING_DIR", &ring)
            .env("SQS2PG_HMAC_KEY_ID", KEY_ID)
            .env("RUST_LOG", "trace")
            .arg("digest")
            .args(args);
        command
    };
    let expected = [
        (KEY_ID, Masker::new(KEY.as_bytes()).digest(RAW_IP)),
        ("leak-1", Masker::new(OLD_KEY.as_bytes()).digest(RAW_IP)),
    ];
    for format in ["text", "json"] {
        for log_format in ["text", "json"] {
            let on_stdin = Process::output_with_input(
                &test.logs,
                command(&["--output", format, "--sql", "ip"]).env("SQS2PG_LOG_FORMAT", log_format),
                format!("{RAW_IP}\n").as_bytes(),
                Duration::from_secs(10),
            );
            let as_argument = Process::output(
                &test.logs,
                command(&["--output", format, "--sql", "ip", RAW_IP])
                    .env("SQS2PG_LOG_FORMAT", log_format),
                Duration::from_secs(10),
            );
            for output in [on_stdin, as_argument] {
                assert!(output.status.success(), "{}", text(&output));
                let stdout = String::from_utf8(output.stdout.clone()).unwrap();
                assert_no_secrets("digest's stdout", &stdout);
                assert_no_secrets("digest's stderr", &stderr_of(&output));
                // Not vacuous: the digests are there, and only they, the ids and the SQL.
                let mut rest = stdout.clone();
                for (id, digest) in &expected {
                    assert!(stdout.contains(digest), "{stdout}");
                    rest = rest.replace(digest, "").replace(id, "");
                }
                let allowed =
                    |c: char| c.is_ascii_alphanumeric() || " \t\n\"'{}[]:,()*;_-".contains(c);
                assert!(rest.chars().all(allowed), "unexpected output: {stdout}");
                if format == "text" {
                    assert_eq!(stdout.lines().count(), 3, "two keys and the SQL: {stdout}");
                }
            }
        }
    }
    // Errors about the value say what is wrong with it, never what it is.
    // Two lines, and a value that is not UTF-8.
    for input in [
        format!("{RAW_IP}\n{RAW_DEVICE}\n").into_bytes(),
        [RAW_IP.as_bytes(), b"\xff"].concat(),
    ] {
        let output = Process::output_with_input(
            &test.logs,
            &mut command(&[]),
            &input,
            Duration::from_secs(10),
        );
        assert!(!output.status.success(), "{}", text(&output));
        assert_no_secrets("digest's error", &text(&output));
    }
    // Two values as arguments: refused by digest itself, naming neither.
    let output = Process::output(
        &test.logs,
        &mut command(&[RAW_IP, RAW_DEVICE]),
        Duration::from_secs(10),
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("several values"),
        "{}",
        text(&output)
    );
    assert_no_secrets("digest's error", &text(&output));
}
