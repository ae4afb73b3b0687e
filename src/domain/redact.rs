//! Redaction of a message body for display (`dlq inspect`). Pure: no I/O.
//!
//! Why this blunt: a dead-lettered body is by definition one that did not match the schema,
//! so "mask `ip` and `device_id`" cannot be trusted to find the PII in it. An SNS envelope
//! holds it inside a string, a producer may nest it, change its case, put it in an array, a
//! number or a key. So nothing a producer wrote is shown except the body's shape: every
//! string and number at any depth becomes a short keyed digest, keys are kept only when they
//! are plain identifiers, booleans and nulls stay, and a body that cannot be parsed as JSON
//! (or is too large to be worth it) is withheld, with only its size and the reason.
//!
//! The digests are prefixes of [`Masker::digest`], so an analyst who holds the key can still
//! tell whether a sample holds a known value, and find its rows (`hashed_ip LIKE 'prefix%'`).
//! `dlq inspect` redacts with the keyring's current key only: that is the key a redriven
//! message's row would be masked with, and one prefix per value keeps a sample readable
//! (`sqs2pg digest` gives a value's digest under every key).

use std::fmt;

use serde_json::{Map, Value};

use crate::domain::event::Masker;

/// Bodies longer than this are withheld rather than parsed: a sample that large is no use
/// on a terminal, and it bounds the work per message.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A redacted body longer than this is cut (it is safe to cut: nothing in it is raw).
pub const MAX_SHOWN_BYTES: usize = 2048;
/// Hex digits of the digest shown: 64 bits, plenty to tell values apart in a sample.
pub const DIGEST_HEX_DIGITS: usize = 16;
/// How many levels of JSON held in a string (an SNS `Message`) are opened up; deeper
/// strings are digested whole. It bounds the recursion, which each level could restart.
const MAX_EMBEDDED_LEVELS: usize = 2;
/// The longest key kept as it is.
const MAX_KEY_CHARS: usize = 64;

/// A body as it may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redacted {
    /// The body's JSON structure, with every string, number and non-identifier key digested.
    Shown(String),
    /// Nothing of the body is shown but its size.
    Withheld { bytes: usize, reason: Withheld },
}

/// Why a body is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Not JSON (or nested deeper than the parser allows, or with a broken escape): there is
    /// no structure to tell PII from the rest.
    NotJson,
    /// Longer than [`MAX_BODY_BYTES`].
    TooLarge,
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => f.write_str("not JSON, so no part of it can be shown safely"),
            Self::TooLarge => write!(f, "larger than {MAX_BODY_BYTES} bytes"),
        }
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shown(text) => f.write_str(text),
            Self::Withheld { bytes, reason } => {
                write!(f, "<{bytes} bytes withheld: {reason}>")
            }
        }
    }
}

/// The body as it may be shown: see the module documentation for the rules.
pub fn redact(body: &str, masker: &Masker) -> Redacted {
    let withheld = |reason| Redacted::Withheld {
        bytes: body.len(),
        reason,
    };
    if body.len() > MAX_BODY_BYTES {
        return withheld(Withheld::TooLarge);
    }
    // serde_json's recursion limit turns deep nesting into an error, so the walk below is
    // bounded too.
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return withheld(Withheld::NotJson);
    };
    let mut text = redact_value(&value, masker, 0).to_string();
    if text.len() > MAX_SHOWN_BYTES {
        let mut cut = MAX_SHOWN_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let rest = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("… ({rest} more bytes)"));
    }
    Redacted::Shown(text)
}

/// The value with every string and number digested and every key that is not a plain
/// identifier digested; `level` counts the JSON-in-a-string levels opened so far.
fn redact_value(value: &Value, masker: &Masker, level: usize) -> Value {
    match value {
        Value::Null | Value::Bool(_) => value.clone(),
        Value::Number(number) => {
            Value::String(format!("num:{}", digest(masker, &number.to_string())))
        }
        Value::String(text) => match embedded_json(text, level) {
            Some(inner) => Value::String(redact_value(&inner, masker, level + 1).to_string()),
            None => Value::String(digest(masker, text)),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| redact_value(item, masker, level))
                .collect(),
        ),
        Value::Object(fields) => {
            let mut redacted = Map::with_capacity(fields.len());
            for (key, value) in fields {
                let key = if is_plain_identifier(key) {
                    key.clone()
                } else {
                    digest(masker, key)
                };
                redacted.insert(key, redact_value(value, masker, level));
            }
            Value::Object(redacted)
        }
    }
}

/// A string that holds a JSON object or array (an SNS `Message`, say), parsed, so that its
/// structure can be shown too; its strings are digested like any other.
fn embedded_json(text: &str, level: usize) -> Option<Value> {
    if level >= MAX_EMBEDDED_LEVELS || !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// `hmac:` and the first [`DIGEST_HEX_DIGITS`] of the value's keyed digest.
fn digest(masker: &Masker, text: &str) -> String {
    let mut digest = masker.digest(text);
    digest.truncate(DIGEST_HEX_DIGITS);
    format!("hmac:{digest}")
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`: a field name, not data used as a key (an IP, an id
/// with dashes, free text).
fn is_plain_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && key.len() <= MAX_KEY_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masker() -> Masker {
        Masker::new(b"redact-test-key-0123456789")
    }

    fn shown(body: &str) -> String {
        match redact(body, &masker()) {
            Redacted::Shown(text) => text,
            withheld => panic!("withheld: {withheld}"),
        }
    }

    fn short(value: &str) -> String {
        digest(&masker(), value)
    }

    /// Panics unless `value` is a redacted one: no numbers, every string a digest (or JSON
    /// that is itself redacted), every key an identifier or a digest.
    fn assert_redacted(value: &Value) {
        let is_digest = |text: &str| {
            text.strip_prefix("hmac:").is_some_and(|hex| {
                hex.len() == DIGEST_HEX_DIGITS
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        };
        match value {
            Value::Null | Value::Bool(_) => {}
            Value::Number(number) => panic!("a number survived: {number}"),
            Value::String(text) => {
                let text = text.strip_prefix("num:").unwrap_or(text);
                if !is_digest(text) {
                    let inner: Value = serde_json::from_str(text)
                        .unwrap_or_else(|_| panic!("a raw string survived: {text}"));
                    assert!(inner.is_object() || inner.is_array(), "{text}");
                    assert_redacted(&inner);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_redacted),
            Value::Object(fields) => {
                for (key, value) in fields {
                    assert!(is_plain_identifier(key) || is_digest(key), "key {key}");
                    assert_redacted(value);
                }
            }
        }
    }

    #[test]
    fn top_level_pii_becomes_digests_that_match_the_stored_ones() {
        let text = shown(r#"{"ip": "10.1.2.3", "device_id": "DEV-1", "flag": true, "x": null}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::json!({
                "ip": short("10.1.2.3"), "device_id": short("DEV-1"), "flag": true, "x": null,
            })
        );
        // A prefix of the digest stored in hashed_ip: enough to find the rows.
        assert!(
            masker()
                .digest("10.1.2.3")
                .starts_with(&short("10.1.2.3")[5..])
        );
    }

    #[test]
    fn every_string_and_number_at_any_depth_is_digested() {
        let body = r#"{"data": {"ip": "10.9.8.7", "device_id": "DEV-NESTED-1"},
                       "IP": "172.16.0.9", "Device_Id": "CASED-2", "user_id": "u-3",
                       "ips": ["192.0.2.1", ["198.51.100.2"]], "n": 593, "f": 1.5e3,
                       "list": [{"device_id": 8675309}]}"#;
        let text = shown(body);
        for raw in [
            "10.9.8.7",
            "DEV-NESTED-1",
            "172.16.0.9",
            "CASED-2",
            "u-3",
            "192.0.2.1",
            "198.51.100.2",
            "593",
            "1500",
            "8675309",
        ] {
            assert!(!text.contains(raw), "{raw} in {text}");
        }
        let redacted: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(redacted["data"]["device_id"], short("DEV-NESTED-1"));
        assert_eq!(redacted["n"], format!("num:{}", short("593")));
        assert_eq!(redacted["ips"][1][0], short("198.51.100.2"));
        assert_redacted(&redacted);
    }

    #[test]
    fn json_inside_a_string_is_opened_and_redacted_too() {
        let inner = r#"{"ip": "199.172.111.135", "device_id": "593-47-5928"}"#;
        let body = serde_json::json!({
            "Type": "Notification", "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:logins", "Message": inner,
        })
        .to_string();
        let text = shown(&body);
        for raw in [
            "199.172.111.135",
            "593-47-5928",
            "123456789012",
            "Notification",
        ] {
            assert!(!text.contains(raw), "{raw} in {text}");
        }
        let outer: Value = serde_json::from_str(&text).unwrap();
        let message: Value = serde_json::from_str(outer["Message"].as_str().unwrap()).unwrap();
        assert_eq!(message["ip"], short("199.172.111.135"));
        assert_redacted(&outer);
    }

    #[test]
    fn keys_that_are_not_plain_identifiers_are_digested() {
        let text = shown(r#"{"10.20.30.40": 1, "KEY-DEV-9": {"ok_key": "v"}, "détail": 2}"#);
        for raw in ["10.20.30.40", "KEY-DEV-9", "détail"] {
            assert!(!text.contains(raw), "{raw} in {text}");
        }
        assert!(text.contains(&format!(r#""{}":"#, short("KEY-DEV-9"))));
        assert!(text.contains(r#""ok_key":"#));
        assert!(is_plain_identifier("_a1"));
        assert!(is_plain_identifier(&"a".repeat(64)));
        for key in ["", "1a", "a-b", "a.b", "a b", "ä", &"a".repeat(65)] {
            assert!(!is_plain_identifier(key), "{key}");
        }
    }

    #[test]
    fn any_top_level_kind_is_redacted() {
        assert_eq!(
            shown(r#""203.0.113.7""#),
            format!(r#""{}""#, short("203.0.113.7"))
        );
        assert_eq!(
            shown("6502530000"),
            format!(r#""num:{}""#, short("6502530000"))
        );
        assert_eq!(shown("[true, null]"), "[true,null]");
        assert!(!shown(r#"["203.0.113.7"]"#).contains("203.0.113.7"));
    }

    #[test]
    fn what_cannot_be_parsed_or_is_too_large_is_withheld_with_its_size() {
        let withheld = |body: &str| redact(body, &masker());
        let not_json = Redacted::Withheld {
            bytes: 25,
            reason: Withheld::NotJson,
        };
        assert_eq!(withheld("ip=10.0.0.1 dev=RAW-DEV-5"), not_json);
        assert_eq!(
            not_json.to_string(),
            "<25 bytes withheld: not JSON, so no part of it can be shown safely>"
        );
        // A lone surrogate escape, a truncated body, nesting past the parser's limit.
        let deep = format!("{}\"10.0.0.1\"{}", "[".repeat(200), "]".repeat(200));
        for body in [
            r#"{"ip": "\ud800 10.0.0.1"}"#,
            r#"{"ip": "10.0.0.1""#,
            &deep,
        ] {
            assert!(
                matches!(
                    withheld(body),
                    Redacted::Withheld {
                        reason: Withheld::NotJson,
                        ..
                    }
                ),
                "{body}"
            );
        }
        let huge = format!(
            r#"{{"ip": "10.0.0.1", "pad": "{}"}}"#,
            "a".repeat(MAX_BODY_BYTES)
        );
        assert_eq!(
            withheld(&huge),
            Redacted::Withheld {
                bytes: huge.len(),
                reason: Withheld::TooLarge
            }
        );
    }

    #[test]
    fn long_output_is_cut_and_still_safe() {
        let body = serde_json::to_string(&vec!["100.64.0.1"; 2000]).unwrap();
        let text = shown(&body);
        assert!(text.len() < MAX_SHOWN_BYTES + 40, "{}", text.len());
        assert!(text.ends_with(" more bytes)"), "{text}");
        assert!(!text.contains("100.64"));
    }

    #[test]
    fn escapes_and_control_characters_are_digested_like_any_text() {
        let text = shown(r#"{"ip": "10.0.0.1\u0000", "device_id": "\u00e9\n\"DEV\""}"#);
        assert!(
            !text.contains("10.0.0.1") && !text.contains("DEV"),
            "{text}"
        );
        assert!(text.is_ascii());
    }

    #[test]
    fn json_inside_strings_is_opened_only_so_deep() {
        let mut body = serde_json::json!({"ip": "10.0.0.1"});
        for _ in 0..5 {
            body = serde_json::json!({ "Message": body.to_string() });
        }
        let text = shown(&body.to_string());
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert_redacted(&serde_json::from_str(&text).unwrap());
    }

    /// Text that can never occur in a redacted body by chance: it has a character that
    /// digests, identifiers and JSON punctuation never contain.
    fn arb_secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{1,6}[.@/~%-][A-Za-z0-9.@/~% -]{1,10}"
    }

    /// Any JSON value whose strings and non-identifier keys are secrets, with JSON held in
    /// strings (as in an SNS envelope) among them.
    fn arb_planted() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (any::<i32>(), 1..1000u32)
                .prop_map(|(a, b)| Value::from(f64::from(a) + 1.0 / f64::from(b + 1))),
            arb_secret().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            let key = prop_oneof![arb_secret(), "[A-Za-z_][A-Za-z0-9_]{0,8}"];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(key, inner.clone(), 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                inner.prop_map(|value| Value::String(value.to_string())),
            ]
        })
    }

    /// Every secret planted in `value` (strings and keys with a secret's marker character).
    fn planted(value: &Value, out: &mut Vec<String>) {
        let is_secret = |text: &str| text.contains(['.', '@', '/', '~', '%', '-']);
        match value {
            Value::String(text) if is_secret(text) => out.push(text.clone()),
            Value::Number(number) if number.is_f64() => out.push(number.to_string()),
            Value::Array(items) => items.iter().for_each(|item| planted(item, out)),
            Value::Object(fields) => {
                for (key, value) in fields {
                    if is_secret(key) {
                        out.push(key.clone());
                    }
                    planted(value, out);
                }
            }
            _ => {}
        }
    }

    proptest! {
        /// No planted string, key or fractional number appears in the output, at any depth,
        /// and what is shown is redacted through and through.
        #[test]
        fn no_planted_value_survives(value in arb_planted()) {
            let body = value.to_string();
            let Redacted::Shown(text) = redact(&body, &masker()) else {
                panic!("a small JSON body is shown");
            };
            let mut secrets = Vec::new();
            planted(&value, &mut secrets);
            for secret in secrets {
                prop_assert!(!text.contains(&secret), "{} in {}", secret, text);
            }
            if text.len() <= MAX_SHOWN_BYTES {
                assert_redacted(&serde_json::from_str(&text).unwrap());
            }
        }

        /// Any text: never a panic, and what is shown is redacted.
        #[test]
        fn any_text_is_shown_redacted_or_withheld(body in ".{0,200}") {
            if let Redacted::Shown(text) = redact(&body, &masker())
                && text.len() <= MAX_SHOWN_BYTES
            {
                assert_redacted(&serde_json::from_str(&text).unwrap());
            }
        }
    }
}
