//! `sqs2pg migrate`: apply the database migrations and exit.

use anyhow::Context;

use crate::adapters::postgres;
use crate::cli::config::DatabaseArgs;

/// `sqs2pg migrate`.
pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let database = args.database()?;
    let report = postgres::migrate(&database)
        .await
        .context("applying migrations")?;
    match applied_migrations(&report) {
        None => println!("migrations: up to date"),
        Some(applied) => println!("migrations applied: {applied}"),
    }
    Ok(())
}

/// The migrations a report says were applied, comma-separated; `None` if there were none.
pub(crate) fn applied_migrations(report: &refinery::Report) -> Option<String> {
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    (!applied.is_empty()).then(|| applied.join(", "))
}
