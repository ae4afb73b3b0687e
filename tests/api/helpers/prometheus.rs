//! Reading our own metrics. An in-process pipeline's come from its registry (`gather`), not
//! from the text format; a child process's are scraped from its /metrics page, and this is
//! the one parser of that page in the tests. Also the HTTP API of a real Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqs2pg::telemetry::metrics::Metrics;

/// The value of an unlabelled counter or gauge, or the sample count of a histogram, read
/// from the registry (`gather`), not from the text format. Sums over label values.
pub fn metric_value(metrics: &Metrics, name: &str) -> f64 {
    let families = metrics.registry().gather();
    let family = families
        .iter()
        .find(|family| family.name() == name)
        .unwrap_or_else(|| panic!("{name} is not registered"));
    family
        .get_metric()
        .iter()
        .map(|metric| {
            if let Some(counter) = metric.counter.as_ref() {
                counter.value()
            } else if let Some(gauge) = metric.gauge.as_ref() {
                gauge.value()
            } else if let Some(histogram) = metric.histogram.as_ref() {
                histogram.sample_count() as f64
            } else {
                panic!("{name} is neither a counter, a gauge nor a histogram")
            }
        })
        .sum()
}

/// One sample of a scraped page: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a /metrics page in Prometheus's text format (comments and blank lines
/// skipped). Fails the test on a line it cannot read.
pub fn scraped_samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect()
}

/// The value of the unlabelled metric `name` on a scraped page, if it is there.
/// The value of the unlabelled series `name`, or the sum of its series over the streams (a
/// stream's metrics carry its name in a `stream` label, and nothing else).
pub fn scraped_value(page: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = scraped_samples(page)
        .into_iter()
        .filter(|sample| sample.name == name && sample.labels.keys().all(|label| label == "stream"))
        .map(|sample| sample.value)
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.insert(label.trim().to_owned(), value);
            inner = after;
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

/// The parser reads the service's own page as its registry holds it: every counter and
/// gauge of a fresh `Metrics` with its labels and value, and each histogram's count.
#[test]
fn a_scraped_page_reads_as_the_registry_holds_it() {
    use prometheus::proto::MetricType;
    let metrics = Metrics::new();
    let samples = scraped_samples(&metrics.render());
    let mut checked = 0;
    for family in metrics.registry().gather() {
        for metric in family.get_metric() {
            let labels: BTreeMap<String, String> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
                .collect();
            let (name, value) = match family.get_field_type() {
                MetricType::COUNTER => (family.name().to_owned(), metric.get_counter().value()),
                MetricType::GAUGE => (family.name().to_owned(), metric.get_gauge().value()),
                MetricType::HISTOGRAM => (
                    format!("{}_count", family.name()),
                    metric.get_histogram().get_sample_count() as f64,
                ),
                other => panic!("{}: {other:?}", family.name()),
            };
            assert!(
                samples.iter().any(|sample| sample.name == name
                    && sample.labels == labels
                    && sample.value == value),
                "{name} {labels:?} = {value} is not read from the page"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} series");
    assert_eq!(scraped_value(&metrics.render(), "sqs2pg_ready"), Some(0.0));
}

#[test]
fn label_values_are_unescaped_and_a_labelled_sample_is_not_an_unlabelled_one() {
    let page = "# HELP x a metric\n# TYPE x gauge\n\
                x{a=\"q\\\"uote\",b=\"back\\\\slash\",c=\"new\\nline\"} 1.5\n\
                y_bucket{le=\"+Inf\"} 3\n";
    let samples = scraped_samples(page);
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert_eq!(
        samples[0].labels,
        BTreeMap::from([
            ("a".to_owned(), "q\"uote".to_owned()),
            ("b".to_owned(), "back\\slash".to_owned()),
            ("c".to_owned(), "new\nline".to_owned()),
        ])
    );
    assert_eq!(samples[0].value, 1.5);
    assert_eq!(scraped_value(page, "x"), None, "x has labels");
    assert_eq!(samples[1].labels["le"], "+Inf");
}

/// The HTTP API of a Prometheus server.
pub struct PrometheusApi {
    client: reqwest::Client,
    base: String,
}

impl PrometheusApi {
    pub fn new(port: u16) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `data` of a successful API answer, or what went wrong.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .map_err(|error| error.to_string())?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|error| format!("HTTP {status}: {error}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {} {}",
                body["errorType"], body["error"]
            ))
        }
    }

    pub async fn query(&self, expr: &str) -> Result<Value, String> {
        self.get("/api/v1/query", &[("query", expr)]).await
    }

    /// The value of a query that returns one series, if it does.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        let data = self.query(expr).await.ok()?;
        match data["result"].as_array()?.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    pub async fn ready(&self) -> bool {
        self.client
            .get(format!("{}/-/ready", self.base))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }
}

/// How many series (or values) a query answered.
pub fn series_count(data: &Value) -> usize {
    match data["resultType"].as_str() {
        Some("vector" | "matrix") => data["result"].as_array().map_or(0, Vec::len),
        Some("scalar" | "string") => 1,
        _ => 0,
    }
}
