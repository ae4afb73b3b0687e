//! The stream file compiler: text → [`Stream`]s, or the first mistake with its file, line
//! and column and what was expected. Everything a message will need is decided here (paths,
//! types, rules, masks, the key), so the transform only follows it.

use std::ops::Range;

use toml::Spanned;

use crate::domain::envelope::EnvelopeMode;
use crate::domain::stream::error::{FileErrorKind as K, StreamFileError};
use crate::domain::stream::file::{ColumnDecl, FileDecl, Position, StreamDecl};
use crate::domain::stream::parse::{Mode, Overlap, PathTree};
use crate::domain::stream::schema::EventSchema;
use crate::domain::stream::types::{Bound, ColumnType, Epoch, MAX_VARCHAR, OneOf, Rules};
use crate::domain::stream::{
    Column, EventTime, KeyChoice, Mask, Meta, Source, Stream, TableName, ddl, display_path,
};

/// What the compiler may ask of its caller: the pure core reads neither the environment
/// nor files.
pub struct Lookups<'a> {
    /// An environment variable, for `${VAR}` in queue URLs.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// A JSON Schema's text by the name the file gives (a path the caller resolves against
    /// the stream file's directory); `Err` carries the caller's reason (not found, …).
    pub schema: &'a dyn Fn(&str) -> Result<String, String>,
}

/// The longest identifier PostgreSQL keeps whole.
const MAX_IDENTIFIER: usize = 63;
/// Added to every table by sqs2pg.
pub const INGESTED_AT: &str = "ingested_at";

/// Compiles a stream file. `file` names it in errors.
pub fn compile(
    text: &str,
    file: &str,
    lookups: &Lookups<'_>,
) -> Result<Vec<Stream>, StreamFileError> {
    let cx = Cx { text, file };
    let decl: FileDecl = toml::from_str(text).map_err(|error| {
        cx.error(
            error.span().unwrap_or(0..0),
            K::Toml(error.message().trim().replace('\n', " ")),
        )
    })?;
    if decl.stream.is_empty() {
        return Err(cx.error(0..0, K::NoStream));
    }
    let mut streams: Vec<Stream> = Vec::new();
    for stream in &decl.stream {
        let compiled = compile_stream(&cx, stream.get_ref(), lookups)?;
        let decl = stream.get_ref();
        if streams.iter().any(|other| other.name == compiled.name) {
            return Err(cx.error(decl.name.span(), K::DuplicateStream(compiled.name)));
        }
        if let Some(other) = streams.iter().find(|other| other.table == compiled.table) {
            return Err(cx.error(
                decl.table.span(),
                K::DuplicateTable {
                    table: decl.table.get_ref().clone(),
                    other: other.name.clone(),
                },
            ));
        }
        streams.push(compiled);
    }
    Ok(streams)
}

/// The file being compiled, to place errors in.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Cx<'_> {
    fn error(&self, span: Range<usize>, kind: K) -> StreamFileError {
        StreamFileError {
            file: self.file.to_owned(),
            position: Position::of(self.text, span.start),
            kind,
        }
    }
}

fn identifier(text: &str) -> bool {
    (1..=MAX_IDENTIFIER).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn compile_stream(
    cx: &Cx<'_>,
    decl: &StreamDecl,
    lookups: &Lookups<'_>,
) -> Result<Stream, StreamFileError> {
    let name = decl.name.get_ref();
    if !(1..=MAX_IDENTIFIER).contains(&name.len())
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(cx.error(
            decl.name.span(),
            K::BadIdentifier {
                what: "stream name",
                text: name.clone(),
            },
        ));
    }
    let queue_url = interpolate(cx, &decl.queue_url, lookups, "queue_url")?;
    // Optional: empty once interpolated (`${SQS2PG_DLQ_URL:-}` with it unset) means "the
    // source queue's redrive target", as an absent key does.
    let dead_letter_queue_url = decl
        .dead_letter_queue_url
        .as_ref()
        .map(|url| substitute(cx, url, lookups))
        .transpose()?
        .filter(|url| !url.trim().is_empty());
    let envelope = match &decl.envelope {
        None => EnvelopeMode::Auto,
        Some(mode) => mode
            .get_ref()
            .parse()
            .map_err(|_| cx.error(mode.span(), K::UnknownEnvelope(mode.get_ref().clone())))?,
    };
    let table = table_name(cx, &decl.table)?;
    let schema = match &decl.schema {
        None => None,
        Some(schema) => Some(load_schema(cx, schema, lookups)?),
    };

    let mut paths = PathTree::default();
    let mut columns: Vec<Column> = Vec::new();
    for column in &decl.column {
        let compiled = compile_column(cx, column.get_ref(), &mut paths, schema.as_ref())?;
        let column_decl = column.get_ref();
        if columns.iter().any(|other| other.name == compiled.name) {
            return Err(cx.error(column_decl.name.span(), K::DuplicateColumn(compiled.name)));
        }
        if compiled.source == Source::Meta(Meta::EnvelopeId)
            && !compiled.nullable
            && matches!(envelope, EnvelopeMode::Auto | EnvelopeMode::None)
        {
            return Err(cx.error(
                column_decl.from.span(),
                K::EnvelopeIdMaybeAbsent(envelope.as_str()),
            ));
        }
        if compiled.source == Source::Meta(Meta::EnvelopeId) && envelope == EnvelopeMode::None {
            return Err(cx.error(
                column_decl.from.span(),
                K::NoEnvelope {
                    what: "meta source `envelope_id`",
                    envelope: "none",
                },
            ));
        }
        columns.push(compiled);
    }
    if columns.is_empty() {
        return Err(cx.error(decl.name.span(), K::NoColumn(name.clone())));
    }

    let mut key_column = None;
    for (index, (column, column_decl)) in columns.iter().zip(&decl.column).enumerate() {
        if column.source != Source::Meta(Meta::Key) {
            continue;
        }
        let span = column_decl.get_ref().from.span();
        if let Some(first) = key_column {
            let first: &Column = &columns[first];
            return Err(cx.error(span, K::SecondKeyColumn(first.name.clone())));
        }
        if column.nullable {
            return Err(cx.error(span, K::KeyColumnRule("nullable (required = false)")));
        }
        key_column = Some(index);
    }
    let key_column =
        key_column.ok_or_else(|| cx.error(decl.name.span(), K::NoKeyColumn(name.clone())))?;

    let key = match &decl.key {
        None => KeyChoice::Auto,
        Some(key) => key_choice(cx, key, &mut paths, schema.as_ref())?,
    };
    if key == KeyChoice::EnvelopeId && envelope == EnvelopeMode::None {
        let span = decl.key.as_ref().map_or(0..0, Spanned::span);
        return Err(cx.error(
            span,
            K::NoEnvelope {
                what: "key = \"envelope_id\"",
                envelope: "none",
            },
        ));
    }
    let event_time = match &decl.event_time {
        None => EventTime::SentTimestamp,
        Some(time) => event_time(cx, time, &mut paths, schema.as_ref())?,
    };

    let masks_with_hmac = columns
        .iter()
        .any(|column| column.mask.as_ref().is_some_and(Mask::uses_hmac));
    let records_key_id = columns
        .iter()
        .any(|column| column.source == Source::Meta(Meta::HmacKeyId));
    if masks_with_hmac && !records_key_id {
        return Err(cx.error(decl.name.span(), K::NoKeyIdColumn(name.clone())));
    }
    for (column, column_decl) in columns.iter().zip(&decl.column) {
        if column.name == INGESTED_AT {
            continue;
        }
        if column.index {
            let index = ddl::index_name(&table, &column.name);
            if index.len() > MAX_IDENTIFIER {
                return Err(cx.error(
                    column_decl.get_ref().name.span(),
                    K::IndexNameTooLong(index),
                ));
            }
        }
    }
    let ingested_index = ddl::index_name(&table, INGESTED_AT);
    if ingested_index.len() > MAX_IDENTIFIER {
        return Err(cx.error(decl.table.span(), K::IndexNameTooLong(ingested_index)));
    }

    Ok(Stream {
        name: name.clone(),
        queue_url,
        dead_letter_queue_url,
        envelope,
        table,
        key,
        event_time,
        columns,
        key_column,
        paths,
        schema,
    })
}

/// Fills `${VAR}` from the environment; `$$` is a `$`.
/// `value` with its `${VAR}`s filled in; refused if that leaves it empty.
fn interpolate(
    cx: &Cx<'_>,
    value: &Spanned<String>,
    lookups: &Lookups<'_>,
    what: &'static str,
) -> Result<String, StreamFileError> {
    let out = substitute(cx, value, lookups)?;
    if out.trim().is_empty() {
        return Err(cx.error(value.span(), K::Empty(what)));
    }
    Ok(out)
}

/// `value` with `${VAR}` replaced by the variable (an unset one is an error), `${VAR:-text}`
/// by the variable or, unset or empty, `text`, and `$$` by `$`.
fn substitute(
    cx: &Cx<'_>,
    value: &Spanned<String>,
    lookups: &Lookups<'_>,
) -> Result<String, StreamFileError> {
    let text = value.get_ref();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let close = inner
                .find('}')
                .ok_or_else(|| cx.error(value.span(), K::UnclosedVariable))?;
            let (variable, default) = match inner[..close].split_once(":-") {
                Some((variable, default)) => (variable, Some(default)),
                None => (&inner[..close], None),
            };
            let found = match ((lookups.env)(variable), default) {
                (Some(found), Some(default)) if found.is_empty() => default.to_owned(),
                (Some(found), _) => found,
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(cx.error(value.span(), K::UnsetVariable(variable.to_owned())));
                }
            };
            out.push_str(&found);
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn table_name(cx: &Cx<'_>, table: &Spanned<String>) -> Result<TableName, StreamFileError> {
    let bad = || {
        cx.error(
            table.span(),
            K::BadIdentifier {
                what: "table",
                text: table.get_ref().clone(),
            },
        )
    };
    let parts: Vec<&str> = table.get_ref().split('.').collect();
    if !parts.iter().all(|part| identifier(part)) {
        return Err(bad());
    }
    match parts.as_slice() {
        [name] => Ok(TableName {
            schema: None,
            name: (*name).to_owned(),
        }),
        [schema, name] => Ok(TableName {
            schema: Some((*schema).to_owned()),
            name: (*name).to_owned(),
        }),
        _ => Err(bad()),
    }
}

fn load_schema(
    cx: &Cx<'_>,
    name: &Spanned<String>,
    lookups: &Lookups<'_>,
) -> Result<EventSchema, StreamFileError> {
    let at = |kind| cx.error(name.span(), kind);
    let text = (lookups.schema)(name.get_ref()).map_err(|error| {
        at(K::SchemaUnreadable {
            name: name.get_ref().clone(),
            error,
        })
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
        at(K::SchemaNotJson {
            name: name.get_ref().clone(),
            error: error.to_string(),
        })
    })?;
    EventSchema::compile(value).map_err(|error| {
        at(K::SchemaInvalid {
            name: name.get_ref().clone(),
            error,
        })
    })
}

/// A path: `"a.b.c"`, or `["a.b", "c"]` for names holding a dot.
fn path(
    cx: &Cx<'_>,
    value: &toml::Value,
    span: Range<usize>,
) -> Result<Vec<String>, StreamFileError> {
    let bad = |text: String| cx.error(span.clone(), K::BadPath(text));
    let names: Vec<String> = match value {
        toml::Value::String(text) => text.split('.').map(str::to_owned).collect(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(value.to_string()))?,
        other => return Err(bad(other.to_string())),
    };
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(bad(match value {
            toml::Value::String(text) => text.clone(),
            other => other.to_string(),
        }));
    }
    Ok(names)
}

/// Adds a path to the tree, checked against the schema.
fn read_path(
    cx: &Cx<'_>,
    names: &[String],
    span: Range<usize>,
    mode: Mode,
    paths: &mut PathTree,
    schema: Option<&EventSchema>,
) -> Result<usize, StreamFileError> {
    if let Some(schema) = schema
        && let Err(why) = schema.lookup(names)
    {
        return Err(cx.error(
            span,
            K::NeverMatches {
                path: display_path(names),
                why,
            },
        ));
    }
    paths.add(names, mode).map_err(|Overlap { whole }| {
        cx.error(
            span,
            K::Overlap {
                path: display_path(names),
                whole: display_path(&whole),
            },
        )
    })
}

/// A table of one key, `{ key = value }`, as (key, value).
fn single_entry(value: &toml::Value) -> Option<(&str, &toml::Value)> {
    let table = value.as_table()?;
    let mut entries = table.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Some((key.as_str(), value)),
        _ => None,
    }
}

fn key_choice(
    cx: &Cx<'_>,
    key: &Spanned<toml::Value>,
    paths: &mut PathTree,
    schema: Option<&EventSchema>,
) -> Result<KeyChoice, StreamFileError> {
    match key.get_ref() {
        toml::Value::String(text) => match text.as_str() {
            "auto" => Ok(KeyChoice::Auto),
            "sqs_message_id" => Ok(KeyChoice::SqsMessageId),
            "envelope_id" => Ok(KeyChoice::EnvelopeId),
            other => Err(cx.error(key.span(), K::UnknownKey(other.to_owned()))),
        },
        value => match single_entry(value) {
            Some(("field", field)) => {
                let names = path(cx, field, key.span())?;
                let slot = read_path(cx, &names, key.span(), Mode::Scalar, paths, schema)?;
                Ok(KeyChoice::Field { path: names, slot })
            }
            _ => Err(cx.error(key.span(), K::UnknownKey(value.to_string()))),
        },
    }
}

fn event_time(
    cx: &Cx<'_>,
    time: &Spanned<toml::Value>,
    paths: &mut PathTree,
    schema: Option<&EventSchema>,
) -> Result<EventTime, StreamFileError> {
    let expected = || {
        cx.error(
            time.span(),
            K::Expected {
                what: "event_time",
                expected: "\"sent_timestamp\" or { field = \"path\" } (with epoch = \"seconds\" or \"milliseconds\" to read numbers)",
            },
        )
    };
    match time.get_ref() {
        toml::Value::String(text) if text == "sent_timestamp" => Ok(EventTime::SentTimestamp),
        toml::Value::Table(table) => {
            let field = table.get("field").ok_or_else(expected)?;
            if table.keys().any(|key| key != "field" && key != "epoch") {
                return Err(expected());
            }
            let epoch = match table.get("epoch") {
                None => None,
                Some(toml::Value::String(unit)) => Some(epoch(cx, unit, time.span())?),
                Some(_) => return Err(expected()),
            };
            let names = path(cx, field, time.span())?;
            let slot = read_path(cx, &names, time.span(), Mode::Scalar, paths, schema)?;
            Ok(EventTime::Field {
                path: names,
                slot,
                epoch,
            })
        }
        _ => Err(expected()),
    }
}

fn epoch(cx: &Cx<'_>, unit: &str, span: Range<usize>) -> Result<Epoch, StreamFileError> {
    match unit {
        "seconds" => Ok(Epoch::Seconds),
        "milliseconds" => Ok(Epoch::Milliseconds),
        other => Err(cx.error(span, K::UnknownEpoch(other.to_owned()))),
    }
}

fn compile_column(
    cx: &Cx<'_>,
    decl: &ColumnDecl,
    paths: &mut PathTree,
    schema: Option<&EventSchema>,
) -> Result<Column, StreamFileError> {
    let name = decl.name.get_ref().clone();
    if !identifier(&name) {
        return Err(cx.error(
            decl.name.span(),
            K::BadIdentifier {
                what: "column name",
                text: name,
            },
        ));
    }
    if name == INGESTED_AT {
        return Err(cx.error(decl.name.span(), K::ReservedColumn(name)));
    }
    let declared_type = decl
        .ty
        .as_ref()
        .map(|ty| {
            ColumnType::parse(ty.get_ref())
                .ok_or_else(|| cx.error(ty.span(), K::UnknownType(ty.get_ref().clone())))
        })
        .transpose()?;
    let index = decl.index.as_ref().is_some_and(|index| *index.get_ref());
    let required = decl.required.as_ref().map(|required| *required.get_ref());

    // Meta sources: their type is theirs, and rules and masks have nothing to check.
    if let Some(("meta", meta)) = single_entry(decl.from.get_ref()) {
        let text = meta.as_str().unwrap_or_default();
        let meta = Meta::parse(text)
            .ok_or_else(|| cx.error(decl.from.span(), K::UnknownMeta(meta.to_string())))?;
        for (rule, span) in [
            ("min_length", decl.min_length.as_ref().map(Spanned::span)),
            ("max_length", decl.max_length.as_ref().map(Spanned::span)),
            ("minimum", decl.minimum.as_ref().map(Spanned::span)),
            ("maximum", decl.maximum.as_ref().map(Spanned::span)),
            ("one_of", decl.one_of.as_ref().map(Spanned::span)),
            ("epoch", decl.epoch.as_ref().map(Spanned::span)),
            ("mask", decl.mask.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                return Err(cx.error(
                    span,
                    K::RuleNotForMeta {
                        rule,
                        meta: meta.name(),
                    },
                ));
            }
        }
        let (natural, longest) = meta.natural_type();
        let ty = match declared_type {
            None => match (natural, longest) {
                // hmac_key_id as today's column: varchar(32).
                (ColumnType::Text { .. }, Some(longest)) if meta == Meta::HmacKeyId => {
                    ColumnType::Text {
                        max_chars: Some(longest),
                    }
                }
                _ => natural,
            },
            Some(ColumnType::Text { max_chars }) if matches!(natural, ColumnType::Text { .. }) => {
                if let (Some(max), Some(longest)) = (max_chars, longest)
                    && max < longest
                {
                    return Err(cx.error(
                        decl.ty.as_ref().map_or(0..0, Spanned::span),
                        K::MetaType {
                            meta: meta.name(),
                            expected: format!("text of up to {longest} characters"),
                            found: ColumnType::Text { max_chars }.sql(),
                        },
                    ));
                }
                ColumnType::Text { max_chars }
            }
            Some(ty) if ty == natural => ty,
            Some(ty) => {
                return Err(cx.error(
                    decl.ty.as_ref().map_or(0..0, Spanned::span),
                    K::MetaType {
                        meta: meta.name(),
                        expected: match natural {
                            ColumnType::Date => "a date",
                            ColumnType::Timestamptz => "a timestamptz",
                            _ => "text",
                        }
                        .to_owned(),
                        found: ty.sql(),
                    },
                ));
            }
        };
        return Ok(Column {
            name,
            source: Source::Meta(meta),
            ty,
            stored: ty,
            nullable: required == Some(false),
            rules: Rules::default(),
            mask: None,
            index,
        });
    }

    let names = path(cx, decl.from.get_ref(), decl.from.span()).map_err(|error| {
        if decl.from.get_ref().is_table() {
            cx.error(
                decl.from.span(),
                K::Expected {
                    what: "from",
                    expected: "a path (\"a.b\"), an array of names ([\"a.b\", \"c\"]), or { meta = \"…\" }",
                },
            )
        } else {
            error
        }
    })?;
    let described = match schema {
        Some(schema) => schema.lookup(&names).map_err(|why| {
            cx.error(
                decl.from.span(),
                K::NeverMatches {
                    path: display_path(&names),
                    why,
                },
            )
        })?,
        None => None,
    };
    let mut ty = match (declared_type, &described) {
        (Some(ty), _) => ty,
        (None, Some(described)) => described.ty.map_err(|why| {
            cx.error(
                decl.name.span(),
                K::SchemaTooVague {
                    column: name.clone(),
                    path: display_path(&names),
                    why,
                },
            )
        })?,
        (None, None) => return Err(cx.error(decl.name.span(), K::NoType(name))),
    };
    let nullable = match (required, &described) {
        (Some(required), _) => !required,
        (None, Some(described)) => !described.required,
        (None, None) => false,
    };

    let mut rules = Rules {
        min_chars: 1,
        ..Rules::default()
    };
    let not_for_type = |rule: &'static str, span: Range<usize>, ty: ColumnType| {
        cx.error(span, K::RuleNotForType { rule, ty: ty.sql() })
    };
    let text_type = matches!(ty, ColumnType::Text { .. });
    if let Some(min) = &decl.min_length {
        if !text_type {
            return Err(not_for_type("min_length", min.span(), ty));
        }
        rules.min_chars = u32::try_from(*min.get_ref())
            .ok()
            .filter(|min| *min <= MAX_VARCHAR)
            .ok_or_else(|| {
                cx.error(
                    min.span(),
                    K::BadRule(format!("min_length must be 0 to {MAX_VARCHAR}")),
                )
            })?;
    }
    if let ColumnType::Text { max_chars } = ty {
        rules.max_chars = max_chars;
    }
    if let Some(max) = &decl.max_length {
        if !text_type {
            return Err(not_for_type("max_length", max.span(), ty));
        }
        let max_chars = u32::try_from(*max.get_ref())
            .ok()
            .filter(|max| (1..=MAX_VARCHAR).contains(max))
            .ok_or_else(|| {
                cx.error(
                    max.span(),
                    K::BadRule(format!("max_length must be 1 to {MAX_VARCHAR}")),
                )
            })?;
        if let Some(declared) = rules.max_chars
            && declared != max_chars
        {
            return Err(cx.error(
                max.span(),
                K::BadRule(format!(
                    "max_length = {max_chars} disagrees with the type's limit of {declared}; give one of them"
                )),
            ));
        }
        rules.max_chars = Some(max_chars);
        ty = ColumnType::Text {
            max_chars: Some(max_chars),
        };
    }
    if let (Some(max), Some(min)) = (rules.max_chars, &decl.min_length)
        && rules.min_chars > max
    {
        return Err(cx.error(
            min.span(),
            K::BadRule(format!("min_length is more than the limit of {max}")),
        ));
    }
    for (rule, bound, slot) in [
        ("minimum", &decl.minimum, &mut rules.minimum),
        ("maximum", &decl.maximum, &mut rules.maximum),
    ] {
        if let Some(bound) = bound {
            if !ty.is_number() {
                return Err(not_for_type(rule, bound.span(), ty));
            }
            *slot = Some(match bound.get_ref() {
                toml::Value::Integer(n) => Bound::Int(*n),
                toml::Value::Float(x) if x.is_finite() => Bound::Float(*x),
                _ => {
                    return Err(cx.error(
                        bound.span(),
                        K::Expected {
                            what: rule,
                            expected: "a finite number",
                        },
                    ));
                }
            });
        }
    }
    if let (Some(min), Some(max), Some(span)) = (
        rules.minimum,
        rules.maximum,
        decl.minimum.as_ref().map(Spanned::span),
    ) && bound_value(min) > bound_value(max)
    {
        return Err(cx.error(span, K::BadRule("minimum is more than maximum".to_owned())));
    }
    if let Some(one_of) = &decl.one_of {
        let values = one_of.get_ref();
        let expected = |expected| {
            cx.error(
                one_of.span(),
                K::Expected {
                    what: "one_of",
                    expected,
                },
            )
        };
        rules.one_of = Some(if text_type {
            OneOf::Text(
                values
                    .iter()
                    .map(|value| value.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .filter(|values: &Vec<String>| !values.is_empty())
                    .ok_or_else(|| expected("a non-empty array of strings"))?,
            )
        } else if ty.is_integer() {
            OneOf::Integer(
                values
                    .iter()
                    .map(toml::Value::as_integer)
                    .collect::<Option<_>>()
                    .filter(|values: &Vec<i64>| !values.is_empty())
                    .ok_or_else(|| expected("a non-empty array of integers"))?,
            )
        } else {
            return Err(not_for_type("one_of", one_of.span(), ty));
        });
    }
    if let Some(unit) = &decl.epoch {
        if ty != ColumnType::Timestamptz {
            return Err(not_for_type("epoch", unit.span(), ty));
        }
        rules.epoch = Some(epoch(cx, unit.get_ref(), unit.span())?);
    }
    let mask = match &decl.mask {
        None => None,
        Some(mask) => Some(compile_mask(cx, mask, ty)?),
    };
    let mode = match ty {
        ColumnType::Jsonb => Mode::Json,
        ColumnType::Numeric { .. } => Mode::Raw,
        _ => Mode::Scalar,
    };
    let slot = read_path(cx, &names, decl.from.span(), mode, paths, None)?;
    let stored = if mask == Some(Mask::Hmac) {
        ColumnType::Digest
    } else {
        ty
    };
    Ok(Column {
        name,
        source: Source::Field {
            name: display_path(&names),
            path: names,
            slot,
        },
        ty,
        stored,
        nullable,
        rules,
        mask,
        index,
    })
}

fn bound_value(bound: Bound) -> f64 {
    match bound {
        Bound::Int(n) => n as f64,
        Bound::Float(x) => x,
    }
}

fn compile_mask(
    cx: &Cx<'_>,
    mask: &Spanned<toml::Value>,
    ty: ColumnType,
) -> Result<Mask, StreamFileError> {
    let unknown = || cx.error(mask.span(), K::UnknownMask);
    let not_for = |name: &'static str, hint: &'static str| {
        cx.error(
            mask.span(),
            K::MaskNotForType {
                mask: name,
                ty: ty.sql(),
                hint,
            },
        )
    };
    match mask.get_ref() {
        toml::Value::String(name) if name == "hmac" => {
            if matches!(
                ty,
                ColumnType::Text { .. } | ColumnType::Inet | ColumnType::Uuid
            ) {
                Ok(Mask::Hmac)
            } else {
                Err(not_for(
                    "hmac",
                    "it digests text, inet and uuid values; inside a jsonb column give { hmac = [\"path\"] }",
                ))
            }
        }
        toml::Value::String(name) if name == "drop" => {
            Err(cx.error(mask.span(), K::DropWholeColumn))
        }
        toml::Value::Table(table) if table.contains_key("ip_prefix") => {
            if table.len() != 1 {
                return Err(unknown());
            }
            if ty != ColumnType::Inet {
                return Err(not_for("ip_prefix", "it cuts inet values to their network"));
            }
            let prefixes = table["ip_prefix"].as_table().ok_or_else(unknown)?;
            if prefixes.keys().any(|key| key != "v4" && key != "v6") {
                return Err(unknown());
            }
            let prefix = |key: &str, default: u8, max: u8| -> Result<u8, StreamFileError> {
                match prefixes.get(key) {
                    None => Ok(default),
                    Some(value) => value
                        .as_integer()
                        .and_then(|n| u8::try_from(n).ok())
                        .filter(|n| *n <= max)
                        .ok_or_else(|| {
                            cx.error(
                                mask.span(),
                                K::BadRule(format!(
                                    "ip_prefix {key} must be an integer from 0 to {max}"
                                )),
                            )
                        }),
                }
            };
            Ok(Mask::IpPrefix {
                v4: prefix("v4", 24, 32)?,
                v6: prefix("v6", 48, 128)?,
            })
        }
        toml::Value::Table(table)
            if !table.is_empty() && table.keys().all(|key| key == "drop" || key == "hmac") =>
        {
            if ty != ColumnType::Jsonb {
                return Err(not_for(
                    "drop/hmac paths",
                    "they apply to fields inside a jsonb column",
                ));
            }
            let list = |key: &str| -> Result<Vec<Vec<String>>, StreamFileError> {
                match table.get(key) {
                    None => Ok(Vec::new()),
                    Some(toml::Value::Array(items)) => items
                        .iter()
                        .map(|item| path(cx, item, mask.span()))
                        .collect(),
                    Some(_) => Err(unknown()),
                }
            };
            Ok(Mask::Json {
                drop: list("drop")?,
                hmac: list("hmac")?,
            })
        }
        _ => Err(unknown()),
    }
}
