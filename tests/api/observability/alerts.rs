//! The Prometheus alert rules: each is documented, has a hold and a severity, and is
//! unit-tested both firing and silent; promtool accepts the rules, runs their tests, and
//! accepts the Prometheus configuration.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

use super::{ALERT_TESTS, ALERTS, JOB, PROMETHEUS_CONFIG, README, Rule, alert_rules, read, yaml};

#[test]
fn every_alert_is_documented_and_unit_tested_both_firing_and_silent() {
    let rules = alert_rules();
    let readme = read(README);
    let mut names_seen = BTreeSet::new();
    for Rule { name, rule, .. } in &rules {
        assert!(
            names_seen.insert(name.clone()),
            "alert {name} is defined twice"
        );
        let hold = rule["for"].as_str().unwrap_or_default();
        assert!(!hold.is_empty(), "{name} has no `for`");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| text.len() > 20),
                "{name} has no {annotation}"
            );
        }
        assert!(
            readme.contains(name.as_str()),
            "{README} does not explain {name}"
        );
    }
    let tests = yaml(ALERT_TESTS);
    assert_eq!(
        tests["rule_files"],
        serde_json::json!(["alerts.yml"]),
        "{ALERT_TESTS} must test alerts.yml"
    );
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_array().expect("tests") {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().expect("alertname").to_owned();
            assert!(
                names_seen.contains(&name),
                "{ALERT_TESTS} tests an unknown alert {name}"
            );
            if check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for name in &names_seen {
        assert!(fires.contains(name), "no test shows {name} firing");
        assert!(silent.contains(name), "no test shows {name} staying silent");
    }
    println!("{} alerts, each tested firing and silent", names_seen.len());
}

/// `promtool <args>` in the checkout (Debian's prometheus package has it, and
/// `scripts/services.sh install` installs that).
fn promtool(logs: &Logs, args: &[&str]) -> String {
    let output = Process::output(
        logs,
        Command::new("promtool").args(args).current_dir(repo()),
        Duration::from_secs(60),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

#[test]
fn promtool_accepts_the_rules_and_the_config_and_the_rule_unit_tests_pass() {
    let test = Test::shared_blocking();
    let checked = promtool(&test.logs, &["check", "rules", ALERTS]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alert_rules().len())),
        "{checked}"
    );
    let tested = promtool(&test.logs, &["test", "rules", ALERT_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&test.logs, &["check", "config", PROMETHEUS_CONFIG]);
}

/// SQS2PGIngestionStalled, evaluated by a real Prometheus scraping a real consumer: its
/// expression (with the 10 minutes shortened to 3 s) answers while the table is locked,
/// so nothing commits while messages wait, and stops answering once commits resume. The
/// rule itself is loaded and healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stalled_ingestion_alert_answers_in_a_real_prometheus_while_commits_stop() {
    use sqs2pg::domain::synthetic::{Recipe, generate};

    const ALERT: &str = "SQS2PGIngestionStalled";
    let test = Test::shared().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = generate(Recipe {
        count: 50,
        seed: 16,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    // Nothing can commit while this lock is held.
    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let rule = alert_rules()
        .into_iter()
        .find(|rule| rule.name == ALERT)
        .expect("the rule");
    let shortened = rule.expr.replace("> 600", "> 3");
    assert_ne!(
        shortened, rule.expr,
        "the threshold is `> 600`: {}",
        rule.expr
    );

    let metrics_port = free_port();
    let (mut prometheus, api) = super::start_prometheus(&test.logs, metrics_port).await;
    let mut command = sqs2pg_command();
    run_env(&mut command, &db, &queues);
    command.args([
        "run",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        // Ten in flight, so most of the backlog stays visible.
        "--in-flight-messages",
        "10",
        "--wait-time",
        "1",
    ]);
    let mut consumer = Process::spawn(&test.logs, "sqs2pg", &mut command);

    let firing = |expr: String| {
        let api = &api;
        async move {
            api.query(&expr)
                .await
                .map(|data| data["result"].as_array().cloned().unwrap_or_default())
                .unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        consumer.assert_running("the stall");
        prometheus.assert_running("the stall");
        let answer = firing(shortened.clone()).await;
        if !answer.is_empty() {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "{ALERT}'s expression never answered while nothing committed: {shortened}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["metric"]["job"], JOB, "{answer:?}");
    let stalled_for: f64 = answer[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(stalled_for > 3.0, "{answer:?}");
    // (Not counted in the table: a count would wait on the lock.)
    assert_eq!(
        api.value(&format!(
            "sum(sqs2pg_messages_inserted_total{{job=\"{JOB}\"}})"
        ))
        .await,
        Some(0.0),
        "nothing committed meanwhile"
    );

    let rules = api.get("/api/v1/rules", &[]).await.expect("rules API");
    let loaded = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .find(|loaded| loaded["name"] == ALERT)
        .unwrap_or_else(|| panic!("Prometheus did not load {ALERT}: {rules}"));
    assert_eq!(loaded["health"], "ok", "{loaded}");

    lock.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        consumer.assert_running("the recovery");
        let since_commit = api
            .value(&format!(
                "time() - max by (job) (sqs2pg_last_commit_timestamp_seconds{{job=\"{JOB}\"}})"
            ))
            .await;
        if since_commit.is_some_and(|seconds| seconds < 3.0)
            && firing(shortened.clone()).await.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ALERT}'s expression still answers after commits resumed ({since_commit:?} s since the last)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    consumer.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        consumer
            .exit_within(Duration::from_secs(30))
            .await
            .is_some_and(|status| status.success())
    );
    assert_eq!(db.row_count().await, 50);
}
