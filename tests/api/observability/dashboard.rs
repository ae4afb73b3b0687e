//! The Grafana dashboard: every panel is documented (in the panel and in
//! dashboards/README.md), reads the provisioned Prometheus, rates over the scrape's
//! interval, and the latency panels show their quantiles.

use std::collections::BTreeSet;

use sqs2pg::telemetry::metrics::names;

use super::{
    DATASOURCE_UID, DATASOURCES, JOB, README, dashboard, dashboard_queries, panels, read, yaml,
};

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
