//! The dead-letter vocabulary: bounded reason codes, and the message attributes that
//! travel with a message into the dead-letter queue and back out on redrive, with their one
//! codec ([`DeadLetterAttributes`]). Pure: attributes are names and strings here; the SQS
//! adapter converts them to and from the SDK's types.
//!
//! Two of them decide how a row is keyed and dated: the original message id and the
//! original SentTimestamp. Anyone who can send to the source queue can set them, so the
//! consumer believes them only beside a tag that proves sqs2pg wrote them
//! ([`AttributesTag`], decided by [`CarriedIdentity::of`]); otherwise a forged id that
//! already has a row would make a fresh event vanish as a "duplicate".

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use hmac::Mac as _;
use strum::VariantNames as _;

use crate::domain::keyring::{KeyId, Keyring};

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
    /// Proof that sqs2pg wrote the original id and timestamp beside it, for this body:
    /// `<key id>:<64 hex digits>` ([`super::AttributesTag`]).
    pub const ATTRIBUTES_TAG: &str = "sqs2pg.attributes_tag";
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
    /// The [`AttributesTag`] as carried, unchecked: the codec only reads and writes it.
    pub tag: Option<String>,
}

impl DeadLetterAttributes {
    /// What the consumer attaches to a poison message it dead-letters from `source_queue`:
    /// with a keyring, a tag under its current key over the id, the timestamp and the body.
    pub fn of(letter: &DeadLetter, source_queue: &str, keyring: Option<&Keyring>) -> Self {
        let identity = Identity {
            message_id: &letter.message_id,
            sent_at: letter.sent_at,
            body: &letter.body,
        };
        Self {
            reason: Some(RecordedReason::Known(letter.reason)),
            detail: Some(letter.detail.clone()),
            original_message_id: Some(letter.message_id.clone()),
            original_sent_at: Some(letter.sent_at),
            source_queue: Some(source_queue.to_owned()),
            first_received_at: Some(letter.first_received_at),
            tag: keyring.map(|keyring| AttributesTag::seal(keyring, &identity).to_string()),
        }
    }

    /// What a redrive attaches to a dead letter it sends back: its id, timestamp and tag,
    /// unchanged, so the row it makes is the one it would have made. Nothing without a tag
    /// (a dead letter SQS moved itself, or one written before tags): the consumer would
    /// ignore the id and timestamp anyway, and count them as untrusted.
    pub fn redriven(dead_letter: &Self) -> Self {
        match dead_letter.tag {
            Some(_) => Self {
                original_message_id: dead_letter.original_message_id.clone(),
                original_sent_at: dead_letter.original_sent_at,
                tag: dead_letter.tag.clone(),
                ..Self::default()
            },
            None => Self::default(),
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
            (attribute::ATTRIBUTES_TAG, self.tag.clone()),
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
            tag: text(attribute::ATTRIBUTES_TAG),
        }
    }
}

/// What a tag vouches for: how the message's row is keyed and dated, and the body it is
/// for (so a tag read off one dead letter cannot vouch for another body).
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The idempotency key.
    pub message_id: &'a str,
    /// The first SentTimestamp; the tag covers its whole milliseconds, as carried.
    pub sent_at: DateTime<Utc>,
    pub body: &'a str,
}

/// HMAC-SHA256, under one key of the keyring, of the key's id, the [`Identity`] and a
/// label, carried as `<key id>:<hex>` in [`attribute::ATTRIBUTES_TAG`]. The key id names the
/// key to check it with, so a key's tags verify for as long as the ring holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributesTag {
    key_id: KeyId,
    mac: Vec<u8>,
}

/// Starts every tag's input. 0xFF never occurs in UTF-8, and every value the key digests
/// otherwise is a `&str`: so no digest of a value is a tag (see `Masker::keyed`).
const TAG_DOMAIN: &[u8] = b"\xffsqs2pg.attributes_tag.v1";

impl AttributesTag {
    /// The tag of `identity` under the keyring's current key.
    pub fn seal(keyring: &Keyring, identity: &Identity<'_>) -> Self {
        let (key_id, masker) = keyring.current();
        Self {
            key_id: key_id.clone(),
            mac: mac(masker, key_id, identity)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }

    /// Reads `<key id>:<hex>`; `None` if it is not that shape.
    pub fn parse(text: &str) -> Option<Self> {
        let (key_id, mac) = text.split_once(':')?;
        Some(Self {
            key_id: KeyId::parse(key_id).ok()?,
            mac: hex::decode(mac).ok()?,
        })
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Whether this tag was made for `identity` under the key of its id in `keyring`,
    /// compared in constant time.
    pub fn verify(&self, keyring: &Keyring, identity: &Identity<'_>) -> Result<(), Distrust> {
        let masker = keyring.key(&self.key_id).ok_or(Distrust::UnknownKey)?;
        mac(masker, &self.key_id, identity)
            .verify_slice(&self.mac)
            .map_err(|_| Distrust::Mismatch)
    }
}

impl fmt::Display for AttributesTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_id, hex::encode(&self.mac))
    }
}

/// The keyed HMAC over the tag's input: each part length-prefixed, so no two identities
/// share an input.
fn mac(
    masker: &crate::domain::event::Masker,
    key_id: &KeyId,
    identity: &Identity<'_>,
) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = masker.keyed();
    mac.update(TAG_DOMAIN);
    let millis = identity.sent_at.timestamp_millis().to_be_bytes();
    for part in [
        key_id.as_str().as_bytes(),
        identity.message_id.as_bytes(),
        &millis,
        identity.body.as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// Why a received message's identity attributes are not believed. A closed set: it labels
/// `sqs2pg_untrusted_attributes_total`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Distrust {
    /// An original id or timestamp without a tag: forged, or sent back by the redrive of a
    /// release before tags.
    Untagged,
    /// A tag without the id or the timestamp it covers, or one of them unreadable.
    Incomplete,
    /// A tag that is not `<key id>:<hex>`.
    MalformedTag,
    /// A tag under a key the ring does not hold: forged, or made under a key since removed.
    UnknownKey,
    /// A tag that does not match the id, timestamp and body beside it: forged or altered.
    Mismatch,
}

impl Distrust {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a received message's identity attributes are worth: the consumer's one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarriedIdentity {
    /// None of them: a message as its producer sent it.
    Absent,
    /// Written by sqs2pg: the row is keyed and dated by these.
    Verified {
        message_id: String,
        sent_at: DateTime<Utc>,
    },
    /// Present, not proven: ignored (the message is keyed by its own SQS id and dated by its
    /// own SentTimestamp, as a fresh one), and counted.
    Untrusted(Distrust),
}

impl CarriedIdentity {
    /// Decides from a message's string attributes and body; `keyring` holds the keys a tag
    /// may be under (none: no tag verifies).
    pub fn of<'a>(
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: &str,
        keyring: Option<&Keyring>,
    ) -> Self {
        let found: BTreeMap<&str, &str> = attributes
            .into_iter()
            .filter(|(name, _)| {
                [
                    attribute::ORIGINAL_MESSAGE_ID,
                    attribute::ORIGINAL_SENT_TIMESTAMP,
                    attribute::ATTRIBUTES_TAG,
                ]
                .contains(name)
            })
            .collect();
        if found.is_empty() {
            return Self::Absent;
        }
        let Some(tag) = found.get(attribute::ATTRIBUTES_TAG) else {
            return Self::Untrusted(Distrust::Untagged);
        };
        let Some(tag) = AttributesTag::parse(tag) else {
            return Self::Untrusted(Distrust::MalformedTag);
        };
        let message_id = found
            .get(attribute::ORIGINAL_MESSAGE_ID)
            .filter(|id| is_valid_message_key(id));
        let sent_at = found
            .get(attribute::ORIGINAL_SENT_TIMESTAMP)
            .and_then(|millis| millis.parse().ok())
            .and_then(DateTime::from_timestamp_millis);
        let (Some(message_id), Some(sent_at)) = (message_id, sent_at) else {
            return Self::Untrusted(Distrust::Incomplete);
        };
        let Some(keyring) = keyring else {
            return Self::Untrusted(Distrust::UnknownKey);
        };
        let identity = Identity {
            message_id,
            sent_at,
            body,
        };
        match tag.verify(keyring, &identity) {
            Ok(()) => Self::Verified {
                message_id: (*message_id).to_owned(),
                sent_at,
            },
            Err(distrust) => Self::Untrusted(distrust),
        }
    }
}

/// An idempotency key looks like an SQS id: short printable ASCII.
pub fn is_valid_message_key(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
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
    /// The message group (a FIFO queue's, or a fair queue's: a standard queue whose
    /// producers set one); the dead letter keeps it.
    pub group_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Masker;
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
        let keyring = ring(&["2026-12", "default"], "2026-12");
        let attributes = DeadLetterAttributes::of(&letter, "logins", Some(&keyring));
        let encoded = attributes.encode();
        let names: Vec<&str> = encoded.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                attribute::REASON,
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::ORIGINAL_SENT_TIMESTAMP,
                attribute::ATTRIBUTES_TAG,
                attribute::DETAIL,
                attribute::SOURCE_QUEUE,
                attribute::FIRST_RECEIVED_AT,
            ]
        );
        assert_eq!(encoded[0].1, "invalid_json");
        assert_eq!(encoded[2].1, "1700000000123");
        assert!(encoded[3].1.starts_with("2026-12:"), "{}", encoded[3].1);
        assert_eq!(encoded[3].1.len(), "2026-12:".len() + 64);
        // A redrive carries the id, the timestamp and the tag, unchanged, and nothing else.
        let redriven = DeadLetterAttributes::redriven(&attributes).encode();
        assert_eq!(redriven, encoded[1..4]);
        // Without a tag it carries nothing: the consumer would not believe the rest.
        let untagged = DeadLetterAttributes::of(&letter, "logins", None);
        assert_eq!(untagged.tag, None);
        assert!(
            DeadLetterAttributes::redriven(&untagged)
                .encode()
                .is_empty()
        );
    }

    fn ring(ids: &[&str], current: &str) -> Keyring {
        let keys = ids
            .iter()
            .map(|id| {
                (
                    KeyId::parse(id).unwrap(),
                    Masker::new(format!("key-of-{id}-0123456789").as_bytes()),
                )
            })
            .collect();
        Keyring::new(keys, &KeyId::parse(current).unwrap()).unwrap()
    }

    /// The attributes a dead letter of `identity` carries, sealed with `keyring`'s current key.
    fn sealed(identity: &Identity<'_>, keyring: &Keyring) -> Vec<(&'static str, String)> {
        let letter = DeadLetter {
            sqs_message_id: "copy".to_owned(),
            message_id: identity.message_id.to_owned(),
            body: identity.body.to_owned(),
            reason: DeadLetterReason::MissingField,
            detail: "field `ip` is missing or null".to_owned(),
            sent_at: identity.sent_at,
            first_received_at: identity.sent_at,
            group_id: None,
        };
        DeadLetterAttributes::of(&letter, "logins", Some(keyring)).encode()
    }

    fn carried(
        attributes: &[(&'static str, String)],
        body: &str,
        keyring: &Keyring,
    ) -> CarriedIdentity {
        CarriedIdentity::of(
            attributes
                .iter()
                .map(|(name, value)| (*name, value.as_str())),
            body,
            Some(keyring),
        )
    }

    #[test]
    fn only_attributes_sqs2pg_wrote_key_and_date_a_message() {
        let keyring = ring(&["default"], "default");
        let at = DateTime::from_timestamp_millis(1_600_000_000_000).unwrap();
        let identity = Identity {
            message_id: "original-1",
            sent_at: at,
            body: "{}",
        };
        let genuine = sealed(&identity, &keyring);
        assert_eq!(
            carried(&genuine, "{}", &keyring),
            CarriedIdentity::Verified {
                message_id: "original-1".to_owned(),
                sent_at: at
            }
        );
        // A producer's own message: nothing to decide.
        assert_eq!(
            carried(&[(attribute::REASON, "x".to_owned())], "{}", &keyring),
            CarriedIdentity::Absent
        );
        let without = |name: &str| -> Vec<(&'static str, String)> {
            genuine
                .iter()
                .filter(|(n, _)| *n != name)
                .cloned()
                .collect()
        };
        let with = |name: &'static str, value: &str| -> Vec<(&'static str, String)> {
            let mut attributes = without(name);
            attributes.push((name, value.to_owned()));
            attributes
        };
        let cases = [
            // What a forger without the key can write, or an earlier release's redrive.
            (without(attribute::ATTRIBUTES_TAG), Distrust::Untagged),
            (
                without(attribute::ORIGINAL_SENT_TIMESTAMP),
                Distrust::Incomplete,
            ),
            (
                without(attribute::ORIGINAL_MESSAGE_ID),
                Distrust::Incomplete,
            ),
            (
                with(attribute::ORIGINAL_SENT_TIMESTAMP, "yesterday"),
                Distrust::Incomplete,
            ),
            (
                with(attribute::ORIGINAL_MESSAGE_ID, "has space"),
                Distrust::Incomplete,
            ),
            (
                with(attribute::ATTRIBUTES_TAG, "default"),
                Distrust::MalformedTag,
            ),
            (
                with(attribute::ATTRIBUTES_TAG, "default:zz"),
                Distrust::MalformedTag,
            ),
            (
                with(
                    attribute::ATTRIBUTES_TAG,
                    &format!("-bad:{}", "0".repeat(64)),
                ),
                Distrust::MalformedTag,
            ),
            (
                with(
                    attribute::ATTRIBUTES_TAG,
                    &format!("retired:{}", "0".repeat(64)),
                ),
                Distrust::UnknownKey,
            ),
            (
                with(
                    attribute::ATTRIBUTES_TAG,
                    &format!("default:{}", "0".repeat(64)),
                ),
                Distrust::Mismatch,
            ),
            (
                with(attribute::ATTRIBUTES_TAG, "default:"),
                Distrust::Mismatch,
            ),
            (
                with(attribute::ORIGINAL_MESSAGE_ID, "original-2"),
                Distrust::Mismatch,
            ),
            (
                with(attribute::ORIGINAL_SENT_TIMESTAMP, "1600000000001"),
                Distrust::Mismatch,
            ),
        ];
        for (attributes, distrust) in cases {
            assert_eq!(
                carried(&attributes, "{}", &keyring),
                CarriedIdentity::Untrusted(distrust),
                "{attributes:?}"
            );
        }
        // A genuine tag on another body: a tag read off one dead letter vouches for no other.
        assert_eq!(
            carried(&genuine, r#"{"forged": true}"#, &keyring),
            CarriedIdentity::Untrusted(Distrust::Mismatch)
        );
        // Without a keyring nothing verifies.
        assert_eq!(
            CarriedIdentity::of(genuine.iter().map(|(n, v)| (*n, v.as_str())), "{}", None),
            CarriedIdentity::Untrusted(Distrust::UnknownKey)
        );
    }

    #[test]
    fn a_tag_is_no_digest_a_key_holder_can_be_shown() {
        // The tag's input starts with a byte no string holds: whatever value is masked, its
        // digest is never a tag.
        let domain = TAG_DOMAIN.to_vec();
        assert!(String::from_utf8(domain).is_err());
        let keyring = ring(&["default"], "default");
        let identity = Identity {
            message_id: "m",
            sent_at: DateTime::from_timestamp_millis(0).unwrap(),
            body: "",
        };
        let tag = AttributesTag::seal(&keyring, &identity);
        assert_eq!(AttributesTag::parse(&tag.to_string()), Some(tag.clone()));
        assert_eq!(tag.key_id().as_str(), "default");
        assert_ne!(
            tag.to_string(),
            format!("default:{}", keyring.current().1.digest(""))
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
            proptest::option::of(any::<String>()),
        )
            .prop_map(|fields| DeadLetterAttributes {
                reason: fields.0,
                detail: fields.1,
                original_message_id: fields.2,
                original_sent_at: fields.3,
                source_queue: fields.4,
                first_received_at: fields.5,
                tag: fields.6,
            })
    }

    /// A ring of 1 to 5 keys with distinct ids, and any one of them current.
    fn arb_ring() -> impl Strategy<Value = Keyring> {
        (
            proptest::collection::btree_set("[a-z0-9][a-z0-9._-]{0,31}", 1..6),
            any::<proptest::sample::Index>(),
        )
            .prop_map(|(ids, pick)| {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let current = ids[pick.index(ids.len())];
                ring(&ids, current)
            })
    }

    fn arb_identity() -> impl Strategy<Value = (String, DateTime<Utc>, String)> {
        ("[!-~]{1,128}", arb_time(true), any::<String>())
    }

    /// Some other key id than `id`, still a valid one.
    fn other_id(id: &KeyId) -> String {
        match id.as_str() {
            "x" => "y".to_owned(),
            _ => "x".to_owned(),
        }
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
            values in proptest::collection::vec(any::<String>(), 7),
        ) {
            let names = [
                attribute::REASON,
                attribute::DETAIL,
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::ORIGINAL_SENT_TIMESTAMP,
                attribute::SOURCE_QUEUE,
                attribute::FIRST_RECEIVED_AT,
                attribute::ATTRIBUTES_TAG,
            ];
            let decoded = DeadLetterAttributes::decode(
                names.into_iter().zip(values.iter().map(String::as_str)),
            );
            prop_assert_eq!(decoded.detail.as_deref(), Some(values[1].as_str()));
            prop_assert!(decoded.reason.is_some());
        }

        /// Sealed under whichever key of a ring is current, a dead letter's attributes
        /// verify against that ring (and any ring that still holds the key), giving back
        /// exactly the id and timestamp they carry.
        #[test]
        fn a_tag_made_under_any_key_of_the_ring_verifies(
            keyring in arb_ring(),
            (id, at, body) in arb_identity(),
            pick in any::<proptest::sample::Index>(),
        ) {
            let ids: Vec<KeyId> = keyring.ids().cloned().collect();
            let sealer = Keyring::new(
                ids.iter().map(|id| (id.clone(), keyring.key(id).unwrap().clone())).collect(),
                &ids[pick.index(ids.len())],
            ).unwrap();
            let identity = Identity { message_id: &id, sent_at: at, body: &body };
            let attributes = sealed(&identity, &sealer);
            prop_assert_eq!(
                carried(&attributes, &body, &keyring),
                CarriedIdentity::Verified { message_id: id.clone(), sent_at: at }
            );
            // Redrive carries them unchanged, and they still verify.
            let redriven = DeadLetterAttributes::redriven(&DeadLetterAttributes::decode(
                attributes.iter().map(|(name, value)| (*name, value.as_str())),
            ))
            .encode();
            prop_assert_eq!(
                carried(&redriven, &body, &keyring),
                CarriedIdentity::Verified { message_id: id, sent_at: at }
            );
        }

        /// Any change to the id, the timestamp, the body, the tag or its key id, and a ring
        /// without the key, make the attributes untrusted.
        #[test]
        fn any_change_to_what_a_tag_covers_fails(
            keyring in arb_ring(),
            (id, at, body) in arb_identity(),
            (other_id_text, other_at, other_body) in arb_identity(),
            flip in 0usize..32,
        ) {
            let identity = Identity { message_id: &id, sent_at: at, body: &body };
            let tag = AttributesTag::seal(&keyring, &identity);
            prop_assert_eq!(tag.verify(&keyring, &identity), Ok(()));
            if other_id_text != id {
                let changed = Identity { message_id: &other_id_text, ..identity };
                prop_assert_eq!(tag.verify(&keyring, &changed), Err(Distrust::Mismatch));
            }
            if other_at != at {
                let changed = Identity { sent_at: other_at, ..identity };
                prop_assert_eq!(tag.verify(&keyring, &changed), Err(Distrust::Mismatch));
            }
            if other_body != body {
                let changed = Identity { body: &other_body, ..identity };
                prop_assert_eq!(tag.verify(&keyring, &changed), Err(Distrust::Mismatch));
            }
            let mut flipped = tag.clone();
            flipped.mac[flip] ^= 1;
            prop_assert_eq!(flipped.verify(&keyring, &identity), Err(Distrust::Mismatch));
            let mut cut = tag.clone();
            cut.mac.pop();
            prop_assert_eq!(cut.verify(&keyring, &identity), Err(Distrust::Mismatch));
            // Another id of the ring: its key did not make this tag.
            for id in keyring.ids().filter(|id| *id != tag.key_id()) {
                let moved = AttributesTag { key_id: id.clone(), ..tag.clone() };
                prop_assert_eq!(moved.verify(&keyring, &identity), Err(Distrust::Mismatch));
            }
            // An id the ring does not hold, and the ring without the tag's key (removed).
            let unknown = AttributesTag {
                key_id: KeyId::parse(&format!("{}-gone", other_id(tag.key_id()))).unwrap(),
                ..tag.clone()
            };
            prop_assert_eq!(unknown.verify(&keyring, &identity), Err(Distrust::UnknownKey));
            let others: Vec<(KeyId, Masker)> = keyring
                .ids()
                .filter(|id| *id != tag.key_id())
                .map(|id| (id.clone(), keyring.key(id).unwrap().clone()))
                .collect();
            if let Some((current, _)) = others.first() {
                let current = current.clone();
                let without = Keyring::new(others, &current).unwrap();
                prop_assert_eq!(tag.verify(&without, &identity), Err(Distrust::UnknownKey));
            }
            // The same key under another name is another key id: not this tag's.
            let renamed = Keyring::single(
                KeyId::parse(&other_id(tag.key_id())).unwrap(),
                keyring.current().1.clone(),
            );
            prop_assert_eq!(tag.verify(&renamed, &identity), Err(Distrust::UnknownKey));
        }

        /// Whatever attributes a message carries, the decision never panics, and only a tag
        /// that verifies makes it `Verified`.
        #[test]
        fn arbitrary_identity_attributes_are_never_verified(
            keyring in arb_ring(),
            values in proptest::collection::vec(proptest::option::of(any::<String>()), 3),
            body in any::<String>(),
        ) {
            let names = [
                attribute::ORIGINAL_MESSAGE_ID,
                attribute::ORIGINAL_SENT_TIMESTAMP,
                attribute::ATTRIBUTES_TAG,
            ];
            let attributes: Vec<(&str, &str)> = names
                .into_iter()
                .zip(&values)
                .filter_map(|(name, value)| Some((name, value.as_deref()?)))
                .collect();
            let decided = CarriedIdentity::of(attributes.iter().copied(), &body, Some(&keyring));
            match decided {
                CarriedIdentity::Absent => prop_assert!(attributes.is_empty()),
                CarriedIdentity::Untrusted(_) => prop_assert!(!attributes.is_empty()),
                CarriedIdentity::Verified { .. } => prop_assert!(false, "verified a forgery"),
            }
        }
    }
}
