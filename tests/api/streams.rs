//! Streams end to end, against the real binary, PostgreSQL and LocalStack: a stream file
//! with two streams run by one process, each exactly once into its own table; an event that
//! SNS or EventBridge delivers twice, one row; the tables checked against the file before
//! anything is received, created and evolved by `setup`, printed by `schema ddl`; and a bad
//! stream file refused with its file, line and column.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use sqs2pg::domain::stream::{Lookups, compile, login};
use sqs2pg::domain::synthetic::{Recipe, generate, orders};

/// The checkout's `streams/` folder: the shipped stream files and the orders schema.
fn shipped(name: &str) -> PathBuf {
    repo().join("streams").join(name)
}

/// A stream file in the test's folder, with the orders schema beside it.
fn stream_file(logs: &Logs, text: &str) -> PathBuf {
    // By the name the stream files give it, beside them.
    std::fs::copy(
        shipped("orders.schema.json"),
        logs.dir().join("orders.schema.json"),
    )
    .unwrap();
    let path = logs.file("streams.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The login and orders streams in one file, as shipped.
fn both_streams() -> String {
    let logins = std::fs::read_to_string(shipped("logins.toml")).unwrap();
    let orders = std::fs::read_to_string(shipped("orders.toml")).unwrap();
    format!("{logins}\n{orders}")
}

/// `sqs2pg <args>` with `file` as the stream file, `db`, and the queues' URLs in the
/// variables the shipped files read.
fn with_streams(
    command: &mut Command,
    file: &Path,
    db: &TestDb,
    logins: &TestQueues,
    orders: &TestQueues,
) {
    command
        .env("SQS2PG_STREAMS", file)
        .env("DATABASE_URL", &db.url)
        .env("SQS2PG_QUEUE_URL", &logins.urls.queue_url)
        .env("ORDERS_QUEUE_URL", &orders.urls.queue_url)
        .env("SQS2PG_OUTPUT", "json");
}

fn setup_tables(logs: &Logs, file: &Path, db: &TestDb) -> std::process::Output {
    let mut command = sqs2pg_command();
    command
        .env("DATABASE_URL", &db.url)
        .env("SQS2PG_OUTPUT", "text")
        .arg("setup")
        .arg("--streams")
        .arg(file);
    Process::output(logs, &mut command, Duration::from_secs(60))
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.count(sql).await
}

/// Two streams, two queues, two tables, one process: each valid event of each is one row,
/// each poison message is dead-lettered to its own stream's DLQ, and the summary gives both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_in_one_process_each_write_every_event_once_into_their_own_table() {
    let test = Test::shared().await;
    let (db, logins, order_queues) =
        tokio::join!(TestDb::create(), TestQueues::create(), TestQueues::create());
    let file = stream_file(&test.logs, &both_streams());
    let setup = tokio::task::block_in_place(|| setup_tables(&test.logs, &file, &db));
    assert!(setup.status.success(), "{}", text(&setup));
    assert!(
        String::from_utf8_lossy(&setup.stdout).contains("stream orders: created table orders"),
        "{}",
        text(&setup)
    );

    let (login_bodies, login_poison) = generate(Recipe {
        count: 300,
        seed: 11,
        duplicate_share: 0.1,
        malformed_share: 0.02,
    });
    let (order_bodies, order_poison) = orders(400, 11);
    // Each order sent twice: the producer's own event id keys the row.
    let twice: Vec<String> = order_bodies.iter().chain(&order_bodies).cloned().collect();
    tokio::join!(logins.send(&login_bodies), order_queues.send(&twice));

    let output = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        with_streams(&mut command, &file, &db, &logins, &order_queues);
        command.args(["run", "--drain"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(180))
    });
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    println!("two streams: {summary}");

    let valid_logins = 300 - login_poison as i64;
    let valid_orders = (400 - order_poison) as i64;
    assert_eq!(
        count(&db, "SELECT count(*) FROM user_logins").await,
        valid_logins
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT message_id) FROM user_logins").await,
        valid_logins
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM orders").await,
        valid_orders
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT event_id) FROM orders").await,
        valid_orders
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM orders WHERE hashed_email !~ '^[0-9a-f]{64}$'"
        )
        .await,
        0,
        "the masked column holds only digests"
    );
    let streams = &summary["streams"];
    assert_eq!(streams["logins"]["inserted"], valid_logins);
    assert_eq!(streams["orders"]["inserted"], valid_orders);
    assert_eq!(
        streams["orders"]["duplicates"], valid_orders,
        "the second copy of each order is skipped"
    );
    assert_eq!(logins.dead_letters().await.len() as u64, login_poison);
    // Each poison order was sent twice: two copies, each dead-lettered.
    assert_eq!(order_queues.dead_letters().await.len(), 2 * order_poison);
    assert_eq!(logins.source_total().await, 0);
    assert_eq!(order_queues.source_total().await, 0);

    // `status` shows each stream: its rows, its dead letters.
    let status = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        with_streams(&mut command, &file, &db, &logins, &order_queues);
        command.arg("status");
        Process::output(&test.logs, &mut command, Duration::from_secs(60))
    });
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status)));
    for (name, rows) in [("logins", valid_logins), ("orders", valid_orders)] {
        assert_eq!(
            status["streams"][name]["rows"]["last_hour"], rows,
            "{status:#}"
        );
    }
}

/// SNS and EventBridge deliver at least once, and producers retry: 100 notifications and
/// 100 EventBridge events, each arriving as two SQS messages with the same SNS `MessageId`
/// or EventBridge `id`. With the default key (`auto`: the envelope's id) they are 200 rows;
/// keyed by the SQS id, as before streams, they would be 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_in_an_envelope_is_one_row() {
    let _test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (events, _) = generate(Recipe {
        count: 200,
        seed: 21,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    let mut bodies = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let body = if n % 2 == 0 {
            serde_json::json!({
                "Type": "Notification",
                "MessageId": uuid::Uuid::new_v4().to_string(),
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
                "Message": event,
            })
        } else {
            serde_json::json!({
                "version": "0",
                "id": uuid::Uuid::new_v4().to_string(),
                "detail-type": "login",
                "source": "app.logins",
                "account": "000000000000",
                "time": "2026-12-07T10:00:00Z",
                "region": "us-east-1",
                "resources": [],
                "detail": serde_json::from_str::<serde_json::Value>(event).unwrap(),
            })
        }
        .to_string();
        bodies.push(body.clone());
        bodies.push(body);
    }
    queues.send(&bodies).await;
    let summary = drain(
        &consumer(queues.sqs_queue(), &db, drain_settings(&queues)),
        Duration::from_secs(120),
    )
    .await;
    println!("delivered twice: {summary}");
    assert_eq!(db.row_count().await, 200, "one row per event");
    assert_eq!(
        (summary.inserted, summary.duplicates),
        (200, 200),
        "{summary}"
    );

    // The same deliveries keyed by the SQS id, as before streams: two rows an event.
    let (db, queues_again) = tokio::join!(TestDb::create(), TestQueues::create());
    queues_again.send(&bodies).await;
    let by_sqs_id = login::FILE.replace("key = \"auto\"", "key = \"sqs_message_id\"");
    let env = |_: &str| Some(queues_again.urls.queue_url.clone());
    let no_schema = |_: &str| Err("none".to_owned());
    let stream = compile(
        &by_sqs_id,
        "logins-by-sqs-id.toml",
        &Lookups {
            env: &env,
            schema: &no_schema,
        },
    )
    .unwrap()
    .remove(0);
    drain(
        &consumer_of(
            queues_again.sqs_queue(),
            &db,
            drain_settings(&queues_again),
            std::sync::Arc::new(stream),
        ),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        db.row_count().await,
        400,
        "keyed by the SQS id: two rows an event"
    );
}

/// A table that does not fit its stream (a column dropped, another retyped) stops `run` at
/// start, naming the stream, the column and the difference, before anything is received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_table_that_differs_from_its_stream_before_receiving_anything() {
    let test = Test::shared().await;
    let (db, logins, order_queues) =
        tokio::join!(TestDb::create(), TestQueues::create(), TestQueues::create());
    let file = stream_file(&test.logs, &both_streams());
    let setup = tokio::task::block_in_place(|| setup_tables(&test.logs, &file, &db));
    assert!(setup.status.success(), "{}", text(&setup));
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE orders DROP COLUMN channel; \
             ALTER TABLE orders ALTER COLUMN total TYPE text",
        )
        .await
        .unwrap();
    let (order_bodies, _) = orders(20, 3);
    order_queues.send(&order_bodies).await;

    let output = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        with_streams(&mut command, &file, &db, &logins, &order_queues);
        command.args(["run", "--drain"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(60))
    });
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        "stream `orders`: table orders differs from the stream file",
        "column `channel`: missing",
        "column `total`: is text in the table, numeric(12,2) in the file",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert_eq!(
        order_queues.depth().await.visible,
        20,
        "nothing was received"
    );
}

/// `setup --streams` creates a stream's table, applies what the file added to it (a
/// nullable column, a wider text), and refuses what could lose or rewrite data, printing
/// the statement to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_a_streams_table_and_applies_only_additive_changes() {
    let test = Test::shared().await;
    let db = TestDb::create().await;
    let orders = std::fs::read_to_string(shipped("orders.toml")).unwrap();
    let file = stream_file(&test.logs, &orders);
    let setup = |file: &Path| tokio::task::block_in_place(|| setup_tables(&test.logs, file, &db));

    let created = setup(&file);
    assert!(created.status.success(), "{}", text(&created));
    assert_eq!(
        String::from_utf8_lossy(&created.stdout).trim(),
        "stream orders: created table orders"
    );
    let again = setup(&file);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "stream orders: table orders is as the file declares"
    );

    let grown = stream_file(
        &test.logs,
        &orders
            .replace("max_length = 16", "max_length = 32")
            .replace(
                "[[stream.column]]\nname = \"hmac_key_id\"",
                "[[stream.column]]\nname = \"note\"\nfrom = \"note\"\ntype = \"text\"\nrequired = false\n\n[[stream.column]]\nname = \"hmac_key_id\"",
            ),
    );
    let applied = setup(&grown);
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        stdout.contains("applied: column `note`: missing: ALTER TABLE orders ADD COLUMN note text"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "column `payment_method`: character varying(16) is now character varying(32)"
        ),
        "{stdout}"
    );
    let columns = db
        .count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'note'")
        .await;
    assert_eq!(columns, 1);

    let narrowed = stream_file(
        &test.logs,
        &orders.replace("type = \"numeric(12,2)\"", "type = \"integer\""),
    );
    let refused = setup(&narrowed);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        stdout.contains(
            "refused: column `total`: is numeric(12,2) in the table, integer in the file"
        ) && stdout
            .contains("ALTER TABLE orders ALTER COLUMN total TYPE integer USING total::integer"),
        "{stdout}"
    );
}

/// `schema ddl` prints each stream's table; a stream file with a mistake is refused on one
/// line naming its file, line and column, before anything else happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_ddl_prints_each_table_and_a_bad_stream_file_is_refused_with_its_place() {
    let test = Test::shared().await;
    let file = stream_file(&test.logs, &both_streams());
    let ddl = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        command.env("SQS2PG_STREAMS", &file).args(["schema", "ddl"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(30))
    });
    assert!(ddl.status.success(), "{}", text(&ddl));
    let stdout = String::from_utf8_lossy(&ddl.stdout);
    assert!(
        stdout.contains("CREATE TABLE IF NOT EXISTS user_logins ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("CREATE TABLE IF NOT EXISTS orders ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("    total numeric(12,2) NOT NULL,"),
        "{stdout}"
    );

    let bad = stream_file(
        &test.logs,
        &both_streams().replace("type = \"numeric(12,2)\"", "type = \"nummeric\""),
    );
    let line = both_streams()
        .lines()
        .position(|line| line.contains("type = \"numeric(12,2)\""))
        .unwrap()
        + 1;
    let output = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        command
            .env("SQS2PG_STREAMS", &bad)
            .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/logins")
            .env("ORDERS_QUEUE_URL", "http://127.0.0.1:1/000000000000/orders")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .args(["run", "--drain"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(30))
    });
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let place = format!("{}:{line}:", bad.display());
    assert!(
        stderr.contains(&place) && stderr.contains("nummeric"),
        "{place} in {stderr}"
    );
}
