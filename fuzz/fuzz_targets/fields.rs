//! Objects built from the fields the transform reads, with arbitrary values: reaches the
//! accept path and its edges (limits, NULs, IPs, duplicates) far more often than raw bytes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum FieldValue {
    Text(String),
    Ip([u8; 4]),
    Ipv6([u16; 8]),
    Number(i64),
    Null,
    Nested(Vec<String>),
}

#[derive(Debug, Arbitrary)]
struct Entry {
    /// Picks the field name (see below).
    field: u8,
    value: FieldValue,
}

fuzz_target!(|entries: Vec<Entry>| {
    // Written by hand, not through a map, so a field can appear twice.
    let body = entries
        .iter()
        .map(|entry| {
            // One index past the fields the transform reads is an unknown one.
            let fields = &sqs2pg::domain::event::FIELDS;
            let name = fields
                .get(usize::from(entry.field) % (fields.len() + 1))
                .copied()
                .unwrap_or("extra");
            let value = match &entry.value {
                FieldValue::Text(text) => serde_json::Value::from(text.as_str()),
                FieldValue::Ip(octets) => std::net::Ipv4Addr::from(*octets).to_string().into(),
                FieldValue::Ipv6(segments) => {
                    std::net::Ipv6Addr::from(*segments).to_string().into()
                }
                FieldValue::Number(number) => (*number).into(),
                FieldValue::Null => serde_json::Value::Null,
                FieldValue::Nested(items) => items.clone().into(),
            };
            format!("{}:{value}", serde_json::Value::from(name))
        })
        .collect::<Vec<_>>()
        .join(",");
    sqs2pg::domain::invariants::check(&format!("{{{body}}}"));
});
