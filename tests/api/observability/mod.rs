//! The observability deliverables, one module per concern:
//!
//! - [`queries`]: the dashboard's and the alert rules' PromQL, as promql-parser reads it,
//!   selects only metrics and labels the service exports, and the dashboard shows every one.
//! - [`dashboard`]: every panel is documented and reads the provisioned Prometheus.
//! - [`alerts`]: every alert rule is documented and unit-tested, firing and silent, and
//!   promtool accepts the rules, their tests and the configuration.
//! - [`docker`]: the Dockerfile and the docker compose stack agree with the repository and
//!   with each other.
//! - [`scrape`]: a real Prometheus scraping a real consumer answers every dashboard and
//!   alert query, with counts that agree with PostgreSQL and the dead-letter queue.
//!
//! Run them with `source .run/env && cargo test --test api -- observability::`. The static
//! checks need nothing; the promtool test needs `promtool` and the live test `prometheus`
//! as well (Debian's `prometheus` package, which `scripts/services.sh up` installs) plus the
//! PostgreSQL and LocalStack of `scripts/services.sh up`.

mod alerts;
mod dashboard;
mod docker;
mod queries;
mod scrape;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::repo;

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
// A real Prometheus

/// A real Prometheus (Debian's package), scraping the consumer on `metrics_port` every
/// second as job [`JOB`] and evaluating the alert rules every second; once it is ready.
async fn start_prometheus(
    logs: &crate::helpers::Logs,
    metrics_port: u16,
) -> (crate::helpers::Process, crate::helpers::PrometheusApi) {
    use crate::helpers::{Process, PrometheusApi, free_port};
    let prometheus_port = std::iter::repeat_with(free_port)
        .find(|port| *port != metrics_port)
        .unwrap();
    let config = logs.file("prometheus.yml");
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
    let mut command = std::process::Command::new("prometheus");
    command.args([
        format!("--config.file={}", config.display()),
        format!(
            "--storage.tsdb.path={}",
            logs.file("prometheus-data").display()
        ),
        format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
    ]);
    let mut prometheus = Process::spawn(logs, "prometheus", &mut command);
    let api = PrometheusApi::new(prometheus_port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !api.ready().await {
        prometheus.assert_running("its start");
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    (prometheus, api)
}

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
