//! FIFO queues end to end, against LocalStack's FIFO semantics: a FIFO source with its FIFO
//! dead-letter queue, poison inside message groups, the order rows of one group commit in,
//! and the tools (`setup --fifo`, `send`, `dlq redrive`) on FIFO queues.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::*;
use sqs2pg::adapters::sqs::{FifoIds, OutgoingMessage};

const GROUPS: usize = 5;
const PER_GROUP: usize = 60;

/// Event `seq` of `group`: its user id says both, so rows can be put back in send order.
fn event(group: usize, seq: usize) -> String {
    serde_json::json!({
        "user_id": format!("g{group}-{seq:03}"),
        "app_version": "2.3.0",
        "device_type": "ios",
        "ip": format!("10.1.{group}.{seq}"),
        "locale": null,
        "device_id": format!("dev-{group}-{seq}"),
    })
    .to_string()
}

/// Sends, per group in order, its valid events with poison at the head of two groups and
/// among the events of others; returns the poison bodies by group.
async fn send_groups(queues: &TestQueues) -> HashMap<String, Vec<String>> {
    let queue = queues.sqs_queue();
    let mut poison: HashMap<String, Vec<String>> = HashMap::new();
    let mut messages = Vec::new();
    for group in 0..GROUPS {
        let group_id = format!("group-{group}");
        for seq in 0..PER_GROUP {
            let poisoned_here = match group {
                0 | 1 => seq == 0,
                2 => seq == 30,
                3 => seq == 10 || seq == 59,
                _ => false,
            } || (group == 4 && seq == 45);
            if poisoned_here {
                let body = format!("{{\"broken\": {group}{seq}");
                poison
                    .entry(group_id.clone())
                    .or_default()
                    .push(body.clone());
                messages.push((group_id.clone(), body));
            }
            messages.push((group_id.clone(), event(group, seq)));
        }
    }
    // Ten at a time, in order: SQS keeps the order of sends within a group.
    for chunk in messages.chunks(10) {
        let outgoing: Vec<OutgoingMessage> = chunk
            .iter()
            .map(|(group_id, body)| OutgoingMessage {
                fifo: Some(FifoIds {
                    group_id: group_id.clone(),
                    deduplication_id: uuid::Uuid::new_v4().to_string(),
                }),
                ..OutgoingMessage::new(body.clone())
            })
            .collect();
        let failures = queue.send(&outgoing).await.expect("send to FIFO");
        assert!(failures.is_empty(), "{failures:?}");
    }
    poison
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_drains_with_poison_in_its_groups_and_rows_commit_in_group_order() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_fifo());
    let poison = send_groups(&queues).await;
    let poison_count: usize = poison.values().map(Vec::len).sum();
    assert_eq!(poison_count, 6);

    let output = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        run_env(&mut command, &db, &queues);
        command.args(["run", "--drain", "--batch-size", "10"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(180))
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("fifo drain: {}", stdout.trim());
    assert!(output.status.success(), "run --drain exits 0: {stderr}");

    assert_rows_in_group_order_and_poison_dead_lettered_once(&db, &queues, &poison).await;
}

/// One row per valid event, commits in send order within each group, each poison body once
/// in the DLQ with its reason and group, and the source queue empty.
async fn assert_rows_in_group_order_and_poison_dead_lettered_once(
    db: &TestDb,
    queues: &TestQueues,
    poison: &HashMap<String, Vec<String>>,
) {
    let poison_count: usize = poison.values().map(Vec::len).sum();
    // One row per valid event, and within a group the commits follow the send order.
    let rows = db
        .client()
        .await
        .query(
            "SELECT user_id, ingested_at, xmin::text::bigint FROM user_logins ORDER BY user_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), GROUPS * PER_GROUP, "one row per valid event");
    let mut transactions_per_group = vec![std::collections::BTreeSet::new(); GROUPS];
    let mut previous: Option<(String, chrono::DateTime<chrono::Utc>, i64)> = None;
    for row in &rows {
        let user_id: String = row.get(0);
        let committed: chrono::DateTime<chrono::Utc> = row.get(1);
        let transaction: i64 = row.get(2);
        let group: usize = user_id[1..2].parse().unwrap();
        transactions_per_group[group].insert(transaction);
        if let Some((before, at, xid)) = &previous
            && before[..2] == user_id[..2]
        {
            assert!(
                *at <= committed && *xid <= transaction,
                "{before} committed after {user_id} of the same group"
            );
        }
        previous = Some((user_id, committed, transaction));
    }
    for (group, transactions) in transactions_per_group.iter().enumerate() {
        assert!(
            transactions.len() >= 2,
            "group {group} spans several transactions, so its order was tested: {transactions:?}"
        );
    }

    // Each poison body once in the DLQ, with its reason and its original group.
    let letters = queues.dead_letters().await;
    assert_eq!(
        letters.len(),
        poison_count,
        "each poison message dead-lettered once"
    );
    for letter in &letters {
        let group = letter
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let body = letter.body().unwrap().to_owned();
        let group = group.expect("the dead letter keeps a group");
        assert!(poison[&group].contains(&body), "{body} from {group}");
        assert_eq!(
            attribute_of(letter, attribute::REASON).as_deref(),
            Some("invalid_json")
        );
    }
    assert_eq!(queues.source_total().await, 0, "the source queue is empty");
}

/// The writes pause on a FIFO queue (a constraint refuses every row for 6 s from the start,
/// so the breaker opens on the first batch) and resume: the groups keep their order through
/// the pause, the messages let go and the probe's, and the poison is dead-lettered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_keeps_its_group_order_through_paused_writes() {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create_fifo());
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE user_logins ADD CONSTRAINT paused CHECK (device_type = 'none') NOT VALID",
        )
        .await
        .unwrap();
    let poison = send_groups(&queues).await;
    let mut command = sqs2pg_command();
    run_env(&mut command, &db, &queues);
    command
        .env("RUST_LOG", "info")
        .env("SQS2PG_LOG_FORMAT", "json")
        .args(["run", "--batch-size", "10", "--visibility-timeout", "3"]);
    let mut service = Process::spawn(&test.logs, "consumer", &mut command);
    let paused = "Writes fail systemically; ingestion pauses until a probe write commits. Messages go back to the queue, none to the dead-letter queue.";
    eventually(Duration::from_secs(30), "the writes paused", || {
        let seen = !service.log_events(paused).is_empty();
        async move { seen }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    client
        .batch_execute("ALTER TABLE user_logins DROP CONSTRAINT paused")
        .await
        .unwrap();
    let expected = (GROUPS * PER_GROUP) as i64;
    eventually(Duration::from_secs(180), "every event a row", || async {
        db.row_count().await == expected && queues.source_total().await == 0
    })
    .await;
    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(service.wait_within(Duration::from_secs(60)).success());
    assert_eq!(service.log_events(paused).len(), 1, "one pause");
    assert_rows_in_group_order_and_poison_dead_lettered_once(&db, &queues, &poison).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_with_a_standard_dead_letter_queue_is_refused_at_start() {
    let test = Test::shared().await;
    let (db, fifo, standard) = tokio::join!(
        TestDb::create(),
        TestQueues::create_fifo(),
        TestQueues::create()
    );
    let output = tokio::task::block_in_place(|| {
        let mut command = sqs2pg_command();
        run_env(&mut command, &db, &fifo);
        command
            .env("SQS2PG_DLQ_URL", &standard.urls.dlq_url)
            .args(["run", "--drain"]);
        Process::output(&test.logs, &mut command, Duration::from_secs(60))
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line, before any side effect: {stderr}"
    );
}

/// `setup --fifo` makes a FIFO pair, `send` fills it with grouped events, and a redrive of
/// dead letters back into it keeps each message's group and original id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_send_and_redrive_work_on_fifo_queues() {
    let test = Test::shared().await;
    let db = TestDb::create().await;
    let name = unique("setup");
    let setup = tokio::task::block_in_place(|| {
        Process::output(
            &test.logs,
            sqs2pg_command().args(["setup", "--fifo", "--queue-name", &name, "--output", "json"]),
            Duration::from_secs(60),
        )
    });
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&setup.stdout).unwrap();
    assert_eq!(printed["fifo"], true, "{printed}");
    let url_of = |queue: &str| printed[queue]["url"].as_str().unwrap().to_owned();
    let (queue_url, dlq_url) = (url_of("queue"), url_of("dlq"));
    assert!(queue_url.ends_with(&format!("{name}.fifo")), "{queue_url}");
    assert!(dlq_url.ends_with(&format!("{name}-dlq.fifo")), "{dlq_url}");

    let send = tokio::task::block_in_place(|| {
        Process::output(
            &test.logs,
            sqs2pg_command().args([
                "send",
                "--count",
                "50",
                "--malformed-share",
                "0.2",
                "--queue-url",
                &queue_url,
                "--output",
                "json",
            ]),
            Duration::from_secs(60),
        )
    });
    assert!(
        send.status.success(),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&send.stdout).unwrap();
    assert_eq!(sent["sent"], 50, "{sent}");
    assert_eq!(sent["malformed"], 10, "{sent}");
    assert_eq!(sent["queue_url"], queue_url.as_str());
    assert!(sent["elapsed_s"].as_f64().unwrap() > 0.0, "{sent}");

    let run = |extra: &[&str]| {
        tokio::task::block_in_place(|| {
            let mut command = sqs2pg_command();
            command
                .env("DATABASE_URL", &db.url)
                .env("SQS2PG_QUEUE_URL", &queue_url)
                .args(["run", "--drain"])
                .args(extra);
            Process::output(&test.logs, &mut command, Duration::from_secs(120))
        })
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let rows = db.row_count().await;
    assert!(rows > 0 && rows < 50, "some rows, some poison: {rows}");

    let dlq = |command: &str| {
        tokio::task::block_in_place(|| {
            Process::output(
                &test.logs,
                sqs2pg_command()
                    .env("SQS2PG_QUEUE_URL", &queue_url)
                    .args(["dlq", command]),
                Duration::from_secs(60),
            )
        })
    };
    let redrive = dlq("redrive");
    let redriven = String::from_utf8_lossy(&redrive.stdout).into_owned();
    assert!(
        redrive.status.success(),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    assert!(
        redriven.contains(&format!("redriven: {} ", 50 - rows)),
        "{redriven}"
    );
    // The poison comes back into the FIFO source, is dead-lettered again, once each.
    let second = run(&[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(db.row_count().await, rows, "still poison: no new rows");
    let inspect = tokio::task::block_in_place(|| {
        Process::output(
            &test.logs,
            sqs2pg_command()
                .env("SQS2PG_QUEUE_URL", &queue_url)
                .args(["dlq", "inspect", "--output", "json"]),
            Duration::from_secs(60),
        )
    });
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(&inspect)));
    assert_eq!(
        inspected["read"],
        50 - rows,
        "each poison message once in the DLQ: {inspected}"
    );
    assert_eq!(inspected["complete"], true, "{inspected}");
    // Through send, dead-lettering, redrive and dead-lettering again, each message kept
    // the group send gave it (its user id) and its original id.
    let dlq = TestQueues {
        client: sqs_client().await,
        urls: sqs2pg::adapters::sqs::QueueUrls {
            queue_url: queue_url.clone(),
            dlq_url: dlq_url.clone(),
        },
        name,
    };
    let letters = dlq.dead_letters().await;
    assert_eq!(letters.len() as i64, 50 - rows);
    for letter in &letters {
        let body: Option<serde_json::Value> = serde_json::from_str(letter.body().unwrap()).ok();
        let expected = body
            .as_ref()
            .and_then(|event| event.get("user_id")?.as_str())
            .filter(|user_id| {
                (1..=128).contains(&user_id.len()) && user_id.bytes().all(|b| b.is_ascii_graphic())
            })
            .unwrap_or("no-user-id");
        let group = letter
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
            .map(String::as_str);
        assert_eq!(group, Some(expected), "{:?}", letter.body());
        let original = attribute_of(letter, attribute::ORIGINAL_MESSAGE_ID).unwrap();
        assert_ne!(
            Some(original.as_str()),
            letter.message_id(),
            "the original id, not the copy's"
        );
    }
}
