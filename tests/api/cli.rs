//! The binary as a user meets it: help, settings errors, idempotent setup and migrate,
//! and the summary of a drain.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::*;

/// Runs a command that ends at once (help, a refused setting).
fn quick(logs: &Logs, command: &mut Command) -> Output {
    Process::output(logs, command, Duration::from_secs(30))
}

/// Every environment variable any subcommand reads is in `--help`'s environment list and
/// in the README's configuration table: the two places a user looks.
#[test]
fn every_setting_is_documented_in_help_and_readme() {
    let test = Test::shared_blocking();
    use clap::CommandFactory;
    let command = Cli::command();
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
    let help = text(&quick(&test.logs, bare_sqs2pg_command().arg("--help")));
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
    let test = Test::shared_blocking();
    let output = quick(&test.logs, bare_sqs2pg_command().arg("--help"));
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
        "SQS2PG_RECEIVERS_MAX",
        "SQS2PG_WRITERS",
        "SQS2PG_IN_FLIGHT_MESSAGES",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        assert!(help.contains(setting), "--help does not mention {setting}");
    }
    let run_help = text(&quick(
        &test.logs,
        bare_sqs2pg_command().args(["run", "--help"]),
    ));
    for setting in [
        "SQS2PG_RECEIVERS_MAX",
        "SQS2PG_WRITERS",
        "SQS2PG_IN_FLIGHT_MIB",
    ] {
        assert!(
            run_help.contains(&format!("env: {setting}")),
            "{setting} missing: {run_help}"
        );
    }
}

#[test]
fn a_missing_setting_fails_at_start_naming_it() {
    let test = Test::shared_blocking();
    let output = quick(
        &test.logs,
        bare_sqs2pg_command()
            .arg("run")
            .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
            .env("SQS2PG_HMAC_KEY", HMAC_KEY),
    );
    assert!(!output.status.success());
    assert!(text(&output).contains("DATABASE_URL"), "{}", text(&output));

    let output = quick(
        &test.logs,
        bare_sqs2pg_command()
            .arg("run")
            .env("DATABASE_URL", "postgres://x@h/db")
            .env("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/000000000000/q"),
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("SQS2PG_HMAC_KEY"),
        "{}",
        text(&output)
    );
}

#[test]
fn an_invalid_setting_fails_at_start_naming_it_without_echoing_secrets() {
    let test = Test::shared_blocking();
    let base = || {
        let mut command = bare_sqs2pg_command();
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
        ("SQS2PG_RECEIVERS_MAX", "0"),
        ("SQS2PG_WRITERS", "65"),
        ("SQS2PG_IN_FLIGHT_MESSAGES", "9"),
        ("SQS2PG_METRICS_ADDR", "not-an-address"),
        ("SQS2PG_QUEUE_URL", "not a url"),
        ("SQS2PG_QUEUE_URL", "http://127.0.0.1:1/q"),
        (
            "SQS2PG_DLQ_URL",
            "http://127.0.0.1:1/000000000000/bad name!",
        ),
        ("SQS2PG_WAIT_TIME", "-1"),
        ("SQS2PG_BATCH_WINDOW_MS", "60001"),
    ] {
        let output = quick(&test.logs, base().env(variable, value));
        assert!(!output.status.success(), "{variable}={value} was accepted");
        assert!(
            text(&output).contains(variable),
            "{variable}={value}: {}",
            text(&output)
        );
    }

    let output = quick(&test.logs, base().env("SQS2PG_HMAC_KEY", "tooshort"));
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

    let output = quick(
        &test.logs,
        base().env("DATABASE_URL", "postgres://user:hunter2@host:notaport/db"),
    );
    assert!(!output.status.success());
    assert!(text(&output).contains("DATABASE_URL"), "{}", text(&output));
    assert!(
        !text(&output).contains("hunter2"),
        "the password was echoed: {}",
        text(&output)
    );

    let output = quick(&test.logs, base().env_remove("AWS_REGION"));
    assert!(!output.status.success());
    assert!(text(&output).contains("AWS_REGION"), "{}", text(&output));
}

/// The queue's redrive policy, as SQS has it.
async fn redrive_policy(queue_url: &str) -> Option<serde_json::Value> {
    let policy = sqs_client()
        .await
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes?
        .remove(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)?;
    Some(serde_json::from_str(&policy).unwrap())
}

fn max_receive_count(policy: &serde_json::Value) -> String {
    policy["maxReceiveCount"]
        .to_string()
        .trim_matches('"')
        .to_owned()
}

#[tokio::test]
async fn setup_is_idempotent_and_changes_an_existing_queue_only_when_asked() {
    let test = Test::shared().await;
    let name = unique("setup");
    let setup = |args: &[&str]| {
        Process::output(
            &test.logs,
            sqs2pg_command()
                .args(["setup", "--queue-name", &name])
                .args(args),
            Duration::from_secs(60),
        )
    };
    // `--output json`: one object, read as JSON.
    let json = |output: &Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", text(output));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", text(output)))
    };
    let first = json(&setup(&["--max-receive-count", "5", "--output", "json"]));
    println!("{first}");
    let queue_url = first["queue"]["url"].as_str().unwrap().to_owned();
    let dlq_url = first["dlq"]["url"].as_str().unwrap().to_owned();
    assert!(queue_url.ends_with(&format!("/{name}")));
    assert!(dlq_url.ends_with(&format!("/{name}-dlq")));
    assert!(
        first["queue"]["arn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{name}"))
    );
    assert_eq!(first["queue"]["created"], true);
    assert_eq!(first["dlq"]["created"], true);
    assert_eq!(first["redrive_policy"], "created");
    assert_eq!(first["max_receive_count"], 5);
    assert_eq!(first["fifo"], false);
    let again = json(&setup(&["--max-receive-count", "5", "--output", "json"]));
    for queue in ["queue", "dlq"] {
        assert_eq!(
            again[queue]["url"], first[queue]["url"],
            "the same URLs both times"
        );
        assert_eq!(again[queue]["arn"], first[queue]["arn"]);
        assert_eq!(again[queue]["created"], false, "{again}");
    }
    assert_eq!(again["redrive_policy"], "unchanged");
    let policy = redrive_policy(&queue_url).await.unwrap();
    assert_eq!(max_receive_count(&policy), "5");
    assert_eq!(policy["deadLetterTargetArn"], first["dlq"]["arn"]);
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{name}-dlq"))
    );

    // A different policy: reported, and the queue left alone.
    let refused = setup(&["--max-receive-count", "3"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = text(&refused);
    for part in ["maxReceiveCount 5", "maxReceiveCount 3", "--update", &name] {
        assert!(message.contains(part), "{message}");
    }
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert_eq!(
        max_receive_count(&redrive_policy(&queue_url).await.unwrap()),
        "5"
    );

    // Asked for: changed.
    let updated = setup(&["--max-receive-count", "3", "--update", "--output", "json"]);
    let changed = json(&updated);
    assert_eq!(changed["redrive_policy"], "updated");
    assert_eq!(changed["queue"]["url"], first["queue"]["url"]);
    assert!(
        stderr_of(&updated).contains("maxReceiveCount 5"),
        "{}",
        text(&updated)
    );
    // The text form: the two URLs as lines a shell can source.
    let plain = setup(&["--max-receive-count", "3"]);
    assert!(plain.status.success(), "{}", text(&plain));
    assert_eq!(
        String::from_utf8(plain.stdout).unwrap(),
        format!("SQS2PG_QUEUE_URL={queue_url}\nSQS2PG_DLQ_URL={dlq_url}\n")
    );
    assert_eq!(
        max_receive_count(&redrive_policy(&queue_url).await.unwrap()),
        "3"
    );

    // The consumer finds the DLQ from this policy when SQS2PG_DLQ_URL is not set.
    let found = sqs2pg::adapters::sqs::redrive_target_url(&sqs_client().await, &queue_url)
        .await
        .unwrap();
    assert_eq!(found, dlq_url);
}

#[tokio::test]
async fn setup_does_not_attach_a_dead_letter_queue_to_a_queue_that_has_none() {
    let test = Test::shared().await;
    let name = unique("bare");
    let client = sqs_client().await;
    let queue_url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let output = Process::output(
        &test.logs,
        sqs2pg_command().args(["setup", "--queue-name", &name]),
        Duration::from_secs(60),
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("no redrive policy"),
        "{}",
        text(&output)
    );
    assert_eq!(redrive_policy(&queue_url).await, None);
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let test = Test::shared().await;
    let db = TestDb::create().await; // already migrated once
    // In-process migrations just ran on this runtime; the child must not wait for their lock.
    let output = Process::output(
        &test.logs,
        sqs2pg_command().arg("migrate").env("DATABASE_URL", &db.url),
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("up to date"), "{}", text(&output));
}

#[tokio::test]
async fn run_drain_prints_a_summary_and_exits_zero() {
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    queues
        .send(&[SAMPLE.to_owned(), GARBAGE.to_owned(), SAMPLE.to_owned()])
        .await;
    let mut command = sqs2pg_command();
    command
        .args(["--log-format", "json", "run", "--drain"])
        .env_remove("RUST_LOG");
    run_env(&mut command, &db, &queues);
    command.env_remove("SQS2PG_DLQ_URL"); // found through the redrive policy
    let output = Process::output(&test.logs, &mut command, Duration::from_secs(120));
    assert!(output.status.success(), "{}", text(&output));

    // Logs: JSON lines only, the summary as fields, no dependency's file paths, and no
    // start-up noise about migrations already applied (the database was migrated).
    let stderr = stderr_of(&output);
    let lines = json_lines(&stderr);
    let stopped = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Stopped.")
        .unwrap_or_else(|| panic!("no Stopped. line: {stderr}"));
    assert_eq!(stopped["fields"]["inserted"], 2, "{stopped}");
    assert_eq!(stopped["fields"]["dead_lettered"], 1, "{stopped}");
    assert!(stopped["fields"]["elapsed_s"].is_f64(), "{stopped}");
    for noise in [
        "NOTICE",
        "no migrations to apply",
        "log.file",
        ".cargo/registry",
    ] {
        assert!(!stderr.contains(noise), "{noise:?} in {stderr}");
    }

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
        "3 messages in ",
        "messages/s",
        " s in all",
    ] {
        assert!(summary.contains(part), "{summary}");
    }
    assert_eq!(db.row_count().await, 2);
    assert_eq!(queues.dead_letters().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_sqs_at_start_instead_of_failing() {
    let test = Test::shared().await;
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
    let logs = test.logs.clone();
    let running =
        std::thread::spawn(move || Process::output(&logs, &mut command, Duration::from_secs(90)));

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

/// A queue URL that passes validation; nothing listens there.
const NOWHERE_QUEUE: &str = "http://127.0.0.1:1/000000000000/nowhere";

/// The URL of a database that does not exist on the test cluster.
fn missing_database_url() -> String {
    with_database(
        &std::env::var("DATABASE_URL").expect("DATABASE_URL"),
        &unique("missing"),
    )
}

/// `args` with `database_url`, timed; it must exit within 10 s.
fn start_against(logs: &Logs, database_url: &str, args: &[&str]) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let output = Process::output(
        logs,
        sqs2pg_command()
            .args(args)
            .env_remove("RUST_LOG")
            .env("DATABASE_URL", database_url)
            .env("SQS2PG_QUEUE_URL", NOWHERE_QUEUE),
        Duration::from_secs(10),
    );
    (output, started.elapsed())
}

#[test]
fn a_missing_database_fails_at_once_with_postgresql_s_message() {
    let test = Test::shared_blocking();
    let url = missing_database_url();
    for args in [&["migrate"][..], &["run", "--drain"][..]] {
        let (output, took) = start_against(&test.logs, &url, args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(
            stderr.matches("does not exist (SQLSTATE 3D000)").count(),
            1,
            "{args:?}: PostgreSQL's message, once: {stderr}"
        );
        assert!(!stderr.contains("retrying"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_with_postgresql_s_message_and_never_the_password() {
    let test = Test::shared().await;
    let pg = PrivatePostgres::start_with_passwords(&test.logs);
    connect(&pg.admin_url())
        .await
        .batch_execute("CREATE ROLE app LOGIN SUPERUSER PASSWORD 'right-password-1'")
        .await
        .unwrap();
    let url = |password: &str| format!("postgres://app:{password}@127.0.0.1:{}/postgres", pg.port);
    for args in [&["migrate"][..], &["run", "--drain"][..]] {
        let (output, took) = start_against(&test.logs, &url("hunter2-wrong"), args);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {all}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(
            all.matches(r#"password authentication failed for user "app" (SQLSTATE 28P01)"#)
                .count(),
            1,
            "{args:?}: PostgreSQL's message, once: {all}"
        );
        assert!(!all.contains("hunter2"), "the password was echoed: {all}");
    }
    // The same URL with the right password works: it was the password.
    let (output, _) = start_against(&test.logs, &url("right-password-1"), &["migrate"]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn a_refused_database_port_is_retried_saying_refused() {
    let test = Test::shared_blocking();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let mut child = Process::spawn(
        &test.logs,
        "run",
        sqs2pg_command()
            .args(["run", "--drain"])
            .env_remove("RUST_LOG")
            .env("DATABASE_URL", &url)
            .env("SQS2PG_QUEUE_URL", NOWHERE_QUEUE),
    );
    std::thread::sleep(Duration::from_secs(3));
    let still_running = child.exited().is_none();
    // A signal while starting stops it at once, cleanly: nothing was received.
    child.signal(Signal::SIGTERM);
    let status = child.wait_within(Duration::from_secs(5));
    let stderr = child.stderr();
    assert!(still_running, "a refused port is transient: {stderr}");
    assert!(status.success(), "{status}: {stderr}");
    let retries: Vec<&str> = stderr.lines().filter(|l| l.contains("retrying")).collect();
    assert!(!retries.is_empty(), "{stderr}");
    for line in retries {
        assert!(line.contains("Connection refused"), "{line}");
    }
}

#[tokio::test]
async fn aws_errors_are_one_short_line_naming_the_setting() {
    let test = Test::shared().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let missing_queue = format!("{endpoint}/000000000000/{}", unique("missing"));
    let refused_endpoint = format!("http://127.0.0.1:{}", free_port());
    /// What is tried, the arguments, the environment changed ("" removes), what it must say.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "a queue name SQS refuses",
            vec!["setup", "--queue-name", "bad name!"],
            vec![],
            vec!["SQS2PG_QUEUE_NAME"],
        ),
        (
            "a queue that does not exist",
            vec!["dlq", "inspect", "--queue-url", &missing_queue],
            vec![],
            vec!["SQS2PG_QUEUE_URL", "does not exist"],
        ),
        (
            "a refused endpoint",
            vec!["setup", "--queue-name", "refused"],
            vec![("AWS_ENDPOINT_URL", refused_endpoint.as_str())],
            vec!["AWS_ENDPOINT_URL", "Connection refused"],
        ),
        (
            "no credentials",
            vec!["setup", "--queue-name", "nocredentials"],
            vec![
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_PROFILE", ""),
                ("HOME", "/nonexistent"), // no ~/.aws
            ],
            vec!["credentials", "AWS_ACCESS_KEY_ID"],
        ),
    ];
    for (case, args, env, wanted) in cases {
        let mut command = sqs2pg_command();
        command.args(&args).env_remove("RUST_LOG");
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let output = Process::output(&test.logs, &mut command, Duration::from_secs(30));
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{case}: {stderr}");
        let message = stderr.trim();
        assert_eq!(message.lines().count(), 1, "{case}: one line: {stderr}");
        assert!(
            message.len() < 300,
            "{case}: {} chars: {message}",
            message.len()
        );
        for part in wanted {
            assert!(message.contains(part), "{case}: no {part:?} in {message}");
        }
    }
}

/// Each stderr line parsed as JSON; fails on any line that is not.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect()
}

#[test]
fn in_json_mode_a_fatal_error_is_one_json_line() {
    let test = Test::shared_blocking();
    let (output, _) = start_against(
        &test.logs,
        &missing_database_url(),
        &["--log-format", "json", "run", "--drain"],
    );
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&stderr_of(&output));
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert!(
        errors[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("SQLSTATE 3D000"),
        "{lines:?}"
    );
}

#[test]
fn the_metrics_address_is_bound_before_anything_else() {
    let test = Test::shared_blocking();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Process::output(
        &test.logs,
        sqs2pg_command()
            .args(["run", "--drain"])
            .env("DATABASE_URL", missing_database_url())
            .env("SQS2PG_QUEUE_URL", NOWHERE_QUEUE)
            .env("SQS2PG_METRICS_ADDR", &addr),
        Duration::from_secs(10),
    );
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SQS2PG_METRICS_ADDR"), "{stderr}");
    assert!(
        !stderr.contains("3D000"),
        "the database was tried first: {stderr}"
    );
}

#[test]
fn a_bare_port_and_a_host_name_are_metrics_addresses() {
    let test = Test::shared_blocking();
    for addr in [":0".to_owned(), format!("localhost:{}", free_port())] {
        let output = Process::output(
            &test.logs,
            sqs2pg_command()
                .args(["run", "--drain"])
                .env_remove("RUST_LOG")
                .env("DATABASE_URL", missing_database_url())
                .env("SQS2PG_QUEUE_URL", NOWHERE_QUEUE)
                .env("SQS2PG_METRICS_ADDR", &addr),
            Duration::from_secs(10),
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains("Serving /metrics") && stderr.contains("addr=127.0.0.1:"),
            "{addr}: {stderr}"
        );
    }
}

#[test]
fn an_invalid_rust_log_is_refused_at_start_naming_it() {
    let test = Test::shared_blocking();
    for filter in ["bogus=[", "verbose"] {
        let output = Process::output(
            &test.logs,
            sqs2pg_command()
                .arg("migrate")
                .env("RUST_LOG", filter)
                .env("DATABASE_URL", missing_database_url()),
            Duration::from_secs(10),
        );
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{filter}: {stderr}");
        assert!(stderr.contains("RUST_LOG"), "{filter}: {stderr}");
        assert!(!stderr.contains("3D000"), "{filter}: it went on: {stderr}");
    }
}

#[test]
fn help_shows_placeholders_ranges_and_reasons() {
    let test = Test::shared_blocking();
    let run_help = text(&quick(
        &test.logs,
        bare_sqs2pg_command().args(["run", "--help"]),
    ));
    assert!(!run_help.contains("<SQS2PG_"), "{run_help}");
    for part in [
        "--visibility-timeout <DURATION>",
        "--receivers-max <COUNT>",
        "--queue-url <URL>",
        "1s to 12h",
        "1 to 256",
        "0 to 1m",
        "0 to 20s",
    ] {
        assert!(run_help.contains(part), "no {part:?} in {run_help}");
    }
    let redrive_help = text(&quick(
        &test.logs,
        bare_sqs2pg_command().args(["dlq", "redrive", "--help"]),
    ));
    for reason in <DeadLetterReason as strum::VariantNames>::VARIANTS {
        assert!(redrive_help.contains(reason), "{redrive_help}");
    }
    for count in ["0", "-1"] {
        let output = quick(
            &test.logs,
            bare_sqs2pg_command().args(["send", "--queue-url", NOWHERE_QUEUE, "--count", count]),
        );
        assert!(!output.status.success());
        let message = text(&output);
        assert!(
            message.contains("--count") && message.contains("at least 1"),
            "--count {count}: {message}"
        );
    }
}

#[tokio::test]
async fn json_lines_from_dependencies_name_their_target_without_file_paths() {
    let test = Test::shared().await;
    let db = TestDb::create().await; // migrated: refinery says so through the `log` bridge
    let output = Process::output(
        &test.logs,
        sqs2pg_command()
            .args(["--log-format", "json", "migrate"])
            .env("RUST_LOG", "info,refinery_core=info")
            .env("DATABASE_URL", &db.url),
        Duration::from_secs(30),
    );
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let lines = json_lines(&stderr);
    let bridged = lines
        .iter()
        .find(|l| l["fields"]["message"] == "no migrations to apply")
        .unwrap_or_else(|| panic!("refinery's line: {stderr}"));
    assert!(
        bridged["target"]
            .as_str()
            .unwrap()
            .starts_with("refinery_core"),
        "{bridged}"
    );
    for noise in ["log.file", "log.line", ".cargo/registry", "NOTICE"] {
        assert!(!stderr.contains(noise), "{noise:?} in {stderr}");
    }
}
