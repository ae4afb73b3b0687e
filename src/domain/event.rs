//! What events are made of, for every stream: the keyed HMAC [`Masker`], the kinds of JSON
//! values ([`JsonKind`]) and the rejections ([`Rejection`]) that name fields and kinds,
//! never values: their `Display` text goes to logs and to the dead-letter queue, where raw
//! PII must not appear. And the login event's limits, which `streams/logins.toml` declares.
//!
//! With tests and fuzzing (the `invariants` feature) it also holds the typed login
//! [`transform`] the service ran before streams: the oracle the login stream is held to.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[cfg(any(test, feature = "invariants"))]
use {
    crate::domain::keyring::{KeyId, Keyring},
    chrono::{DateTime, NaiveDate, Utc},
    serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor},
    serde_json::Value,
    std::net::IpAddr,
};

/// Length limits, in characters. The migrations give the columns the same limits, so a row
/// that passes validation is never rejected by the database for its length.
pub const MAX_USER_ID_CHARS: usize = 128;
pub const MAX_DEVICE_TYPE_CHARS: usize = 32;
pub const MAX_DEVICE_ID_CHARS: usize = 256;
pub const MAX_APP_VERSION_CHARS: usize = 32;
pub const MAX_LOCALE_CHARS: usize = 32;
/// Every field the transform reads; any other field is ignored.
pub const FIELDS: [&str; 6] = [
    "user_id",
    "device_type",
    "ip",
    "device_id",
    "app_version",
    "locale",
];
/// Longest accepted `ip` string: a full IPv6 address with an embedded IPv4 tail is 45.
#[cfg(any(test, feature = "invariants"))]
const MAX_IP_CHARS: usize = 45;

/// A validated, masked login: exactly what becomes one row of `user_logins`.
#[cfg(any(test, feature = "invariants"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRow {
    /// The idempotency key: the SQS message id, or the original id of a redriven message.
    pub message_id: String,
    pub user_id: String,
    pub device_type: String,
    pub hashed_ip: String,
    pub hashed_device_id: String,
    /// The id of the key that made both digests: the keyring's current key at transform time.
    pub hmac_key_id: KeyId,
    pub locale: Option<String>,
    pub app_version: String,
    /// The UTC date of `sent_at`, so a row is the same whenever its message is processed.
    pub create_date: NaiveDate,
    pub sent_at: DateTime<Utc>,
}

/// What the transform needs to know about a message besides its body.
#[cfg(any(test, feature = "invariants"))]
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub message_id: &'a str,
    pub sent_at: DateTime<Utc>,
}

/// The kind of a JSON value, named in rejections instead of the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    #[cfg(any(test, feature = "invariants"))]
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Bool,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}

/// Why a body is poison. The `Display` text is safe to log: it never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("body is not valid JSON ({category} error at line {line}, column {column})")]
    InvalidJson {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("body is {found}, not a JSON object")]
    NotAnObject { found: JsonKind },
    #[error("field `{field}` is missing or null")]
    MissingField { field: &'static str },
    #[error("field `{field}` is {found}, expected a string")]
    WrongType {
        field: &'static str,
        found: JsonKind,
    },
    #[error("field `{field}` is empty")]
    Empty { field: &'static str },
    #[error("field `{field}` is longer than {max_chars} characters")]
    TooLong {
        field: &'static str,
        max_chars: usize,
    },
    #[error("field `{field}` contains a NUL character")]
    ContainsNul { field: &'static str },
    #[error("field `ip` is not an IPv4 or IPv6 address")]
    InvalidIp,
    /// Parsers disagree on which of two values wins (first, last, or an error), so taking
    /// either would let the row differ from what another reader of the queue sees.
    #[error("field `{field}` appears more than once")]
    DuplicateField { field: &'static str },
}

impl Rejection {
    /// The bounded reason code recorded in the dead-letter queue and in metrics.
    pub fn reason(&self) -> crate::DeadLetterReason {
        use crate::DeadLetterReason as R;
        match self {
            Self::InvalidJson { .. } | Self::DuplicateField { .. } => R::InvalidJson,
            Self::NotAnObject { .. } => R::NotAnObject,
            Self::MissingField { .. } => R::MissingField,
            Self::WrongType { .. } => R::WrongType,
            Self::Empty { .. }
            | Self::TooLong { .. }
            | Self::ContainsNul { .. }
            | Self::InvalidIp => R::InvalidValue,
        }
    }
}

/// Keyed HMAC-SHA256 masking of PII.
///
/// Keyed, not a bare SHA-256: there are only 2^32 IPv4 addresses, so an unkeyed digest of
/// one is reversed by hashing them all. Without the key nobody can run that search; with
/// it, an analyst can still compute the digest of a known value and find its rows.
#[derive(Clone)]
pub struct Masker {
    /// Keyed once; each digest clones this state instead of re-deriving the key pads.
    keyed: Hmac<Sha256>,
}

impl Masker {
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// Lowercase hex of HMAC-SHA256(key, value as UTF-8).
    pub fn digest(&self, value: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed HMAC state, for the dead-letter attributes' tag
    /// ([`crate::domain::dead_letter::AttributesTag`]). Its input starts with a byte that
    /// UTF-8 never holds, so no digest of a value (a row's, or one `dlq inspect` shows) is
    /// ever a tag, and the one key serves both.
    pub(crate) fn keyed(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masker { key: <redacted> }")
    }
}

/// Parses, validates and masks one message body into the row it becomes, with the
/// keyring's current key.
///
/// The typed login transform the service ran before streams. The service now runs the
/// login stream (`streams/logins.toml`, [`crate::domain::stream::login`]); this stays as
/// the oracle it is held to, by a differential property test and by the fuzz targets.
#[cfg(any(test, feature = "invariants"))]
pub fn transform(
    body: &str,
    envelope: Envelope<'_>,
    keyring: &Keyring,
) -> Result<LoginRow, Rejection> {
    let top: TopLevel = serde_json::from_str(body).map_err(|error| Rejection::InvalidJson {
        category: match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: error.line(),
        column: error.column(),
    })?;
    let fields = match top {
        TopLevel::Object(fields) => fields,
        TopLevel::Other(found) => return Err(Rejection::NotAnObject { found }),
    };

    let user_id = required(&fields, "user_id", MAX_USER_ID_CHARS)?;
    let device_type = required(&fields, "device_type", MAX_DEVICE_TYPE_CHARS)?;
    let ip = required(&fields, "ip", MAX_IP_CHARS).map_err(|rejection| match rejection {
        Rejection::TooLong { .. } => Rejection::InvalidIp,
        other => other,
    })?;
    if ip.parse::<IpAddr>().is_err() {
        return Err(Rejection::InvalidIp);
    }
    let device_id = required(&fields, "device_id", MAX_DEVICE_ID_CHARS)?;
    let app_version = required(&fields, "app_version", MAX_APP_VERSION_CHARS)?;
    let locale = optional(&fields, "locale", MAX_LOCALE_CHARS)?;

    let (key_id, masker) = keyring.current();
    Ok(LoginRow {
        message_id: envelope.message_id.to_owned(),
        user_id: user_id.to_owned(),
        device_type: device_type.to_owned(),
        hashed_ip: masker.digest(ip),
        hashed_device_id: masker.digest(device_id),
        hmac_key_id: key_id.clone(),
        locale: locale.map(str::to_owned),
        app_version: app_version.to_owned(),
        create_date: envelope.sent_at.date_naive(),
        sent_at: envelope.sent_at,
    })
}

#[cfg(any(test, feature = "invariants"))]
/// A body's top level. An object keeps its entries in order with duplicates, which a map
/// would silently collapse; nested values are plain [`Value`]s (serde_json's recursion
/// limit still applies to them, so deep nesting is an error, not a stack overflow).
enum TopLevel {
    Object(Vec<(String, Value)>),
    Other(JsonKind),
}

#[cfg(any(test, feature = "invariants"))]
impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

#[cfg(any(test, feature = "invariants"))]
struct TopLevelVisitor;

#[cfg(any(test, feature = "invariants"))]
impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(TopLevel::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TopLevel, A::Error> {
        // Parsed in full, so malformed or too deeply nested arrays are invalid JSON.
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(TopLevel::Other(JsonKind::Array))
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::Null))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::Bool))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::Number))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::Number))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::Number))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other(JsonKind::String))
    }
}

#[cfg(any(test, feature = "invariants"))]
fn required<'a>(
    fields: &'a [(String, Value)],
    field: &'static str,
    max_chars: usize,
) -> Result<&'a str, Rejection> {
    optional(fields, field, max_chars)?.ok_or(Rejection::MissingField { field })
}

#[cfg(any(test, feature = "invariants"))]
/// A string field that may be null or absent (both mean "no value").
fn optional<'a>(
    fields: &'a [(String, Value)],
    field: &'static str,
    max_chars: usize,
) -> Result<Option<&'a str>, Rejection> {
    let mut values = fields
        .iter()
        .filter(|(name, _)| name == field)
        .map(|(_, value)| value);
    let value = values.next();
    if values.next().is_some() {
        return Err(Rejection::DuplicateField { field });
    }
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.as_str(),
        Some(other) => {
            return Err(Rejection::WrongType {
                field,
                found: JsonKind::of(other),
            });
        }
    };
    if text.is_empty() {
        return Err(Rejection::Empty { field });
    }
    if text.contains('\0') {
        return Err(Rejection::ContainsNul { field });
    }
    // Byte length bounds the character count from above: skip the count when it can't matter.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(Rejection::TooLong { field, max_chars });
    }
    Ok(Some(text))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    pub(crate) const SAMPLE: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;

    pub(crate) fn envelope() -> Envelope<'static> {
        Envelope {
            message_id: "m-1",
            sent_at: Utc.with_ymd_and_hms(2026, 11, 24, 23, 59, 59).unwrap(),
        }
    }

    pub(crate) fn masker() -> Masker {
        Masker::new(b"test-key-0123456789")
    }

    /// A ring of the one key [`masker`], with the default id.
    pub(crate) fn keyring() -> Keyring {
        Keyring::single(KeyId::default(), masker())
    }

    use serde_json::Map;

    fn with_field(field: &str, value: Value) -> String {
        let mut object: Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
        object.insert(field.to_owned(), value);
        Value::Object(object).to_string()
    }

    fn without_field(field: &str) -> String {
        let mut object: Map<String, Value> = serde_json::from_str(SAMPLE).unwrap();
        object.remove(field);
        Value::Object(object).to_string()
    }

    #[test]
    fn sample_becomes_a_masked_row() {
        let row = transform(SAMPLE, envelope(), &keyring()).unwrap();
        assert_eq!(row.message_id, "m-1");
        assert_eq!(row.user_id, "424cdd21-063a-43a7-b91b-7ca1a833afae");
        assert_eq!(row.device_type, "android");
        assert_eq!(row.app_version, "2.3.0");
        assert_eq!(row.locale.as_deref(), Some("RU"));
        assert_eq!(
            row.create_date,
            NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
        );
        assert_eq!(row.hashed_ip, masker().digest("199.172.111.135"));
        assert_eq!(row.hashed_device_id, masker().digest("593-47-5928"));
        assert_ne!(row.hashed_ip, row.hashed_device_id);
        assert_eq!(row.hmac_key_id.as_str(), "default");
    }

    /// New rows are masked with the current key and carry its id, whatever else the ring holds.
    #[test]
    fn rows_are_masked_with_the_current_key_and_carry_its_id() {
        let old = Masker::new(b"old-key-0123456789abcdef");
        let new = Masker::new(b"new-key-0123456789abcdef");
        let ring = Keyring::new(
            vec![
                (KeyId::parse("2026-12").unwrap(), new.clone()),
                (KeyId::default(), old.clone()),
            ],
            &KeyId::parse("2026-12").unwrap(),
        )
        .unwrap();
        let row = transform(SAMPLE, envelope(), &ring).unwrap();
        assert_eq!(row.hmac_key_id.as_str(), "2026-12");
        assert_eq!(row.hashed_ip, new.digest("199.172.111.135"));
        assert_eq!(row.hashed_device_id, new.digest("593-47-5928"));
        assert_ne!(row.hashed_ip, old.digest("199.172.111.135"));
    }

    /// RFC 4231 test case 2: pins the digest to the standard, not to our own implementation.
    #[test]
    fn digest_is_standard_hmac_sha256_in_lowercase_hex() {
        assert_eq!(
            Masker::new(b"Jefe").digest("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The worked example in the README (openssl, Python and pgcrypto all give this value).
    #[test]
    fn readme_lookup_example_holds() {
        assert_eq!(
            Masker::new(b"test-hmac-key-0123456789abcdef").digest("199.172.111.135"),
            "da992b2230cd81b5156ff32ec9674acbbf4485c2a7a17c29b30ce830734a96f2"
        );
    }

    #[test]
    fn digest_depends_on_the_key() {
        assert_ne!(
            Masker::new(b"key-a").digest("10.0.0.1"),
            Masker::new(b"key-b").digest("10.0.0.1")
        );
    }

    #[test]
    fn app_version_stays_text_so_versions_do_not_collide() {
        let a = transform(
            &with_field("app_version", "0.96".into()),
            envelope(),
            &keyring(),
        )
        .unwrap();
        let b = transform(
            &with_field("app_version", "9.6".into()),
            envelope(),
            &keyring(),
        )
        .unwrap();
        assert_eq!(a.app_version, "0.96");
        assert_eq!(b.app_version, "9.6");
    }

    #[test]
    fn null_and_absent_locale_are_both_none() {
        let null = transform(&with_field("locale", Value::Null), envelope(), &keyring()).unwrap();
        let absent = transform(&without_field("locale"), envelope(), &keyring()).unwrap();
        assert_eq!(null.locale, None);
        assert_eq!(absent.locale, None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(
            transform(
                &with_field("extra", serde_json::json!({"x": 1})),
                envelope(),
                &keyring()
            )
            .is_ok()
        );
    }

    #[test]
    fn ipv6_is_accepted() {
        assert!(
            transform(
                &with_field("ip", "2001:db8::1".into()),
                envelope(),
                &keyring()
            )
            .is_ok()
        );
    }

    #[test]
    fn garbage_from_the_real_queue_is_poison() {
        let rejection = transform(
            r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#,
            envelope(),
            &keyring(),
        )
        .unwrap_err();
        assert_eq!(rejection, Rejection::MissingField { field: "user_id" });
    }

    #[test]
    fn every_rejection_kind() {
        let cases: Vec<(String, Rejection)> = vec![
            (
                "{not json".into(),
                Rejection::InvalidJson {
                    category: "syntax",
                    line: 1,
                    column: 2,
                },
            ),
            (
                "[1, 2]".into(),
                Rejection::NotAnObject {
                    found: JsonKind::Array,
                },
            ),
            (
                "\"text\"".into(),
                Rejection::NotAnObject {
                    found: JsonKind::String,
                },
            ),
            (without_field("ip"), Rejection::MissingField { field: "ip" }),
            (
                with_field("user_id", Value::Null),
                Rejection::MissingField { field: "user_id" },
            ),
            (
                with_field("device_id", 593.into()),
                Rejection::WrongType {
                    field: "device_id",
                    found: JsonKind::Number,
                },
            ),
            (
                with_field("locale", true.into()),
                Rejection::WrongType {
                    field: "locale",
                    found: JsonKind::Bool,
                },
            ),
            (
                with_field("device_type", "".into()),
                Rejection::Empty {
                    field: "device_type",
                },
            ),
            (
                with_field("user_id", "a\0b".into()),
                Rejection::ContainsNul { field: "user_id" },
            ),
            (
                with_field("locale", "x".repeat(33).into()),
                Rejection::TooLong {
                    field: "locale",
                    max_chars: 32,
                },
            ),
            (with_field("ip", "999.1.1.1".into()), Rejection::InvalidIp),
            (
                with_field("ip", "1".repeat(100).into()),
                Rejection::InvalidIp,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                transform(&body, envelope(), &keyring()).unwrap_err(),
                expected,
                "body: {body}"
            );
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        // 32 two-byte characters: 64 bytes, yet within the 32-character limit.
        assert!(
            transform(
                &with_field("locale", "é".repeat(32).into()),
                envelope(),
                &keyring()
            )
            .is_ok()
        );
    }

    #[test]
    fn a_field_we_read_given_twice_is_refused_as_ambiguous() {
        for field in FIELDS {
            let body = SAMPLE.replacen('{', &format!(r#"{{"{field}": "1.2.3.4", "#), 1);
            let rejection = transform(&body, envelope(), &keyring()).unwrap_err();
            assert_eq!(rejection, Rejection::DuplicateField { field });
            assert_eq!(rejection.reason(), crate::DeadLetterReason::InvalidJson);
        }
        // Even with the same value twice: the body is still one a reader may refuse.
        let body = SAMPLE.replacen('{', r#"{"locale": "RU", "#, 1);
        assert!(transform(&body, envelope(), &keyring()).is_err());
    }

    #[test]
    fn an_unknown_field_given_twice_is_ignored() {
        let body = SAMPLE.replacen('{', r#"{"extra": 1, "extra": [2], "#, 1);
        assert!(transform(&body, envelope(), &keyring()).is_ok());
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let nested_in_a_field = SAMPLE.replacen('{', &format!(r#"{{"extra": {deep}, "#), 1);
        for body in [deep, nested_in_a_field] {
            assert!(matches!(
                transform(&body, envelope(), &keyring()),
                Err(Rejection::InvalidJson { .. })
            ));
        }
    }

    /// Any JSON value, nested a few levels deep.
    pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(arb_key(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Object keys, mostly the fields we read so both the accept and reject paths run.
    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            1 => "[a-z_]{1,10}",
        ]
    }

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 1..=max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    /// A valid event's body, every field at any value the rules allow.
    pub(crate) fn arb_event() -> impl Strategy<Value = String> {
        (
            arb_text(MAX_USER_ID_CHARS),
            arb_text(MAX_DEVICE_TYPE_CHARS),
            any::<std::net::IpAddr>(),
            arb_text(MAX_DEVICE_ID_CHARS),
            arb_text(MAX_APP_VERSION_CHARS),
            proptest::option::of(arb_text(MAX_LOCALE_CHARS)),
        )
            .prop_map(
                |(user_id, device_type, ip, device_id, app_version, locale)| {
                    serde_json::json!({
                        "user_id": user_id, "device_type": device_type, "ip": ip.to_string(),
                        "device_id": device_id, "app_version": app_version, "locale": locale,
                    })
                    .to_string()
                },
            )
    }

    proptest! {
        /// Any text, however malformed, gives a row or a typed rejection: never a panic.
        #[test]
        fn any_text_gives_a_row_or_a_typed_rejection(body in ".{0,300}") {
            crate::domain::invariants::check(&body);
        }

        /// Arbitrary bytes, as a producer with the wrong encoding would send them (SQS
        /// bodies are text, so they arrive decoded, with invalid sequences replaced).
        #[test]
        fn any_bytes_give_a_row_or_a_typed_rejection(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            crate::domain::invariants::check(&String::from_utf8_lossy(&bytes));
        }

        /// Arbitrary JSON, objects mostly made of the fields we read.
        #[test]
        fn any_json_gives_a_row_or_a_typed_rejection(value in arb_json()) {
            crate::domain::invariants::check(&value.to_string());
        }

        /// Objects with every field present and arbitrary values: the accept path's edges.
        #[test]
        fn any_field_values_give_a_row_or_a_typed_rejection(
            values in proptest::collection::vec(prop_oneof![6 => ".{1,30}".prop_map(Value::from), 1 => Just(Value::Null), 1 => arb_json()], 6),
            ip in prop_oneof![any::<std::net::IpAddr>().prop_map(|ip| Value::from(ip.to_string())), arb_json()],
        ) {
            let mut object = Map::new();
            for (field, value) in ["user_id", "device_type", "device_id", "app_version", "locale", "extra"].into_iter().zip(values) {
                object.insert(field.to_owned(), value);
            }
            object.insert("ip".to_owned(), ip);
            crate::domain::invariants::check(&Value::Object(object).to_string());
        }

        /// Valid events round-trip: every field lands unchanged or as its keyed digest.
        #[test]
        fn valid_events_round_trip(
            user_id in arb_text(MAX_USER_ID_CHARS),
            device_type in arb_text(MAX_DEVICE_TYPE_CHARS),
            ip in any::<std::net::IpAddr>(),
            device_id in arb_text(MAX_DEVICE_ID_CHARS),
            app_version in arb_text(MAX_APP_VERSION_CHARS),
            locale in proptest::option::of(arb_text(MAX_LOCALE_CHARS)),
        ) {
            let body = serde_json::json!({
                "user_id": user_id, "device_type": device_type, "ip": ip.to_string(),
                "device_id": device_id, "app_version": app_version, "locale": locale,
            }).to_string();
            let row = transform(&body, envelope(), &keyring()).unwrap();
            prop_assert_eq!(row.user_id, user_id);
            prop_assert_eq!(row.device_type, device_type);
            prop_assert_eq!(row.app_version, app_version);
            prop_assert_eq!(row.locale, locale);
            prop_assert_eq!(row.hashed_ip, masker().digest(&ip.to_string()));
            prop_assert_eq!(row.hashed_device_id, masker().digest(&device_id));
        }

        /// Equal inputs give equal digests and distinct inputs distinct ones.
        #[test]
        fn digest_is_deterministic_and_distinguishing(a in ".{0,64}", b in ".{0,64}") {
            let m = masker();
            prop_assert_eq!(m.digest(&a), m.digest(&a));
            prop_assert_eq!(m.digest(&a) == m.digest(&b), a == b);
            prop_assert_eq!(m.digest(&a).len(), 64);
            prop_assert!(m.digest(&a).bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        }

        /// A digest is tied to its key: another key gives another digest of the same value.
        #[test]
        fn different_keys_give_different_digests(
            a in proptest::collection::vec(any::<u8>(), 16..64),
            b in proptest::collection::vec(any::<u8>(), 16..64),
            value in ".{0,64}",
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(Masker::new(&a).digest(&value), Masker::new(&b).digest(&value));
        }

        /// A rejection's text never contains the value that caused it.
        #[test]
        fn rejections_never_quote_values(secret in "[a-z]{12}") {
            for field in FIELDS {
                for value in [Value::from(secret.clone()), serde_json::json!([secret.clone()]),
                              Value::from(format!("{secret}\0")), Value::from(secret.repeat(30))] {
                    if let Err(rejection) = transform(&with_field(field, value), envelope(), &keyring()) {
                        prop_assert!(!rejection.to_string().contains(&secret));
                    }
                }
            }
            let broken = format!("{{\"ip\": \"{secret}");
            let rejection = transform(&broken, envelope(), &keyring()).unwrap_err();
            prop_assert!(!rejection.to_string().contains(&secret));
        }
    }
}
