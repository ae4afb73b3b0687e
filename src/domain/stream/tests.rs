//! The compiler's errors, each type, rule, mask, key and event-time choice of the
//! transform, the table plan, and the properties: no panic, no value in an error.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::ddl::{LiveColumn, LiveTable, plan};
use super::*;
use crate::DeadLetterReason;
use crate::domain::event::Masker;
use crate::domain::event::tests::keyring;

pub(crate) const ORDERS: &str = include_str!("../../../streams/orders.toml");
pub(crate) const ORDERS_SCHEMA: &str = include_str!("../../../streams/orders.schema.json");

pub(crate) const ORDER: &str = r#"{"event_id": "evt-1", "order_id": "5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f", "occurred_at": "2026-12-01T10:00:00Z", "customer": {"id": "c-42", "email": "ada@example.com", "tier": "gold"}, "shipping": {"ip": "199.172.111.135", "country": "DE", "postcode": "10115"}, "total": 123.45, "currency": "EUR", "items_count": 3, "discount_pct": 12.5, "is_gift": false, "delivery_date": "2026-12-10", "channel": "web", "payment": {"method": "card", "installments": 3}, "weight_grams": 1200, "attributes": {"gift_message": "Happy birthday", "referrer": {"user": "bob", "campaign": "x"}}, "extra": 1}"#;

fn env(name: &str) -> Option<String> {
    (name != "UNSET").then(|| format!("http://localhost:4566/000000000000/{name}"))
}

fn schemas(name: &str) -> Result<String, String> {
    match name {
        "orders.schema.json" => Ok(ORDERS_SCHEMA.to_owned()),
        "not-json.json" => Ok("{".to_owned()),
        "invalid.json" => Ok(r#"{"type": 5}"#.to_owned()),
        "closed.json" => Ok(r#"{"type": "object", "additionalProperties": false, "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}, "n": {"type": "integer"}, "v": {}}}"#.to_owned()),
        _ => Err("no such file".to_owned()),
    }
}

pub(crate) fn compile_text(text: &str) -> Result<Vec<Stream>, StreamFileError> {
    compile(
        text,
        "streams.toml",
        &Lookups {
            env: &env,
            schema: &schemas,
        },
    )
}

pub(crate) fn orders() -> Stream {
    compile_text(ORDERS).unwrap().remove(0)
}

pub(crate) fn meta() -> MessageMeta<'static> {
    MessageMeta {
        sqs_message_id: "sqs-1",
        original_message_id: None,
        sent_at: Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 5).unwrap(),
    }
}

fn masker() -> Masker {
    crate::domain::event::tests::masker()
}

fn value_of(stream: &Stream, row: &Row, column: &str) -> Value {
    let index = stream
        .columns
        .iter()
        .position(|c| c.name == column)
        .unwrap_or_else(|| panic!("{column}"));
    row.values[index].clone()
}

fn with(body: &str, pointer: &str, value: serde_json::Value) -> String {
    let mut event: serde_json::Value = serde_json::from_str(body).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut event
    } else {
        event.pointer_mut(parent).unwrap()
    };
    if value.is_null() && key.starts_with('-') {
        target.as_object_mut().unwrap().remove(&key[1..]);
    } else {
        target[key] = value;
    }
    event.to_string()
}

fn without(body: &str, pointer: &str) -> String {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    with(body, &format!("{parent}/-{key}"), serde_json::Value::Null)
}

#[test]
fn the_orders_example_makes_its_row() {
    let stream = orders();
    assert_eq!(stream.columns.len(), 20);
    assert_eq!(
        stream.queue_url,
        "http://localhost:4566/000000000000/ORDERS_QUEUE_URL"
    );
    let row = stream.transform(ORDER, &meta(), &keyring()).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    assert_eq!(row.key(), "evt-1");
    assert_eq!(row.event_time, at);
    assert_eq!(row.sent_at, meta().sent_at);
    let text = |t: &str| Value::Text(t.to_owned());
    let expected = [
        ("event_id", text("evt-1")),
        (
            "order_id",
            Value::Uuid("5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f".parse().unwrap()),
        ),
        ("occurred_at", Value::Timestamptz(at)),
        ("order_date", Value::Date(at.date_naive())),
        ("customer_id", text("c-42")),
        ("hashed_email", text(&masker().digest("ada@example.com"))),
        ("customer_tier", text("gold")),
        (
            "client_network",
            Value::Inet {
                addr: "199.172.111.0".parse().unwrap(),
                prefix: 24,
            },
        ),
        ("country", text("DE")),
        ("total", Value::Numeric("123.45".to_owned())),
        ("currency", text("EUR")),
        ("items_count", Value::Int16(3)),
        ("discount_pct", Value::Float64(12.5)),
        ("is_gift", Value::Bool(false)),
        (
            "delivery_date",
            Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 12, 10).unwrap()),
        ),
        ("channel", text("web")),
        ("payment_method", text("card")),
        ("installments", Value::Int32(3)),
        (
            "attributes",
            Value::Jsonb(
                json!({"referrer": {"user": masker().digest("bob"), "campaign": "x"}}).to_string(),
            ),
        ),
        ("hmac_key_id", text("default")),
    ];
    for (column, value) in expected {
        assert_eq!(value_of(&stream, &row, column), value, "{column}");
    }
}

#[test]
fn the_schema_gives_types_and_nullability_where_it_says_enough() {
    let stream = orders();
    let column = |name: &str| {
        stream
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(column("order_id").ty, ColumnType::Uuid);
    assert_eq!(
        column("customer_id").ty,
        ColumnType::Text {
            max_chars: Some(64)
        }
    );
    assert_eq!(column("items_count").ty, ColumnType::SmallInt);
    assert_eq!(column("discount_pct").ty, ColumnType::DoublePrecision);
    assert_eq!(column("is_gift").ty, ColumnType::Boolean);
    assert_eq!(column("delivery_date").ty, ColumnType::Date);
    assert_eq!(
        column("channel").ty,
        ColumnType::Text {
            max_chars: Some(16)
        }
    );
    assert_eq!(column("attributes").ty, ColumnType::Jsonb);
    assert_eq!(column("hashed_email").stored, ColumnType::Digest);
    for (name, nullable) in [
        ("order_id", false),
        ("customer_tier", true),
        ("discount_pct", true),
        ("delivery_date", true),
        ("installments", true),
        ("attributes", true),
        ("payment_method", false),
    ] {
        assert_eq!(column(name).nullable, nullable, "{name}");
    }
}

#[test]
fn the_orders_table_and_its_insert() {
    let stream = orders();
    let ddl = stream.ddl();
    assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS orders (\n    event_id text NOT NULL,\n    order_id uuid NOT NULL,"), "{}", ddl[0]);
    assert!(ddl[0].contains("    total numeric(12,2) NOT NULL,\n"));
    assert!(ddl[0].contains("    hashed_email char(64) NOT NULL,\n"));
    assert!(ddl[0].contains("    attributes jsonb,\n"));
    assert!(ddl[0].ends_with("    PRIMARY KEY (event_id)\n)"));
    assert_eq!(
        ddl[1..],
        [
            "CREATE INDEX IF NOT EXISTS orders_order_date_idx ON orders (order_date)",
            "CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON orders (customer_id)",
            "CREATE INDEX IF NOT EXISTS orders_hashed_email_idx ON orders (hashed_email)",
            "CREATE INDEX IF NOT EXISTS orders_ingested_at_idx ON orders (ingested_at)",
        ]
    );
    let insert = stream.insert_statement();
    assert!(
        insert.starts_with("INSERT INTO orders (event_id, order_id, occurred_at, "),
        "{insert}"
    );
    assert!(insert.contains("u.total::numeric"));
    assert!(insert.contains("u.client_network::inet"));
    assert!(insert.contains("$2::uuid[]"));
    assert!(insert.ends_with("ON CONFLICT (event_id) DO NOTHING"));
}

#[test]
fn reserved_words_are_quoted() {
    let stream = compile_text(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"public.order\"\n[[stream.column]]\nname = \"user\"\nfrom = { meta = \"key\" }\n",
    )
    .unwrap()
    .remove(0);
    assert!(
        stream.ddl()[0].starts_with(
            "CREATE TABLE IF NOT EXISTS public.\"order\" (\n    \"user\" text NOT NULL"
        )
    );
}

/// Every compile error: the one line a user sees, file, line and column first.
#[test]
fn each_mistake_in_a_stream_file_is_named_with_its_place() {
    const HEAD: &str = "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\n";
    const KEY: &str = "[[stream.column]]\nname = \"k\"\nfrom = { meta = \"key\" }\n";
    let stream = |extra: &str| format!("{HEAD}{extra}{KEY}");
    let column = |body: &str| format!("{HEAD}{KEY}[[stream.column]]\nname = \"c\"\n{body}");
    let cases: Vec<(String, &str)> = vec![
        (
            "[[stream]\n".to_owned(),
            "streams.toml:1:10: unclosed array table, expected `]`",
        ),
        (
            format!("{HEAD}tabel = \"x\"\n{KEY}"),
            "streams.toml:5:1: unknown field `tabel`, expected one of",
        ),
        (
            "".to_owned(),
            "streams.toml:1:1: the file declares no stream",
        ),
        (
            HEAD.replace("name = \"s\"", "name = \"Logins!\"") + KEY,
            "streams.toml:2:8: stream name `Logins!` is not a valid name",
        ),
        (
            format!("{HEAD}{KEY}{HEAD}{KEY}"),
            "streams.toml:9:8: a stream named `s` is declared twice",
        ),
        (
            format!("{HEAD}{KEY}{}{KEY}", HEAD.replace("\"s\"", "\"s2\"")),
            "streams.toml:11:9: table `t` is already the table of stream `s`",
        ),
        (
            HEAD.replace("\"q\"", "\"${UNSET}/x\"") + KEY,
            "streams.toml:3:13: environment variable `UNSET` is not set",
        ),
        (
            HEAD.replace("\"q\"", "\"${X\"") + KEY,
            "streams.toml:3:13: `${` without a closing `}`",
        ),
        (
            stream("envelope = \"SNS\"\n"),
            "streams.toml:5:12: unknown envelope `SNS`",
        ),
        (
            HEAD.replace("\"t\"", "\"a.b.c\"") + KEY,
            "streams.toml:4:9: table `a.b.c` is not a valid name",
        ),
        (
            HEAD.to_owned(),
            "streams.toml:2:8: stream `s` has no column",
        ),
        (
            column("from = \"x\"\ntype = \"strng\"\n"),
            "streams.toml:11:8: unknown type `strng`; expected one of: text",
        ),
        (
            column("from = \"x\"\n"),
            "streams.toml:9:8: column `c` needs a `type`",
        ),
        (
            column("from = \"x\"\ntype = \"integer\"\nmask = \"hmac\"\n"),
            "streams.toml:12:8: mask `hmac` does not apply to a column of type integer",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\nmask = { ip_prefix = { v4 = 24 } }\n"),
            "streams.toml:12:8: mask `ip_prefix` does not apply to a column of type text",
        ),
        (
            column("from = \"x\"\ntype = \"inet\"\nmask = { ip_prefix = { v4 = 40 } }\n"),
            "streams.toml:12:8: ip_prefix v4 must be an integer from 0 to 32",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\nmask = \"drop\"\n"),
            "streams.toml:12:8: `drop` masks a field inside a jsonb column",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\nmask = \"sha1\"\n"),
            "streams.toml:12:8: unknown mask",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\nmask = { drop = [\"a\"] }\n"),
            "streams.toml:12:8: mask `drop/hmac paths` does not apply to a column of type text",
        ),
        (
            column("from = \"a..b\"\ntype = \"text\"\n"),
            "streams.toml:10:8: path `a..b` is not valid",
        ),
        (
            column("from = { meta = \"receipt\" }\n"),
            "streams.toml:10:8: unknown meta source `\"receipt\"`; expected one of: key, sqs_message_id",
        ),
        (
            column("from = { path = \"x\" }\n"),
            "streams.toml:10:8: from: expected a path",
        ),
        (
            format!("{HEAD}{KEY}{KEY}"),
            "streams.toml:9:8: a column named `k` is declared twice",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\n")
                .replace("name = \"c\"", "name = \"ingested_at\""),
            "streams.toml:9:8: column name `ingested_at` is reserved",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\n").replace("name = \"c\"", "name = \"Bad\""),
            "streams.toml:9:8: column name `Bad` is not a valid name",
        ),
        (
            format!("{HEAD}[[stream.column]]\nname = \"c\"\nfrom = \"x\"\ntype = \"text\"\n"),
            "streams.toml:2:8: stream `s` has no column holding the idempotency key",
        ),
        (
            format!("{HEAD}{KEY}{}", KEY.replace("\"k\"", "\"k2\"")),
            "streams.toml:10:8: a second column holds the idempotency key (the first is `k`)",
        ),
        (
            format!("{HEAD}{KEY}required = false\n"),
            "streams.toml:7:8: the idempotency key column cannot be nullable",
        ),
        (
            column("from = \"x\"\ntype = \"text\"\nmask = \"hmac\"\n"),
            "streams.toml:2:8: stream `s` masks with HMAC but records no key id",
        ),
        (
            stream("key = \"message_id\"\n"),
            "streams.toml:5:7: unknown key `message_id`",
        ),
        (
            stream("envelope = \"none\"\nkey = \"envelope_id\"\n"),
            "streams.toml:6:7: key = \"envelope_id\" can never be found",
        ),
        (
            column("from = { meta = \"envelope_id\" }\n"),
            "streams.toml:10:8: meta source `envelope_id` is absent when a body comes without an envelope (envelope = \"auto\")",
        ),
        (
            column("from = \"x\"\ntype = \"integer\"\nmax_length = 3\n"),
            "streams.toml:12:14: `max_length` does not apply to a column of type integer",
        ),
        (
            column("from = \"x\"\ntype = \"integer\"\nminimum = 5\nmaximum = 1\n"),
            "streams.toml:12:11: minimum is more than maximum",
        ),
        (
            column("from = \"x\"\ntype = \"integer\"\none_of = [\"a\"]\n"),
            "streams.toml:12:10: one_of: expected a non-empty array of integers",
        ),
        (
            column("from = \"x\"\ntype = \"timestamptz\"\nepoch = \"ns\"\n"),
            "streams.toml:12:9: unknown epoch unit `ns`",
        ),
        (
            column("from = \"x\"\ntype = \"varchar(8)\"\nmax_length = 9\n"),
            "streams.toml:12:14: max_length = 9 disagrees with the type's limit of 8",
        ),
        (
            column("from = { meta = \"sent_timestamp\" }\ntype = \"date\"\n"),
            "streams.toml:11:8: meta source `sent_timestamp` is a timestamptz; the column cannot be `date`",
        ),
        (
            column("from = { meta = \"hmac_key_id\" }\ntype = \"varchar(8)\"\n"),
            "streams.toml:11:8: meta source `hmac_key_id` is text of up to 32 characters; the column cannot be `varchar(8)`",
        ),
        (
            column("from = { meta = \"event_date\" }\nmax_length = 3\n"),
            "streams.toml:11:14: `max_length` does not apply to a column read from meta source `event_date`",
        ),
        (
            column("from = \"a\"\ntype = \"jsonb\"\n")
                + "[[stream.column]]\nname = \"d\"\nfrom = \"a.b\"\ntype = \"text\"\n",
            "streams.toml:14:8: path `a.b` is inside `a`, which a column reads whole",
        ),
        (
            stream("schema = \"missing.json\"\n"),
            "streams.toml:5:10: schema `missing.json` cannot be read: no such file",
        ),
        (
            stream("schema = \"not-json.json\"\n"),
            "streams.toml:5:10: schema `not-json.json` is not JSON: EOF while parsing",
        ),
        (
            stream("schema = \"invalid.json\"\n"),
            "streams.toml:5:10: schema `invalid.json` is not a valid JSON Schema",
        ),
        (
            stream("schema = \"closed.json\"\n").replace(
                KEY,
                &format!("{KEY}[[stream.column]]\nname = \"c\"\nfrom = \"x\"\ntype = \"text\"\n"),
            ),
            "streams.toml:11:8: path `x` can never match: the schema has no property `x` there and allows no other",
        ),
        (
            stream("schema = \"closed.json\"\nkey = { field = \"n.id\" }\n"),
            "streams.toml:6:7: path `n.id` can never match: the schema says `n` is not an object",
        ),
        (
            stream("schema = \"closed.json\"\n").replace(
                KEY,
                &format!("{KEY}[[stream.column]]\nname = \"c\"\nfrom = \"v\"\n"),
            ),
            "streams.toml:10:8: column `c` has no type of its own: the schema says too little about `v` (it gives no `type`)",
        ),
        (
            stream("event_time = \"now\"\n"),
            "streams.toml:5:14: event_time: expected \"sent_timestamp\" or { field = \"path\" }",
        ),
        (
            HEAD.replace("\"t\"", &format!("\"{}\"", "t".repeat(60)))
                + &KEY.replace("\"k\"", "\"kk\""),
            "streams.toml:4:9: index name `tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt_ingested_at_idx` would be longer than PostgreSQL's 63 bytes",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in cases {
        let shown = match compile_text(&text) {
            Ok(_) => format!("compiled:\n{text}"),
            Err(error) => error.to_string(),
        };
        if !shown.starts_with(expected) || shown.contains('\n') {
            wrong.push(format!("got:      {shown}\nexpected: {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A stream of one column of `ty` (with `rules` lines), read from `v`.
fn single(ty: &str, rules: &str) -> Stream {
    compile_text(&format!(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\n[[stream.column]]\nname = \"k\"\nfrom = {{ meta = \"key\" }}\n[[stream.column]]\nname = \"h\"\nfrom = {{ meta = \"hmac_key_id\" }}\n[[stream.column]]\nname = \"v\"\nfrom = \"v\"\ntype = \"{ty}\"\n{rules}\n"
    ))
    .unwrap_or_else(|error| panic!("{error}"))
    .remove(0)
}

/// The value a single-column stream makes of `{"v": value}`, or its dead-letter detail.
fn read(stream: &Stream, value: serde_json::Value) -> Result<Value, String> {
    let body = json!({ "v": value }).to_string();
    stream
        .transform(&body, &meta(), &keyring())
        .map(|row| row.values[2].clone())
        .map_err(|poison| poison.detail)
}

#[test]
fn each_type_reads_its_values_and_refuses_others_by_name() {
    let ok = |ty: &str, rules: &str, value: serde_json::Value, expected: Value| {
        assert_eq!(
            read(&single(ty, rules), value.clone()),
            Ok(expected),
            "{ty} {value}"
        );
    };
    let refused = |ty: &str, rules: &str, value: serde_json::Value, detail: &str| {
        assert_eq!(
            read(&single(ty, rules), value.clone()),
            Err(detail.to_owned()),
            "{ty} {value}"
        );
    };
    ok("text", "", json!("é"), Value::Text("é".to_owned()));
    ok(
        "text",
        "min_length = 0",
        json!(""),
        Value::Text(String::new()),
    );
    refused("text", "", json!(""), "field `v` is empty");
    refused(
        "text",
        "",
        json!(5),
        "field `v` is a number, expected a string",
    );
    refused(
        "text",
        "max_length = 3",
        json!("abcd"),
        "field `v` is longer than 3 characters",
    );
    refused(
        "text",
        "min_length = 3",
        json!("ab"),
        "field `v` is shorter than 3 characters",
    );
    refused(
        "text",
        "one_of = [\"a\", \"b\"]",
        json!("c"),
        "field `v` is not one of the allowed values",
    );
    ok(
        "text",
        "one_of = [\"a\", \"b\"]",
        json!("b"),
        Value::Text("b".to_owned()),
    );
    refused(
        "text",
        "",
        json!("a\u{0}"),
        "field `v` contains a NUL character",
    );
    ok("smallint", "", json!(-32768), Value::Int16(-32768));
    refused(
        "smallint",
        "",
        json!(32768),
        "field `v` is above the maximum 32767",
    );
    refused(
        "integer",
        "",
        json!(-2147483649i64),
        "field `v` is below the minimum -2147483648",
    );
    refused(
        "bigint",
        "",
        json!(u64::MAX),
        "field `v` is above the maximum 9223372036854775807",
    );
    refused("integer", "", json!(1.5), "field `v` is not an integer");
    refused(
        "integer",
        "",
        json!("1"),
        "field `v` is a string, expected an integer",
    );
    refused(
        "integer",
        "minimum = 10",
        json!(9),
        "field `v` is below the minimum 10",
    );
    refused(
        "integer",
        "maximum = 10",
        json!(11),
        "field `v` is above the maximum 10",
    );
    refused(
        "integer",
        "one_of = [1, 2]",
        json!(3),
        "field `v` is not one of the allowed values",
    );
    ok("bigint", "", json!(i64::MAX), Value::Int64(i64::MAX));
    ok("double precision", "", json!(1e300), Value::Float64(1e300));
    refused(
        "double precision",
        "maximum = 0.5",
        json!(0.75),
        "field `v` is above the maximum 0.5",
    );
    refused(
        "double precision",
        "",
        json!(true),
        "field `v` is a boolean, expected a number",
    );
    ok("numeric", "", json!(12), Value::Numeric("12".to_owned()));
    ok(
        "numeric(12,2)",
        "",
        json!("-0.125"),
        Value::Numeric("-0.125".to_owned()),
    );
    refused(
        "numeric(4,2)",
        "",
        json!(123.4),
        "field `v` is above the maximum the range of numeric(4,2)",
    );
    refused(
        "numeric",
        "",
        json!("12,5"),
        "field `v` is not a decimal number",
    );
    refused(
        "numeric",
        "",
        json!([1]),
        "field `v` is an array, expected a number or a string holding one",
    );
    refused(
        "numeric",
        "minimum = 0",
        json!(-1),
        "field `v` is below the minimum 0",
    );
    ok("boolean", "", json!(true), Value::Bool(true));
    refused(
        "boolean",
        "",
        json!("true"),
        "field `v` is a string, expected a boolean",
    );
    ok(
        "date",
        "",
        json!("2026-02-28"),
        Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()),
    );
    refused(
        "date",
        "",
        json!("2026-02-30"),
        "field `v` is not a date (YYYY-MM-DD)",
    );
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    ok(
        "timestamptz",
        "",
        json!("2026-12-01T11:00:00+01:00"),
        Value::Timestamptz(at),
    );
    refused(
        "timestamptz",
        "",
        json!(1_796_119_200),
        "field `v` is a number, expected an RFC 3339 timestamp string",
    );
    ok(
        "timestamptz",
        "epoch = \"seconds\"",
        json!(at.timestamp()),
        Value::Timestamptz(at),
    );
    ok(
        "timestamptz",
        "epoch = \"milliseconds\"",
        json!(at.timestamp_millis()),
        Value::Timestamptz(at),
    );
    ok(
        "timestamptz",
        "epoch = \"seconds\"",
        json!(at.timestamp() as f64 + 0.25),
        Value::Timestamptz(at + chrono::Duration::milliseconds(250)),
    );
    refused(
        "timestamptz",
        "epoch = \"seconds\"",
        json!(1e15),
        "field `v` is not an RFC 3339 timestamp or an epoch number in range",
    );
    refused(
        "timestamptz",
        "",
        json!("yesterday"),
        "field `v` is not an RFC 3339 timestamp",
    );
    ok(
        "uuid",
        "",
        json!("5B6F2B1E3C1A4E0A9D4F0A1B2C3D4E5F"),
        Value::Uuid("5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f".parse().unwrap()),
    );
    refused(
        "uuid",
        "",
        json!("urn:uuid:5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f"),
        "field `v` is not a UUID",
    );
    ok(
        "inet",
        "",
        json!("2001:db8::1"),
        Value::Inet {
            addr: "2001:db8::1".parse().unwrap(),
            prefix: 128,
        },
    );
    refused(
        "inet",
        "",
        json!("10.0.0.0/8"),
        "field `v` is not an IPv4 or IPv6 address",
    );
    ok(
        "jsonb",
        "",
        json!({"a": [1, "x"]}),
        Value::Jsonb(r#"{"a":[1,"x"]}"#.to_owned()),
    );
    ok("jsonb", "", json!(5), Value::Jsonb("5".to_owned()));
    refused(
        "jsonb",
        "",
        json!({"a": "\u{0}"}),
        "field `v` contains a NUL character",
    );
    refused("text", "", json!(null), "field `v` is missing or null");
    ok("text", "required = false", json!(null), Value::Null);
}

#[test]
fn masks_store_digests_and_prefixes_never_the_value() {
    let digest = |text: &str| Value::Text(masker().digest(text));
    assert_eq!(
        read(&single("text", "mask = \"hmac\""), json!("secret")),
        Ok(digest("secret"))
    );
    // The text as sent: two spellings of one address are two digests, as today.
    assert_eq!(
        read(&single("inet", "mask = \"hmac\""), json!("2001:DB8::1")),
        Ok(digest("2001:DB8::1"))
    );
    assert_eq!(
        read(
            &single("uuid", "mask = \"hmac\""),
            json!("5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f")
        ),
        Ok(digest("5b6f2b1e-3c1a-4e0a-9d4f-0a1b2c3d4e5f"))
    );
    // Validated before it is masked.
    assert_eq!(
        read(&single("inet", "mask = \"hmac\""), json!("not an ip")),
        Err("field `v` is not an IPv4 or IPv6 address".to_owned())
    );
    assert_eq!(
        read(
            &single("inet", "mask = { ip_prefix = { v6 = 32 } }"),
            json!("2001:db8:1:2::1")
        ),
        Ok(Value::Inet {
            addr: "2001:db8::".parse().unwrap(),
            prefix: 32
        })
    );
    assert_eq!(
        single("text", "mask = \"hmac\"").columns[2].stored,
        ColumnType::Digest
    );
}

#[test]
fn paths_reach_into_objects_and_name_what_is_wrong_on_the_way() {
    let stream = compile_text(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\n[[stream.column]]\nname = \"k\"\nfrom = { meta = \"key\" }\n[[stream.column]]\nname = \"v\"\nfrom = [\"a.b\", \"c\"]\ntype = \"text\"\n",
    )
    .unwrap()
    .remove(0);
    let detail = |body: &str| {
        stream
            .transform(body, &meta(), &keyring())
            .map(|row| row.values[1].clone())
            .map_err(|p| (p.reason, p.detail))
    };
    assert_eq!(
        detail(r#"{"a.b": {"c": "x"}}"#),
        Ok(Value::Text("x".to_owned()))
    );
    assert_eq!(
        detail(r#"{"a.b": 5}"#),
        Err((
            DeadLetterReason::WrongType,
            "field `\"a.b\"` is a number, expected an object".to_owned()
        ))
    );
    assert_eq!(
        detail(r#"{"a.b": null}"#),
        Err((
            DeadLetterReason::MissingField,
            "field `\"a.b\".c` is missing or null".to_owned()
        ))
    );
    assert_eq!(
        detail(r#"{"a.b": {"c": "x"}, "a.b": {}}"#),
        Err((
            DeadLetterReason::InvalidJson,
            "field `\"a.b\"` appears more than once".to_owned()
        ))
    );
    assert_eq!(
        detail(r#"{"a.b": {"c": "x", "c": "y"}}"#),
        Err((
            DeadLetterReason::InvalidJson,
            "field `\"a.b\".c` appears more than once".to_owned()
        ))
    );
}

fn keyed(key: &str, envelope: &str) -> Stream {
    compile_text(&format!(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\nenvelope = \"{envelope}\"\nkey = {key}\n[[stream.column]]\nname = \"k\"\nfrom = {{ meta = \"key\" }}\n[[stream.column]]\nname = \"e\"\nfrom = {{ meta = \"envelope_id\" }}\nrequired = false\n[[stream.column]]\nname = \"m\"\nfrom = {{ meta = \"sqs_message_id\" }}\n"
    ))
    .unwrap_or_else(|error| panic!("{error}"))
    .remove(0)
}

fn sns(message: &str, id: serde_json::Value) -> String {
    json!({"Type": "Notification", "MessageId": id, "TopicArn": "arn:aws:sns:us-east-1:000000000000:t", "Message": message}).to_string()
}

#[test]
fn each_key_choice_and_a_redrive_keeps_its_key() {
    let event = r#"{"event_id": "evt-7", "n": 42}"#;
    let redriven = MessageMeta {
        sqs_message_id: "sqs-2",
        original_message_id: Some("sqs-1"),
        ..meta()
    };
    let key = |stream: &Stream, body: &str, meta: &MessageMeta<'_>| {
        stream
            .transform(body, meta, &keyring())
            .map(|row| (row.key().to_owned(), row.values))
            .map_err(|p| (p.reason, p.detail))
    };
    let text = |t: &str| Value::Text(t.to_owned());
    let auto = keyed("\"auto\"", "auto");
    assert_eq!(
        key(&auto, event, &meta()),
        Ok((
            "sqs-1".to_owned(),
            vec![text("sqs-1"), Value::Null, text("sqs-1")]
        ))
    );
    assert_eq!(
        key(&auto, &sns(event, json!("env-1")), &meta()).unwrap().0,
        "env-1"
    );
    // A redrive carries the body unchanged, so an envelope key is the same again...
    assert_eq!(
        key(&auto, &sns(event, json!("env-1")), &redriven)
            .unwrap()
            .0,
        "env-1"
    );
    // ...and the SQS id is the original's.
    assert_eq!(
        key(&auto, event, &redriven),
        Ok((
            "sqs-1".to_owned(),
            vec![text("sqs-1"), Value::Null, text("sqs-1")]
        ))
    );
    let sqs = keyed("\"sqs_message_id\"", "auto");
    assert_eq!(
        key(&sqs, &sns(event, json!("env-1")), &meta()).unwrap().0,
        "sqs-1"
    );
    let envelope = keyed("\"envelope_id\"", "sns");
    assert_eq!(
        key(&envelope, &sns(event, json!("env-1")), &meta())
            .unwrap()
            .0,
        "env-1"
    );
    assert_eq!(
        key(&envelope, &sns(event, json!("")), &meta()),
        Err((DeadLetterReason::InvalidEnvelope, "SNS notification field `MessageId` is missing or not a usable idempotency key (1 to 128 printable ASCII characters)".to_owned()))
    );
    let auto_envelope = keyed("\"envelope_id\"", "auto");
    assert_eq!(
        key(&auto_envelope, event, &meta()),
        Err((DeadLetterReason::InvalidEnvelope, "body is not an SNS notification or EventBridge event, so it has no envelope id to key on".to_owned()))
    );
    let field = keyed("{ field = \"event_id\" }", "auto");
    assert_eq!(key(&field, event, &redriven).unwrap().0, "evt-7");
    assert_eq!(
        key(&field, &sns(event, json!("env-1")), &meta()).unwrap().0,
        "evt-7"
    );
    let numeric = keyed("{ field = \"n\" }", "auto");
    assert_eq!(key(&numeric, event, &meta()).unwrap().0, "42");
    // The key's field also read whole by a jsonb column: the same key.
    let shared = compile_text(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\nkey = { field = \"event_id\" }\n[[stream.column]]\nname = \"k\"\nfrom = { meta = \"key\" }\n[[stream.column]]\nname = \"raw\"\nfrom = \"event_id\"\ntype = \"jsonb\"\n",
    )
    .unwrap()
    .remove(0);
    assert_eq!(key(&shared, event, &meta()).unwrap().0, "evt-7");
    assert_eq!(key(&field, r#"{"event_id": "a b"}"#, &meta()), Err((DeadLetterReason::InvalidValue, "field `event_id` is not a usable idempotency key (1 to 128 printable ASCII characters)".to_owned())));
    assert_eq!(
        key(&field, r#"{"event_id": [1]}"#, &meta()),
        Err((
            DeadLetterReason::WrongType,
            "field `event_id` is an array, expected a string or an integer".to_owned()
        ))
    );
    assert_eq!(
        key(&field, "{}", &meta()),
        Err((
            DeadLetterReason::MissingField,
            "field `event_id` is missing or null".to_owned()
        ))
    );
    assert_eq!(
        key(&field, &sns("{}", json!("env-1")), &meta()),
        Err((
            DeadLetterReason::MissingField,
            "in the SNS notification's `Message`: field `event_id` is missing or null".to_owned()
        ))
    );
}

#[test]
fn the_event_time_comes_from_a_field_or_from_sent_timestamp() {
    let stream = compile_text(
        "[[stream]]\nname = \"s\"\nqueue_url = \"q\"\ntable = \"t\"\nevent_time = { field = \"at\", epoch = \"milliseconds\" }\n[[stream.column]]\nname = \"k\"\nfrom = { meta = \"key\" }\n[[stream.column]]\nname = \"d\"\nfrom = { meta = \"event_date\" }\n",
    )
    .unwrap()
    .remove(0);
    let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
    let row = stream
        .transform(
            &json!({"at": at.timestamp_millis()}).to_string(),
            &meta(),
            &keyring(),
        )
        .unwrap();
    assert_eq!((row.event_time, row.sent_at), (at, meta().sent_at));
    assert_eq!(row.values[1], Value::Date(at.date_naive()));
    let row = stream
        .transform(r#"{"at": "2025-01-02T03:04:05Z"}"#, &meta(), &keyring())
        .unwrap();
    assert_eq!(row.event_time, at);
    assert_eq!(
        stream
            .transform("{}", &meta(), &keyring())
            .unwrap_err()
            .detail,
        "field `at` is missing or null"
    );
}

#[test]
fn schema_violations_name_the_path_and_keyword_never_the_value() {
    let stream = orders();
    let detail = |body: String| {
        stream
            .transform(&body, &meta(), &keyring())
            .map(|_| ())
            .map_err(|p| (p.reason, p.detail))
    };
    assert_eq!(
        detail(with(ORDER, "/shipping/country", json!("de"))),
        Err((
            DeadLetterReason::InvalidValue,
            "event does not match the schema at `/shipping/country` (keyword `pattern`)".to_owned()
        ))
    );
    assert_eq!(
        detail(with(ORDER, "/customer/email", json!("not-an-email-secret"))),
        Err((
            DeadLetterReason::InvalidValue,
            "event does not match the schema at `/customer/email` (keyword `format`)".to_owned()
        ))
    );
    // A name the producer chose is not shown.
    assert_eq!(
        detail(with(ORDER, "/shipping/secret@example.com", json!(1))),
        Err((
            DeadLetterReason::InvalidValue,
            "event does not match the schema at `/shipping` (keyword `additionalProperties`)"
                .to_owned()
        ))
    );
    assert_eq!(
        detail(with(ORDER, "/weight_grams", json!(-1))),
        Err((
            DeadLetterReason::InvalidValue,
            "event does not match the schema at `/weight_grams` (keyword `minimum`)".to_owned()
        ))
    );
    // Columns are checked first: their words are more exact.
    assert_eq!(
        detail(without(ORDER, "/currency")),
        Err((
            DeadLetterReason::MissingField,
            "field `currency` is missing or null".to_owned()
        ))
    );
}

fn live_logins() -> (Stream, LiveTable) {
    let stream = login::stream("q", crate::domain::envelope::EnvelopeMode::Auto);
    let mut live = LiveTable {
        primary_key: vec!["message_id".to_owned()],
        indexes: ["hashed_ip", "hashed_device_id", "ingested_at"]
            .map(|c| vec![c.to_owned()])
            .to_vec(),
        ..LiveTable::default()
    };
    for column in &stream.columns {
        live.columns.push(LiveColumn {
            name: column.name.clone(),
            data_type: column.stored.format_type(),
            nullable: column.nullable,
            has_default: false,
        });
    }
    live.columns.push(LiveColumn {
        name: "ingested_at".to_owned(),
        data_type: "timestamp with time zone".to_owned(),
        nullable: false,
        has_default: true,
    });
    (stream, live)
}

fn set(live: &mut LiveTable, name: &str, change: impl FnOnce(&mut LiveColumn)) {
    change(live.columns.iter_mut().find(|c| c.name == name).unwrap());
}

#[test]
fn a_table_plan_applies_what_is_additive_and_refuses_the_rest() {
    let (stream, live) = live_logins();
    assert!(plan(&stream, &live).is_empty());

    // The file grew: a new nullable column and a wider limit are applied.
    let mut older = live.clone();
    older.columns.retain(|c| c.name != "locale");
    set(&mut older, "user_id", |c| {
        c.data_type = "character varying(64)".to_owned()
    });
    set(&mut older, "app_version", |c| c.nullable = true);
    set(&mut older, "device_type", |c| c.nullable = false);
    older.indexes.remove(0);
    older.columns.push(LiveColumn {
        name: "legacy".to_owned(),
        data_type: "text".to_owned(),
        nullable: true,
        has_default: false,
    });
    let planned = plan(&stream, &older);
    let sql: Vec<&str> = planned.additive.iter().map(|c| c.sql.as_str()).collect();
    assert_eq!(
        sql,
        [
            "ALTER TABLE user_logins ALTER COLUMN user_id TYPE varchar(128)",
            "ALTER TABLE user_logins ADD COLUMN locale varchar(32)",
            "CREATE INDEX IF NOT EXISTS user_logins_hashed_ip_idx ON user_logins (hashed_ip)",
        ]
    );
    assert_eq!(planned.refused.len(), 1);
    assert_eq!(
        planned.refused[0].to_string(),
        "column `app_version`: is nullable in the table, NOT NULL in the file; not applied: it fails if any row holds NULL, and scans the whole table under an exclusive lock; to apply it yourself: ALTER TABLE user_logins ALTER COLUMN app_version SET NOT NULL"
    );

    // What could lose or rewrite data is refused, with the statement to run.
    let mut newer = live.clone();
    set(&mut newer, "user_id", |c| {
        c.data_type = "character varying(256)".to_owned()
    });
    set(&mut newer, "locale", |c| c.nullable = false);
    set(&mut newer, "create_date", |c| {
        c.data_type = "timestamp with time zone".to_owned()
    });
    newer.columns.retain(|c| c.name != "device_type");
    newer.columns.push(LiveColumn {
        name: "tenant".to_owned(),
        data_type: "text".to_owned(),
        nullable: false,
        has_default: false,
    });
    newer.primary_key = vec!["user_id".to_owned()];
    let planned = plan(&stream, &newer);
    assert_eq!(
        planned
            .additive
            .iter()
            .map(|c| c.sql.as_str())
            .collect::<Vec<_>>(),
        ["ALTER TABLE user_logins ALTER COLUMN locale DROP NOT NULL"]
    );
    let refused: Vec<(&str, &str)> = planned
        .refused
        .iter()
        .map(|r| (r.column.as_str(), r.statement.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                "user_id",
                "ALTER TABLE user_logins ALTER COLUMN user_id TYPE varchar(128) USING user_id::varchar(128)"
            ),
            (
                "device_type",
                "ALTER TABLE user_logins ADD COLUMN device_type varchar(32); UPDATE user_logins SET device_type = …; ALTER TABLE user_logins ALTER COLUMN device_type SET NOT NULL"
            ),
            (
                "create_date",
                "ALTER TABLE user_logins ALTER COLUMN create_date TYPE date USING create_date::date"
            ),
            (
                "message_id",
                "CREATE UNIQUE INDEX CONCURRENTLY user_logins_message_id_key ON user_logins (message_id)"
            ),
            (
                "tenant",
                "ALTER TABLE user_logins ALTER COLUMN tenant DROP NOT NULL"
            ),
        ]
    );
    assert_eq!(
        planned.refused[3].difference,
        "the primary key is (user_id), not the idempotency key"
    );

    // A unique key on the key column is as good as the primary key; varchar to text is free.
    let mut unique = live.clone();
    unique.primary_key.clear();
    unique.unique_keys.push(vec!["message_id".to_owned()]);
    assert!(plan(&stream, &unique).is_empty());
    let mut missing_ingested_at = live;
    missing_ingested_at
        .columns
        .retain(|c| c.name != "ingested_at");
    missing_ingested_at
        .indexes
        .retain(|c| c[0] != "ingested_at");
    assert_eq!(
        plan(&stream, &missing_ingested_at)
            .additive
            .iter()
            .map(|c| c.sql.as_str())
            .collect::<Vec<_>>(),
        [
            "ALTER TABLE user_logins ADD COLUMN ingested_at timestamptz NOT NULL DEFAULT now()",
            "CREATE INDEX IF NOT EXISTS user_logins_ingested_at_idx ON user_logins (ingested_at)",
        ]
    );
}

/// Text built from a stream file's own pieces, shuffled and cut: reaches deep into the
/// compiler far more often than random characters.
fn arb_file_text() -> impl Strategy<Value = String> {
    let lines: Vec<String> = ORDERS
        .lines()
        .map(str::to_owned)
        .chain(super::login::FILE.lines().map(str::to_owned))
        .collect();
    let extras = prop_oneof![
        proptest::sample::select(lines.clone()),
        "[a-z_]{1,12} = \"[ -~]{0,20}\"",
        "[a-z_]{1,12} = -?[0-9]{1,20}",
        "[a-z_]{1,12} = \\{ [a-z_]{1,8} = \"[ -~]{0,12}\" \\}",
        ".{0,40}",
    ];
    proptest::collection::vec(extras, 0..60).prop_map(|lines| lines.join("\n"))
}

proptest! {
    /// The compiler never panics, and its errors are one line that places them.
    #[test]
    fn the_compiler_never_panics_and_errors_are_one_placed_line(text in arb_file_text()) {
        if let Err(error) = compile_text(&text) {
            let shown = error.to_string();
            prop_assert!(shown.starts_with("streams.toml:"));
            prop_assert!(!shown.contains('\n'), "{}", shown);
            prop_assert!(error.position.line >= 1 && error.position.column >= 1);
        }
    }

    #[test]
    fn the_compiler_never_panics_on_any_text(text in ".{0,400}") {
        crate::domain::invariants::check_stream_file(&text);
    }

    /// Any order event, its fields replaced by arbitrary values that carry a secret: a
    /// row, or a detail without the secret.
    #[test]
    fn the_transform_never_puts_a_value_in_a_detail(
        pointers in proptest::collection::vec(proptest::sample::select(vec![
            "/event_id", "/order_id", "/occurred_at", "/customer/id", "/customer/email", "/customer/tier",
            "/shipping/ip", "/shipping/country", "/shipping/SECRETKEY", "/total", "/currency", "/items_count",
            "/discount_pct", "/is_gift", "/delivery_date", "/channel", "/payment/method",
            "/payment/installments", "/attributes", "/SECRETKEY", "/shipping", "/payment",
        ]), 1..4),
        values in proptest::collection::vec(prop_oneof![
            Just(json!("SECRETVALUE")),
            Just(json!(["SECRETVALUE"])),
            Just(json!({"SECRETKEY": "SECRETVALUE"})),
            Just(json!("SECRETVALUE\u{0}")),
            Just(json!("SECRETVALUE".repeat(40))),
            Just(json!("2026-13-01SECRETVALUE")),
            Just(json!(73_190_214_455u64)),
            Just(json!(-73_190_214.455)),
            Just(json!(null)),
        ], 4),
        twice in any::<bool>(),
    ) {
        let stream = orders();
        let mut body = ORDER.to_owned();
        for (pointer, value) in pointers.iter().zip(values) {
            if pointer.matches('/').count() > 1 && !body.contains(&pointer.split('/').nth(1).unwrap().to_string()) {
                continue;
            }
            body = std::panic::catch_unwind(|| with(&body, pointer, value.clone())).unwrap_or(body.clone());
        }
        if twice {
            body = body.replacen('{', r#"{"currency": "SECRETVALUE", "#, 1);
        }
        for body in [body.clone(), sns(&body, json!("SECRETVALUE id"))] {
            match stream.transform(&body, &meta(), &keyring()) {
                Ok(row) => prop_assert_eq!(row.values.len(), 20),
                Err(poison) => {
                    for secret in ["SECRET", "73190214", "2026-13"] {
                        prop_assert!(!poison.detail.contains(secret), "{}", poison.detail);
                    }
                }
            }
        }
    }

    /// Any text or JSON, alone or in an envelope: for both example streams a full row or
    /// a poison whose detail quotes nothing of the body (crate::domain::invariants).
    #[test]
    fn the_transform_never_panics_nor_quotes_the_body(body in ".{0,300}", value in crate::domain::event::tests::arb_json()) {
        for body in [body.clone(), value.to_string(), sns(&value.to_string(), json!("i"))] {
            crate::domain::invariants::check_streams(&body);
        }
    }

    /// Order events with every field at an arbitrary value.
    #[test]
    fn the_orders_stream_holds_its_invariants_on_mutated_orders(
        pointer in proptest::sample::select(vec![
            "/event_id", "/order_id", "/occurred_at", "/customer/email", "/shipping/ip", "/total",
            "/items_count", "/discount_pct", "/delivery_date", "/payment/installments", "/attributes",
        ]),
        value in crate::domain::event::tests::arb_json(),
    ) {
        crate::domain::invariants::check_streams(&with(ORDER, pointer, value));
    }
}

/// Found by fuzzing: a key the producer wrote (`user_id\``) is a piece of a detail's fixed
/// words; the check tells that from a value the detail quotes.
#[test]
fn a_body_string_that_is_part_of_a_detail_s_words_is_not_a_leak() {
    crate::domain::invariants::check_streams(r#"{"user_id`": "x", "ip": "is missing or null"}"#);
}

/// The pipeline shares one compiled stream between its receivers.
#[test]
fn a_compiled_stream_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    shared(&orders());
}

/// `${VAR:-text}` takes `text` when VAR is unset or empty, so an optional setting can be
/// forwarded; an optional URL left empty means "not given".
#[test]
fn a_variable_may_have_a_default_and_an_optional_url_may_end_empty() {
    let file = |dlq: &str| {
        format!(
            "[[stream]]\nname = \"s\"\nqueue_url = \"${{Q}}\"\ndead_letter_queue_url = \"{dlq}\"\ntable = \"t\"\n\n[[stream.column]]\nname = \"id\"\nfrom = {{ meta = \"key\" }}\n"
        )
    };
    let dlq = |dlq: &str| {
        compile_text(&file(dlq))
            .unwrap()
            .remove(0)
            .dead_letter_queue_url
    };
    assert_eq!(dlq("${UNSET:-}"), None, "unset and no default: not given");
    assert_eq!(
        dlq("${UNSET:-http://h/000000000000/d}").as_deref(),
        Some("http://h/000000000000/d")
    );
    assert_eq!(
        dlq("${D:-fallback}").as_deref(),
        Some("http://localhost:4566/000000000000/D"),
        "a set variable wins over its default"
    );
    let error = compile_text(&file("${UNSET}")).unwrap_err();
    assert!(error.to_string().contains("`UNSET` is not set"), "{error}");
}
