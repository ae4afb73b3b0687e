//! The Prometheus alert rules: each is documented, has a hold and a severity, and is
//! unit-tested both firing and silent; promtool accepts the rules, runs their tests, and
//! accepts the Prometheus configuration.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{Logs, Process, Test, repo};

use super::{ALERT_TESTS, ALERTS, PROMETHEUS_CONFIG, README, Rule, alert_rules, read, yaml};

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
