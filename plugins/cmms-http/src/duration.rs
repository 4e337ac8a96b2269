//! Durations in the config, written as humantime strings (`"500ms"`, `"5s"`, `"2m"`), as in
//! the node's own config.
//!
//! Used through `#[serde(with = "duration")]` and `#[schemars(with = "duration::Human")]`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serializer;
use serde::de::{self, Deserializer, Unexpected, Visitor};

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"500ms\" or \"5s\"")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|_| E::invalid_value(Unexpected::Str(s), &self))
    }
}

/// Deserializes a humantime duration string.
///
/// # Errors
/// An `invalid value` error naming what a duration looks like.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// Serializes a duration as a humantime string (how defaults appear in the schema and docs).
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// The JSON Schema of a duration: a humantime string.
#[derive(Debug)]
pub struct Human;

impl JsonSchema for Human {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "duration", "examples": ["500ms", "5s", "2m"] })
    }
}
