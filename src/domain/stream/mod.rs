//! Streams: any JSON event into any table, declared in a stream file (TOML). Pure: no I/O.
//!
//! A stream names its source queue, its envelope mode, its table, its idempotency key, its
//! event time and, for each column, where the value comes from (a path into the event or
//! message metadata), its PostgreSQL type, its rules and its mask. `docs/streams.md` is the
//! file's reference.
//!
//! - [`compile`] turns a file into [`Stream`]s, or an error naming file, line and column.
//! - [`Stream::transform`] turns one message body into a [`Row`] (one typed [`Value`] per
//!   column) or a [`Poison`] (a reason and a detail that never quotes the body).
//! - [`Stream::ddl`] and [`ddl::plan`] say what the table must be and how a live table
//!   differs from it.
//! - [`login`] is the built-in login stream, compiled from `streams/logins.toml`: it makes
//!   the rows, digests and dead-letter details of [`crate::domain::event::transform`].
//!
//! The parts: `file` (the TOML as written, with positions), `compile` (checks and builds),
//! `types` (types, rules, typed values), `parse` (the one pass over a body, driven by the
//! paths read), `mask`, `schema` (JSON Schema), `transform`, `ddl`, `error`.

mod compile;
pub mod ddl;
pub mod error;
pub mod file;
pub mod login;
mod mask;
mod parse;
mod schema;
mod transform;
pub mod types;

pub use compile::{Lookups, compile};
pub use error::{FileErrorKind, Poison, Problem, StreamFileError};
pub use mask::Mask;
pub use transform::{MessageMeta, Row};
pub use types::{ColumnType, Epoch, Rules, Value};

use std::fmt;

use crate::domain::envelope::EnvelopeMode;

/// The longest idempotency key: SQS ids are far shorter, and a key must fit the
/// `sqs2pg.original_message_id` attribute a redrive trusts (the SQS adapter's own check).
pub const MAX_KEY_CHARS: usize = 128;

/// Whether `key` can be an idempotency key: 1 to 128 printable ASCII characters. The rule a
/// redriven message's carried key is held to, so every key survives a redrive.
pub fn is_usable_key(key: &str) -> bool {
    (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A compiled stream: immutable, cheap to use per message.
#[derive(Debug, Clone)]
pub struct Stream {
    /// `[a-z0-9_]`, unique in its file: a metric label.
    pub name: String,
    /// With `${VAR}`s filled in.
    pub queue_url: String,
    /// `None`: found from the queue's redrive policy.
    pub dead_letter_queue_url: Option<String>,
    pub envelope: EnvelopeMode,
    pub table: TableName,
    pub key: KeyChoice,
    pub event_time: EventTime,
    pub columns: Vec<Column>,
    /// The index of the column holding the key (its primary key).
    pub key_column: usize,
    paths: parse::PathTree,
    schema: Option<schema::EventSchema>,
}

/// A table, optionally in a schema; both validated identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{}.", ddl::quoted(schema))?;
        }
        f.write_str(&ddl::quoted(&self.name))
    }
}

/// Where a stream's idempotency key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// The envelope's id when the body has a usable one, else the SQS id.
    Auto,
    /// The SQS message id (the original's for a redrive): today's behaviour.
    SqsMessageId,
    /// The SNS `MessageId` or EventBridge `id`; a body without one is poison.
    EnvelopeId,
    /// A field of the event: a string, or an integer written as its digits.
    Field { path: Vec<String>, slot: usize },
}

/// What dates a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTime {
    /// When the message was first sent to SQS.
    SentTimestamp,
    /// A field of the event: RFC 3339, or epoch numbers in the given unit.
    Field {
        path: Vec<String>,
        slot: usize,
        epoch: Option<Epoch>,
    },
}

/// Message metadata a column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Meta {
    /// The idempotency key (the column that holds it is the primary key).
    Key,
    /// The SQS id (the original's for a redriven message).
    SqsMessageId,
    /// The SNS `MessageId` or EventBridge `id`; null without an envelope.
    EnvelopeId,
    /// When the message was first sent to SQS.
    SentTimestamp,
    /// The stream's event time.
    EventTime,
    /// The UTC date of the event time.
    EventDate,
    /// The id of the HMAC key that masked the row.
    HmacKeyId,
}

impl Meta {
    pub const NAMES: [&'static str; 7] = [
        "key",
        "sqs_message_id",
        "envelope_id",
        "sent_timestamp",
        "event_time",
        "event_date",
        "hmac_key_id",
    ];

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        use strum::IntoEnumIterator;
        Self::iter().find(|meta| meta.name() == text)
    }

    /// The type of the value, and for text the most characters it can have.
    pub fn natural_type(self) -> (ColumnType, Option<u32>) {
        match self {
            Self::Key | Self::SqsMessageId | Self::EnvelopeId => (
                ColumnType::Text { max_chars: None },
                Some(MAX_KEY_CHARS as u32),
            ),
            Self::HmacKeyId => (
                ColumnType::Text { max_chars: None },
                Some(crate::domain::keyring::MAX_KEY_ID_CHARS as u32),
            ),
            Self::SentTimestamp | Self::EventTime => (ColumnType::Timestamptz, None),
            Self::EventDate => (ColumnType::Date, None),
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path into the event; `name` is how errors name it (`a.b`).
    Field {
        path: Vec<String>,
        name: String,
        slot: usize,
    },
    Meta(Meta),
}

/// One column of a stream's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub source: Source,
    /// What the event's value must be.
    pub ty: ColumnType,
    /// What the table stores: `ty`, or `char(64)` for an HMAC-masked column.
    pub stored: ColumnType,
    /// Absent and null are allowed (SQL NULL); else they are `missing_field`.
    pub nullable: bool,
    pub rules: Rules,
    pub mask: Option<Mask>,
    /// A btree index on the column.
    pub index: bool,
}

/// A path as errors and docs write it: names joined by `.`, a name holding a `.` (or
/// nothing) in quotes.
pub fn display_path(path: &[String]) -> String {
    path.iter()
        .map(|name| {
            if name.is_empty() || name.contains('.') || name.contains('"') {
                serde_json::Value::from(name.as_str()).to_string()
            } else {
                name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests;
