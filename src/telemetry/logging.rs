//! Logging: structured events on stderr (text or JSON lines), filtered by `RUST_LOG`, with
//! the payload caps that keep raw events out of the log whatever `RUST_LOG` asks for.

/// How log events are written on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// The log filter when `RUST_LOG` is not set: info, the AWS SDK at warn, and refinery at
/// warn (it says "no migrations to apply" at info on every start; `migrate` prints that).
/// The credentials chain at error: its warning for a provider that failed is a dump of the
/// SDK's `Debug` output, HTTP response included, and sqs2pg says the same on one line.
const DEFAULT_LOG_FILTER: &str = "info,aws_config=warn,aws_config::meta::credentials::chain=error,aws_smithy_runtime=warn,aws_sdk_sqs=warn,refinery_core=warn";

/// Targets that log message payloads, capped at the most verbose level that is safe. At
/// TRACE the SDK's orchestrator (and its `::http` module) logs whole HTTP responses and
/// deserialized outputs, and a ReceiveMessage response holds the raw events: ips and device
/// ids that masking exists to keep out of logs. Nothing else logged a raw ip or device id at
/// TRACE (tests/api/secrets.rs checks), so the cap is this narrow.
pub const PAYLOAD_LOG_CAPS: &[(&str, tracing::Level)] = &[(
    "aws_smithy_runtime::client::orchestrator",
    tracing::Level::DEBUG,
)];

/// A `RUST_LOG` that cannot be what its author meant. Refused at start rather than replaced
/// by the default: a filter that silently logs something else hides what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error("RUST_LOG is not a valid log filter: {0}")]
    Invalid(tracing_subscriber::filter::ParseError),
    /// A bare word parses as a target and turns every other target off (`verbose` would
    /// silence the service), so a bare word must be a level.
    #[error(
        "RUST_LOG: `{0}` is not a level (trace, debug, info, warn, error, off); write `{0}=trace` to mean a target"
    )]
    NotALevel(String),
}

/// Parses `RUST_LOG` (`None` or empty: the default).
fn requested_filter(
    rust_log: Option<&str>,
) -> Result<tracing_subscriber::EnvFilter, LogFilterError> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let Some(directives) = rust_log.filter(|directives| !directives.trim().is_empty()) else {
        return Ok(EnvFilter::new(DEFAULT_LOG_FILTER));
    };
    let plain_word = |directive: &&str| {
        !directive.is_empty()
            && directive
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(word) = directives
        .split(',')
        .map(str::trim)
        .filter(plain_word)
        .find(|word| word.parse::<LevelFilter>().is_err())
    {
        return Err(LogFilterError::NotALevel(word.to_owned()));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(LogFilterError::Invalid)
}

/// The subscriber's filter: `RUST_LOG` (or the default), and the payload caps on top. The
/// caps are a second filter that must also pass, not directives mixed into `RUST_LOG`,
/// so no `RUST_LOG` can lift them, however specific its targets.
pub fn try_log_filter<S>(
    rust_log: Option<&str>,
) -> Result<impl tracing_subscriber::layer::Filter<S> + use<S>, LogFilterError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    let requested = requested_filter(rust_log)?;
    let caps = PAYLOAD_LOG_CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |caps, (target, level)| caps.with_target(*target, *level),
    );
    Ok(requested.and(caps))
}

/// [`try_log_filter`], for tests: an invalid filter panics with the reason.
pub fn log_filter<S>(rust_log: Option<&str>) -> impl tracing_subscriber::layer::Filter<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    try_log_filter(rust_log).unwrap_or_else(|error| panic!("{error}"))
}

/// Structured logs on stderr, filtered by [`try_log_filter`] with `RUST_LOG`. For `main`.
pub fn init_tracing(format: LogFormat) -> Result<(), LogFilterError> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = try_log_filter(rust_log.as_deref())?;
    // Colours only for a terminal: in a file or a log collector they are escape codes.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(StderrAroundProgressBar)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.event_format(JsonLines).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    Ok(())
}

/// The progress bar on stderr, if one is drawn: log lines are written around it.
static PROGRESS_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// From now on, log lines are written around `bar` (`None`: straight to stderr), so a line
/// never tears the bar and the bar never hides a line.
pub fn log_around(bar: Option<indicatif::ProgressBar>) {
    *PROGRESS_BAR.lock().expect("not poisoned") = bar;
}

/// Stderr for the log layer: each line is gathered whole, then written with the progress
/// bar (if any) cleared and redrawn after it.
struct StderrAroundProgressBar;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrAroundProgressBar {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::new())
    }
}

/// One log line on its way to stderr: written when dropped.
struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let write = || {
            // Nothing to do if stderr is gone: there is nowhere left to report it.
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let bar = PROGRESS_BAR.lock().expect("not poisoned").clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// One JSON object a line: `timestamp`, `level`, `target` and the event's `fields`. Events
/// bridged from the `log` crate (tokio-postgres, refinery) carry `log.file`, `log.line` and
/// `log.module_path` fields, absolute paths into the build machine's cargo registry; they
/// are dropped, and `log.target` becomes the target.
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields::default();
        // A pipeline's lines name its stream: the `stream` span's field, as a field.
        if let Some(stream) = context.event_scope().and_then(|scope| {
            scope
                .from_root()
                .find(|span| span.name() == "stream")
                .and_then(|span| {
                    let extensions = span.extensions();
                    let formatted =
                        extensions.get::<tracing_subscriber::fmt::FormattedFields<N>>()?;
                    without_ansi(&formatted.fields)
                        .strip_prefix("stream=")
                        .map(|name| name.trim_matches('"').to_owned())
                })
        }) {
            fields.values.insert("stream".to_owned(), stream.into());
        }
        event.record(&mut fields);
        let target = fields
            .log_target
            .unwrap_or_else(|| event.metadata().target().to_owned());
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": event.metadata().level().as_str(),
            "target": target,
            "fields": fields.values,
        });
        writeln!(writer, "{line}")
    }
}

/// `text` without its ANSI escape sequences (the span's fields are formatted with colours
/// on a terminal).
fn without_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An SGR sequence: ESC [ … letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[derive(Default)]
struct JsonFields {
    values: serde_json::Map<String, serde_json::Value>,
    log_target: Option<String>,
}

impl JsonFields {
    fn insert(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        match field.name() {
            "log.target" => self.log_target = value.as_str().map(str::to_owned),
            name if name.starts_with("log.") => {}
            name => {
                self.values.insert(name.to_owned(), value);
            }
        }
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.insert(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The targets of the events that `rust_log` (with the caps) lets through.
    fn logged(rust_log: Option<&str>, emit: impl FnOnce()) -> Vec<String> {
        use std::sync::Mutex;
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;

        struct Record(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> Layer<S> for Record {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let metadata = event.metadata();
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", metadata.level(), metadata.target()));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(Record(Arc::clone(&seen)).with_filter(log_filter(rust_log)));
        tracing::subscriber::with_default(subscriber, emit);
        seen.lock().unwrap().clone()
    }

    #[test]
    fn payload_logging_stays_capped_whatever_rust_log_asks_for() {
        let emit = || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "output");
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator::http", "body");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "attempt");
            tracing::trace!(target: "aws_smithy_runtime::client::retries", "retry");
            tracing::trace!(target: "hyper_util::client", "pool");
        };
        let allowed = [
            "DEBUG aws_smithy_runtime::client::orchestrator",
            "TRACE aws_smithy_runtime::client::retries",
            "TRACE hyper_util::client",
        ];
        assert_eq!(logged(Some("trace"), emit), allowed);
        let pointed = "trace,aws_smithy_runtime::client::orchestrator::http=trace,aws_smithy_runtime::client::orchestrator=trace";
        assert_eq!(logged(Some(pointed), emit), allowed);
        // Without RUST_LOG: info, and the SDK at warn.
        let default = || {
            tracing::info!(target: "sqs2pg::pipeline", "info");
            tracing::info!(target: "aws_smithy_runtime::client::orchestrator", "sdk");
        };
        assert_eq!(logged(None, default), ["INFO sqs2pg::pipeline"]);
    }

    #[test]
    fn an_invalid_rust_log_is_refused_naming_it() {
        for bad in ["bogus=[", "verbose", "info,verbose", "sqs2pg=loud"] {
            let error = requested_filter(Some(bad)).err().unwrap().to_string();
            assert!(error.starts_with("RUST_LOG"), "{bad}: {error}");
        }
        for good in [
            "trace",
            "WARN",
            "off",
            "info,sqs2pg::pipeline=debug",
            "sqs2pg=trace",
            "sqs2pg::pipeline",
            "",
        ] {
            assert!(requested_filter(Some(good)).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn refinery_says_nothing_at_info_by_default() {
        let emit = || {
            tracing::info!(target: "refinery_core::traits::r#async", "no migrations to apply");
            tracing::warn!(target: "refinery_core::traits::r#async", "a warning");
        };
        assert_eq!(logged(None, emit), ["WARN refinery_core::traits::r#async"]);
    }

    #[test]
    fn json_lines_hold_fields_without_log_metadata() {
        use std::sync::Mutex;
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .event_format(JsonLines);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(message = "Stopped.", inserted = 3u64, rate = 1.5);
            // A pipeline's line, in its stream's span.
            let stream = "orders".to_owned();
            tracing::info_span!("stream", stream = %stream).in_scope(|| {
                tracing::info!(message = "Committed.");
            });
            // The fields the `log` bridge adds to a dependency's `log::info!`.
            tracing::info!(
                log.file = "/root/.cargo/registry/src/tokio-postgres/src/connection.rs",
                log.line = 351u64,
                log.module_path = "tokio_postgres::connection",
                "NOTICE: something"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["fields"]["inserted"], 3);
        assert_eq!(lines[0]["fields"]["rate"], 1.5);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["fields"].get("stream").is_none());
        assert_eq!(lines[1]["fields"]["stream"], "orders", "{text}");
        assert_eq!(lines[2]["fields"]["message"], "NOTICE: something");
        assert!(
            !text.contains("registry") && !text.contains("log."),
            "{text}"
        );
    }
}
