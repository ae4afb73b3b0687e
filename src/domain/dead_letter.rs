//! The dead-letter vocabulary: bounded reason codes and the message attributes that
//! travel with a message into the dead-letter queue and back out on redrive.

use chrono::{DateTime, Utc};
use strum::VariantNames as _;

/// Message attribute names. The `sqs2pg.` prefix keeps them apart from a producer's own.
pub mod attribute {
    /// Why the message was dead-lettered: a [`super::DeadLetterReason`] code.
    pub const REASON: &str = "sqs2pg.reason";
    /// A human-readable explanation. Built from typed rejections, so it never holds PII.
    pub const DETAIL: &str = "sqs2pg.detail";
    /// The id the message had in the source queue: the idempotency key, kept across redrives.
    pub const ORIGINAL_MESSAGE_ID: &str = "sqs2pg.original_message_id";
    /// When the message was first sent (ms since the epoch), so a redriven row keeps its date.
    pub const ORIGINAL_SENT_TIMESTAMP: &str = "sqs2pg.original_sent_timestamp";
    /// The queue the message was dead-lettered from.
    pub const SOURCE_QUEUE: &str = "sqs2pg.source_queue";
    /// When the source queue first handed the message to a consumer (RFC 3339).
    pub const FIRST_RECEIVED_AT: &str = "sqs2pg.first_received_at";
}

/// Why a message was dead-lettered. A closed set: it labels metrics and DLQ messages, so
/// its codes (snake case: `invalid_json`) are part of the interface.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
    strum::VariantNames,
)]
#[strum(
    serialize_all = "snake_case",
    parse_err_ty = UnknownReason,
    parse_err_fn = UnknownReason::new
)]
pub enum DeadLetterReason {
    InvalidJson,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidValue,
    /// An SNS notification or EventBridge envelope that is broken, or a body without the
    /// envelope the configured mode requires (see [`crate::domain::envelope`]).
    InvalidEnvelope,
    /// The database refused the row for a permanent reason (a constraint, bad data).
    DatabaseRejected,
}

impl DeadLetterReason {
    /// The code, as a metric label and attribute value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dead-letter reason `{0}`; expected one of: {list}",
    list = DeadLetterReason::VARIANTS.join(", ")
)]
pub struct UnknownReason(String);

impl UnknownReason {
    fn new(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// A message on its way to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The SQS id of the copy being dead-lettered: what makes the DLQ send idempotent.
    pub sqs_message_id: String,
    /// The idempotency key of the message (see [`attribute::ORIGINAL_MESSAGE_ID`]).
    pub message_id: String,
    /// The original body, byte for byte.
    pub body: String,
    pub reason: DeadLetterReason,
    pub detail: String,
    pub sent_at: DateTime<Utc>,
    pub first_received_at: DateTime<Utc>,
    /// The message group on a FIFO queue; the dead letter keeps it.
    pub group_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn reason_codes_round_trip() {
        for reason in DeadLetterReason::iter() {
            assert_eq!(reason.as_str().parse::<DeadLetterReason>().unwrap(), reason);
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(DeadLetterReason::InvalidJson.as_str(), "invalid_json");
        let error = "nope".parse::<DeadLetterReason>().unwrap_err().to_string();
        assert!(
            error.ends_with("invalid_json, not_an_object, missing_field, wrong_type, invalid_value, invalid_envelope, database_rejected"),
            "{error}"
        );
    }
}
