//! A stream's table as the sink writes it: the batch insert with one typed array per
//! column (`INSERT … SELECT … FROM unnest($1, $2, …) ON CONFLICT (key) DO NOTHING`), and the
//! canary. The statements are the pure core's ([`Stream::insert_statement`],
//! [`Stream::canary_statements`]); this module binds the rows.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::types::ToSql;

use crate::domain::stream::{ColumnType, Row, Stream, Value};

use super::{Canary, InsertOutcome, SinkError};

/// What the sink needs to write one stream's rows: its statements and its columns' types.
#[derive(Debug)]
pub struct TableWriter {
    /// The table, for logs.
    pub table: String,
    insert: String,
    canary_exists: String,
    canary_insert: String,
    /// Each column's stored type, in the stream's column order: how its array is bound.
    columns: Vec<ColumnType>,
}

impl TableWriter {
    pub fn of(stream: &Stream) -> Self {
        let (canary_exists, canary_insert) = stream.canary_statements();
        Self {
            table: stream.table.to_string(),
            insert: stream.insert_statement(),
            canary_exists,
            canary_insert,
            columns: stream.columns.iter().map(|column| column.stored).collect(),
        }
    }

    /// The insert of `rows`, in one transaction, on `client`.
    pub(super) async fn insert_on(
        &self,
        client: &mut deadpool_postgres::Object,
        rows: &[&Row],
    ) -> Result<InsertOutcome, SinkError> {
        let arrays: Vec<Array<'_>> = (0..self.columns.len())
            .map(|column| Array::of(self.columns[column], column, rows))
            .collect();
        let parameters: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_sql).collect();
        let transaction = client
            .transaction()
            .await
            .map_err(SinkError::postgres("begin"))?;
        let statement = transaction
            .prepare_cached(&self.insert)
            .await
            .map_err(SinkError::postgres("prepare insert"))?;
        let inserted = transaction
            .execute(&statement, &parameters)
            .await
            .map_err(SinkError::postgres("insert"))?;
        transaction
            .commit()
            .await
            .map_err(SinkError::postgres("commit"))?;
        Ok(InsertOutcome {
            inserted,
            duplicates: rows.len() as u64 - inserted,
        })
    }

    /// The canary on `client` (see [`super::Sink::canary`]).
    pub(super) async fn canary_on(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<Canary, SinkError> {
        let transaction = client
            .transaction()
            .await
            .map_err(SinkError::postgres("begin"))?;
        let exists: bool = transaction
            .query_one(&self.canary_exists, &[])
            .await
            .map_err(SinkError::postgres("canary select"))?
            .get(0);
        if !exists {
            return Ok(Canary::NoRow);
        }
        transaction
            .execute(&self.canary_insert, &[])
            .await
            .map_err(SinkError::postgres("canary insert"))?;
        transaction
            .rollback()
            .await
            .map_err(SinkError::postgres("rollback"))?;
        Ok(Canary::Accepted)
    }
}

/// One column's values across a batch, typed as [`ColumnType::bind_array`] binds them.
enum Array<'a> {
    Text(Vec<Option<&'a str>>),
    /// inet as `address/prefix`.
    OwnedText(Vec<Option<String>>),
    Int16(Vec<Option<i16>>),
    Int32(Vec<Option<i32>>),
    Int64(Vec<Option<i64>>),
    Float64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamptz(Vec<Option<DateTime<Utc>>>),
    Uuid(Vec<Option<uuid::Uuid>>),
}

impl<'a> Array<'a> {
    /// Column `column` of `rows`, whose stored type is `ty`. The transform makes every value
    /// of the column's own kind (or null): another kind is a bug, not bad input.
    fn of(ty: ColumnType, column: usize, rows: &[&'a Row]) -> Self {
        let values = rows.iter().map(move |row| &row.values[column]);
        macro_rules! collect {
            ($variant:ident, $pattern:pat => $value:expr) => {
                Self::$variant(
                    values
                        .map(|value| match value {
                            Value::Null => None,
                            $pattern => Some($value),
                            other => mismatch(ty, other),
                        })
                        .collect(),
                )
            };
        }
        match ty {
            ColumnType::Text { .. } | ColumnType::Digest => {
                collect!(Text, Value::Text(text) => text.as_str())
            }
            ColumnType::Numeric { .. } => collect!(Text, Value::Numeric(text) => text.as_str()),
            ColumnType::Jsonb => collect!(Text, Value::Jsonb(text) => text.as_str()),
            ColumnType::Inet => {
                collect!(OwnedText, Value::Inet { addr, prefix } => format!("{addr}/{prefix}"))
            }
            ColumnType::SmallInt => collect!(Int16, Value::Int16(n) => *n),
            ColumnType::Integer => collect!(Int32, Value::Int32(n) => *n),
            ColumnType::BigInt => collect!(Int64, Value::Int64(n) => *n),
            ColumnType::DoublePrecision => collect!(Float64, Value::Float64(x) => *x),
            ColumnType::Boolean => collect!(Bool, Value::Bool(b) => *b),
            ColumnType::Date => collect!(Date, Value::Date(date) => *date),
            ColumnType::Timestamptz => collect!(Timestamptz, Value::Timestamptz(at) => *at),
            ColumnType::Uuid => collect!(Uuid, Value::Uuid(id) => *id),
        }
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(values) => values,
            Self::OwnedText(values) => values,
            Self::Int16(values) => values,
            Self::Int32(values) => values,
            Self::Int64(values) => values,
            Self::Float64(values) => values,
            Self::Bool(values) => values,
            Self::Date(values) => values,
            Self::Timestamptz(values) => values,
            Self::Uuid(values) => values,
        }
    }
}

/// A value of another kind than its column's: named by its kind only, never its content.
fn mismatch(ty: ColumnType, value: &Value) -> ! {
    let kind = match value {
        Value::Null => "null",
        Value::Text(_) => "text",
        Value::Int16(_) => "smallint",
        Value::Int32(_) => "integer",
        Value::Int64(_) => "bigint",
        Value::Float64(_) => "double precision",
        Value::Numeric(_) => "numeric",
        Value::Bool(_) => "boolean",
        Value::Date(_) => "date",
        Value::Timestamptz(_) => "timestamptz",
        Value::Uuid(_) => "uuid",
        Value::Inet { .. } => "inet",
        Value::Jsonb(_) => "jsonb",
    };
    unreachable!(
        "the transform made a {kind} value for a {} column",
        ty.sql()
    )
}
