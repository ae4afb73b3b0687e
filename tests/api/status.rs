//! `sqs2pg status` through the real binary: its JSON read as JSON, its exit codes (0 all
//! well, 2 attention, 1 could not check), and the checks behind them.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// `status` on `queues` and `db` with these arguments: its output.
fn status(test: &Test, db_url: &str, queues: &TestQueues, args: &[&str]) -> Output {
    let mut command = sqs2pg_command();
    command
        .env("DATABASE_URL", db_url)
        .env("SQS2PG_QUEUE_URL", &queues.urls.queue_url)
        .env_remove("SQS2PG_DLQ_URL") // found through the redrive policy
        .arg("status")
        .args(args);
    Process::output(&test.logs, &mut command, Duration::from_secs(60))
}

/// `status --output json`: its exit code and its object.
fn status_json(test: &Test, db_url: &str, queues: &TestQueues, args: &[&str]) -> (i32, Value) {
    let output = status(
        test,
        db_url,
        queues,
        &[&["--output", "json"], args].concat(),
    );
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line: {}",
        text(&output)
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(&output)));
    println!("{report:#}");
    (output.status.code().expect("an exit code"), report)
}

/// The newest migration this binary carries (a unit test checks it against `migrations/`).
fn latest_migration() -> i64 {
    sqs2pg::adapters::postgres::status::known_migration_version()
}

fn checks(report: &Value) -> Vec<&str> {
    report["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["check"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_fresh_setup_is_all_well() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (code, report) = status_json(&test, &db.url, &queues, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["queue"]["url"], queues.urls.queue_url.as_str());
    assert_eq!(report["dlq"]["url"], queues.urls.dlq_url.as_str());
    for queue in ["queue", "dlq"] {
        for field in ["visible", "in_flight", "delayed"] {
            assert_eq!(report[queue][field], 0, "{queue}.{field}: {report}");
        }
    }
    assert_eq!(report["queue"]["oldest_age_s"], Value::Null);
    assert_eq!(report["dlq"]["recorded_total"], 0);
    assert_eq!(report["dlq"]["by_reason"], serde_json::json!({}));
    assert_eq!(
        report["rows"],
        serde_json::json!({"last_minute": 0, "last_hour": 0, "last_day": 0})
    );
    assert_eq!(report["lag_s"]["p50"], Value::Null);
    assert_eq!(report["lag_s"]["rows"], 0);
    assert_eq!(
        report["last_commit"],
        serde_json::json!({"at": null, "age_s": null})
    );
    assert_eq!(
        report["migrations"],
        serde_json::json!({"applied": latest_migration(), "known": latest_migration(), "behind": false})
    );
    assert_eq!(report["thresholds"]["stall_after_s"], 300.0);
    assert_eq!(checks(&report), Vec::<&str>::new());
    chrono::DateTime::parse_from_rfc3339(report["checked_at"].as_str().unwrap()).unwrap();

    let screen = status(&test, &db.url, &queues, &[]);
    assert_eq!(screen.status.code(), Some(0), "{}", text(&screen));
    let screen = String::from_utf8(screen.stdout).unwrap();
    println!("{screen}");
    assert!(screen.contains("\nattention          none\n"), "{screen}");
}

#[tokio::test]
async fn after_a_drain_it_counts_rows_and_dead_letters_and_flags_the_new_ones() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let mut bodies = vec![SAMPLE.to_owned(); 20];
    bodies.extend([
        GARBAGE.to_owned(),
        GARBAGE.to_owned(),
        r#"{"ip": "10.1.2.3""#.to_owned(),
    ]);
    queues.send(&bodies).await;
    let mut drain = sqs2pg_command();
    drain.args(["run", "--drain"]);
    run_env(&mut drain, &db, &queues);
    let drained = Process::output(&test.logs, &mut drain, Duration::from_secs(120));
    assert!(drained.status.success(), "{}", text(&drained));

    let (code, report) = status_json(&test, &db.url, &queues, &[]);
    assert_eq!(code, 2, "dead letters were just recorded: {report}");
    assert_eq!(checks(&report), ["dlq_growing"], "{report}");
    assert_eq!(
        report["attention"][0]["detail"],
        "3 dead letters recorded in the last 5m"
    );
    assert_eq!(
        report["rows"],
        serde_json::json!({"last_minute": 20, "last_hour": 20, "last_day": 20})
    );
    assert_eq!(report["dlq"]["visible"], 3);
    assert_eq!(report["dlq"]["recorded_total"], 3);
    assert_eq!(report["dlq"]["recorded_last_hour"], 3);
    assert_eq!(report["dlq"]["recorded_in_window"], 3);
    assert_eq!(
        report["dlq"]["by_reason"],
        serde_json::json!({
            "missing_field": {"total": 2, "last_hour": 2},
            "invalid_json": {"total": 1, "last_hour": 1},
        })
    );
    let (p50, p99) = (
        report["lag_s"]["p50"].as_f64().unwrap(),
        report["lag_s"]["p99"].as_f64().unwrap(),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 < 120.0, "{report}");
    assert_eq!(report["lag_s"]["rows"], 20);
    let age = report["last_commit"]["age_s"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "{report}");
    chrono::DateTime::parse_from_rfc3339(report["last_commit"]["at"].as_str().unwrap()).unwrap();
    assert_eq!(report["migrations"]["applied"], latest_migration());
    assert_eq!(report["queue"]["visible"], 0);

    // The text screen, as the README shows it.
    let screen = status(&test, &db.url, &queues, &[]);
    assert_eq!(screen.status.code(), Some(2), "{}", text(&screen));
    let screen = String::from_utf8(screen.stdout).unwrap();
    println!("{screen}");
    for line in [
        "  recorded         3 in all, 3 in the last hour, 3 in the last 5m\n",
        "    invalid_json   1 in all, 1 in the last hour\n",
        "rows               20 in the last minute, 20 in the last hour, 20 in the last day\n",
        "attention          dlq_growing: 3 dead letters recorded in the last 5m\n",
    ] {
        assert!(screen.contains(line), "{line:?} missing:\n{screen}");
    }

    // Once the window has passed, those dead letters no longer need attention.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, report) = status_json(&test, &db.url, &queues, &["--dlq-window", "1s"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["dlq"]["recorded_in_window"], 0);
    assert_eq!(report["dlq"]["recorded_total"], 3);
}

#[tokio::test]
async fn a_backlog_with_no_commit_for_longer_than_stall_after_is_stalled() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues.send(&vec![SAMPLE.to_owned(); 4]).await;

    // No consumer has ever committed.
    let (code, report) = status_json(&test, &db.url, &queues, &[]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(checks(&report), ["stalled"]);
    assert_eq!(
        report["attention"][0]["detail"],
        "4 messages waiting (4 visible, 0 in flight) and nothing ever committed"
    );
    assert_eq!(report["queue"]["visible"], 4);

    // A consumer committed ten minutes ago, and nothing since.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO user_logins (message_id, user_id, device_type, hashed_ip, hashed_device_id, \
                 locale, app_version, create_date, sent_at, ingested_at) \
             VALUES ('m-1', 'u', 'android', repeat('a', 64), repeat('b', 64), NULL, '1.0', \
                 current_date, now() - interval '11 minutes', now() - interval '10 minutes')",
        )
        .await
        .unwrap();
    let (code, report) = status_json(&test, &db.url, &queues, &[]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(checks(&report), ["stalled"]);
    let detail = report["attention"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "4 messages waiting (4 visible, 0 in flight) and nothing committed for 10m"
        ) && detail.ends_with("(more than 5m)"),
        "{detail}"
    );
    let age = report["last_commit"]["age_s"].as_f64().unwrap();
    assert!((600.0..660.0).contains(&age), "{report}");
    assert_eq!(report["rows"]["last_hour"], 1);
    assert_eq!(report["rows"]["last_minute"], 0);
    assert_eq!(report["lag_s"]["p50"], 60.0);

    // A longer threshold: not stalled yet.
    let (code, report) = status_json(&test, &db.url, &queues, &["--stall-after", "1h"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["thresholds"]["stall_after_s"], 3600.0);
}

#[tokio::test]
async fn a_database_without_the_migrations_is_behind_and_an_unreachable_one_is_an_error() {
    let test = Test::shared().await;
    let queues = TestQueues::create().await;
    let name = unique("sqs2pg_bare");
    connect(&admin_database_url())
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let bare = with_database(&admin_database_url(), &name);
    let (code, report) = status_json(&test, &bare, &queues, &[]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(checks(&report), ["migrations_behind"]);
    assert_eq!(
        report["migrations"],
        serde_json::json!({"applied": null, "known": latest_migration(), "behind": true})
    );
    assert_eq!(report["rows"]["last_day"], 0);

    // Could not check: exit 1, the reason on stderr, nothing on stdout.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/db", free_port());
    let output = status(&test, &nowhere, &queues, &["--output", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(output.stdout.is_empty(), "{}", text(&output));
    assert!(
        stderr_of(&output).contains("reading the database's status"),
        "{}",
        text(&output)
    );
}
