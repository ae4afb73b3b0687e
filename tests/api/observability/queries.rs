//! The dashboard's and the alert rules' PromQL, read by promql-parser: every selector is
//! found (past strings, groupings, functions and durations), and selects only metrics and
//! labels the service exports, pinned to its job; the dashboard shows every metric.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use prometheus::proto::MetricType;
use promql_parser::label::{METRIC_NAME, MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use sqs2pg::telemetry::metrics::{Metrics, names};

use super::{JOB, alert_rules, concrete_query, dashboard, dashboard_queries, template_variables};

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
// What the service exports, read from its own registry.

struct Exported {
    /// Metric family name -> type (counter, gauge, histogram).
    types: BTreeMap<String, String>,
    /// Series name (with a histogram's _bucket/_sum/_count) -> every label=value it has.
    labels: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Exported {
    /// What a fresh `Metrics` holds, from its registry (`gather`), not its text format:
    /// every series exists from the start.
    fn read() -> Self {
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for family in Metrics::new().registry().gather() {
            let name = family.name().to_owned();
            let kind = match family.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                other => panic!("{name} is a {other:?}, which these checks do not know"),
            };
            types.insert(name.clone(), kind.to_owned());
            // The series Prometheus stores: a histogram's _bucket (with `le`), _sum and _count.
            let series: Vec<String> = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|suffix| format!("{name}{suffix}"))
                    .collect()
            } else {
                vec![name.clone()]
            };
            for metric in family.get_metric() {
                let pairs: Vec<(String, String)> = metric
                    .get_label()
                    .iter()
                    .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
                    .collect();
                for series in &series {
                    labels
                        .entry(series.clone())
                        .or_default()
                        .extend(pairs.iter().cloned());
                }
                if kind == "histogram" {
                    let buckets = labels.entry(format!("{name}_bucket")).or_default();
                    for bucket in metric.get_histogram().get_bucket() {
                        buckets.insert(("le".to_owned(), bucket_bound(bucket.upper_bound())));
                    }
                    buckets.insert(("le".to_owned(), "+Inf".to_owned()));
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

/// A bucket's `le` as the text format writes it.
fn bucket_bound(upper_bound: f64) -> String {
    if upper_bound == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        upper_bound.to_string()
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
