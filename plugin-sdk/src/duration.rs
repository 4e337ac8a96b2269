//! Durations in config files, written as humantime strings (`"500ms"`, `"5s"`, `"2m"`): the
//! node's own config and every plugin's use this one form.
//!
//! Used through `#[serde(with = "duration")]` (or `duration::option` for optional keys) and
//! `#[schemars(with = "duration::Human")]`. The error names what was found and what a duration
//! looks like, so the node's config diagnostics can turn it into a hint.

use std::fmt;
use std::time::Duration;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serializer;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// What a duration looks like, shown in errors.
pub const EXPECTED: &str = "a duration such as \"500ms\" or \"5s\"";

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|_| E::invalid_value(Unexpected::Str(s), &self))
    }
}

/// Deserializes a humantime duration string.
///
/// # Errors
/// An `invalid value` error when the text is not a duration, an `invalid type` error when the
/// value is not a string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// Serializes a duration as a humantime string (`"30s"`, `"1m 30s"`): how defaults appear in
/// the generated docs.
///
/// # Errors
/// The serializer's error.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// The JSON Schema of a duration key: a string in humantime form
/// (`#[schemars(with = "duration::Human")]`).
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

/// Optional durations (`#[serde(default, with = "duration::option")]`).
pub mod option {
    use super::*;

    /// Serializes `Some` as a humantime string, `None` as nothing.
    ///
    /// # Errors
    /// The serializer's error.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// The JSON Schema of an optional duration key.
    #[derive(Debug)]
    pub struct Human;

    impl JsonSchema for Human {
        fn inline_schema() -> bool {
            true
        }

        fn schema_name() -> Cow<'static, str> {
            "OptionalDuration".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({ "type": ["string", "null"], "format": "duration", "examples": ["20s"] })
        }
    }

    /// Deserializes a present humantime duration string as `Some`.
    ///
    /// # Errors
    /// As [`super::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn parses_humantime_and_rejects_nonsense() {
        let t: T = serde_json::from_str(r#"{"d": "1m 30s"}"#).unwrap();
        assert_eq!(t.d, Duration::from_secs(90));
        let e = serde_json::from_str::<T>(r#"{"d": "5 parsecs"}"#).unwrap_err();
        assert!(e.to_string().contains(EXPECTED), "{e}");
        let e = serde_json::from_str::<T>(r#"{"d": 5}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
