//! One pass over an event, driven by the paths its stream reads: each field a column reads
//! is captured, every other value is checked and skipped without being kept.
//!
//! Skipped values go through the same parser calls as the typed transform's `Value`s
//! (`deserialize_any`), so a body is exactly as valid here as there: the same escapes,
//! numbers and nesting depth are refused, at the same line and column. Only what a column
//! reads is allocated.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::domain::event::JsonKind;
use crate::domain::stream::error::Problem;

/// What an event holds at a path a column reads.
#[derive(Debug, Clone)]
pub(super) enum Capture<'de> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'de, str>),
    /// An array or an object that the column does not keep: only its kind.
    Composite(JsonKind),
    /// The whole value (jsonb columns).
    Json(serde_json::Value),
    /// The exact text (numeric columns: a decimal keeps every digit).
    Raw(&'de RawValue),
}

impl PartialEq for Capture<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Number(a), Self::Number(b)) => a == b,
            (Self::Str(a), Self::Str(b)) => a == b,
            (Self::Composite(a), Self::Composite(b)) => a == b,
            (Self::Json(a), Self::Json(b)) => a == b,
            (Self::Raw(a), Self::Raw(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

/// How a path's value is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mode {
    Scalar,
    Raw,
    Json,
}

/// What one pass found at one path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Slot<'de> {
    /// Absent, or an object on the way to it was null.
    Absent,
    Found(Capture<'de>),
    /// The field, or an object on the way to it, appears more than once.
    Duplicate {
        depth: usize,
    },
    /// An object on the way to it (the path's first `depth + 1` names) is not an object.
    Blocked {
        depth: usize,
        found: JsonKind,
    },
}

/// A path read by one or more columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotSpec {
    pub path: Vec<String>,
    pub mode: Mode,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
struct Child {
    key: String,
    /// The field itself is read (by slot).
    leaf: Option<usize>,
    /// Fields inside it are read (node index).
    node: Option<usize>,
    /// Every slot at or below this child: what a duplicate or a non-object here affects.
    below: Vec<usize>,
    /// Index among every child of the tree, for the seen-once bookkeeping.
    id: usize,
}

/// The paths of a stream, as a tree walked by the parser.
#[derive(Debug, Clone)]
pub(super) struct PathTree {
    /// The first is the event itself.
    nodes: Vec<Node>,
    pub slots: Vec<SlotSpec>,
    children: usize,
}

impl Default for PathTree {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
            slots: Vec::new(),
            children: 0,
        }
    }
}

/// Why two paths cannot be read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Overlap {
    /// The path read whole.
    pub whole: Vec<String>,
}

impl PathTree {
    /// The slot of `path`, added if new. A path read in two modes is captured whole.
    pub fn add(&mut self, path: &[String], mode: Mode) -> Result<usize, Overlap> {
        if let Some(slot) = self.slots.iter().position(|spec| spec.path == path) {
            let spec = &mut self.slots[slot];
            if spec.mode != mode {
                spec.mode = Mode::Json;
            }
            return Ok(slot);
        }
        // A path inside another that is read whole, or around one: refused (one capture
        // per value keeps the pass simple and the cost predictable).
        for spec in &self.slots {
            let shorter = spec.path.len().min(path.len());
            if spec.path[..shorter] == path[..shorter] {
                let whole = if spec.path.len() < path.len() {
                    spec.path.clone()
                } else {
                    path.to_vec()
                };
                return Err(Overlap { whole });
            }
        }
        let slot = self.slots.len();
        self.slots.push(SlotSpec {
            path: path.to_vec(),
            mode,
        });
        let mut node = 0;
        for (depth, key) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            let index = match self.nodes[node].children.iter().position(|c| &c.key == key) {
                Some(index) => index,
                None => {
                    self.nodes[node].children.push(Child {
                        key: key.clone(),
                        leaf: None,
                        node: None,
                        below: Vec::new(),
                        id: self.children,
                    });
                    self.children += 1;
                    self.nodes[node].children.len() - 1
                }
            };
            self.nodes[node].children[index].below.push(slot);
            if last {
                self.nodes[node].children[index].leaf = Some(slot);
            } else {
                let next = match self.nodes[node].children[index].node {
                    Some(next) => next,
                    None => {
                        self.nodes.push(Node::default());
                        let next = self.nodes.len() - 1;
                        self.nodes[node].children[index].node = Some(next);
                        next
                    }
                };
                node = next;
            }
        }
        Ok(slot)
    }

    /// One pass over `body`: what each slot found, or why the body is not a JSON object.
    pub fn parse<'de>(&self, body: &'de str) -> Result<Vec<Slot<'de>>, Problem> {
        let mut slots = vec![Slot::Absent; self.slots.len()];
        let mut seen = vec![false; self.children];
        let mut deserializer = serde_json::Deserializer::from_str(body);
        let top = NodeSeed {
            tree: self,
            node: Some(0),
            depth: 0,
            slots: &mut slots,
            seen: &mut seen,
        }
        .deserialize(&mut deserializer)
        .and_then(|top| deserializer.end().map(|()| top))
        .map_err(invalid_json)?;
        match top {
            None => Ok(slots),
            Some(found) => Err(Problem::NotAnObject { found }),
        }
    }
}

/// serde_json's error as the typed transform words it: category, line, column, no text.
pub(super) fn invalid_json(error: serde_json::Error) -> Problem {
    Problem::InvalidJson {
        category: match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: error.line(),
        column: error.column(),
    }
}

pub(super) fn json_kind(value: &serde_json::Value) -> JsonKind {
    use serde_json::Value::*;
    match value {
        Null => JsonKind::Null,
        Bool(_) => JsonKind::Bool,
        Number(_) => JsonKind::Number,
        String(_) => JsonKind::String,
        Array(_) => JsonKind::Array,
        Object(_) => JsonKind::Object,
    }
}

/// The type of the JSON a capture holds.
pub(super) fn capture_kind(capture: &Capture<'_>) -> JsonKind {
    match capture {
        Capture::Null => JsonKind::Null,
        Capture::Bool(_) => JsonKind::Bool,
        Capture::Number(_) => JsonKind::Number,
        Capture::Str(_) => JsonKind::String,
        Capture::Composite(kind) => *kind,
        Capture::Json(value) => json_kind(value),
        Capture::Raw(raw) => raw_kind(raw.get()),
    }
}

/// The kind of valid raw JSON text: its first character decides.
pub(super) fn raw_kind(text: &str) -> JsonKind {
    match text.as_bytes().first() {
        Some(b'"') => JsonKind::String,
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b't' | b'f') => JsonKind::Bool,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Number,
    }
}

/// Walks an object whose fields some paths read. Its value: `None` for an object, else
/// the kind of what stood there instead (consumed in full, so errors inside still count).
struct NodeSeed<'t, 's, 'de> {
    tree: &'t PathTree,
    /// `None`: nothing below is read (a value consumed only for its kind).
    node: Option<usize>,
    depth: usize,
    slots: &'s mut [Slot<'de>],
    seen: &'s mut [bool],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = Option<JsonKind>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = Option<JsonKind>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(node) = self.node else {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            return Ok(Some(JsonKind::Object));
        };
        let children = &self.tree.nodes[node].children;
        while let Some(index) = map.next_key_seed(KeySeed(children))? {
            let Some(child) = index.map(|index| &children[index]) else {
                map.next_value::<Skip>()?;
                continue;
            };
            if std::mem::replace(&mut self.seen[child.id], true) {
                for &slot in &child.below {
                    self.slots[slot] = Slot::Duplicate { depth: self.depth };
                }
                map.next_value::<Skip>()?;
                continue;
            }
            if let Some(slot) = child.leaf {
                let capture = map.next_value_seed(CaptureSeed(self.tree.slots[slot].mode))?;
                self.slots[slot] = Slot::Found(capture);
            } else {
                let found = map.next_value_seed(NodeSeed {
                    tree: self.tree,
                    node: child.node,
                    depth: self.depth + 1,
                    slots: &mut *self.slots,
                    seen: &mut *self.seen,
                })?;
                if let Some(found) = found.filter(|found| *found != JsonKind::Null) {
                    for &slot in &child.below {
                        self.slots[slot] = Slot::Blocked {
                            depth: self.depth,
                            found,
                        };
                    }
                }
            }
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Some(JsonKind::Array))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::Null))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::Bool))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::Number))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::Number))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::Number))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some(JsonKind::String))
    }
}

/// A key: the index of the child it names, or `None`. Parsed as strictly as a `String`
/// key, without allocating one.
struct KeySeed<'t>(&'t [Child]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|child| child.key == key))
    }
}

/// A value that no column reads: checked by the same parser calls as a `Value`, not kept.
/// Not serde's `IgnoredAny`, which skips faster but accepts what a `Value` refuses (a lone
/// surrogate escape, a number out of range): a body would be valid here and not there.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
}

/// Captures a value a column reads, in its slot's mode.
struct CaptureSeed(Mode);

impl<'de> DeserializeSeed<'de> for CaptureSeed {
    type Value = Capture<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            Mode::Scalar => deserializer.deserialize_any(ScalarVisitor),
            Mode::Json => {
                let value = <serde_json::Value as de::Deserialize>::deserialize(deserializer)?;
                Ok(match value {
                    serde_json::Value::Null => Capture::Null,
                    value => Capture::Json(value),
                })
            }
            Mode::Raw => {
                let raw = <&'de RawValue as de::Deserialize>::deserialize(deserializer)?;
                Ok(if raw.get() == "null" {
                    Capture::Null
                } else {
                    Capture::Raw(raw)
                })
            }
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Capture<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Capture::Composite(JsonKind::Object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Capture::Composite(JsonKind::Array))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Capture::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Capture::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Capture::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Capture::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        // JSON has no NaN or infinity; serde_json's `Value` makes such a number null.
        Ok(serde_json::Number::from_f64(value).map_or(Capture::Null, Capture::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Capture::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Capture::Str(Cow::Owned(value.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_owned).collect()
    }

    fn tree(paths: &[(&str, Mode)]) -> PathTree {
        let mut tree = PathTree::default();
        for (text, mode) in paths {
            tree.add(&path(text), *mode).unwrap();
        }
        tree
    }

    #[test]
    fn captures_what_the_paths_read_and_nothing_else() {
        let tree = tree(&[
            ("a", Mode::Scalar),
            ("b.c", Mode::Scalar),
            ("b.d", Mode::Raw),
            ("e", Mode::Json),
        ]);
        let slots = tree
            .parse(r#"{"x": [1, {"y": 2}], "a": "text", "b": {"c": 5, "d": 1.50, "z": 0}, "e": {"k": [true]}}"#)
            .unwrap();
        assert_eq!(slots[0], Slot::Found(Capture::Str(Cow::Borrowed("text"))));
        assert_eq!(slots[1], Slot::Found(Capture::Number(5.into())));
        assert!(matches!(&slots[2], Slot::Found(Capture::Raw(raw)) if raw.get() == "1.50"));
        assert_eq!(
            slots[3],
            Slot::Found(Capture::Json(serde_json::json!({"k": [true]})))
        );
    }

    #[test]
    fn duplicates_absences_and_blocked_paths_are_told_apart() {
        let tree = tree(&[
            ("a", Mode::Scalar),
            ("b.c", Mode::Scalar),
            ("d.e", Mode::Scalar),
        ]);
        let slots = tree
            .parse(r#"{"a": 1, "a": 1, "b": 7, "d": null}"#)
            .unwrap();
        assert_eq!(slots[0], Slot::Duplicate { depth: 0 });
        assert_eq!(
            slots[1],
            Slot::Blocked {
                depth: 0,
                found: JsonKind::Number
            }
        );
        assert_eq!(slots[2], Slot::Absent);
        let slots = tree.parse(r#"{"b": {"c": 1}, "b": {}}"#).unwrap();
        assert_eq!(slots[1], Slot::Duplicate { depth: 0 });
        let slots = tree.parse(r#"{"b": {"c": 1, "c": 2}}"#).unwrap();
        assert_eq!(slots[1], Slot::Duplicate { depth: 1 });
        // An unknown field given twice is not read, so not refused.
        assert!(tree.parse(r#"{"z": 1, "z": 2}"#).is_ok());
    }

    #[test]
    fn overlapping_paths_are_refused_and_repeated_ones_share_a_slot() {
        let mut tree = tree(&[("a.b", Mode::Scalar)]);
        assert_eq!(tree.add(&path("a.b"), Mode::Scalar), Ok(0));
        assert_eq!(tree.add(&path("a.b"), Mode::Raw), Ok(0));
        assert_eq!(tree.slots[0].mode, Mode::Json);
        assert_eq!(
            tree.add(&path("a"), Mode::Json),
            Err(Overlap { whole: path("a") })
        );
        assert_eq!(
            tree.add(&path("a.b.c"), Mode::Json),
            Err(Overlap { whole: path("a.b") })
        );
        assert_eq!(tree.add(&path("a.c"), Mode::Json), Ok(1));
    }

    #[test]
    fn skipped_values_are_as_strictly_checked_as_a_value() {
        let tree = tree(&[("a", Mode::Scalar)]);
        for body in [
            r#"{"x": "\ud800", "a": 1}"#,
            r#"{"x": 1e400, "a": 1}"#,
            r#"{"x": [1,], "a": 1}"#,
            r#"{"a": 1} trailing"#,
        ] {
            let expected = serde_json::from_str::<serde_json::Value>(body).unwrap_err();
            assert_eq!(tree.parse(body), Err(invalid_json(expected)), "{body}");
        }
        let deep = format!(r#"{{"x": {}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            tree.parse(&deep),
            Err(Problem::InvalidJson { .. })
        ));
        assert_eq!(
            tree.parse("[1]"),
            Err(Problem::NotAnObject {
                found: JsonKind::Array
            })
        );
    }
}
