//! The stream file as written: TOML, every value with its place in the file, so the
//! compiler ([`super::compile`]) can say where a mistake is. Unknown keys are errors
//! (`deny_unknown_fields`): a typo must not silently become a default.
//!
//! Values that take several shapes (`from`, `key`, `event_time`, `mask`, `minimum`, …) are
//! read as plain TOML values and interpreted by the compiler, which says what it expected;
//! serde's "data did not match any variant" would not.

use serde::Deserialize;
use toml::Spanned;

/// The whole file: `[[stream]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDecl {
    #[serde(default)]
    pub stream: Vec<Spanned<StreamDecl>>,
}

/// One `[[stream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamDecl {
    pub name: Spanned<String>,
    pub queue_url: Spanned<String>,
    pub dead_letter_queue_url: Option<Spanned<String>>,
    pub envelope: Option<Spanned<String>>,
    pub table: Spanned<String>,
    pub key: Option<Spanned<toml::Value>>,
    pub event_time: Option<Spanned<toml::Value>>,
    pub schema: Option<Spanned<String>>,
    #[serde(default)]
    pub column: Vec<Spanned<ColumnDecl>>,
}

/// One `[[stream.column]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ColumnDecl {
    pub name: Spanned<String>,
    pub from: Spanned<toml::Value>,
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
    pub required: Option<Spanned<bool>>,
    pub min_length: Option<Spanned<i64>>,
    pub max_length: Option<Spanned<i64>>,
    pub minimum: Option<Spanned<toml::Value>>,
    pub maximum: Option<Spanned<toml::Value>>,
    pub one_of: Option<Spanned<Vec<toml::Value>>>,
    pub epoch: Option<Spanned<String>>,
    pub mask: Option<Spanned<toml::Value>>,
    pub index: Option<Spanned<bool>>,
}

/// A place in the file, 1-based, in characters (as editors count columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to its length and to a character).
    pub fn of(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Self {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of(text, 6), Position { line: 2, column: 1 });
        // After the two-byte `é`: the fourth byte of the line is its third character.
        assert_eq!(Position::of(text, 9), Position { line: 2, column: 3 });
        // Inside a character, and past the end: clamped, never a panic.
        assert_eq!(Position::of(text, 8), Position { line: 2, column: 2 });
        assert_eq!(Position::of(text, 999), Position { line: 3, column: 1 });
    }
}
