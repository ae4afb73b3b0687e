//! Envelopes around an event: SNS notifications and EventBridge events delivered to SQS.
//! Pure: no I/O.
//!
//! Why: on AWS events often reach the queue through an SNS topic (raw message delivery
//! off), whose notification holds the event as a JSON *string* in `Message`, or through an
//! EventBridge rule, whose event holds it as an object in `detail`. Validated as it is,
//! every such body is poison (`missing_field`). [`unwrap`] hands the event inside on to
//! [`crate::domain::event::transform`] instead, so it is validated exactly as if it had been sent
//! alone: an envelope around any body gives that body's row or that body's rejection
//! (property-tested and fuzzed through [`crate::domain::invariants`]). Only a broken envelope is a
//! rejection of its own, [`DeadLetterReason::InvalidEnvelope`].
//!
//! Detected by shape, never by a guess at the content:
//! - **SNS**: an object with `"Type": "Notification"`, a `TopicArn` and a `MessageId`. Its
//!   `Message` must be a string; the event is that string, unescaped.
//! - **EventBridge**: an object with `detail-type` and `source`. Its `detail` is the event,
//!   byte for byte as it stands in the body (not parsed and printed again, so a field given
//!   twice is still refused as ambiguous).
//!
//! A key of the envelope given twice is refused, as the transform refuses a field given
//! twice: parsers disagree on which one wins. One level is unwrapped, not more.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use strum::VariantNames as _;

use crate::DeadLetterReason;
use crate::domain::event::JsonKind;

/// Which envelopes to unwrap (`SQS2PG_ENVELOPE`, say).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::EnumIter,
    strum::VariantNames,
)]
#[strum(
    serialize_all = "lowercase",
    parse_err_ty = UnknownEnvelopeMode,
    parse_err_fn = UnknownEnvelopeMode::new
)]
pub enum EnvelopeMode {
    /// Unwrap an SNS notification or an EventBridge event when the body has that shape;
    /// any other body is the event itself.
    #[default]
    Auto,
    /// Every body must be an SNS notification.
    Sns,
    /// Every body must be an EventBridge event.
    EventBridge,
    /// Every body is the event itself, whatever its shape.
    None,
}

impl EnvelopeMode {
    /// The mode's name, as the setting takes it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown envelope mode `{0}`; expected one of: {list}",
    list = EnvelopeMode::VARIANTS.join(", ")
)]
pub struct UnknownEnvelopeMode(String);

impl UnknownEnvelopeMode {
    fn new(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// The kind of envelope a body came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    Sns,
    EventBridge,
}

impl EnvelopeKind {
    /// The envelope's field that names the event for good: every delivery of one
    /// publication carries the same.
    pub fn id_field(self) -> &'static str {
        match self {
            Self::Sns => "MessageId",
            Self::EventBridge => "id",
        }
    }

    /// The envelope's field that holds the event.
    pub fn inner_field(self) -> &'static str {
        match self {
            Self::Sns => "Message",
            Self::EventBridge => "detail",
        }
    }
}

impl fmt::Display for EnvelopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sns => "SNS notification",
            Self::EventBridge => "EventBridge event",
        })
    }
}

/// Why an envelope is poison. Like [`crate::domain::event::Rejection`], the text names fields and JSON kinds,
/// never values, so it is safe in logs and DLQ attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeRejection {
    /// The mode asks for an envelope and the body does not have its shape.
    #[error("body is not an {expected} (envelope mode `{mode}`)")]
    NotAnEnvelope {
        expected: EnvelopeKind,
        mode: EnvelopeMode,
    },
    #[error("{envelope} has no `{field}`")]
    MissingField {
        envelope: EnvelopeKind,
        field: &'static str,
    },
    #[error("{envelope} field `{field}` is {found}, expected a string")]
    WrongType {
        envelope: EnvelopeKind,
        field: &'static str,
        found: JsonKind,
    },
    #[error("{envelope} field `{field}` appears more than once")]
    DuplicateField {
        envelope: EnvelopeKind,
        field: &'static str,
    },
}

impl EnvelopeRejection {
    /// The bounded reason code recorded in the dead-letter queue and in metrics.
    pub fn reason(&self) -> DeadLetterReason {
        DeadLetterReason::InvalidEnvelope
    }
}

/// The event a body carries, and the envelope it came in, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwrapped<'a> {
    /// What to hand to [`crate::domain::event::transform`].
    pub body: Cow<'a, str>,
    pub envelope: Option<EnvelopeKind>,
    /// The envelope's id of the event (SNS `MessageId`, EventBridge `id`), when it is a
    /// string given once: the same for every delivery of one publication, so a stream can
    /// key on it and make one row of an event delivered twice.
    pub id: Option<Cow<'a, str>>,
}

impl Unwrapped<'_> {
    /// The dead-letter detail of the event's rejection, saying where it failed: the reason
    /// stays the event's own (`invalid_json` for an SNS `Message` that is not JSON).
    pub fn detail(&self, rejection: &impl fmt::Display) -> String {
        match self.envelope {
            None => rejection.to_string(),
            Some(envelope) => format!(
                "in the {envelope}'s `{}`: {rejection}",
                envelope.inner_field()
            ),
        }
    }
}

/// The event inside `body`, by `mode`: the body itself when there is no envelope to
/// unwrap, or a rejection when the envelope is broken or `mode` asks for one it is not.
pub fn unwrap(body: &str, mode: EnvelopeMode) -> Result<Unwrapped<'_>, EnvelopeRejection> {
    let as_is = Unwrapped {
        body: Cow::Borrowed(body),
        envelope: None,
        id: None,
    };
    if mode == EnvelopeMode::None {
        return Ok(as_is);
    }
    // Not an object (or not JSON): no envelope. The transform says what is wrong with it.
    let entries = serde_json::from_str::<Entries<'_>>(body).ok();
    let shape = entries.as_ref().and_then(|entries| entries.shape());
    match (mode, shape) {
        (EnvelopeMode::Auto | EnvelopeMode::None, None) => Ok(as_is),
        (EnvelopeMode::Sns | EnvelopeMode::EventBridge, found) => {
            let expected = if mode == EnvelopeMode::Sns {
                EnvelopeKind::Sns
            } else {
                EnvelopeKind::EventBridge
            };
            if found != Some(expected) {
                return Err(EnvelopeRejection::NotAnEnvelope { expected, mode });
            }
            entries.expect("a shape was found").open(expected)
        }
        (_, Some(kind)) => entries.expect("a shape was found").open(kind),
    }
}

/// A top-level object's entries in order, duplicates kept, values as raw JSON text.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Entries<'a> {
    /// The value(s) of `key`.
    fn all<'b>(&'b self, key: &'b str) -> impl Iterator<Item = &'a RawValue> + 'b {
        self.0
            .iter()
            .filter(move |(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    fn has(&self, key: &str) -> bool {
        self.all(key).next().is_some()
    }

    /// Which envelope the object is shaped as, if any (SNS first).
    fn shape(&self) -> Option<EnvelopeKind> {
        let notification = self
            .all("Type")
            .any(|value| string(value).as_deref() == Some("Notification"));
        if notification && self.has("TopicArn") && self.has("MessageId") {
            Some(EnvelopeKind::Sns)
        } else if self.has("detail-type") && self.has("source") {
            Some(EnvelopeKind::EventBridge)
        } else {
            None
        }
    }

    /// The event inside an envelope of this kind.
    fn open(&self, envelope: EnvelopeKind) -> Result<Unwrapped<'a>, EnvelopeRejection> {
        let keys: &[&'static str] = match envelope {
            EnvelopeKind::Sns => &["Type", "TopicArn", "MessageId", "Message"],
            EnvelopeKind::EventBridge => &["detail-type", "source", "detail"],
        };
        for field in keys {
            if self.all(field).nth(1).is_some() {
                return Err(EnvelopeRejection::DuplicateField { envelope, field });
            }
        }
        let field = envelope.inner_field();
        let inner = self
            .all(field)
            .next()
            .ok_or(EnvelopeRejection::MissingField { envelope, field })?;
        let body = match envelope {
            EnvelopeKind::Sns => Cow::Owned(string(inner).ok_or(EnvelopeRejection::WrongType {
                envelope,
                field,
                found: kind_of(inner),
            })?),
            EnvelopeKind::EventBridge => Cow::Borrowed(inner.get()),
        };
        let mut ids = self.all(envelope.id_field());
        let id = match (ids.next(), ids.next()) {
            (Some(id), None) => string(id).map(Cow::Owned),
            _ => None,
        };
        Ok(Unwrapped {
            body,
            envelope: Some(envelope),
            id,
        })
    }
}

/// The string a raw JSON value holds, unescaped; `None` if it is not a string.
fn string(value: &RawValue) -> Option<String> {
    serde_json::from_str(value.get()).ok()
}

/// The kind of a raw JSON value (valid JSON, so its first character decides).
fn kind_of(value: &RawValue) -> JsonKind {
    match value.get().as_bytes().first() {
        Some(b'"') => JsonKind::String,
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b't' | b'f') => JsonKind::Bool,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Number,
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::{SAMPLE, arb_json, envelope as meta, keyring};
    use crate::domain::event::{Rejection, transform};
    use proptest::prelude::*;
    use serde_json::json;
    use strum::IntoEnumIterator;

    fn sns(message: &str) -> String {
        json!({
            "Type": "Notification",
            "MessageId": "0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a",
            "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
            "Message": message,
            "Timestamp": "2026-12-01T10:00:00.000Z",
            "SignatureVersion": "1",
        })
        .to_string()
    }

    fn eventbridge(detail: &str) -> String {
        format!(
            r#"{{"version": "0", "id": "6a7e8feb", "detail-type": "user login", "source": "app.logins", "account": "000000000000", "time": "2026-12-01T10:00:00Z", "region": "us-east-1", "resources": [], "detail": {detail}}}"#
        )
    }

    fn unwrapped(body: &str, mode: EnvelopeMode) -> (String, Option<EnvelopeKind>) {
        let inner = unwrap(body, mode).unwrap();
        (inner.body.into_owned(), inner.envelope)
    }

    #[test]
    fn modes_round_trip_and_unknown_ones_are_refused() {
        for mode in EnvelopeMode::iter() {
            assert_eq!(mode.as_str().parse::<EnvelopeMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(EnvelopeMode::EventBridge.as_str(), "eventbridge");
        assert_eq!(EnvelopeMode::default(), EnvelopeMode::Auto);
        let error = "SNS".parse::<EnvelopeMode>().unwrap_err();
        assert!(error.to_string().contains("auto, sns, eventbridge, none"));
    }

    #[test]
    fn an_sns_notification_gives_its_message_unescaped() {
        for mode in [EnvelopeMode::Auto, EnvelopeMode::Sns] {
            assert_eq!(
                unwrapped(&sns(SAMPLE), mode),
                (SAMPLE.to_owned(), Some(EnvelopeKind::Sns))
            );
        }
        let row = transform(
            &unwrapped(&sns(SAMPLE), EnvelopeMode::Auto).0,
            meta(),
            &keyring(),
        );
        assert_eq!(row, transform(SAMPLE, meta(), &keyring()));
    }

    #[test]
    fn an_eventbridge_event_gives_its_detail_byte_for_byte() {
        let detail = r#"{"user_id": "u", "ip" : "10.0.0.1",  "extra": [1, 2.50]}"#;
        for mode in [EnvelopeMode::Auto, EnvelopeMode::EventBridge] {
            assert_eq!(
                unwrapped(&eventbridge(detail), mode),
                (detail.to_owned(), Some(EnvelopeKind::EventBridge))
            );
        }
        // Not parsed and printed again: a field given twice is still refused.
        let twice = SAMPLE.replacen('{', r#"{"ip": "10.0.0.2", "#, 1);
        let inner = unwrapped(&eventbridge(&twice), EnvelopeMode::Auto).0;
        assert_eq!(
            transform(&inner, meta(), &keyring()),
            Err(Rejection::DuplicateField { field: "ip" })
        );
    }

    #[test]
    fn a_body_without_an_envelope_is_the_event_in_auto_and_none() {
        for body in [
            SAMPLE,
            "{not json",
            "[1]",
            "\"text\"",
            "",
            r#"{"Type": "Notification"}"#,
        ] {
            for mode in [EnvelopeMode::Auto, EnvelopeMode::None] {
                assert_eq!(unwrapped(body, mode), (body.to_owned(), None), "{body}");
            }
        }
        // `none` does not even look.
        assert_eq!(
            unwrapped(&sns(SAMPLE), EnvelopeMode::None),
            (sns(SAMPLE), None)
        );
    }

    #[test]
    fn a_forced_mode_refuses_a_body_of_another_shape() {
        let cases = [
            (EnvelopeMode::Sns, SAMPLE.to_owned(), EnvelopeKind::Sns),
            (EnvelopeMode::Sns, eventbridge(SAMPLE), EnvelopeKind::Sns),
            (EnvelopeMode::Sns, "{not json".to_owned(), EnvelopeKind::Sns),
            (
                EnvelopeMode::EventBridge,
                sns(SAMPLE),
                EnvelopeKind::EventBridge,
            ),
            (
                EnvelopeMode::EventBridge,
                "[]".to_owned(),
                EnvelopeKind::EventBridge,
            ),
        ];
        for (mode, body, expected) in cases {
            let rejection = unwrap(&body, mode).unwrap_err();
            assert_eq!(
                rejection,
                EnvelopeRejection::NotAnEnvelope { expected, mode }
            );
            assert_eq!(rejection.reason(), DeadLetterReason::InvalidEnvelope);
        }
    }

    #[test]
    fn a_broken_envelope_is_refused_saying_where() {
        use EnvelopeKind::*;
        let envelope = |fields: serde_json::Value| fields.to_string();
        let sns_without_message =
            envelope(json!({"Type": "Notification", "TopicArn": "t", "MessageId": "m"}));
        let sns_object_message = envelope(
            json!({"Type": "Notification", "TopicArn": "t", "MessageId": "m", "Message": {"ip": "10.0.0.1"}}),
        );
        let sns_twice = sns(SAMPLE).replacen('{', r#"{"Message": "{}", "#, 1);
        let eventbridge_without_detail = envelope(json!({"detail-type": "x", "source": "y"}));
        let eventbridge_twice = eventbridge(SAMPLE).replacen('{', r#"{"detail": {}, "#, 1);
        let cases = [
            (
                sns_without_message,
                EnvelopeRejection::MissingField {
                    envelope: Sns,
                    field: "Message",
                },
            ),
            (
                sns_object_message,
                EnvelopeRejection::WrongType {
                    envelope: Sns,
                    field: "Message",
                    found: JsonKind::Object,
                },
            ),
            (
                sns_twice,
                EnvelopeRejection::DuplicateField {
                    envelope: Sns,
                    field: "Message",
                },
            ),
            (
                eventbridge_without_detail,
                EnvelopeRejection::MissingField {
                    envelope: EventBridge,
                    field: "detail",
                },
            ),
            (
                eventbridge_twice,
                EnvelopeRejection::DuplicateField {
                    envelope: EventBridge,
                    field: "detail",
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                unwrap(&body, EnvelopeMode::Auto).unwrap_err(),
                expected,
                "{body}"
            );
            assert!(!expected.to_string().contains("10.0.0.1"));
        }
        assert_eq!(
            EnvelopeRejection::WrongType {
                envelope: Sns,
                field: "Message",
                found: JsonKind::Object
            }
            .to_string(),
            "SNS notification field `Message` is an object, expected a string"
        );
    }

    #[test]
    fn an_inner_rejection_keeps_its_reason_and_says_where_it_failed() {
        let body = sns("not json at all");
        let inner = unwrap(&body, EnvelopeMode::Auto).unwrap();
        let rejection = transform(&inner.body, meta(), &keyring()).unwrap_err();
        assert_eq!(rejection.reason(), DeadLetterReason::InvalidJson);
        assert_eq!(
            inner.detail(&rejection),
            format!("in the SNS notification's `Message`: {rejection}")
        );
        let plain = unwrap(SAMPLE, EnvelopeMode::Auto).unwrap();
        assert_eq!(plain.detail(&rejection), rejection.to_string());
    }

    /// The envelope's id is what names one publication across deliveries: a string given
    /// once, or nothing.
    #[test]
    fn the_envelope_id_is_a_string_given_once() {
        let id = |body: &str| {
            unwrap(body, EnvelopeMode::Auto)
                .unwrap()
                .id
                .map(Cow::into_owned)
        };
        assert_eq!(
            id(&sns(SAMPLE)).as_deref(),
            Some("0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a")
        );
        assert_eq!(id(&eventbridge(SAMPLE)).as_deref(), Some("6a7e8feb"));
        assert_eq!(id(SAMPLE), None);
        let numeric =
            json!({"Type": "Notification", "TopicArn": "t", "MessageId": 7, "Message": SAMPLE})
                .to_string();
        assert_eq!(id(&numeric), None);
        let twice = eventbridge(SAMPLE).replacen('{', r#"{"id": "other", "#, 1);
        assert_eq!(id(&twice), None);
        let escaped = json!({"Type": "Notification", "TopicArn": "t", "MessageId": "a\"b", "Message": SAMPLE}).to_string();
        assert_eq!(id(&escaped).as_deref(), Some("a\"b"));
    }

    #[test]
    fn unwrapping_is_free_when_there_is_nothing_to_unwrap() {
        assert!(matches!(
            unwrap(SAMPLE, EnvelopeMode::Auto).unwrap().body,
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            unwrap(&eventbridge(SAMPLE), EnvelopeMode::Auto)
                .unwrap()
                .body,
            Cow::Borrowed(_)
        ));
    }

    proptest! {
        /// Any JSON value, any text and any valid event give, in an SNS notification or an
        /// EventBridge event, what they give alone (crate::domain::invariants::check_envelopes).
        #[test]
        fn an_envelope_around_any_json_gives_what_the_body_gives_alone(value in arb_json()) {
            crate::domain::invariants::check_envelopes(&value.to_string());
        }

        #[test]
        fn an_envelope_around_any_text_gives_what_the_body_gives_alone(body in ".{0,300}") {
            crate::domain::invariants::check_envelopes(&body);
        }

        #[test]
        fn an_envelope_around_any_event_gives_its_row(event in crate::domain::event::tests::arb_event()) {
            crate::domain::invariants::check_envelopes(&event);
            let alone = transform(&event, meta(), &keyring());
            prop_assert!(alone.is_ok());
            for wrapped in [sns(&event), eventbridge(&event)] {
                let inner = unwrap(&wrapped, EnvelopeMode::Auto).unwrap();
                prop_assert_eq!(&transform(&inner.body, meta(), &keyring()), &alone);
            }
        }
    }
}
