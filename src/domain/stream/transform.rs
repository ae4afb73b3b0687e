//! The generic transform: one message body → the row its stream makes, or why it is poison.
//! What `pipeline::receive::transformed` does for logins (unwrap the envelope, validate,
//! mask), for any stream, plus the idempotency key and the event time.

use chrono::{DateTime, Utc};

use crate::domain::envelope::{self, Unwrapped};
use crate::domain::keyring::Keyring;
use crate::domain::stream::error::{Expected, Poison, Problem};
use crate::domain::stream::mask::{ip_prefix, mask_json};
use crate::domain::stream::parse::{Capture, Slot, invalid_json};
use crate::domain::stream::types::{self, ColumnType, Value};
use crate::domain::stream::{
    Column, EventTime, KeyChoice, Mask, Meta, Source, Stream, display_path, is_usable_key,
};

/// What the transform needs to know about a message besides its body.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    /// The id SQS gave this copy of the message.
    pub sqs_message_id: &'a str,
    /// The id of the message this one is a redrive of (the `sqs2pg.original_message_id`
    /// attribute, checked with [`is_usable_key`]): it stands for the SQS id, so a redriven
    /// message keeps its key. Keys from the envelope or a field need no such help: a
    /// redrive carries the body unchanged.
    pub original_message_id: Option<&'a str>,
    /// When the message was first sent (SentTimestamp, or the redrive-carried original).
    pub sent_at: DateTime<Utc>,
}

impl MessageMeta<'_> {
    /// The message's SQS id for good: the original's id when it is a redrive.
    pub fn message_id(&self) -> &str {
        self.original_message_id.unwrap_or(self.sqs_message_id)
    }
}

/// A validated, masked event: one row of its stream's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Which of `values` is the idempotency key (see [`Row::key`]).
    pub key_column: usize,
    /// When the event happened, by the stream's `event_time` (dates the row).
    pub event_time: DateTime<Utc>,
    /// When the message was first sent, for the lag metrics.
    pub sent_at: DateTime<Utc>,
    /// One value per column, in the stream's column order.
    pub values: Vec<Value>,
}

impl Row {
    /// The idempotency key: the value of the key column (held once, not copied).
    pub fn key(&self) -> &str {
        match &self.values[self.key_column] {
            Value::Text(key) => key,
            _ => unreachable!("the key column holds text (the compiler checks it)"),
        }
    }
}

impl Stream {
    /// Unwraps, validates and masks one message body into the row it becomes, with the
    /// keyring's current key; or says why it is poison, in words that never quote the body.
    pub fn transform(
        &self,
        body: &str,
        meta: &MessageMeta<'_>,
        keyring: &Keyring,
    ) -> Result<Row, Poison> {
        let inner = envelope::unwrap(body, self.envelope).map_err(|rejection| Poison {
            reason: rejection.reason(),
            detail: rejection.to_string(),
        })?;
        let envelope_key = self.envelope_key(&inner).map_err(|problem| Poison {
            reason: problem.reason(),
            detail: problem.to_string(),
        })?;
        self.event(&inner, envelope_key, meta, keyring)
            .map_err(|problem| Poison {
                reason: problem.reason(),
                detail: inner.detail(&problem),
            })
    }

    /// The key the envelope gives, when the stream keys on it: `Ok(None)` when it does not.
    fn envelope_key<'u>(&self, inner: &'u Unwrapped<'_>) -> Result<Option<&'u str>, Problem> {
        let usable = inner.id.as_deref().filter(|id| is_usable_key(id));
        match (&self.key, inner.envelope) {
            // `auto` never refuses a message for its key: no usable envelope id, no
            // envelope key, and the SQS id keys the row.
            (KeyChoice::Auto, _) => Ok(usable),
            (KeyChoice::EnvelopeId, Some(envelope)) => {
                usable.map(Some).ok_or(Problem::UnusableEnvelopeId {
                    envelope,
                    field: envelope.id_field(),
                })
            }
            // Only a mode that may see no envelope gets here (`auto`).
            (KeyChoice::EnvelopeId, None) => Err(Problem::NoEnvelopeId),
            _ => Ok(None),
        }
    }

    fn event(
        &self,
        inner: &Unwrapped<'_>,
        envelope_key: Option<&str>,
        meta: &MessageMeta<'_>,
        keyring: &Keyring,
    ) -> Result<Row, Problem> {
        let slots = self.paths.parse(&inner.body)?;
        let mut key = Some(match &self.key {
            KeyChoice::Field { path, slot } => field_key(&slots[*slot], path)?,
            KeyChoice::Auto | KeyChoice::EnvelopeId => {
                envelope_key.unwrap_or_else(|| meta.message_id()).to_owned()
            }
            KeyChoice::SqsMessageId => meta.message_id().to_owned(),
        });
        let event_time = match &self.event_time {
            EventTime::SentTimestamp => meta.sent_at,
            EventTime::Field { path, slot, epoch } => match present(&slots[*slot], path)? {
                Some(capture) => types::timestamp(capture, *epoch, &display_path(path))?,
                None => {
                    return Err(Problem::MissingField {
                        field: display_path(path),
                    });
                }
            },
        };
        let (key_id, masker) = keyring.current();
        let mut values = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            values.push(match &column.source {
                Source::Meta(source) => match source {
                    // One key column (the compiler checks it): moved, not copied.
                    Meta::Key => Value::Text(key.take().unwrap_or_default()),
                    Meta::SqsMessageId => Value::Text(meta.message_id().to_owned()),
                    Meta::EnvelopeId => inner
                        .id
                        .as_deref()
                        .map_or(Value::Null, |id| Value::Text(id.to_owned())),
                    Meta::SentTimestamp => Value::Timestamptz(meta.sent_at),
                    Meta::EventTime => Value::Timestamptz(event_time),
                    Meta::EventDate => Value::Date(event_time.date_naive()),
                    Meta::HmacKeyId => Value::Text(key_id.as_str().to_owned()),
                },
                Source::Field { path, name, slot } => {
                    field_value(column, path, name, &slots[*slot], masker)?
                }
            });
        }
        if let Some(schema) = &self.schema {
            let event: serde_json::Value =
                serde_json::from_str(&inner.body).map_err(invalid_json)?;
            schema.check(&event)?;
        }
        Ok(Row {
            key_column: self.key_column,
            event_time,
            sent_at: meta.sent_at,
            values,
        })
    }
}

/// What a slot holds, `None` when absent or null; a duplicate or a non-object on the way
/// is a problem, named by the path as far as it goes.
fn present<'s, 'de>(
    slot: &'s Slot<'de>,
    path: &[String],
) -> Result<Option<&'s Capture<'de>>, Problem> {
    match slot {
        Slot::Absent | Slot::Found(Capture::Null) => Ok(None),
        Slot::Found(capture) => Ok(Some(capture)),
        Slot::Duplicate { depth } => Err(Problem::DuplicateField {
            field: display_path(&path[..=*depth]),
        }),
        Slot::Blocked { depth, found } => Err(Problem::WrongType {
            field: display_path(&path[..=*depth]),
            found: *found,
            expected: Expected::Object,
        }),
    }
}

/// The key a field gives: a string, or an integer written as its digits.
fn field_key(slot: &Slot<'_>, path: &[String]) -> Result<String, Problem> {
    let field = || display_path(path);
    let key = match present(slot, path)? {
        None => return Err(Problem::MissingField { field: field() }),
        // A path read whole by another column too is captured as a `Value`.
        Some(Capture::Str(text)) => text.to_string(),
        Some(Capture::Json(serde_json::Value::String(text))) => text.clone(),
        Some(Capture::Number(number) | Capture::Json(serde_json::Value::Number(number)))
            if number.is_i64() || number.is_u64() =>
        {
            number.to_string()
        }
        Some(other) => {
            return Err(Problem::WrongType {
                field: field(),
                found: crate::domain::stream::parse::capture_kind(other),
                expected: Expected::Id,
            });
        }
    };
    if !is_usable_key(&key) {
        return Err(Problem::UnusableKey { field: field() });
    }
    Ok(key)
}

fn field_value(
    column: &Column,
    path: &[String],
    field: &str,
    slot: &Slot<'_>,
    masker: &crate::domain::event::Masker,
) -> Result<Value, Problem> {
    let Some(capture) = present(slot, path)? else {
        return if column.nullable {
            Ok(Value::Null)
        } else {
            Err(Problem::MissingField {
                field: field.to_owned(),
            })
        };
    };
    if let (Some(Mask::Json { drop, hmac }), Capture::Json(value)) = (&column.mask, capture) {
        let mut masked = value.clone();
        mask_json(&mut masked, drop, hmac, masker);
        return Ok(types::read(
            ColumnType::Jsonb,
            &column.rules,
            &Capture::Json(masked),
            field,
            true,
        )?
        .value);
    }
    let digested = column.mask == Some(Mask::Hmac);
    let read = types::read(column.ty, &column.rules, capture, field, !digested)?;
    Ok(match (&column.mask, read.value) {
        (Some(Mask::Hmac), _) => {
            Value::Text(masker.digest(read.text.as_deref().unwrap_or_default()))
        }
        (Some(Mask::IpPrefix { v4, v6 }), Value::Inet { addr, .. }) => {
            let (addr, prefix) = ip_prefix(addr, *v4, *v6);
            Value::Inet { addr, prefix }
        }
        (_, value) => value,
    })
}
