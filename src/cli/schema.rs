//! `sqs2pg schema ddl`: each stream's table as SQL, to read, review or run by hand where
//! sqs2pg may not create tables (a least-privilege role).

use crate::cli::config::SchemaDdlArgs;
use crate::cli::streams;

/// `sqs2pg schema ddl`.
pub fn ddl(args: SchemaDdlArgs) -> anyhow::Result<()> {
    for (index, stream) in streams::declarations(&args.streams)?.iter().enumerate() {
        if index > 0 {
            println!();
        }
        println!("-- stream {}: table {}", stream.name, stream.table);
        for statement in stream.ddl() {
            println!("{statement};");
        }
    }
    Ok(())
}
