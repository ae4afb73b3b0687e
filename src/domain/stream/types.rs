//! Column types and rules: what a column accepts from an event, and the typed value it
//! becomes. Every check names the field and, at most, the file's own limit: never the value.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Number;

use crate::domain::event::JsonKind;
use crate::domain::stream::error::{Expected, Problem, Side};
use crate::domain::stream::parse::Capture;

/// A column's PostgreSQL type: what the event's value must be, and what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `text`, or `varchar(n)` with a character limit.
    Text {
        max_chars: Option<u32>,
    },
    SmallInt,
    Integer,
    BigInt,
    DoublePrecision,
    /// Exact decimal, kept as its text: `numeric`, `numeric(p)`, `numeric(p,s)`.
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Boolean,
    Date,
    Timestamptz,
    Uuid,
    Inet,
    Jsonb,
    /// `char(64)`: what an HMAC-masked column stores (lowercase hex HMAC-SHA256). Not
    /// written in a file: a masked column's `type` says what the event holds.
    Digest,
}

/// PostgreSQL's largest `varchar(n)`.
pub const MAX_VARCHAR: u32 = 10_485_760;
/// PostgreSQL's largest numeric precision in a type modifier.
pub const MAX_NUMERIC_PRECISION: u32 = 1000;

impl ColumnType {
    /// The type written in a file (`varchar(32)`, `numeric(12,2)`, `int8`, …), or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let (name, modifiers) = match text.split_once('(') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')')?;
                let numbers = inner
                    .split(',')
                    .map(|part| part.trim().parse::<u32>().ok())
                    .collect::<Option<Vec<u32>>>()?;
                (name.trim().to_owned(), numbers)
            }
            None => (text, Vec::new()),
        };
        let plain = |ty: Self| modifiers.is_empty().then_some(ty);
        match (name.as_str(), modifiers.as_slice()) {
            ("text", []) => Some(Self::Text { max_chars: None }),
            ("varchar" | "character varying", [n]) if (1..=MAX_VARCHAR).contains(n) => {
                Some(Self::Text {
                    max_chars: Some(*n),
                })
            }
            ("smallint" | "int2", _) => plain(Self::SmallInt),
            ("integer" | "int" | "int4", _) => plain(Self::Integer),
            ("bigint" | "int8", _) => plain(Self::BigInt),
            ("double precision" | "float8", _) => plain(Self::DoublePrecision),
            ("numeric" | "decimal", []) => Some(Self::Numeric {
                precision: None,
                scale: None,
            }),
            ("numeric" | "decimal", [p]) if (1..=MAX_NUMERIC_PRECISION).contains(p) => {
                Some(Self::Numeric {
                    precision: Some(*p),
                    scale: Some(0),
                })
            }
            ("numeric" | "decimal", [p, s])
                if (1..=MAX_NUMERIC_PRECISION).contains(p) && s <= p =>
            {
                Some(Self::Numeric {
                    precision: Some(*p),
                    scale: Some(*s),
                })
            }
            ("boolean" | "bool", _) => plain(Self::Boolean),
            ("date", _) => plain(Self::Date),
            ("timestamptz" | "timestamp with time zone", _) => plain(Self::Timestamptz),
            ("uuid", _) => plain(Self::Uuid),
            ("inet", _) => plain(Self::Inet),
            ("jsonb", _) => plain(Self::Jsonb),
            _ => None,
        }
    }

    /// As a `CREATE TABLE` writes it.
    pub fn sql(&self) -> String {
        match self {
            Self::Text { max_chars: None } => "text".to_owned(),
            Self::Text { max_chars: Some(n) } => format!("varchar({n})"),
            Self::Numeric {
                precision: Some(p),
                scale: Some(s),
            } => format!("numeric({p},{s})"),
            Self::Numeric { .. } => "numeric".to_owned(),
            Self::Digest => "char(64)".to_owned(),
            Self::Timestamptz => "timestamptz".to_owned(),
            other => other.format_type(),
        }
    }

    /// As PostgreSQL's `format_type()` prints it: what a live table is compared with.
    pub fn format_type(&self) -> String {
        match self {
            Self::Text { max_chars: None } => "text".to_owned(),
            Self::Text { max_chars: Some(n) } => format!("character varying({n})"),
            Self::SmallInt => "smallint".to_owned(),
            Self::Integer => "integer".to_owned(),
            Self::BigInt => "bigint".to_owned(),
            Self::DoublePrecision => "double precision".to_owned(),
            Self::Numeric {
                precision: Some(p),
                scale: Some(s),
            } => format!("numeric({p},{s})"),
            Self::Numeric { .. } => "numeric".to_owned(),
            Self::Boolean => "boolean".to_owned(),
            Self::Date => "date".to_owned(),
            Self::Timestamptz => "timestamp with time zone".to_owned(),
            Self::Uuid => "uuid".to_owned(),
            Self::Inet => "inet".to_owned(),
            Self::Jsonb => "jsonb".to_owned(),
            Self::Digest => "character(64)".to_owned(),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, Self::SmallInt | Self::Integer | Self::BigInt)
    }

    pub fn is_number(&self) -> bool {
        self.is_integer() || matches!(self, Self::DoublePrecision | Self::Numeric { .. })
    }

    /// The integer range of the type, for the integer types.
    pub fn integer_range(&self) -> Option<(i64, i64)> {
        match self {
            Self::SmallInt => Some((i16::MIN.into(), i16::MAX.into())),
            Self::Integer => Some((i32::MIN.into(), i32::MAX.into())),
            Self::BigInt => Some((i64::MIN, i64::MAX)),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql())
    }
}

/// How a timestamp column reads a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    Seconds,
    Milliseconds,
}

/// A `minimum` or `maximum`, as the file wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Int(i64),
    Float(f64),
}

impl Bound {
    fn as_f64(self) -> f64 {
        match self {
            Self::Int(n) => n as f64,
            Self::Float(x) => x,
        }
    }

    /// Where `value` stands against this bound: below (`Less`), at or above.
    fn compare_f64(self, value: f64) -> std::cmp::Ordering {
        value
            .partial_cmp(&self.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    fn compare_i64(self, value: i64) -> std::cmp::Ordering {
        match self {
            Self::Int(bound) => value.cmp(&bound),
            Self::Float(_) => self.compare_f64(value as f64),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The allowed values of a column (`one_of`).
#[derive(Debug, Clone, PartialEq)]
pub enum OneOf {
    Text(Vec<String>),
    Integer(Vec<i64>),
}

/// A column's rules beyond its type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    /// Characters, text only. Defaults to 1: an empty string is refused, as today.
    pub min_chars: u32,
    /// Characters, text only (the `varchar(n)` limit).
    pub max_chars: Option<u32>,
    pub minimum: Option<Bound>,
    pub maximum: Option<Bound>,
    pub one_of: Option<OneOf>,
    /// Timestamps only: read numbers as epoch seconds or milliseconds. Without it a number
    /// is refused: the two cannot be told apart reliably (1.7e9 s and 1.7e9 ms are both
    /// plausible dates), so the file says which.
    pub epoch: Option<Epoch>,
}

/// A typed value of a row, one per column, as the sink binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// `text`, `varchar(n)`, and `char(64)` digests.
    Text(String),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    /// Exact decimal text, valid input for `numeric`.
    Numeric(String),
    Bool(bool),
    Date(NaiveDate),
    Timestamptz(DateTime<Utc>),
    Uuid(uuid::Uuid),
    /// An address and its prefix length (32 or 128 unless masked to a prefix).
    Inet {
        addr: IpAddr,
        prefix: u8,
    },
    /// JSON text, valid input for `jsonb`.
    Jsonb(String),
}

impl Value {
    /// The value as PostgreSQL's text input reads it (`NULL` as `None`): for sinks that bind
    /// text and cast, and for tests.
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            Self::Null => return None,
            Self::Text(text) | Self::Numeric(text) | Self::Jsonb(text) => text.clone(),
            Self::Int16(n) => n.to_string(),
            Self::Int32(n) => n.to_string(),
            Self::Int64(n) => n.to_string(),
            Self::Float64(x) => x.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Date(date) => date.to_string(),
            Self::Timestamptz(at) => at.to_rfc3339(),
            Self::Uuid(id) => id.hyphenated().to_string(),
            Self::Inet { addr, prefix } => format!("{addr}/{prefix}"),
        })
    }
}

/// A value read from an event, before masking: the typed value, and for string inputs the
/// text exactly as the event has it (what an HMAC digests).
pub(super) struct Read<'c> {
    pub value: Value,
    pub text: Option<Cow<'c, str>>,
}

use crate::domain::stream::parse::capture_kind as kind;

fn number_of<'a>(capture: &'a Capture<'_>) -> Option<Cow<'a, Number>> {
    match capture {
        Capture::Number(number) => Some(Cow::Borrowed(number)),
        Capture::Json(serde_json::Value::Number(number)) => Some(Cow::Borrowed(number)),
        Capture::Raw(raw) => serde_json::from_str::<Number>(raw.get())
            .ok()
            .map(Cow::Owned),
        _ => None,
    }
}

fn str_of<'a>(capture: &'a Capture<'_>) -> Option<&'a str> {
    match capture {
        Capture::Str(text) => Some(text),
        Capture::Json(serde_json::Value::String(text)) => Some(text),
        _ => None,
    }
}

/// Reads one column's value from what the event holds at its path (never null here).
/// Without `keep`, a text's value is not copied (it is about to be digested).
pub(super) fn read<'c>(
    ty: ColumnType,
    rules: &Rules,
    capture: &'c Capture<'_>,
    field: &str,
    keep: bool,
) -> Result<Read<'c>, Problem> {
    let wrong_type = |expected| Problem::WrongType {
        field: field.to_owned(),
        found: kind(capture),
        expected,
    };
    let plain = |value| Read { value, text: None };
    match ty {
        ColumnType::Text { .. } | ColumnType::Digest => {
            let text = str_of(capture).ok_or_else(|| wrong_type(Expected::String))?;
            check_text(text, rules, field)?;
            Ok(Read {
                value: if keep {
                    Value::Text(text.to_owned())
                } else {
                    Value::Null
                },
                text: Some(Cow::Borrowed(text)),
            })
        }
        ColumnType::Inet => {
            let text = str_of(capture).ok_or_else(|| wrong_type(Expected::String))?;
            check_string_basics(text, field)?;
            let addr: IpAddr = text.parse().map_err(|_| Problem::InvalidIp {
                field: field.to_owned(),
            })?;
            Ok(Read {
                value: Value::Inet {
                    addr,
                    prefix: if addr.is_ipv4() { 32 } else { 128 },
                },
                text: Some(Cow::Borrowed(text)),
            })
        }
        ColumnType::Uuid => {
            let text = str_of(capture).ok_or_else(|| wrong_type(Expected::String))?;
            check_string_basics(text, field)?;
            let id = uuid::Uuid::try_parse(text)
                .ok()
                // PostgreSQL's uuid input takes hyphens or none, with or without braces,
                // but not the `urn:uuid:` form the crate also reads.
                .filter(|_| !text.starts_with("urn:"))
                .ok_or_else(|| Problem::InvalidFormat {
                    field: field.to_owned(),
                    what: "a UUID",
                })?;
            Ok(Read {
                value: Value::Uuid(id),
                text: Some(Cow::Borrowed(text)),
            })
        }
        ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt => {
            let number = number_of(capture).ok_or_else(|| wrong_type(Expected::Integer))?;
            let not_integer = || Problem::InvalidFormat {
                field: field.to_owned(),
                what: "an integer",
            };
            let (low, high) = ty.integer_range().expect("an integer type");
            let value = match (number.as_i64(), number.as_u64()) {
                (Some(n), _) => n,
                (None, Some(_)) => return Err(out_of_range(field, Side::Above, high)),
                (None, None) => return Err(not_integer()),
            };
            if value < low {
                return Err(out_of_range(field, Side::Below, low));
            }
            if value > high {
                return Err(out_of_range(field, Side::Above, high));
            }
            check_bounds_i64(value, rules, field)?;
            if let Some(OneOf::Integer(allowed)) = &rules.one_of
                && !allowed.contains(&value)
            {
                return Err(Problem::NotOneOf {
                    field: field.to_owned(),
                });
            }
            Ok(plain(match ty {
                ColumnType::SmallInt => Value::Int16(value as i16),
                ColumnType::Integer => Value::Int32(value as i32),
                _ => Value::Int64(value),
            }))
        }
        ColumnType::DoublePrecision => {
            let number = number_of(capture).ok_or_else(|| wrong_type(Expected::Number))?;
            let value = number.as_f64().ok_or_else(|| Problem::InvalidFormat {
                field: field.to_owned(),
                what: "a finite number",
            })?;
            check_bounds_f64(value, rules, field)?;
            Ok(plain(Value::Float64(value)))
        }
        ColumnType::Numeric { precision, scale } => {
            let text: Cow<'_, str> = match capture {
                Capture::Raw(raw) if raw.get().starts_with('"') => {
                    Cow::Owned(serde_json::from_str::<String>(raw.get()).map_err(|_| {
                        Problem::InvalidFormat {
                            field: field.to_owned(),
                            what: "a decimal number",
                        }
                    })?)
                }
                Capture::Raw(raw) if kind(capture) == JsonKind::Number => Cow::Borrowed(raw.get()),
                _ => match (str_of(capture), number_of(capture)) {
                    (Some(text), _) => Cow::Borrowed(text),
                    (None, Some(number)) => Cow::Owned(number.to_string()),
                    (None, None) => return Err(wrong_type(Expected::Decimal)),
                },
            };
            let digits = decimal_digits(&text).ok_or_else(|| Problem::InvalidFormat {
                field: field.to_owned(),
                what: "a decimal number",
            })?;
            if let (Some(p), Some(s)) = (precision, scale)
                && digits > p.saturating_sub(s) as usize
            {
                return Err(Problem::OutOfRange {
                    field: field.to_owned(),
                    side: Side::Above,
                    limit: format!("the range of numeric({p},{s})"),
                });
            }
            if rules.minimum.is_some() || rules.maximum.is_some() {
                let value: f64 = text.trim().parse().unwrap_or(f64::NAN);
                check_bounds_f64(value, rules, field)?;
            }
            Ok(plain(Value::Numeric(text.trim().to_owned())))
        }
        ColumnType::Boolean => match capture {
            Capture::Bool(b) | Capture::Json(serde_json::Value::Bool(b)) => {
                Ok(plain(Value::Bool(*b)))
            }
            _ => Err(wrong_type(Expected::Boolean)),
        },
        ColumnType::Date => {
            let text = str_of(capture).ok_or_else(|| wrong_type(Expected::String))?;
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .filter(|date| (1..=9999).contains(&date.year()))
                .ok_or_else(|| Problem::InvalidFormat {
                    field: field.to_owned(),
                    what: "a date (YYYY-MM-DD)",
                })?;
            Ok(plain(Value::Date(date)))
        }
        ColumnType::Timestamptz => Ok(plain(Value::Timestamptz(timestamp(
            capture,
            rules.epoch,
            field,
        )?))),
        ColumnType::Jsonb => match capture {
            Capture::Json(value) => {
                if contains_nul(value) {
                    return Err(Problem::ContainsNul {
                        field: field.to_owned(),
                    });
                }
                Ok(plain(Value::Jsonb(value.to_string())))
            }
            _ => Err(wrong_type(Expected::AnyJson)),
        },
    }
}

/// A timestamp: an RFC 3339 string, or with `epoch` also a number of seconds or
/// milliseconds. Years 1 to 9999 only: what RFC 3339 can write and PostgreSQL can store.
pub(super) fn timestamp(
    capture: &Capture<'_>,
    epoch: Option<Epoch>,
    field: &str,
) -> Result<DateTime<Utc>, Problem> {
    let invalid = || Problem::InvalidFormat {
        field: field.to_owned(),
        what: if epoch.is_some() {
            "an RFC 3339 timestamp or an epoch number in range"
        } else {
            "an RFC 3339 timestamp"
        },
    };
    let at = if let Some(text) = str_of(capture) {
        DateTime::parse_from_rfc3339(text)
            .map_err(|_| invalid())?
            .with_timezone(&Utc)
    } else if let (Some(unit), Some(number)) = (epoch, number_of(capture)) {
        let value = number.as_f64().ok_or_else(invalid)?;
        let millis = match unit {
            Epoch::Seconds => value * 1000.0,
            Epoch::Milliseconds => value,
        };
        // Whole milliseconds for integers; a fraction is kept to the microsecond.
        let micros = (millis * 1000.0).round();
        if !micros.is_finite() || micros.abs() > 1.0e17 {
            return Err(invalid());
        }
        DateTime::from_timestamp_micros(micros as i64).ok_or_else(invalid)?
    } else {
        return Err(Problem::WrongType {
            field: field.to_owned(),
            found: kind(capture),
            expected: Expected::Timestamp {
                epoch: epoch.is_some(),
            },
        });
    };
    if !(1..=9999).contains(&at.year()) {
        return Err(invalid());
    }
    Ok(at)
}

fn out_of_range(field: &str, side: Side, limit: i64) -> Problem {
    Problem::OutOfRange {
        field: field.to_owned(),
        side,
        limit: limit.to_string(),
    }
}

/// Empty and NUL: the checks every string type makes, in today's order.
fn check_string_basics(text: &str, field: &str) -> Result<(), Problem> {
    if text.is_empty() {
        return Err(Problem::Empty {
            field: field.to_owned(),
        });
    }
    if text.contains('\0') {
        return Err(Problem::ContainsNul {
            field: field.to_owned(),
        });
    }
    Ok(())
}

fn check_text(text: &str, rules: &Rules, field: &str) -> Result<(), Problem> {
    if text.is_empty() && rules.min_chars > 0 {
        return Err(Problem::Empty {
            field: field.to_owned(),
        });
    }
    if text.contains('\0') {
        return Err(Problem::ContainsNul {
            field: field.to_owned(),
        });
    }
    // Byte length bounds the character count from above: skip the count when it can't matter.
    if let Some(max_chars) = rules.max_chars
        && text.len() > max_chars as usize
        && text.chars().count() > max_chars as usize
    {
        return Err(Problem::TooLong {
            field: field.to_owned(),
            max_chars,
        });
    }
    if rules.min_chars > 1 && text.chars().count() < rules.min_chars as usize {
        return Err(Problem::TooShort {
            field: field.to_owned(),
            min_chars: rules.min_chars,
        });
    }
    if let Some(OneOf::Text(allowed)) = &rules.one_of
        && !allowed.iter().any(|one| one == text)
    {
        return Err(Problem::NotOneOf {
            field: field.to_owned(),
        });
    }
    Ok(())
}

fn check_bounds_i64(value: i64, rules: &Rules, field: &str) -> Result<(), Problem> {
    use std::cmp::Ordering::*;
    if let Some(minimum) = rules.minimum
        && minimum.compare_i64(value) == Less
    {
        return Err(bound(field, Side::Below, minimum));
    }
    if let Some(maximum) = rules.maximum
        && maximum.compare_i64(value) == Greater
    {
        return Err(bound(field, Side::Above, maximum));
    }
    Ok(())
}

fn check_bounds_f64(value: f64, rules: &Rules, field: &str) -> Result<(), Problem> {
    use std::cmp::Ordering::*;
    if let Some(minimum) = rules.minimum
        && (value.is_nan() || minimum.compare_f64(value) == Less)
    {
        return Err(bound(field, Side::Below, minimum));
    }
    if let Some(maximum) = rules.maximum
        && maximum.compare_f64(value) == Greater
    {
        return Err(bound(field, Side::Above, maximum));
    }
    Ok(())
}

fn bound(field: &str, side: Side, limit: Bound) -> Problem {
    Problem::OutOfRange {
        field: field.to_owned(),
        side,
        limit: limit.to_string(),
    }
}

/// The number of digits before the point of a decimal, if `text` is one: an optional sign,
/// digits with an optional fraction, an optional exponent (JSON's number grammar, plus a
/// leading `+` and leading zeros, which PostgreSQL's numeric input also takes).
pub(super) fn decimal_digits(text: &str) -> Option<usize> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => {
            let digits = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
            if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (mantissa, exponent.parse::<i64>().ok()?)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let significant = whole.trim_start_matches('0').len() as i64;
    let digits = if significant > 0 {
        significant + exponent
    } else if fraction.bytes().any(|b| b != b'0') {
        // 0.00123e3: the first significant digit is the fraction's after its zeros.
        let zeros = (fraction.len() - fraction.trim_start_matches('0').len()) as i64;
        exponent - zeros
    } else {
        0
    };
    let digits = digits.max(0);
    usize::try_from(digits).ok()
}

/// Whether any string (or key) inside holds a NUL, which PostgreSQL's jsonb refuses.
fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_files_write_them_and_print_as_postgres_does() {
        let cases = [
            ("text", "text", "text"),
            ("varchar(32)", "varchar(32)", "character varying(32)"),
            ("VARCHAR( 32 )", "varchar(32)", "character varying(32)"),
            ("smallint", "smallint", "smallint"),
            ("int4", "integer", "integer"),
            ("bigint", "bigint", "bigint"),
            ("double  precision", "double precision", "double precision"),
            ("numeric", "numeric", "numeric"),
            ("numeric(12)", "numeric(12,0)", "numeric(12,0)"),
            ("numeric(12,2)", "numeric(12,2)", "numeric(12,2)"),
            ("bool", "boolean", "boolean"),
            ("date", "date", "date"),
            ("timestamptz", "timestamptz", "timestamp with time zone"),
            ("uuid", "uuid", "uuid"),
            ("inet", "inet", "inet"),
            ("jsonb", "jsonb", "jsonb"),
        ];
        for (written, sql, formatted) in cases {
            let ty = ColumnType::parse(written).unwrap_or_else(|| panic!("{written}"));
            assert_eq!(
                (ty.sql().as_str(), ty.format_type().as_str()),
                (sql, formatted)
            );
        }
        for bad in [
            "strng",
            "varchar",
            "varchar(0)",
            "varchar(x)",
            "numeric(2,3)",
            "integer(4)",
            "char(64)",
            "json",
            "timestamp",
            "",
        ] {
            assert_eq!(ColumnType::parse(bad), None, "{bad}");
        }
        assert_eq!(ColumnType::Digest.sql(), "char(64)");
        assert_eq!(ColumnType::Digest.format_type(), "character(64)");
    }

    #[test]
    fn decimal_digits_counts_the_whole_part() {
        for (text, digits) in [
            ("0", Some(0)),
            ("12.50", Some(2)),
            ("-12.5", Some(2)),
            ("+007.5", Some(1)),
            ("1e3", Some(4)),
            ("1.5E-1", Some(0)),
            ("0.00123e3", Some(1)),
            (".5", Some(0)),
            ("5.", Some(1)),
            ("12345678901234567890.1", Some(20)),
        ] {
            assert_eq!(decimal_digits(text), digits, "{text}");
        }
        for bad in [
            "",
            ".",
            "-",
            "1e",
            "1e+",
            "abc",
            "1.2.3",
            "NaN",
            "Infinity",
            "1e9999999",
            "0x10",
        ] {
            assert_eq!(decimal_digits(bad), None, "{bad}");
        }
    }
}
