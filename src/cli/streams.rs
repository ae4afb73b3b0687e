//! The streams a command works on: those of the stream file (`SQS2PG_STREAMS`), or the
//! built-in login stream reading `SQS2PG_QUEUE_URL` (`streams/logins.toml`, compiled in).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::config::{QueueArgs, StreamChoice, StreamsArgs, parse_queue_url};
use crate::domain::envelope::EnvelopeMode;
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
    let text = std::fs::read_to_string(path).map_err(|error| StreamsError::Read {
        path: path.clone(),
        error,
    })?;
    let file = path.display().to_string();
    let directory = path.parent().unwrap_or(Path::new("."));
    let env = |name: &str| std::env::var(name).ok();
    let schema = |name: &str| {
        let schema_path = directory.join(name);
        std::fs::read_to_string(&schema_path)
            .map_err(|error| format!("{}: {error}", schema_path.display()))
    };
    let streams = compile(
        &text,
        &file,
        &Lookups {
            env: &env,
            schema: &schema,
        },
    )?;
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
