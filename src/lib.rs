//! sqs2pg: exactly-once ingestion of user-login events from SQS into PostgreSQL, with PII
//! masked by keyed HMAC-SHA256.
//!
//! # Layout
//! - [`event`]: the pure core. Parse, validate and mask one body; typed rejections.
//! - [`envelope`]: pure too. The event inside an SNS notification or an EventBridge event.
//! - `invariants` (tests and fuzzing only): what must hold for any body.
//! - [`dead_letter`]: reason codes and attributes of dead-lettered messages.
//! - [`redact`]: pure too. A body as `dlq inspect` may show it: no raw value at any depth.
//! - [`queue`]: the SQS adapter behind the [`queue::Queue`] trait.
//! - [`sink`]: the PostgreSQL adapter: idempotent inserts, the dead-letter record, migrations.
//! - [`consumer`]: the loop: receive → transform → commit → dead-letter → delete, with the
//!   visibility heartbeat, retries and graceful shutdown.
//! - [`retry`]: transient-or-permanent classification and backoff with jitter.
//! - [`metrics`]: every metric name, and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! - [`config`]: flags and environment variables.
//! - [`synthetic`]: the seeded generator behind `sqs2pg send`.
//! - [`app`]: the subcommands, wired from the parts above.

#[cfg(feature = "service")]
pub mod app;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "service")]
pub mod consumer;
pub mod dead_letter;
pub mod envelope;
pub mod event;
#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
#[cfg(feature = "service")]
pub mod metrics;
#[cfg(feature = "service")]
pub mod queue;
pub mod redact;
#[cfg(feature = "service")]
pub mod retry;
#[cfg(feature = "service")]
pub mod sink;
#[cfg(feature = "service")]
pub mod synthetic;

pub use dead_letter::DeadLetterReason;
