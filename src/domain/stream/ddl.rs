//! What a stream's table must be, and how a live table differs from it. Pure: the caller
//! reads the live table (`information_schema`, `pg_catalog`) and runs the statements.
//!
//! - [`Stream::ddl`]: `CREATE TABLE IF NOT EXISTS` with the key column as primary key and
//!   `ingested_at`, then the indexes.
//! - [`plan`]: the differences from a live table. Additive ones come with the SQL that
//!   applies them without rewriting or losing data (a new nullable column, a wider
//!   `varchar`, a dropped NOT NULL, a missing index); the others are refused, each with the
//!   statement the user would have to run and why sqs2pg does not run it. Columns the table
//!   has and the file does not are left alone, unless they would make every insert fail
//!   (NOT NULL without a default).
//! - [`Stream::insert_statement`]: the batch insert, one array per column.

use std::fmt;

use crate::domain::stream::compile::INGESTED_AT;
use crate::domain::stream::types::ColumnType;
use crate::domain::stream::{Column, Stream, TableName};

/// PostgreSQL's reserved key words (SQL Key Words, "reserved" and "reserved (can be function
/// or type)"): an identifier spelled as one must be quoted.
const RESERVED: [&str; 99] = [
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
];

/// An identifier as SQL must write it: quoted when it is a reserved word. Identifiers are
/// validated (`[a-z_][a-z0-9_]*`), so no other quoting is ever needed.
pub fn quoted(identifier: &str) -> String {
    if RESERVED.contains(&identifier) {
        format!("\"{identifier}\"")
    } else {
        identifier.to_owned()
    }
}

/// The index of a column: `<table>_<column>_idx`, as the migrations name theirs.
pub fn index_name(table: &TableName, column: &str) -> String {
    format!("{}_{column}_idx", table.name)
}

impl Column {
    fn definition(&self) -> String {
        let null = if self.nullable { "" } else { " NOT NULL" };
        format!("{} {}{null}", quoted(&self.name), self.stored.sql())
    }
}

impl Stream {
    /// The table's `CREATE TABLE IF NOT EXISTS` and its `CREATE INDEX IF NOT EXISTS`s.
    pub fn ddl(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|column| format!("    {}", column.definition()))
            .collect();
        lines.push(format!(
            "    {INGESTED_AT} timestamptz NOT NULL DEFAULT now()"
        ));
        lines.push(format!(
            "    PRIMARY KEY ({})",
            quoted(&self.columns[self.key_column].name)
        ));
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
            self.table,
            lines.join(",\n")
        )];
        statements.extend(self.indexes().map(|(name, column)| {
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                quoted(&name),
                self.table,
                quoted(column)
            )
        }));
        statements
    }

    /// (index name, column) of every index the table must have: `index = true` columns and
    /// `ingested_at` (`sqs2pg status` reads the newest rows).
    fn indexes(&self) -> impl Iterator<Item = (String, &str)> {
        self.columns
            .iter()
            .filter(|column| column.index && column.name != INGESTED_AT)
            .map(|column| column.name.as_str())
            .chain([INGESTED_AT])
            .map(|column| (index_name(&self.table, column), column))
    }

    /// The batch insert: `$n` is an array of column n's values, bound as
    /// [`ColumnType::bind_array`] says; rows whose key is already there are skipped.
    pub fn insert_statement(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| quoted(&c.name)).collect();
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| format!("${}::{}", index + 1, column.stored.bind_array()))
            .collect();
        let selected: Vec<String> = self
            .columns
            .iter()
            .map(|column| match column.stored.cast_from_bound() {
                Some(cast) => format!("u.{}::{cast}", quoted(&column.name)),
                None => format!("u.{}", quoted(&column.name)),
            })
            .collect();
        format!(
            "INSERT INTO {table} ({names}) SELECT {selected} FROM unnest({arrays}) AS u({names}) ON CONFLICT ({key}) DO NOTHING",
            table = self.table,
            names = names.join(", "),
            selected = selected.join(", "),
            arrays = arrays.join(", "),
            key = quoted(&self.columns[self.key_column].name),
        )
    }
}

impl Stream {
    /// The canary, two statements run in a transaction that is rolled back: whether the
    /// table holds a row, and the newest row written again, through the table's
    /// constraints and triggers. Its key conflicts with itself, so it changes nothing even
    /// if it were committed; whether it is accepted says whether the table takes rows.
    pub fn canary_statements(&self) -> (String, String) {
        let names: Vec<String> = self.columns.iter().map(|c| quoted(&c.name)).collect();
        let names = names.join(", ");
        (
            format!("SELECT EXISTS (SELECT 1 FROM {})", self.table),
            format!(
                "INSERT INTO {table} ({names}) SELECT {names} FROM {table} ORDER BY {INGESTED_AT} DESC LIMIT 1 ON CONFLICT ({key}) DO NOTHING",
                table = self.table,
                key = quoted(&self.columns[self.key_column].name),
            ),
        )
    }
}

impl ColumnType {
    /// The array type a sink binds this column's values as: native where tokio-postgres
    /// binds the Rust type directly, text where PostgreSQL casts (numeric, inet with a
    /// prefix, jsonb), so no optional driver feature is needed for those.
    pub fn bind_array(&self) -> &'static str {
        match self {
            Self::SmallInt => "int2[]",
            Self::Integer => "int4[]",
            Self::BigInt => "int8[]",
            Self::DoublePrecision => "float8[]",
            Self::Boolean => "bool[]",
            Self::Date => "date[]",
            Self::Timestamptz => "timestamptz[]",
            Self::Uuid => "uuid[]",
            Self::Text { .. } | Self::Digest | Self::Numeric { .. } | Self::Inet | Self::Jsonb => {
                "text[]"
            }
        }
    }

    /// The cast from the bound text to the column's type, where it is bound as text.
    fn cast_from_bound(&self) -> Option<&'static str> {
        match self {
            Self::Numeric { .. } => Some("numeric"),
            Self::Inet => Some("inet"),
            Self::Jsonb => Some("jsonb"),
            _ => None,
        }
    }
}

/// A table as the database has it (the caller reads `information_schema.columns` and
/// `pg_index`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    pub columns: Vec<LiveColumn>,
    /// The primary key's columns, in order; empty without one.
    pub primary_key: Vec<String>,
    /// Every other unique constraint or unique index, by its columns.
    pub unique_keys: Vec<Vec<String>>,
    /// Every index, by its columns (the primary and unique ones may be listed too).
    pub indexes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveColumn {
    pub name: String,
    /// As `format_type(atttypid, atttypmod)` prints it: `character varying(32)`.
    pub data_type: String,
    pub nullable: bool,
    pub has_default: bool,
}

/// How a live table differs from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    /// Safe to apply: `setup` runs these and prints them.
    pub additive: Vec<Change>,
    /// Never applied: each says what the user would have to run, and why sqs2pg does not.
    pub refused: Vec<Refusal>,
}

impl TablePlan {
    /// The table is as the stream needs it.
    pub fn is_empty(&self) -> bool {
        self.additive.is_empty() && self.refused.is_empty()
    }
}

/// An additive change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub column: String,
    pub difference: String,
    pub sql: String,
}

/// A difference sqs2pg will not resolve itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub column: String,
    pub difference: String,
    /// What the user would have to run (after reading `why`).
    pub statement: String,
    pub why: &'static str,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column `{}`: {}: {}",
            self.column, self.difference, self.sql
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column `{}`: {}; not applied: {}; to apply it yourself: {}",
            self.column, self.difference, self.why, self.statement
        )
    }
}

/// The differences between `stream`'s table and `live`, the table as it is.
pub fn plan(stream: &Stream, live: &LiveTable) -> TablePlan {
    let table = stream.table.to_string();
    let mut plan = TablePlan {
        table: table.clone(),
        ..TablePlan::default()
    };
    let find = |name: &str| live.columns.iter().find(|column| column.name == name);
    let ingested_at = Column {
        name: INGESTED_AT.to_owned(),
        source: crate::domain::stream::Source::Meta(crate::domain::stream::Meta::EventTime),
        ty: ColumnType::Timestamptz,
        stored: ColumnType::Timestamptz,
        nullable: false,
        rules: Default::default(),
        mask: None,
        index: false,
    };
    for column in stream.columns.iter().chain([&ingested_at]) {
        let name = quoted(&column.name);
        let wanted = column.stored.format_type();
        let Some(found) = find(&column.name) else {
            if column.name == INGESTED_AT {
                plan.additive.push(Change {
                    column: column.name.clone(),
                    difference: "missing".to_owned(),
                    sql: format!(
                        "ALTER TABLE {table} ADD COLUMN {INGESTED_AT} timestamptz NOT NULL DEFAULT now()"
                    ),
                });
            } else if column.nullable {
                plan.additive.push(Change {
                    column: column.name.clone(),
                    difference: "missing".to_owned(),
                    sql: format!("ALTER TABLE {table} ADD COLUMN {}", column.definition()),
                });
            } else {
                plan.refused.push(Refusal {
                    column: column.name.clone(),
                    difference: format!("missing, and NOT NULL ({wanted})"),
                    statement: format!(
                        "ALTER TABLE {table} ADD COLUMN {name} {}; UPDATE {table} SET {name} = …; ALTER TABLE {table} ALTER COLUMN {name} SET NOT NULL",
                        column.stored.sql()
                    ),
                    why: "existing rows have no value for it; add it nullable, fill it, then set NOT NULL, or make it required = false",
                });
            }
            continue;
        };
        if found.data_type != wanted {
            match widening(&found.data_type, &column.stored) {
                true => plan.additive.push(Change {
                    column: column.name.clone(),
                    difference: format!("{} is now {wanted}", found.data_type),
                    sql: format!(
                        "ALTER TABLE {table} ALTER COLUMN {name} TYPE {}",
                        column.stored.sql()
                    ),
                }),
                false => plan.refused.push(Refusal {
                    column: column.name.clone(),
                    difference: format!("is {} in the table, {wanted} in the file", found.data_type),
                    statement: format!(
                        "ALTER TABLE {table} ALTER COLUMN {name} TYPE {} USING {name}::{}",
                        column.stored.sql(),
                        column.stored.sql()
                    ),
                    why: "changing a column's type rewrites the table under an exclusive lock, and can fail or change stored values",
                }),
            }
        }
        match (found.nullable, column.nullable) {
            (false, true) => plan.additive.push(Change {
                column: column.name.clone(),
                difference: "is NOT NULL in the table, nullable in the file".to_owned(),
                sql: format!("ALTER TABLE {table} ALTER COLUMN {name} DROP NOT NULL"),
            }),
            (true, false) => plan.refused.push(Refusal {
                column: column.name.clone(),
                difference: "is nullable in the table, NOT NULL in the file".to_owned(),
                statement: format!("ALTER TABLE {table} ALTER COLUMN {name} SET NOT NULL"),
                why: "it fails if any row holds NULL, and scans the whole table under an exclusive lock",
            }),
            _ => {}
        }
    }
    let key = &stream.columns[stream.key_column].name;
    let keyed = live.primary_key == [key.clone()]
        || live
            .unique_keys
            .iter()
            .any(|unique| unique == std::slice::from_ref(key));
    if !keyed {
        plan.refused.push(Refusal {
            column: key.clone(),
            difference: if live.primary_key.is_empty() {
                "the idempotency key has no primary or unique key".to_owned()
            } else {
                format!(
                    "the primary key is ({}), not the idempotency key",
                    live.primary_key.join(", ")
                )
            },
            statement: format!(
                "CREATE UNIQUE INDEX CONCURRENTLY {} ON {table} ({})",
                quoted(&format!("{}_{key}_key", stream.table.name)),
                quoted(key)
            ),
            why: "inserts skip a message seen before by this key (ON CONFLICT); building it fails if the table already holds a key twice",
        });
    }
    for (index, column) in stream.indexes() {
        let exists = live
            .indexes
            .iter()
            .chain(&live.unique_keys)
            .chain([&live.primary_key])
            .any(|columns| columns.first().map(String::as_str) == Some(column));
        if !exists {
            plan.additive.push(Change {
                column: column.to_owned(),
                difference: "has no index".to_owned(),
                sql: format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                    quoted(&index),
                    quoted(column)
                ),
            });
        }
    }
    let in_file = |name: &str| name == INGESTED_AT || stream.columns.iter().any(|c| c.name == name);
    for extra in live.columns.iter().filter(|column| !in_file(&column.name)) {
        if !extra.nullable && !extra.has_default {
            plan.refused.push(Refusal {
                column: extra.name.clone(),
                difference: "is in the table, NOT NULL without a default, and not in the file".to_owned(),
                statement: format!(
                    "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
                    quoted(&extra.name)
                ),
                why: "the stream does not fill it, so every insert would fail; drop its NOT NULL, give it a default, or add it to the file",
            });
        }
    }
    plan
}

/// Whether changing `live` (a `format_type()` text) to `wanted` rewrites nothing:
/// `varchar(n)` to a longer `varchar(m)` or to `text`.
fn widening(live: &str, wanted: &ColumnType) -> bool {
    let Some(limit) = live
        .strip_prefix("character varying(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return false;
    };
    match wanted {
        ColumnType::Text { max_chars: None } => true,
        ColumnType::Text {
            max_chars: Some(max),
        } => *max > limit,
        _ => false,
    }
}
