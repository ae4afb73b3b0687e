//! A real Prometheus scraping a real consumer: every dashboard query answers with data,
//! every alert expression evaluates, Prometheus loads every rule, the scraped counts agree
//! with PostgreSQL, the dead-letter queue and the consumer's own exit summary, and once the
//! consumer stops, `up` drops and SQS2PGConsumerDown goes pending.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqs2pg::adapters::sqs::Queue;
use sqs2pg::domain::synthetic::{Recipe, generate};
use sqs2pg::telemetry::metrics::names;

use crate::helpers::*;

use super::{
    JOB, alert_rules, concrete_query, dashboard, dashboard_queries, start_prometheus,
    template_variables,
};

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
    let (mut prometheus, api) = start_prometheus(&test.logs, metrics_port).await;

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
        format!("dead-lettered: {dead_lettered};"),
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
