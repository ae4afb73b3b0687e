//! A stream's JSON Schema: the event's contract, as teams already write it (EventBridge's
//! schema registry, AsyncAPI, Confluent's registry).
//!
//! - At compile time it gives a column without `type` its type where it says enough, the
//!   column's nullability where it says whether the field is required, and refuses a path
//!   that it says can never exist (`additionalProperties: false`, a non-object on the way).
//! - Per message, the whole event is validated against it (the `jsonschema` crate, formats
//!   checked). Its messages quote instance values, so a violation is rendered from the
//!   instance path and the keyword only, and in the path only property names the schema
//!   itself spells are kept (any other name, which the producer chose, becomes `*`).
//!
//! Without the crate's default features: it resolves only references inside the schema
//! (no HTTP, no files), which is all the pure core may do.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use crate::domain::stream::error::Problem;
use crate::domain::stream::types::{ColumnType, MAX_VARCHAR};

/// A compiled schema.
#[derive(Clone)]
pub(super) struct EventSchema {
    root: Json,
    validator: std::sync::Arc<jsonschema::Validator>,
    /// Every property name the schema spells: the names a violation's path may show.
    names: HashSet<String>,
}

impl std::fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchema").finish_non_exhaustive()
    }
}

/// The schema's word on one path.
pub(super) struct Described {
    /// The type the schema gives, or why it gives none.
    pub ty: Result<ColumnType, &'static str>,
    /// Whether the schema requires the field and does not allow it to be null.
    pub required: bool,
}

impl EventSchema {
    /// Compiles `root`; the error is the crate's (it may quote the schema, never an event).
    pub fn compile(root: Json) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|error| error.to_string().replace('\n', " "))?;
        let mut names = HashSet::new();
        collect_names(&root, &mut names);
        Ok(Self {
            root,
            validator: std::sync::Arc::new(validator),
            names,
        })
    }

    /// What the schema says of `path`: `Ok(None)` when it does not describe it, `Err` with
    /// the reason when it says the path can never exist.
    pub fn lookup(&self, path: &[String]) -> Result<Option<Described>, String> {
        let mut node = self.resolve(&self.root);
        let mut required = true;
        for (depth, name) in path.iter().enumerate() {
            let Some(node_object) = node.as_object() else {
                return Ok(None);
            };
            if let Some(types) = node_object.get("type")
                && !allows(types, "object")
            {
                let at = if depth == 0 {
                    "the event".to_owned()
                } else {
                    format!("`{}`", crate::domain::stream::display_path(&path[..depth]))
                };
                return Err(format!("says {at} is not an object"));
            }
            match node_object
                .get("properties")
                .and_then(|properties| properties.get(name))
            {
                Some(inner) => {
                    required = required && lists(node_object, "required", name);
                    node = self.resolve(inner);
                }
                None if node_object.get("additionalProperties") == Some(&Json::Bool(false))
                    && !node_object.contains_key("patternProperties") =>
                {
                    return Err(format!(
                        "has no property `{name}` there and allows no other (additionalProperties is false)"
                    ));
                }
                None => return Ok(None),
            }
        }
        let nullable = node.get("type").is_some_and(|types| allows(types, "null"));
        Ok(Some(Described {
            ty: derive(node),
            required: required && !nullable,
        }))
    }

    /// Follows a local `$ref` (`#/$defs/x`), a few levels at most.
    fn resolve<'a>(&'a self, mut node: &'a Json) -> &'a Json {
        for _ in 0..8 {
            match node
                .get("$ref")
                .and_then(Json::as_str)
                .and_then(|reference| reference.strip_prefix('#'))
                .and_then(|pointer| self.root.pointer(pointer))
            {
                Some(target) => node = target,
                None => break,
            }
        }
        node
    }

    /// Validates an event: its first violation, by instance path and keyword.
    pub fn check(&self, event: &Json) -> Result<(), Problem> {
        let Some(error) = self.validator.iter_errors(event).next() else {
            return Ok(());
        };
        let mut at = String::new();
        for segment in error.instance_path().iter() {
            at.push('/');
            match segment {
                jsonschema::paths::LocationSegment::Property(name)
                    if self.names.contains(name.as_ref()) =>
                {
                    at.push_str(&name.replace('~', "~0").replace('/', "~1"));
                }
                jsonschema::paths::LocationSegment::Property(_) => at.push('*'),
                jsonschema::paths::LocationSegment::Index(index) => {
                    at.push_str(&index.to_string());
                }
            }
        }
        if at.is_empty() {
            at.push('/');
        }
        Err(Problem::Schema {
            at,
            keyword: error.kind().keyword().to_owned(),
        })
    }
}

/// Whether a `type` (a name or a list of names) allows `name`.
fn allows(types: &Json, name: &str) -> bool {
    match types {
        Json::String(one) => one == name || (name == "number" && one == "integer"),
        Json::Array(many) => many.iter().any(|one| allows(one, name)),
        _ => true,
    }
}

fn lists(object: &Map<String, Json>, key: &str, name: &str) -> bool {
    object
        .get(key)
        .and_then(Json::as_array)
        .is_some_and(|names| names.iter().any(|listed| listed.as_str() == Some(name)))
}

/// The column type a subschema implies, where it says enough.
fn derive(node: &Json) -> Result<ColumnType, &'static str> {
    let types: Vec<&str> = match node.get("type") {
        Some(Json::String(one)) => vec![one.as_str()],
        Some(Json::Array(many)) => many.iter().filter_map(Json::as_str).collect(),
        _ => return Err("it gives no `type`"),
    };
    let types: Vec<&str> = types.into_iter().filter(|ty| *ty != "null").collect();
    let [ty] = types.as_slice() else {
        return Err("it allows several types");
    };
    let number = |key: &str| node.get(key).and_then(Json::as_f64);
    Ok(match *ty {
        "string" => match node.get("format").and_then(Json::as_str) {
            Some("uuid") => ColumnType::Uuid,
            Some("date-time") => ColumnType::Timestamptz,
            Some("date") => ColumnType::Date,
            Some("ipv4" | "ipv6") => ColumnType::Inet,
            _ => ColumnType::Text {
                max_chars: node
                    .get("maxLength")
                    .and_then(Json::as_u64)
                    .and_then(|max| u32::try_from(max).ok())
                    .filter(|max| (1..=MAX_VARCHAR).contains(max)),
            },
        },
        "integer" => match (number("minimum"), number("maximum")) {
            (Some(low), Some(high))
                if low >= f64::from(i16::MIN) && high <= f64::from(i16::MAX) =>
            {
                ColumnType::SmallInt
            }
            (Some(low), Some(high))
                if low >= f64::from(i32::MIN) && high <= f64::from(i32::MAX) =>
            {
                ColumnType::Integer
            }
            _ => ColumnType::BigInt,
        },
        "number" => ColumnType::DoublePrecision,
        "boolean" => ColumnType::Boolean,
        "object" | "array" => ColumnType::Jsonb,
        _ => return Err("its `type` is not one sqs2pg knows"),
    })
}

/// Every key under any `properties` of the schema.
fn collect_names(node: &Json, names: &mut HashSet<String>) {
    match node {
        Json::Object(object) => {
            if let Some(Json::Object(properties)) = object.get("properties") {
                names.extend(properties.keys().cloned());
            }
            if let Some(Json::Array(required)) = object.get("required") {
                names.extend(required.iter().filter_map(Json::as_str).map(str::to_owned));
            }
            for value in object.values() {
                collect_names(value, names);
            }
        }
        Json::Array(items) => {
            for item in items {
                collect_names(item, names);
            }
        }
        _ => {}
    }
}
