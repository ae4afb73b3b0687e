//! The one rendering of an error with its causes: on one line, `what failed: why: why that`.
//! `main` prints the fatal error with it, and the SQS adapter and the commands log with it,
//! so a cause is never dropped and a log line is never split.

use std::error::Error;
use std::fmt;

/// Displays an error and its sources joined by ": ", on one line.
///
/// A cause whose text the line already holds is skipped: a wrapper that prints its source
/// itself (`#[error("…: {0}")]` beside `#[source]`) would otherwise say it twice. Runs of
/// whitespace, line breaks included, become one space.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(self.0))
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// [`ErrorChain`] as a string.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = error.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the key file")]
        Plain(#[source] std::io::Error),
        #[error("receiving failed: {0}")]
        Repeating(#[source] std::io::Error),
    }

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file\nor directory")
    }

    #[test]
    fn causes_follow_on_one_line_each_said_once() {
        assert_eq!(
            one_line(&Outer::Plain(io())),
            "reading the key file: no such file or directory"
        );
        assert_eq!(
            ErrorChain(&Outer::Repeating(std::io::Error::other("refused"))).to_string(),
            "receiving failed: refused"
        );
    }
}
