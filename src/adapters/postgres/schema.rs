//! Stream tables as the database has them: read from the catalog for the pure core's table
//! plan ([`crate::domain::stream::ddl::plan`]), and created or evolved by `setup`.

use crate::domain::stream::ddl::{LiveColumn, LiveTable};

use super::{Database, SinkError};

/// The table's columns: name, type as `format_type` prints it, nullability, a default.
const COLUMNS: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, a.atthasdef \
FROM pg_attribute a \
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attnum";

/// Every index of the table, by its columns in order, and whether it is unique or primary.
const INDEXES: &str = "\
SELECT i.indisprimary, i.indisunique, \
       array_agg(a.attname::text ORDER BY k.ord) \
FROM pg_index i \
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
WHERE i.indrelid = to_regclass($1) \
GROUP BY i.indexrelid, i.indisprimary, i.indisunique";

/// The table named `table` (as SQL writes it), or `None` if there is none.
pub async fn live_table(database: &Database, table: &str) -> Result<Option<LiveTable>, SinkError> {
    let client = database.connect().await?;
    let after = database.statement_timeout();
    tokio::time::timeout(after, read(&client, table))
        .await
        .unwrap_or(Err(SinkError::Timeout {
            operation: "read the table's columns",
            after,
        }))
}

async fn read(
    client: &tokio_postgres::Client,
    table: &str,
) -> Result<Option<LiveTable>, SinkError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(SinkError::postgres("find the table"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let mut live = LiveTable::default();
    for row in client
        .query(COLUMNS, &[&table])
        .await
        .map_err(SinkError::postgres("read the table's columns"))?
    {
        live.columns.push(LiveColumn {
            name: row.get(0),
            data_type: row.get(1),
            nullable: row.get(2),
            has_default: row.get(3),
        });
    }
    for row in client
        .query(INDEXES, &[&table])
        .await
        .map_err(SinkError::postgres("read the table's indexes"))?
    {
        let (primary, unique, columns): (bool, bool, Vec<String>) =
            (row.get(0), row.get(1), row.get(2));
        if primary {
            live.primary_key = columns.clone();
        } else if unique {
            live.unique_keys.push(columns.clone());
        }
        live.indexes.push(columns);
    }
    Ok(Some(live))
}

/// Runs `statements` (a table's DDL, or additive changes) in one transaction.
pub async fn apply(database: &Database, statements: &[String]) -> Result<(), SinkError> {
    let mut client = database.connect().await?;
    let after = database.statement_timeout();
    let apply = async {
        let transaction = client
            .transaction()
            .await
            .map_err(SinkError::postgres("begin"))?;
        for statement in statements {
            transaction
                .batch_execute(statement)
                .await
                .map_err(SinkError::postgres("apply the table's definition"))?;
        }
        transaction
            .commit()
            .await
            .map_err(SinkError::postgres("commit"))
    };
    tokio::time::timeout(after, apply)
        .await
        .unwrap_or(Err(SinkError::Timeout {
            operation: "apply the table's definition",
            after,
        }))
}
