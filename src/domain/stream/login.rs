//! The built-in login stream: `streams/logins.toml`, compiled into the binary. Without a
//! stream file sqs2pg runs this one, with the queue URL and envelope mode of its settings.
//!
//! It is held to [`crate::domain::event::transform`] by a differential property test
//! (below): for every body, the same row (values, digests, key id) or the same reason and
//! detail. The one intended difference is the key of an enveloped body: `key = "auto"`
//! takes the envelope's id, so an event SNS or EventBridge delivers twice is one row.

use crate::domain::envelope::EnvelopeMode;
use crate::domain::stream::{Lookups, Stream, compile};

/// The file, as shipped.
pub const FILE: &str = include_str!("../../../streams/logins.toml");
/// Its name in errors.
pub const FILE_NAME: &str = "streams/logins.toml";

/// The login stream reading `queue_url`, unwrapping envelopes by `envelope`.
pub fn stream(queue_url: &str, envelope: EnvelopeMode) -> Stream {
    let env = |name: &str| (name == "SQS2PG_QUEUE_URL").then(|| queue_url.to_owned());
    let no_schema = |_: &str| Err("the login stream has no schema".to_owned());
    let mut streams = compile(
        FILE,
        FILE_NAME,
        &Lookups {
            env: &env,
            schema: &no_schema,
        },
    )
    .expect("the shipped login stream compiles (tested)");
    let mut stream = streams.remove(0);
    stream.envelope = envelope;
    stream
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::envelope::unwrap;
    use crate::domain::event::tests::{SAMPLE, arb_event, arb_json, envelope as meta, keyring};
    use crate::domain::event::{FIELDS, LoginRow, transform};
    use crate::domain::keyring::Keyring;
    use crate::domain::stream::ddl::{LiveColumn, LiveTable, plan};
    use crate::domain::stream::{MessageMeta, Poison, Row, Value};
    use proptest::prelude::*;
    use serde_json::json;

    const QUEUE: &str = "http://localhost:4566/000000000000/logins";

    /// What today's pipeline makes of a body (`pipeline::receive::transformed`).
    fn typed(body: &str, mode: EnvelopeMode, ring: &Keyring) -> Result<LoginRow, Poison> {
        let inner = unwrap(body, mode).map_err(|rejection| Poison {
            reason: rejection.reason(),
            detail: rejection.to_string(),
        })?;
        transform(&inner.body, meta(), ring).map_err(|rejection| Poison {
            reason: rejection.reason(),
            detail: inner.detail(&rejection),
        })
    }

    fn generic(body: &str, mode: EnvelopeMode, ring: &Keyring) -> Result<Row, Poison> {
        let message = MessageMeta {
            sqs_message_id: meta().message_id,
            original_message_id: None,
            sent_at: meta().sent_at,
        };
        stream(QUEUE, mode).transform(body, &message, ring)
    }

    /// The typed row as the generic transform lays it out, by the file's columns.
    fn as_values(row: &LoginRow) -> Vec<Value> {
        let text = |text: &str| Value::Text(text.to_owned());
        vec![
            text(&row.message_id),
            text(&row.user_id),
            text(&row.device_type),
            text(&row.hashed_ip),
            text(&row.hashed_device_id),
            text(&row.app_version),
            row.locale.as_deref().map_or(Value::Null, text),
            Value::Date(row.create_date),
            Value::Timestamptz(row.sent_at),
            text(row.hmac_key_id.as_str()),
        ]
    }

    /// The two transforms agree on `body`: the same row, or the same reason and detail. An
    /// enveloped body differs only in its key (the envelope's id, when it has one).
    fn agree(body: &str, mode: EnvelopeMode) -> Result<(), TestCaseError> {
        let ring = keyring();
        let (typed, generic) = (typed(body, mode, &ring), generic(body, mode, &ring));
        match (&typed, &generic) {
            (Ok(expected), Ok(row)) => {
                let mut expected_values = as_values(expected);
                let envelope_id = unwrap(body, mode)
                    .ok()
                    .and_then(|inner| inner.id.map(|id| id.into_owned()))
                    .filter(|id| crate::domain::stream::is_usable_key(id));
                let key = envelope_id.unwrap_or_else(|| expected.message_id.clone());
                expected_values[0] = Value::Text(key.clone());
                prop_assert_eq!(&row.values, &expected_values);
                prop_assert_eq!(row.key(), key.as_str());
                prop_assert_eq!(row.sent_at, expected.sent_at);
                prop_assert_eq!(row.event_time, expected.sent_at);
            }
            (Err(expected), Err(poison)) => prop_assert_eq!(expected, poison),
            _ => prop_assert!(
                false,
                "typed {:?}, generic {:?}, body {:?}",
                typed,
                generic,
                body
            ),
        }
        Ok(())
    }

    fn agree_in_every_mode(body: &str) -> Result<(), TestCaseError> {
        use strum::IntoEnumIterator;
        for mode in EnvelopeMode::iter() {
            agree(body, mode)?;
        }
        Ok(())
    }

    fn sns(message: &str, id: serde_json::Value) -> String {
        json!({"Type": "Notification", "MessageId": id, "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins", "Message": message}).to_string()
    }

    fn eventbridge(detail: &str) -> String {
        format!(
            r#"{{"id": "6a7e8feb-0000-4000-8000-000000000001", "detail-type": "login", "source": "app", "detail": {detail}}}"#
        )
    }

    #[test]
    fn the_shipped_file_compiles_and_matches_the_typed_transform_on_the_sample() {
        let row = generic(SAMPLE, EnvelopeMode::Auto, &keyring()).unwrap();
        let expected = transform(SAMPLE, meta(), &keyring()).unwrap();
        assert_eq!(row.values, as_values(&expected));
        assert_eq!(row.key(), "m-1");
    }

    /// The one intended difference, explicitly: an enveloped event is keyed by its
    /// envelope's id, so two deliveries of one publication are one row; without a usable
    /// id the SQS id keys it, as today.
    #[test]
    fn an_enveloped_login_is_keyed_by_its_envelope_id() {
        let ring = keyring();
        let typed_row = transform(SAMPLE, meta(), &ring).unwrap();
        for (body, key) in [
            (
                sns(SAMPLE, json!("0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a")),
                "0b1b3a5e-8d65-5a36-9f25-2f8a6c1e1d4a",
            ),
            (eventbridge(SAMPLE), "6a7e8feb-0000-4000-8000-000000000001"),
            (sns(SAMPLE, json!(42)), "m-1"),
            (sns(SAMPLE, json!("has a space")), "m-1"),
            (
                format!(r#"{{"detail-type": "login", "source": "app", "detail": {SAMPLE}}}"#),
                "m-1",
            ),
        ] {
            let row = generic(&body, EnvelopeMode::Auto, &ring).unwrap();
            assert_eq!(row.key(), key, "{body}");
            assert_eq!(row.values[0], Value::Text(key.to_owned()));
            assert_eq!(row.values[1..], as_values(&typed_row)[1..]);
        }
    }

    #[test]
    fn its_table_is_the_one_the_migrations_make() {
        let stream = stream(QUEUE, EnvelopeMode::Auto);
        // migrations/V1..V4, as information_schema and pg_index describe them.
        let column = |name: &str, data_type: &str, nullable: bool, has_default: bool| LiveColumn {
            name: name.to_owned(),
            data_type: data_type.to_owned(),
            nullable,
            has_default,
        };
        let live = LiveTable {
            columns: vec![
                column("message_id", "text", false, false),
                column("user_id", "character varying(128)", false, false),
                column("device_type", "character varying(32)", false, false),
                column("hashed_ip", "character(64)", false, false),
                column("hashed_device_id", "character(64)", false, false),
                column("locale", "character varying(32)", true, false),
                column("app_version", "character varying(32)", false, false),
                column("create_date", "date", false, false),
                column("sent_at", "timestamp with time zone", false, false),
                column("ingested_at", "timestamp with time zone", false, true),
                column("hmac_key_id", "character varying(32)", false, true),
            ],
            primary_key: vec!["message_id".to_owned()],
            unique_keys: vec![],
            indexes: vec![
                vec!["hashed_ip".to_owned()],
                vec!["hashed_device_id".to_owned()],
                vec!["ingested_at".to_owned()],
            ],
        };
        let plan = plan(&stream, &live);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(
            stream.ddl(),
            [
                "CREATE TABLE IF NOT EXISTS user_logins (\n    message_id text NOT NULL,\n    user_id varchar(128) NOT NULL,\n    device_type varchar(32) NOT NULL,\n    hashed_ip char(64) NOT NULL,\n    hashed_device_id char(64) NOT NULL,\n    app_version varchar(32) NOT NULL,\n    locale varchar(32),\n    create_date date NOT NULL,\n    sent_at timestamptz NOT NULL,\n    hmac_key_id varchar(32) NOT NULL,\n    ingested_at timestamptz NOT NULL DEFAULT now(),\n    PRIMARY KEY (message_id)\n)",
                "CREATE INDEX IF NOT EXISTS user_logins_hashed_ip_idx ON user_logins (hashed_ip)",
                "CREATE INDEX IF NOT EXISTS user_logins_hashed_device_id_idx ON user_logins (hashed_device_id)",
                "CREATE INDEX IF NOT EXISTS user_logins_ingested_at_idx ON user_logins (ingested_at)",
            ]
        );
    }

    #[test]
    fn every_typed_rejection_reads_the_same() {
        let with = |field: &str, value: serde_json::Value| {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(SAMPLE).unwrap();
            object.insert(field.to_owned(), value);
            serde_json::Value::Object(object).to_string()
        };
        let mut bodies = vec![
            "{not json".to_owned(),
            "[1, 2]".to_owned(),
            "\"text\"".to_owned(),
            "null".to_owned(),
            "".to_owned(),
            "{} x".to_owned(),
            r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#.to_owned(),
            with("ip", "999.1.1.1".into()),
            with("ip", "1".repeat(100).into()),
            with("ip", "".into()),
            with("ip", "1.2.3.4\0".into()),
            with("extra", json!("\u{0}")),
            SAMPLE.replacen('{', r#"{"x": "\ud800", "#, 1),
            SAMPLE.replacen('{', r#"{"x": 1e999, "#, 1),
            SAMPLE.replacen('{', r#"{"extra": 1, "extra": [2], "#, 1),
            with("locale", "x".repeat(33).into()),
            with("locale", "é".repeat(32).into()),
            with("app_version", json!(null)),
            with("device_id", json!({"a": 1})),
        ];
        for field in FIELDS {
            bodies.push(SAMPLE.replacen('{', &format!(r#"{{"{field}": "1.2.3.4", "#), 1));
            for value in [
                json!(null),
                json!(1),
                json!(true),
                json!([]),
                json!({}),
                json!(""),
                json!("a\u{0}b"),
                json!("x".repeat(300)),
            ] {
                bodies.push(with(field, value));
            }
        }
        // Two problems at once: the first in the typed transform's order is reported.
        bodies.push(with("locale", json!(1)).replace("\"2.3.0\"", "5"));
        for body in &bodies {
            agree_in_every_mode(body).unwrap();
            for wrapped in [sns(body, json!("id-1")), eventbridge(body)] {
                agree_in_every_mode(&wrapped).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn the_login_file_agrees_with_the_typed_transform_on_any_text(body in ".{0,300}") {
            agree_in_every_mode(&body)?;
        }

        #[test]
        fn the_login_file_agrees_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            agree_in_every_mode(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn the_login_file_agrees_on_any_json(value in arb_json()) {
            let body = value.to_string();
            agree_in_every_mode(&body)?;
            agree_in_every_mode(&sns(&body, json!("id-1")))?;
            agree_in_every_mode(&eventbridge(&body))?;
        }

        #[test]
        fn the_login_file_agrees_on_valid_events_alone_and_enveloped(event in arb_event()) {
            agree_in_every_mode(&event)?;
            agree_in_every_mode(&sns(&event, json!("0b1b3a5e")))?;
            agree_in_every_mode(&eventbridge(&event))?;
        }

        /// Near-valid events: every field at an arbitrary value (wrong types, empty, NUL,
        /// too long, nested, null) or given twice.
        #[test]
        fn the_login_file_agrees_on_mutated_events(
            event in arb_event(),
            field in proptest::sample::select(FIELDS.to_vec()),
            value in prop_oneof![arb_json(), ".{0,300}".prop_map(serde_json::Value::from)],
            twice in any::<bool>(),
        ) {
            let body = if twice {
                event.replacen('{', &format!("{{{}: {value}, ", json!(field)), 1)
            } else {
                let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&event).unwrap();
                object.insert(field.to_owned(), value);
                serde_json::Value::Object(object).to_string()
            };
            agree_in_every_mode(&body)?;
            agree_in_every_mode(&sns(&body, json!("id-2")))?;
        }
    }
}
