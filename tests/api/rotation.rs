//! HMAC key rotation with a keyring: the real binary masks with one key, then with a ring
//! whose new key is current; each row records its key's id, and a lookup built from
//! `sqs2pg digest` finds a known value's rows on both sides of the rotation.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const KNOWN_IP: &str = "198.51.100.23";
const NEW_KEY: &str = "rotation-new-key-0123456789abcdef";
const NEW_KEY_ID: &str = "2026-12";
/// Events per phase, of which every third carries [`KNOWN_IP`].
const PER_PHASE: usize = 12;

/// `PER_PHASE` events, every third from the known ip, the others from ips of their own.
fn events(phase: u8) -> Vec<String> {
    (0..PER_PHASE)
        .map(|index| {
            let ip = if index % 3 == 0 {
                KNOWN_IP.to_owned()
            } else {
                format!("10.{phase}.0.{index}")
            };
            SAMPLE.replace("199.172.111.135", &ip)
        })
        .collect()
}

/// The ids of `ids`' messages that carry the known ip (every third, as [`events`] made them).
fn known_ip_ids(ids: &[String]) -> BTreeSet<String> {
    ids.iter().step_by(3).cloned().collect()
}

/// A keyring directory: the old key (the test environment's, id `default`) and the new.
fn keyring_dir(logs: &Logs) -> std::path::PathBuf {
    let dir = logs.file("keyring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("default"), format!("{HMAC_KEY}\n")).unwrap();
    std::fs::write(dir.join(NEW_KEY_ID), NEW_KEY).unwrap();
    dir
}

/// `command` configured with the keyring in `dir`, `current` its current key.
fn with_keyring<'a>(command: &'a mut Command, dir: &Path, current: &str) -> &'a mut Command {
    command
        .env_remove("SQS2PG_HMAC_KEY")
        .env("SQS2PG_HMAC_KEYRING_DIR", dir)
        .env("SQS2PG_HMAC_KEY_ID", current)
}

/// Runs `command` (a `run --drain`) to its end; returns its stderr (JSON log lines).
fn drain_with(logs: &Logs, command: &mut Command, db: &TestDb, queues: &TestQueues) -> String {
    command
        .args(["run", "--drain"])
        .env("SQS2PG_LOG_FORMAT", "json");
    run_env(command, db, queues);
    let output =
        tokio::task::block_in_place(|| Process::output(logs, command, Duration::from_secs(90)));
    assert!(output.status.success(), "{}", text(&output));
    stderr_of(&output)
}

/// The fields of the start-up event that names the keyring.
fn keyring_event(stderr: &str) -> Value {
    let message = "Masking with the current HMAC key; the others serve lookups only.";
    let events: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == message)
        .collect();
    assert_eq!(events.len(), 1, "one keyring event: {stderr}");
    events[0]["fields"].clone()
}

/// `sqs2pg digest` of `value` on stdin, with `args`; its stdout.
fn digest(logs: &Logs, command: &mut Command, value: &str, args: &[&str]) -> String {
    let output = Process::output_with_input(
        logs,
        command.arg("digest").args(args),
        format!("{value}\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// The `(hmac_key_id, hashed_ip)` pairs of `digest --output json`'s keys.
fn pairs(json: &Value) -> (Vec<String>, Vec<String>) {
    json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["key_id"].as_str().unwrap().to_owned(),
                key["digest"].as_str().unwrap().to_owned(),
            )
        })
        .unzip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_mid_stream_keeps_every_row_findable_by_its_key_id() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());

    // Before: the single key of today's configuration (the test environment's), id `default`.
    let before = queues.send(&events(1)).await;
    let stderr = drain_with(&test.logs, &mut sqs2pg_command(), &db, &queues);
    let event = keyring_event(&stderr);
    assert_eq!(
        (&event["current_key_id"], &event["key_ids"]),
        (&Value::from("default"), &Value::from("default"))
    );

    // The rotation: a ring of the old key and a new one, the new one current.
    let dir = keyring_dir(&test.logs);
    let after = queues.send(&events(2)).await;
    let stderr = drain_with(
        &test.logs,
        with_keyring(&mut sqs2pg_command(), &dir, NEW_KEY_ID),
        &db,
        &queues,
    );
    let event = keyring_event(&stderr);
    assert_eq!(
        (&event["current_key_id"], &event["key_ids"]),
        (&Value::from(NEW_KEY_ID), &Value::from("2026-12,default"))
    );
    assert_eq!(db.row_count().await, 2 * PER_PHASE as i64);

    // Each row carries the id of the key that masked it.
    let client = db.client().await;
    let key_of = |ids: &[String]| {
        let ids = ids.to_vec();
        let client = &client;
        async move {
            client
                .query(
                    "SELECT DISTINCT hmac_key_id FROM user_logins WHERE message_id = ANY($1)",
                    &[&ids],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(key_of(&before).await, ["default"]);
    assert_eq!(key_of(&after).await, [NEW_KEY_ID]);
    let digests_of_known_ip: BTreeSet<String> = client
        .query(
            "SELECT DISTINCT hashed_ip FROM user_logins WHERE message_id = ANY($1)",
            &[&[before[0].clone(), after[0].clone()].to_vec()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        digests_of_known_ip.len(),
        2,
        "the rotation changed the known ip's digest: {digests_of_known_ip:?}"
    );

    // A lookup by one digest finds one side only; `sqs2pg digest` gives both.
    let ring = || {
        let mut command = sqs2pg_command();
        with_keyring(&mut command, &dir, NEW_KEY_ID);
        command
    };
    let json: Value = serde_json::from_str(&digest(
        &test.logs,
        &mut ring(),
        KNOWN_IP,
        &["--output", "json", "--sql", "ip"],
    ))
    .unwrap();
    let (key_ids, digests) = pairs(&json);
    assert_eq!(key_ids, [NEW_KEY_ID, "default"]);
    assert_eq!(
        json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["current"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(
        digests.iter().cloned().collect::<BTreeSet<_>>(),
        digests_of_known_ip,
        "the digests are those the rows hold"
    );
    assert_eq!(
        digests[1],
        independent_digests(&test.logs, &[KNOWN_IP.to_owned()])[0],
        "the old key's digest, as Python computes it"
    );
    let found: BTreeSet<String> = client
        .query(
            "SELECT message_id FROM user_logins \
             WHERE (hmac_key_id, hashed_ip) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            &[&key_ids, &digests],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected = known_ip_ids(&before);
    expected.extend(known_ip_ids(&after));
    assert_eq!(expected.len(), 2 * PER_PHASE / 3);
    assert_eq!(
        found, expected,
        "the lookup finds the rows before and after the rotation"
    );

    // The ready-made SQL finds the same rows.
    let sql = json["sql"].as_str().unwrap();
    let found_by_sql: BTreeSet<String> = client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("message_id"))
        .collect();
    assert_eq!(found_by_sql, expected, "{sql}");

    // The text output says the same, one tab-separated line per key.
    let text_output = digest(&test.logs, &mut ring(), KNOWN_IP, &["--output", "text"]);
    let lines: Vec<Vec<&str>> = text_output
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![NEW_KEY_ID, digests[0].as_str(), "current"],
            vec!["default", digests[1].as_str(), "-"],
        ]
    );
}

/// The previous release's pods keep inserting during a rolling upgrade, without the
/// column: their rows get `default`, the id of the single key they mask with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_without_a_key_id_gets_the_default_id() {
    let _test = Test::shared().await;
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO user_logins \
                 (message_id, user_id, device_type, hashed_ip, hashed_device_id, app_version, create_date, sent_at) \
             VALUES ('m-old', 'u', 'ios', repeat('a', 64), repeat('b', 64), '1.0', '2026-01-01', now())",
        )
        .await
        .unwrap();
    let id: String = client
        .query_one("SELECT hmac_key_id FROM user_logins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, "default");
}

/// The lookup SQL `digest --sql` prints is served by the digest column's index (checked
/// with sequential scans disabled, so the planner shows whether it can use the index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_sql_uses_the_digest_index() {
    let test = Test::shared().await;
    let db = TestDb::create().await;
    for (field, index) in [
        ("ip", "user_logins_hashed_ip_idx"),
        ("device_id", "user_logins_hashed_device_id_idx"),
    ] {
        let dir = keyring_dir(&test.logs);
        let mut command = sqs2pg_command();
        let output = digest(
            &test.logs,
            with_keyring(&mut command, &dir, NEW_KEY_ID),
            KNOWN_IP,
            &["--output", "json", "--sql", field],
        );
        let json: Value = serde_json::from_str(&output).unwrap();
        let sql = json["sql"].as_str().unwrap();
        let client = db.client().await;
        client
            .batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{field}: {plan}");
    }
}
