//! The streams a command works on: those of the stream file (`SQS2PG_STREAMS`), or the
//! built-in login stream reading `SQS2PG_QUEUE_URL` (`streams/logins.toml`, compiled in).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapters::postgres::schema::live_table;
use crate::adapters::postgres::{Database, SinkError};
use crate::cli::config::{QueueArgs, StreamChoice, StreamsArgs, parse_queue_url};
use crate::domain::envelope::EnvelopeMode;
use crate::domain::stream::ddl::plan;
use crate::domain::stream::{Lookups, Stream, StreamFileError, compile, login};

/// A stream and where its dead letters go.
#[derive(Debug, Clone)]
pub struct Configured {
    pub stream: Arc<Stream>,
    /// `None`: the source queue's redrive target.
    pub dlq_url: Option<String>,
}

impl Configured {
    /// The source queue's name: what dead letters record as their source.
    pub fn queue_name(&self) -> &str {
        self.stream.queue_url.rsplit('/').next().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("SQS2PG_STREAMS {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    File(#[from] StreamFileError),
    #[error("{file}: stream `{stream}`: queue_url: {detail}")]
    QueueUrl {
        file: String,
        stream: String,
        detail: String,
    },
    #[error("{file}: stream `{stream}`: dead_letter_queue_url: {detail}")]
    DeadLetterQueueUrl {
        file: String,
        stream: String,
        detail: String,
    },
    #[error(
        "no queue to read: set SQS2PG_QUEUE_URL (the queue of the built-in login stream) or give a stream file (SQS2PG_STREAMS)"
    )]
    NoQueue,
    #[error("no stream named `{name}` in {file}; its streams: {names}")]
    UnknownStream {
        name: String,
        file: String,
        names: String,
    },
    #[error("{file} declares {count} streams ({names}): name one with --stream")]
    WhichStream {
        file: String,
        count: usize,
        names: String,
    },
}

/// The streams to run: the file's, or the login stream on `queue` unwrapping by `envelope`
/// (which a file sets per stream instead).
pub fn load(
    args: &StreamsArgs,
    queue: &QueueArgs,
    envelope: EnvelopeMode,
) -> Result<Vec<Configured>, StreamsError> {
    let Some(path) = &args.streams else {
        let queue_url = queue.queue_url.as_deref().ok_or(StreamsError::NoQueue)?;
        return Ok(vec![Configured {
            stream: Arc::new(login::stream(queue_url, envelope)),
            dlq_url: queue.dlq_url.clone(),
        }]);
    };
    let file = path.display().to_string();
    let streams = compile_file(path, &|name: &str| std::env::var(name).ok())?;
    streams
        .into_iter()
        .map(|stream| {
            parse_queue_url(&stream.queue_url).map_err(|detail| StreamsError::QueueUrl {
                file: file.clone(),
                stream: stream.name.clone(),
                detail,
            })?;
            if let Some(dlq_url) = &stream.dead_letter_queue_url {
                parse_queue_url(dlq_url).map_err(|detail| StreamsError::DeadLetterQueueUrl {
                    file: file.clone(),
                    stream: stream.name.clone(),
                    detail,
                })?;
            }
            Ok(Configured {
                dlq_url: stream.dead_letter_queue_url.clone(),
                stream: Arc::new(stream),
            })
        })
        .collect()
}

/// The streams' declarations, for what needs no queue (their tables): the file's, with
/// unset `${VAR}`s left as written, or the login stream's.
pub fn declarations(args: &StreamsArgs) -> Result<Vec<Stream>, StreamsError> {
    match &args.streams {
        Some(path) => compile_file(path, &|name: &str| {
            Some(std::env::var(name).unwrap_or_else(|_| format!("${{{name}}}")))
        }),
        None => Ok(vec![login::stream(
            "${SQS2PG_QUEUE_URL}",
            EnvelopeMode::Auto,
        )]),
    }
}

/// Compiles the stream file at `path`: its JSON Schemas are read relative to its folder,
/// its `${VAR}`s from `env`.
fn compile_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Stream>, StreamsError> {
    let text = std::fs::read_to_string(path).map_err(|error| StreamsError::Read {
        path: path.to_owned(),
        error,
    })?;
    let directory = path.parent().unwrap_or(Path::new("."));
    let schema = |name: &str| {
        let schema_path = directory.join(name);
        std::fs::read_to_string(&schema_path)
            .map_err(|error| format!("{}: {error}", schema_path.display()))
    };
    Ok(compile(
        &text,
        &path.display().to_string(),
        &Lookups {
            env,
            schema: &schema,
        },
    )?)
}

/// A stream's table as the database has it, against its file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "stream `{stream}`: table {table} does not exist; create it with `sqs2pg setup --streams <file>` (its DDL: `sqs2pg schema ddl`)"
    )]
    Missing { stream: String, table: String },
    #[error("stream `{stream}`: table {table} differs from the stream file: {differences}")]
    Differs {
        stream: String,
        table: String,
        differences: String,
    },
    #[error("stream `{stream}`: reading table {table}: {error}")]
    Read {
        stream: String,
        table: String,
        error: SinkError,
    },
}

/// Checks each stream's table against its file: exists, with its columns, types,
/// nullability and key. A difference names the stream, the column and what differs, and
/// says what `setup` would apply or what the user must run.
pub async fn check_tables(database: &Database, streams: &[Configured]) -> Result<(), TableError> {
    for configured in streams {
        let stream = &configured.stream;
        let table = stream.table.to_string();
        let live = live_table(database, &table)
            .await
            .map_err(|error| TableError::Read {
                stream: stream.name.clone(),
                table: table.clone(),
                error,
            })?
            .ok_or_else(|| TableError::Missing {
                stream: stream.name.clone(),
                table: table.clone(),
            })?;
        let plan = plan(stream, &live);
        if !plan.is_empty() {
            let differences = plan
                .additive
                .iter()
                .map(|change| format!("{change} (`sqs2pg setup --streams <file>` applies it)"))
                .chain(plan.refused.iter().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(TableError::Differs {
                stream: stream.name.clone(),
                table,
                differences,
            });
        }
    }
    Ok(())
}

/// The one stream a command is about: the one `choice` names, or the only one.
pub fn choose(
    args: &StreamsArgs,
    queue: &QueueArgs,
    choice: &StreamChoice,
) -> Result<Configured, StreamsError> {
    let mut streams = load(args, queue, EnvelopeMode::Auto)?;
    let file = || {
        args.streams
            .as_deref()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| login::FILE_NAME.to_owned())
    };
    let names = |streams: &[Configured]| {
        streams
            .iter()
            .map(|c| c.stream.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &choice.stream {
        Some(name) => match streams.iter().position(|c| &c.stream.name == name) {
            Some(index) => Ok(streams.swap_remove(index)),
            None => Err(StreamsError::UnknownStream {
                name: name.clone(),
                file: file(),
                names: names(&streams),
            }),
        },
        None if streams.len() == 1 => Ok(streams.remove(0)),
        None => Err(StreamsError::WhichStream {
            file: file(),
            count: streams.len(),
            names: names(&streams),
        }),
    }
}
