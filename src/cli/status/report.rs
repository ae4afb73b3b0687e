//! The pure half of `sqs2pg status`: from what was read, the report (its JSON shape, its
//! text screen) and the attention checks. No I/O, so every decision is unit-tested.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::adapters::postgres::status::{DatabaseStatus, LAG_MAX_ROWS, LAG_WINDOW};
use crate::adapters::sqs::QueueDepth;
use crate::cli::plural;

/// Why the age of the oldest message is not shown.
pub const OLDEST_AGE_UNKNOWN: &str = "unknown: SQS reports no such attribute (CloudWatch's ApproximateAgeOfOldestMessage metric has it)";

/// Everything `status` read, from SQS and the database.
#[derive(Debug, Clone)]
pub struct Observed {
    pub queue_url: String,
    pub dlq_url: String,
    pub queue: QueueDepth,
    pub dlq: QueueDepth,
    pub database: DatabaseStatus,
    /// The newest migration this binary carries.
    pub known_version: i64,
}

/// The thresholds of the attention checks.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub stall_after: Duration,
    pub dlq_window: Duration,
}

/// `status --output json` prints this shape; fields are only ever added, never renamed or
/// removed. Times are RFC 3339 UTC, durations seconds (`_s`), counts whole numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The database's clock when it was read: every age is counted from it.
    pub checked_at: String,
    pub queue: SourceQueue,
    pub dlq: DeadLetterQueue,
    pub rows: Rows,
    pub lag_s: LagShape,
    pub last_commit: LastCommit,
    pub migrations: Migrations,
    pub thresholds: ThresholdsShape,
    /// Empty when all is well (exit 0); else one entry per check that failed (exit 2).
    pub attention: Vec<Attention>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceQueue {
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Always `null` for now: see [`OLDEST_AGE_UNKNOWN`].
    pub oldest_age_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterQueue {
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Dead letters `run` recorded for this source queue (`dead_letters`): all time, the
    /// last hour, the last `dlq_window_s`. Messages SQS itself moved after too many
    /// receives are in the DLQ's depth but not recorded.
    pub recorded_total: u64,
    pub recorded_last_hour: u64,
    pub recorded_in_window: u64,
    pub by_reason: BTreeMap<String, ReasonCounts>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReasonCounts {
    pub total: u64,
    pub last_hour: u64,
}

/// Rows committed (all queues writing to this database), by `ingested_at`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rows {
    pub last_minute: u64,
    pub last_hour: u64,
    pub last_day: u64,
}

/// `ingested_at - sent_at` over the newest rows of the last `window_s` (at most
/// [`LAG_MAX_ROWS`] of them); `null` percentiles without rows.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LagShape {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub rows: u64,
    pub window_s: f64,
}

/// The newest row's `ingested_at`; `null` without rows.
#[derive(Debug, Clone, Serialize)]
pub struct LastCommit {
    pub at: Option<String>,
    pub age_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Migrations {
    /// The newest migration applied to the database; `null` if none.
    pub applied: Option<i64>,
    /// The newest this binary has.
    pub known: i64,
    pub behind: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ThresholdsShape {
    pub stall_after_s: f64,
    pub dlq_window_s: f64,
}

/// A check that failed, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    pub check: Check,
    pub detail: String,
}

/// The attention checks, by their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Dead letters recorded within the DLQ window.
    DlqGrowing,
    /// Messages wait and nothing was committed for longer than the stall threshold.
    Stalled,
    /// The database lacks migrations this binary has.
    MigrationsBehind,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DlqGrowing => "dlq_growing",
            Self::Stalled => "stalled",
            Self::MigrationsBehind => "migrations_behind",
        }
    }
}

/// Builds the report and runs the checks.
pub fn assess(observed: &Observed, thresholds: Thresholds) -> Report {
    let database = &observed.database;
    let now = database.now;
    let age = |at: DateTime<Utc>| ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0);
    let letters = database.dead_letters.values();
    let recorded_in_window: u64 = letters.clone().map(|counts| counts.in_window).sum();
    let last_dead_letter = letters.clone().filter_map(|counts| counts.last_at).max();
    let migrations = Migrations {
        applied: database.applied_version,
        known: observed.known_version,
        behind: database.applied_version.unwrap_or(0) < observed.known_version,
    };

    let mut attention = Vec::new();
    if recorded_in_window > 0 {
        attention.push(Attention {
            check: Check::DlqGrowing,
            detail: format!(
                "{} recorded in the last {}",
                plural(recorded_in_window, "dead letter"),
                humanized(thresholds.dlq_window)
            ),
        });
    }
    let waiting = observed.queue.visible + observed.queue.in_flight;
    // A commit of either kind is progress: a consumer busy with poison commits no rows.
    let last_progress = database.last_row_at.max(last_dead_letter);
    if waiting > 0 {
        let stalled_for = last_progress.map(age);
        let waiting_text = format!(
            "{} waiting ({} visible, {} in flight)",
            plural(waiting, "message"),
            observed.queue.visible,
            observed.queue.in_flight
        );
        match stalled_for {
            None => attention.push(Attention {
                check: Check::Stalled,
                detail: format!("{waiting_text} and nothing ever committed"),
            }),
            Some(seconds) if seconds > thresholds.stall_after.as_secs_f64() => {
                attention.push(Attention {
                    check: Check::Stalled,
                    detail: format!(
                        "{waiting_text} and nothing committed for {} (more than {})",
                        seconds_text(seconds),
                        humanized(thresholds.stall_after)
                    ),
                })
            }
            Some(_) => {}
        }
    }
    if migrations.behind {
        attention.push(Attention {
            check: Check::MigrationsBehind,
            detail: format!(
                "the database is at {}, this binary has up to V{}: run `sqs2pg migrate` (or start `sqs2pg run`)",
                version_text(migrations.applied),
                migrations.known
            ),
        });
    }

    Report {
        checked_at: timestamp(now),
        queue: SourceQueue {
            url: observed.queue_url.clone(),
            visible: observed.queue.visible,
            in_flight: observed.queue.in_flight,
            delayed: observed.queue.delayed,
            oldest_age_s: None,
        },
        dlq: DeadLetterQueue {
            url: observed.dlq_url.clone(),
            visible: observed.dlq.visible,
            in_flight: observed.dlq.in_flight,
            delayed: observed.dlq.delayed,
            recorded_total: letters.clone().map(|counts| counts.total).sum(),
            recorded_last_hour: letters.clone().map(|counts| counts.last_hour).sum(),
            recorded_in_window,
            by_reason: database
                .dead_letters
                .iter()
                .map(|(reason, counts)| {
                    (
                        reason.clone(),
                        ReasonCounts {
                            total: counts.total,
                            last_hour: counts.last_hour,
                        },
                    )
                })
                .collect(),
        },
        rows: Rows {
            last_minute: database.rows.last_minute,
            last_hour: database.rows.last_hour,
            last_day: database.rows.last_day,
        },
        lag_s: LagShape {
            p50: database.lag.p50_s,
            p99: database.lag.p99_s,
            rows: database.lag.rows,
            window_s: LAG_WINDOW.as_secs_f64(),
        },
        last_commit: LastCommit {
            at: database.last_row_at.map(timestamp),
            age_s: database.last_row_at.map(age),
        },
        migrations,
        thresholds: ThresholdsShape {
            stall_after_s: thresholds.stall_after.as_secs_f64(),
            dlq_window_s: thresholds.dlq_window.as_secs_f64(),
        },
        attention,
    }
}

/// Width of the labels of the text screen.
const LABEL: usize = 19;

/// The text screen: one line per fact, labels aligned, units given.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut line = |label: &str, value: &str| {
            let width = LABEL.max(label.len() + 1);
            let _ = writeln!(out, "{label:<width$}{value}");
        };
        line("checked at", &self.checked_at);
        line("source queue", &self.queue.url);
        line("  visible", &plural(self.queue.visible, "message"));
        line("  in flight", &plural(self.queue.in_flight, "message"));
        line("  delayed", &plural(self.queue.delayed, "message"));
        line(
            "  oldest message",
            &self
                .queue
                .oldest_age_s
                .map(seconds_text)
                .unwrap_or_else(|| OLDEST_AGE_UNKNOWN.to_owned()),
        );
        line("dead-letter queue", &self.dlq.url);
        line(
            "  depth",
            &format!(
                "{} ({} visible, {} in flight, {} delayed)",
                plural(
                    self.dlq.visible + self.dlq.in_flight + self.dlq.delayed,
                    "message"
                ),
                self.dlq.visible,
                self.dlq.in_flight,
                self.dlq.delayed
            ),
        );
        line(
            "  recorded",
            &format!(
                "{} in all, {} in the last hour, {} in the last {}",
                self.dlq.recorded_total,
                self.dlq.recorded_last_hour,
                self.dlq.recorded_in_window,
                humanized(Duration::from_secs_f64(self.thresholds.dlq_window_s))
            ),
        );
        for (reason, counts) in &self.dlq.by_reason {
            line(
                &format!("    {reason}"),
                &format!(
                    "{} in all, {} in the last hour",
                    counts.total, counts.last_hour
                ),
            );
        }
        line(
            "rows",
            &format!(
                "{} in the last minute, {} in the last hour, {} in the last day",
                self.rows.last_minute, self.rows.last_hour, self.rows.last_day
            ),
        );
        line(
            "ingestion lag",
            &match (self.lag_s.p50, self.lag_s.p99) {
                (Some(p50), Some(p99)) => format!(
                    "p50 {}, p99 {} (the newest {} of the last hour, at most {LAG_MAX_ROWS})",
                    seconds_text(p50),
                    seconds_text(p99),
                    plural(self.lag_s.rows, "row"),
                ),
                _ => "no rows in the last hour".to_owned(),
            },
        );
        line(
            "last commit",
            &match (&self.last_commit.at, self.last_commit.age_s) {
                (Some(at), Some(age)) => format!("{at}, {} ago", seconds_text(age)),
                _ => "none: no rows".to_owned(),
            },
        );
        line(
            "migrations",
            &format!(
                "{} applied, V{} known: {}",
                version_text(self.migrations.applied),
                self.migrations.known,
                if self.migrations.behind {
                    "behind"
                } else {
                    "up to date"
                }
            ),
        );
        if self.attention.is_empty() {
            line("attention", "none");
        }
        for (index, item) in self.attention.iter().enumerate() {
            let label = if index == 0 { "attention" } else { "" };
            line(label, &format!("{}: {}", item.check.as_str(), item.detail));
        }
        f.write_str(&out)
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn version_text(version: Option<i64>) -> String {
    version.map_or_else(
        || "no migration".to_owned(),
        |version| format!("V{version}"),
    )
}

/// Seconds for people: `0.412 s` below a minute, else `5m 3s`.
fn seconds_text(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.3} s")
    } else {
        humanized(Duration::from_secs(seconds.round() as u64))
    }
}

fn humanized(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::postgres::status::{DeadLetterCounts, Lag, RowCounts};

    const THRESHOLDS: Thresholds = Thresholds {
        stall_after: Duration::from_secs(300),
        dlq_window: Duration::from_secs(300),
    };

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// A healthy deployment: rows a second ago, nothing waiting, no dead letters.
    fn healthy() -> Observed {
        Observed {
            queue_url: "http://h/000000000000/q".to_owned(),
            dlq_url: "http://h/000000000000/q-dlq".to_owned(),
            queue: QueueDepth::default(),
            dlq: QueueDepth::default(),
            database: DatabaseStatus {
                now: at("2026-05-01T10:00:00Z"),
                applied_version: Some(4),
                tables_exist: true,
                rows: RowCounts {
                    last_minute: 10,
                    last_hour: 100,
                    last_day: 1000,
                },
                lag: Lag {
                    rows: 100,
                    p50_s: Some(0.25),
                    p99_s: Some(1.5),
                },
                last_row_at: Some(at("2026-05-01T09:59:59Z")),
                dead_letters: BTreeMap::new(),
            },
            known_version: 4,
        }
    }

    fn checks(observed: &Observed) -> Vec<Check> {
        assess(observed, THRESHOLDS)
            .attention
            .iter()
            .map(|item| item.check)
            .collect()
    }

    #[test]
    fn a_healthy_deployment_needs_no_attention() {
        assert_eq!(checks(&healthy()), []);
        let mut idle = healthy();
        idle.database.last_row_at = Some(at("2026-04-01T00:00:00Z"));
        assert_eq!(
            checks(&idle),
            [],
            "idle with nothing waiting is not stalled"
        );
    }

    #[test]
    fn a_backlog_without_commits_past_the_threshold_is_stalled() {
        let mut observed = healthy();
        observed.queue.visible = 7;
        observed.database.last_row_at = Some(at("2026-05-01T09:55:00Z"));
        assert_eq!(checks(&observed), [], "exactly 5m is not more than 5m");
        observed.database.last_row_at = Some(at("2026-05-01T09:54:59Z"));
        assert_eq!(checks(&observed), [Check::Stalled]);
        let report = assess(&observed, THRESHOLDS);
        assert_eq!(
            report.attention[0].detail,
            "7 messages waiting (7 visible, 0 in flight) and nothing committed for 5m 1s (more than 5m)"
        );

        let mut in_flight_only = healthy();
        in_flight_only.queue.in_flight = 3;
        in_flight_only.database.last_row_at = None;
        assert_eq!(checks(&in_flight_only), [Check::Stalled]);
        assert!(
            assess(&in_flight_only, THRESHOLDS).attention[0]
                .detail
                .ends_with("nothing ever committed")
        );

        let mut delayed_only = healthy();
        delayed_only.queue.delayed = 3;
        delayed_only.database.last_row_at = None;
        assert_eq!(
            checks(&delayed_only),
            [],
            "delayed messages are not due yet"
        );
    }

    #[test]
    fn a_recent_dead_letter_counts_as_progress_but_makes_the_dlq_grow() {
        let mut observed = healthy();
        observed.queue.visible = 7;
        observed.database.last_row_at = Some(at("2026-05-01T09:00:00Z"));
        observed.database.dead_letters.insert(
            "invalid_json".to_owned(),
            DeadLetterCounts {
                total: 3,
                last_hour: 2,
                in_window: 1,
                last_at: Some(at("2026-05-01T09:59:00Z")),
            },
        );
        assert_eq!(checks(&observed), [Check::DlqGrowing]);
        assert_eq!(
            assess(&observed, THRESHOLDS).attention[0].detail,
            "1 dead letter recorded in the last 5m"
        );
        observed
            .database
            .dead_letters
            .get_mut("invalid_json")
            .unwrap()
            .in_window = 0;
        assert_eq!(
            checks(&observed),
            [],
            "a dead letter a minute ago is progress"
        );
    }

    #[test]
    fn migrations_behind_the_binary_need_attention_and_ahead_do_not() {
        let mut observed = healthy();
        observed.database.applied_version = Some(2);
        assert_eq!(checks(&observed), [Check::MigrationsBehind]);
        observed.database.applied_version = None;
        assert_eq!(checks(&observed), [Check::MigrationsBehind]);
        observed.database.applied_version = Some(5);
        assert_eq!(checks(&observed), [], "a newer database: an older binary");
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let mut observed = healthy();
        observed.queue.visible = 2;
        observed.database.dead_letters.insert(
            "missing_field".to_owned(),
            DeadLetterCounts {
                total: 3,
                last_hour: 2,
                in_window: 1,
                last_at: Some(at("2026-05-01T09:59:00Z")),
            },
        );
        let json = serde_json::to_value(assess(&observed, THRESHOLDS)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "checked_at": "2026-05-01T10:00:00.000Z",
                "queue": {"url": "http://h/000000000000/q", "visible": 2, "in_flight": 0, "delayed": 0, "oldest_age_s": null},
                "dlq": {"url": "http://h/000000000000/q-dlq", "visible": 0, "in_flight": 0, "delayed": 0,
                        "recorded_total": 3, "recorded_last_hour": 2, "recorded_in_window": 1,
                        "by_reason": {"missing_field": {"total": 3, "last_hour": 2}}},
                "rows": {"last_minute": 10, "last_hour": 100, "last_day": 1000},
                "lag_s": {"p50": 0.25, "p99": 1.5, "rows": 100, "window_s": 3600.0},
                "last_commit": {"at": "2026-05-01T09:59:59.000Z", "age_s": 1.0},
                "migrations": {"applied": 4, "known": 4, "behind": false},
                "thresholds": {"stall_after_s": 300.0, "dlq_window_s": 300.0},
                "attention": [{"check": "dlq_growing", "detail": "1 dead letter recorded in the last 5m"}],
            })
        );
    }

    #[test]
    fn the_text_screen_aligns_its_labels_and_lists_each_attention() {
        let mut observed = healthy();
        observed.database.applied_version = Some(2);
        observed.queue.visible = 1;
        observed.database.last_row_at = None;
        observed.database.lag = Lag::default();
        let text = assess(&observed, THRESHOLDS).to_string();
        println!("{text}");
        for line in text.lines() {
            assert!(
                line.len() > LABEL && !line[..LABEL].ends_with(|c: char| !c.is_whitespace()),
                "label not padded: {line:?}"
            );
        }
        for expected in [
            "  visible          1 message\n",
            "ingestion lag      no rows in the last hour\n",
            "last commit        none: no rows\n",
            "migrations         V2 applied, V4 known: behind\n",
            "attention          stalled: 1 message waiting (1 visible, 0 in flight) and nothing ever committed\n",
            "                   migrations_behind: the database is at V2",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        let healthy = assess(&healthy(), THRESHOLDS).to_string();
        assert!(healthy.contains("attention          none\n"), "{healthy}");
        assert!(
            healthy.contains("ingestion lag      p50 0.250 s, p99 1.500 s"),
            "{healthy}"
        );
        assert!(
            healthy.contains("last commit        2026-05-01T09:59:59.000Z, 1.000 s ago"),
            "{healthy}"
        );
    }

    #[test]
    fn long_durations_read_in_minutes_and_hours() {
        assert_eq!(seconds_text(0.4125), "0.412 s");
        assert_eq!(seconds_text(59.9), "59.900 s");
        assert_eq!(seconds_text(303.0), "5m 3s");
        assert_eq!(seconds_text(7322.4), "2h 2m 2s");
    }
}
