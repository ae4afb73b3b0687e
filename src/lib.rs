//! sqs2pg: exactly-once ingestion of user-login events from SQS into PostgreSQL, with PII
//! masked by keyed HMAC-SHA256.
//!
//! # Layout
//! Dependencies run one way: domain ← retry ← adapters, telemetry ← pipeline ← cli.
//! - [`domain`]: the pure core, no I/O. Parse, validate and mask one body with the
//!   keyring's current key; envelopes (SNS, EventBridge); dead-letter reasons, their
//!   attribute codec and the tag that proves sqs2pg wrote them; redaction for `dlq
//!   inspect`; the invariants shared by property tests and fuzzing.
//! - [`retry`]: transient-or-permanent classification and the one retry mechanism (backoff
//!   with jitter), which reports each retry through a callback.
//! - [`adapters`]: SQS ([`adapters::sqs::Queue`]) and PostgreSQL ([`adapters::postgres::Sink`])
//!   behind traits, with in-memory fakes for tests.
//! - [`telemetry`]: typed events (one `emit()` logs and counts), the metric registry, the
//!   `/metrics`, `/healthz`, `/readyz` endpoints, logging setup, and the throttle that
//!   summarises poison floods.
//! - [`pipeline`]: receive → batch → write → dead-letter → delete, with the heartbeat: each
//!   stage a module, joined by bounded channels; its report tells people how a run goes.
//! - [`cli`]: flags and environment variables, and one module per subcommand (`run` with its
//!   progress bar, `status`, `digest`, `dlq`, …).
//! - [`error_chain`]: an error and its causes on one line, for every fatal error and log.

#[cfg(feature = "service")]
pub mod adapters;
#[cfg(feature = "service")]
pub mod cli;
pub mod domain;
pub mod error_chain;
#[cfg(feature = "service")]
pub mod pipeline;
#[cfg(feature = "service")]
pub mod retry;
#[cfg(feature = "service")]
pub mod telemetry;

pub use domain::dead_letter::DeadLetterReason;
