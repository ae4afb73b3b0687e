//! The observability deliverables: the Grafana dashboard, the Prometheus alert rules and
//! their unit tests, the Prometheus and Grafana configuration, the Dockerfile and the
//! docker compose stack agree with each other and with the metrics the service exports;
//! and a real Prometheus scraping a real consumer answers every dashboard and alert query,
//! with counts that agree with PostgreSQL and the dead-letter queue.
//!
//! Run with `source .run/env && cargo test --test observability`. The static checks need
//! nothing; the promtool test needs `promtool` and the live test `prometheus` as well
//! (Debian's `prometheus` package, which `scripts/services.sh up` installs) plus the
//! PostgreSQL and LocalStack of `scripts/services.sh up`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use promql_parser::label::{METRIC_NAME, MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;
use sqs2pg::adapters::sqs::Queue;
use sqs2pg::domain::synthetic::{Recipe, generate};
use sqs2pg::telemetry::metrics::{Metrics, names};

const DASHBOARD: &str = "dashboards/sqs2pg.json";
const ALERTS: &str = "dashboards/prometheus/alerts.yml";
const ALERT_TESTS: &str = "dashboards/prometheus/alerts.test.yml";
const PROMETHEUS_CONFIG: &str = "dashboards/prometheus/prometheus.yml";
const DATASOURCES: &str = "dashboards/provisioning/datasources/prometheus.yml";
const DASHBOARD_PROVIDERS: &str = "dashboards/provisioning/dashboards/sqs2pg.yml";
const COMPOSE: &str = "docker-compose.yml";
const README: &str = "dashboards/README.md";
/// The scrape job that the dashboard and the alert rules select.
const JOB: &str = "sqs2pg";
/// Where the dashboard finds Prometheus.
const DATASOURCE_UID: &str = "prometheus";

// ---------------------------------------------------------------------------------------
// Files

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// A YAML file as JSON values, with `<<` merge keys applied (docker compose uses them).
fn yaml(path: &str) -> Value {
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|error| panic!("{path} is not valid YAML: {error}"));
    value
        .apply_merge()
        .unwrap_or_else(|error| panic!("{path}: merge keys: {error}"));
    serde_json::to_value(value).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|error| panic!("{DASHBOARD} is not valid JSON: {error}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// (panel title, PromQL) of every visible query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|target| target["hide"] != Value::Bool(true))
                .filter_map(|target| target["expr"].as_str())
                .map(move |expr| (title.clone(), expr.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The dashboard's template variables and the value that selects everything.
fn template_variables(dashboard: &Value) -> BTreeMap<String, String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| {
            let name = variable["name"].as_str().expect("variable name").to_owned();
            let all = variable["allValue"]
                .as_str()
                .filter(|_| variable["includeAll"] == Value::Bool(true))
                .unwrap_or_else(|| panic!("variable {name} needs includeAll and an allValue"));
            (name, all.to_owned())
        })
        .collect()
}

/// A dashboard query as Grafana would send it, with every variable selecting everything.
fn concrete_query(expr: &str, variables: &BTreeMap<String, String>) -> String {
    let mut text = expr
        .replace("${__rate_interval}", "1m")
        .replace("$__rate_interval", "1m")
        .replace("$__interval_ms", "15000")
        .replace("${__interval}", "15s")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    for (name, value) in variables {
        for pattern in [
            format!("${{{name}}}"),
            format!("${name}"),
            format!("[[{name}]]"),
        ] {
            text = text.replace(&pattern, value);
        }
    }
    assert!(
        !text.contains('$'),
        "an unknown variable is left in `{text}`"
    );
    text
}

#[derive(Debug)]
struct Rule {
    name: String,
    expr: String,
    rule: Value,
}

fn alert_rules() -> Vec<Rule> {
    let rules = yaml(ALERTS);
    let groups = rules["groups"].as_array().expect("groups");
    assert!(!groups.is_empty(), "{ALERTS} has no groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        .map(|rule| Rule {
            name: rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("only alerting rules expected: {rule}"))
                .to_owned(),
            expr: rule["expr"].as_str().expect("expr").to_owned(),
            rule: rule.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// PromQL, as promql-parser reads it: the vector selectors of an expression (those inside
// range selectors, subqueries, function calls, aggregations and binary operations too).

/// Collects every vector selector of an AST.
#[derive(Default)]
struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Infallible> {
        match expr {
            Expr::VectorSelector(selector) => self.0.push(selector.clone()),
            Expr::MatrixSelector(range) => self.0.push(range.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// Every vector selector of a PromQL expression, or the parser's error naming the
/// expression. Grafana's variables are not PromQL: substitute them first (`concrete_query`).
fn selectors(expr: &str) -> Result<Vec<VectorSelector>, String> {
    let ast = promql_parser::parser::parse(expr)
        .map_err(|error| format!("`{expr}` is not valid PromQL: {error}"))?;
    let mut found = Selectors::default();
    let Ok(_) = walk_expr(&mut found, &ast);
    Ok(found.0)
}

/// What a selector selects: for each alternative of its `{a="1" or b="2"}` (a selector
/// without `or` has one), the metric name (the selector's own, or a `__name__="..."`
/// matcher) and the other label matchers.
fn selections(selector: &VectorSelector) -> Vec<(Option<&str>, Vec<&Matcher>)> {
    let common = &selector.matchers.matchers;
    let alternatives: Vec<Vec<&Matcher>> = if selector.matchers.or_matchers.is_empty() {
        vec![common.iter().collect()]
    } else {
        selector
            .matchers
            .or_matchers
            .iter()
            .map(|alternative| common.iter().chain(alternative).collect())
            .collect()
    };
    alternatives
        .into_iter()
        .map(|matchers| {
            let (names, labels): (Vec<&Matcher>, Vec<&Matcher>) = matchers
                .into_iter()
                .partition(|matcher| matcher.name == METRIC_NAME);
            let metric = selector.name.as_deref().or_else(|| {
                names
                    .iter()
                    .find(|matcher| matcher.op == MatchOp::Equal)
                    .map(|matcher| matcher.value.as_str())
            });
            (metric, labels)
        })
        .collect()
}

/// The metric names an expression selects; an expression that does not parse fails the test.
fn metric_names(expr: &str) -> BTreeSet<String> {
    selectors(expr)
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .flat_map(selections)
        .filter_map(|(metric, _)| metric.map(str::to_owned))
        .collect()
}

#[test]
fn promql_selectors_are_found_past_strings_groupings_functions_and_durations() {
    let variables = BTreeMap::from([("instance".to_owned(), ".*".to_owned())]);
    let cases: [(&str, &[&str]); 10] = [
        (
            r#"sum by (stage) (rate(sqs2pg_retries_total{job="sqs2pg", stage="write"}[$__rate_interval]))"#,
            &["sqs2pg_retries_total"],
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(sqs2pg_end_to_end_latency_seconds_bucket[5m])))",
            &["sqs2pg_end_to_end_latency_seconds_bucket"],
        ),
        (
            r#"up{job="sqs2pg"} == 0 or absent(up{job="sqs2pg"})"#,
            &["up"],
        ),
        (
            "max by (job) (a) > 0 and on (job) sum without (instance) (rate(b[5m:1m] offset 1h)) == bool 0",
            &["a", "b"],
        ),
        (
            r#"a / on (job) group_left (version) b * ignoring(x) c"#,
            &["a", "b", "c"],
        ),
        (
            r#"label_replace(up, "dst", "sqs2pg_not_a_metric", "src", "(.*)")"#,
            &["up"],
        ),
        (
            "sum(rate(x_sum[1m])) / sum(rate(x_count[1m])) # sqs2pg_comment",
            &["x_count", "x_sum"],
        ),
        (
            r#"topk(3, sqs2pg_ready{instance=~"$instance"}) unless sqs2pg_build_info"#,
            &["sqs2pg_build_info", "sqs2pg_ready"],
        ),
        (
            r#"max_over_time(deriv(rate(d[1m])[10m:$__interval])[1h:]) - -e @ start()"#,
            &["d", "e"],
        ),
        (
            r#"{__name__="f", job="sqs2pg"} + count_values("g", h)"#,
            &["f", "h"],
        ),
    ];
    for (expr, expected) in cases {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        let concrete = concrete_query(expr, &variables);
        assert_eq!(metric_names(&concrete), expected, "in `{concrete}`");
    }

    let found = |expr: &str| -> Vec<(Option<String>, Vec<String>)> {
        selectors(expr)
            .unwrap()
            .iter()
            .flat_map(selections)
            .map(|(metric, matchers)| {
                let matchers = matchers.iter().map(|m| m.to_string()).collect();
                (metric.map(str::to_owned), matchers)
            })
            .collect()
    };
    assert_eq!(
        found(r#"sqs2pg_queue_messages{queue="dead_letter", state!~"in_.*", job="a\"b"}"#),
        [(
            Some("sqs2pg_queue_messages".to_owned()),
            vec![
                r#"queue="dead_letter""#.to_owned(),
                r#"state!~"in_.*""#.to_owned(),
                r#"job="a\"b""#.to_owned(),
            ],
        )]
    );
    assert_eq!(
        found(r#"{__name__="x", job="a" or __name__=~"y.*", job="b"}"#),
        [
            (Some("x".to_owned()), vec![r#"job="a""#.to_owned()]),
            (None, vec![r#"job="b""#.to_owned()]),
        ]
    );
    // What does not parse is an error naming the expression, Grafana's variables included.
    for bad in [
        "sum(rate(x[5m])",
        "rate(x[$__rate_interval])",
        r#"x{job=~"("}"#,
    ] {
        let error = selectors(bad).expect_err(bad);
        assert!(error.contains(bad), "{error}");
    }
}

// ---------------------------------------------------------------------------------------
// What the service exports, read from its own exposition.

struct Exported {
    /// Metric family name -> type (counter, gauge, histogram).
    types: BTreeMap<String, String>,
    /// Series name (with a histogram's _bucket/_sum/_count) -> every label=value it has.
    labels: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Exported {
    fn read() -> Self {
        let text = Metrics::new().render();
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap();
                let entry = labels.entry(line[..end].to_owned()).or_default();
                if let Some(inner) = line[end..]
                    .strip_prefix('{')
                    .and_then(|rest| rest.split_once('}'))
                    .map(|(inner, _)| inner)
                {
                    for pair in inner.split(',').filter(|p| !p.is_empty()) {
                        let (label, value) = pair.split_once('=').unwrap();
                        entry.insert((label.to_owned(), value.trim_matches('"').to_owned()));
                    }
                }
            }
        }
        Self { types, labels }
    }

    /// The metric family a series name belongs to, if the service exports it.
    fn family<'a>(&self, series: &'a str) -> Option<&'a str> {
        if self.types.contains_key(series) {
            return Some(series);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            series
                .strip_suffix(suffix)
                .filter(|base| self.types.get(*base).is_some_and(|t| t == "histogram"))
        })
    }
}

/// Problems with one expression's selectors: an expression that does not parse, unknown
/// metrics, label values the service never exports, selectors that do not pin `job="sqs2pg"`.
fn selector_problems(exported: &Exported, place: &str, expr: &str) -> Vec<String> {
    let selectors = match selectors(expr) {
        Ok(selectors) => selectors,
        Err(error) => return vec![format!("{place}: {error}")],
    };
    let mut problems = Vec::new();
    for selector in &selectors {
        for (metric, matchers) in selections(selector) {
            let Some(metric) = metric else {
                problems.push(format!(
                    "{place}: `{selector}` has no metric name in `{expr}`"
                ));
                continue;
            };
            if metric != "up" && exported.family(metric).is_none() {
                problems.push(format!(
                    "{place}: `{metric}` is not exported by sqs2pg (nor a histogram series of one) in `{expr}`"
                ));
                continue;
            }
            let equalities: Vec<&Matcher> = matchers
                .into_iter()
                .filter(|matcher| matcher.op == MatchOp::Equal)
                .collect();
            if !equalities
                .iter()
                .any(|matcher| matcher.name == "job" && matcher.value == JOB)
            {
                problems.push(format!(
                    "{place}: `{selector}` is not restricted to job=\"{JOB}\" in `{expr}`"
                ));
            }
            for matcher in equalities {
                let (label, value) = (&matcher.name, &matcher.value);
                if label == "job" || label == "instance" || metric == "up" {
                    continue;
                }
                let known = exported
                    .labels
                    .get(metric)
                    .is_some_and(|pairs| pairs.contains(&(label.clone(), value.clone())));
                if !known {
                    problems.push(format!(
                        "{place}: `{metric}` never has {label}=\"{value}\" in `{expr}`"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics_and_labels_and_the_dashboard_shows_every_metric()
{
    let exported = Exported::read();
    for name in names::ALL {
        assert!(
            exported.types.contains_key(name),
            "{name} is in names::ALL but not rendered"
        );
    }
    let dashboard = dashboard();
    // As Grafana sends them: its variables are not PromQL.
    let variables = template_variables(&dashboard);
    let queries: Vec<(String, String)> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(panel, expr)| (panel, concrete_query(&expr, &variables)))
        .collect();
    let rules = alert_rules();
    let mut problems = Vec::new();
    for (panel, expr) in &queries {
        problems.extend(selector_problems(
            &exported,
            &format!("panel {panel:?}"),
            expr,
        ));
    }
    for rule in &rules {
        problems.extend(selector_problems(
            &exported,
            &format!("alert {}", rule.name),
            &rule.expr,
        ));
    }
    // The template variables' queries select metrics too.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["definition"].as_str().unwrap_or_default();
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector)
        {
            problems.extend(selector_problems(
                &exported,
                &format!("variable {}", variable["name"]),
                &concrete_query(inner, &variables),
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    let shown: BTreeSet<&str> = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .filter_map(|series| exported.family(&series).map(str::to_owned))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .map(|family| {
            *names::ALL
                .iter()
                .find(|name| **name == family)
                .expect("a family in names::ALL")
        })
        .collect();
    let missing: Vec<&str> = names::ALL
        .into_iter()
        .filter(|name| !shown.contains(name))
        .collect();
    assert!(missing.is_empty(), "no dashboard panel shows {missing:?}");
    let alerted: BTreeSet<String> = rules.iter().flat_map(|r| metric_names(&r.expr)).collect();
    assert!(alerted.contains("up"), "no alert watches `up`");
    println!(
        "{} dashboard queries and {} alert expressions use {} of the {} exported metrics (all of them on the dashboard)",
        queries.len(),
        rules.len(),
        shown.len(),
        names::ALL.len()
    );
}

#[test]
fn every_dashboard_panel_is_documented_and_reads_the_provisioned_prometheus() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "sqs2pg");
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let datasources = yaml(DATASOURCES);
    let provisioned = &datasources["datasources"][0];
    assert_eq!(provisioned["uid"], DATASOURCE_UID);
    assert_eq!(provisioned["type"], "prometheus");
    assert_eq!(provisioned["url"], "http://prometheus:9090");

    let mut ids = BTreeSet::new();
    let mut documented = 0;
    let mut problems = Vec::new();
    let readme = read(README);
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {title:?} is wider than the dashboard");
        if panel["type"] == "row" {
            continue;
        }
        documented += 1;
        if panel["description"].as_str().unwrap_or_default().len() < 100 {
            problems.push(format!(
                "panel {title:?}: no description saying what it means and what to do"
            ));
        }
        if !readme.contains(title) {
            problems.push(format!("panel {title:?} is not explained in {README}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        for source in std::iter::once(&panel["datasource"])
            .chain(targets.iter().map(|target| &target["datasource"]))
        {
            if source["uid"] != DATASOURCE_UID || source["type"] != "prometheus" {
                problems.push(format!(
                    "panel {title:?} reads datasource {source} instead of uid {DATASOURCE_UID:?}"
                ));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(variable["datasource"]["uid"], DATASOURCE_UID);
    }
    // Rate windows follow the scrape interval.
    for (panel, expr) in dashboard_queries(&dashboard) {
        let mut rest = expr.as_str();
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').expect("closing ]") + open;
            if &rest[open + 1..close] != "$__rate_interval" {
                problems.push(format!(
                    "panel {panel:?}: window [{}] instead of [$__rate_interval] in `{expr}`",
                    &rest[open + 1..close]
                ));
            }
            rest = &rest[close..];
        }
    }
    // The latency panels show the three quantiles of their histogram.
    let all: String = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, expr)| expr + "\n")
        .collect();
    for histogram in [names::END_TO_END_LATENCY, names::COMMIT_DURATION] {
        for quantile in ["0.5", "0.95", "0.99"] {
            let wanted =
                format!("histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket{{");
            if !all.contains(&wanted) {
                problems.push(format!("no p{quantile} of {histogram}"));
            }
        }
    }
    assert!(
        all.contains(&format!("up{{job=\"{JOB}\"")),
        "no panel shows up{{job=\"{JOB}\"}}"
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    println!(
        "{documented} panels (and {} rows), all documented",
        ids.len() - documented
    );
}

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

// ---------------------------------------------------------------------------------------
// Docker

fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|entry| {
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// (host path, container path) of a service's bind mounts.
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| match volume {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next()?.to_owned();
                let target = parts.next()?.to_owned();
                Some((source, target))
            }
            Value::Object(long) if long["type"] == "bind" => Some((
                long["source"].as_str()?.to_owned(),
                long["target"].as_str()?.to_owned(),
            )),
            _ => None,
        })
        .filter(|(source, _)| source.starts_with('.') || source.starts_with('/'))
        .collect()
}

fn command_words(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(words) => words
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(line) => line.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn depends_on(service: &Value, on: &str) -> Option<String> {
    match &service["depends_on"] {
        Value::Object(map) => map.get(on).map(|dependency| {
            dependency["condition"]
                .as_str()
                .unwrap_or("service_started")
                .to_owned()
        }),
        Value::Array(list) => list
            .iter()
            .any(|name| name == on)
            .then(|| "service_started".to_owned()),
        _ => None,
    }
}

#[test]
fn docker_compose_runs_the_stack_from_files_in_the_repo_in_the_right_order() {
    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().expect("services");
    for required in [
        "localstack",
        "postgres",
        "setup",
        "sqs2pg",
        "sender",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(required), "no service {required}");
    }
    for (name, service) in services {
        for (source, _) in bind_mounts(service) {
            assert!(
                !source.starts_with('/'),
                "{name} mounts the absolute host path {source}"
            );
            assert!(
                repo().join(&source).exists(),
                "{name} mounts {source}, which is not in the repo"
            );
        }
        if let Some(build) = service.get("build") {
            let context = build
                .as_str()
                .or_else(|| build["context"].as_str())
                .expect("build context");
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(
                repo().join(context).join(dockerfile).is_file(),
                "{name} builds {context}/{dockerfile}, which does not exist"
            );
        } else {
            let image = service["image"].as_str().expect("an image or a build");
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                "{name}: pin a version of {image}"
            );
        }
        if let Some(dependencies) = service["depends_on"].as_object() {
            for (dependency, how) in dependencies {
                let target = services
                    .get(dependency)
                    .unwrap_or_else(|| panic!("{name} depends on an unknown {dependency}"));
                if how["condition"] == "service_healthy" {
                    assert!(
                        target.get("healthcheck").is_some(),
                        "{name} waits for {dependency} to be healthy, which has no healthcheck"
                    );
                }
            }
        }
    }
    let service = |name: &str| &services[name];
    let condition = |name: &str, on: &str| depends_on(service(name), on);
    let healthy = Some("service_healthy".to_owned());
    let completed = Some("service_completed_successfully".to_owned());
    assert_eq!(condition("setup", "localstack"), healthy);
    assert_eq!(condition("sqs2pg", "localstack"), healthy);
    assert_eq!(condition("sqs2pg", "postgres"), healthy);
    assert_eq!(condition("sqs2pg", "setup"), completed);
    assert_eq!(condition("sender", "setup"), completed);
    assert_eq!(
        service("localstack")["image"],
        "localstack/localstack:4.9.2"
    );
    assert_eq!(service("postgres")["image"], "postgres:15");
    assert!(
        service("postgres")["healthcheck"]["test"]
            .to_string()
            .contains("pg_isready")
    );
    assert!(
        service("localstack")["healthcheck"]["test"]
            .to_string()
            .contains("/_localstack/health")
    );

    // The queue that setup creates is the one the consumer reads and the sender fills.
    let setup = command_words(service("setup"));
    assert_eq!(setup.first().map(String::as_str), Some("setup"));
    let queue_name = setup
        .iter()
        .position(|word| word == "--queue-name")
        .map(|i| setup[i + 1].clone())
        .unwrap_or_else(|| "user-logins".to_owned());
    let consumer = environment(service("sqs2pg"));
    let queue_url = &consumer["SQS2PG_QUEUE_URL"];
    assert_eq!(
        queue_url,
        &format!("http://localstack:4566/000000000000/{queue_name}")
    );
    assert_eq!(
        &environment(service("sender"))["SQS2PG_QUEUE_URL"],
        queue_url
    );
    let sender = command_words(service("sender"));
    assert_eq!(sender.first().map(String::as_str), Some("send"));
    assert!(sender.contains(&"--count".to_owned()));
    assert!(
        command_words(service("sqs2pg")).is_empty() || command_words(service("sqs2pg")) == ["run"],
        "the consumer runs `sqs2pg run`"
    );
    for one_shot in ["setup", "sqs2pg", "sender"] {
        let env = environment(service(one_shot));
        assert_eq!(
            env["AWS_ENDPOINT_URL"], "http://localstack:4566",
            "{one_shot}"
        );
        assert!(
            env.contains_key("AWS_REGION"),
            "{one_shot} has no AWS_REGION"
        );
    }
    assert!(consumer["DATABASE_URL"].contains("@postgres:5432/"));
    let key = &consumer["SQS2PG_HMAC_KEY"];
    assert!(
        key.len() >= 16 && key.contains("demo"),
        "the HMAC key must be a clearly marked demo value"
    );

    // Prometheus scrapes the consumer where it listens, with the job name the rules use.
    let metrics_port = consumer["SQS2PG_METRICS_ADDR"]
        .strip_prefix("0.0.0.0:")
        .expect("metrics on 0.0.0.0 in a container")
        .to_owned();
    let config = yaml(PROMETHEUS_CONFIG);
    let job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|job| job["job_name"] == JOB)
        .expect("a scrape job named sqs2pg");
    let targets = &job["static_configs"][0]["targets"];
    assert_eq!(
        targets,
        &serde_json::json!([format!("sqs2pg:{metrics_port}")])
    );
    assert_eq!(job["scrape_interval"], "5s");
    assert!(
        config["rule_files"]
            .as_array()
            .expect("rule_files")
            .iter()
            .all(|file| repo()
                .join("dashboards/prometheus")
                .join(file.as_str().unwrap())
                .is_file()),
        "a rule file of {PROMETHEUS_CONFIG} is missing"
    );
    let prometheus = service("prometheus");
    assert!(
        bind_mounts(prometheus).contains(&(
            "./dashboards/prometheus".to_owned(),
            "/etc/prometheus".to_owned()
        )),
        "prometheus must mount dashboards/prometheus at /etc/prometheus"
    );
    assert!(
        command_words(prometheus).contains(&"--config.file=/etc/prometheus/prometheus.yml".into())
    );

    // Grafana finds its provisioning, the dashboard and Prometheus.
    let grafana = service("grafana");
    let mounts = bind_mounts(grafana);
    assert!(mounts.contains(&(
        "./dashboards/provisioning".to_owned(),
        "/etc/grafana/provisioning".to_owned()
    )));
    let dashboard_mount = mounts
        .iter()
        .find(|(source, _)| source == "./dashboards/sqs2pg.json")
        .expect("grafana mounts the dashboard");
    let providers = yaml(DASHBOARD_PROVIDERS);
    let folder = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert_eq!(
        Path::new(&dashboard_mount.1).parent(),
        Some(Path::new(folder)),
        "the dashboard is mounted outside the provider's folder"
    );
    assert_eq!(folder, "/var/lib/grafana/dashboards");
    let grafana_env = environment(grafana);
    assert_eq!(grafana_env["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    println!(
        "{} services, every mount and build context present",
        services.len()
    );
}

/// Dockerfile instructions, continuation lines joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    instructions
}

#[test]
fn the_dockerfile_builds_the_locked_release_binary_into_a_slim_image_run_by_a_user() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.clone())
            .collect()
    };
    let froms = all("FROM");
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].starts_with("rust:1.95-bookworm"), "{froms:?}");
    assert_eq!(froms[1], "debian:bookworm-slim");
    let runs = all("RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    assert!(runs.contains("ca-certificates"), "{runs}");
    let user = all("USER");
    assert_eq!(user.len(), 1);
    assert!(!user[0].starts_with("root") && !user[0].starts_with('0'));
    assert_eq!(all("EXPOSE"), ["9898"]);
    assert_eq!(all("ENTRYPOINT"), [r#"["sqs2pg"]"#]);
    assert_eq!(all("CMD"), [r#"["run"]"#]);

    // What the build copies exists, is not ignored, and is all the crate needs.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for wanted in ["target", ".run", "fuzz/target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == wanted),
            ".dockerignore lacks {wanted}"
        );
    }
    let mut copied = BTreeSet::new();
    for copy in all("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repo"
            );
            assert!(
                !ignored.iter().any(|i| i == source),
                "COPY {source}: excluded by .dockerignore"
            );
            copied.insert(source.trim_end_matches('/').to_owned());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "migrations"] {
        assert!(copied.contains(needed), "the build does not copy {needed}");
    }
    // Cargo refuses a manifest whose declared targets it cannot find, so every target that
    // `cargo build --release` looks for must be in the image too (a [[bench]] once broke
    // the build).
    for target in declared_target_paths() {
        let top = target.split('/').next().unwrap();
        assert!(
            copied.contains(top) || copied.contains(target.as_str()),
            "Cargo.toml declares {target}, which the Dockerfile does not copy"
        );
    }
}

/// Source paths that `cargo build --release` looks for among the targets Cargo.toml
/// declares: every [[bin]]'s, and every [[bench]]'s, [[test]]'s and [[example]]'s whose path
/// Cargo infers from the default layout (it checks those as it reads the manifest). A test,
/// bench or example with an explicit `path` is only read when it is built, so the image
/// needs no `tests/` for `[[test]] path = "tests/api/main.rs"`.
fn declared_target_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut flush = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let default_dir = match section {
            "[[bin]]" => "src/bin",
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            _ => return,
        };
        match (path.take(), name.take()) {
            (Some(path), _) if section == "[[bin]]" => paths.push(path),
            (Some(_), _) => {}
            (None, Some(name)) => paths.push(format!("{default_dir}/{name}.rs")),
            (None, None) => {}
        }
    };
    for line in read("Cargo.toml").lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&section, &mut name, &mut path);
            section = line.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "name" => name = Some(value),
                "path" => path = Some(value),
                _ => {}
            }
        }
    }
    flush(&section, &mut name, &mut path);
    assert!(
        paths.iter().any(|p| p == "src/main.rs"),
        "found the [[bin]]: {paths:?}"
    );
    paths
}

// ---------------------------------------------------------------------------------------
// A real Prometheus scraping a real consumer.

/// What Prometheus has scraped from the consumer.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Scraped {
    up: Option<f64>,
    received: Option<f64>,
    inserted: Option<f64>,
    duplicates: Option<f64>,
    dead_lettered: Option<f64>,
    deleted: Option<f64>,
    delete_failures: Option<f64>,
    released: Option<f64>,
    in_flight: Option<f64>,
    source_depth: Option<f64>,
    dead_letter_visible: Option<f64>,
}

impl Scraped {
    async fn read(prometheus: &PrometheusApi) -> Self {
        let sum = |metric: &str| format!("sum({metric}{{job=\"{JOB}\"}})");
        Self {
            up: prometheus.value(&format!("up{{job=\"{JOB}\"}}")).await,
            received: prometheus.value(&sum(names::MESSAGES_RECEIVED)).await,
            inserted: prometheus.value(&sum(names::MESSAGES_INSERTED)).await,
            duplicates: prometheus.value(&sum(names::MESSAGES_DUPLICATE)).await,
            dead_lettered: prometheus.value(&sum(names::MESSAGES_DEAD_LETTERED)).await,
            deleted: prometheus.value(&sum(names::MESSAGES_DELETED)).await,
            delete_failures: prometheus.value(&sum(names::DELETE_FAILURES)).await,
            released: prometheus.value(&sum(names::MESSAGES_RELEASED)).await,
            in_flight: prometheus.value(&sum(names::MESSAGES_IN_FLIGHT)).await,
            source_depth: prometheus
                .value(&format!(
                    "sum({}{{job=\"{JOB}\", queue=\"source\"}})",
                    names::QUEUE_MESSAGES
                ))
                .await,
            dead_letter_visible: prometheus
                .value(&format!(
                    "sum({}{{job=\"{JOB}\", queue=\"dead_letter\", state=\"visible\"}})",
                    names::QUEUE_MESSAGES
                ))
                .await,
        }
    }
}

const EVENTS: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_the_consumer_answers_every_dashboard_and_alert_query() {
    let test = Test::shared().await;
    let started = Instant::now();
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, malformed) = generate(Recipe {
        count: EVENTS,
        seed: 4,
        duplicate_share: 0.1,
        malformed_share: 0.05,
    });
    assert!(malformed > 0);
    let valid = EVENTS - malformed;
    queues.send(&bodies).await;

    let metrics_port = free_port();
    let prometheus_port = std::iter::repeat_with(free_port)
        .find(|port| *port != metrics_port)
        .unwrap();
    let config = test.logs.file("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            repo().join(ALERTS).display()
        ),
    )
    .unwrap();
    let mut command = Command::new("prometheus");
    command.args([
        format!("--config.file={}", config.display()),
        format!(
            "--storage.tsdb.path={}",
            test.logs.file("prometheus-data").display()
        ),
        format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
    ]);
    let mut prometheus = Process::spawn(&test.logs, "prometheus", &mut command);
    let api = PrometheusApi::new(prometheus_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api.ready().await {
        prometheus.assert_running("its start");
        assert!(Instant::now() < deadline, "Prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut command = sqs2pg_command();
    run_env(&mut command, &db, &queues);
    command.args([
        "run",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        "--visibility-timeout",
        "5",
        // Short long polls, so that SIGTERM is not held up by a 20 s receive.
        "--wait-time",
        "2",
        "--shutdown-timeout",
        "20",
    ]);
    let consumer_started = Instant::now();
    let mut consumer = Process::spawn(&test.logs, "sqs2pg", &mut command);

    // Until Prometheus has scraped the final figures: every row, every dead letter, and
    // the queue-depth gauges (polled every 15 s by the service) showing both queues settled.
    let deadline = Instant::now() + Duration::from_secs(90);
    let scraped = loop {
        consumer.assert_running("the drain");
        prometheus.assert_running("the drain");
        let rows = db.row_count().await as u64;
        let source = queues.source_total().await;
        let dead_letters = queues
            .sqs_queue()
            .dead_letter_depth()
            .await
            .expect("dead-letter queue depth");
        let scraped = Scraped::read(&api).await;
        let as_count = |value: Option<f64>| value.map(|v| v as u64);
        let settled = rows == valid
            && source == 0
            && dead_letters.visible == malformed
            && scraped.up == Some(1.0)
            && as_count(scraped.inserted) == Some(rows)
            && as_count(scraped.dead_lettered) == Some(dead_letters.visible)
            && as_count(scraped.dead_letter_visible) == Some(dead_letters.visible)
            && scraped.source_depth == Some(0.0)
            && scraped.in_flight == Some(0.0);
        if settled {
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not catch up within 90 s: rows {rows} (want {valid}), source queue \
             {source}, dead-letter queue {dead_letters:?} (want {malformed} visible), scraped {scraped:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let caught_up = consumer_started.elapsed();
    let count = |value: Option<f64>| value.expect("scraped") as u64;
    let (received, inserted, duplicates, dead_lettered) = (
        count(scraped.received),
        count(scraped.inserted),
        count(scraped.duplicates),
        count(scraped.dead_lettered),
    );
    assert!(received >= EVENTS, "received {received} of {EVENTS}");
    assert!(
        inserted + duplicates + dead_lettered <= received,
        "{scraped:?}"
    );
    // Redeliveries (a slow heartbeat on a busy machine can cause one) are counted as
    // duplicates, so the books balance either way.
    assert_eq!(
        received,
        inserted + duplicates + dead_lettered,
        "every received message was inserted, skipped or dead-lettered: {scraped:?}"
    );
    assert_eq!(
        count(scraped.deleted) + count(scraped.delete_failures) + count(scraped.released),
        received,
        "every received message was deleted, given up on or released: {scraped:?}"
    );
    if received > EVENTS {
        println!("{} redeliveries: {scraped:?}", received - EVENTS);
    }

    // Every dashboard query answers with data, every alert expression evaluates.
    let dashboard = dashboard();
    let variables = template_variables(&dashboard);
    let mut problems = Vec::new();
    let (mut dashboard_evaluated, mut alerts_evaluated) = (0, 0);
    for (panel, expr) in dashboard_queries(&dashboard) {
        let concrete = concrete_query(&expr, &variables);
        match api.query(&concrete).await {
            Ok(data) if series_count(&data) > 0 => dashboard_evaluated += 1,
            Ok(data) => problems.push(format!(
                "panel {panel:?}: `{concrete}` returned no data: {data}"
            )),
            Err(error) => problems.push(format!("panel {panel:?}: `{concrete}` failed: {error}")),
        }
    }
    let rules = alert_rules();
    for rule in &rules {
        match api.query(&rule.expr).await {
            Ok(_) => alerts_evaluated += 1,
            Err(error) => problems.push(format!(
                "alert {}: `{}` failed: {error}",
                rule.name, rule.expr
            )),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // Prometheus itself loaded every rule and evaluates each without error.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let groups = api.get("/api/v1/rules", &[]).await.expect("rules API");
        let loaded: BTreeMap<String, String> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .map(|rule| {
                let name = rule["name"].as_str().unwrap_or_default().to_owned();
                let health = format!("{} {}", rule["health"], rule["lastError"]);
                (name, health)
            })
            .collect();
        let expected: BTreeSet<&String> = rules.iter().map(|rule| &rule.name).collect();
        assert_eq!(loaded.keys().collect::<BTreeSet<_>>(), expected);
        let unhealthy: Vec<_> = loaded
            .iter()
            .filter(|(_, health)| !health.starts_with("\"ok\""))
            .collect();
        if unhealthy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not evaluated cleanly: {unhealthy:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The dead letters by reason, as scraped (read now: the series go stale when the
    // consumer stops), are compared with the reasons on the DLQ messages at the end.
    let by_reason = api
        .query(&format!(
            "sum by (reason) ({}{{job=\"{JOB}\"}}) > 0",
            names::MESSAGES_DEAD_LETTERED
        ))
        .await
        .expect("dead letters by reason");
    let scraped_reasons: BTreeMap<String, u64> = by_reason["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|series| {
            (
                series["metric"]["reason"].as_str().unwrap().to_owned(),
                series["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64,
            )
        })
        .collect();
    // SIGTERM: a clean exit, whose own summary agrees with what Prometheus scraped.
    let stopping = Instant::now();
    consumer.signal(Signal::SIGTERM);
    let status = consumer
        .exit_within(Duration::from_secs(45))
        .await
        .unwrap_or_else(|| {
            panic!(
                "sqs2pg did not exit within 45 s of SIGTERM; its stderr ends with:\n{}",
                consumer.stderr_tail(40)
            )
        });
    let shutdown = stopping.elapsed();
    assert!(
        status.success(),
        "sqs2pg exited with {status} after SIGTERM; its stderr ends with:\n{}",
        consumer.stderr_tail(40)
    );
    let log = format!("{}{}", consumer.stdout(), consumer.stderr());
    for figure in [
        format!("rows inserted: {inserted},"),
        format!("dead-lettered: {dead_lettered},"),
        format!("received: {received},"),
    ] {
        assert!(
            log.contains(&figure),
            "the exit summary does not say {figure:?}:\n{}",
            consumer.stderr_tail(40)
        );
    }

    // Prometheus notices: `up` drops to 0 and SQS2PGConsumerDown goes pending.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        prometheus.assert_running("the consumer's exit");
        let down = api.value(&format!("up{{job=\"{JOB}\"}}")).await == Some(0.0);
        let alerts = api.get("/api/v1/alerts", &[]).await.expect("alerts API");
        let pending = alerts["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|alert| {
                alert["labels"]["alertname"] == "SQS2PGConsumerDown" && alert["state"] == "pending"
            });
        if down && pending {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the consumer exited: up is 0: {down}, SQS2PGConsumerDown pending: {pending}; alerts {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The dead letters by reason, as scraped, are the reasons recorded on the DLQ messages.
    let mut dlq_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for letter in queues.dead_letters().await {
        let reason = attribute_of(&letter, attribute::REASON).unwrap_or_else(|| "(none)".into());
        *dlq_reasons.entry(reason).or_default() += 1;
    }
    assert_eq!(scraped_reasons, dlq_reasons);
    drop(prometheus);

    println!(
        "{EVENTS} events ({malformed} malformed): {inserted} rows, {dead_lettered} dead-lettered \
         {dlq_reasons:?}, {duplicates} duplicates; Prometheus caught up {:.1} s after the consumer \
         started; {dashboard_evaluated} dashboard queries and {alerts_evaluated} alert expressions \
         evaluated; SIGTERM to exit {:.1} s; {:.1} s in all",
        caught_up.as_secs_f64(),
        shutdown.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The image ships a stripped binary and checks its own readiness with it; compose builds
/// that image once and waits on the check.
#[test]
fn the_image_is_built_once_ships_a_stripped_binary_and_checks_its_own_readiness() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.clone())
            .collect()
    };
    // Where the runtime stage puts the binary.
    let copied: Vec<String> = all("COPY")
        .into_iter()
        .filter(|copy| copy.starts_with("--from=builder"))
        .collect();
    assert_eq!(copied.len(), 1, "{copied:?}");
    let words: Vec<&str> = copied[0].split_whitespace().collect();
    let (built, installed) = (words[1], words[2]);
    assert_eq!(built, installed, "{copied:?}");
    // The build stage writes it with objcopy from the release binary, without debug info.
    let runs = all("RUN").join("\n");
    let strip = "objcopy --strip-debug";
    let build = runs.find("cargo build --release").expect("a release build");
    let stripped = runs[build..].find(strip).expect("the binary is stripped");
    assert!(
        runs[build + stripped..].contains(&format!("target/release/sqs2pg {installed}")),
        "the stripped copy is not what the runtime stage copies: {runs}"
    );

    let healthchecks = all("HEALTHCHECK");
    assert_eq!(healthchecks.len(), 1, "{healthchecks:?}");
    let (options, command) = healthchecks[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD [...]");
    let command: Vec<String> = serde_json::from_str(command.trim())
        .unwrap_or_else(|error| panic!("the HEALTHCHECK CMD is not exec form: {error}"));
    assert_eq!(command, [installed, "healthcheck"]);
    // Longer than the check's own 2 s timeout, so a hung instance fails as "not ready".
    assert!(options.contains("--timeout=5s"), "{options}");
    assert!(
        HEALTHCHECK_TIMEOUT < Duration::from_secs(5),
        "the check's own timeout must undercut Docker's"
    );
    // `healthcheck` finds the server where the image makes it listen.
    let envs = all("ENV").join("\n");
    assert!(envs.contains("SQS2PG_METRICS_ADDR=0.0.0.0:9898"), "{envs}");

    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().expect("services");
    let builders: Vec<&String> = services
        .iter()
        .filter(|(_, service)| service.get("build").is_some())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "one service builds the image: {builders:?}"
    );
    for name in ["setup", "sqs2pg", "sender"] {
        assert_eq!(services[name]["image"], "sqs2pg:local", "{name}");
    }
    assert_eq!(services[builders[0].as_str()]["image"], "sqs2pg:local");
    let check = &services["sqs2pg"]["healthcheck"]["test"];
    assert_eq!(
        check,
        &serde_json::json!(["CMD", installed, "healthcheck"]),
        "compose's check is the image's"
    );
    assert_eq!(
        depends_on(&services["prometheus"], "sqs2pg").as_deref(),
        Some("service_healthy")
    );
    // Whatever waits on sqs2pg waits for it to be ready, not merely started.
    for (name, service) in services {
        if let Some(condition) = depends_on(service, "sqs2pg") {
            assert_eq!(condition, "service_healthy", "{name}");
        }
    }
    println!(
        "image: {installed}, stripped; HEALTHCHECK {command:?}; built once by {}",
        builders[0]
    );
}
