//! The two kinds of error of a stream: a stream file that does not compile
//! ([`StreamFileError`], for whoever wrote the file), and an event that does not fit its
//! stream ([`Problem`], which dead-letters the message). A `Problem`'s text goes to logs and
//! to the dead-letter queue, so it names fields, kinds and the file's own limits, never a
//! value from the event.

use std::fmt;

use crate::DeadLetterReason;
use crate::domain::event::JsonKind;
use crate::domain::stream::file::Position;

/// A stream file that does not compile: where, and what was expected. Rendered on one line
/// as Cargo renders a manifest error: `streams.toml:12:8: unknown type `strng`; …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}", line = position.line, column = position.column)]
pub struct StreamFileError {
    pub file: String,
    pub position: Position,
    pub kind: FileErrorKind,
}

/// What is wrong at a place in a stream file. The texts quote the file, never an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileErrorKind {
    /// TOML syntax, an unknown key, or a value of the wrong TOML type (the toml crate's words).
    #[error("{0}")]
    Toml(String),
    #[error("the file declares no stream; expected at least one [[stream]] table")]
    NoStream,
    #[error("stream `{0}` has no column; expected at least one [[stream.column]]")]
    NoColumn(String),
    #[error(
        "{what} `{text}` is not a valid name; expected 1 to 63 of a-z, 0-9 and _, starting with a letter or _"
    )]
    BadIdentifier { what: &'static str, text: String },
    #[error("a stream named `{0}` is declared twice")]
    DuplicateStream(String),
    #[error("table `{table}` is already the table of stream `{other}`")]
    DuplicateTable { table: String, other: String },
    #[error("a column named `{0}` is declared twice in this stream")]
    DuplicateColumn(String),
    #[error("column name `{0}` is reserved: sqs2pg adds it to every table")]
    ReservedColumn(String),
    #[error("environment variable `{0}` is not set")]
    UnsetVariable(String),
    #[error("`${{` without a closing `}}`; write `$$` for a literal `$`")]
    UnclosedVariable,
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("unknown envelope `{0}`; expected one of: auto, sns, eventbridge, none")]
    UnknownEnvelope(String),
    #[error("{what}: expected {expected}")]
    Expected {
        what: &'static str,
        expected: &'static str,
    },
    #[error(
        "path `{0}` is not valid; expected field names joined by `.` (`a.b.c`), or an array of names ([\"a.b\", \"c\"]) for names holding a dot"
    )]
    BadPath(String),
    #[error("unknown meta source `{0}`; expected one of: {list}", list = super::Meta::NAMES.join(", "))]
    UnknownMeta(String),
    #[error(
        "unknown type `{0}`; expected one of: text, varchar(n), smallint, integer, bigint, double precision, numeric, numeric(p), numeric(p,s), boolean, date, timestamptz, uuid, inet, jsonb"
    )]
    UnknownType(String),
    #[error("column `{0}` needs a `type`: nothing else says what it holds")]
    NoType(String),
    #[error(
        "column `{column}` has no type of its own: the schema says too little about `{path}` ({why}); give `type`"
    )]
    SchemaTooVague {
        column: String,
        path: String,
        why: &'static str,
    },
    #[error("meta source `{meta}` is {expected}; the column cannot be `{found}`")]
    MetaType {
        meta: &'static str,
        expected: String,
        found: String,
    },
    #[error("`{rule}` does not apply to a column of type {ty}")]
    RuleNotForType { rule: &'static str, ty: String },
    #[error("`{rule}` does not apply to a column read from meta source `{meta}`")]
    RuleNotForMeta {
        rule: &'static str,
        meta: &'static str,
    },
    #[error("{0}")]
    BadRule(String),
    #[error("mask `{mask}` does not apply to a column of type {ty}; {hint}")]
    MaskNotForType {
        mask: &'static str,
        ty: String,
        hint: &'static str,
    },
    #[error(
        "unknown mask; expected \"hmac\", {{ ip_prefix = {{ v4 = 24, v6 = 48 }} }}, or for jsonb {{ drop = [\"a.b\"], hmac = [\"c\"] }}"
    )]
    UnknownMask,
    #[error(
        "`drop` masks a field inside a jsonb column; to store nothing of a field, leave it out of the stream (fields no column reads are ignored)"
    )]
    DropWholeColumn,
    #[error(
        "stream `{0}` has no column holding the idempotency key; expected one column with from = {{ meta = \"key\" }}"
    )]
    NoKeyColumn(String),
    #[error("a second column holds the idempotency key (the first is `{0}`); expected exactly one")]
    SecondKeyColumn(String),
    #[error("the idempotency key column cannot be {0}: every row needs its key as it is")]
    KeyColumnRule(&'static str),
    #[error(
        "stream `{0}` masks with HMAC but records no key id; add a column with from = {{ meta = \"hmac_key_id\" }}, so a digest can be matched after a key rotation"
    )]
    NoKeyIdColumn(String),
    #[error(
        "unknown key `{0}`; expected \"auto\", \"sqs_message_id\", \"envelope_id\" or {{ field = \"path\" }}"
    )]
    UnknownKey(String),
    #[error("{what} can never be found: envelope = \"{envelope}\" unwraps no envelope")]
    NoEnvelope {
        what: &'static str,
        envelope: &'static str,
    },
    #[error(
        "meta source `envelope_id` is absent when a body comes without an envelope (envelope = \"{0}\"); set required = false"
    )]
    EnvelopeIdMaybeAbsent(&'static str),
    #[error("unknown epoch unit `{0}`; expected \"seconds\" or \"milliseconds\"")]
    UnknownEpoch(String),
    #[error("path `{path}` can never match: the schema {why}")]
    NeverMatches { path: String, why: String },
    #[error("schema `{name}` cannot be read: {error}")]
    SchemaUnreadable { name: String, error: String },
    #[error("schema `{name}` is not JSON: {error}")]
    SchemaNotJson { name: String, error: String },
    #[error("schema `{name}` is not a valid JSON Schema: {error}")]
    SchemaInvalid { name: String, error: String },
    #[error("path `{path}` is inside `{whole}`, which a column reads whole; read one or the other")]
    Overlap { path: String, whole: String },
    #[error(
        "index name `{0}` would be longer than PostgreSQL's 63 bytes; shorten the table or column name"
    )]
    IndexNameTooLong(String),
}

/// The field an event's problem is about, as the stream file names it (`user_id`, `a.b`).
pub type FieldName = String;

/// What a JSON value should have been, in a [`Problem::WrongType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    String,
    Integer,
    Number,
    Boolean,
    /// A decimal number: a JSON number, or a string holding one.
    Decimal,
    /// A timestamp: an RFC 3339 string, or also a number when the column reads epochs.
    Timestamp {
        epoch: bool,
    },
    Object,
    AnyJson,
    /// An id: a string, or an integer (written as its digits).
    Id,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
            Self::Decimal => "a number or a string holding one",
            Self::Timestamp { epoch: false } => "an RFC 3339 timestamp string",
            Self::Timestamp { epoch: true } => "an RFC 3339 timestamp string or an epoch number",
            Self::Object => "an object",
            Self::AnyJson => "a JSON value",
            Self::Id => "a string or an integer",
        })
    }
}

/// Why an event does not fit its stream. The first five texts are those of
/// [`crate::domain::event::Rejection`] word for word, so the login stream's dead letters
/// read as they always have (the differential test holds them to it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("body is not valid JSON ({category} error at line {line}, column {column})")]
    InvalidJson {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("body is {found}, not a JSON object")]
    NotAnObject { found: JsonKind },
    #[error("field `{field}` is missing or null")]
    MissingField { field: FieldName },
    #[error("field `{field}` is {found}, expected {expected}")]
    WrongType {
        field: FieldName,
        found: JsonKind,
        expected: Expected,
    },
    #[error("field `{field}` is empty")]
    Empty { field: FieldName },
    #[error("field `{field}` is longer than {max_chars} characters")]
    TooLong { field: FieldName, max_chars: u32 },
    #[error("field `{field}` is shorter than {min_chars} characters")]
    TooShort { field: FieldName, min_chars: u32 },
    #[error("field `{field}` contains a NUL character")]
    ContainsNul { field: FieldName },
    #[error("field `{field}` is not an IPv4 or IPv6 address")]
    InvalidIp { field: FieldName },
    #[error("field `{field}` appears more than once")]
    DuplicateField { field: FieldName },
    #[error("field `{field}` is not {what}")]
    InvalidFormat {
        field: FieldName,
        what: &'static str,
    },
    /// `limit` is the file's own bound (or the type's), never the value.
    #[error("field `{field}` is {side} {limit}")]
    OutOfRange {
        field: FieldName,
        side: Side,
        limit: String,
    },
    #[error("field `{field}` is not one of the allowed values")]
    NotOneOf { field: FieldName },
    #[error(
        "field `{field}` is not a usable idempotency key (1 to 128 printable ASCII characters)"
    )]
    UnusableKey { field: FieldName },
    /// The envelope has no id where the stream's key must come from it.
    #[error(
        "{envelope} field `{field}` is missing or not a usable idempotency key (1 to 128 printable ASCII characters)"
    )]
    UnusableEnvelopeId {
        envelope: crate::domain::envelope::EnvelopeKind,
        field: &'static str,
    },
    /// `key = "envelope_id"` and a body that came in no envelope (`envelope = "auto"`).
    #[error(
        "body is not an SNS notification or EventBridge event, so it has no envelope id to key on"
    )]
    NoEnvelopeId,
    /// `at` is a JSON pointer whose property names are the schema's own (any other is `*`).
    #[error("event does not match the schema at `{at}` (keyword `{keyword}`)")]
    Schema { at: String, keyword: String },
}

/// Which side of a limit a value fell on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Below,
    Above,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Below => "below the minimum",
            Self::Above => "above the maximum",
        })
    }
}

impl Problem {
    /// The bounded reason code recorded in the dead-letter queue and in metrics: the same
    /// classes as the typed transform's. A schema violation is `invalid_value`: the schema is
    /// one more way to write the rules, and a new code would split one kind of failure in
    /// two on every dashboard.
    pub fn reason(&self) -> DeadLetterReason {
        use DeadLetterReason as R;
        match self {
            Self::InvalidJson { .. } | Self::DuplicateField { .. } => R::InvalidJson,
            Self::NotAnObject { .. } => R::NotAnObject,
            Self::MissingField { .. } => R::MissingField,
            Self::WrongType { .. } => R::WrongType,
            Self::UnusableEnvelopeId { .. } | Self::NoEnvelopeId => R::InvalidEnvelope,
            Self::Empty { .. }
            | Self::TooLong { .. }
            | Self::TooShort { .. }
            | Self::ContainsNul { .. }
            | Self::InvalidIp { .. }
            | Self::InvalidFormat { .. }
            | Self::OutOfRange { .. }
            | Self::NotOneOf { .. }
            | Self::UnusableKey { .. }
            | Self::Schema { .. } => R::InvalidValue,
        }
    }
}

/// A message that cannot become a row: the reason and the detail its dead letter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub reason: DeadLetterReason,
    /// Says where it failed (`in the SNS notification's `Message`: …`); never a value.
    pub detail: String,
}
