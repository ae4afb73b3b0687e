//! The dead-letter vocabulary: bounded reason codes and the message attributes that
//! travel with a message into the dead-letter queue and back out on redrive.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

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

/// Why a message was dead-lettered. A closed set: it labels metrics and DLQ messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    pub const ALL: [Self; 7] = [
        Self::InvalidJson,
        Self::NotAnObject,
        Self::MissingField,
        Self::WrongType,
        Self::InvalidValue,
        Self::InvalidEnvelope,
        Self::DatabaseRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::InvalidEnvelope => "invalid_envelope",
            Self::DatabaseRejected => "database_rejected",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown dead-letter reason `{0}`; expected one of: {list}", list = reason_list())]
pub struct UnknownReason(String);

fn reason_list() -> String {
    DeadLetterReason::ALL
        .map(DeadLetterReason::as_str)
        .join(", ")
}

impl FromStr for DeadLetterReason {
    type Err = UnknownReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| UnknownReason(text.to_owned()))
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

    #[test]
    fn reason_codes_round_trip() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(reason.as_str().parse::<DeadLetterReason>().unwrap(), reason);
        }
        let error = "nope".parse::<DeadLetterReason>().unwrap_err().to_string();
        assert!(
            error.ends_with("invalid_json, not_an_object, missing_field, wrong_type, invalid_value, invalid_envelope, database_rejected"),
            "{error}"
        );
    }
}
