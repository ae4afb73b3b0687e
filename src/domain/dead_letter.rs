//! The dead-letter vocabulary: bounded reason codes, and the message attributes that
//! travel with a message into the dead-letter queue and back out on redrive, with their one
//! codec ([`DeadLetterAttributes`]). Pure: attributes are names and strings here; the SQS
//! adapter converts them to and from the SDK's types.

use std::collections::BTreeMap;

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

/// The `sqs2pg.reason` attribute as a dead letter carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedReason {
    /// One of our codes.
    Known(DeadLetterReason),
    /// Any other text. Whoever can send to the DLQ can set the attribute, so this was not
    /// written by sqs2pg: neither it nor the detail beside it is to be trusted or shown.
    Unrecognized(String),
}

/// Every `sqs2pg.*` attribute a dead letter (or a redriven message) carries, decoded.
/// Each is optional: SQS's own redrive policy moves messages to the DLQ with none, a
/// redriven message carries only the original id and timestamp, and a dead letter near the
/// size limit keeps only those that fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterAttributes {
    /// Absent: the message was moved by SQS's redrive policy, not by sqs2pg.
    pub reason: Option<RecordedReason>,
    pub detail: Option<String>,
    /// The idempotency key of the message, kept across redrives.
    pub original_message_id: Option<String>,
    /// When the message was first sent; carried in whole milliseconds.
    pub original_sent_at: Option<DateTime<Utc>>,
    /// The name of the queue it was dead-lettered from.
    pub source_queue: Option<String>,
    pub first_received_at: Option<DateTime<Utc>>,
}

impl DeadLetterAttributes {
    /// What the consumer attaches to a poison message it dead-letters from `source_queue`.
    pub fn of(letter: &DeadLetter, source_queue: &str) -> Self {
        Self {
            reason: Some(RecordedReason::Known(letter.reason)),
            detail: Some(letter.detail.clone()),
            original_message_id: Some(letter.message_id.clone()),
            original_sent_at: Some(letter.sent_at),
            source_queue: Some(source_queue.to_owned()),
            first_received_at: Some(letter.first_received_at),
        }
    }

    /// What a redrive attaches to a message it sends back: its idempotency key and its
    /// first SentTimestamp, so the row it makes is the one it would have made.
    pub fn redriven(original_message_id: String, original_sent_at: Option<DateTime<Utc>>) -> Self {
        Self {
            original_message_id: Some(original_message_id),
            original_sent_at,
            ..Self::default()
        }
    }

    /// The reason, when it is one of our codes.
    pub fn known_reason(&self) -> Option<DeadLetterReason> {
        match self.reason {
            Some(RecordedReason::Known(reason)) => Some(reason),
            _ => None,
        }
    }

    /// The attributes present, as (name, value), most important first: whatever must be
    /// dropped for size is dropped from the end (see the SQS adapter's fitting).
    pub fn encode(&self) -> Vec<(&'static str, String)> {
        let reason = self.reason.as_ref().map(|reason| match reason {
            RecordedReason::Known(reason) => reason.as_str().to_owned(),
            RecordedReason::Unrecognized(text) => text.clone(),
        });
        [
            (attribute::REASON, reason),
            (
                attribute::ORIGINAL_MESSAGE_ID,
                self.original_message_id.clone(),
            ),
            (
                attribute::ORIGINAL_SENT_TIMESTAMP,
                self.original_sent_at
                    .map(|at| at.timestamp_millis().to_string()),
            ),
            (attribute::DETAIL, self.detail.clone()),
            (attribute::SOURCE_QUEUE, self.source_queue.clone()),
            (
                attribute::FIRST_RECEIVED_AT,
                self.first_received_at.map(|at| at.to_rfc3339()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }

    /// Reads the `sqs2pg.*` attributes among a message's string attributes; any other name
    /// is ignored. Never fails: a missing attribute is `None`, a reason that is not ours is
    /// [`RecordedReason::Unrecognized`], and a timestamp that does not parse is `None` (as
    /// if absent, so a redrive falls back to the copy's own SentTimestamp), since anyone who
    /// can send to the DLQ can set these.
    pub fn decode<'a>(attributes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let found: BTreeMap<&str, &str> = attributes
            .into_iter()
            .filter(|(name, _)| name.starts_with("sqs2pg."))
            .collect();
        let text = |name: &str| found.get(name).map(|value| (*value).to_owned());
        Self {
            reason: found.get(attribute::REASON).map(|code| {
                code.parse()
                    .map(RecordedReason::Known)
                    .unwrap_or_else(|_| RecordedReason::Unrecognized((*code).to_owned()))
            }),
            detail: text(attribute::DETAIL),
            original_message_id: text(attribute::ORIGINAL_MESSAGE_ID),
            original_sent_at: found
                .get(attribute::ORIGINAL_SENT_TIMESTAMP)
                .and_then(|millis| millis.parse().ok())
                .and_then(DateTime::from_timestamp_millis),
            source_queue: text(attribute::SOURCE_QUEUE),
            first_received_at: found
                .get(attribute::FIRST_RECEIVED_AT)
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc)),
        }
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
    use proptest::prelude::*;
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

    #[test]
    fn what_sqs_moved_itself_decodes_to_nothing_and_strangers_are_ignored() {
        assert_eq!(
            DeadLetterAttributes::decode([("producer.trace_id", "abc")]),
            DeadLetterAttributes::default()
        );
        let decoded = DeadLetterAttributes::decode([
            (attribute::REASON, "INVALID_JSON"),
            (attribute::ORIGINAL_SENT_TIMESTAMP, "yesterday"),
            (attribute::FIRST_RECEIVED_AT, "1700000000000"),
            (attribute::ORIGINAL_MESSAGE_ID, "m-1"),
        ]);
        assert_eq!(
            decoded.reason,
            Some(RecordedReason::Unrecognized("INVALID_JSON".to_owned()))
        );
        assert_eq!(decoded.known_reason(), None);
        assert_eq!(decoded.original_sent_at, None, "unparsable: as if absent");
        assert_eq!(decoded.first_received_at, None, "not RFC 3339");
        assert_eq!(decoded.original_message_id.as_deref(), Some("m-1"));
    }

    #[test]
    fn a_dead_letter_carries_every_attribute_reason_first() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let letter = DeadLetter {
            sqs_message_id: "copy".to_owned(),
            message_id: "original".to_owned(),
            body: "{".to_owned(),
            reason: DeadLetterReason::InvalidJson,
            detail: "not JSON".to_owned(),
            sent_at: at,
            first_received_at: at,
            group_id: None,
        };
        let encoded = DeadLetterAttributes::of(&letter, "logins").encode();
        let names: Vec<&str> = encoded.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                attribute::REASON,
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::ORIGINAL_SENT_TIMESTAMP,
                attribute::DETAIL,
                attribute::SOURCE_QUEUE,
                attribute::FIRST_RECEIVED_AT,
            ]
        );
        assert_eq!(encoded[0].1, "invalid_json");
        assert_eq!(encoded[2].1, "1700000000123");
        let redriven = DeadLetterAttributes::redriven("original".to_owned(), Some(at)).encode();
        assert_eq!(
            redriven,
            [
                (attribute::ORIGINAL_MESSAGE_ID, "original".to_owned()),
                (
                    attribute::ORIGINAL_SENT_TIMESTAMP,
                    "1700000000123".to_owned()
                ),
            ]
        );
    }

    fn arb_time(millis_only: bool) -> impl Strategy<Value = DateTime<Utc>> {
        // Years 1 to 9999: what RFC 3339 can write.
        (-62_135_596_800_000i64..253_402_300_799_999, 0u32..1_000_000).prop_map(
            move |(millis, nanos)| {
                let at = DateTime::from_timestamp_millis(millis).unwrap();
                match millis_only {
                    true => at,
                    false => at + chrono::Duration::nanoseconds(i64::from(nanos)),
                }
            },
        )
    }

    fn arb_reason() -> impl Strategy<Value = RecordedReason> {
        prop_oneof![
            proptest::sample::select(DeadLetterReason::iter().collect::<Vec<_>>())
                .prop_map(RecordedReason::Known),
            any::<String>()
                .prop_filter("not one of our codes", |text| text
                    .parse::<DeadLetterReason>()
                    .is_err())
                .prop_map(RecordedReason::Unrecognized),
        ]
    }

    fn arb_attributes() -> impl Strategy<Value = DeadLetterAttributes> {
        (
            proptest::option::of(arb_reason()),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(arb_time(true)),
            proptest::option::of(any::<String>()),
            proptest::option::of(arb_time(false)),
        )
            .prop_map(|fields| DeadLetterAttributes {
                reason: fields.0,
                detail: fields.1,
                original_message_id: fields.2,
                original_sent_at: fields.3,
                source_queue: fields.4,
                first_received_at: fields.5,
            })
    }

    proptest! {
        #[test]
        fn decoding_what_was_encoded_gives_it_back(attributes in arb_attributes()) {
            let encoded = attributes.encode();
            let decoded = DeadLetterAttributes::decode(
                encoded.iter().map(|(name, value)| (*name, value.as_str())),
            );
            prop_assert_eq!(decoded, attributes);
        }

        #[test]
        fn a_producer_s_own_attributes_change_nothing(
            attributes in arb_attributes(),
            others in proptest::collection::vec(("[a-z][a-z._]{0,20}", any::<String>()), 0..4),
        ) {
            let encoded = attributes.encode();
            let all = encoded
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .chain(
                    others
                        .iter()
                        .filter(|(name, _)| !name.starts_with("sqs2pg."))
                        .map(|(name, value)| (name.as_str(), value.as_str())),
                );
            prop_assert_eq!(DeadLetterAttributes::decode(all), attributes);
        }

        #[test]
        fn decoding_any_values_never_fails(
            values in proptest::collection::vec(any::<String>(), 6),
        ) {
            let names = [
                attribute::REASON,
                attribute::DETAIL,
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::ORIGINAL_SENT_TIMESTAMP,
                attribute::SOURCE_QUEUE,
                attribute::FIRST_RECEIVED_AT,
            ];
            let decoded = DeadLetterAttributes::decode(
                names.into_iter().zip(values.iter().map(String::as_str)),
            );
            prop_assert_eq!(decoded.detail.as_deref(), Some(values[1].as_str()));
            prop_assert!(decoded.reason.is_some());
        }
    }
}
