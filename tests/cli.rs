//! The binary as a user meets it: help, settings errors, idempotent setup and migrate,
//! and the summary of a drain.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The binary with a clean environment (no settings leaking in from the test's own).
fn bare() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sqs2pg"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// Every environment variable any subcommand reads is in `--help`'s environment list and
/// in the README's configuration table: the two places a user looks.
#[test]
fn every_setting_is_documented_in_help_and_readme() {
    use clap::CommandFactory;
    let command = sqs2pg::config::Cli::command();
    let mut settings = std::collections::BTreeSet::new();
    let mut pending = vec![&command];
    while let Some(command) = pending.pop() {
        for argument in command.get_arguments() {
            if let Some(env) = argument.get_env() {
                settings.insert(env.to_string_lossy().into_owned());
            }
        }
        pending.extend(command.get_subcommands());
    }
    assert!(settings.contains("SQS2PG_BATCH_TIMEOUT"), "{settings:?}");
    let help = text(&bare().arg("--help").output().unwrap());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for setting in &settings {
        assert!(
            help.contains(setting.as_str()),
            "--help does not list {setting}"
        );
        assert!(
            readme.contains(&format!("`{setting}`")),
            "README's configuration does not list {setting}"
        );
    }
}

#[test]
fn help_documents_every_setting() {
    let output = bare().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = text(&output);
    for setting in [
        "DATABASE_URL",
        "SQS2PG_QUEUE_URL",
        "SQS2PG_DLQ_URL",
        "SQS2PG_HMAC_KEY",
        "SQS2PG_HMAC_KEY_FILE",
        "SQS2PG_METRICS_ADDR",
        "SQS2PG_VISIBILITY_TIMEOUT",
        "SQS2PG_CONCURRENCY",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        assert!(help.contains(setting), "--help does not mention {setting}");
    }
    let run_help = text(&bare().args(["run", "--help"]).output().unwrap());
    assert!(
        run_help.contains("[env: SQS2PG_CONCURRENCY=]")
            || run_help.contains("env: SQS2PG_CONCURRENCY"),
        "{run_help}"
    );
}

#[test]
fn a_missing_setting_fails_at_start_naming_it() {
    let output = bare()
        .arg("run")
        .env("SQS2PG_QUEUE_URL", "http://q")
        .env("SQS2PG_HMAC_KEY", HMAC_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("DATABASE_URL"), "{}", text(&output));

    let output = bare()
        .arg("run")
        .env("DATABASE_URL", "postgres://x@h/db")
        .env("SQS2PG_QUEUE_URL", "http://q")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("SQS2PG_HMAC_KEY"),
        "{}",
        text(&output)
    );
}

#[test]
fn an_invalid_setting_fails_at_start_naming_it_without_echoing_secrets() {
    let base = || {
        let mut command = bare();
        command
            .arg("run")
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/db")
            .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
            .env("SQS2PG_HMAC_KEY", HMAC_KEY)
            .env("AWS_REGION", "us-east-1");
        command
    };
    for (variable, value) in [
        ("SQS2PG_VISIBILITY_TIMEOUT", "soon"),
        ("SQS2PG_VISIBILITY_TIMEOUT", "0"),
        ("SQS2PG_CONCURRENCY", "0"),
        ("SQS2PG_METRICS_ADDR", "not-an-address"),
    ] {
        let output = base().env(variable, value).output().unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        assert!(
            text(&output).contains(variable),
            "{variable}={value}: {}",
            text(&output)
        );
    }

    let output = base().env("SQS2PG_HMAC_KEY", "tooshort").output().unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("SQS2PG_HMAC_KEY"),
        "{}",
        text(&output)
    );
    assert!(
        !text(&output).contains("tooshort"),
        "the key was echoed: {}",
        text(&output)
    );

    let output = base()
        .env("DATABASE_URL", "postgres://user:hunter2@host:notaport/db")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("DATABASE_URL"), "{}", text(&output));
    assert!(
        !text(&output).contains("hunter2"),
        "the password was echoed: {}",
        text(&output)
    );

    let output = base().env_remove("AWS_REGION").output().unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("AWS_REGION"), "{}", text(&output));
}

#[tokio::test]
async fn setup_is_idempotent_and_sets_the_redrive_policy() {
    let name = unique("setup");
    let setup = |count: &str| {
        output_within(
            sqs2pg_command().args(["setup", "--queue-name", &name, "--max-receive-count", count]),
            Duration::from_secs(60),
        )
    };
    let first = setup("5");
    assert!(first.status.success(), "{}", text(&first));
    let second = setup("3");
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(first.stdout, second.stdout, "the same URLs both times");
    let stdout = String::from_utf8(second.stdout).unwrap();
    let queue_url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SQS2PG_QUEUE_URL="))
        .unwrap();
    let dlq_url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SQS2PG_DLQ_URL="))
        .unwrap();
    assert!(queue_url.ends_with(&format!("/{name}")));
    assert!(dlq_url.ends_with(&format!("/{name}-dlq")));

    let client = sqs_client().await;
    let policy = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(
        policy["maxReceiveCount"].to_string().trim_matches('"'),
        "3",
        "the latest setup wins: {policy}"
    );
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{name}-dlq"))
    );
    // The consumer finds the DLQ from this policy when SQS2PG_DLQ_URL is not set.
    let found = sqs2pg::queue::redrive_target_url(&client, queue_url)
        .await
        .unwrap();
    assert_eq!(found, dlq_url);
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = TestDb::create().await; // already migrated once
    // In-process migrations just ran on this runtime; the child must not wait for their lock.
    let output = output_within(
        sqs2pg_command().arg("migrate").env("DATABASE_URL", &db.url),
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("up to date"), "{}", text(&output));
}

#[tokio::test]
async fn run_drain_prints_a_summary_and_exits_zero() {
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues
        .send(&[SAMPLE.to_owned(), GARBAGE.to_owned(), SAMPLE.to_owned()])
        .await;
    let mut command = sqs2pg_command();
    command.args(["run", "--drain"]);
    run_env(&mut command, &db, &queues);
    command.env_remove("SQS2PG_DLQ_URL"); // found through the redrive policy
    let output = output_within(&mut command, Duration::from_secs(120));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    println!("{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("sqs2pg: "))
        .expect("a summary line");
    for part in [
        "rows inserted: 2",
        "duplicates skipped: 0",
        "dead-lettered: 1",
        "elapsed: ",
        "messages/s",
    ] {
        assert!(summary.contains(part), "{summary}");
    }
    assert_eq!(db.row_count().await, 2);
    assert_eq!(queues.dead_letters().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_sqs_at_start_instead_of_failing() {
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues.send(&[SAMPLE.to_owned(), GARBAGE.to_owned()]).await;
    let proxy = TcpProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    proxy.stop().await;

    let mut command = sqs2pg_command();
    command
        .args(["run", "--drain"])
        .env("AWS_ENDPOINT_URL", proxy.url());
    run_env(&mut command, &db, &queues);
    command.env_remove("SQS2PG_DLQ_URL"); // so the start must ask SQS for the redrive target
    let running = std::thread::spawn(move || output_within(&mut command, Duration::from_secs(90)));

    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.resume().await;
    let output = running.join().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("Transient failure; retrying."),
        "the unreachable SQS was retried, not fatal: {}",
        text(&output)
    );
    assert_eq!(db.row_count().await, 1);
    assert_eq!(queues.dead_letters().await.len(), 1);
}
