//! What must hold for every body, however hostile: checked by the property tests in
//! [`crate::domain::event`] and by every fuzz target (the `invariants` feature), so both hunt with
//! the same rules. Test code: it panics on a finding.

use std::collections::HashSet;
use std::sync::OnceLock;

use strum::IntoEnumIterator;

use crate::DeadLetterReason;
use crate::domain::envelope::{EnvelopeKind, EnvelopeMode, EnvelopeRejection, unwrap};
use crate::domain::event::{
    Envelope, JsonKind, MAX_APP_VERSION_CHARS, MAX_DEVICE_TYPE_CHARS, MAX_LOCALE_CHARS,
    MAX_USER_ID_CHARS, Masker, Rejection, transform,
};
use crate::domain::keyring::{KeyId, Keyring};

const KEY: &[u8] = b"invariants-key-0123456789";
const MESSAGE_ID: &str = "m-1";
/// Not the default id, so a row that recorded a constant instead of its key's id is caught.
const KEY_ID: &str = "invariants-1";

/// A ring whose current key is [`KEY`]; another key beside it must not mask anything.
fn keyring() -> Keyring {
    let id = |text| KeyId::parse(text).expect("a valid key id");
    Keyring::new(
        vec![
            (
                id("invariants-0"),
                Masker::new(b"invariants-old-key-0123456789"),
            ),
            (id(KEY_ID), Masker::new(KEY)),
        ],
        &id(KEY_ID),
    )
    .expect("a valid keyring")
}

/// Panics (a finding) unless `body` gives a row that obeys every rule or a rejection with a
/// reason from the bounded set.
pub fn check(body: &str) {
    let masker = Masker::new(KEY);
    let keyring = keyring();
    let envelope = Envelope {
        message_id: MESSAGE_ID,
        sent_at: chrono::DateTime::UNIX_EPOCH,
    };
    match transform(body, envelope, &keyring) {
        Ok(row) => {
            let input: serde_json::Value =
                serde_json::from_str(body).expect("an accepted body is JSON");
            let field = |name: &str| input[name].as_str().unwrap_or_default().to_owned();
            let (ip, device_id) = (field("ip"), field("device_id"));
            // The PII is stored only as its keyed digest...
            assert_eq!(row.hashed_ip, masker.digest(&ip));
            assert_eq!(row.hashed_device_id, masker.digest(&device_id));
            // ...made by the current key, whose id the row records.
            assert_eq!(row.hmac_key_id.as_str(), KEY_ID);
            assert!(row.hashed_ip != ip && row.hashed_device_id != device_id);
            for digest in [&row.hashed_ip, &row.hashed_device_id] {
                assert_eq!(digest.len(), 64);
                assert!(
                    digest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
            }
            // ...and nowhere else, unless the input itself put it in that column's own field.
            let passed_through = [
                (row.user_id.as_str(), field("user_id")),
                (row.device_type.as_str(), field("device_type")),
                (row.app_version.as_str(), field("app_version")),
                (row.locale.as_deref().unwrap_or_default(), field("locale")),
                (row.message_id.as_str(), MESSAGE_ID.to_owned()),
            ];
            for raw in [&ip, &device_id] {
                for (output, source) in &passed_through {
                    assert!(!output.contains(raw.as_str()) || source.contains(raw.as_str()));
                }
            }
            assert!(row.user_id.chars().count() <= MAX_USER_ID_CHARS);
            assert!(row.device_type.chars().count() <= MAX_DEVICE_TYPE_CHARS);
            assert!(row.app_version.chars().count() <= MAX_APP_VERSION_CHARS);
            assert!(
                row.locale
                    .as_deref()
                    .is_none_or(|l| l.chars().count() <= MAX_LOCALE_CHARS)
            );
            for text in [&row.user_id, &row.device_type, &row.app_version] {
                assert!(!text.is_empty() && !text.contains('\0'));
            }
            // Transforming the same body again gives the same row: masking is deterministic.
            assert_eq!(transform(body, envelope, &keyring).unwrap(), row);
        }
        Err(rejection) => {
            // The reason is bounded by its type. The text goes to logs and the DLQ, so it
            // must be one of the fixed templates (numbers aside): then it cannot quote a value.
            let text = rejection.to_string();
            assert!(templates().contains(&without_numbers(&text)), "{text}");
        }
    }
}

/// Panics (a finding) unless `body` obeys [`check`], unwrapping it in any mode gives the
/// body or a rejection with a fixed text, and `body` inside an SNS notification or an
/// EventBridge event gives what it gives alone: the same row, or a rejection for the same
/// reason (the same rejection, from SNS, whose `Message` is the body exactly).
pub fn check_envelopes(body: &str) {
    check(body);
    let envelope = Envelope {
        message_id: MESSAGE_ID,
        sent_at: chrono::DateTime::UNIX_EPOCH,
    };
    let keyring = keyring();
    let alone = transform(body, envelope, &keyring);
    for mode in EnvelopeMode::iter() {
        match unwrap(body, mode) {
            Ok(inner) => {
                if inner.envelope.is_none() {
                    assert_eq!(
                        inner.body, body,
                        "{mode}: a body without an envelope is kept"
                    );
                }
                let _ = transform(&inner.body, envelope, &keyring);
            }
            Err(rejection) => {
                assert_eq!(rejection.reason(), DeadLetterReason::InvalidEnvelope);
                let text = rejection.to_string();
                assert!(envelope_templates().contains(&text), "{text}");
            }
        }
    }

    let notification = serde_json::json!({
        "Type": "Notification",
        "MessageId": "0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins",
        "Message": body,
    })
    .to_string();
    for mode in [EnvelopeMode::Auto, EnvelopeMode::Sns] {
        let inner = unwrap(&notification, mode).expect("a well-formed notification unwraps");
        assert_eq!(inner.envelope, Some(EnvelopeKind::Sns));
        assert_eq!(inner.body, body);
        assert_eq!(transform(&inner.body, envelope, &keyring), alone);
    }

    // Only a body that is one JSON value can stand as `detail` (else the event is not JSON).
    if serde_json::from_str::<&serde_json::value::RawValue>(body).is_ok() {
        let event = format!(r#"{{"detail-type":"login","source":"app","detail":{body}}}"#);
        for mode in [EnvelopeMode::Auto, EnvelopeMode::EventBridge] {
            let inner = unwrap(&event, mode).expect("a well-formed event unwraps");
            assert_eq!(inner.envelope, Some(EnvelopeKind::EventBridge));
            match (transform(&inner.body, envelope, &keyring), &alone) {
                (Ok(wrapped), Ok(alone)) => assert_eq!(&wrapped, alone),
                (Err(wrapped), Err(alone)) => assert_eq!(wrapped.reason(), alone.reason()),
                (wrapped, alone) => panic!("EventBridge changed {alone:?} into {wrapped:?}"),
            }
        }
    }
}

/// Every envelope rejection text there can be.
fn envelope_templates() -> &'static HashSet<String> {
    static TEMPLATES: OnceLock<HashSet<String>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        use JsonKind::*;
        let mut all = Vec::new();
        for envelope in [EnvelopeKind::Sns, EnvelopeKind::EventBridge] {
            for mode in EnvelopeMode::iter() {
                all.push(EnvelopeRejection::NotAnEnvelope {
                    expected: envelope,
                    mode,
                });
            }
            for field in [
                "Type",
                "TopicArn",
                "MessageId",
                "Message",
                "detail-type",
                "source",
                "detail",
            ] {
                all.push(EnvelopeRejection::MissingField { envelope, field });
                all.push(EnvelopeRejection::DuplicateField { envelope, field });
                for found in [Null, Bool, Number, String, Array, Object] {
                    all.push(EnvelopeRejection::WrongType {
                        envelope,
                        field,
                        found,
                    });
                }
            }
        }
        all.iter().map(ToString::to_string).collect()
    })
}

/// Every rejection text there can be, with numbers (limits, line and column) replaced by `#`.
fn templates() -> &'static HashSet<String> {
    static TEMPLATES: OnceLock<HashSet<String>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        use JsonKind::*;
        let kinds = [Null, Bool, Number, String, Array, Object];
        let mut all = vec![Rejection::InvalidIp];
        for category in ["io", "syntax", "data", "unexpected end"] {
            all.push(Rejection::InvalidJson {
                category,
                line: 0,
                column: 0,
            });
        }
        for found in kinds {
            all.push(Rejection::NotAnObject { found });
        }
        for field in crate::domain::event::FIELDS {
            all.extend([
                Rejection::MissingField { field },
                Rejection::Empty { field },
                Rejection::TooLong {
                    field,
                    max_chars: 0,
                },
                Rejection::ContainsNul { field },
                Rejection::DuplicateField { field },
            ]);
            all.extend(kinds.map(|found| Rejection::WrongType { field, found }));
        }
        all.iter()
            .map(|rejection| without_numbers(&rejection.to_string()))
            .collect()
    })
}

fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// The example stream files, compiled once: the login stream and the wide orders stream.
fn streams() -> &'static [crate::domain::stream::Stream] {
    static STREAMS: OnceLock<Vec<crate::domain::stream::Stream>> = OnceLock::new();
    STREAMS.get_or_init(|| {
        let mut streams = vec![crate::domain::stream::login::stream(
            "q",
            EnvelopeMode::Auto,
        )];
        let env = |_: &str| Some("q".to_owned());
        let schema = |_: &str| Ok(ORDERS_SCHEMA.to_owned());
        let lookups = crate::domain::stream::Lookups {
            env: &env,
            schema: &schema,
        };
        streams.extend(
            crate::domain::stream::compile(ORDERS_FILE, "orders.toml", &lookups)
                .expect("the orders example compiles"),
        );
        streams
    })
}

/// The orders example, shipped in `streams/`.
pub const ORDERS_FILE: &str = include_str!("../../streams/orders.toml");
pub const ORDERS_SCHEMA: &str = include_str!("../../streams/orders.schema.json");

/// Every string and number of `body` at least `min` long, at any depth (and inside an SNS
/// `Message`), which a detail must not quote.
fn values_of(body: &str, min: usize) -> Vec<String> {
    fn walk(value: &serde_json::Value, min: usize, out: &mut Vec<String>, depth: usize) {
        match value {
            serde_json::Value::String(text) => {
                if depth < 3
                    && let Ok(inner) = serde_json::from_str::<serde_json::Value>(text)
                {
                    walk(&inner, min, out, depth + 1);
                }
                if text.chars().count() >= min {
                    out.push(text.clone());
                }
            }
            serde_json::Value::Number(number) => {
                let text = number.to_string();
                if text.len() >= min {
                    out.push(text);
                }
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| walk(item, min, out, depth));
            }
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    if key.chars().count() >= min {
                        out.push(key.clone());
                    }
                    walk(value, min, out, depth);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        walk(&value, min, &mut out, 0);
    }
    out
}

/// Panics (a finding) unless every example stream makes of `body` a row of one value per
/// column, the same again on a second try, or a poison whose detail quotes no string or
/// number of the body (unless the stream file or the fixed words of a detail hold it too).
pub fn check_streams(body: &str) {
    let keyring = keyring();
    let meta = crate::domain::stream::MessageMeta {
        sqs_message_id: MESSAGE_ID,
        original_message_id: None,
        sent_at: chrono::DateTime::UNIX_EPOCH,
    };
    let values = values_of(body, 6);
    static VOCABULARIES: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    let vocabularies =
        VOCABULARIES.get_or_init(|| streams().iter().map(stream_vocabulary).collect());
    for (stream, vocabulary) in streams().iter().zip(vocabularies) {
        match stream.transform(body, &meta, &keyring) {
            Ok(row) => {
                assert_eq!(row.values.len(), stream.columns.len());
                assert!(crate::domain::stream::is_usable_key(row.key()));
                for (column, value) in stream.columns.iter().zip(&row.values) {
                    if column.mask == Some(crate::domain::stream::Mask::Hmac) {
                        let crate::domain::stream::Value::Text(digest) = value else {
                            panic!("{}: a masked column holds {value:?}", column.name);
                        };
                        assert_eq!(digest.len(), 64);
                    }
                    if !column.nullable {
                        assert_ne!(
                            value,
                            &crate::domain::stream::Value::Null,
                            "{}",
                            column.name
                        );
                    }
                }
                assert_eq!(stream.transform(body, &meta, &keyring), Ok(row));
            }
            Err(poison) => {
                assert!(!poison.detail.contains('\n'));
                let detail = without_numbers(&poison.detail);
                for value in &values {
                    let value = without_numbers(value);
                    if detail.contains(&value) {
                        assert!(
                            vocabulary.iter().any(|text| text.contains(&value)),
                            "{:?} quotes {value:?}",
                            poison.detail
                        );
                    }
                }
            }
        }
    }
}

/// Every detail a stream can give (numbers as `#`), and its files: a body's string found in
/// a detail must be found in one of these, so the detail did not take it from the body.
fn stream_vocabulary(stream: &crate::domain::stream::Stream) -> Vec<String> {
    use crate::domain::stream::error::{Expected, Side};
    use crate::domain::stream::{Problem, Source};
    let mut fields: Vec<String> = Vec::new();
    let mut paths: Vec<&[String]> = stream
        .columns
        .iter()
        .filter_map(|column| match &column.source {
            Source::Field { path, .. } => Some(path.as_slice()),
            Source::Meta(_) => None,
        })
        .collect();
    if let crate::domain::stream::KeyChoice::Field { path, .. } = &stream.key {
        paths.push(path);
    }
    if let crate::domain::stream::EventTime::Field { path, .. } = &stream.event_time {
        paths.push(path);
    }
    for path in paths {
        for depth in 1..=path.len() {
            fields.push(crate::domain::stream::display_path(&path[..depth]));
        }
    }
    let kinds = [
        JsonKind::Null,
        JsonKind::Bool,
        JsonKind::Number,
        JsonKind::String,
        JsonKind::Array,
        JsonKind::Object,
    ];
    let mut problems = vec![Problem::NoEnvelopeId];
    for category in ["io", "syntax", "data", "unexpected end"] {
        problems.push(Problem::InvalidJson {
            category,
            line: 0,
            column: 0,
        });
    }
    problems.extend(kinds.map(|found| Problem::NotAnObject { found }));
    for envelope in [EnvelopeKind::Sns, EnvelopeKind::EventBridge] {
        problems.push(Problem::UnusableEnvelopeId {
            envelope,
            field: envelope.id_field(),
        });
    }
    for field in fields {
        let f = || field.clone();
        problems.extend([
            Problem::MissingField { field: f() },
            Problem::Empty { field: f() },
            Problem::TooLong {
                field: f(),
                max_chars: 0,
            },
            Problem::TooShort {
                field: f(),
                min_chars: 0,
            },
            Problem::ContainsNul { field: f() },
            Problem::InvalidIp { field: f() },
            Problem::DuplicateField { field: f() },
            Problem::NotOneOf { field: f() },
            Problem::UnusableKey { field: f() },
        ]);
        for side in [Side::Below, Side::Above] {
            problems.push(Problem::OutOfRange {
                field: f(),
                side,
                limit: "the range of numeric(0,0)".to_owned(),
            });
        }
        for what in [
            "a UUID",
            "an integer",
            "a finite number",
            "a decimal number",
            "a date (YYYY-MM-DD)",
            "an RFC 3339 timestamp",
            "an RFC 3339 timestamp or an epoch number in range",
        ] {
            problems.push(Problem::InvalidFormat { field: f(), what });
        }
        for found in kinds {
            for expected in [
                Expected::String,
                Expected::Integer,
                Expected::Number,
                Expected::Boolean,
                Expected::Decimal,
                Expected::Timestamp { epoch: false },
                Expected::Timestamp { epoch: true },
                Expected::Object,
                Expected::AnyJson,
                Expected::Id,
            ] {
                problems.push(Problem::WrongType {
                    field: f(),
                    found,
                    expected,
                });
            }
        }
    }
    let mut texts: Vec<String> = vec![
        ORDERS_FILE.to_owned(),
        ORDERS_SCHEMA.to_owned(),
        crate::domain::stream::login::FILE.to_owned(),
    ];
    for problem in problems {
        let text = problem.to_string();
        for envelope in [EnvelopeKind::Sns, EnvelopeKind::EventBridge] {
            texts.push(format!(
                "in the {envelope}'s `{}`: {text}",
                envelope.inner_field()
            ));
        }
        texts.push(text);
    }
    texts.iter().map(|text| without_numbers(text)).collect()
}

/// Panics (a finding) unless compiling `text` as a stream file gives streams or one error
/// on one line that places it in the file.
pub fn check_stream_file(text: &str) {
    let env = |name: &str| (name.len() < 40).then(|| format!("http://q/{name}"));
    let schema = |name: &str| match name {
        "orders.schema.json" => Ok(ORDERS_SCHEMA.to_owned()),
        _ => Err("no such file".to_owned()),
    };
    let lookups = crate::domain::stream::Lookups {
        env: &env,
        schema: &schema,
    };
    match crate::domain::stream::compile(text, "fuzz.toml", &lookups) {
        Ok(streams) => {
            for stream in &streams {
                assert!(!stream.columns.is_empty());
                assert!(!stream.ddl().is_empty());
                let _ = stream.insert_statement();
            }
        }
        Err(error) => {
            let shown = error.to_string();
            assert!(shown.starts_with("fuzz.toml:"), "{shown}");
            assert!(!shown.contains('\n'), "{shown}");
            let lines = text.split('\n').count();
            assert!(
                error.position.line >= 1 && error.position.line <= lines,
                "{shown}"
            );
        }
    }
}
